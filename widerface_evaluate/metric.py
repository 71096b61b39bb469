"""The WIDER FACE metric, vectorised.  Same numbers as the official protocol.

Protocol (MATLAB ``eval_tools`` and its Python port by wondervictor):

1. **Sorting.** Each image's predictions are put in descending score order
   (stable, so ties keep file order), as the MATLAB ``read_pred`` does.  The
   Python port relies on the files already being sorted, which detectors do.
2. **Score normalisation** over *all* predictions given (every image, also
   ones not in the ground truth): ``s' = (s - lo) / (hi - lo)`` with
   ``lo = min(1, min s)`` and ``hi = max(0, max s)``.  (Only deviation: if
   ``hi == lo``, where the reference divides by zero, every score becomes 1.)
3. **Overlaps**, +1 pixel convention: boxes are ``x, y, w, h`` and become
   ``x1 = x, x2 = x + w`` (not ``x + w - 1``); intersection
   ``min(x2) - max(x1) + 1`` per axis (zero unless both are > 0), areas
   ``(x2 - x1 + 1) * (y2 - y1 + 1)``, IoU ``inter / (area_p + area_g - inter)``.
   So a ``w x h`` box covers ``(w + 1) x (h + 1)`` pixels, in predictions and
   ground truth alike.
4. **Matching**, per prediction in score order: take the face of highest IoU
   (the first on ties).  If that IoU >= the threshold: an ignored face (not in
   the setting's keep list) makes the prediction ignored (neither true nor
   false positive); a kept face not yet matched becomes matched; a kept face
   already matched leaves the prediction a false positive.
   Images without ground-truth boxes or without predictions are skipped
   (their faces still count in the recall denominator).
5. **Threshold sweep**: for ``t = 1..1000``, threshold ``1 - t/1000`` on the
   normalised score; per image, the predictions up to the last one scoring
   >= threshold give a proposal count (non-ignored predictions) and a recall
   count (matched kept faces).  Summed over images: precision = recall
   count / proposals, recall = recall count / kept faces.
6. **AP**: VOC style (precision envelope, area under the recall steps).

Vectorisation: overlaps once per image, shared by all settings and IoU
thresholds; the best face and its IoU per prediction are all that matching
needs; "first match of a kept face" is ``np.unique(..., return_index=True)``
on the globally ordered predictions; the threshold sweep is a histogram of
each prediction's first passing threshold (``searchsorted``) followed by
``cumsum``.  The per-image prefix is exactly the set of predictions scoring
>= the threshold because scores are sorted inside each image.
"""
import numpy as np

from .errors import EvaluationError
from .predictions import check_prediction_array

THRESH_NUM = 1000
MAP_IOUS = tuple(np.round(0.5 + 0.05 * np.arange(10), 2).tolist())  # 0.50:0.05:0.95


def score_thresholds(thresh_num=THRESH_NUM):
    """The protocol's thresholds ``1 - t/thresh_num``, t = 1..thresh_num (descending)."""
    return 1 - (np.arange(thresh_num) + 1) / thresh_num


def overlaps_xywh(pred, gt):
    """IoU matrix ``[n, k]`` of xywh boxes, +1 pixel convention (see module doc)."""
    px1, py1 = pred[:, 0], pred[:, 1]
    px2, py2 = px1 + pred[:, 2], py1 + pred[:, 3]
    gx1, gy1 = gt[:, 0], gt[:, 1]
    gx2, gy2 = gx1 + gt[:, 2], gy1 + gt[:, 3]
    g_area = (gx2 - gx1 + 1) * (gy2 - gy1 + 1)
    p_area = (px2 - px1 + 1) * (py2 - py1 + 1)
    iw = np.minimum(px2[:, None], gx2[None, :]) - np.maximum(px1[:, None], gx1[None, :]) + 1
    ih = np.minimum(py2[:, None], gy2[None, :]) - np.maximum(py1[:, None], gy1[None, :]) + 1
    inter = iw * ih
    ua = p_area[:, None] + g_area[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((iw > 0) & (ih > 0), inter / ua, 0.0)


def voc_ap(recall, precision):
    """VOC AP: precision envelope, then sum of (recall step) * precision."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


class _Matched:
    """Everything IoU-threshold independent, per prediction, in global order."""

    __slots__ = ("score", "raw", "best_iou", "best_gt", "image", "tmin", "missing", "extra",
                 "num_predictions")


def normalise_and_match(preds, gt, progress=False, skip_empty_gt=True):
    """Validate, sort, normalise and compute each prediction's best face.

    ``skip_empty_gt=True`` is the WIDER protocol (images with no face are not
    scored); ``False`` counts their predictions as false positives.
    """
    if not isinstance(preds, dict):
        raise EvaluationError("predictions must be a dict {'event/image': [n, 5] array}")
    per_image = [None] * len(gt)
    all_scores = []
    for key, arr in preds.items():
        a = check_prediction_array(key, arr)
        all_scores.append(a[:, 4])
        i = gt.lookup(key)
        if i is None:
            continue
        if per_image[i] is not None:
            raise EvaluationError("two prediction entries for image %r (second: %r)" % (gt.names[i], key))
        per_image[i] = a
    m = _Matched()
    m.num_predictions = int(sum(len(s) for s in all_scores))
    m.missing = sum(p is None for p in per_image)
    m.extra = len(preds) - (len(gt) - m.missing)
    lo, hi = 1.0, 0.0
    if m.num_predictions:
        cat = np.concatenate(all_scores)
        lo, hi = min(float(cat.min()), 1.0), max(float(cat.max()), 0.0)
    diff = hi - lo
    if diff <= 0:
        # all scores equal (e.g. one prediction in total, or saturated scores of 1.0): the
        # reference divides by zero and gets NaN scores (AP 0); here every prediction
        # passes every threshold instead, i.e. the single operating point is scored.
        lo, diff = hi - 1.0, 1.0

    raws, ious, gts, imgs = [], [], [], []
    rng = range(len(gt))
    if progress:
        from tqdm import tqdm
        rng = tqdm(rng, desc="Matching", unit="img", leave=False)
    offsets = gt.offsets
    for i in rng:
        p = per_image[i]
        if p is None or len(p) == 0:
            continue
        g = gt.boxes[i]
        if len(g) == 0 and skip_empty_gt:
            continue
        p = p[np.argsort(-p[:, 4], kind="stable")]
        raws.append(p[:, 4])
        imgs.append(np.full(len(p), i, dtype=np.int64))
        if len(g) == 0:
            ious.append(np.zeros(len(p)))
            gts.append(np.full(len(p), -1, dtype=np.int64))
            continue
        ov = overlaps_xywh(p, g)
        j = ov.argmax(axis=1)
        ious.append(ov[np.arange(len(p)), j])
        gts.append(j + offsets[i])
    if raws:
        m.raw = np.concatenate(raws)
        m.best_iou = np.concatenate(ious)
        m.best_gt = np.concatenate(gts)
        m.image = np.concatenate(imgs)
    else:
        m.raw = m.best_iou = np.zeros(0)
        m.best_gt = m.image = np.zeros(0, dtype=np.int64)
    m.score = (m.raw - lo) / diff if len(m.raw) else m.raw
    # first threshold index t (0-based) with 1 - (t+1)/1000 <= score; passes all t >= tmin
    asc = score_thresholds()[::-1]
    m.tmin = THRESH_NUM - np.searchsorted(asc, m.score, side="right")
    return m


def _outcomes(m, keep_flat, iou_thresh):
    """Per prediction: proposal (not ignored) and new-match (first hit of a kept face)."""
    hit = m.best_iou >= iou_thresh
    kept = np.zeros(len(hit), dtype=bool)
    kept[hit] = keep_flat[m.best_gt[hit]]
    proposal = ~(hit & ~kept)
    cand = np.flatnonzero(hit & kept)
    new_match = np.zeros(len(hit), dtype=bool)
    if len(cand):
        _, first = np.unique(m.best_gt[cand], return_index=True)
        new_match[cand[first]] = True
    return proposal, new_match


def sweep(m, keep_flat, num_faces, iou_thresh):
    """Precision and recall at the 1000 score thresholds, and the AP."""
    proposal, new_match = _outcomes(m, keep_flat, iou_thresh)
    props = np.cumsum(np.bincount(m.tmin, weights=proposal, minlength=THRESH_NUM)[:THRESH_NUM])
    hits = np.cumsum(np.bincount(m.tmin, weights=new_match, minlength=THRESH_NUM)[:THRESH_NUM])
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = hits / props        # NaN where nothing scores that high (harmless in AP)
        recall = hits / num_faces
    return voc_ap(recall, precision), precision, recall


def _check_iou(iou):
    iou = float(iou)
    if not 0 < iou <= 1:
        raise EvaluationError("IoU threshold must be in (0, 1], got %g" % iou)
    return iou


def evaluate(preds, gt, iou_thresh=0.5, progress=False, _matched=None):
    """AP per setting at one IoU threshold.

    Args:
        preds: ``{"event/image": [n, 5] array (x, y, w, h, score)}``; images of
            ``gt`` without a key count as no detections.
        gt: a :class:`~widerface_evaluate.GroundTruth`.
    Returns:
        ``{setting: ap, ..., "pr": {setting: (precision[1000], recall[1000])},
        "missing": images without predictions, "extra": prediction keys not
        in the ground truth, "iou": iou_thresh}``
    """
    iou_thresh = _check_iou(iou_thresh)
    m = _matched if _matched is not None else normalise_and_match(preds, gt, progress)
    out = {"pr": {}, "missing": m.missing, "extra": m.extra, "iou": iou_thresh}
    for s in gt.settings:
        ap, prec, rec = sweep(m, gt.keep_flat[s], gt.num_faces(s), iou_thresh)
        out[s] = ap
        out["pr"][s] = (prec, rec)
    return out


def evaluate_map(preds, gt, ious=MAP_IOUS, progress=False, _matched=None):
    """Mean AP over IoU 0.50:0.05:0.95 per setting (overlaps computed once).

    Returns ``{setting: mean ap, ..., "per_iou": {iou: {setting: ap}},
    "missing": n, "extra": n}``.
    """
    ious = [_check_iou(t) for t in ious]
    m = _matched if _matched is not None else normalise_and_match(preds, gt, progress)
    per = {}
    for t in ious:
        r = evaluate(None, gt, t, _matched=m)
        per[t] = {s: r[s] for s in gt.settings}
    out = {s: float(np.mean([per[t][s] for t in ious])) for s in gt.settings}
    out.update(per_iou=per, missing=m.missing, extra=m.extra)
    return out
