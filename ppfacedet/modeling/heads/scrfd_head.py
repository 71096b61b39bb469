"""SCRFD head: a stacked conv tower, then per-location class, box-distance and
(optionally) keypoint convs, for two anchors per location at strides 8/16/32.

Settings that vary between the official variants:
  stacked_convs / feat_channels  depth and width of the tower
  norm, num_groups               BN or GN (with its group count) in the tower
  dw_conv                        depthwise-separable tower convs (0.5/1 GF)
  strides_share                  one tower and one set of output convs for all
                                 strides (key "0"), or one per stride ("8", ...)
  use_scale                      a learnable scalar on the box output per stride
                                 (official scale_mode > 0 with strides_share,
                                 or scale_mode == 2)
  use_kps                        the five-point keypoint branch
The tower serves both classification and regression (cls_reg_share, which every
official config sets). Sub-layer names follow the official head
(``cls_stride_convs``, ``stride_cls``, ``stride_reg``, ``stride_kps``, ``scales``).

Raw outputs: ``cls_<s>`` [N, HWA, 1] logits, ``box_<s>`` [N, HWA, 4] distances
(left, top, right, bottom) in units of the stride, ``kps_<s>`` [N, HWA, 10]
offsets in units of the stride; rows ordered (y, x, anchor). Anchor centres
are at (x * s, y * s).
"""

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from ...core.distributed import mean_over_processes
from ...core.errors import ConfigError
from ...core.registry import ASSIGNERS, HEADS, LOSSES
from ...postprocess.boxes import distance_to_box, offsets_to_keypoints
from ...postprocess.priors import grid_points
from ..layers import ConvNorm, DepthwiseSeparable, Scale
from ..losses.iou_losses import aligned_iou
from .base import DenseHead, RawOutputs, feature_sizes_of

NUM_KEYPOINTS = 5
# Initial class bias: sigmoid(-4.595) = 0.01, the usual focal-loss prior.
CLS_BIAS_INIT = -4.595


@HEADS.register
class SCRFDHead(DenseHead):
    def __init__(self, in_channels, feat_channels=64, stacked_convs=2, norm="GN", num_groups=16,
                 dw_conv=False, strides_share=True, use_scale=True, use_kps=False, strides=(8, 16, 32),
                 anchor_base_sizes=(16, 64, 256), anchor_scales=(1, 2),
                 assigner=None, loss_cls=None, loss_box=None, loss_kps=None):
        super().__init__()
        if not isinstance(in_channels, int):
            raise ConfigError(f"SCRFDHead: in_channels must be one int (the neck's width), got {in_channels!r}")
        if len(anchor_base_sizes) != len(strides):
            raise ConfigError(f"SCRFDHead: anchor_base_sizes {list(anchor_base_sizes)} needs one size per "
                              f"stride of {list(strides)}")
        self.strides = tuple(strides)
        self.anchor_base_sizes = tuple(anchor_base_sizes)
        self.anchor_scales = tuple(anchor_scales)
        self.num_anchors = len(anchor_scales)
        self.use_kps = use_kps
        self.strides_share = strides_share
        # (H, W) per stride of the latest forward: the raw [N, HWA, C] tensors
        # no longer carry them, and decode / loss need them for anchor centres.
        keys = ["0"] if strides_share else [str(s) for s in self.strides]

        def tower_conv(cin):
            if dw_conv:
                return DepthwiseSeparable(cin, feat_channels, norm=norm, num_groups=num_groups)
            return ConvNorm(cin, feat_channels, 3, norm=norm, num_groups=num_groups)

        def predictor(channels_per_anchor, bias=0.0):
            return nn.Conv2D(feat_channels, channels_per_anchor * self.num_anchors, 3, padding=1,
                             weight_attr=nn.initializer.Normal(std=0.01),
                             bias_attr=nn.initializer.Constant(bias))

        self.cls_stride_convs = nn.LayerDict({
            k: nn.LayerList([tower_conv(in_channels if i == 0 else feat_channels) for i in range(stacked_convs)])
            for k in keys})
        for layer in self.cls_stride_convs.sublayers():
            if isinstance(layer, nn.Conv2D):
                nn.initializer.Normal(std=0.01)(layer.weight)
        self.stride_cls = nn.LayerDict({k: predictor(1, CLS_BIAS_INIT) for k in keys})
        self.stride_reg = nn.LayerDict({k: predictor(4) for k in keys})
        if use_kps:
            self.stride_kps = nn.LayerDict({k: predictor(2 * NUM_KEYPOINTS) for k in keys})
        self.scales = nn.LayerList([Scale(1.0) for _ in self.strides]) if use_scale else None

        self.assigner = ASSIGNERS.build(assigner or {"type": "ATSSAssigner", "topk": 9}, "model.head.assigner")
        self.loss_cls = LOSSES.build(loss_cls or {"type": "QualityFocalLoss", "beta": 2.0},
                                     "model.head.loss_cls")
        self.loss_box = LOSSES.build(loss_box or {"type": "DIoULoss", "loss_weight": 2.0},
                                     "model.head.loss_box")
        self.loss_kps = LOSSES.build(loss_kps or {"type": "SmoothL1Loss", "beta": 1.0 / 9.0, "loss_weight": 0.1},
                                     "model.head.loss_kps")

    # ------------------------------------------------------------------ forward
    def _key(self, stride):
        return "0" if self.strides_share else str(stride)

    def _flatten(self, x, channels_per_anchor):
        """[N, A*C, H, W] -> [N, H*W*A, C] with rows ordered (y, x, anchor).
        The 0 copies N: a static shape, where a traced ``x.shape[0]`` would add
        shape/slice/fill ops to every exported output."""
        return x.transpose([0, 2, 3, 1]).reshape([0, -1, channels_per_anchor])

    def forward(self, feats):
        if len(feats) != len(self.strides):
            raise ValueError(f"SCRFDHead: got {len(feats)} feature maps for strides {list(self.strides)}")
        outputs = {"cls": [], "box": [], "kps": []}
        # Stride by stride, and within a stride tower -> cls -> box -> kps: the
        # order the official graph runs its convs in (the ONNX converter relies on it).
        for level, (x, stride) in enumerate(zip(feats, self.strides)):
            key = self._key(stride)
            for conv in self.cls_stride_convs[key]:
                x = conv(x)
            outputs["cls"].append(self._flatten(self.stride_cls[key](x), 1))
            box = self.stride_reg[key](x)
            if self.scales is not None:
                box = self.scales[level](box)
            outputs["box"].append(self._flatten(box, 4))
            if self.use_kps:
                outputs["kps"].append(self._flatten(self.stride_kps[key](x), 2 * NUM_KEYPOINTS))
        raw = RawOutputs.for_features(feats)
        for kind in ("cls", "box", "kps"):
            for stride, tensor in zip(self.strides, outputs[kind]):
                raw[f"{kind}_{stride}"] = tensor
        return raw

    # ------------------------------------------------------------------ anchors
    def anchor_points(self, raw):
        """Per stride: anchor centres [H*W*A, 2] in input pixels (numpy)."""
        return [grid_points(h, w, s, 0.0, self.num_anchors)
                for s, (h, w) in zip(self.strides, feature_sizes_of(raw, "SCRFDHead"))]

    def anchor_boxes(self, centres):
        """Square anchors (side base_size * scale, alternating over the A anchors
        of a location) around per-stride centres -> [M, 4] xyxy."""
        boxes = []
        for pts, base in zip(centres, self.anchor_base_sizes):
            sides = np.tile(np.asarray(self.anchor_scales, np.float32) * base, len(pts) // self.num_anchors)
            half = np.stack([sides, sides], axis=1) / 2
            boxes.append(np.concatenate([pts - half, pts + half], axis=1))
        return np.concatenate(boxes, axis=0)

    # ------------------------------------------------------------------ decode / deploy
    def decode(self, raw):
        boxes, scores, keypoints = [], [], []
        for stride, pts in zip(self.strides, self.anchor_points(raw)):
            centres = paddle.to_tensor(pts)
            boxes.append(distance_to_box(centres, raw[f"box_{stride}"] * stride))
            scores.append(F.sigmoid(raw[f"cls_{stride}"])[..., 0])
            if self.use_kps:
                keypoints.append(offsets_to_keypoints(centres, raw[f"kps_{stride}"] * stride))
        landmarks = paddle.concat(keypoints, axis=1) if self.use_kps else None
        return paddle.concat(boxes, axis=1), paddle.concat(scores, axis=1), landmarks

    def deploy_outputs(self, raw):
        """The official export's outputs: sigmoid scores, then box distances and
        keypoint offsets both still in stride units."""
        outs = [(f"score_{s}", F.sigmoid(raw[f"cls_{s}"])) for s in self.strides]
        outs += [(f"bbox_{s}", raw[f"box_{s}"]) for s in self.strides]
        if self.use_kps:
            outs += [(f"kps_{s}", raw[f"kps_{s}"]) for s in self.strides]
        return outs

    def deploy_config(self):
        return {"kind": "distance", "strides": list(self.strides), "num_anchors": self.num_anchors,
                "offset": 0.0, "score_activation": "none", "has_kps": bool(self.use_kps)}

    # ------------------------------------------------------------------ loss
    def _targets(self, raw, batch):
        """Numpy targets over all images and anchors (concatenated over strides)."""
        centres = self.anchor_points(raw)
        anchors = self.anchor_boxes(centres)
        level_counts = [len(c) for c in centres]
        num_images = raw[f"cls_{self.strides[0]}"].shape[0]
        num_anchors = len(anchors)
        pos_gt = np.full((num_images, num_anchors), -1, np.int64)
        box_targets = np.zeros((num_images, num_anchors, 4), np.float32)
        kps_targets = np.zeros((num_images, num_anchors, 2 * NUM_KEYPOINTS), np.float32)
        kps_weights = np.zeros((num_images, num_anchors), np.float32)
        landmarks = batch.get("gt_landmarks")
        valid = batch.get("landmark_valid")
        for i in range(num_images):
            gt = np.asarray(batch["gt_boxes"][i], np.float32).reshape(-1, 4)
            assigned = self.assigner(anchors, level_counts, gt)
            pos = assigned >= 0
            pos_gt[i] = assigned
            box_targets[i, pos] = gt[assigned[pos]]
            if self.use_kps and landmarks is not None and landmarks[i] is not None and len(gt):
                lm = np.asarray(landmarks[i], np.float32).reshape(len(gt), 2 * NUM_KEYPOINTS)
                ok = np.ones(len(gt), bool) if valid is None or valid[i] is None else np.asarray(valid[i], bool)
                kps_targets[i, pos] = lm[assigned[pos]]
                kps_weights[i, pos] = ok[assigned[pos]].astype(np.float32)
        strides = np.concatenate([np.full(n, s, np.float32) for n, s in zip(level_counts, self.strides)])
        return np.concatenate(centres, axis=0), strides, pos_gt, box_targets, kps_targets, kps_weights

    def loss(self, raw, batch):
        """QFL on every anchor (target: IoU of the positive's decoded box with its
        face), DIoU on positives and Smooth-L1 on positives with landmarks; the
        box and keypoint terms are weighted by the detached predicted score and
        normalised by its sum, the class term by the number of positives
        (at least one per image). Boxes and keypoints compare in stride units."""
        centres, strides, pos_gt, box_targets, kps_targets, kps_weights = self._targets(raw, batch)
        num_images, num_anchors = pos_gt.shape
        logits = paddle.concat([raw[f"cls_{s}"] for s in self.strides], axis=1).reshape([-1])
        box_pred = paddle.concat([raw[f"box_{s}"] for s in self.strides], axis=1).reshape([-1, 4])
        flat_pos = np.nonzero(pos_gt.reshape(-1) >= 0)[0]
        per_image_pos = (pos_gt >= 0).sum(axis=1)
        # Normalisers averaged over the processes, as the official head's reduce_mean
        cls_avg = max(mean_over_processes(float(np.maximum(per_image_pos, 1).sum())), 1.0)

        losses = {}
        quality = np.zeros(num_images * num_anchors, np.float32)
        index = paddle.to_tensor(flat_pos.astype(np.int64))
        weight = F.sigmoid(paddle.gather(logits, index)).detach()
        weight_sum = mean_over_processes(weight.sum())  # every process joins, with positives or not
        if len(flat_pos):
            anchor_index = flat_pos % num_anchors
            pos_stride = paddle.to_tensor(strides[anchor_index][:, None])
            pos_centres = paddle.to_tensor(centres[anchor_index]) / pos_stride
            pred_boxes = distance_to_box(pos_centres, paddle.gather(box_pred, index))
            target_boxes = paddle.to_tensor(box_targets.reshape(-1, 4)[flat_pos]) / pos_stride
            quality[flat_pos] = aligned_iou(pred_boxes.detach(), target_boxes).numpy()
            losses["loss_box"] = self.loss_box(pred_boxes, target_boxes, weight=weight, avg_factor=weight_sum)
            if self.use_kps:
                kps_pred = paddle.concat([raw[f"kps_{s}"] for s in self.strides], axis=1).reshape(
                    [-1, 2 * NUM_KEYPOINTS])
                tiled = paddle.tile(pos_centres, [1, NUM_KEYPOINTS])
                kps_target = paddle.to_tensor(kps_targets.reshape(-1, 2 * NUM_KEYPOINTS)[flat_pos]) / pos_stride
                kps_weight = paddle.to_tensor(kps_weights.reshape(-1)[flat_pos]) * weight
                losses["loss_kps"] = self.loss_kps(paddle.gather(kps_pred, index), kps_target - tiled,
                                                   weight=kps_weight[:, None], avg_factor=weight_sum)
        else:
            # Zeros that still reach every stride's predictor, as the official
            # per-level losses do (and distributed gradient sync expects).
            losses["loss_box"] = box_pred.sum() * 0
            if self.use_kps:
                losses["loss_kps"] = paddle.add_n([raw[f"kps_{s}"].sum() for s in self.strides]) * 0
        losses["loss_cls"] = self.loss_cls(logits, paddle.to_tensor(quality), avg_factor=cls_avg)
        ordered = {"loss_cls": losses["loss_cls"], "loss_box": losses["loss_box"]}
        if self.use_kps:
            ordered["loss_kps"] = losses["loss_kps"]
        ordered["loss"] = paddle.add_n(list(ordered.values()))
        return ordered
