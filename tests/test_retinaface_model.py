"""RetinaFace model pieces on small hand-computed cases: architecture size,
priors, decode, the nearest resize of the FPN, matching and the multibox loss."""
import math
from pathlib import Path

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from ppfacedet.convert.retinaface import paddle_name
from ppfacedet.core import load_config
from ppfacedet.modeling.assigners.max_iou import MaxIoUAssigner
from ppfacedet.modeling.detector import build_model
from ppfacedet.modeling.heads.retina_head import RetinaHead
from ppfacedet.modeling.losses.multibox import MultiBoxLoss
from ppfacedet.modeling.necks.retina_fpn_ssh import resize_nearest_to

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def trainable_count(model):
    return sum(int(np.prod(p.shape)) for p in model.parameters() if not p.stop_gradient)


@pytest.fixture(scope="module")
def mnet():
    model = build_model(load_config(CONFIGS / "retinaface_mnet025.yml"))
    model.eval()
    return model


def test_r50_has_the_official_parameter_count():
    model = build_model(load_config(CONFIGS / "retinaface_r50.yml"))
    c = 256
    trunk = 25_557_032 - (2048 * 1000 + 1000)  # torchvision resnet50 without its fc
    fpn = (512 + 1024 + 2048) * c + 3 * 2 * c + 2 * (c * c * 9 + 2 * c)
    ssh = 3 * (c * (c // 2) * 9 + c + c * (c // 4) * 9 + c // 2 + 3 * ((c // 4) ** 2 * 9 + c // 2))
    heads = 3 * (c * (2 + 4 + 10) * 2 + (2 + 4 + 10) * 2)
    assert trainable_count(model) == trunk + fpn + ssh + heads
    assert model.backbone.out_channels == [512, 1024, 2048]
    # Official names land on existing parameters (torchvision layout, module. prefix stripped).
    names = set(model.state_dict())
    for official in ["module.body.layer4.2.bn3.running_var", "body.layer2.0.downsample.0.weight",
                     "fpn.merge1.1.running_mean", "ssh3.conv7x7_3.0.weight", "LandmarkHead.2.conv1x1.bias"]:
        assert paddle_name(official) in names, official


def test_mnet_channels_and_output_layout(mnet):
    assert mnet.backbone.out_channels == [64, 128, 256]
    with paddle.no_grad():
        raw = mnet(paddle.zeros([2, 3, 64, 96]))
    sizes = {8: 8 * 12, 16: 4 * 6, 32: 2 * 3}
    for stride, cells in sizes.items():
        assert raw[f"cls_{stride}"].shape == [2, cells * 2, 2]
        assert raw[f"box_{stride}"].shape == [2, cells * 2, 4]
        assert raw[f"kps_{stride}"].shape == [2, cells * 2, 10]
    assert mnet.deploy_config() == {"kind": "retina", "strides": [8, 16, 32],
                                    "min_sizes": [[16, 32], [64, 128], [256, 512]],
                                    "variances": [0.1, 0.2], "score_activation": "none"}


def test_priors_are_pixel_centred_squares(mnet):
    with paddle.no_grad():
        raw = mnet(paddle.zeros([1, 3, 64, 64]))
    priors = mnet.head.priors(raw)
    assert priors.shape == ((8 * 8 + 4 * 4 + 2 * 2) * 2, 4)
    np.testing.assert_allclose(priors[:3], [[4, 4, 16, 16], [4, 4, 32, 32], [12, 4, 16, 16]])
    first16 = 8 * 8 * 2
    np.testing.assert_allclose(priors[first16], [8, 8, 64, 64])
    np.testing.assert_allclose(priors[first16 + 4 * 4 * 2 + 1], [16, 16, 512, 512])
    np.testing.assert_allclose(priors[-1], [48, 48, 512, 512])


def test_decode_hand_computed(mnet):
    with paddle.no_grad():
        raw = mnet(paddle.zeros([1, 3, 64, 64]))
    for tensor in raw.values():
        tensor.zero_()
    # Prior 0 is (cx 4, cy 4, 16x16).
    raw["box_8"][0, 0] = paddle.to_tensor([1.0, -1.0, math.log(2) / 0.2, 0.0])
    raw["kps_8"][0, 0] = paddle.to_tensor([1.0, -2.0] * 5)
    raw["cls_8"][0, 0] = paddle.to_tensor([0.0, math.log(3)])
    boxes, scores, landmarks = mnet.head.decode(raw)
    # centre (4 + 0.1*16, 4 - 0.1*16) = (5.6, 2.4); size (16*2, 16) = (32, 16)
    np.testing.assert_allclose(boxes[0, 0].numpy(), [-10.4, -5.6, 21.6, 10.4], atol=1e-5)
    np.testing.assert_allclose(landmarks[0, 0].numpy(), [5.6, 0.8] * 5, atol=1e-5)
    assert scores[0, 0].item() == pytest.approx(0.75, abs=1e-6)
    assert scores[0, 1].item() == pytest.approx(0.5)
    np.testing.assert_allclose(boxes[0, 1].numpy(), [-12, -12, 20, 20], atol=1e-5)


@pytest.mark.parametrize("src,dst", [((22, 32), (43, 64)), ((43, 64), (86, 128)), ((3, 5), (8, 7)), ((5, 4), (5, 9))])
def test_nearest_resize_is_floor_of_scaled_index(src, dst):
    x = paddle.rand([1, 2, *src])
    got = resize_nearest_to(x, paddle.zeros([1, 1, *dst])).numpy()
    rows = np.arange(dst[0]) * src[0] // dst[0]
    cols = np.arange(dst[1]) * src[1] // dst[1]
    np.testing.assert_array_equal(got, x.numpy()[:, :, rows][:, :, :, cols])
    np.testing.assert_array_equal(got, F.interpolate(x, size=list(dst), mode="nearest").numpy())


def test_nearest_resize_exports_with_dynamic_sizes():
    spec = paddle.static.InputSpec([None, 2, None, None])
    static = paddle.jit.to_static(resize_nearest_to, input_spec=[spec, spec], full_graph=True)
    for src, dst in [((22, 32), (43, 64)), ((3, 5), (8, 7))]:
        x = paddle.rand([1, 2, *src])
        like = paddle.zeros([1, 2, *dst])
        np.testing.assert_array_equal(static(x, like).numpy(), resize_nearest_to(x, like).numpy())


def test_matching_threshold_forcing_and_unmatchable_faces():
    priors = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [100, 100, 110, 110],
                       [0, 0, 20, 20], [200, 200, 210, 210]], np.float32)
    faces = np.array([[0, 0, 10, 10],         # IoU 1 with prior 0; 1/3 with prior 1, 1/4 with prior 4
                      [20, 20, 32, 32],       # IoU 100/144 with prior 2
                      [100, 100, 110, 130],   # best IoU 1/3 < 0.35 (prior 3): forced
                      [205, 205, 240, 240]],  # best IoU 25/1300 < 0.2: claims nothing
                     np.float32)
    matched = MaxIoUAssigner(0.35, 0.2).assign(priors, faces)
    np.testing.assert_array_equal(matched, [0, -1, 1, 2, -1, -1])
    # At a 0.3 threshold prior 1 (IoU 1/3 with face 0) turns positive; prior 4 (1/4) stays background.
    np.testing.assert_array_equal(MaxIoUAssigner(0.3, 0.2).assign(priors, faces), [0, 0, 1, 2, -1, -1])
    assert (MaxIoUAssigner().assign(priors, np.zeros((0, 4), np.float32)) == -1).all()


def test_forcing_overrides_a_better_covered_prior():
    """A face claims its best prior even when another face overlaps it more."""
    priors = np.array([[0, 0, 10, 10], [40, 40, 50, 50]], np.float32)
    faces = np.array([[0, 0, 10, 12], [0, 0, 10, 30]], np.float32)  # IoU 10/12, 1/3; both best at prior 0
    np.testing.assert_array_equal(MaxIoUAssigner().assign(priors, faces), [1, -1])


def softplus(v):
    return math.log1p(math.exp(v))


def test_multibox_loss_hand_computed_with_hard_negative_mining():
    m = 10
    logits = np.zeros((2, m, 2), np.float32)
    logits[0, 1:, 1] = np.arange(1, m) - 5.0      # negative i has background CE softplus(i - 5)
    logits[1, :, 1] = 4.0                         # image without faces: hard, but never mined
    labels = np.zeros((2, m), np.int64)
    labels[0, 0] = 1
    boxes = np.zeros((2, m, 4), np.float32)
    boxes[0, 0] = [0.5, 2.0, 0.0, 0.0]
    landmarks = np.zeros((2, m, 10), np.float32)
    landmarks[0, 0] = 0.5
    targets = {"labels": labels, "boxes": boxes, "landmarks": landmarks, "landmark_mask": labels > 0}
    out = MultiBoxLoss(neg_pos_ratio=7, loc_weight=2.0)(
        paddle.to_tensor(logits), paddle.zeros([2, m, 4]), paddle.zeros([2, m, 10]), targets)
    # 1 positive -> the 7 hardest of 9 negatives: i = 3..9.
    expected_cls = math.log(2) + sum(softplus(i - 5) for i in range(3, 10))
    assert out["loss_cls"].item() == pytest.approx(expected_cls, rel=1e-5)
    assert out["loss_box"].item() == pytest.approx(0.5 * 0.5 ** 2 + (2.0 - 0.5), rel=1e-6)
    assert out["loss_kps"].item() == pytest.approx(10 * 0.5 * 0.5 ** 2, rel=1e-6)
    assert out["loss"].item() == pytest.approx(2.0 * 1.625 + expected_cls + 1.25, rel=1e-5)


def test_mining_count_and_normalisation_over_two_positives():
    m = 40
    logits = np.zeros((1, m, 2), np.float32)
    labels = np.zeros((1, m), np.int64)
    labels[0, :2] = 1
    logits[0, 2:, 1] = np.linspace(-3, 3, m - 2)
    targets = {"labels": labels, "boxes": np.zeros((1, m, 4), np.float32),
               "landmarks": np.zeros((1, m, 10), np.float32), "landmark_mask": labels > 0}
    out = MultiBoxLoss()(paddle.to_tensor(logits), paddle.zeros([1, m, 4]), paddle.zeros([1, m, 10]), targets)
    hardest = np.sort(np.log1p(np.exp(logits[0, 2:, 1].astype(np.float64))))[::-1][:14]
    assert out["loss_cls"].item() == pytest.approx((2 * math.log(2) + hardest.sum()) / 2, rel=1e-5)


def small_head():
    head = RetinaHead(in_channels=8)
    feats = [paddle.rand([1, 8, 8, 8]), paddle.rand([1, 8, 4, 4]), paddle.rand([1, 8, 2, 2])]
    return head, feats


def test_faces_without_landmarks_train_boxes_and_scores_only():
    head, feats = small_head()
    raw = head(feats)
    faces = np.array([[8, 8, 24, 24], [30, 30, 62, 62]], np.float32)
    batch = {"gt_boxes": [faces], "gt_landmarks": [np.full((2, 5, 2), 16, np.float32)],
             "landmark_valid": [np.array([False, False])]}
    targets = head.targets(head.priors(raw), faces, batch["gt_landmarks"][0], batch["landmark_valid"][0])
    assert targets["labels"].sum() >= 2 and not targets["landmark_mask"].any()
    out = head.loss(raw, batch)
    assert out["loss_kps"].item() == 0.0
    assert out["loss_box"].item() > 0 and out["loss_cls"].item() > 0
    out["loss"].backward()
    assert float(head.LandmarkHead[0].conv1x1.weight.grad.abs().sum()) == 0.0
    assert float(head.BboxHead[0].conv1x1.weight.grad.abs().sum()) > 0.0


def test_landmark_targets_encode_against_the_matched_prior():
    head, feats = small_head()
    priors = head.priors(head(feats))
    face = np.array([[-4, -4, 12, 12]], np.float32)          # exactly prior 0 (cx 4, cy 4, 16x16)
    points = np.array([[[4, 4], [5.6, 4], [4, 2.4], [0, 0], [8, 12]]], np.float32)
    targets = head.targets(priors, face, points, np.array([True]))
    assert targets["labels"][0] == 1 and targets["landmark_mask"][0]
    np.testing.assert_allclose(targets["boxes"][0], [0, 0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(targets["landmarks"][0], [0, 0, 1, 0, 0, -1, -2.5, -2.5, 2.5, 5], atol=1e-5)


def test_image_without_faces_gives_zero_finite_loss():
    head, feats = small_head()
    out = head.loss(head(feats), {"gt_boxes": [np.zeros((0, 4), np.float32)],
                                  "gt_landmarks": [np.zeros((0, 5, 2), np.float32)],
                                  "landmark_valid": [np.zeros(0, bool)]})
    for key in ("loss", "loss_box", "loss_cls", "loss_kps"):
        assert np.isfinite(out[key].item()) and out[key].item() == 0.0, key


def test_gradients_reach_every_layer():
    mnet = build_model(load_config(CONFIGS / "retinaface_mnet025.yml"))
    raw = mnet(paddle.rand([1, 3, 64, 64]) * 50)
    faces = np.array([[10, 12, 30, 34], [36, 8, 60, 40]], np.float32)
    batch = {"gt_boxes": [faces], "gt_landmarks": [np.tile(faces[:, None, :2] + 5, (1, 5, 1))],
             "landmark_valid": [np.array([True, True])]}
    out = mnet.loss(raw, batch)
    assert all(np.isfinite(v.item()) for v in out.values())
    out["loss"].backward()
    no_grad = [name for name, p in mnet.named_parameters()
               if not p.stop_gradient and (p.grad is None or float(p.grad.abs().sum()) == 0.0)]
    # Only the levels that got no positive may lack landmark/box gradients.
    assert not [n for n in no_grad if not n.startswith("head.")], no_grad


class DeployGraph(paddle.nn.Layer):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image):
        return [tensor for _, tensor in self.model.deploy_outputs(self.model(image))]


def test_static_export_runs_under_onednn_inference(mnet, tmp_path):
    """Dynamic H, W; the leaky ReLU and SSH ReLU forms keep oneDNN's fusion passes working."""
    from paddle.inference import Config, create_predictor
    graph = DeployGraph(mnet)
    spec = [paddle.static.InputSpec([None, 3, None, None], "float32", "image")]
    paddle.jit.save(paddle.jit.to_static(graph, input_spec=spec, full_graph=True), str(tmp_path / "model"))
    config = Config(str(tmp_path / "model.json"), str(tmp_path / "model.pdiparams"))
    config.enable_mkldnn()
    predictor = create_predictor(config)
    x = np.random.default_rng(0).uniform(-100, 100, (1, 3, 100, 140)).astype(np.float32)
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.reshape(x.shape)
    handle.copy_from_cpu(x)
    predictor.run()
    got = [predictor.get_output_handle(n).copy_to_cpu() for n in predictor.get_output_names()]
    with paddle.no_grad():
        expected = graph(paddle.to_tensor(x))
    for out, ref in zip(got, expected):
        np.testing.assert_allclose(out, ref.numpy(), atol=1e-4)
