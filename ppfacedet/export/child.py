"""Running an export step in a fresh interpreter.

Paddle picks its program format (PIR or the old IR) from
``FLAGS_enable_pir_api`` when it is imported, so a step that needs the other
format (legacy export, PaddleSlim quantization, QAT export) runs as a child
process started with that flag. The child rebuilds the model from the merged
config and weights this process hands it.
"""
import contextlib
import os
import subprocess
import sys
import tempfile

import paddle
import yaml

from ..core.errors import PPFaceDetError
from .infer_cfg import plain_yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@contextlib.contextmanager
def model_snapshot(cfg, model):
    """(config path, weights path) in a temporary folder: the merged config
    (overrides included) under the same name, so the child builds the same
    model and names its output folder alike."""
    with tempfile.TemporaryDirectory() as tmp:
        config = os.path.join(tmp, f"{cfg.name}.yml")
        with open(config, "w") as f:
            yaml.safe_dump(plain_yaml(cfg), f, sort_keys=False)
        weights = os.path.join(tmp, "weights.pdparams")
        paddle.save(model.state_dict(), weights)
        yield config, weights


def run_module(module, args, pir, what):
    """``python -m module args`` with the program format chosen by ``pir``;
    a failure raises PPFaceDetError saying ``what`` failed, with the child's stderr."""
    env = dict(os.environ, FLAGS_enable_pir_api="1" if pir else "0")
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in [env.get("PYTHONPATH")] if p])
    done = subprocess.run([sys.executable, "-m", module, *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise PPFaceDetError(f"{what} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
