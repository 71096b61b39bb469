"""deploy/python: numpy decoders and selection agree with the library, the
standalone predictor finds what FaceDetector finds, the CLI writes the
tools/infer.py JSON, and GPU / TensorRT requests fail clearly on this machine."""
import ast
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import paddle
import pytest
import yaml

from deploy_support import DEPLOY, FAMILY_NAMES, exported, family, photos
from ppfacedet.api import FaceDetector, detections_to_json
from ppfacedet.export.infer_cfg import infer_settings
from ppfacedet.postprocess.select import select_detections

import decode as np_decode  # noqa: E402  (deploy/python, put on sys.path by deploy_support)
import infer as deploy_infer  # noqa: E402
import predictor as deploy_predictor  # noqa: E402
from detections import assert_same_faces  # noqa: E402

# tensorrt: the TensorRT package paddle.tensorrt itself needs (the PIR route reads its version)
STANDALONE_IMPORTS = {"paddle", "numpy", "cv2", "yaml", "tensorrt"}
LOCAL_MODULES = {"conversion_files", "convert_child", "decode", "engines", "image_check", "infer", "predictor",
                 "preprocess", "tensorrt_routes", "visualize", "batcher", "child_process", "decode_workers",
                 "serve_process"}
# The HTTP service (serve.py) adds its server and metrics libraries (requirements.txt).
SERVICE_MODULES = {"serve": {"starlette", "uvicorn"}, "serve_metrics": {"prometheus_client"}}
CLI_MODEL = "scrfd_500m_kps"


def random_raw(model, height, width, seed):
    """The model's raw outputs for an input size, refilled with random values."""
    with paddle.no_grad():
        raw = model(paddle.zeros([2, 3, height, width]))
    rng = np.random.RandomState(seed)
    for key in raw:
        raw[key] = paddle.to_tensor((rng.randn(*raw[key].shape) * 0.8).astype("float32"))
    return raw


def settings_of(name):
    cfg, model, _ = family(name)
    with paddle.no_grad():
        names = [n for n, _ in model.deploy_outputs(model(paddle.zeros([1, 3, 64, 64])))]
    return yaml.safe_load(yaml.safe_dump(infer_settings(cfg, model, names, False, "model.json")))


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_numpy_decoder_and_selection_equal_the_library(name):
    cfg, model, _ = family(name)
    info = settings_of(name)
    height, width = (96, 160) if info["input"]["pad_multiple"] else (97, 150)
    raw = random_raw(model, height, width, seed=len(name))
    with paddle.no_grad():
        boxes, scores, landmarks = model.head.decode(raw)
        outputs = {n: t.numpy() for n, t in model.deploy_outputs(raw)}
    got_boxes, got_scores, got_landmarks = np_decode.Decoder(info)(outputs, (height, width))
    np.testing.assert_allclose(got_boxes, boxes.numpy(), atol=1e-3, rtol=1e-5)
    np.testing.assert_allclose(got_scores, scores.numpy(), atol=1e-6)
    assert (got_landmarks is None) == (landmarks is None)
    if landmarks is not None:
        np.testing.assert_allclose(got_landmarks, landmarks.numpy(), atol=1e-3, rtol=1e-5)

    test_cfg = {**info["test"], "score_threshold": 0.3, "pre_nms_top_k": 200, "max_per_image": 50}
    metas = [{"scale": (0.5, 0.75)}, {"scale": (2.0, 2.0)}]
    expected = select_detections(boxes, scores, landmarks, metas, **test_cfg)
    for i, meta in enumerate(metas):
        got = np_decode.select(got_boxes[i], got_scores[i], None if got_landmarks is None else got_landmarks[i],
                               meta["scale"], **test_cfg)
        assert len(expected[i]["scores"]) > 0
        assert_same_faces(got, expected[i], box_tol=1e-3, score_tol=1e-6)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_candidates_are_the_decoded_rows_above_the_threshold(name):
    """The deploy path decodes only the rows above the threshold, stride by
    stride: it must give exactly those rows of the full decode, also when a
    threshold leaves a single row or none."""
    cfg, model, _ = family(name)
    info = settings_of(name)
    height, width = (96, 160) if info["input"]["pad_multiple"] else (97, 150)
    with paddle.no_grad():
        outputs = {n: t.numpy() for n, t in model.deploy_outputs(random_raw(model, height, width, seed=3))}
    decoder = np_decode.Decoder(info)
    boxes, scores, landmarks = decoder(outputs, (height, width))
    ranked = np.sort(scores[1])
    for threshold in (ranked[len(ranked) // 2], ranked[-2], ranked[-1]):
        rows = np.flatnonzero(scores[1] > threshold)
        got_boxes, got_scores, got_landmarks = decoder.candidates(outputs, (height, width), 1, threshold)
        assert len(got_scores) == len(rows) and got_boxes.shape == (len(rows), 4)
        np.testing.assert_array_equal(got_boxes, boxes[1, rows])
        np.testing.assert_array_equal(got_scores, scores[1, rows])
        if landmarks is None:
            assert got_landmarks is None
        else:
            np.testing.assert_array_equal(got_landmarks, landmarks[1, rows])


def test_numpy_nms_equals_paddle_nms():
    rng = np.random.RandomState(0)
    corners = rng.rand(400, 2).astype("float32") * 100
    boxes = np.concatenate([corners, corners + rng.rand(400, 2).astype("float32") * 30 + 1], axis=1)
    scores = rng.rand(400).astype("float32")
    expected = paddle.vision.ops.nms(paddle.to_tensor(boxes), 0.4, scores=paddle.to_tensor(scores)).numpy()
    np.testing.assert_array_equal(np_decode.nms(boxes, scores, 0.4), expected)


def test_deploy_preprocess_equals_input_policy():
    from ppfacedet.data.preprocess import InputPolicy
    from preprocess import Preprocess
    for name in FAMILY_NAMES:
        cfg, _, _ = family(name)
        policy, ours = InputPolicy.from_config(cfg), Preprocess(settings_of(name)["input"])
        for image in photos():
            expected, meta = policy(image)
            got, scale = ours(image)
            np.testing.assert_array_equal(got, expected)
            assert scale == meta["scale"]


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_predictor_detections_equal_face_detector(name, shared_data):
    """Needs the WIDER photos: on the synthetic noise stand-ins the models keep
    no face or thousands of near-tied ones, which says nothing about equality."""
    cfg, model, _ = family(name)
    expected = FaceDetector.from_model(model, cfg)(list(photos()))
    detector = deploy_infer.FaceDetector(exported(name), batch_size=2)
    got = detector(list(photos()))
    for g, e in zip(got, expected):
        assert len(e["scores"]) > 0
        assert_same_faces(g, e, box_tol=1e-3, score_tol=1e-5)
        if e["landmarks"] is None:
            assert g["landmarks"] is None
        else:
            np.testing.assert_allclose(g["landmarks"], e["landmarks"], atol=1e-3)


def test_cli_is_standalone_and_writes_infer_json(tmp_path):
    """infer.py runs with ppfacedet unimportable, and its JSON is tools/infer.py's."""
    images = tmp_path / "images"
    images.mkdir()
    for i, image in enumerate(photos()):
        cv2.imwrite(str(images / f"photo{i}.png"), image)
    (images / "broken.jpg").write_bytes(b"not a jpeg")
    poison = tmp_path / "poison" / "ppfacedet"
    poison.mkdir(parents=True)
    (poison / "__init__.py").write_text("raise ImportError('deploy/python must not import ppfacedet')\n")
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(poison.parent))
    done = subprocess.run([sys.executable, str(DEPLOY / "infer.py"), "--model_dir", exported(CLI_MODEL),
                           "--image_dir", str(images), "--output_dir", str(out), "--batch_size", "2",
                           "--threshold", "0.3", "--benchmark", "--repeats", "1"],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300)
    # The unreadable image is reported and skipped; the run still finishes, with status 1.
    assert done.returncode == 1, done.stderr[-2000:]
    assert "broken.jpg: cannot read image" in done.stderr and not (out / "broken.json").exists()
    timings = [line for line in done.stdout.splitlines() if line.startswith("benchmark")]
    assert timings and all(f"{stage} " in timings[0] for stage in ("preprocess", "inference", "postprocess"))

    cfg, model, _ = family(CLI_MODEL)
    reference = FaceDetector.from_model(model, cfg)
    for i in range(len(photos())):
        assert (out / f"photo{i}.jpg").is_file()
        got = json.loads((out / f"photo{i}.json").read_text())
        expected = detections_to_json(reference(cv2.imread(str(images / f"photo{i}.png"))), 0.3)
        assert len(got["faces"]) == len(expected["faces"])
        for g, e in zip(got["faces"], expected["faces"]):
            assert set(g) == set(e) == {"box", "score", "landmarks"}
            np.testing.assert_allclose(g["box"], e["box"], atol=0.011)
            assert abs(g["score"] - e["score"]) <= 2e-5


def test_deploy_modules_import_only_paddle_numpy_cv2_yaml():
    for module in sorted(LOCAL_MODULES | set(SERVICE_MODULES)):
        path, allowed = DEPLOY / f"{module}.py", STANDALONE_IMPORTS | LOCAL_MODULES | SERVICE_MODULES.get(module, set())
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for top in (n.split(".")[0] for n in names):
                assert top in allowed | set(SERVICE_MODULES) or top in sys.stdlib_module_names, \
                    f"{path.name} imports {top}"


def test_cli_video_file(tmp_path):
    video = str(tmp_path / "clip.mp4")
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"mp4v"), 5, (160, 120))
    frame = cv2.resize(photos()[1], (160, 120))
    for _ in range(3):
        writer.write(frame)
    writer.release()
    out = tmp_path / "out"
    code = deploy_infer.main(["--model_dir", exported(CLI_MODEL), "--video_file", video,
                              "--output_dir", str(out), "--threshold", "0.3"])
    assert code == 0
    result = json.loads((out / "clip.json").read_text())
    assert [f["frame"] for f in result["frames"]] == [0, 1, 2]
    capture = cv2.VideoCapture(video)
    first = capture.read()[1]
    capture.release()
    detector = deploy_infer.FaceDetector(exported(CLI_MODEL))
    assert result["frames"][0] == {"frame": 0, **deploy_infer.detections_to_json(detector([first])[0], 0.3)}
    capture = cv2.VideoCapture(str(out / "clip.mp4"))
    assert capture.isOpened() and int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    capture.release()


@pytest.mark.skipif(paddle.is_compiled_with_cuda(), reason="this paddle has CUDA: GPU requests may succeed")
@pytest.mark.parametrize("extra, message", [
    (["--device", "GPU"], "no CUDA support"),
    (["--device", "GPU", "--run_mode", "trt_fp16"], "Install a paddlepaddle-gpu wheel built with TensorRT"),
    (["--run_mode", "trt_fp16"], "needs --device GPU"),
])
def test_gpu_and_tensorrt_requests_fail_clearly_on_cpu(tmp_path, capsys, extra, message):
    image = tmp_path / "photo.png"
    cv2.imwrite(str(image), photos()[1])
    code = deploy_infer.main(["--model_dir", exported(CLI_MODEL), "--image_file", str(image),
                              "--output_dir", str(tmp_path / "out")] + extra)
    assert code == 2
    assert message in capsys.readouterr().err
