"""The training process and its loader workers: no deadlock after --eval, a
watchdog that ends a stalled run with stacks, no worker outliving its trainer.

Every run here is ``tools/train.py`` in a child process with a time limit. A
run that hangs is not waited for: the harness asks every process of the run
for its Python stacks (SIGUSR1: the trainer and the workers register
faulthandler for it), kills them all and fails with the stacks.
"""
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from ppfacedet.data.loader_workers import WORKER_NAME, descendants, process_name
from ppfacedet.data.synthetic import write_split
from ppfacedet.engine.watchdog import EXIT_STALLED
from tiny import ROOT

pytestmark = pytest.mark.slow
FAMILIES = ["retinaface_mnet025", "scrfd_500m_kps", "yunet_n"]
PHOTO = {"image_size": 640, "faces_per_image": [2, 6], "face_size": [24, 160]}


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Real-size (640x640) photos of drawn faces: 4 to train on, 2 to evaluate."""
    root = tmp_path_factory.mktemp("photos")
    write_split(str(root / "train"), 4, PHOTO, 0, "train photos")
    write_split(str(root / "val"), 2, PHOTO, 1, "val photos")
    return root


def config_for(tmp_path, base, photos, train=None, evaluation=None, loader=None, **top):
    """``base`` (the model's own config: its train pipeline and num_workers) on
    the photos, one epoch of two steps of two images; the dicts override."""
    config = {
        "_BASE_": [str(ROOT / "configs" / f"{base}.yml")],
        "save_dir": str(tmp_path / "output"),
        "train_dataset": {"type": "LabelV2Dataset", "label_file": str(photos / "train" / "labelv2.txt"),
                          "image_root": str(photos / "train" / "images"), **(train or {})},
        "eval_dataset": {"type": "LabelV2Val", "label_file": str(photos / "val" / "labelv2.txt"),
                         "image_root": str(photos / "val" / "images"), **(evaluation or {})},
        "train_loader": {"batch_size": 2, **(loader or {})},
        "auto_scale_lr": {"base_batch_size": None},
        "epochs": 1, "log_iter": 1, "pretrain_weights": None, **top,
    }
    path = tmp_path / "run.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def start_training(config, *args):
    return subprocess.Popen([sys.executable, str(ROOT / "tools" / "train.py"), "-c", str(config), *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def stacks_then_kill(proc):
    """Stacks of the trainer and its workers (on their stderr), then SIGKILL to all."""
    run = [proc.pid] + descendants(proc.pid)
    for pid in run:
        if pid == proc.pid or process_name(pid).startswith(WORKER_NAME):
            _signal(pid, signal.SIGUSR1)
    time.sleep(2)
    for pid in run:
        _signal(pid, signal.SIGKILL)


def _signal(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def finish(proc, timeout):
    """(returncode, stdout, stderr); a run still going after ``timeout`` s is a hang."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stacks_then_kill(proc)
        out, err = proc.communicate()
        pytest.fail(f"training hung for {timeout} s; stdout:\n{out[-3000:]}\nstacks (stderr):\n{err[-20000:]}")
    return proc.returncode, out, err


def alive(pid):
    """Running (a zombie waiting to be reaped has finished)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("base", FAMILIES)
def test_eval_then_training_with_loader_workers_makes_its_steps(tmp_path, photos, base):
    """The flagship command's shape: evaluate (the parent's thread pools run),
    then train with the config's own loader workers. Forked from the trainer
    the workers could deadlock in the thread pools it had used."""
    proc = start_training(config_for(tmp_path, base, photos), "--eval")
    code, out, err = finish(proc, timeout=420)
    assert code == 0, err[-3000:]
    assert "eval before training" in out and "iter 2/2" in out and "eval after epoch 1" in out


# Stalls on purpose, registered in every process of a run (trainer, fork
# server, workers) by Python's own start-up hook, as a user's module would be.
STALLING_COMPONENTS = """
import threading
from ppfacedet.core.registry import DATASETS, TRANSFORMS
from ppfacedet.data.datasets import LabelV2Val


@TRANSFORMS.register
class StallForever:
    def __call__(self, sample, rng):
        threading.Event().wait()


@DATASETS.register
class StallingVal(LabelV2Val):
    def images(self):
        yield self.items[0]
        threading.Event().wait()
"""


def start_stalling_training(tmp_path, config, *args):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(STALLING_COMPONENTS)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook), str(ROOT)])}
    return subprocess.Popen([sys.executable, str(ROOT / "tools" / "train.py"), "-c", str(config), *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=env)


def test_a_stalled_loader_ends_the_run_with_stacks_and_status_3(tmp_path, photos):
    """A loader worker that never returns a sample: the watchdog names the
    stage, prints the trainer's and the worker's stacks and exits 3."""
    # the limit leaves the fork server time to import paddle on a busy machine
    config = config_for(tmp_path, "retinaface_mnet025", photos, train={"transforms": [{"type": "StallForever"}]},
                        loader={"num_workers": 1}, watchdog_minutes=0.5)
    proc = start_stalling_training(tmp_path, config)
    code, out, err = finish(proc, timeout=240)
    assert code == EXIT_STALLED, (out[-2000:], err[-3000:])
    assert "training stalled" in out and "waiting for a batch from the data loader" in out
    assert "stacks of the trainer" in err and "dataloader_iter.py" in err
    worker_stacks = err[err.index("--- stacks of loader worker"):]
    assert 'sitecustomize.py", line 10 in __call__' in worker_stacks
    time.sleep(1)
    assert not [p for p in descendants(proc.pid) if alive(p)]


def test_a_stalled_evaluation_ends_the_run_naming_it(tmp_path, photos):
    config = config_for(tmp_path, "retinaface_mnet025", photos, evaluation={"type": "StallingVal"},
                        loader={"num_workers": 0}, watchdog_minutes=0.1)
    proc = start_stalling_training(tmp_path, config, "--eval")
    code, out, err = finish(proc, timeout=240)
    assert code == EXIT_STALLED, (out[-2000:], err[-3000:])
    assert "while 'evaluation'" in out and "evaluation.py" in err


def test_killing_the_trainer_leaves_no_process_of_its_run(tmp_path, photos):
    """kill -9 during a step (a scheduler, the OOM killer): the loader workers,
    their fork server and everything else the run started are gone within 15 s."""
    config = config_for(tmp_path, "scrfd_500m_kps", photos, loader={"num_workers": 2}, epochs=50)
    proc = start_training(config)
    deadline = time.monotonic() + 300
    try:
        for line in proc.stdout:
            if "iter 1/" in line or time.monotonic() > deadline:
                break
        run = descendants(proc.pid)
        workers = [p for p in run if process_name(p).startswith(WORKER_NAME)]
        assert len(workers) == 2, [(p, process_name(p)) for p in run]
    except BaseException:
        stacks_then_kill(proc)
        raise
    proc.kill()
    proc.wait()
    left = run
    for _ in range(150):
        left = [p for p in run if alive(p)]
        if not left:
            break
        time.sleep(0.1)
    for pid in left:
        _signal(pid, signal.SIGKILL)
    assert not left, f"still running 15 s after the trainer was killed: {[(p, process_name(p)) for p in left]}"


def test_watchdog_measures_time_since_the_last_progress_but_not_while_paused():
    from ppfacedet.engine.watchdog import ProgressWatchdog
    now = [0.0]
    dog = ProgressWatchdog(60, clock=lambda: now[0])
    now[0] = 50
    assert dog.stalled_for() == 50
    with dog.stage("evaluation"):  # entering a stage is progress
        assert dog.stalled_for() == 0
        now[0] = 70
        dog.beat()
        now[0] = 75
        assert dog.stalled_for() == 5
    with dog.paused("waiting for rank 0's evaluation"):
        now[0] = 500
        assert dog.stalled_for() is None
    assert dog.stalled_for() == 0  # the wait ended: counting starts again


def test_watchdog_minutes_is_checked_where_it_is_set(tmp_path):
    from ppfacedet.core import load_config
    from ppfacedet.core.errors import PPFaceDetError
    from ppfacedet.engine.watchdog import ProgressWatchdog
    config = tmp_path / "w.yml"
    config.write_text(f"_BASE_: [{ROOT / 'configs/yunet_n.yml'}]\nwatchdog_minutes: soon\n")
    with pytest.raises(PPFaceDetError, match=r"w.yml:2: watchdog_minutes: 'soon'"):
        ProgressWatchdog.from_config(load_config(str(config)))
    assert ProgressWatchdog.from_config(load_config(str(config), ["watchdog_minutes=0"])).timeout_s == float("inf")
