"""YuNet end to end: tools/infer.py gives the official protocol's detections,
and YuNet-n trained from scratch on tiny synthetic data learns."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tiny import make_tiny_config

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
WEIGHTS = DATA / "weights" / "yunet"
PHOTOS = [DATA / "widerface" / "WIDER_val" / "images" / "0--Parade" / "0_Parade_marchingband_1_149.jpg",
          *sorted((DATA / "widerface" / "val_subset_resized416" / "images").rglob("*.jpg"))[:2]]


@pytest.fixture(scope="module")
def converted_yunet_n(tmp_path_factory):
    """yunet_n.pth converted to .pdparams, as tools/convert_weights.py would write it."""
    if not WEIGHTS.is_dir():
        pytest.skip("../shared/data not present: official weights are not redistributable")
    import paddle

    from ppfacedet.convert.apply import convert_official_weights
    from ppfacedet.core import load_config
    model, _ = convert_official_weights(load_config(str(ROOT / "configs" / "yunet_n.yml")),
                                        str(WEIGHTS / "yunet_n.pth"))
    path = tmp_path_factory.mktemp("weights") / "yunet_n.pdparams"
    paddle.save(model.state_dict(), str(path))
    return path


def _pair_up(boxes, ref_boxes):
    """Index of the reference detection paired with each detection (one to one,
    least total box distance): near-equal scores may leave NMS in either order."""
    from scipy.optimize import linear_sum_assignment
    cost = np.abs(boxes[:, None, :] - ref_boxes[None, :, :]).max(axis=2)
    rows, cols = linear_sum_assignment(cost)
    return cols[np.argsort(rows)]


def test_infer_tool_matches_the_official_protocol(converted_yunet_n, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    import cv2

    from official_yunet import run_official
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in PHOTOS:
        (photos / p.name).symlink_to(p)
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "tools" / "infer.py"), "-c", str(ROOT / "configs" / "yunet_n.yml"),
           "-o", f"weights={converted_yunet_n}", "--infer_dir", str(photos), "--output_dir", str(out),
           "--save_txt", "--threshold", "0"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=str(ROOT),
                          env={**os.environ, "FLAGS_call_stack_level": "0"})
    assert done.returncode == 0, done.stderr[-2000:]

    session = ort.InferenceSession(str(WEIGHTS / "yunet_n_dynamic.onnx"), providers=["CPUExecutionProvider"])
    for photo in PHOTOS:
        ref_boxes, ref_scores = run_official(session, cv2.imread(str(photo)), 0.02, 0.45)
        faces = json.loads((out / f"{photo.stem}.json").read_text())["faces"]
        assert len(ref_scores) > 0 and len(faces) == len(ref_scores), photo.name
        boxes = np.array([f["box"] for f in faces], np.float64)
        scores = np.array([f["score"] for f in faces], np.float64)
        pair = _pair_up(boxes, ref_boxes)
        ref_boxes, ref_scores = ref_boxes[pair], ref_scores[pair]
        np.testing.assert_allclose(scores, ref_scores, atol=1e-4, err_msg=photo.name)
        np.testing.assert_allclose(boxes, ref_boxes, atol=1e-2, err_msg=photo.name)
        # the WIDER prediction file lists the same detections
        lines = (out / f"{photo.stem}.txt").read_text().splitlines()
        assert lines[0] == photo.name and int(lines[1]) == len(ref_scores) == len(lines) - 2


def _tiny_yunet_config(tmp_path):
    """YuNet-n on the tiny synthetic set of tests/tiny.py. A few hundred steps
    of the official SGD recipe barely move YuNet's raw-pixel input, so the
    short run uses AdamW."""
    make_tiny_config(tmp_path, num_train=32)
    data = tmp_path / "data"
    cfg = tmp_path / "yunet_tiny.yml"
    cfg.write_text(textwrap.dedent(f"""
        _BASE_: [{ROOT / 'configs' / 'yunet_n.yml'}]
        save_dir: {tmp_path / 'output'}
        train_dataset:
          type: LabelV2Dataset
          label_file: {data / 'train' / 'labelv2.txt'}
          image_root: {data / 'train' / 'images'}
          transforms:
            - {{type: RandomFlip}}
            - {{type: Resize, size: 96}}
        eval_dataset:
          type: LabelV2Val
          label_file: {data / 'val' / 'labelv2.txt'}
          image_root: {data / 'val' / 'images'}
        train_loader: {{batch_size: 4, num_workers: 0}}
        auto_scale_lr: {{base_batch_size: null}}  # its own LR for batch 4, not the recipe's scaled
        optimizer: {{type: AdamW}}
        lr_schedule: {{type: WarmupCosine, base_lr: 0.005, warmup_iters: 4, warmup_ratio: 0.1, min_lr_ratio: 0.1}}
        epochs: 20
        log_iter: 1000
        snapshot_epoch: 1000
        """))
    return str(cfg)


@pytest.mark.slow
def test_yunet_n_learns_tiny_synthetic_faces(tmp_path):
    from ppfacedet.core import load_config
    from ppfacedet.engine.evaluation import evaluate_model
    from ppfacedet.engine.trainer import Trainer
    cfg = load_config(_tiny_yunet_config(tmp_path))
    trainer = Trainer(cfg)
    before = evaluate_model(trainer.model, cfg, progress=False)
    trainer.train()
    after = evaluate_model(trainer.model, cfg, progress=False)
    assert after["hard"] > before["hard"] + 0.2, (before, after)
