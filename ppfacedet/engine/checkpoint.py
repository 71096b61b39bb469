"""Checkpoints written atomically: a file is either the old one or the new
one, never half of each, so a crash mid-save loses nothing already saved."""
import os

import paddle

from ..core.errors import PPFaceDetError


def atomic_save(obj, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        paddle.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_weights(path):
    """A model state dict from ``.pdparams`` or from a training checkpoint (``.pdckpt``)."""
    if not os.path.isfile(path):
        raise PPFaceDetError(f"weights file not found: {path}")
    try:
        obj = paddle.load(path)
    except Exception as e:  # paddle raises many types for a corrupt file
        raise PPFaceDetError(f"{path}: cannot read weights ({type(e).__name__}: {e})") from None
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict):
        raise PPFaceDetError(f"{path}: not a state dict")
    return obj


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
