"""SSD-style matching of priors to ground-truth faces, as RetinaFace trains it.

Every prior takes the face it overlaps most and is positive from IoU 0.35 on.
Each face also claims its single best prior whatever that IoU is, so small or
oddly shaped faces still get one positive; but a face whose best IoU is below
0.2 is treated as unmatchable and claims nothing. (The official ``match``
lets such a face re-point its best prior without forcing it positive; here it
simply takes no part, which is what its filtering intends.)
"""
import numpy as np
import paddle

from ...core.registry import ASSIGNERS
from ...postprocess.boxes import pairwise_iou


@ASSIGNERS.register
class MaxIoUAssigner:
    def __init__(self, pos_iou_threshold=0.35, min_best_iou=0.2):
        if not 0 < min_best_iou <= pos_iou_threshold <= 1:
            raise ValueError(f"MaxIoUAssigner: need 0 < min_best_iou ({min_best_iou}) <= "
                             f"pos_iou_threshold ({pos_iou_threshold}) <= 1")
        self.pos_iou_threshold = pos_iou_threshold
        self.min_best_iou = min_best_iou

    def assign(self, priors, gt_boxes):
        """priors [P,4], gt_boxes [K,4] (xyxy, same units) -> int64 [P]: the
        index of the face each prior is matched to, or -1 for background."""
        matched = np.full(len(priors), -1, np.int64)
        if len(gt_boxes) == 0:
            return matched
        overlaps = pairwise_iou(paddle.to_tensor(gt_boxes, "float32"),
                                paddle.to_tensor(priors, "float32")).numpy()
        best_prior = overlaps.argmax(axis=1)
        matchable = overlaps[np.arange(len(gt_boxes)), best_prior] >= self.min_best_iou
        if not matchable.any():
            return matched
        best_gt = overlaps.argmax(axis=0)
        best_gt_iou = overlaps.max(axis=0)
        # In face order, so when two faces share a best prior the later one wins.
        for face in np.flatnonzero(matchable):
            best_gt[best_prior[face]] = face
            best_gt_iou[best_prior[face]] = 2.0
        positive = best_gt_iou >= self.pos_iou_threshold
        matched[positive] = best_gt[positive]
        return matched
