"""Two-process data parallel training on CPU (gloo), as a user launches it."""
import subprocess
import sys

import numpy as np
import paddle
import pytest

from ppfacedet.core import load_config
from ppfacedet.data.loader import build_train_loader, unpack_batch
from ppfacedet.engine.trainer import Trainer
from test_batchnorm_stats import RTOL, torch_running_variance
from tiny import ROOT, make_tiny_config

EPOCHS = 3
# One math thread everywhere: the same arithmetic in every run, whatever the number of processes
COMMON = [f"epochs={EPOCHS}", "train_loader.shuffle=false", "lr_schedule.warmup_iters=0", "seed=3", "cpu_threads=1"]


def launch(nproc, cfg, out_prefix, log_dir, *overrides):
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", str(nproc), "--log_dir",
           str(log_dir), str(ROOT / "tests" / "ddp_probe.py"), cfg, str(out_prefix), str(ROOT), *overrides]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    logs = "".join(p.read_text() for p in sorted(log_dir.glob("workerlog.*")))
    assert r.returncode == 0, logs[-3000:] + r.stderr[-2000:]


def flat(params, keys):
    return np.concatenate([np.asarray(params[k]).ravel() for k in keys])


def trained_keys(params):
    return [k for k in params.files if not k.endswith(("_mean", "_variance"))]


def concat_raw(parts):
    """Two half-batch RawOutputs -> one, as if one forward had produced them."""
    joined = type(parts[0])(parts[0].feat_sizes)
    for key in parts[0]:
        joined[key] = paddle.concat([part[key] for part in parts], axis=0)
    return joined


def per_process_bn_reference(cfg_path):
    """One process taking the steps data parallelism without SyncBN must take:
    each half-batch forward with its own BatchNorm statistics (as on separate
    processes), the loss over the whole batch (normalisers averaged over the
    processes, as the official heads do)."""
    cfg = load_config(cfg_path, COMMON + ["train_loader.batch_size=8", "train_loader.num_workers=0"])
    trainer = Trainer(cfg)
    dataset, _, loader = build_train_loader(cfg, trainer.policy)
    optimizer = trainer._build_optimizer()
    model = trainer.model
    for epoch in range(EPOCHS):
        dataset.epoch = epoch
        batch = unpack_batch(next(iter(loader)))
        raw = concat_raw([model(batch["image"][half]) for half in (slice(0, 4), slice(4, 8))])
        model.loss(raw, batch)["loss"].backward()
        optimizer.step()
        optimizer.clear_grad()
    return {k: v.numpy() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    """The tiny config: 8 images, one global batch per epoch, always the same data."""
    tmp = tmp_path_factory.mktemp("ddp")
    return make_tiny_config(tmp, num_train=8), tmp


def one_process(cfg, tmp, tag, *overrides):
    """The parameters one process reaches with the whole batch of 8."""
    launch(1, cfg, tmp / f"{tag}_rank", tmp / f"log_{tag}", "train_loader.batch_size=8", *COMMON, *overrides)
    return np.load(tmp / f"{tag}_rank0.npz")


def two_processes(cfg, tmp, tag, *overrides):
    launch(2, cfg, tmp / f"{tag}_rank", tmp / f"log_{tag}", "train_loader.batch_size=4", *COMMON, *overrides)
    rank0, rank1 = np.load(tmp / f"{tag}_rank0.npz"), np.load(tmp / f"{tag}_rank1.npz")
    for key in trained_keys(rank0):
        np.testing.assert_array_equal(rank0[key], rank1[key], err_msg=f"ranks diverged at {key}")
    return rank0


@pytest.mark.slow
def test_two_processes_take_the_steps_of_per_process_batchnorm(tiny_setup):
    cfg, tmp = tiny_setup
    rank0 = two_processes(cfg, tmp, "ddp")
    single = one_process(cfg, tmp, "single")
    keys = trained_keys(rank0)
    to_reference = np.abs(flat(rank0, keys) - flat(per_process_bn_reference(cfg), keys)).max()
    to_single = np.abs(flat(rank0, keys) - flat(single, keys)).max()
    print(f"after {EPOCHS} steps without sync_bn: max |2-process - 1-process(batch 8)| = {to_single:.3e}; "
          f"max |2-process - 1-process(per-half BatchNorm)| = {to_reference:.3e}")
    assert to_reference < 1e-4


@pytest.mark.slow
def test_sync_bn_two_processes_equal_one_process_at_the_full_batch(tmp_path):
    """sync_bn's BatchNorm on two processes with 4 images each takes the steps
    one process takes with Paddle's BatchNorm on all 8 (parameters and running
    statistics)."""
    probe = str(ROOT / "tests" / "sync_bn_probe.py")
    for nproc in (1, 2):
        cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", str(nproc), "--log_dir",
               str(tmp_path / f"log{nproc}"), probe, str(tmp_path / f"bn{nproc}_rank"), str(ROOT)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
        logs = "".join(p.read_text() for p in sorted((tmp_path / f"log{nproc}").glob("workerlog.*")))
        assert r.returncode == 0, logs[-3000:] + r.stderr[-2000:]
    single, rank0, rank1 = (np.load(tmp_path / name) for name in ("bn1_rank0.npz", "bn2_rank0.npz", "bn2_rank1.npz"))
    assert sorted(single.files) == sorted(rank0.files)
    diff = max(float(np.abs(rank0[k] - single[k]).max()) for k in single.files)
    print(f"after 3 steps: max |2-process sync_bn - 1-process BatchNorm| = {diff:.3e} (parameters and statistics)")
    for key in single.files:
        np.testing.assert_allclose(rank0[key], single[key], rtol=1e-4, atol=1e-5, err_msg=key)
        np.testing.assert_array_equal(rank0[key], rank1[key], err_msg=f"ranks diverged at {key}")
    for nproc, final in ((1, single), (2, rank0)):
        worst = worst_synced_variance_error(final, [np.load(tmp_path / f"bn{nproc}_rank{r}_inputs.npz")
                                                    for r in range(nproc)])
        print(f"{nproc} process(es): max |running variance / torch's over the whole batch - 1| = {worst:.2e}")
        assert worst < RTOL


def worst_synced_variance_error(final, rank_inputs):
    """max |running variance / torch's - 1|, torch's taken over the inputs of
    every rank at each step, i.e. the whole synchronised batch (rank order is
    image order)."""
    worst = 0.0
    for key in rank_inputs[0].files:
        if key.endswith("|v0"):
            name = key[:-len("|v0")]
            steps = sorted(int(k.split("|")[1]) for k in rank_inputs[0].files if k.startswith(name + "|")
                           and not k.endswith("|v0"))
            batches = [np.concatenate([r[f"{name}|{step}"] for r in rank_inputs]) for step in steps]
            expected = torch_running_variance(rank_inputs[0][key], batches)
            worst = max(worst, float(np.abs(final[f"{name}._variance"] / expected - 1).max()))
    return worst
