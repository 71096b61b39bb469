"""Two-process data parallel training on CPU (gloo), as a user launches it."""
import subprocess
import sys

import numpy as np
import pytest

from ppfacedet.core import load_config
from ppfacedet.data.loader import build_train_loader, unpack_batch
from ppfacedet.engine.trainer import Trainer
from tiny import ROOT, make_tiny_config

EPOCHS = 3
COMMON = [f"epochs={EPOCHS}", "train_loader.shuffle=false", "lr_schedule.warmup_iters=0", "seed=3"]


def launch(nproc, cfg, out_prefix, log_dir, *overrides):
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", str(nproc), "--log_dir",
           str(log_dir), str(ROOT / "tests" / "ddp_probe.py"), cfg, str(out_prefix), str(ROOT), *overrides]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    logs = "".join(p.read_text() for p in sorted(log_dir.glob("workerlog.*")))
    assert r.returncode == 0, logs[-3000:] + r.stderr[-2000:]


def half_batch_reference(cfg_path):
    """One process taking the steps data parallelism must take: the mean of
    the gradients of the two half-batches the two ranks see (each half with
    its own BatchNorm batch statistics, as on separate processes)."""
    cfg = load_config(cfg_path, COMMON + ["train_loader.batch_size=8", "train_loader.num_workers=0"])
    trainer = Trainer(cfg)
    dataset, _, loader = build_train_loader(cfg, trainer.policy)
    optimizer = trainer._build_optimizer()
    model = trainer.model
    for epoch in range(EPOCHS):
        dataset.epoch = epoch
        batch = unpack_batch(next(iter(loader)))
        for half in (slice(0, 4), slice(4, 8)):
            part = {k: batch[k][half] for k in ("image", "gt_boxes", "gt_landmarks", "landmark_valid")}
            (model.loss(model(part["image"]), part)["loss"] / 2).backward()
        optimizer.step()
        optimizer.clear_grad()
    return {k: v.numpy() for k, v in model.state_dict().items()}


@pytest.mark.slow
def test_two_process_training_equals_averaged_half_batch_gradients(tmp_path):
    # 8 images: one global batch per epoch (2 ranks x 4), always the same data.
    cfg = make_tiny_config(tmp_path, num_train=8)
    launch(2, cfg, tmp_path / "ddp_rank", tmp_path / "log2", "train_loader.batch_size=4", *COMMON)
    launch(1, cfg, tmp_path / "single_rank", tmp_path / "log1", "train_loader.batch_size=8", *COMMON)
    rank0, rank1 = np.load(tmp_path / "ddp_rank0.npz"), np.load(tmp_path / "ddp_rank1.npz")
    single = np.load(tmp_path / "single_rank0.npz")
    trained = [k for k in rank0.files if not k.endswith(("_mean", "_variance"))]
    for key in trained:
        np.testing.assert_array_equal(rank0[key], rank1[key], err_msg=f"ranks diverged at {key}")

    reference = half_batch_reference(cfg)
    flat = lambda d: np.concatenate([np.asarray(d[k]).ravel() for k in trained])  # noqa: E731
    to_reference = np.abs(flat(rank0) - flat(reference)).max()
    to_single = np.abs(flat(rank0) - flat(single)).max()
    print(f"after {EPOCHS} steps: max |2-process - 1-process(batch 8)| = {to_single:.3e}; "
          f"max |2-process - 1-process(mean of half-batch gradients)| = {to_reference:.3e}")
    assert to_reference < 1e-3
