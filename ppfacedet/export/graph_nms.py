"""Decode + NMS inside the exported graph (``export_model.py --with_nms``).

Inputs: ``image`` [N,3,H,W] and ``scale_factor`` [N,2] (sx, sy), original
to network-input pixels, as PaddleDetection's exports take it: the official
"+1 pixel" NMS counts one *original* pixel, which is ``scale`` network pixels.
The graph returns, in network-input pixels:
  dets    [K, 16] float32: image index in the batch, score, x1, y1, x2, y2,
          then five landmarks (x, y) (zeros for a model without landmarks),
          each image's rows by decreasing score;
  counts  [N] int32: how many rows belong to each image.
The predictor divides by the input scale. Selection is the library's
(``postprocess/select.py``): score > threshold, the best ``pre_nms_top_k``,
greedy NMS (``nms_box_offset`` 1 = the "+1 pixel" IoU), then
``max_per_image``; here it is Paddle's ``multiclass_nms3`` with one class.

The decoders work from the deploy tensors and ``deploy_config()`` (the same
contract as deploy/python/decode.py), with grid sizes taken from the feature
maps at run time (``RawOutputs.feat_sizes`` are shape tensors while tracing),
so the graph keeps a dynamic batch, height and width.
"""
import paddle
import paddle.nn as nn

from ..api import TEST_DEFAULTS
from ..core.config import read_section
from ..core.errors import PPFaceDetError
from .legacy_ops import multiclass_nms3

OUTPUT_NAMES = ["dets", "counts"]
NUM_LANDMARK_COORDS = 10


def grid_points(height, width, stride, offset, num_anchors):
    """[H*W*A, 2] (x, y) in input pixels, rows (y, x, anchor); height / width may be shape tensors."""
    xs = (paddle.arange(width, dtype="float32") + offset) * stride
    ys = (paddle.arange(height, dtype="float32") + offset) * stride
    grid_x = ys.unsqueeze(1) * 0 + xs.unsqueeze(0)
    grid_y = ys.unsqueeze(1) + xs.unsqueeze(0) * 0
    points = paddle.stack([grid_x, grid_y], axis=-1).reshape([-1, 1, 2])
    # Broadcasting against zeros repeats each point per anchor without
    # repeat_interleave, which paddle2onnx converts wrongly.
    return (points + paddle.zeros([1, num_anchors, 1], "float32")).reshape([-1, 2])


def decode_retina(outputs, cfg, feat_sizes):
    centres, sides = [], []
    for (h, w), stride, sizes in zip(feat_sizes, cfg["strides"], cfg["min_sizes"]):
        points = grid_points(h, w, stride, 0.5, len(sizes))
        centres.append(points)
        per_location = points[:, :1].reshape([-1, len(sizes)]) * 0 + paddle.to_tensor(sizes, "float32")
        sides.append(per_location.reshape([-1, 1]))
    centres, sides = paddle.concat(centres), paddle.concat(sides)
    v0, v1 = cfg["variances"]
    loc = outputs["loc"]
    centre = centres + loc[..., :2] * v0 * sides
    size = sides * paddle.exp(loc[..., 2:] * v1)
    boxes = paddle.concat([centre - size / 2, centre + size / 2], axis=-1)
    landmarks = paddle.tile(centres, [1, 5]) + outputs["landms"] * (sides * v0)
    return boxes, outputs["conf"][..., 1], landmarks


def decode_distance(outputs, cfg, feat_sizes):
    boxes, scores, landmarks = [], [], []
    for (h, w), stride in zip(feat_sizes, cfg["strides"]):
        points = grid_points(h, w, stride, cfg.get("offset", 0.0), cfg["num_anchors"])
        d = outputs[f"bbox_{stride}"] * stride
        x, y = points[:, 0:1], points[:, 1:2]
        boxes.append(paddle.concat([x - d[..., 0:1], y - d[..., 1:2], x + d[..., 2:3], y + d[..., 3:4]], axis=-1))
        scores.append(outputs[f"score_{stride}"][..., 0])
        if cfg.get("has_kps"):
            landmarks.append(outputs[f"kps_{stride}"] * stride + paddle.tile(points, [1, 5]))
    return (paddle.concat(boxes, axis=1), paddle.concat(scores, axis=1),
            paddle.concat(landmarks, axis=1) if landmarks else None)


def decode_yunet(outputs, cfg, feat_sizes):
    names = cfg["outputs"]
    points, strides = [], []
    for (h, w), stride in zip(feat_sizes, cfg["strides"]):
        level = grid_points(h, w, stride, cfg.get("offset", 0.0), 1)
        points.append(level)
        strides.append(level[:, :1] * 0 + stride)
    points, strides = paddle.concat(points), paddle.concat(strides)

    def cat(kind):
        return paddle.concat([outputs[name] for name in names[kind]], axis=1)

    deltas = cat("box")
    centre = points + deltas[..., :2] * strides
    half = paddle.exp(deltas[..., 2:]) * strides / 2
    boxes = paddle.concat([centre - half, centre + half], axis=-1)
    scores = (cat("cls") * cat("obj"))[..., 0]
    if cfg.get("score_fusion", "product") == "sqrt":
        scores = paddle.sqrt(scores)
    k = cfg.get("num_keypoints", 5)
    landmarks = cat("kps") * paddle.tile(strides, [1, 2 * k]) + paddle.tile(points, [1, k])
    return boxes, scores, landmarks


DECODERS = {"retina": decode_retina, "distance": decode_distance, "yunet": decode_yunet}


class NMSGraph(nn.Layer):
    """image -> (dets [K, 16], counts [N]) for export."""

    output_names = OUTPUT_NAMES

    def __init__(self, model, cfg):
        super().__init__()
        self.model = model
        self.decode_cfg = model.deploy_config()
        kind = self.decode_cfg.get("kind")
        if kind not in DECODERS:
            raise PPFaceDetError(f"--with_nms: no in-graph decoder for decode kind '{kind}' "
                                 f"(known: {', '.join(DECODERS)}); export without --with_nms")
        self.decoder = DECODERS[kind]
        self.test_cfg = read_section(cfg, "test", TEST_DEFAULTS)

    def forward(self, image, scale_factor):
        raw = self.model(image)
        outputs = dict(self.model.deploy_outputs(raw))
        boxes, scores, landmarks = self.decoder(outputs, self.decode_cfg, raw.feat_sizes)
        t = self.test_cfg
        # Grow each box by nms_box_offset original pixels at the bottom right,
        # then a plain-IoU NMS; the kept rows are read back from the ungrown boxes.
        growth = paddle.concat([paddle.zeros_like(scale_factor), scale_factor], axis=1)
        grown = boxes + float(t["nms_box_offset"]) * growth.unsqueeze(1)
        _, index, counts = multiclass_nms3(
            grown, scores.unsqueeze(1), float(t["score_threshold"]), int(t["pre_nms_top_k"]),
            int(t["max_per_image"]), float(t["nms_threshold"]), True)
        # Every anchor's output row is laid out first and the kept rows are then
        # gathered in one step: concatenating the kept parts instead crashes
        # oneDNN's concat when no face is kept (K = 0).
        image_index = paddle.zeros_like(scores) + paddle.arange(paddle.shape(scores)[0], dtype="float32").unsqueeze(1)
        if landmarks is None:
            landmarks = paddle.zeros_like(scores).unsqueeze(-1).tile([1, 1, NUM_LANDMARK_COORDS])
        rows = paddle.concat([image_index.unsqueeze(-1), scores.unsqueeze(-1), boxes, landmarks], axis=-1)
        dets = paddle.gather(rows.reshape([-1, 6 + NUM_LANDMARK_COORDS]), index.reshape([-1]))
        return dets, counts
