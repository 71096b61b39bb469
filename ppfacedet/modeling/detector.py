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


class Detector(nn.Layer):
    """``norm_eval`` keeps every BatchNorm in inference mode while training
    (frozen statistics, mmdet's name). Weights imported from a BN-folded ONNX
    carry identity statistics that only hold in inference mode, so fine-tuning
    them needs it; training from scratch does not."""

    def __init__(self, backbone, neck, head, norm_eval=False):
        super().__init__()
        self.norm_eval = bool(norm_eval)
        self.backbone = BACKBONES.build(backbone, "model.backbone")
        self.neck = NECKS.build(neck, "model.neck", in_channels=self.backbone.out_channels)
        self.head = HEADS.build(head, "model.head", in_channels=self.neck.out_channels)

    def train(self, mode=True):
        super().train(mode)
        if mode and self.norm_eval:
            for layer in self.sublayers():
                if isinstance(layer, nn.layer.norm._BatchNormBase):
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
    model_cfg = read_section(cfg, "model", {"backbone": None, "neck": None, "head": None, "norm_eval": False})
    with located(cfg, "model"):
        model = Detector(**model_cfg)
    if cfg.get("quant"):
        from ..quant.qat import apply_qat
        model = apply_qat(model, cfg["quant"])
    return model
