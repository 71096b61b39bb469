"""deploy/python's engines: Paddle Inference, onnxruntime and OpenVINO give the
same detections through the same preprocess, decode and NMS; ``auto`` picks
the fastest installed engine; a missing engine or ONNX model is a clear error;
the benchmark prints its table with the CPU's ISA."""
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from deploy_support import DATA, DEPLOY, exported, exported_with_onnx, photos
from detections import assert_same_faces

import engines  # noqa: E402  (deploy/python, put on sys.path by deploy_support)
import infer as deploy_infer  # noqa: E402
from predictor import DeviceUnavailable, load_infer_cfg  # noqa: E402

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")
pytest.importorskip("paddle2onnx")

SCORE_TOLERANCE = 1e-4
# One family per decode kind.
KIND_FAMILIES = ("scrfd_500m_kps", "yunet_n", "retinaface_mnet025")


# scrfd_500m_kps has near-tied faces that swap order on AVX-512: also run held to AVX2 (test_isa_dispatch.py)
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.isa_sensitive) if n == "scrfd_500m_kps" else n
                                  for n in KIND_FAMILIES])
def test_engines_give_equal_detections(name, shared_data):
    """Needs the WIDER photos: on noise the models keep no face or thousands of near-ties."""
    folder = exported_with_onnx(name)
    images = list(photos())
    results = {mode: deploy_infer.FaceDetector(folder, run_mode=mode, cpu_threads=2)(images)
               for mode in ("paddle", "onnxruntime", "openvino")}
    for mode in ("onnxruntime", "openvino"):
        for got, expected in zip(results[mode], results["paddle"]):
            assert len(expected["scores"]) > 0
            assert_same_faces(got, expected, box_tol=2e-2, score_tol=SCORE_TOLERANCE, where=mode)


def test_min_score_keeps_exactly_the_confident_part_of_the_full_result(shared_data):
    folder = exported_with_onnx("scrfd_500m_kps")
    images = list(photos())
    full = deploy_infer.FaceDetector(folder, run_mode="onnxruntime")(images)
    confident = deploy_infer.FaceDetector(folder, run_mode="onnxruntime", min_score=0.5)(images)
    for f, c in zip(full, confident):
        keep = f["scores"] >= 0.5
        assert 0 < keep.sum() < len(keep)
        for key in ("scores", "boxes", "landmarks"):
            np.testing.assert_array_equal(c[key], f[key][keep])


def test_auto_times_the_installed_engines_and_keeps_the_fastest(monkeypatch, capsys):
    with_onnx, without = exported_with_onnx("scrfd_500m_kps"), exported("scrfd_500m_kps")
    info = load_infer_cfg(with_onnx)
    assert engines.auto_candidates(with_onnx, info) == ["onnxruntime", "openvino"]
    assert engines.auto_candidates(without, load_infer_cfg(without)) == ["paddle"]
    assert engines.auto_candidates(with_onnx, info, device="GPU") == ["paddle"]
    monkeypatch.setattr(engines, "installed", lambda engine: engine == "openvino")
    assert engines.auto_candidates(with_onnx, info) == ["openvino"]
    assert isinstance(deploy_infer.FaceDetector(with_onnx, run_mode="auto").engine, engines.OpenVINOEngine)
    monkeypatch.undo()

    calls = []

    class Clock:
        """perf_counter stand-in: a call on the OpenVINO engine "takes" 1 s, on onnxruntime 2 s."""
        now = 0.0

        def __call__(self):
            return self.now

    clock = Clock()
    for cls, seconds in ((engines.OnnxRuntimeEngine, 2.0), (engines.OpenVINOEngine, 1.0)):
        def timed(self, batch, scale_factor=None, run=cls.__call__, seconds=seconds):
            calls.append((type(self).__name__, batch.shape))
            clock.now += seconds
            return run(self, batch, scale_factor)
        monkeypatch.setattr(cls, "__call__", timed)
    monkeypatch.setattr(engines.time, "perf_counter", clock)
    detector = deploy_infer.FaceDetector(with_onnx, run_mode="auto")
    assert isinstance(detector.engine, engines.OpenVINOEngine)
    # one warm-up call each, then turns; SCRFD letterboxes a VGA photo into its 640x640 input
    assert len(calls) == 2 * (1 + engines.AUTO_TIMING_RUNS) and {s for _, s in calls} == {(1, 3, 640, 640)}
    assert calls[2][0] != calls[3][0]
    assert "--run_mode auto: openvino (1000.0 ms per 640x640 input; onnxruntime 2000.0 ms)" in capsys.readouterr().err


def test_missing_engine_or_onnx_model_is_a_clear_error(monkeypatch, tmp_path, capsys):
    image = tmp_path / "photo.png"
    cv2.imwrite(str(image), photos()[1])
    code = deploy_infer.main(["--model_dir", exported("scrfd_500m_kps"), "--image_file", str(image),
                              "--output_dir", str(tmp_path / "out"), "--run_mode", "onnxruntime"])
    assert code == 2 and "has no ONNX model" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "openvino", None)  # what an environment without it imports
    code = deploy_infer.main(["--model_dir", exported_with_onnx("scrfd_500m_kps"), "--image_file", str(image),
                              "--output_dir", str(tmp_path / "out"), "--run_mode", "openvino"])
    assert code == 2 and "pip install openvino" in capsys.readouterr().err
    with pytest.raises(DeviceUnavailable, match="runs on CPU"):
        engines.create_engine(exported_with_onnx("scrfd_500m_kps"), load_infer_cfg(exported_with_onnx(
            "scrfd_500m_kps")), run_mode="onnxruntime", device="GPU")


def test_benchmark_prints_ratios_and_the_cpu_isa(shared_data, tmp_path):
    weights = DATA / "weights"
    table_file = tmp_path / "bench.md"
    command = [sys.executable, str(DEPLOY / "benchmark.py"), "--model_dir", exported_with_onnx("scrfd_500m_kps"),
               "--engines", "onnxruntime", "--official_onnx", str(weights / "scrfd" / "scrfd_500m_bnkps.onnx"),
               "--yunet_model_dir", exported_with_onnx("yunet_n"),
               "--yunet_onnx", str(weights / "yunet" / "face_detection_yunet_2023mar.onnx"),
               "--image_file", str(DATA / "widerface" / "WIDER_val/images/0--Parade/0_Parade_marchingband_1_149.jpg"),
               "--input_size", "320x240", "--repeats", "2", "--rounds", "1", "--warmup", "1",
               "--output", str(table_file)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {line.split("|")[1].strip(): line for line in done.stdout.splitlines() if line.startswith("| ")}
    assert {"ours-onnxruntime", "yunet-ours-onnxruntime", "ort-official", "yunet-cv2"} <= set(rows), done.stdout
    assert "ISA: AVX2 " in done.stdout and "VNNI " in done.stdout
    assert "Goal (network only" in done.stdout and "Goal (YuNet-n end to end" in done.stdout
    assert table_file.read_text().strip() == done.stdout.strip()


def test_onnxruntime_sessions_sleep_instead_of_spinning():
    """Spinning workers doubled the network's time with one busy core (README, section 6)."""
    import onnxruntime as ort
    options = engines.onnxruntime_options(ort, 2)
    assert options.intra_op_num_threads == 2
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_benchmark_reports_a_runner_that_fails(shared_data, tmp_path):
    """A child that cannot build its runner ends the run with its error, not a hang."""
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    command = [sys.executable, str(DEPLOY / "benchmark.py"), "--yunet_onnx", str(broken),
               "--image_file", str(DATA / "widerface" / "WIDER_val/images/0--Parade/0_Parade_marchingband_1_149.jpg"),
               "--repeats", "1", "--rounds", "1", "--warmup", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "timing yunet-cv2 failed" in done.stderr, done.stderr[-2000:]
