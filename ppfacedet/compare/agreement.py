"""Whether two runs of one detector found the same faces: each confident face
of either run must have a partner in the other with IoU >= ``min_iou`` and a
score within ``score_tolerance`` (tools/gpu_check.py checks GPU / TensorRT
runs against the CPU predictor with it).

A face scoring within ``score_tolerance`` of the threshold may be missing from
the other run: the allowed score change can move it across the threshold.
"""
import numpy as np
import paddle

from ..postprocess.boxes import pairwise_iou


# Far inside what min_iou tolerates for any face of a pixel or more.
SAME_BOX_PX = 0.01


def confident(det, threshold):
    keep = det["scores"] >= threshold
    return det["boxes"][keep], det["scores"][keep]


def unmatched(boxes, scores, other_boxes, other_scores, iou, score_tolerance, min_iou, threshold, label):
    """Problems for the faces of one run (rows of ``iou``) without a partner in the other."""
    problems = []
    for i in np.argsort(-scores):
        partners = np.nonzero(iou[i] >= min_iou)[0]
        if len(partners) and np.abs(other_scores[partners] - scores[i]).min() <= score_tolerance:
            continue
        if scores[i] < threshold + score_tolerance:  # may have crossed the threshold legitimately
            continue
        box = ", ".join(f"{v:.1f}" for v in boxes[i])
        if not len(iou[i]) or iou[i].max() < min_iou:
            best = f"best IoU {iou[i].max():.3f}" if len(iou[i]) else "no faces at all"
            problems.append(f"{label} face [{box}] score {scores[i]:.3f}: no partner with IoU >= {min_iou} ({best})")
        else:
            diff = np.abs(other_scores[partners] - scores[i]).min()
            problems.append(f"{label} face [{box}] score {scores[i]:.3f}: partner's score differs by {diff:.4f} "
                            f"> {score_tolerance}")
    return problems


def compare_detections(reference, candidate, score_tolerance, min_iou=0.95, threshold=0.5):
    """-> {'problems': [str], 'faces': n, 'max_score_diff', 'min_iou'} for one image's
    detections ({'boxes' [k,4], 'scores' [k], ...}) of two runs."""
    ref_boxes, ref_scores = confident(reference, threshold - score_tolerance)
    cand_boxes, cand_scores = confident(candidate, threshold - score_tolerance)
    if len(ref_boxes) and len(cand_boxes):
        iou = pairwise_iou(paddle.to_tensor(ref_boxes, "float32"), paddle.to_tensor(cand_boxes, "float32")).numpy()
        # Boxes within SAME_BOX_PX of each other are one face even when they
        # have no area (a collapsed box's IoU with itself is 0/0, computed as 0).
        same = np.abs(ref_boxes[:, None, :] - cand_boxes[None, :, :]).max(axis=2) <= SAME_BOX_PX
        iou = np.where(same, 1.0, iou).astype(np.float32)
    else:
        iou = np.zeros((len(ref_boxes), len(cand_boxes)), np.float32)
    problems = (unmatched(ref_boxes, ref_scores, cand_boxes, cand_scores, iou, score_tolerance, min_iou, threshold,
                          "reference")
                + unmatched(cand_boxes, cand_scores, ref_boxes, ref_scores, iou.T, score_tolerance, min_iou,
                            threshold, "candidate"))
    # Figures over the reference's confident faces and their best-overlapping partners.
    faces = np.nonzero(ref_scores >= threshold)[0]
    best = iou[faces].argmax(axis=1) if len(cand_boxes) else np.zeros(0, int)
    pairs = list(zip(faces[:len(best)], best))
    return {"problems": problems, "faces": len(faces),
            "max_score_diff": max((abs(float(ref_scores[i] - cand_scores[j])) for i, j in pairs), default=0.0),
            "min_iou": min((float(iou[i, j]) for i, j in pairs), default=1.0 if not len(faces) else 0.0)}


def compare_runs(reference, candidate, score_tolerance, min_iou=0.95, threshold=0.5):
    """Per-image ``compare_detections`` over a list of images, summed up; problems name the image index."""
    total = {"problems": [], "faces": 0, "max_score_diff": 0.0, "min_iou": 1.0}
    for index, (ref, cand) in enumerate(zip(reference, candidate)):
        result = compare_detections(ref, cand, score_tolerance, min_iou, threshold)
        total["problems"] += [f"image {index}: {p}" for p in result["problems"]]
        total["faces"] += result["faces"]
        total["max_score_diff"] = max(total["max_score_diff"], result["max_score_diff"])
        total["min_iou"] = min(total["min_iou"], result["min_iou"])
    if len(reference) != len(candidate):
        total["problems"].append(f"{len(reference)} reference images but {len(candidate)} candidate ones")
    return total
