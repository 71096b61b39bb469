"""Numpy decoders for the exported graphs' outputs and the detection selection.

Everything comes from ``infer_cfg.yml``: ``decode`` (kind and parameters),
``feature_sizes`` (how each stride's grid follows from the input size) and
``test`` (thresholds). The three kinds mirror the heads of ppfacedet:

  retina    concatenated ``loc`` [N,M,4] (SSD deltas), ``conf`` [N,M,2]
            (softmax), ``landms`` [N,M,10] against square priors centred at
            ((x + 0.5) s, (y + 0.5) s) with sides ``min_sizes``;
  distance  per stride ``score_s`` [N,HWA,1] (sigmoid), ``bbox_s`` [N,HWA,4]
            (left, top, right, bottom in stride units), ``kps_s`` [N,HWA,10]
            (offsets in stride units) around (x s, y s) (SCRFD, DamoFD);
  yunet     per stride ``cls_s``, ``obj_s`` (sigmoid), ``bbox_s`` (dx, dy,
            log w, log h in stride units), ``kps_s`` around (x s, y s).

Rows are ordered (y, x, anchor). All decoded values are network-input pixels.
"""
import numpy as np


def feature_size(size, stride, offset):
    """Grid cells along one axis: ``(size + offset) // stride`` (see export/infer_cfg.py)."""
    return (size + offset) // stride


def grid_points(height, width, stride, offset=0.0, num_anchors=1):
    """[H*W*A, 2] (x, y) centres in input pixels, rows (y, x, anchor)."""
    ys, xs = np.meshgrid(np.arange(height, dtype=np.float32), np.arange(width, dtype=np.float32), indexing="ij")
    points = np.stack([(xs + offset) * stride, (ys + offset) * stride], axis=-1).reshape(-1, 2)
    return np.repeat(points, num_anchors, axis=0)


class Decoder:
    """outputs (name -> array) of one batch + input (H, W) -> boxes [N,M,4],
    scores [N,M], landmarks [N,M,10] or None."""

    def __init__(self, settings):
        self.decode_cfg = settings["decode"]
        self.kind = self.decode_cfg["kind"]
        if self.kind not in KINDS:
            raise ValueError(f"infer_cfg.yml decode.kind '{self.kind}' is not one of {', '.join(KINDS)}")
        sizes = settings.get("feature_sizes") or {}
        self.size_offsets = {int(s): int(o) for s, o in (sizes.get("offsets") or {}).items()}

    def grid(self, input_hw, stride):
        offset = self.size_offsets.get(stride, stride - 1)
        return feature_size(input_hw[0], stride, offset), feature_size(input_hw[1], stride, offset)

    def __call__(self, outputs, input_hw):
        return KINDS[self.kind](self, outputs, input_hw)


def _check_rows(name, array, expected):
    if array.shape[1] != expected:
        raise ValueError(f"output {name} has {array.shape[1]} rows; the grid of the input predicts {expected}. "
                         "Was infer_cfg.yml written for this model?")


def decode_retina(decoder, outputs, input_hw):
    cfg = decoder.decode_cfg
    priors = []
    for stride, sizes in zip(cfg["strides"], cfg["min_sizes"]):
        h, w = decoder.grid(input_hw, stride)
        centres = grid_points(h, w, stride, 0.5, len(sizes))
        sides = np.tile(np.asarray(sizes, np.float32), h * w)[:, None].repeat(2, axis=1)
        priors.append(np.concatenate([centres, sides], axis=1))
    priors = np.concatenate(priors)
    loc, conf, landms = outputs["loc"], outputs["conf"], outputs["landms"]
    _check_rows("loc", loc, len(priors))
    v0, v1 = (np.float32(v) for v in cfg["variances"])
    centres = priors[:, :2] + loc[..., :2] * v0 * priors[:, 2:]
    sizes = priors[:, 2:] * np.exp(loc[..., 2:] * v1)
    boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=-1)
    landmarks = np.tile(priors[:, :2], 5) + landms * (np.tile(priors[:, 2:], 5) * v0)
    return boxes, conf[..., 1], landmarks


def decode_distance(decoder, outputs, input_hw):
    cfg = decoder.decode_cfg
    boxes, scores, landmarks = [], [], []
    for stride in cfg["strides"]:
        h, w = decoder.grid(input_hw, stride)
        points = grid_points(h, w, stride, cfg.get("offset", 0.0), cfg["num_anchors"])
        _check_rows(f"score_{stride}", outputs[f"score_{stride}"], len(points))
        d = outputs[f"bbox_{stride}"] * np.float32(stride)
        x, y = points[:, 0], points[:, 1]
        boxes.append(np.stack([x - d[..., 0], y - d[..., 1], x + d[..., 2], y + d[..., 3]], axis=-1))
        scores.append(outputs[f"score_{stride}"][..., 0])
        if cfg.get("has_kps"):
            offsets = outputs[f"kps_{stride}"] * np.float32(stride)
            landmarks.append(offsets + np.tile(points, offsets.shape[-1] // 2))
    return (np.concatenate(boxes, axis=1), np.concatenate(scores, axis=1),
            np.concatenate(landmarks, axis=1) if landmarks else None)


def decode_yunet(decoder, outputs, input_hw):
    cfg = decoder.decode_cfg
    names = cfg["outputs"]
    points, strides = [], []
    for stride, cls_name in zip(cfg["strides"], names["cls"]):
        h, w = decoder.grid(input_hw, stride)
        _check_rows(cls_name, outputs[cls_name], h * w)
        points.append(grid_points(h, w, stride, cfg.get("offset", 0.0)))
        strides.append(np.full((h * w, 1), stride, np.float32))
    points, strides = np.concatenate(points), np.concatenate(strides)

    def cat(kind):
        return np.concatenate([outputs[name] for name in names[kind]], axis=1)

    deltas = cat("box")
    centres = points + deltas[..., :2] * strides
    half = np.exp(deltas[..., 2:]) * strides / 2
    boxes = np.concatenate([centres - half, centres + half], axis=-1)
    scores = (cat("cls") * cat("obj"))[..., 0]
    if cfg.get("score_fusion", "product") == "sqrt":
        scores = np.sqrt(scores)
    k = cfg.get("num_keypoints", 5)
    landmarks = cat("kps") * np.tile(strides, 2 * k) + np.tile(points, k)
    return boxes, scores, landmarks


KINDS = {"retina": decode_retina, "distance": decode_distance, "yunet": decode_yunet}


# ---------------------------------------------------------------------- selection
def nms(boxes, scores, iou_threshold):
    """Indices kept by greedy NMS, highest score first (IoU > threshold suppresses)."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, np.int64)


def select(boxes, scores, landmarks, scale, score_threshold=0.02, nms_threshold=0.4, pre_nms_top_k=5000,
           max_per_image=750, nms_box_offset=0.0):
    """One image: threshold, top-k, NMS, undo the input scale (ppfacedet/postprocess/select.py).
    ``nms_box_offset`` is in original pixels (the official "+1 pixel" NMS);
    caps <= 0 mean none.

    boxes [M,4], scores [M], landmarks [M,10] or None in network-input pixels;
    scale (sx, sy) from original to network-input pixels. -> dict of numpy
    ``boxes`` [k,4], ``scores`` [k], ``landmarks`` [k,5,2] or None in original pixels.
    """
    keep = np.nonzero(scores > score_threshold)[0]
    if 0 < pre_nms_top_k < len(keep):
        keep = keep[np.argsort(-scores[keep], kind="stable")[:pre_nms_top_k]]
    if len(keep):
        sx, sy = scale
        grown = boxes[keep] + np.asarray([0, 0, nms_box_offset * sx, nms_box_offset * sy], np.float32)
        kept = nms(grown, scores[keep], nms_threshold)
        keep = keep[kept[:max_per_image] if max_per_image > 0 else kept]
    return to_original_pixels(boxes[keep], scores[keep], None if landmarks is None else landmarks[keep], scale)


def to_original_pixels(boxes, scores, landmarks, scale):
    sx, sy = scale
    out = {"boxes": (boxes.reshape(-1, 4) / np.array([sx, sy, sx, sy], np.float32)).astype(np.float32),
           "scores": scores.reshape(-1).astype(np.float32), "landmarks": None}
    if landmarks is not None:
        out["landmarks"] = (landmarks.reshape(-1, 5, 2) / np.array([sx, sy], np.float32)).astype(np.float32)
    return out
