"""IoU-family box losses on aligned pairs of xyxy boxes.

Each loss takes ``pred``, ``target`` [n, 4], an optional per-box ``weight``
[n] and ``avg_factor``, and returns ``loss_weight * sum(weight * l) / avg_factor``
(the mmdet convention the official recipes are written in).
"""
import paddle
import paddle.nn as nn

from ...core.registry import LOSSES


def overlap_and_union(pred, target, eps=1e-6):
    """Intersection area and union area (at least eps) of aligned box pairs -> [n], [n]."""
    lt = paddle.maximum(pred[:, :2], target[:, :2])
    rb = paddle.minimum(pred[:, 2:], target[:, 2:])
    wh = (rb - lt).clip(min=0)
    overlap = wh[:, 0] * wh[:, 1]
    area_p = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1])
    area_t = (target[:, 2] - target[:, 0]) * (target[:, 3] - target[:, 1])
    return overlap, (area_p + area_t - overlap).clip(min=eps)


def aligned_iou(pred, target, eps=1e-6):
    """IoU of pred[i] with target[i] -> [n]."""
    overlap, union = overlap_and_union(pred, target, eps)
    return overlap / union


def enclosing_wh(pred, target):
    """Width and height of the smallest box holding both boxes -> [n, 2]."""
    lt = paddle.minimum(pred[:, :2], target[:, :2])
    rb = paddle.maximum(pred[:, 2:], target[:, 2:])
    return (rb - lt).clip(min=0)


def weighted_sum(loss, weight, avg_factor, loss_weight):
    if weight is not None:
        loss = loss * weight
    return loss_weight * loss.sum() / avg_factor


class _BoxLoss(nn.Layer):
    def __init__(self, loss_weight=1.0, eps=1e-6):
        super().__init__()
        self.loss_weight = loss_weight
        self.eps = eps

    def per_box(self, pred, target):
        raise NotImplementedError

    def forward(self, pred, target, weight=None, avg_factor=1.0):
        return weighted_sum(self.per_box(pred, target), weight, avg_factor, self.loss_weight)


@LOSSES.register
class GIoULoss(_BoxLoss):
    """1 - GIoU: IoU minus the share of the enclosing box that the union leaves empty."""

    def per_box(self, pred, target):
        overlap, union = overlap_and_union(pred, target, self.eps)
        iou = overlap / union
        enclose = enclosing_wh(pred, target)
        enclose_area = (enclose[:, 0] * enclose[:, 1]).clip(min=self.eps)
        return 1 - (iou - (enclose_area - union) / enclose_area)


@LOSSES.register
class DIoULoss(_BoxLoss):
    """1 - DIoU: IoU minus the squared centre distance over the squared
    diagonal of the enclosing box (SCRFD's box loss)."""

    def per_box(self, pred, target):
        iou = aligned_iou(pred, target, self.eps)
        enclose = enclosing_wh(pred, target)
        diagonal2 = enclose[:, 0] ** 2 + enclose[:, 1] ** 2 + self.eps
        centre_p = (pred[:, :2] + pred[:, 2:]) / 2
        centre_t = (target[:, :2] + target[:, 2:]) / 2
        distance2 = ((centre_p - centre_t) ** 2).sum(axis=1)
        return 1 - (iou - distance2 / diagonal2)


@LOSSES.register
class EIoULoss(_BoxLoss):
    """Smooth Extended-IoU loss (Peng et al. 2021, as YuNet trains with).

    The "extended" intersection stays informative for disjoint boxes: with
    a, b the x-offsets of the inner edges (max of lefts, min of rights) from
    the outer left edge, and c, d the same in y, it is
    b*d + min(a,b)*min(c,d) - a*max(c,d) - max(a,b)*c, which is the usual
    overlap (b-a)(d-c) when the boxes intersect and negative when they are
    apart. With u = 1 - extended IoU the loss is u^2 / (2 s) below
    ``smooth_point`` s and u - s/2 above it.
    """

    def __init__(self, loss_weight=1.0, smooth_point=0.1, eps=1e-7):
        super().__init__(loss_weight, eps)
        self.smooth_point = smooth_point

    def per_box(self, pred, target):
        outer = paddle.minimum(pred[:, :2], target[:, :2])
        inner_lo = paddle.maximum(pred[:, :2], target[:, :2]) - outer
        inner_hi = paddle.minimum(pred[:, 2:], target[:, 2:]) - outer
        a, c = inner_lo[:, 0], inner_lo[:, 1]
        b, d = inner_hi[:, 0], inner_hi[:, 1]
        overlap = (b * d + paddle.minimum(a, b) * paddle.minimum(c, d)
                   - a * paddle.maximum(c, d) - paddle.maximum(a, b) * c)
        area_p = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1])
        area_t = (target[:, 2] - target[:, 0]) * (target[:, 3] - target[:, 1])
        u = 1 - overlap / (area_p + area_t - overlap + self.eps)
        s = self.smooth_point
        return paddle.where(u < s, 0.5 * u * u / s, u - 0.5 * s)
