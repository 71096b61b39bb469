"""Your own data: the simple ``val_label.txt`` format used by ModelScope.

Format::

    image_0001.jpg            # an image name line (a leading "# " is allowed)
    12 30 40 52               # then one "x y w h" line per face
    100 80 33 41
    subdir/image_0002.jpg     # an image with no line after it has no faces

Predictions use the standard per-image txt format (see ``predictions.py``),
keyed by the image name without extension.

Scoring is the WIDER protocol (score normalisation, +1 IoU, 1000 thresholds,
VOC AP) with every face kept (one setting, ``"all"``), except that images
without faces are scored too: their detections are false positives.  On top,
a table of recall and precision at chosen *raw* score thresholds.
"""
from pathlib import Path

import numpy as np

from .errors import EvaluationError
from .ground_truth import GroundTruth
from .metric import _check_iou, _outcomes, normalise_and_match, sweep

DEFAULT_TABLE_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def _numbers(parts):
    try:
        return [float(p) for p in parts]
    except ValueError:
        return None


def load_val_label(path):
    """Read ``val_label.txt`` into a :class:`GroundTruth` with setting ``"all"``."""
    path = Path(path)
    if not path.is_file():
        raise EvaluationError("label file not found: %s" % path)
    names, boxes = [], []
    with open(path, "r", encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            s = line.strip()
            if not s:
                continue
            parts = s.split()
            nums = None if s.startswith("#") else _numbers(parts)
            if nums is None or len(parts) == 1:
                names.append(s.lstrip("#").strip())
                boxes.append([])
                continue
            if len(nums) < 4:
                raise EvaluationError("%s:%d: expected 'x y w h', got %r" % (path, lineno, s))
            if not names:
                raise EvaluationError("%s:%d: a box line before any image name line" % (path, lineno))
            if not np.isfinite(nums[:4]).all() or nums[2] < 0 or nums[3] < 0:
                raise EvaluationError("%s:%d: invalid box %r" % (path, lineno, s))
            boxes[-1].append(nums[:4])
    if not names:
        raise EvaluationError("%s has no images" % path)
    return GroundTruth.from_lists(names, [np.array(b, dtype=np.float64).reshape(-1, 4) for b in boxes],
                                  keep=None)


def evaluate_custom(preds, gt, iou_thresh=0.5, thresholds=DEFAULT_TABLE_THRESHOLDS, progress=False):
    """AP and a recall/precision table for a single-setting ground truth.

    Returns ``{"ap": float, "pr": (precision, recall), "table": [(threshold,
    recall, precision, detections)], "missing": n, "extra": n, "iou": t}``.
    The table counts, per raw score threshold, the detections scoring at
    least that much (ignored ones excluded); precision is NaN when there are none.
    """
    iou_thresh = _check_iou(iou_thresh)
    if len(gt.settings) != 1:
        raise EvaluationError("evaluate_custom needs a single-setting ground truth, got %s"
                              % (gt.settings,))
    setting = gt.settings[0]
    m = normalise_and_match(preds, gt, progress, skip_empty_gt=False)
    keep = gt.keep_flat[setting]
    faces = gt.num_faces(setting)
    ap, prec, rec = sweep(m, keep, faces, iou_thresh)
    proposal, new_match = _outcomes(m, keep, iou_thresh)
    table = []
    for t in thresholds:
        sel = m.raw >= t
        n = int(proposal[sel].sum())
        tp = int(new_match[sel].sum())
        table.append((float(t), tp / faces if faces else float("nan"),
                      tp / n if n else float("nan"), n))
    return {"ap": ap, "pr": (prec, rec), "table": table, "missing": m.missing,
            "extra": m.extra, "iou": iou_thresh}


def format_pr_table(result):
    """The table of :func:`evaluate_custom` as text."""
    lines = ["threshold  recall  precision  detections"]
    for t, r, p, n in result["table"]:
        lines.append("%9.2f  %6.4f  %9.4f  %10d" % (t, r, p, n))
    return "\n".join(lines)
