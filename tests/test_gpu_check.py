"""tools/gpu_check.py up to the device: arguments, the no-GPU exit, the
detection agreement rule, the report, the training verdict and launch command,
and the inference loop wired end to end with GPU runs stood in by CPU ones."""
import json
import math
import os
import re
import shutil
import subprocess
import sys

import cv2
import numpy as np
import paddle
import pytest

from deploy_support import exported, photos
from ppfacedet.compare.agreement import compare_detections, compare_runs
from tiny import ROOT

# appended, not inserted first: tools/infer.py must not shadow deploy/python/infer.py
sys.path.append(str(ROOT / "tools"))
import gpu_check  # noqa: E402
import gpu_check_train  # noqa: E402

FACES = {"boxes": np.array([[10, 10, 60, 70], [100, 20, 140, 70], [200, 200, 220, 225]], np.float32),
         "scores": np.array([0.95, 0.80, 0.505], np.float32)}


def moved(det, box_shift=0.0, score_shift=0.0, keep=None):
    keep = slice(None) if keep is None else keep
    return {"boxes": det["boxes"][keep] + box_shift, "scores": det["scores"][keep] + score_shift}


@pytest.mark.skipif(paddle.is_compiled_with_cuda(), reason="this paddle has CUDA")
def test_no_gpu_says_so_and_exits_2():
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_check.py"), "--train"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2
    assert "no GPU" in done.stderr and "CPU-only build" in done.stderr and "nothing was checked" in done.stderr


def test_arguments():
    args, _ = gpu_check.parse_args(["--weights", "w.onnx", "--image_dir", "d"])
    assert (args.max_images, args.repeats, args.train) == (8, 20, False)
    for bad in (["--repeats", "0"], ["--max_images", "0"], ["--skip_inference"]):
        with pytest.raises(SystemExit) as error:
            gpu_check.parse_args(bad)
        assert error.value.code == 2


def test_export_needs_the_weights(tmp_path):
    from ppfacedet.core.errors import PPFaceDetError
    args, _ = gpu_check.parse_args(["--weights", str(tmp_path / "missing.onnx"), "--work_dir", str(tmp_path)])
    with pytest.raises(PPFaceDetError, match="--weights: need the model's weights file"):
        gpu_check.export_both_formats(args)
    with pytest.raises(PPFaceDetError, match="--image_dir: need a folder"):
        gpu_check.read_photos(args)


def test_run_plan(tmp_path):
    (tmp_path / "infer_cfg.yml").write_text(
        "{program: model.pdmodel, params: model.pdiparams, input: {}, outputs: [], decode: {}, test: {}}")
    plan = gpu_check.run_plan({"pir": "P", "legacy": "L"}, str(tmp_path))
    first, again = gpu_check.FIRST_CWD, gpu_check.SECOND_CWD
    assert plan == [("pir", "P", "paddle", None), ("pir", "P", "trt_fp32", first), ("pir", "P", "trt_fp16", first),
                    ("pir cached, other cwd", "P", "trt_fp32", again), ("pir cached, other cwd", "P", "trt_fp16", again),
                    ("legacy", "L", "paddle", None), ("legacy", "L", "trt_fp32", None),
                    ("legacy", "L", "trt_fp16", None), ("int8 legacy", str(tmp_path), "trt_int8", None)]


def test_agreement_rule():
    assert compare_detections(FACES, moved(FACES, 0.1, 0.005), 0.01)["problems"] == []
    shifted = compare_detections(FACES, moved(FACES, box_shift=np.array([4, 0, 4, 0], np.float32)), 0.01)
    assert len(shifted["problems"]) == 4 and "no partner with IoU >= 0.95" in shifted["problems"][0]
    scored = compare_detections(FACES, moved(FACES, score_shift=0.015), 0.01)
    assert any("differs by 0.0150 > 0.01" in p for p in scored["problems"])
    assert compare_detections(FACES, moved(FACES, score_shift=0.015), 0.02)["problems"] == []
    missing = compare_detections(FACES, moved(FACES, keep=[0, 2]), 0.01)["problems"]
    assert len(missing) == 1 and "reference face [100.0, 20.0, 140.0, 70.0] score 0.800" in missing[0]
    # 0.505 is within the tolerance of the 0.5 threshold: it may be missing from the other run
    assert compare_detections(FACES, moved(FACES, keep=[0, 1]), 0.01)["problems"] == []
    extra = {"boxes": np.concatenate([FACES["boxes"], [[300, 300, 340, 350]]]).astype(np.float32),
             "scores": np.concatenate([FACES["scores"], [0.9]]).astype(np.float32)}
    assert "candidate face [300.0" in compare_detections(FACES, extra, 0.01)["problems"][0]
    total = compare_runs([FACES, FACES], [FACES, moved(FACES, keep=[0])], 0.01)
    assert total["faces"] == 6 and total["problems"][0].startswith("image 1: reference face")
    assert compare_detections(FACES, FACES, 0.01)["min_iou"] == pytest.approx(1.0)
    # a collapsed box (no area: its IoU with itself is 0) is the same face in both runs,
    # and a different face once it moves by more than SAME_BOX_PX
    point = {"boxes": np.array([[28.8, 0.0, 28.8, 0.0]], np.float32), "scores": np.array([0.9], np.float32)}
    assert compare_detections(point, point, 0.01)["problems"] == []
    assert len(compare_detections(point, moved(point, box_shift=np.full(4, 0.02, np.float32)), 0.01)["problems"]) == 2


def test_report_and_training_verdict():
    env = {"paddle": "3.3.1", "cuda_build": True, "gpus": ["NVIDIA A10", "NVIDIA A10"], "cuda": "12.6",
           "cudnn": "9.5.1", "tensorrt_compiled": "10.5.0", "tensorrt_runtime": "10.5.0"}
    assert gpu_check.no_gpu_reason(env) is None
    assert "sees no GPU" in gpu_check.no_gpu_reason(dict(env, gpus=[]))
    rows = [{"format": "pir", "run_mode": "trt_fp16", "problems": [], "faces": 12, "max_score_diff": 0.0123,
             "min_iou": 0.981, "latency": {1: 1.234, 8: 0.456}},
            {"format": "legacy", "run_mode": "trt_fp32", "problems": ["TensorRTError: boom"]}]
    report = gpu_check.inference_report(env, rows)
    assert "GPU 0: NVIDIA A10, 1: NVIDIA A10 | paddle 3.3.1 | CUDA 12.6 | cuDNN 9.5.1 | TensorRT 10.5.0" in report
    assert "| pir | trt_fp16 | 12 | ok | 0.0123 (<= 0.02) | 0.981 | 1.23 | 0.46 |" in report
    assert "| legacy | trt_fp32 | - | FAIL | - | - | - | - |" in report
    assert "FAIL legacy trt_fp32: TensorRTError: boom" in report

    run = {"world_size": 2, "images_per_sec_per_gpu": 100.0, "loss": 2.0}
    assert gpu_check.judge_training({"fp32": run, "amp": dict(run, loss=2.15)}) == []
    assert "more than 10%" in gpu_check.judge_training({"fp32": run, "amp": dict(run, loss=2.3)})[0]
    assert "not finite" in gpu_check.judge_training({"fp32": run, "amp": dict(run, loss=math.nan)})[0]
    assert "workerlog" in gpu_check.judge_training({"fp32": run, "amp": {"error": "see log/workerlog.0"}})[0]
    table = gpu_check.training_report({"fp32": run, "amp": dict(run, loss=2.3)}, ["AMP loss differs"])
    assert "| fp32 | 2 | 100.0 | 2.0000 |" in table and "FAIL training: AMP loss differs" in table

    cmd = gpu_check.train_command(2, True, "r.json", "logs", ["epochs=1000"])
    assert cmd[1:5] == ["-m", "paddle.distributed.launch", "--devices", "0,1"]
    assert cmd[-1] == "--amp" and ["--iters", "20"] == cmd[cmd.index("--iters"):cmd.index("--iters") + 2]


def test_train_worker_stops_after_the_iterations(tmp_path):
    """The worker on CPU (one process, no launch): a handful of tiny iterations."""
    from ppfacedet.core import load_config
    from ppfacedet.data.synthetic import ensure_synthetic
    overrides = gpu_check.train_overrides(str(tmp_path)) + [
        "synthetic.num_train=16", "synthetic.num_val=2", "synthetic.image_size=96", "synthetic.face_size=[16, 40]",
        "train_loader.batch_size=2", "train_loader.num_workers=0",
        "train_dataset.transforms=[{type: Resize, size: 96}]"]
    ensure_synthetic(load_config(str(ROOT / gpu_check.TRAIN_CONFIG), overrides)["synthetic"])
    out = tmp_path / "r.json"
    cmd = [sys.executable, str(ROOT / "tools" / "gpu_check_train.py"), "-c", str(ROOT / gpu_check.TRAIN_CONFIG),
           "--iters", "7", "--out", str(out)] + [a for o in overrides for a in ("-o", o)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["iterations"] == 7 and result["world_size"] == 1 and result["amp"] is False
    assert math.isfinite(result["loss"]) and result["images_per_sec_per_gpu"] > 0
    assert gpu_check_train.LOSS_WINDOW == result["loss_window"]


@pytest.mark.slow
def test_inference_check_end_to_end_with_cpu_stand_ins(tmp_path, monkeypatch, capsys):
    """Runs the plan on both formats, compares and times, with each "GPU" run served
    by the CPU predictor; a trt_fp16 run whose scores drift fails the check, and so
    does a repeated PIR run that converts again. (Copies of the tests' cached
    exports stand in for the tool's own, and latency is cut short: the shared CPU
    takes ~0.5 s per 640x640 image.)"""
    pir = tmp_path / "pir"
    shutil.copytree(exported("scrfd_500m_kps"), pir)
    (pir / "tensorrt").mkdir()  # a previous run's conversions: cleared, so the first run converts
    monkeypatch.setattr(gpu_check, "export_both_formats", lambda args: {
        "pir": str(pir), "legacy": exported("scrfd_500m_kps", program_format="legacy")})
    monkeypatch.setattr(gpu_check, "LATENCY_BATCHES", (1, 2))
    monkeypatch.setattr(gpu_check, "WARMUP", 0)
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), photos()[1])
    infer = gpu_check.deploy_infer()
    real, built, converted = infer.FaceDetector, [], set()

    class CpuStandIn(real):
        """Every run keeps its 20 best boxes, lifted by LIFT so that they count as
        faces even when the weights are random (no ../shared: such a model
        scores about 0.01 everywhere); the trt_fp16 run's scores drift by 0.03."""
        LIFT = 0.6

        def __init__(self, model_dir, device="CPU", run_mode="paddle", **choices):
            built.append((device, run_mode, choices, model_dir, os.getcwd()))
            super().__init__(model_dir, batch_size=choices.get("batch_size", 1))
            self.test_cfg.update(score_threshold=0.0, pre_nms_top_k=20)
            self.drift = self.LIFT + (0.03 if run_mode == "trt_fp16" else 0.0)
            if device == "GPU" and run_mode != "paddle" and model_dir.endswith("pir"):  # as PirConversion reports
                key = (os.path.abspath(model_dir), run_mode)
                self.engine.conversion = ("tensorrt/" + run_mode, {}, key not in converted or run_mode == "trt_fp16")
                converted.add(key)

        def __call__(self, images):
            return [dict(d, scores=d["scores"] + self.drift) for d in super().__call__(images)]

    monkeypatch.setattr(infer, "FaceDetector", CpuStandIn)
    monkeypatch.setattr(gpu_check, "gpu_environment", lambda: {
        "paddle": paddle.__version__, "cuda_build": True, "gpus": ["stand-in"], "cuda": "-", "cudnn": "-"})
    before = os.getcwd()
    code = gpu_check.main(["--image_dir", str(images), "--repeats", "1",
                           "--work_dir", str(tmp_path / "work")])
    out = capsys.readouterr().out
    assert code == 1 and "GPU self-check: FAILED" in out
    for fmt in ("pir", "legacy"):
        assert f"| {fmt} | paddle |" in out and f"| {fmt} | trt_fp32 |" in out
        assert f"FAIL {fmt} trt_fp16: image 0:" in out
    assert "ms/img b1 | ms/img b2 |" in out
    assert not (pir / "tensorrt").exists()
    assert re.search(r"\| pir cached, other cwd \| trt_fp32 \| \d+ \| ok \|", out)
    assert "FAIL pir cached, other cwd trt_fp16: converted again into tensorrt/trt_fp16 instead of loading" in out
    gpu_runs = [(mode, choices, model, cwd) for device, mode, choices, model, cwd in built if device == "GPU"]
    assert [mode for mode, *_ in gpu_runs] == ["paddle", "trt_fp32", "trt_fp16", "trt_fp32", "trt_fp16",
                                               "paddle", "trt_fp32", "trt_fp16"]
    assert gpu_runs[1][1] == {"batch_size": 2, "trt_min_shape": 640, "trt_opt_shape": 640, "trt_max_shape": 640}
    first, again = gpu_runs[1][2:], gpu_runs[3][2:]  # (model path, working directory) of the PIR trt_fp32 runs
    assert first[1] != again[1] and first[0] != again[0] and not os.path.isabs(again[0])
    assert os.path.abspath(os.path.join(first[1], first[0])) == os.path.abspath(os.path.join(again[1], again[0]))
    assert os.getcwd() == before  # the check went back where it started
