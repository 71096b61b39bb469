"""A NumPy reference of SCRFD's official test protocol (insightface
``detection/scrfd/tools/scrfd.py``), independent of ppfacedet, so tests can
compare our pipeline with what the official release does end to end.

The protocol, as the official tool does it:
  * letterbox: keep the aspect ratio, the longer side becomes ``input_size``
    (the shorter one truncated with int()), paste at the top-left of a black
    square canvas; one scale factor ``new_height / height`` maps back;
  * blob: RGB, (x - 127.5) / 128, NCHW float32, run by onnxruntime;
  * decode: anchor centres at (x * stride, y * stride) (no half-pixel offset),
    one copy per anchor of a location; boxes = centre -/+ distances * stride
    (left, top, right, bottom); keypoints = centre + offsets * stride;
  * keep scores >= threshold, map back to the original pixels, then a greedy
    NMS whose areas count +1 pixel, on the original-pixel boxes.
"""
import cv2
import numpy as np

NUM_ANCHORS = 2
STRIDES = (8, 16, 32)


def letterbox(image, size):
    """BGR image -> (size x size canvas with the resized image at the top-left, scale)."""
    height, width = image.shape[:2]
    if height / width > 1.0:
        new_h, new_w = size, int(size / (height / width))
    else:
        new_w, new_h = size, int(size * (height / width))
    canvas = np.zeros((size, size, 3), np.uint8)
    canvas[:new_h, :new_w] = cv2.resize(image, (new_w, new_h))
    return canvas, new_h / height


def to_blob(canvas):
    rgb = canvas[:, :, ::-1].astype(np.float32)
    return ((rgb - 127.5) / 128.0).transpose(2, 0, 1)[None].copy()


def anchor_centres(height, width, stride):
    ys, xs = np.mgrid[:height, :width]
    centres = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32) * stride
    return np.repeat(centres, NUM_ANCHORS, axis=0)


def nms_plus_one(boxes, scores, threshold):
    """Indices kept by greedy NMS, highest score first; widths and heights
    count the end pixel (+1), as the official numpy NMS does."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        iw = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + 1)
        ih = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + 1)
        inter = iw * ih
        iou = inter / (areas[best] + areas[rest] - inter)
        order = rest[iou <= threshold]
    return np.asarray(keep, np.int64)


class OfficialSCRFD:
    """detect(BGR image) -> (boxes [k,4] xyxy, scores [k], landmarks [k,5,2] or
    None) in original-image pixels, sorted by score."""

    def __init__(self, onnx_path, input_size=640, score_threshold=0.02, nms_threshold=0.4, threads=None):
        import onnxruntime as ort
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        num_outputs = len(self.session.get_outputs())
        if num_outputs not in (6, 9):
            raise ValueError(f"{onnx_path}: {num_outputs} outputs; expected 6 (score, bbox) or 9 (+ kps) "
                             f"for strides {STRIDES}")
        self.use_kps = num_outputs == 9
        self.input_size = int(input_size)
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)

    def raw(self, image):
        """(outputs per stride as [HWA, C] arrays, scale, canvas size)."""
        canvas, scale = letterbox(image, self.input_size)
        outs = self.session.run(None, {self.input_name: to_blob(canvas)})
        # Exports with a batch axis give [1, HWA, C]; older ones [HWA, C].
        outs = [o[0] if o.ndim == 3 else o for o in outs]
        return outs, scale

    def detect(self, image):
        outs, scale = self.raw(image)
        levels = len(STRIDES)
        boxes, scores, landmarks = [], [], []
        for i, stride in enumerate(STRIDES):
            side = self.input_size // stride
            centres = anchor_centres(side, side, stride)
            score = outs[i].reshape(-1)
            keep = score >= self.score_threshold
            dist = outs[levels + i].reshape(-1, 4)[keep] * stride
            c = centres[keep]
            boxes.append(np.concatenate([c - dist[:, :2], c + dist[:, 2:]], axis=1))
            scores.append(score[keep])
            if self.use_kps:
                offsets = outs[2 * levels + i].reshape(-1, 5, 2)[keep] * stride
                landmarks.append(c[:, None, :] + offsets)
        boxes = np.concatenate(boxes) / scale
        scores = np.concatenate(scores)
        kept = nms_plus_one(boxes, scores, self.nms_threshold)
        lms = np.concatenate(landmarks)[kept] / scale if self.use_kps else None
        return boxes[kept].astype(np.float32), scores[kept].astype(np.float32), lms
