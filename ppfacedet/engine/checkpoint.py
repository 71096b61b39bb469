"""Checkpoints written atomically: a file is either the old one or the new
one, never half of each, so a crash mid-save loses nothing already saved.

Every weight or checkpoint file is read with ``core.safe_pickle`` (never
``paddle.load``, which runs any code a file carries), and every file we write
is read back the same way before it replaces the old one, so we never write
what we would refuse to read."""
import os

import numpy as np
import paddle

from ..core import safe_pickle
from ..core.errors import DataError, PPFaceDetError

_NAME_TABLE = "StructuredToParameterName@@"  # paddle.save's {key: tensor name} beside a state dict
CHECKPOINT_FIELDS = {"model": dict, "optimizer": dict, "epoch": int, "iteration": int,
                     "best_metric": (int, float), "python_rng": tuple, "numpy_rng": tuple}


def atomic_save(obj, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        paddle.save(obj, tmp)
        safe_pickle.unpickle_file(tmp)  # raises if it holds anything outside the allowlist
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _is_saved_tensor(node):
    """paddle.save writes a Tensor inside a nested object as (name, ndarray)."""
    return isinstance(node, tuple) and len(node) == 2 and isinstance(node[0], str) and isinstance(node[1], np.ndarray)


def _as_paddle(obj, path):
    """What paddle.load returns for the unpickled ``obj``: Tensors where
    paddle.save had Tensors, everything else (numpy RNG state...) as it was."""
    if isinstance(obj, dict) and isinstance(obj.get(_NAME_TABLE), dict):  # a state dict
        return {k: paddle.to_tensor(v) if isinstance(v, np.ndarray) else v
                for k, v in obj.items() if k != _NAME_TABLE}
    found = []
    safe_pickle.rebuild(obj, lambda node: found.append(node) if _is_saved_tensor(node) else node, path)
    if found:
        return safe_pickle.rebuild(obj, lambda n: paddle.to_tensor(n[1]) if _is_saved_tensor(n) else n, path)
    # a file from paddle 2.0 (or a plain dict of arrays): every array was a Tensor
    return safe_pickle.rebuild(obj, lambda n: paddle.to_tensor(n) if isinstance(n, np.ndarray) else n, path)


def read_paddle_file(path, what):
    """The object in a ``.pdparams`` / ``.pdckpt`` / ``.pdopt`` file, as
    paddle.load would give it, read without running any code. Errors start
    with ``what`` (the role of the file: "weights", "--resume")."""
    if not os.path.isfile(path):
        raise PPFaceDetError(f"{what}: file not found: {path}")
    try:
        return _as_paddle(safe_pickle.unpickle_file(path), path)
    except DataError as e:
        raise PPFaceDetError(f"{what}: {e}") from None


def read_weights(path):
    """A model state dict from ``.pdparams`` or from a training checkpoint (``.pdckpt``)."""
    obj = read_paddle_file(path, "weights")
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, paddle.Tensor) for v in obj.values()):
        raise PPFaceDetError(f"{path}: not a state dict (name -> tensor)")
    return obj


def _valid_rng_states(ckpt):
    py, npy = ckpt["python_rng"], ckpt["numpy_rng"]
    return (len(py) == 3 and isinstance(py[1], tuple) and all(type(v) is int for v in py[1])
            and len(npy) == 5 and isinstance(npy[1], np.ndarray) and npy[1].dtype == np.uint32)


def read_checkpoint(path):
    """A training checkpoint (``.pdckpt``: model, optimizer state, epoch,
    iteration, best metric, RNG states) for ``--resume``, checked field by field."""
    ckpt = read_paddle_file(path, "--resume")
    bad = [k for k, kind in CHECKPOINT_FIELDS.items()
           if not isinstance(ckpt, dict) or not isinstance(ckpt.get(k), kind)]
    if not bad and not _valid_rng_states(ckpt):
        bad = ["python_rng/numpy_rng"]
    if bad:
        raise PPFaceDetError(f"--resume: {path} is not a training checkpoint (.pdckpt): "
                             f"missing or invalid {', '.join(bad)}")
    return ckpt


def load_weights(model, path, strict=True):
    """Load weights into ``model``. Strict: every parameter must be present with
    its shape. Non-strict (fine-tuning from pretrained): matching ones load and
    the rest is reported. Returns the names that were not loaded."""
    state = read_weights(path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    mismatched = [f"{k}: {list(state[k].shape)} vs model {list(own[k].shape)}"
                  for k in own if k in state and list(state[k].shape) != list(own[k].shape)]
    unexpected = [k for k in state if k not in own]
    if strict and (missing or mismatched or unexpected):
        detail = "; ".join(filter(None, [
            f"missing {len(missing)} (e.g. {', '.join(missing[:3])})" if missing else "",
            f"shape mismatch {len(mismatched)} (e.g. {mismatched[0]})" if mismatched else "",
            f"unexpected {len(unexpected)} (e.g. {', '.join(unexpected[:3])})" if unexpected else ""]))
        raise PPFaceDetError(f"{path} does not fit this model: {detail}. Was it made for another config?")
    usable = {k: v for k, v in state.items() if k in own and list(v.shape) == list(own[k].shape)}
    model.set_state_dict(usable)
    return missing + [m.split(":")[0] for m in mismatched]


def _rename_prefixes(state, mapping):
    """Rename keys whose prefix (up to an ``_``) is a key of ``mapping``.
    Optimizer accumulators are named ``<param name>_<accumulator>_0``."""
    out = {}
    prefixes = sorted(mapping, key=len, reverse=True)
    for key, value in state.items():
        new = key
        for prefix in prefixes:
            if key == prefix or key.startswith(prefix + "_"):
                new = mapping[prefix] + key[len(prefix):]
                break
        out[new] = value
    return out


def portable_optimizer_state(optimizer, model):
    """Optimizer state keyed by structured parameter names (``backbone.conv1.weight``)
    instead of paddle's per-process generated ones (``conv2d_168.w_0``), so a
    new process with a new model can load it."""
    to_structured = {p.name: f"@{name}" for name, p in model.named_parameters()}
    return _rename_prefixes(optimizer.state_dict(), to_structured)


def restore_optimizer_state(optimizer, model, state):
    to_generated = {f"@{name}": p.name for name, p in model.named_parameters()}
    optimizer.set_state_dict(_rename_prefixes(state, to_generated))
