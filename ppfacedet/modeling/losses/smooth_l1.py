"""Smooth-L1 (Huber-style) regression loss."""
import paddle
import paddle.nn as nn

from ...core.registry import LOSSES


@LOSSES.register
class SmoothL1Loss(nn.Layer):
    """0.5 * d^2 / beta where |d| < beta, |d| - 0.5 * beta elsewhere.

    ``forward(pred, target, weight=None, avg_factor=1.0)``: ``weight``
    broadcasts against the element-wise loss; returns
    loss_weight * sum / avg_factor.
    """

    def __init__(self, beta=1.0, loss_weight=1.0):
        super().__init__()
        if beta <= 0:
            raise ValueError(f"SmoothL1Loss: beta must be > 0, got {beta}")
        self.beta = beta
        self.loss_weight = loss_weight

    def forward(self, pred, target, weight=None, avg_factor=1.0):
        diff = (pred - target).abs()
        loss = paddle.where(diff < self.beta, 0.5 * diff * diff / self.beta, diff - 0.5 * self.beta)
        if weight is not None:
            loss = loss * weight
        return self.loss_weight * loss.sum() / avg_factor
