"""Quantization-aware training: fake-quantize the convs of a Detector while it
trains, then export a program Paddle Inference runs (oneDNN int8 on CPU).

    python tools/train.py -c configs/scrfd_500m_kps.yml --slim_config configs/slim/qat.yml -o pretrain_weights=W
    python tools/export_model.py -c configs/scrfd_500m_kps.yml --slim_config configs/slim/qat.yml -o weights=QAT_W

``build_model`` calls ``apply_qat`` whenever the config has a ``quant:``
section, so training, evaluation and export all see the wrapped model;
``export_qat_model`` writes the int8 folder deploy/python runs.

The ``quant:`` section (configs/slim/qat.yml):
  weight_bits, activation_bits  8
  moving_rate    momentum of the activation range estimate (0.9)
  skip           conv groups left in float, as tools/quant.py's --skip
                 (``first``, ``depthwise``); default [depthwise], for the
                 reason given in ppfacedet/export/quant.py

Which API (ENVIRONMENT.md, paddle 3.3.1): ``paddle.quantization.QAT`` with
``FakeQuanterWithAbsMaxObserver`` trains in either IR, but its ``convert()``
fails and only an unconverted model saved in the old program format
(``FLAGS_enable_pir_api=0``) runs in Paddle Inference; PaddleSlim's dygraph
QAT exports programs whose outputs disagree with the trained model. So the
export saves the fake-quant model as it trained, from a child process in the
old IR, and marks it ``precision: int8``.
"""
import argparse
import os

import yaml

from ..core.config import read_section
from ..core.errors import PPFaceDetError
from .child import model_snapshot, run_module

QUANT_DEFAULTS = {"weight_bits": 8, "activation_bits": 8, "moving_rate": 0.9, "skip": ["depthwise"]}
QAT_SKIP_GROUPS = ("first", "depthwise")


def quant_settings(quant_cfg):
    """The ``quant`` section with defaults filled and values checked."""
    given = dict(quant_cfg or {})
    unknown = sorted(set(given) - set(QUANT_DEFAULTS))
    if unknown:
        raise PPFaceDetError(f"quant: unknown key(s) {', '.join(unknown)}; valid: {', '.join(QUANT_DEFAULTS)}")
    settings = {**QUANT_DEFAULTS, **given}
    skip = settings["skip"]
    settings["skip"] = [skip] if isinstance(skip, str) else list(skip or [])
    bad = [g for g in settings["skip"] if g not in QAT_SKIP_GROUPS]
    if bad:
        raise PPFaceDetError(f"quant.skip: {bad} not among {', '.join(QAT_SKIP_GROUPS)}")
    for key in ("weight_bits", "activation_bits"):
        if not 2 <= int(settings[key]) <= 8:
            raise PPFaceDetError(f"quant.{key}: {settings[key]} is outside 2..8")
    if not 0.0 < float(settings["moving_rate"]) < 1.0:
        raise PPFaceDetError(f"quant.moving_rate: {settings['moving_rate']} must be in (0, 1)")
    return settings


def quantized_convs(model, skip):
    """The Conv2D sublayers to fake-quantize (in definition order), minus the skipped groups."""
    import paddle.nn as nn
    convs = [layer for _, layer in model.named_sublayers() if isinstance(layer, nn.Conv2D)]
    chosen = list(convs)
    if "first" in skip and convs:
        chosen = chosen[1:]
    if "depthwise" in skip:
        chosen = [c for c in chosen if c._groups == 1]
    return chosen


def apply_qat(model, quant_cfg):
    """Wrap ``model``'s convs with fake quanters, in place; returns the model."""
    from paddle.quantization import QAT, QuantConfig
    from paddle.quantization.quanters import FakeQuanterWithAbsMaxObserver
    settings = quant_settings(quant_cfg)
    convs = quantized_convs(model, settings["skip"])
    if not convs:
        raise PPFaceDetError("quant: no conv left to quantize after quant.skip")
    activation = FakeQuanterWithAbsMaxObserver(moving_rate=settings["moving_rate"],
                                               bit_length=int(settings["activation_bits"]))
    weight = FakeQuanterWithAbsMaxObserver(moving_rate=settings["moving_rate"],
                                           bit_length=int(settings["weight_bits"]))
    config = QuantConfig(activation=None, weight=None)
    config.add_layer_config(convs, activation=activation, weight=weight)
    was_training = model.training
    model.train()  # paddle's QAT.quantize insists on a model in training mode
    model = QAT(config).quantize(model, inplace=True)
    if not was_training:
        model.eval()
    return model


def export_qat_model(cfg, model, output_dir):
    """A QAT-wrapped model -> ``output_dir/<cfg.name>`` (model.pdmodel, model.pdiparams,
    infer_cfg.yml with ``precision: int8``), exported in a child process in the old IR."""
    with model_snapshot(cfg, model) as (config, weights):
        run_module("ppfacedet.export.qat", ["-c", config, "--weights", weights, "--output_dir", output_dir],
                   pir=False, what="exporting the QAT model")
    return os.path.join(output_dir, cfg.name)


def _export_here(cfg, weights, output_dir):
    """Child side: rebuild, re-wrap, load the trained QAT state and save the old-format program."""
    from ..engine.checkpoint import read_weights
    from ..modeling.detector import build_model
    from .static import export_inference_model
    model = build_model(cfg)  # wrapped by apply_qat: cfg has the quant section
    state = read_weights(weights)
    missing = [k for k in model.state_dict() if k not in state]
    if missing:
        raise PPFaceDetError(f"{weights}: not a state of this QAT model ({len(missing)} tensors missing, "
                             f"e.g. {missing[0]})")
    model.set_state_dict(state)
    model.eval()
    folder = export_inference_model(cfg, model, output_dir, program_format="legacy")
    path = os.path.join(folder, "infer_cfg.yml")
    with open(path) as f:
        info = yaml.safe_load(f)
    info.update(precision="int8", quantization={"method": "qat", **read_section(cfg, "quant", QUANT_DEFAULTS)})
    with open(path, "w") as f:
        yaml.safe_dump(info, f, sort_keys=False, default_flow_style=None)
    return folder


def main(argv=None):
    parser = argparse.ArgumentParser(description="export a QAT state in the old program format (child process)")
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--output_dir", required=True)
    args = parser.parse_args(argv)
    import paddle
    if paddle.framework.use_pir_api():
        raise SystemExit("run with FLAGS_enable_pir_api=0 in the environment (export_qat_model does)")
    from ..core.config import load_config
    print(_export_here(load_config(args.config), args.weights, args.output_dir))


if __name__ == "__main__":
    main()
