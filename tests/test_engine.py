import math
import os

import numpy as np
import paddle
import pytest

from ppfacedet.core import load_config
from ppfacedet.engine import checkpoint
from ppfacedet.engine.optim import WarmupCosine, WarmupStep
from ppfacedet.engine.trainer import Trainer, TrainingError
from tiny import make_tiny_config


def params(model):
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


def test_warmup_step_schedule_hand_computed():
    s = WarmupStep(base_lr=0.1, milestones=[2, 3], gamma=0.1, warmup_iters=10, warmup_ratio=0.0)
    assert s.lr_at(0, 10, 4) == 0.0
    assert s.lr_at(5, 10, 4) == pytest.approx(0.05)
    assert s.lr_at(15, 10, 4) == pytest.approx(0.1)
    assert s.lr_at(25, 10, 4) == pytest.approx(0.01)
    assert s.lr_at(35, 10, 4) == pytest.approx(0.001)


def test_warmup_cosine_schedule_hand_computed():
    s = WarmupCosine(base_lr=1.0, min_lr_ratio=0.1, warmup_iters=0, warmup_ratio=1.0)
    assert s.lr_at(0, 10, 2) == pytest.approx(1.0)
    assert s.lr_at(10, 10, 2) == pytest.approx(0.1 + 0.9 * 0.5)
    assert s.lr_at(20, 10, 2) == pytest.approx(0.1)


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = str(tmp_path / "ckpt.pdparams")
    checkpoint.atomic_save({"w": paddle.ones([2])}, path)

    def broken_save(obj, target):
        with open(target, "wb") as f:
            f.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.paddle, "save", broken_save)
    with pytest.raises(OSError):
        checkpoint.atomic_save({"w": paddle.zeros([2])}, path)
    monkeypatch.undo()
    np.testing.assert_array_equal(paddle.load(path)["w"].numpy(), [1, 1])
    assert os.listdir(tmp_path) == ["ckpt.pdparams"]


def test_training_is_deterministic_and_resume_continues_exactly(tmp_path):
    cfg_path = make_tiny_config(tmp_path)
    straight = Trainer(load_config(cfg_path, ["save_dir=" + str(tmp_path / "a")]))
    straight.train()
    once_more = Trainer(load_config(cfg_path, ["save_dir=" + str(tmp_path / "b")]))
    once_more.train()
    reference = params(straight.model)
    for key, value in params(once_more.model).items():
        np.testing.assert_array_equal(value, reference[key], err_msg=f"seeded runs differ at {key}")

    first = Trainer(load_config(cfg_path, ["save_dir=" + str(tmp_path / "c"), "epochs=1"]))
    first.train()
    resumed = Trainer(load_config(cfg_path, ["save_dir=" + str(tmp_path / "c")]))
    resumed.resume(str(tmp_path / "c" / "tiny" / "latest.pdckpt"))
    assert resumed.state["epoch"] == 1 and resumed.state["iteration"] == first.state["iteration"]
    resumed.train()
    for key, value in params(resumed.model).items():
        np.testing.assert_allclose(value, reference[key], atol=1e-6, err_msg=f"resume differs at {key}")
    out = tmp_path / "c" / "tiny"
    assert {"latest.pdckpt", "epoch_1.pdparams", "epoch_2.pdparams", "model_final.pdparams"} <= set(os.listdir(out))


def test_non_finite_losses_skip_updates_then_stop_keeping_the_checkpoint(tmp_path, monkeypatch):
    cfg_path = make_tiny_config(tmp_path)
    trainer = Trainer(load_config(cfg_path, ["epochs=1"]))
    trainer.train()
    saved = paddle.load(str(tmp_path / "output" / "tiny" / "latest.pdckpt"))
    before = params(trainer.model)

    trainer = Trainer(load_config(cfg_path, ["epochs=4"]))
    trainer.resume(str(tmp_path / "output" / "tiny" / "latest.pdckpt"))
    real_loss = trainer.model.head.loss

    def nan_loss(raw, batch):
        losses = real_loss(raw, batch)
        return {k: v * float("nan") for k, v in losses.items()}

    monkeypatch.setattr(trainer.model.head, "loss", nan_loss)
    with pytest.raises(TrainingError, match="latest.pdckpt"):
        trainer.train()
    for key, value in params(trainer.model).items():  # no NaN update was applied
        np.testing.assert_array_equal(value, before[key])
    again = paddle.load(str(tmp_path / "output" / "tiny" / "latest.pdckpt"))
    assert again["epoch"] == saved["epoch"] == 1


def test_unreadable_images_are_skipped_and_counted(tmp_path):
    cfg_path = make_tiny_config(tmp_path)
    (tmp_path / "data" / "train" / "images" / "synth_00003.jpg").write_bytes(b"garbage")
    trainer = Trainer(load_config(cfg_path, ["epochs=1"]))
    state = trainer.train()
    assert state["skipped_samples"] == 1
    assert all(math.isfinite(v) for v in state["losses"].values())


def test_visualdl_logs_loss_terms_lr_and_ap(tmp_path):
    cfg_path = make_tiny_config(tmp_path)
    trainer = Trainer(load_config(cfg_path, ["epochs=1"]), use_vdl=True, evaluate_during_training=True)
    state = trainer.train()
    assert set(state["metrics"]) == {"easy", "medium", "hard"}
    from visualdl import LogReader
    logdir = tmp_path / "output" / "tiny" / "vdl"
    files = [f for f in os.listdir(logdir) if f.startswith("vdlrecords")]
    reader = LogReader(file_path=str(logdir / files[0]))
    tags = set(reader.get_tags()["scalar"])
    assert {"train/loss", "train/loss_cls", "train/lr", "train/images_per_sec", "eval/hard_ap"} <= tags
    assert (tmp_path / "output" / "tiny" / "best_model.pdparams").exists()


def test_load_weights_reports_mismatches(tmp_path):
    cfg = load_config(make_tiny_config(tmp_path))
    from ppfacedet.modeling.detector import build_model
    model = build_model(cfg)
    path = str(tmp_path / "w.pdparams")
    state = model.state_dict()
    state.pop(next(iter(state)))
    paddle.save(state, path)
    from ppfacedet.core.errors import PPFaceDetError
    with pytest.raises(PPFaceDetError, match="missing 1"):
        checkpoint.load_weights(model, path)
    assert len(checkpoint.load_weights(model, path, strict=False)) == 1


def test_images_without_faces_train(tmp_path):
    cfg_path = make_tiny_config(tmp_path)
    label = tmp_path / "data" / "train" / "labelv2.txt"
    # keep the headers of the first 8 images only: every image has no faces
    headers = [line for line in label.read_text().splitlines() if line.startswith("#")][:8]
    label.write_text("\n".join(headers) + "\n")
    state = Trainer(load_config(cfg_path, ["epochs=1"])).train()
    assert state["iteration"] == 2
    assert all(math.isfinite(v) for v in state["losses"].values())


def test_amp_on_cpu_says_it_is_a_no_op_and_trains_in_float32(tmp_path, caplog):
    if paddle.is_compiled_with_cuda():
        pytest.skip("this build has CUDA: --amp is real here")
    import logging
    with caplog.at_level(logging.WARNING, logger="ppfacedet"):
        trainer = Trainer(load_config(make_tiny_config(tmp_path), ["epochs=1"]), amp=True)
    assert trainer.amp is False
    assert any("--amp needs a GPU" in r.message for r in caplog.records)


def test_metric_is_built_by_name_and_checked(tmp_path):
    from ppfacedet.core import ConfigError
    from ppfacedet.engine.metrics import WiderFaceMAP, build_metric
    cfg_path = make_tiny_config(tmp_path)
    assert isinstance(build_metric(load_config(cfg_path, ["metric.type=WiderFaceMAP"])), WiderFaceMAP)
    with pytest.raises(ConfigError, match="did you mean 'WiderFaceAP'"):
        build_metric(load_config(cfg_path, ["metric.type=WiderFaceAp"]))
    with pytest.raises(ConfigError, match="easy, medium, hard"):
        build_metric(load_config(cfg_path, ["metric.type=WiderFaceAP", "metric.target=hardest"]))
    # the stricter metric scores the same model lower: IoU 0.5 is its easiest threshold
    trainer = Trainer(load_config(cfg_path, ["epochs=1"]))
    trainer.train()
    ap = trainer.evaluate()
    trainer.cfg["metric"] = {"type": "WiderFaceMAP"}
    strict = trainer.evaluate()
    assert all(strict[k] <= ap[k] + 1e-9 for k in ap)
