"""SimOTA label assignment (YOLOX), as YuNet trains with it.

For one image: candidate priors are those whose centre lies inside a ground
truth box or within ``center_radius`` strides of its centre. Each pair
(candidate, gt) costs ``cls_weight * BCE(sqrt(score), 1) + iou_weight *
-log(IoU)``, plus a huge penalty unless the prior is both inside the box and
near its centre. Each gt then takes its ``k`` cheapest candidates, where ``k`` is
the (truncated) sum of its ``candidate_topk`` best IoUs, at least 1; a prior
claimed by several gts keeps only the cheapest.
"""
import paddle

from ...core.registry import ASSIGNERS
from ...postprocess.boxes import pairwise_iou

_OUTSIDE_COST = 100000.0
_LOG_EPS = 1e-7
# torch's binary_cross_entropy clamps log() at -100; keep the same ceiling so
# a zero score costs the same as in the official training.
_MAX_BCE = 100.0


@ASSIGNERS.register
class SimOTAAssigner:
    def __init__(self, center_radius=2.5, candidate_topk=10, iou_weight=3.0, cls_weight=1.0):
        self.center_radius = center_radius
        self.candidate_topk = candidate_topk
        self.iou_weight = iou_weight
        self.cls_weight = cls_weight

    @paddle.no_grad()
    def assign(self, scores, priors, pred_boxes, gt_boxes):
        """scores [P] face probabilities; priors [P,4] (cx, cy, stride_x, stride_y);
        pred_boxes [P,4] and gt_boxes [G,4] xyxy.

        Returns (gt_index [P] int64, -1 for background; iou [P], the IoU of
        each foreground prediction with its gt, 0 elsewhere).
        """
        num_priors, num_gts = priors.shape[0], gt_boxes.shape[0]
        gt_index = paddle.full([num_priors], -1, dtype="int64")
        matched_iou = paddle.zeros([num_priors], dtype="float32")
        if num_priors == 0 or num_gts == 0:
            return gt_index, matched_iou

        in_box, in_centre = self._geometry(priors, gt_boxes)
        candidates = paddle.nonzero((in_box | in_centre).any(axis=1)).flatten()
        if candidates.shape[0] == 0:
            return gt_index, matched_iou

        ious = pairwise_iou(paddle.gather(pred_boxes, candidates), gt_boxes)
        prob = paddle.gather(scores, candidates).astype("float32").sqrt()
        cls_cost = (-paddle.log(prob)).clip(max=_MAX_BCE)
        both = paddle.gather((in_box & in_centre).astype("float32"), candidates)
        cost = (self.cls_weight * cls_cost[:, None] - self.iou_weight * paddle.log(ious + _LOG_EPS)
                + _OUTSIDE_COST * (1.0 - both))

        matching = self._dynamic_k(cost, ious)
        is_fg = matching.any(axis=1)
        fg_rows = paddle.nonzero(is_fg).flatten()
        if fg_rows.shape[0] == 0:
            return gt_index, matched_iou
        gts_of_fg = paddle.argmax(paddle.gather(matching.astype("float32"), fg_rows), axis=1)
        ious_of_fg = paddle.take_along_axis(paddle.gather(ious, fg_rows), gts_of_fg[:, None], axis=1)
        fg_priors = paddle.gather(candidates, fg_rows)
        gt_index = paddle.scatter(gt_index, fg_priors, gts_of_fg)
        matched_iou = paddle.scatter(matched_iou, fg_priors, ious_of_fg.flatten())
        return gt_index, matched_iou

    def _geometry(self, priors, gt_boxes):
        """[P,G] masks: prior centre strictly inside the gt box; strictly within
        center_radius strides of the gt centre."""
        px, py = priors[:, 0:1], priors[:, 1:2]
        sx, sy = priors[:, 2:3], priors[:, 3:4]
        x1, y1, x2, y2 = (gt_boxes[:, i][None, :] for i in range(4))
        in_box = (px > x1) & (px < x2) & (py > y1) & (py < y2)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        rx, ry = self.center_radius * sx, self.center_radius * sy
        in_centre = ((px - cx).abs() < rx) & ((py - cy).abs() < ry)
        return in_box, in_centre

    def _dynamic_k(self, cost, ious):
        """[C,G] bool matching: each gt's k cheapest candidates, conflicts resolved
        by the lowest cost."""
        num_candidates = cost.shape[0]
        topk = min(self.candidate_topk, num_candidates)
        ks = paddle.topk(ious, topk, axis=0).values.sum(axis=0).astype("int64").clip(min=1)
        rank = paddle.argsort(paddle.argsort(cost, axis=0), axis=0)
        matching = rank < ks[None, :]
        contested = matching.astype("int64").sum(axis=1) > 1
        if contested.any():
            cheapest = paddle.nn.functional.one_hot(paddle.argmin(cost, axis=1), cost.shape[1]) > 0
            matching = paddle.where(contested[:, None], cheapest, matching)
        return matching
