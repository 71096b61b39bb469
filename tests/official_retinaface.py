"""The official Pytorch_Retinaface inference protocol in numpy, over its ONNX
export run by onnxruntime: the reference tools/infer.py must reproduce.

Protocol (detect.py / test_widerface.py, origin size): the image at its own
size, BGR minus (104, 117, 123); priors of cfg_mnet with centres at
(x + 0.5) * step; SSD decode with variances (0.1, 0.2); scores above 0.02;
the top 5000 by score; NMS 0.4 with the "+1 pixel" areas; at most 750 kept.
"""
import numpy as np
import onnxruntime as ort

MIN_SIZES = [[16, 32], [64, 128], [256, 512]]
STEPS = [8, 16, 32]
VARIANCES = (0.1, 0.2)


def priors(h, w):
    out = []
    for step, sizes in zip(STEPS, MIN_SIZES):
        fh, fw = int(np.ceil(h / step)), int(np.ceil(w / step))
        for i in range(fh):
            for j in range(fw):
                for s in sizes:
                    out.append([(j + 0.5) * step, (i + 0.5) * step, s, s])
    return np.asarray(out, np.float32)


def nms_plus_one(boxes, scores, thresh):
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        w = np.maximum(0, np.minimum(x2[i], x2[order[1:]]) - np.maximum(x1[i], x1[order[1:]]) + 1)
        h = np.maximum(0, np.minimum(y2[i], y2[order[1:]]) - np.maximum(y1[i], y1[order[1:]]) + 1)
        inter = w * h
        iou = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[1:][iou <= thresh]
    return np.asarray(keep, int)


def detect(onnx_path, image_bgr, score_threshold=0.02, nms_threshold=0.4, top_k=5000, keep_top_k=750):
    blob = (image_bgr.astype(np.float32) - np.array([104, 117, 123], np.float32)).transpose(2, 0, 1)[None]
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    loc, conf, landms = session.run(None, {session.get_inputs()[0].name: blob})
    pri = priors(*image_bgr.shape[:2])
    centres = pri[:, :2] + loc[0, :, :2] * VARIANCES[0] * pri[:, 2:]
    sizes = pri[:, 2:] * np.exp(loc[0, :, 2:] * VARIANCES[1])
    boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1)
    points = (pri[:, None, :2] + landms[0].reshape(-1, 5, 2) * VARIANCES[0] * pri[:, None, 2:])
    scores = conf[0, :, 1]
    idx = np.nonzero(scores > score_threshold)[0]
    idx = idx[np.argsort(-scores[idx], kind="stable")][:top_k]
    keep = idx[nms_plus_one(boxes[idx], scores[idx], nms_threshold)][:keep_top_k]
    return {"boxes": boxes[keep], "scores": scores[keep], "landmarks": points[keep]}
