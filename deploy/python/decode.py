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
import cv2
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
    scores [N,M], landmarks [N,M,10] or None; ``candidates`` decodes only the
    rows of one image that pass the score threshold (the deploy path: on a
    VGA photo a few hundred of SCRFD's 16,800 rows at 0.02)."""

    def __init__(self, settings):
        self.decode_cfg = settings["decode"]
        self.kind = self.decode_cfg["kind"]
        if self.kind not in KINDS:
            raise ValueError(f"infer_cfg.yml decode.kind '{self.kind}' is not one of {', '.join(KINDS)}")
        sizes = settings.get("feature_sizes") or {}
        self.size_offsets = {int(s): int(o) for s, o in (sizes.get("offsets") or {}).items()}
        self.anchor_cache = {}

    def grid(self, input_hw, stride):
        offset = self.size_offsets.get(stride, stride - 1)
        return feature_size(input_hw[0], stride, offset), feature_size(input_hw[1], stride, offset)

    def anchors(self, input_hw):
        """The kind's anchor table for an input size (kept for the last few sizes: a video repeats one)."""
        key = tuple(input_hw)
        if key not in self.anchor_cache:
            if len(self.anchor_cache) >= 8:
                self.anchor_cache.pop(next(iter(self.anchor_cache)))
            self.anchor_cache[key] = KINDS[self.kind].anchors(self, key)
        return self.anchor_cache[key]

    def candidates(self, outputs, input_hw, index, score_threshold):
        """Image ``index``: (boxes [k,4], scores [k], landmarks [k,10] or None) of
        the rows scoring above ``score_threshold``, in row order."""
        kind, anchors = KINDS[self.kind], self.anchors(input_hw)
        scores = kind.scores(self.decode_cfg, outputs, anchors, index)
        rows = np.nonzero(scores > score_threshold)[0]
        boxes, landmarks = kind.rows(self.decode_cfg, outputs, anchors, index, rows)
        return boxes, scores[rows], landmarks

    def __call__(self, outputs, input_hw):
        kind, anchors = KINDS[self.kind], self.anchors(input_hw)
        decoded = []
        for index in range(len(next(iter(outputs.values())))):
            scores = kind.scores(self.decode_cfg, outputs, anchors, index)
            decoded.append((*kind.rows(self.decode_cfg, outputs, anchors, index, np.arange(len(scores))), scores))
        boxes, landmarks, scores = zip(*decoded)
        return np.stack(boxes), np.stack(scores), None if landmarks[0] is None else np.stack(landmarks)


def _check_rows(name, array, expected):
    if array.shape[1] != expected:
        raise ValueError(f"output {name} has {array.shape[1]} rows; the grid of the input predicts {expected}. "
                         "Was infer_cfg.yml written for this model?")


def _stride_rows(rows, starts):
    """Rows counted over the concatenation of the strides (ascending) -> each stride's own row numbers."""
    bounds = np.searchsorted(rows, starts[1:]).tolist()
    return [rows[lo:hi] - start for lo, hi, start in zip([0] + bounds, bounds + [len(rows)], starts.tolist())]


def _gather(arrays, index, parts):
    """Image ``index``'s rows ``parts`` (from ``_stride_rows``) of per-stride arrays [N, M_s, C], concatenated."""
    return np.concatenate([array[index, part] for array, part in zip(arrays, parts)])


class Retina:
    """Concatenated ``loc`` / ``conf`` / ``landms`` against square priors (cx, cy, side, side)."""

    @staticmethod
    def anchors(decoder, input_hw):
        cfg, priors = decoder.decode_cfg, []
        for stride, sizes in zip(cfg["strides"], cfg["min_sizes"]):
            h, w = decoder.grid(input_hw, stride)
            centres = grid_points(h, w, stride, 0.5, len(sizes))
            sides = np.tile(np.asarray(sizes, np.float32), h * w)[:, None].repeat(2, axis=1)
            priors.append(np.concatenate([centres, sides], axis=1))
        return np.concatenate(priors)

    @staticmethod
    def scores(cfg, outputs, priors, index):
        _check_rows("loc", outputs["loc"], len(priors))
        return outputs["conf"][index, :, 1]

    @staticmethod
    def rows(cfg, outputs, priors, index, rows):
        priors, loc, landms = priors[rows], outputs["loc"][index, rows], outputs["landms"][index, rows]
        v0, v1 = (np.float32(v) for v in cfg["variances"])
        centres = priors[:, :2] + loc[:, :2] * v0 * priors[:, 2:]
        sizes = priors[:, 2:] * np.exp(loc[:, 2:] * v1)
        boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=-1)
        return boxes, np.tile(priors[:, :2], 5) + landms * (np.tile(priors[:, 2:], 5) * v0)


def point_anchors(decoder, input_hw, num_anchors):
    """Anchor points of every stride, concatenated: (points [M,2], each row's stride [M,1], each stride's first row)."""
    cfg, points, strides, starts = decoder.decode_cfg, [], [], [0]
    for stride in cfg["strides"]:
        h, w = decoder.grid(input_hw, stride)
        points.append(grid_points(h, w, stride, cfg.get("offset", 0.0), num_anchors))
        strides.append(np.full((len(points[-1]), 1), stride, np.float32))
        starts.append(starts[-1] + len(points[-1]))
    return np.concatenate(points), np.concatenate(strides), np.asarray(starts[:-1])


class Distance:
    """Per stride ``score_s``, ``bbox_s`` (l, t, r, b) and ``kps_s`` in stride units around (x s, y s)."""

    @staticmethod
    def anchors(decoder, input_hw):
        return point_anchors(decoder, input_hw, decoder.decode_cfg["num_anchors"])

    @staticmethod
    def scores(cfg, outputs, anchors, index):
        starts = list(anchors[2]) + [len(anchors[0])]
        for stride, start, end in zip(cfg["strides"], starts, starts[1:]):
            _check_rows(f"score_{stride}", outputs[f"score_{stride}"], end - start)
        return np.concatenate([outputs[f"score_{s}"][index, :, 0] for s in cfg["strides"]])

    @staticmethod
    def rows(cfg, outputs, anchors, index, rows):
        points, strides, parts = anchors[0][rows], anchors[1][rows], _stride_rows(rows, anchors[2])
        d = _gather([outputs[f"bbox_{s}"] for s in cfg["strides"]], index, parts) * strides
        boxes = np.concatenate([points - d[:, :2], points + d[:, 2:]], axis=1)
        if not cfg.get("has_kps"):
            return boxes, None
        offsets = _gather([outputs[f"kps_{s}"] for s in cfg["strides"]], index, parts) * strides
        return boxes, (offsets.reshape(len(rows), offsets.shape[1] // 2, 2) + points[:, None]).reshape(offsets.shape)


class YuNet:
    """Per stride ``cls_s``, ``obj_s`` (sigmoid), ``bbox_s`` (dx, dy, log w, log h) and ``kps_s``."""

    @staticmethod
    def anchors(decoder, input_hw):
        return point_anchors(decoder, input_hw, 1)

    @staticmethod
    def scores(cfg, outputs, anchors, index):
        names, starts = cfg["outputs"], list(anchors[2]) + [len(anchors[0])]
        for name, start, end in zip(names["cls"], starts, starts[1:]):
            _check_rows(name, outputs[name], end - start)
        scores = np.concatenate([outputs[c][index, :, 0] * outputs[o][index, :, 0]
                                 for c, o in zip(names["cls"], names["obj"])])
        return np.sqrt(scores) if cfg.get("score_fusion", "product") == "sqrt" else scores

    @staticmethod
    def rows(cfg, outputs, anchors, index, rows):
        names, points, strides = cfg["outputs"], anchors[0][rows], anchors[1][rows]
        parts = _stride_rows(rows, anchors[2])
        deltas = _gather([outputs[n] for n in names["box"]], index, parts)
        centres = points + deltas[:, :2] * strides
        half = np.exp(deltas[:, 2:]) * strides / 2
        boxes = np.concatenate([centres - half, centres + half], axis=-1)
        k = cfg.get("num_keypoints", 5)
        kps = _gather([outputs[n] for n in names["kps"]], index, parts)
        return boxes, kps * np.tile(strides, 2 * k) + np.tile(points, k)


KINDS = {"retina": Retina, "distance": Distance, "yunet": YuNet}


# ---------------------------------------------------------------------- selection
def nms(boxes, scores, iou_threshold):
    """Indices kept by greedy NMS, highest score first (IoU > threshold suppresses).

    OpenCV's NMSBoxes runs the same greedy loop in C++ (about 30x numpy's at a
    few hundred kept boxes). It is fed each box's rank rather than its score,
    so ties keep the stable order and no score falls to its score threshold.
    The boxes go in as a list: OpenCV's binding reads a float32 array element
    by element, several times slower than the NMS itself at a VGA photo's
    hundred boxes. Its rectangles treat a negative width or height unlike the
    corner formula, so boxes with one (random weights decode such) take the
    numpy loop."""
    order = np.argsort(-scores, kind="stable")
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    if (xywh[:, 2:] > 0).all():
        ranks = np.empty(len(order), np.float32)
        ranks[order] = np.arange(len(order), 0, -1, dtype=np.float32)
        return np.asarray(cv2.dnn.NMSBoxes(xywh.tolist(), ranks, 0.0, float(iou_threshold)), np.int64).reshape(-1)
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
