"""Quantization-aware training: fake-quantize the convs of a Detector while it
trains.

    python tools/train.py -c configs/scrfd_500m_kps.yml --slim_config configs/slim/qat.yml -o pretrain_weights=W

``build_model`` calls ``apply_qat`` whenever the config has a ``quant:``
section, so training, evaluation and export all see the wrapped model.
``ppfacedet/export/qat.py`` exports the trained result. This module depends on
paddle and ``core`` only, so modeling can use it without depending on export.

The ``quant:`` section (configs/slim/qat.yml):
  weight_bits, activation_bits  8
  moving_rate    momentum of the activation range estimate (0.9)
  skip           conv groups left in float, as tools/quant.py's --skip
                 (``first``, ``depthwise``); default [depthwise], for the
                 reason given in ppfacedet/export/quant.py

Which API (ENVIRONMENT.md, paddle 3.3.1): ``paddle.quantization.QAT`` with
``FakeQuanterWithAbsMaxObserver`` trains in either IR.
"""
from ..core.errors import PPFaceDetError

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
    import paddle.nn as nn
    from paddle.quantization import QAT, QuantConfig
    from paddle.quantization.quanters import FakeQuanterWithAbsMaxObserver

    from ..modeling.layers import BiasConv2D
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
    # paddle maps layers to quanted ones by exact type: BiasConv2D is a Conv2D
    config.add_qat_layer_mapping(BiasConv2D, config.qat_layer_mappings[nn.Conv2D])
    was_training = model.training
    model.train()  # paddle's QAT.quantize insists on a model in training mode
    model = QAT(config).quantize(model, inplace=True)
    if not was_training:
        model.eval()
    return model
