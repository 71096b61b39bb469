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
    VGA photo about a hundred of SCRFD's 16,800 rows at 0.5).

    Speed: the deploy path runs right after the network, which has pushed
    Python's and numpy's working set out of the caches, so every numpy call
    there costs 3-5x its warm time. Each stride is thresholded on its own
    (no concatenation of all scores, no mapping rows back to strides), and
    the anchor table holds each row's terms ready to combine."""

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
        return KINDS[self.kind].candidates(self.decode_cfg, outputs, self.anchors(input_hw), index, score_threshold)

    def __call__(self, outputs, input_hw):
        decoded = [self.candidates(outputs, input_hw, index, -np.inf)
                   for index in range(len(next(iter(outputs.values()))))]
        boxes, scores, landmarks = zip(*decoded)
        return np.stack(boxes), np.stack(scores), None if landmarks[0] is None else np.stack(landmarks)


def _check_rows(name, array, expected):
    if array.shape[1] != expected:
        raise ValueError(f"output {name} has {array.shape[1]} rows; the grid of the input predicts {expected}. "
                         "Was infer_cfg.yml written for this model?")


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
    def candidates(cfg, outputs, priors, index, threshold):
        _check_rows("loc", outputs["loc"], len(priors))
        scores = outputs["conf"][index, :, 1]
        rows = np.flatnonzero(scores > threshold)
        priors, loc, landms = priors[rows], outputs["loc"][index, rows], outputs["landms"][index, rows]
        v0, v1 = (np.float32(v) for v in cfg["variances"])
        centres = priors[:, :2] + loc[:, :2] * v0 * priors[:, 2:]
        sizes = priors[:, 2:] * np.exp(loc[:, 2:] * v1)
        boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=-1)
        return boxes, scores[rows], np.tile(priors[:, :2], 5) + landms * (np.tile(priors[:, 2:], 5) * v0)


def point_anchors(decoder, input_hw, num_anchors):
    """Anchor points of every stride, concatenated, as a table [M, 8]: (x, y,
    x, y) and (-s, -s, s, s), so that distances (l, t, r, b) in stride units
    decode as ``table[:, :4] + d * table[:, 4:]`` (the same float operations as
    x - l s, y - t s, x + r s, y + b s); and each stride's first row."""
    cfg, tables, starts = decoder.decode_cfg, [], [0]
    for stride in cfg["strides"]:
        h, w = decoder.grid(input_hw, stride)
        points = grid_points(h, w, stride, cfg.get("offset", 0.0), num_anchors)
        signed = np.array([-stride, -stride, stride, stride], np.float32)
        tables.append(np.concatenate([points, points, np.broadcast_to(signed, (len(points), 4))], axis=1))
        starts.append(starts[-1] + len(points))
    return np.concatenate(tables), starts


def _passing(anchors, threshold, stride_scores):
    """Rows above ``threshold``, per stride that has any (the last stride,
    with none, when no stride has): (stride position, its rows, their global
    rows, their scores). ``stride_scores(i, rows)``: stride i's scores [rows]."""
    table, starts = anchors
    passing = []
    for i, (start, end) in enumerate(zip(starts, starts[1:])):
        scores = stride_scores(i, end - start)
        rows = np.flatnonzero(scores > threshold)
        if len(rows) or (not passing and end == len(table)):
            passing.append((i, rows, rows + start, scores[rows]))
    return passing


def _gathered(passing, arrays, index):
    """Image ``index``'s passing rows of per-stride arrays [N, M_s, C], concatenated."""
    return np.concatenate([arrays[i][index, rows] for i, rows, _, _ in passing])


def _anchor_rows(passing, table):
    """The passing rows' anchor table rows: (x, y) [k,2] and stride [k,1] views, and the rows."""
    rows = table[np.concatenate([g for _, _, g, _ in passing])]
    return rows[:, :2], rows[:, 6:7], rows


def _landmarks(offsets, points, strides):
    """Offsets [k, 2K] in stride units around the points -> input pixels (x s + px, y s + py per point)."""
    pairs = (offsets * strides).reshape(len(offsets), offsets.shape[1] // 2, 2)
    return (pairs + points[:, None]).reshape(offsets.shape)


class Distance:
    """Per stride ``score_s``, ``bbox_s`` (l, t, r, b) and ``kps_s`` in stride units around (x s, y s)."""

    @staticmethod
    def anchors(decoder, input_hw):
        return point_anchors(decoder, input_hw, decoder.decode_cfg["num_anchors"])

    @staticmethod
    def candidates(cfg, outputs, anchors, index, threshold):
        strides = cfg["strides"]

        def stride_scores(i, rows):
            name = f"score_{strides[i]}"
            _check_rows(name, outputs[name], rows)
            return outputs[name][index, :, 0]

        passing = _passing(anchors, threshold, stride_scores)
        points, stride, table = _anchor_rows(passing, anchors[0])
        boxes = table[:, :4] + _gathered(passing, [outputs[f"bbox_{s}"] for s in strides], index) * table[:, 4:]
        landmarks = None
        if cfg.get("has_kps"):
            landmarks = _landmarks(_gathered(passing, [outputs[f"kps_{s}"] for s in strides], index), points, stride)
        return boxes, np.concatenate([s for _, _, _, s in passing]), landmarks


class YuNet:
    """Per stride ``cls_s``, ``obj_s`` (sigmoid), ``bbox_s`` (dx, dy, log w, log h) and ``kps_s``."""

    @staticmethod
    def anchors(decoder, input_hw):
        return point_anchors(decoder, input_hw, 1)

    @staticmethod
    def candidates(cfg, outputs, anchors, index, threshold):
        names, sqrt = cfg["outputs"], cfg.get("score_fusion", "product") == "sqrt"

        def stride_scores(i, rows):
            _check_rows(names["cls"][i], outputs[names["cls"][i]], rows)
            scores = outputs[names["cls"][i]][index, :, 0] * outputs[names["obj"][i]][index, :, 0]
            return np.sqrt(scores) if sqrt else scores

        passing = _passing(anchors, threshold, stride_scores)
        points, strides, _ = _anchor_rows(passing, anchors[0])
        deltas = _gathered(passing, [outputs[n] for n in names["box"]], index)
        centres = points + deltas[:, :2] * strides
        half = np.exp(deltas[:, 2:]) * strides / 2
        boxes = np.concatenate([centres - half, centres + half], axis=-1)
        kps = _gathered(passing, [outputs[n] for n in names["kps"]], index)
        return boxes, np.concatenate([s for _, _, _, s in passing]), _landmarks(kps, points, strides)


KINDS = {"retina": Retina, "distance": Distance, "yunet": YuNet}


# ---------------------------------------------------------------------- selection
def nms(boxes, scores, iou_threshold):
    """Indices kept by greedy NMS, highest score first (IoU > threshold suppresses).

    OpenCV's NMSBoxes runs the same greedy loop in C++ (about 30x numpy's at a
    few hundred kept boxes). It gets the boxes sorted, each with its rank
    rather than its score, so ties keep the stable order and no score falls to
    its score threshold. Boxes and ranks go in as lists: OpenCV's binding reads
    a numpy array element by element, several times slower than the NMS
    itself at a VGA photo's hundred boxes. Its rectangles treat a negative
    width or height unlike the corner formula, so boxes with one (random
    weights decode such) take the numpy loop."""
    order = np.argsort(-scores, kind="stable")
    xywh = boxes[order]
    xywh[:, 2:] -= xywh[:, :2]
    if len(order) and xywh[:, 2:].min() > 0:
        kept = cv2.dnn.NMSBoxes(xywh.tolist(), list(range(len(order), 0, -1)), 0.0, float(iou_threshold))
        return order[np.asarray(kept, np.int64).reshape(-1)]
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
    keep = np.flatnonzero(scores > score_threshold)
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
    out = {"boxes": (boxes.reshape(-1, 4) / np.array([sx, sy, sx, sy], np.float32)).astype(np.float32, copy=False),
           "scores": scores.reshape(-1).astype(np.float32, copy=False), "landmarks": None}
    if landmarks is not None:
        out["landmarks"] = (landmarks.reshape(-1, 5, 2) / np.array([sx, sy], np.float32)).astype(np.float32,
                                                                                                 copy=False)
    return out
