"""RetinaFace head: per level a 1x1 conv each for face/background logits, box
deltas and landmark deltas, all relative to fixed square priors.

Priors have centres ((x + 0.5) * stride, (y + 0.5) * stride) and sizes
``min_sizes`` in input pixels. Deltas use the SSD coding with variances
(0.1, 0.2): centre offset / (0.1 * prior size), log size ratio / 0.2, and
landmark offset / (0.1 * prior size). The official code works in coordinates
normalised by the image size; the coding is a ratio, so pixels give the same
numbers.
"""
import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from ...core.registry import ASSIGNERS, HEADS, LOSSES
from ...postprocess.priors import retina_priors
from .base import DenseHead, RawOutputs, feature_sizes_of

NUM_LANDMARKS = 5


class AnchorConv(nn.Layer):
    """1x1 conv with ``channels`` outputs per anchor -> [N, H*W*A, channels]."""

    def __init__(self, in_channels, num_anchors, channels):
        super().__init__()
        self.channels = channels
        self.conv1x1 = nn.Conv2D(in_channels, num_anchors * channels, 1)

    def forward(self, x):
        return self.conv1x1(x).transpose([0, 2, 3, 1]).reshape([0, -1, self.channels])


def priors_to_boxes(priors):
    """(cx, cy, w, h) -> xyxy (numpy)."""
    return np.concatenate([priors[:, :2] - priors[:, 2:] / 2, priors[:, :2] + priors[:, 2:] / 2], axis=1)


def encode_boxes(boxes, priors, variances):
    """xyxy boxes [n,4] against their priors [n,4] (cx,cy,w,h) -> deltas [n,4] (numpy)."""
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    sizes = boxes[:, 2:] - boxes[:, :2]
    return np.concatenate([(centres - priors[:, :2]) / (variances[0] * priors[:, 2:]),
                           np.log(sizes / priors[:, 2:]) / variances[1]], axis=1)


def encode_landmarks(points, priors, variances):
    """points [n,5,2] -> deltas [n,10] (numpy)."""
    deltas = (points - priors[:, None, :2]) / (variances[0] * priors[:, None, 2:])
    return deltas.reshape(len(points), 2 * NUM_LANDMARKS)


def decode_boxes(deltas, priors, variances):
    """deltas [N,M,4], priors [M,4] (paddle) -> xyxy [N,M,4]."""
    centres = priors[:, :2] + deltas[..., :2] * variances[0] * priors[:, 2:]
    sizes = priors[:, 2:] * paddle.exp(deltas[..., 2:] * variances[1])
    return paddle.concat([centres - sizes / 2, centres + sizes / 2], axis=-1)


def decode_landmarks(deltas, priors, variances):
    """deltas [N,M,10], priors [M,4] (paddle) -> points [N,M,10] (x, y interleaved)."""
    centres = paddle.tile(priors[:, :2], [1, NUM_LANDMARKS])
    scales = paddle.tile(priors[:, 2:], [1, NUM_LANDMARKS]) * variances[0]
    return centres + deltas * scales


@HEADS.register
class RetinaHead(DenseHead):
    def __init__(self, in_channels, strides=(8, 16, 32), min_sizes=((16, 32), (64, 128), (256, 512)),
                 variances=(0.1, 0.2), assigner=None, loss=None):
        super().__init__()
        if len(min_sizes) != len(strides):
            raise ValueError(f"RetinaHead: one min_sizes list per stride is needed; got "
                             f"{len(min_sizes)} for strides {list(strides)}")
        self.strides = tuple(strides)
        self.min_sizes = [list(m) for m in min_sizes]
        self.variances = tuple(variances)
        # Attribute names are the official ones, so checkpoints map by prefix.
        self.ClassHead = nn.LayerList([AnchorConv(in_channels, len(m), 2) for m in self.min_sizes])
        self.BboxHead = nn.LayerList([AnchorConv(in_channels, len(m), 4) for m in self.min_sizes])
        self.LandmarkHead = nn.LayerList([AnchorConv(in_channels, len(m), 2 * NUM_LANDMARKS)
                                          for m in self.min_sizes])
        self.assigner = ASSIGNERS.build(assigner or {"type": "MaxIoUAssigner"}, "model.head.assigner")
        self.loss_fn = LOSSES.build(loss or {"type": "MultiBoxLoss"}, "model.head.loss")

    def forward(self, feats):
        raw = RawOutputs.for_features(feats)
        for level, (stride, feat) in enumerate(zip(self.strides, feats)):
            raw[f"cls_{stride}"] = self.ClassHead[level](feat)
            raw[f"box_{stride}"] = self.BboxHead[level](feat)
            raw[f"kps_{stride}"] = self.LandmarkHead[level](feat)
        return raw

    def priors(self, raw):
        """All priors [M,4] (cx, cy, w, h) in input pixels for the feature sizes of ``raw``."""
        return np.concatenate([retina_priors(h, w, stride, sizes) for (h, w), stride, sizes
                               in zip(feature_sizes_of(raw, "RetinaHead"), self.strides, self.min_sizes)])

    def _concat(self, raw, kind):
        return paddle.concat([raw[f"{kind}_{s}"] for s in self.strides], axis=1)

    def decode(self, raw):
        priors = paddle.to_tensor(self.priors(raw))
        boxes = decode_boxes(self._concat(raw, "box"), priors, self.variances)
        landmarks = decode_landmarks(self._concat(raw, "kps"), priors, self.variances)
        scores = F.softmax(self._concat(raw, "cls"), axis=-1)[..., 1]
        return boxes, scores, landmarks

    def deploy_outputs(self, raw):
        return [("loc", self._concat(raw, "box")),
                ("conf", F.softmax(self._concat(raw, "cls"), axis=-1)),
                ("landms", self._concat(raw, "kps"))]

    def deploy_config(self):
        return {"kind": "retina", "strides": list(self.strides), "min_sizes": self.min_sizes,
                "variances": list(self.variances), "score_activation": "none"}

    def targets(self, priors, gt_boxes, gt_landmarks, landmark_valid):
        """Training targets of one image (numpy): labels [M], encoded boxes
        [M,4] and landmarks [M,10] (zero where unused), landmark mask [M]."""
        matched = self.assigner.assign(priors_to_boxes(priors), gt_boxes)
        positive = matched >= 0
        faces = matched[positive]
        boxes = np.zeros((len(priors), 4), np.float32)
        boxes[positive] = encode_boxes(gt_boxes[faces], priors[positive], self.variances)
        landmark_mask = positive.copy()
        landmark_mask[positive] = np.asarray(landmark_valid, bool)[faces]
        landmarks = np.zeros((len(priors), 2 * NUM_LANDMARKS), np.float32)
        landmarks[landmark_mask] = encode_landmarks(
            np.asarray(gt_landmarks, np.float32).reshape(-1, NUM_LANDMARKS, 2)[matched[landmark_mask]],
            priors[landmark_mask], self.variances)
        return {"labels": positive.astype(np.int64), "boxes": boxes, "landmarks": landmarks,
                "landmark_mask": landmark_mask}

    def loss(self, raw, batch):
        priors = self.priors(raw)
        per_image = [self.targets(priors, np.asarray(boxes, np.float32).reshape(-1, 4), landmarks, valid)
                     for boxes, landmarks, valid in zip(batch["gt_boxes"], batch["gt_landmarks"],
                                                        batch["landmark_valid"])]
        targets = {key: np.stack([t[key] for t in per_image]) for key in per_image[0]}
        return self.loss_fn(self._concat(raw, "cls"), self._concat(raw, "box"), self._concat(raw, "kps"), targets)
