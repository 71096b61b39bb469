"""Training computes on the cores it is given: Paddle's CPU math threads come
from the machine unless the config or the environment says otherwise."""
import pytest

import ppfacedet.engine.trainer as trainer_module
from ppfacedet.core import load_config
from ppfacedet.core.cpu_threads import ENV_VAR, threads_for, usable_cores
from ppfacedet.core.errors import PPFaceDetError
from tiny import make_tiny_config


def test_threads_come_from_the_usable_cores_shared_by_the_nodes_processes(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.delenv("PADDLE_LOCAL_SIZE", raising=False)
    monkeypatch.setattr("ppfacedet.core.cpu_threads.usable_cores", lambda: 8)
    assert threads_for(None, world_size=1) == 8
    assert threads_for(0, world_size=2) == 4
    monkeypatch.setenv("PADDLE_LOCAL_SIZE", "4")  # paddle.distributed.launch: 4 processes on this node
    assert threads_for(None, world_size=8) == 2
    monkeypatch.setenv("PADDLE_LOCAL_SIZE", "16")
    assert threads_for(None, world_size=16) == 1


def test_config_overrides_environment_overrides_machine(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "3")
    assert threads_for(None, world_size=1) == 3
    assert threads_for(5, world_size=1) == 5
    monkeypatch.setenv(ENV_VAR, "many")
    with pytest.raises(PPFaceDetError, match=ENV_VAR):
        threads_for(None, world_size=1)
    with pytest.raises(PPFaceDetError, match="cpu_threads"):
        threads_for(-2, world_size=1)


def test_trainer_sets_paddles_math_threads(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.delenv("PADDLE_LOCAL_SIZE", raising=False)
    calls = []
    monkeypatch.setattr(trainer_module, "set_math_threads", calls.append)
    cfg = make_tiny_config(tmp_path)
    trainer_module.Trainer(load_config(cfg))
    trainer_module.Trainer(load_config(cfg, ["cpu_threads=1"]))
    assert calls == [usable_cores(), 1]
