"""One Detector for every family: backbone -> neck -> head.

The engine, tools and exporter only ever call the methods below, so a new
family is a set of registered modules plus configs, never a branch elsewhere.

Raw outputs (``forward``) are an ordered dict of per-stride tensors, each
``[N, H*W*A, C]`` with rows ordered (y, x, anchor); names are
``<kind>_<stride>`` such as ``cls_8``, ``box_16``, ``kps_32``. Class scores are
logits here; ``deploy_outputs`` applies the activation the official exports
apply, which is also what the exported graph returns.
"""
import paddle.nn as nn

from ..core.registry import BACKBONES, HEADS, NECKS
from .frozen_norms import check_norm_eval, kept_in_inference_mode


class Detector(nn.Layer):
    """``norm_eval`` (mmdet's name) says which BatchNorm layers stay in
    inference mode while training, with frozen running statistics: ``auto``
    (default) those holding the identity statistics a BN-folded export leaves,
    which only hold in inference mode (see frozen_norms.py); ``true`` every
    one; ``false`` none."""

    def __init__(self, backbone, neck, head, norm_eval="auto"):
        super().__init__()
        self.norm_eval = check_norm_eval(norm_eval)
        self.backbone = BACKBONES.build(backbone, "model.backbone")
        self.neck = NECKS.build(neck, "model.neck", in_channels=self.backbone.out_channels)
        self.head = HEADS.build(head, "model.head", in_channels=self.neck.out_channels)

    def frozen_norms(self):
        """Names of the BatchNorm layers ``train()`` keeps in inference mode."""
        return [name for name, _ in kept_in_inference_mode(self, self.norm_eval)]

    def train(self, mode=True):
        super().train(mode)
        if mode:
            for _, layer in kept_in_inference_mode(self, self.norm_eval):
                layer.eval()
        return self

    def forward(self, images):
        """images [N,3,H,W] (already normalised) -> raw per-stride tensors."""
        return self.head(self.neck(self.backbone(images)))

    def loss(self, raw, batch):
        """Dict of named loss terms; ``loss`` is their weighted sum."""
        return self.head.loss(raw, batch)

    def predict(self, raw, metas, test_cfg):
        """Detections per image in original-image pixels (see postprocess.select)."""
        from ..postprocess.select import select_detections
        boxes, scores, landmarks = self.head.decode(raw)
        return select_detections(boxes, scores, landmarks, metas, **test_cfg)

    def deploy_outputs(self, raw):
        """Ordered list of (name, tensor) the exported graph returns."""
        return self.head.deploy_outputs(raw)

    def deploy_config(self):
        """What the standalone predictor needs to decode deploy outputs."""
        return self.head.deploy_config()


def build_model(cfg):
    """The config's Detector; with a ``quant`` section (the QAT overlay) its
    convs are wrapped with fake quanters, so every tool sees the same model."""
    from ..core.config import located, read_section
    model_cfg = read_section(cfg, "model", {"backbone": None, "neck": None, "head": None, "norm_eval": "auto"})
    with located(cfg, "model"):
        model = Detector(**model_cfg)
    if cfg.get("quant"):
        from ..quant.qat import apply_qat
        model = apply_qat(model, cfg["quant"])
    return model
