"""Initialise a model from ``pretrain_weights``: a whole trained model, or a
backbone alone in the layouts ImageNet trunks are published in.

The source is a local file, a URL, ``{url, sha256 | md5, download_page}``
(fetched and checked by ``core/download.py``), or a model zoo name (the
release's official weights, converted: ``ppfacedet/zoo``). Read without PyTorch:
  * torch ``.pth``/``.tar`` (zip or legacy): torchvision's ResNet-50,
    Pytorch_Retinaface's ``mobilenetV1X0.25_pretrain.tar`` (a training
    checkpoint whose ``state_dict`` carries DataParallel's ``module.``);
  * Paddle ``.pdparams``/``.pdckpt``: this project's own, paddle.vision's
    ResNet-50, PaddleClas's.
Names are normalised (``module.`` dropped, torch's BN buffers renamed to
Paddle's, ``num_batches_tracked`` ignored) and then placed by the first of:
the same name in the model; the name under ``backbone.``; the name the
backbone gives it (``pretrained_name``, for a foreign layout such as
PaddleClas's). Shapes must agree.

A file that fills less than 90% of the backbone is almost always the wrong
file (another trunk, or a full official checkpoint that needs converting), and
training on would silently start from random weights: that is an error unless
``pretrain_strict: false``.
"""
import os
import zipfile

import numpy as np
from paddle.quantization.base_quanter import BaseQuanter

from ..convert.torch_checkpoint import load_state_dict
from ..core.download import download, is_url
from ..core.errors import ConfigError, PPFaceDetError
from ..zoo.registry import is_zoo_name
from .checkpoint import read_weights

MIN_BACKBONE_FILL = 0.9
SOURCE_KEYS = ("url", "sha256", "md5", "download_page")
_TORCH_BN_BUFFERS = {"running_mean": "_mean", "running_var": "_variance"}
_EXAMPLES = 3
# The first pickle of torch.save's legacy format: its magic number as a LONG1 payload.
_TORCH_LEGACY_MAGIC = (0x1950a86a20f9469cfc6c).to_bytes(10, "little")


def weights_source(spec, where="pretrain_weights"):
    """The local file ``spec`` names: a path, a URL, or ``{url, sha256, md5, download_page}``."""
    if isinstance(spec, dict):
        unknown = sorted(set(spec) - set(SOURCE_KEYS))
        if unknown or not spec.get("url"):
            raise ConfigError(f"{where}: pretrain_weights as a mapping needs 'url' and takes only "
                              f"{', '.join(SOURCE_KEYS)}" + (f"; got {', '.join(unknown)}" if unknown else ""))
        checksums = {k: spec[k] for k in ("sha256", "md5") if spec.get(k)}
        return download(str(spec["url"]), checksums, spec.get("download_page"))
    if not isinstance(spec, str) or not spec:
        raise ConfigError(f"{where}: pretrain_weights must be a file, a URL, {{url, sha256}} or a zoo name, "
                          f"got {spec!r}")
    if is_url(spec):
        return download(spec)
    if not os.path.isfile(spec) and is_zoo_name(spec):  # a released model: its converted weights
        from ..zoo import converted_weights
        return converted_weights(spec)
    if not os.path.isfile(spec):
        raise PPFaceDetError(f"pretrain_weights: file not found: {spec}")
    return spec


def _is_torch_file(path):
    """torch.save's zip archive, or its legacy pickle stream (which opens with a magic number)."""
    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as f:
        head = f.read(32)
    return _TORCH_LEGACY_MAGIC in head


def _normalised_name(name):
    """Our spelling of a checkpoint's tensor name, or None for torch's BN step counters."""
    if name.startswith("module."):
        name = name[len("module."):]
    stem, dot, leaf = name.rpartition(".")
    if leaf == "num_batches_tracked":
        return None
    return stem + dot + _TORCH_BN_BUFFERS.get(leaf, leaf)


def read_pretrained(path):
    """{normalised name: float array} of a torch or Paddle weights file."""
    state = load_state_dict(path) if _is_torch_file(path) else read_weights(path)
    out = {}
    for name, value in state.items():
        array = value if isinstance(value, np.ndarray) else getattr(value, "numpy", lambda: None)()
        name = _normalised_name(str(name))
        if name is None or not isinstance(array, np.ndarray):
            continue  # BN counters, paddle.save's table of parameter names
        out[name] = array.astype(np.float32) if array.dtype.kind == "f" else array
    return out


def fillable_tensors(model):
    """{name: shape} of what a weights file can fill: every tensor but the
    QAT quanters' state, which is observed from data, never pretrained."""
    quanters = tuple(f"{name}." for name, layer in model.named_sublayers() if isinstance(layer, BaseQuanter))
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if not (quanters and k.startswith(quanters))}


def place(model, state, own):
    """({model name: array}, [file names not used]) for a normalised state;
    ``own`` is ``fillable_tensors(model)``."""
    foreign_name = getattr(model.backbone, "pretrained_name", lambda name: None)
    placed, unused = {}, []
    for name, array in state.items():
        candidates = [name, f"backbone.{name}"]
        if foreign_name(name):
            candidates.append(f"backbone.{foreign_name(name)}")
        target = next((c for c in candidates if c in own), None)
        if target is None:
            unused.append(name)
        elif tuple(array.shape) != own[target]:
            unused.append(f"{name} {list(array.shape)} (model {target} {list(own[target])})")
        else:
            placed[target] = array
    return placed, unused


class PretrainReport:
    """What a pretrain file filled: the log line and the 90% rule."""

    def __init__(self, path, own, placed, unused):
        self.path = path
        self.backbone = [k for k in own if k.startswith("backbone.")]
        self.backbone_loaded = sum(k in placed for k in self.backbone)
        self.other_loaded = len(placed) - self.backbone_loaded
        self.left_at_init = len(own) - len(placed)
        self.empty = [k for k in self.backbone if k not in placed]
        self.unused = unused

    @property
    def fills_backbone(self):
        return self.backbone_loaded >= MIN_BACKBONE_FILL * len(self.backbone)

    def summary(self):
        return (f"pretrain_weights: {self.backbone_loaded} of {len(self.backbone)} backbone tensors loaded from "
                f"{self.path} (+{self.other_loaded} other tensors; {self.left_at_init} model tensors left at "
                f"init; {len(self.unused)} file tensors not used)")

    def shortfall(self):
        return (f"{self.path} fills {self.backbone_loaded} of the {len(self.backbone)} backbone tensors "
                f"(less than {MIN_BACKBONE_FILL:.0%}): model tensors left empty, e.g. "
                f"{', '.join(self.empty[:_EXAMPLES])}; file tensors not used, e.g. "
                f"{', '.join(self.unused[:_EXAMPLES]) or 'none'}. Give a file made for this backbone (a full "
                f"official checkpoint is converted with tools/convert_weights.py first), or set "
                f"pretrain_strict: false to train on with the rest at random init")


def load_pretrained(model, spec, strict=True, where="pretrain_weights"):
    """Fill ``model`` from ``spec``; returns the PretrainReport. Strict: a
    file that fills less than 90% of the backbone is an error."""
    if not isinstance(strict, bool):
        raise ConfigError(f"pretrain_strict must be true or false, got {strict!r}")
    path = weights_source(spec, where)
    own = fillable_tensors(model)
    placed, unused = place(model, read_pretrained(path), own)
    report = PretrainReport(path, own, placed, unused)
    if strict and not report.fills_backbone:
        raise PPFaceDetError(report.shortfall())
    tensors = model.state_dict()  # the live parameters and buffers
    for name, array in placed.items():
        tensors[name].set_value(array)  # set_state_dict would warn once per tensor left at init
    return report
