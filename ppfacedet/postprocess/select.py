"""From decoded candidates to final detections in original-image pixels."""
import numpy as np
import paddle
from paddle.vision.ops import nms


def select_detections(boxes, scores, landmarks, metas, score_threshold=0.02, nms_threshold=0.4,
                      pre_nms_top_k=5000, max_per_image=750, nms_box_offset=0.0):
    """Per image: score threshold, top-k, NMS, then undo the input scaling.

    ``nms_box_offset`` = 1 reproduces the "+1 pixel" IoU of the official
    RetinaFace and SCRFD numpy NMS (areas (x2 - x1 + 1) * (y2 - y1 + 1)), which
    they apply in original-image pixels: that IoU equals the plain IoU of the
    boxes grown by one original pixel (``scale`` network pixels) at the bottom
    right. ``pre_nms_top_k`` / ``max_per_image`` <= 0 mean no cap (SCRFD's
    official protocol has none).

    boxes [N,M,4] xyxy, scores [N,M], landmarks [N,M,10] or None (network-input
    pixels); metas: one dict per image with ``scale`` = (sx, sy), the factors
    from original to network-input pixels. Returns one dict per image with
    numpy ``boxes`` [k,4], ``scores`` [k], ``landmarks`` [k,5,2] or None.
    """
    results = []
    for i, meta in enumerate(metas):
        keep = paddle.nonzero(scores[i] > score_threshold).flatten()
        b, s = paddle.gather(boxes[i], keep), paddle.gather(scores[i], keep)
        lm = paddle.gather(landmarks[i], keep) if landmarks is not None else None
        if 0 < pre_nms_top_k < s.shape[0]:
            top = paddle.topk(s, pre_nms_top_k).indices
            b, s = paddle.gather(b, top), paddle.gather(s, top)
            lm = paddle.gather(lm, top) if lm is not None else None
        if s.shape[0] > 0:
            sx, sy = meta["scale"]
            grown = b + paddle.to_tensor([0.0, 0.0, nms_box_offset * sx, nms_box_offset * sy])
            kept = nms(grown, nms_threshold, scores=s)
            kept = kept[:max_per_image] if max_per_image > 0 else kept
            b, s = paddle.gather(b, kept), paddle.gather(s, kept)
            lm = paddle.gather(lm, kept) if lm is not None else None
        results.append(to_original_pixels(b.numpy(), s.numpy(), None if lm is None else lm.numpy(), meta))
    return results


def to_original_pixels(boxes, scores, landmarks, meta):
    sx, sy = meta["scale"]
    boxes = (boxes.reshape(-1, 4) / np.array([sx, sy, sx, sy], np.float32)).astype(np.float32)
    out = {"boxes": boxes, "scores": scores.reshape(-1).astype(np.float32), "landmarks": None}
    if landmarks is not None:
        out["landmarks"] = (landmarks.reshape(-1, 5, 2) / np.array([sx, sy], np.float32)).astype(np.float32)
    return out
