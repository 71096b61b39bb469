"""YuNet head (libfacedetection.train ``YuNet_Head``).

Per stride: optional shared ConvDPUnits, then four prediction ConvDPUnits
without BN (class, box, objectness, keypoints). Anchor-free, one point per
cell at ``(x * stride, y * stride)`` (offset 0). A box is coded as
``(dx, dy, log w, log h)`` in stride units around that point; keypoints as
offsets in stride units.

Official facts this follows (libfacedetection.train, mmdet YuNet_Head and
configs/yunet_{n,s}.py):
  * decode: centre = point + d * stride, size = exp(d) * stride, keypoint =
    point + d * stride; score = sigmoid(cls) * sigmoid(obj) (OpenCV's
    FaceDetectorYN reports sqrt of that product instead; ``score_fusion``);
  * training: SimOTA assigns on points shifted by half a stride, boxes are
    regressed around the unshifted points; the class target of a positive is
    the IoU of its prediction with its gt, the objectness target is 1;
    losses: EIoU x5, BCE class x1 and objectness x1 (all summed and divided by
    the number of positives), SmoothL1 (beta 1/9) keypoints x0.1 divided by
    the number of positives that have landmarks.
"""

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from ...core.distributed import mean_over_processes
from ...core.errors import ConfigError
from ...core.registry import ASSIGNERS, HEADS, LOSSES
from ...postprocess.priors import grid_points
from ..backbones.yunet_backbone import ConvDPUnit
from .base import DenseHead, RawOutputs, feature_sizes_of

KINDS = ("cls", "obj", "box", "kps")
# Names and order of the official ONNX outputs for each raw kind.
DEPLOY_NAMES = {"cls": "cls", "obj": "obj", "box": "bbox", "kps": "kps"}
SCORE_FUSIONS = ("product", "sqrt")


@HEADS.register
class YuNetHead(DenseHead):
    def __init__(self, in_channels, feat_channels=64, shared_stacked_convs=1, num_keypoints=5,
                 strides=(8, 16, 32), score_fusion="product",
                 assigner=None, loss_bbox=None, loss_kps=None, loss_cls_weight=1.0, loss_obj_weight=1.0):
        super().__init__()
        self.strides = tuple(strides)
        levels = len(self.strides)
        if isinstance(in_channels, int):
            in_channels = [in_channels] * levels
        if len(in_channels) != levels:
            raise ConfigError(f"model.head: {len(in_channels)} input levels for {levels} strides "
                              f"{list(self.strides)}")
        if score_fusion not in SCORE_FUSIONS:
            raise ConfigError(f"model.head.score_fusion: '{score_fusion}' is not one of "
                              f"{', '.join(SCORE_FUSIONS)}")
        self.num_keypoints = num_keypoints
        self.score_fusion = score_fusion
        self.channels = {"cls": 1, "obj": 1, "box": 4, "kps": 2 * num_keypoints}

        if shared_stacked_convs > 0:
            self.multi_level_share_convs = nn.LayerList([
                nn.Sequential(*[ConvDPUnit(c if j == 0 else feat_channels, feat_channels)
                                for j in range(shared_stacked_convs)])
                for c in in_channels])
            pred_in = [feat_channels] * levels
        else:
            self.multi_level_share_convs = None
            pred_in = list(in_channels)
        # Attribute names are the official ones so checkpoints map by name.
        self.multi_level_cls = self._predictors(pred_in, self.channels["cls"])
        self.multi_level_bbox = self._predictors(pred_in, self.channels["box"])
        self.multi_level_obj = self._predictors(pred_in, self.channels["obj"])
        self.multi_level_kps = self._predictors(pred_in, self.channels["kps"])

        self.assigner = ASSIGNERS.build(assigner or {"type": "SimOTAAssigner", "center_radius": 2.5},
                                        "model.head.assigner")
        self.loss_bbox = LOSSES.build(loss_bbox or {"type": "EIoULoss", "loss_weight": 5.0},
                                      "model.head.loss_bbox")
        self.loss_kps = LOSSES.build(loss_kps or {"type": "SmoothL1Loss", "beta": 1.0 / 9.0, "loss_weight": 0.1},
                                     "model.head.loss_kps")
        self.loss_cls_weight = loss_cls_weight
        self.loss_obj_weight = loss_obj_weight

    @staticmethod
    def _predictors(in_channels, out_channels):
        return nn.LayerList([ConvDPUnit(c, out_channels, with_bn_relu=False) for c in in_channels])

    # ------------------------------------------------------------------ forward
    def forward(self, feats):
        if self.multi_level_share_convs is not None:
            feats = [convs(f) for f, convs in zip(feats, self.multi_level_share_convs)]
        layers = {"cls": self.multi_level_cls, "obj": self.multi_level_obj,
                  "box": self.multi_level_bbox, "kps": self.multi_level_kps}
        raw = RawOutputs.for_features(feats)
        for kind in KINDS:
            for stride, feat, layer in zip(self.strides, feats, layers[kind]):
                raw[f"{kind}_{stride}"] = _flatten(layer(feat))
        return raw

    # ------------------------------------------------------------------ decode
    def _points(self, raw):
        """Grid points [M,2] and their strides [M,1] over all levels (paddle)."""
        sizes = feature_sizes_of(raw, "YuNetHead")
        points = np.concatenate([grid_points(h, w, s) for (h, w), s in zip(sizes, self.strides)])
        strides = np.concatenate([np.full((h * w, 1), s, np.float32)
                                  for (h, w), s in zip(sizes, self.strides)])
        return paddle.to_tensor(points), paddle.to_tensor(strides)

    def _cat(self, raw, kind):
        return paddle.concat([raw[f"{kind}_{s}"] for s in self.strides], axis=1)

    @staticmethod
    def _decode_boxes(deltas, points, strides):
        centre = points + deltas[..., :2] * strides
        half = paddle.exp(deltas[..., 2:]) * strides / 2
        return paddle.concat([centre - half, centre + half], axis=-1)

    @staticmethod
    def _decode_keypoints(deltas, points, strides):
        k = deltas.shape[-1] // 2
        return deltas * paddle.tile(strides, [1, 2 * k]) + paddle.tile(points, [1, k])

    def fuse_scores(self, cls_prob, obj_prob):
        score = cls_prob * obj_prob
        return score.sqrt() if self.score_fusion == "sqrt" else score

    def decode(self, raw):
        points, strides = self._points(raw)
        boxes = self._decode_boxes(self._cat(raw, "box"), points, strides)
        scores = self.fuse_scores(F.sigmoid(self._cat(raw, "cls")), F.sigmoid(self._cat(raw, "obj")))
        landmarks = self._decode_keypoints(self._cat(raw, "kps"), points, strides)
        return boxes, scores[..., 0], landmarks

    # ------------------------------------------------------------------ deploy
    def deploy_outputs(self, raw):
        """The official ONNX outputs: cls_*, obj_* (sigmoid applied), bbox_*, kps_*."""
        outputs = []
        for kind in KINDS:
            for s in self.strides:
                t = raw[f"{kind}_{s}"]
                outputs.append((f"{DEPLOY_NAMES[kind]}_{s}", F.sigmoid(t) if kind in ("cls", "obj") else t))
        return outputs

    def deploy_config(self):
        return {
            "kind": "yunet",
            "strides": list(self.strides),
            "offset": 0.0,
            "num_keypoints": self.num_keypoints,
            # score = cls * obj ("product") or its square root ("sqrt"); both
            # come out of the graph already passed through a sigmoid.
            "score_fusion": self.score_fusion,
            # Per stride s: rows (y, x) of the (H/s) x (W/s) grid; box rows
            # (dx, dy, log w, log h) in stride units around (x*s, y*s).
            "outputs": {kind: [f"{DEPLOY_NAMES[kind]}_{s}" for s in self.strides] for kind in KINDS},
        }

    # ------------------------------------------------------------------ loss
    def loss(self, raw, batch):
        cls_logits, obj_logits = self._cat(raw, "cls"), self._cat(raw, "obj")
        box_deltas, kps_deltas = self._cat(raw, "box"), self._cat(raw, "kps")
        points, strides = self._points(raw)
        pred_boxes = self._decode_boxes(box_deltas, points, strides)
        num_images, num_points = cls_logits.shape[0], cls_logits.shape[1]

        with paddle.no_grad():
            scores = (F.sigmoid(cls_logits) * F.sigmoid(obj_logits))[..., 0]
            # Assignment looks at cell centres; regression stays on the cell corners.
            assign_priors = paddle.concat([points + strides / 2, strides, strides], axis=1)
            targets = self._targets(scores, assign_priors, pred_boxes.detach(), batch)
        pos, cls_target, box_target, kps_target, kps_weight = targets
        # Averaged over the processes, as the official head's reduce_mean
        num_pos = max(mean_over_processes(int(pos.shape[0])), 1.0)

        obj_target = paddle.zeros([num_images * num_points], "float32")
        if pos.shape[0]:
            obj_target = paddle.scatter(obj_target, pos, paddle.ones([pos.shape[0]], "float32"))
        loss_obj = F.binary_cross_entropy_with_logits(
            obj_logits.reshape([-1]), obj_target, reduction="sum") / num_pos

        def flat(t):
            return paddle.gather(t.reshape([num_images * num_points, -1]), pos)

        if pos.shape[0]:
            loss_cls = F.binary_cross_entropy_with_logits(
                flat(cls_logits)[:, 0], cls_target, reduction="sum") / num_pos
            loss_bbox = self.loss_bbox(flat(pred_boxes), box_target, avg_factor=num_pos)
            pos_points = paddle.gather(points, pos % num_points)
            pos_strides = paddle.gather(strides, pos % num_points)
            kps_encoded = (kps_target - paddle.tile(pos_points, [1, self.num_keypoints])) / pos_strides
            loss_kps = self.loss_kps(flat(kps_deltas), kps_encoded, weight=kps_weight[:, None],
                                     avg_factor=kps_weight.sum() + 1e-6)
        else:
            # No positives: zero losses that still reach every predictor, so
            # the graph (and distributed gradient sync) sees the same parameters.
            loss_cls = cls_logits.sum() * 0.0
            loss_bbox = box_deltas.sum() * 0.0
            loss_kps = kps_deltas.sum() * 0.0

        terms = {"loss_cls": loss_cls * self.loss_cls_weight, "loss_obj": loss_obj * self.loss_obj_weight,
                 "loss_bbox": loss_bbox, "loss_kps": loss_kps}
        terms["loss"] = paddle.add_n(list(terms.values()))
        return terms

    def _targets(self, scores, assign_priors, pred_boxes, batch):
        """Positives over the flattened batch (index image * M + point) and their
        targets: class (IoU), box, keypoints, keypoint weight."""
        num_points = scores.shape[1]
        pos, cls_t, box_t, kps_t, kps_w = [], [], [], [], []
        for i, gt in enumerate(batch["gt_boxes"]):
            gt = np.asarray(gt, np.float32).reshape(-1, 4)
            if gt.shape[0] == 0:
                continue
            gt_index, iou = self.assigner.assign(scores[i], assign_priors, pred_boxes[i],
                                                 paddle.to_tensor(gt))
            fg = paddle.nonzero(gt_index >= 0).flatten()
            if fg.shape[0] == 0:
                continue
            owner = paddle.gather(gt_index, fg).numpy()
            landmarks = np.asarray(batch["gt_landmarks"][i], np.float32).reshape(-1, 2 * self.num_keypoints)
            valid = np.asarray(batch["landmark_valid"][i], bool).reshape(-1)
            pos.append(fg + i * num_points)
            cls_t.append(paddle.gather(iou, fg))
            box_t.append(gt[owner])
            kps_t.append(landmarks[owner])
            kps_w.append(valid[owner].astype(np.float32))
        if not pos:
            return paddle.zeros([0], "int64"), None, None, None, None
        return (paddle.concat(pos), paddle.concat(cls_t), paddle.to_tensor(np.concatenate(box_t)),
                paddle.to_tensor(np.concatenate(kps_t)), paddle.to_tensor(np.concatenate(kps_w)))


def _flatten(x):
    """[N, C, H, W] -> [N, H*W, C], rows in (y, x) order (0 copies N; see SCRFDHead._flatten)."""
    return x.transpose([0, 2, 3, 1]).reshape([0, -1, x.shape[1]])
