"""Quality Focal Loss (Generalized Focal Loss, Li et al. 2020), sigmoid form."""
import paddle.nn as nn
import paddle.nn.functional as F

from ...core.registry import LOSSES


@LOSSES.register
class QualityFocalLoss(nn.Layer):
    """Binary cross-entropy against a soft target t in [0, 1] (the IoU of a
    positive's predicted box, 0 for negatives), scaled by |sigmoid(x) - t|^beta
    so confidently right anchors contribute little.

    ``forward(logits, targets, weight=None, avg_factor=1.0)`` with logits and
    targets of one shape; returns loss_weight * sum / avg_factor.
    """

    def __init__(self, beta=2.0, loss_weight=1.0):
        super().__init__()
        self.beta = beta
        self.loss_weight = loss_weight

    def forward(self, logits, targets, weight=None, avg_factor=1.0):
        targets = targets.astype(logits.dtype)
        modulator = (F.sigmoid(logits) - targets).abs().pow(self.beta)
        loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none") * modulator
        if weight is not None:
            loss = loss * weight
        return self.loss_weight * loss.sum() / avg_factor
