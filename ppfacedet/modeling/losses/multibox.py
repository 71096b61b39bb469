"""RetinaFace's multibox loss: SmoothL1 boxes + softmax CE with hard-negative
mining + SmoothL1 landmarks, each normalised by its number of positives."""
import numpy as np
import paddle
import paddle.nn.functional as F

from ...core.distributed import mean_over_processes
from ...core.registry import LOSSES


def hardest_negatives(cls_logits, labels, neg_pos_ratio):
    """Bool [N,M]: per image, the ``neg_pos_ratio * positives`` background
    priors with the highest background cross-entropy (none if the image has
    no positive)."""
    logits = cls_logits.numpy().astype(np.float64)
    top = logits.max(axis=-1, keepdims=True)
    background_ce = (np.log(np.exp(logits - top).sum(axis=-1)) + top[..., 0]) - logits[..., 0]
    chosen = np.zeros(labels.shape, bool)
    for i in range(labels.shape[0]):
        negatives = np.flatnonzero(labels[i] == 0)
        count = min(neg_pos_ratio * int((labels[i] > 0).sum()), len(negatives))
        hardest = negatives[np.argsort(-background_ce[i, negatives], kind="stable")[:count]]
        chosen[i, hardest] = True
    return chosen


def masked_smooth_l1(pred, target, mask):
    """Sum of SmoothL1 (beta 1) over the rows where mask [N,M] is true."""
    loss = F.smooth_l1_loss(pred, paddle.to_tensor(target, "float32"), reduction="none", delta=1.0)
    return (loss.sum(axis=-1) * paddle.to_tensor(mask, "float32")).sum()


@LOSSES.register
class MultiBoxLoss:
    def __init__(self, neg_pos_ratio=7, loc_weight=2.0):
        if neg_pos_ratio < 1:
            raise ValueError(f"MultiBoxLoss: neg_pos_ratio must be >= 1, got {neg_pos_ratio}")
        self.neg_pos_ratio = int(neg_pos_ratio)
        self.loc_weight = float(loc_weight)

    def __call__(self, cls_logits, box_deltas, kps_deltas, targets):
        """cls_logits [N,M,2], box_deltas [N,M,4], kps_deltas [N,M,10] (paddle);
        targets (numpy): ``labels`` [N,M] (1 face, 0 background), ``boxes``
        [N,M,4] and ``landmarks`` [N,M,10] encoded (zeros where unused),
        ``landmark_mask`` [N,M] (positives whose face has landmarks)."""
        labels = targets["labels"]
        positive = labels > 0
        # Over the whole batch of every process, as Pytorch_Retinaface's single-process DataParallel
        num_pos = max(mean_over_processes(int(positive.sum())), 1)
        num_pos_landmarks = max(mean_over_processes(int(targets["landmark_mask"].sum())), 1)

        loss_box = masked_smooth_l1(box_deltas, targets["boxes"], positive) / num_pos
        loss_kps = masked_smooth_l1(kps_deltas, targets["landmarks"], targets["landmark_mask"]) / num_pos_landmarks

        used = positive | hardest_negatives(cls_logits, labels, self.neg_pos_ratio)
        ce = F.cross_entropy(cls_logits, paddle.to_tensor(labels[..., None], "int64"), reduction="none")
        loss_cls = (ce.squeeze(-1) * paddle.to_tensor(used, "float32")).sum() / num_pos

        total = self.loc_weight * loss_box + loss_cls + loss_kps
        return {"loss": total, "loss_box": loss_box, "loss_cls": loss_cls, "loss_kps": loss_kps}
