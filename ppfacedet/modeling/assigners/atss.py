"""Adaptive Training Sample Selection (Zhang et al. 2020), as SCRFD configures it.

Per ground-truth box: on every pyramid level take the ``topk`` anchors whose
centres are nearest its centre; their IoUs give a threshold mean + std
(sample std); candidates at or above it whose centre lies inside the box
become positives. "Inside" is SCRFD's rule: the smallest centre-to-edge
distance, divided by sqrt(box area), must exceed ``inside_margin``. An anchor
claimed by several boxes goes to the one it overlaps most.

Ties in the top-k go to the lower anchor index. They are the rule, not the
exception: SCRFD's two anchors share each centre, so the k-th nearest candidate
of a level is often a tie between them. ``torch.topk`` (the official code) and
``np.argpartition`` both break it in an unspecified, build- and
device-dependent way, which changes the positives and the losses (1% on the box
loss, 9% on the keypoint loss on one batch); a fixed rule keeps seeded runs
identical across machines and lets tests compare with the official code run
with the same rule (a stable sort).

Works in numpy: assignment produces targets, never gradients.
"""
import numpy as np

from ...core.registry import ASSIGNERS


def box_iou(a, b, eps=1e-6):
    """[n,4] x [m,4] xyxy -> [n,m] IoU."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, eps)


def nearest_lowest_index_first(distance, k):
    """[n, g] distances -> [min(k, n), g] row indices of the k smallest per
    column, ties at the k-th distance going to the lower row. Linear time: one
    partition finds the k-th distance, then every row below it is taken and the
    first rows equal to it fill the remaining places."""
    n, g = distance.shape
    if k >= n:
        return np.broadcast_to(np.arange(n)[:, None], (n, g))
    kth = np.partition(distance, k - 1, axis=0)[k - 1]
    below = distance < kth
    at_kth = distance == kth
    places_left = k - below.sum(axis=0)
    chosen = below | (at_kth & (np.cumsum(at_kth, axis=0) <= places_left))
    _, row = np.nonzero(chosen.T)  # column by column, rows ascending within each
    return row.reshape(g, k).T


@ASSIGNERS.register
class ATSSAssigner:
    def __init__(self, topk=9, inside_margin=0.001):
        if topk < 1:
            raise ValueError(f"ATSSAssigner: topk must be >= 1, got {topk}")
        self.topk = int(topk)
        self.inside_margin = inside_margin

    def __call__(self, anchors, num_level_anchors, gt_boxes):
        """anchors [M,4], num_level_anchors (per level, summing to M), gt_boxes [k,4]
        (all xyxy, input pixels) -> [M] int64: index of the assigned box, -1 for background."""
        anchors = np.asarray(anchors, np.float32)
        gt_boxes = np.asarray(gt_boxes, np.float32).reshape(-1, 4)
        if sum(num_level_anchors) != len(anchors):
            raise ValueError(f"ATSSAssigner: num_level_anchors {list(num_level_anchors)} sum to "
                             f"{sum(num_level_anchors)}, but there are {len(anchors)} anchors")
        assigned = np.full(len(anchors), -1, np.int64)
        num_gt = len(gt_boxes)
        if num_gt == 0 or len(anchors) == 0:
            return assigned
        iou = box_iou(anchors, gt_boxes)
        anchor_centres = (anchors[:, :2] + anchors[:, 2:]) / 2
        gt_centres = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2
        distance = np.sqrt(((anchor_centres[:, None, :] - gt_centres[None, :, :]) ** 2).sum(-1))

        candidates = []
        start = 0
        for count in num_level_anchors:
            candidates.append(nearest_lowest_index_first(distance[start:start + count], self.topk) + start)
            start += count
        candidates = np.concatenate(candidates, axis=0)  # [C, k]
        gt_index = np.broadcast_to(np.arange(num_gt), candidates.shape)
        candidate_iou = iou[candidates, gt_index]
        spread = candidate_iou.std(axis=0, ddof=1) if len(candidates) > 1 else 0.0
        is_pos = candidate_iou >= candidate_iou.mean(axis=0) + spread

        cx, cy = anchor_centres[candidates, 0], anchor_centres[candidates, 1]
        edge_distance = np.minimum.reduce([cx - gt_boxes[:, 0], cy - gt_boxes[:, 1],
                                           gt_boxes[:, 2] - cx, gt_boxes[:, 3] - cy])
        gt_size = np.sqrt(np.maximum((gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1]),
                                     1e-4))
        is_pos &= edge_distance / gt_size > self.inside_margin

        claimed = np.full((len(anchors), num_gt), -np.inf, np.float32)
        claimed[candidates[is_pos], gt_index[is_pos]] = iou[candidates[is_pos], gt_index[is_pos]]
        best = claimed.max(axis=1)
        has_gt = best > -np.inf
        assigned[has_gt] = claimed[has_gt].argmax(axis=1)
        return assigned
