"""The zoo's data: every released net we have a converter for, with its
official files and where they are published. Checked against the official
repositories (READMEs, model-zoo tables, download scripts, Git LFS pointers);
a sha256 either comes from the file itself (a copy in ../shared/data/weights,
SOURCES.md says where each came from) or from a pointer that records it, and
``checksum_origin`` says which. Params and FLOPs are ppfacedet's own counts
(tests/test_zoo_catalog.py recomputes them).
"""
from .records import Entry, KnownFile, Source, ZooFile

RAW = "https://raw.githubusercontent.com"
INSIGHTFACE_V07 = "https://github.com/deepinsight/insightface/releases/download/v0.7"
LIBFACEDET = f"{RAW}/ShiqiYu/libfacedetection.train"
LIBFACEDET_N = "02246e79b1e976c83d1e135a85e0628120c93769"  # YuNet-n release commit
LIBFACEDET_S = "2b5e61dee21441ef4676505f835ab63ee53bae1e"  # YuNet-s ONNX commit
LIBFACEDET_OLD = "204b0c9f687f2fd5c012988199a3cd47feb69a90"  # before onnx/ dropped the other nets

WIDER_TERMS = ("trained on WIDER FACE, whose images are licensed for non-commercial research only")
INSIGHTFACE_TERMS = ("InsightFace: 'ALL models are available for non-commercial research purposes only' "
                     "(insightface model_zoo/README.md); " + WIDER_TERMS)
SCRFD_PAGE = "https://github.com/deepinsight/insightface/tree/master/detection/scrfd"
SCRFD_AP_SOURCE = "insightface detection/scrfd/README.md, Pretrained-Models (VGA, single scale)"
SCRFD_LICENCE = "InsightFace: non-commercial research only (code MIT)"
DAMOFD_PAGE = "https://modelscope.cn/models/damo/cv_ddsar_face-detection_iclr23-damofd"
UNPUBLISHED = "no checksum published; the file could not be had here to compute one"


def _drive(file_id, note=""):
    return Source("gdrive", file_id, note)


def _scrfd_pth(file_name, drive_id):
    """The author's .pth on the Google Drive the insightface model_zoo README links (Link(pth))."""
    return ZooFile(file_name, None, None, (_drive(drive_id, "insightface model_zoo/README.md, section 2.2"),),
                   UNPUBLISHED)


def _mirror(repo, commit, path, note):
    return Source("url", f"{RAW}/{repo}/{commit}/{path}", note)


def _scrfd(name, ap, params, flops, files):
    return Entry(name, "SCRFD", SCRFD_PAGE, SCRFD_LICENCE, INSIGHTFACE_TERMS, ap, SCRFD_AP_SOURCE, params, flops,
                 tuple(files))


PPOGG = ("ppogg/onnx-scrfd-flask", "87af5a204aadcb0b62b2d17392065fb6481015d4")
HPC203 = ("hpc203/scrfd-opencv", "eee7bf1ee0dbe9615d8d8caaa53702e0d2dca001")
MIRROR_NOTE = ("third-party ONNX export of the release (weights identical to the other uploads, "
               "../shared/data/SOURCES.md)")
SHA_FROM_COPY = "computed here from the copy in ../shared/data/weights (SOURCES.md)"

DET_10G = ZooFile(
    "det_10g.onnx", "5838f7fe053675b1c7a08b633df49e7af5495cee0493c7dcf6697200b85b5b91", 16923827,
    (Source("pack", f"{INSIGHTFACE_V07}/buffalo_l.zip!det_10g.onnx", "insightface python package, pack buffalo_l"),
     Source("pack", f"{INSIGHTFACE_V07}/antelopev2.zip!scrfd_10g_bnkps.onnx",
            "insightface python package, pack antelopev2")),
    "Git LFS pointers of antelopev2/scrfd_10g_bnkps.onnx (ZHO-ZHO-ZHO/ComfyUI-InstantID) and the hashes that "
    "projects pinning buffalo_l record for det_10g.onnx agree",
    also_named=("scrfd_10g_bnkps.onnx",))

DET_500M = ZooFile(
    "det_500m.onnx", "5e4447f50245bbd7966bd6c0fa52938c61474a04ec7def48753668a9d8b4ea3a", None,
    (Source("pack", f"{INSIGHTFACE_V07}/buffalo_sc.zip!det_500m.onnx", "insightface python package, pack buffalo_sc"),
     Source("pack", f"{INSIGHTFACE_V07}/buffalo_s.zip!det_500m.onnx", "insightface python package, pack buffalo_s")),
    "recorded by several independent projects that pin buffalo_s / buffalo_sc (same bytes in both packs)")

DET_2_5G = ZooFile(
    "det_2.5g.onnx", None, None,
    (Source("pack", f"{INSIGHTFACE_V07}/buffalo_m.zip!det_2.5g.onnx", "insightface python package, pack buffalo_m"),),
    UNPUBLISHED)

SCRFD_500M_BNKPS = ZooFile(
    "scrfd_500m_bnkps.onnx", "6c6ba7956684796d7d582bfa1ab95dfe01dd280159f6bff1e23c1bc32bcc8431", 2529618,
    (_mirror("ShiqiYu/libfacedetection.train", LIBFACEDET_OLD, "onnx/scrfd_500m_bnkps.onnx",
             "libfacedetection.train's copy of the release ONNX (dynamic input)"),),
    SHA_FROM_COPY)


def _yunet(name, ap, params, flops, files):
    return Entry(name, "YuNet", "https://github.com/ShiqiYu/libfacedetection.train",
                 "Apache-2.0 (libfacedetection.train)", WIDER_TERMS, ap,
                 "libfacedetection.train README.md (origin size, score 0.02, NMS 0.45)", params, flops, tuple(files))


def _libfacedet(name, sha256, size, commit, path, also_named=(), extra=()):
    return ZooFile(name, sha256, size, (Source("url", f"{LIBFACEDET}/{commit}/{path}"),) + tuple(extra),
                   SHA_FROM_COPY, also_named)


def _damofd(name, model_id, revision, ap, params, flops):
    pt = ZooFile("pytorch_model.pt", None, None,
                 (Source("modelscope", f"{model_id}@{revision}:pytorch_model.pt",
                         "ModelScope's DamoFdDetect loads it with DamoFD_lms.py (the landmark configs)"),),
                 UNPUBLISHED)
    return Entry(name, "DamoFD", f"https://modelscope.cn/models/{model_id}",
                 "Apache-2.0 (as the ModelScope model card states; not checked offline)", WIDER_TERMS, ap,
                 "ly19965/DamoFD README.md (VGA)", params, flops, (pt,))


ENTRIES = (
    Entry("retinaface_mnet025", "RetinaFace", "https://github.com/biubug6/Pytorch_Retinaface",
          "MIT (biubug6/Pytorch_Retinaface)", WIDER_TERMS, (90.70, 88.16, 73.82),
          "Pytorch_Retinaface README.md, 'Pytorch (original image scale)'", 426608, 754281600, (
              ZooFile("mobilenet0.25_Final.pth", "2979b33ffafda5d74b6948cd7a5b9a7a62f62b949cef24e95fd15d2883a65220",
                      1789735,
                      (_drive("15zP8BP-5IvWXWZoYTNdvUJUiBqZ1hxu1",
                              "the author's Drive folder 1oZRSG0ZegbVkVwUd8wUIQx8W7yfZ_ki1 (README); id from "
                              "weights/download_all_pretrain.sh, commit e412ea9"),
                       _mirror("kgzhwang/Pytorch_Retinaface", "6e724185520256cfa136feb4910203b1f55c5274",
                               "weights/mobilenet0.25_Final.pth", "a fork's committed copy")),
                      SHA_FROM_COPY + "; its tensors equal two independent ONNX exports of the release"),
              _libfacedet("retinaface_mbnet0.25.onnx", "13a69f2cb3012162ccce8466b1cd9e445ae1337ae641f31c90419e6179f13650",
                          1711594, LIBFACEDET_OLD, "onnx/retinaface_mbnet0.25.onnx"),
              ZooFile("FaceDetector.onnx", "e0e19bad8494b3f7a7edb39a90194ff055923e13a3453569a454386f857fe538", 1729306,
                      (_mirror("kgzhwang/Pytorch_Retinaface", "6e724185520256cfa136feb4910203b1f55c5274",
                               "FaceDetector.onnx", "convert_to_onnx.py export (input fixed at 640x640)"),),
                      SHA_FROM_COPY))),
    Entry("retinaface_r50", "RetinaFace", "https://github.com/biubug6/Pytorch_Retinaface",
          "MIT (biubug6/Pytorch_Retinaface)", WIDER_TERMS, (95.48, 94.04, 84.43),
          "Pytorch_Retinaface README.md, 'Pytorch (original image scale)'", 27293600, 33413616000, (
              ZooFile("Resnet50_Final.pth", None, None,
                      (_drive("14KX6VqF69MdSPk3Tr9PlDYbq7ArpdNUW",
                              "the author's Drive folder 1oZRSG0ZegbVkVwUd8wUIQx8W7yfZ_ki1 (README); id from "
                              "weights/download_all_pretrain.sh, commit e412ea9"),),
                      "no checksum published; the only copy found on GitHub is a Git LFS pointer "
                      "(khyeyoon/Face-Recognition: sha256 17c08220..., 109,497,761 bytes) whose content could "
                      "not be checked, so it is not trusted as the release's"),)),
    _scrfd("scrfd_500m", (90.57, 88.12, 68.51), 572741, 511368600, (
        _scrfd_pth("SCRFD_500M.pth", "1OX0i_vWDp1Fp-ZynOUMZo-q1vB5g1pTN"),
        ZooFile("scrfd_500m.onnx", "04c07b47c5e030e78f5ee0d2f36c8fb7020e6cc79be5860c82b76213ff358a10", 2295759,
                (_mirror(*PPOGG, "onnx/scrfd_500m.onnx", MIRROR_NOTE),), SHA_FROM_COPY))),
    _scrfd("scrfd_500m_kps", (90.97, 88.44, 69.49), 631410, 584070600, (
        DET_500M,
        _scrfd_pth("SCRFD_500M_KPS.pth", "1TXvKmfLTTxtk7tMd2fEf-iWtAljlWDud"),
        SCRFD_500M_BNKPS,
        ZooFile("scrfd_500m_kps.onnx", "517cb1980c72422e676738fc45431700fb7cbee56d0f825b623ee427b3e5ce58", 2524095,
                (_mirror(*HPC203, "weights/scrfd_500m_kps.onnx", MIRROR_NOTE + ", input fixed at 640x640"),),
                SHA_FROM_COPY))),
    _scrfd("scrfd_1g", (92.38, 90.57, 74.80), 635565, 986273400, (
        _scrfd_pth("SCRFD_1G.pth", "1acd5wKjWnl1zMgS5YJBtCh13aWtw9dej"),
        ZooFile("scrfd_1g.onnx", "fc6c7b47b84fec1713a8654d83f482fdfe8c2ef05c37a438a16e1dfe1a83f5e6", 2546368,
                (_mirror(*PPOGG, "onnx/scrfd_1g.onnx", MIRROR_NOTE),), SHA_FROM_COPY))),
    _scrfd("scrfd_2.5g", (93.78, 92.16, 77.87), 671761, 2532178200, (
        _scrfd_pth("SCRFD_2.5G.pth", "1wgg8GY2vyP3uUTaAKT0_MSpAPIhmDsCQ"),
        ZooFile("scrfd_2.5g.onnx", "6cd57dc102af4be5b846ccf8b7db20269124fe6ebb9490e3c13f6511e9904187", 2701750,
                (_mirror(*PPOGG, "onnx/scrfd_2.5g.onnx", MIRROR_NOTE),), SHA_FROM_COPY))),
    _scrfd("scrfd_2.5g_kps", (93.80, 92.02, 77.13), 819809, 2604880200, (
        DET_2_5G,
        _scrfd_pth("SCRFD_2.5G_KPS.pth", "1KtOB9TocdPG9sk_S_-1QVG21y7OoLIIf"),
        ZooFile("scrfd_2.5g_kps.onnx", "32d20c77b9e2dc1d07e94c2ab9d25bdd5cd05eddbe0b46e7b38e7a1eca22e99a", 3291017,
                (_mirror(*HPC203, "weights/scrfd_2.5g_kps.onnx", MIRROR_NOTE + ", input fixed at 640x640"),),
                SHA_FROM_COPY))),
    _scrfd("scrfd_10g", (95.16, 93.87, 83.05), 3860225, 9985133400, (
        _scrfd_pth("SCRFD_10G.pth", "1kUYa0s1XxLW37ZFRGeIfKNr9L_4ScpOg"),)),
    _scrfd("scrfd_10g_kps", (95.40, 94.01, 82.80), 4229905, 10075979400, (
        DET_10G,
        _scrfd_pth("SCRFD_10G_KPS.pth", "1-2uy0tgkenw6ZLxfKV1qVhmkb5Ep_5yx"))),
    _scrfd("scrfd_34g", (96.06, 94.92, 85.29), 9802737, 34143382200, (
        _scrfd_pth("SCRFD_34G.pth", "1w9QOPilC9EhU0JgiVJoX0PLvfNSlm1XE"),)),
    _yunet("yunet_n", (89.2, 88.3, 81.1), 75856, 438024000, (
        _libfacedet("yunet_n.pth", "9c7c9e14a4d60e57491d77e4d8b0d451bd834f300e05c0dea7fd1f6533817b06", 747497,
                    LIBFACEDET_N, "weights/yunet_n.pth"),
        _libfacedet("yunet_n_dynamic.onnx", "104ee26c71d5c270ce79a6b3dced91c91013260d29a6bf18f9296c5b8c4c2b12",
                    322906, LIBFACEDET_N, "onnx/yunet_n_dynamic.onnx"),
        _libfacedet("yunet_n_640_640.onnx", "25a606a145a5b6d7271ae138fbd00eba91dad8b83222ae3f2c7ecd0f4a7b0e31",
                    317466, LIBFACEDET_N, "onnx/yunet_n_640_640.onnx"),
        _libfacedet("yunet_n_320_320.onnx", "81dbde155e982455488235acb8ec2dec5d647edf7cf7080d33e4abb69b93a0d2",
                    317434, LIBFACEDET_N, "onnx/yunet_n_320_320.onnx"))),
    _yunet("yunet_s", (88.7, 87.1, 76.8), 54608, 282868800, (
        _libfacedet("yunet_s.pth", "f2688fecd5aef7d204d04ca12ff377b724978abbe5955740bc67280d99ffe4d6", 560340,
                    "7985249d03b0b0571507a4dc25f30752945b51f5", "weights/yunet_s.pth"),
        _libfacedet("yunet_s_dynamic.onnx", "daede24002cc8590f457998cc5e6c9e8b82f45f6bd969506a8913cd4ed10a2d3",
                    237823, LIBFACEDET_S, "onnx/yunet_s_dynamic.onnx"),
        _libfacedet("yunet_s_640_640.onnx", "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
                    232589, LIBFACEDET_S, "onnx/yunet_s_640_640.onnx",
                    also_named=("face_detection_yunet_2023mar.onnx",),
                    extra=(Source("url", "https://media.githubusercontent.com/media/opencv/opencv_zoo/"
                                         "82b38c8f98e7b52aa171400f3e4c722352d0669f/models/face_detection_yunet/"
                                         "face_detection_yunet_2023mar.onnx",
                                  "opencv_zoo's Git LFS copy (its pointer records this sha256 and size)"),)),
        _libfacedet("yunet_s_320_320.onnx", "beb05bf2378aee45cd7c41056da07265b7bb91041ed1b06f923819a9c744ec36",
                    232557, LIBFACEDET_S, "onnx/yunet_s_320_320.onnx"))),
    _damofd("damofd_0.5g_kps", "damo/cv_ddsar_face-detection_iclr23-damofd", "v1.1", (90.41, 88.45, 69.97),
            269729, 592566600),
    _damofd("damofd_2.5g_kps", "damo/cv_ddsar_face-detection_iclr23-damofd-2.5G", "master", (93.25, 91.85, 78.17),
            454281, 2527902600),
    _damofd("damofd_10g_kps", "damo/cv_ddsar_face-detection_iclr23-damofd-10G", "master", (95.42, 94.35, 83.94),
            1283745, 9828073800),
    _damofd("damofd_34g_kps", "damo/cv_ddsar_face-detection_iclr23-damofd-34G", "master", (95.96, 95.08, 86.09),
            6284833, 34324345800),
)

# Official files that serve no name here: recognised by sha256 so that a
# mix-up is named instead of reported as a bare checksum mismatch.
KNOWN_ELSEWHERE = (
    KnownFile("Final_Retinaface.pth", "78b0533ceea681a290e98efca85e3a2815b22310f1fe7e287788e7f55f0743a9", 1789735,
              "biubug6/Pytorch_Retinaface's first MobileNet-0.25 model (weights/, commit 3c31dcd, 2019): other "
              "weights than the release mobilenet0.25_Final.pth (README then: 90.58 / 87.94 / 73.96)"),
    KnownFile("mobilenet0.25_Final.pth", "ed6fa7d45a5179f03cb5ce82c73b0c6711372968e53782e88395acee88d319e1", 1789735,
              "biubug6/Face-Detector-1MB-with-landmark's model: trained with other anchors (min_sizes "
              "[[10,20],[32,64],[128,256]]), not Pytorch_Retinaface's release of the same name"),
    KnownFile("face_detection_yunet_2022mar.onnx",
              "50ef07f702a31741ca46a4c0d947773b64143b9362780237bf0d427d6c79bab7", 345478,
              "opencv_zoo's YuNet 2022mar (libfacedetection.train tasks/task1 yunet_120x160.onnx): the older YuNet "
              "architecture, which no config here describes"),
    KnownFile("buffalo_l.zip", "80ffe37d8a5940d59a7384c201a2a38d4741f2f3c51eef46ebb28218a7b0ca2f", 288621354,
              "insightface's buffalo_l pack: its det_10g.onnx serves scrfd_10g_kps"),
)
