"""libfacedetection.train's YuNet test protocol in plain numpy, as the
reference the parity tests compare ppfacedet against: raw BGR pixels padded
bottom/right to a multiple of 32, the official ONNX, then
point (x*s, y*s); centre = point + d*s; size = exp(d)*s; score = cls*obj;
score threshold, greedy NMS."""
import numpy as np


def pad_to_32(image):
    """BGR uint8 [H,W,3] -> [1,3,H',W'] float32, H' and W' multiples of 32."""
    h, w = image.shape[:2]
    canvas = np.zeros((-(-h // 32) * 32, -(-w // 32) * 32, 3), np.uint8)
    canvas[:h, :w] = image
    return canvas.transpose(2, 0, 1)[None].astype(np.float32)


def official_detections(outputs, height, width, score_threshold, nms_threshold):
    """(boxes [k,4] xyxy, scores [k]) from the ONNX outputs {name: array} of a
    height x width input, highest score first."""
    boxes, scores = [], []
    for s in (8, 16, 32):
        ys, xs = np.mgrid[0:height // s, 0:width // s]
        px, py = xs.reshape(-1) * s, ys.reshape(-1) * s
        d = outputs[f"bbox_{s}"][0]
        cx, cy = px + d[:, 0] * s, py + d[:, 1] * s
        w, h = np.exp(d[:, 2]) * s, np.exp(d[:, 3]) * s
        boxes.append(np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1))
        scores.append((outputs[f"cls_{s}"] * outputs[f"obj_{s}"])[0, :, 0])
    boxes, scores = np.concatenate(boxes), np.concatenate(scores)
    keep = scores > score_threshold
    boxes, scores = boxes[keep], scores[keep]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    order, kept = np.argsort(-scores, kind="stable"), []
    while order.size:
        i, rest = order[0], order[1:]
        kept.append(i)
        lt = np.maximum(boxes[i, :2], boxes[rest, :2])
        rb = np.minimum(boxes[i, 2:], boxes[rest, 2:])
        inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
        order = rest[inter / (area[i] + area[rest] - inter) <= nms_threshold]
    return boxes[kept], scores[kept]


def run_official(session, image, score_threshold=0.02, nms_threshold=0.45):
    """The official protocol end to end on one BGR image with an onnxruntime session."""
    x = pad_to_32(image)
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(None, {session.get_inputs()[0].name: x})))
    return official_detections(outputs, x.shape[2], x.shape[3], score_threshold, nms_threshold)
