"""A literal, loop-based implementation of the WIDER FACE protocol: the oracle.

Written the slow, obvious way (per image, per prediction, per threshold), as
the official MATLAB tool and its Python port do.  It shares no code with
``widerface_evaluate`` so that the vectorised evaluator can be checked
against it.  Full val with ~700k predictions takes about a minute.

GT images are ``(key, boxes [k,4] float64 xywh, {setting: 1-based keep indices})``.
"""
import os

import numpy as np

SETTINGS = ("easy", "medium", "hard")


def load_gt(gt_dir):
    """The four official .mat files -> list of GT images."""
    from scipy.io import loadmat

    full = loadmat(os.path.join(gt_dir, "wider_face_val.mat"))
    lists = {s: loadmat(os.path.join(gt_dir, "wider_%s_val.mat" % s))["gt_list"] for s in SETTINGS}
    images = []
    for i in range(len(full["event_list"])):
        event = str(full["event_list"][i][0][0])
        for j in range(len(full["file_list"][i][0])):
            name = str(full["file_list"][i][0][j][0][0])
            boxes = full["face_bbx_list"][i][0][j][0].astype("float")
            keep = {s: lists[s][i][0][j][0].reshape(-1) for s in SETTINGS}
            images.append((event + "/" + name, boxes, keep))
    return images


def gt_from_lists(names, boxes, keep0):
    """In-memory GT (0-based keep) -> list of GT images (1-based keep, like the .mat)."""
    return [(names[i], np.asarray(boxes[i], dtype="float").reshape(-1, 4),
             {s: np.asarray(keep0[s][i], dtype=np.int64).reshape(-1) + 1 for s in keep0})
            for i in range(len(names))]


def bbox_overlaps(boxes, query_boxes):
    """x1y1x2y2 overlaps with the +1 convention; loop over the query boxes like the Cython
    (the inner loop over ``boxes`` is written with numpy, same arithmetic per element)."""
    n = boxes.shape[0]
    overlaps = np.zeros((n, query_boxes.shape[0]))
    b_area = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    for k in range(query_boxes.shape[0]):
        q = query_boxes[k]
        box_area = (q[2] - q[0] + 1) * (q[3] - q[1] + 1)
        iw = np.minimum(boxes[:, 2], q[2]) - np.maximum(boxes[:, 0], q[0]) + 1
        ih = np.minimum(boxes[:, 3], q[3]) - np.maximum(boxes[:, 1], q[1]) + 1
        for idx in np.where((iw > 0) & (ih > 0))[0]:
            ua = b_area[idx] + box_area - iw[idx] * ih[idx]
            overlaps[idx, k] = iw[idx] * ih[idx] / ua
    return overlaps


def norm_score(preds):
    max_score, min_score = 0, 1
    for v in preds.values():
        if len(v) == 0:
            continue
        max_score = max(np.max(v[:, -1]), max_score)
        min_score = min(np.min(v[:, -1]), min_score)
    diff = max_score - min_score
    for v in preds.values():
        if len(v) == 0:
            continue
        v[:, -1] = (v[:, -1] - min_score) / diff


def image_eval(pred, gt, ignore, iou_thresh):
    _pred = pred.copy()
    _gt = gt.copy()
    pred_recall = np.zeros(_pred.shape[0])
    recall_list = np.zeros(_gt.shape[0])
    proposal_list = np.ones(_pred.shape[0])
    _pred[:, 2] = _pred[:, 2] + _pred[:, 0]
    _pred[:, 3] = _pred[:, 3] + _pred[:, 1]
    _gt[:, 2] = _gt[:, 2] + _gt[:, 0]
    _gt[:, 3] = _gt[:, 3] + _gt[:, 1]
    overlaps = bbox_overlaps(_pred[:, :4], _gt)
    for h in range(_pred.shape[0]):
        row = overlaps[h]
        best, best_idx = row.max(), row.argmax()
        if best >= iou_thresh:
            if ignore[best_idx] == 0:
                recall_list[best_idx] = -1
                proposal_list[h] = -1
            elif recall_list[best_idx] == 0:
                recall_list[best_idx] = 1
        pred_recall[h] = len(np.where(recall_list == 1)[0])
    return pred_recall, proposal_list


def img_pr_info(thresh_num, pred_info, proposal_list, pred_recall):
    pr_info = np.zeros((thresh_num, 2))
    for t in range(thresh_num):
        thresh = 1 - (t + 1) / thresh_num
        r_index = np.where(pred_info[:, 4] >= thresh)[0]
        if len(r_index) == 0:
            continue
        r_index = r_index[-1]
        pr_info[t, 0] = len(np.where(proposal_list[:r_index + 1] == 1)[0])
        pr_info[t, 1] = pred_recall[r_index]
    return pr_info


def voc_ap(rec, prec):
    mrec = np.concatenate(([0.], rec, [1.]))
    mpre = np.concatenate(([0.], prec, [0.]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])


def prepare(preds):
    """Copy, sort each image by score (descending, stable, like MATLAB read_pred), normalise."""
    out = {}
    for key, v in preds.items():
        v = np.array(v, dtype="float").reshape(-1, 5)
        order = sorted(range(len(v)), key=lambda r: -v[r, 4])
        out[key] = v[order]
    norm_score(out)
    return out


def evaluate(preds, gt_images, iou_thresh=0.5, settings=SETTINGS, thresh_num=1000, prepared=False):
    """{setting: AP}; images without a prediction entry count as no detections."""
    pred = preds if prepared else prepare(preds)
    aps = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        for setting in settings:
            count_face = 0
            pr_curve = np.zeros((thresh_num, 2))
            for key, gt_boxes, keep in gt_images:
                pred_info = pred.get(key, np.zeros((0, 5)))
                keep_index = keep[setting]
                count_face += len(keep_index)
                if len(gt_boxes) == 0 or len(pred_info) == 0:
                    continue
                ignore = np.zeros(gt_boxes.shape[0])
                if len(keep_index) != 0:
                    ignore[keep_index - 1] = 1
                pred_recall, proposal_list = image_eval(pred_info, gt_boxes, ignore, iou_thresh)
                pr_curve += img_pr_info(thresh_num, pred_info, proposal_list, pred_recall)
            precision = np.zeros(thresh_num)
            recall = np.zeros(thresh_num)
            for i in range(thresh_num):
                precision[i] = pr_curve[i, 1] / pr_curve[i, 0]
                recall[i] = pr_curve[i, 1] / count_face
            aps[setting] = voc_ap(recall, precision)
    return aps


def evaluate_map(preds, gt_images, settings=SETTINGS):
    """Mean AP over IoU 0.50, 0.55, ..., 0.95."""
    pred = prepare(preds)
    ious = [round(0.5 + 0.05 * k, 2) for k in range(10)]
    per = [evaluate(pred, gt_images, t, settings, prepared=True) for t in ious]
    return {s: float(np.mean([p[s] for p in per])) for s in settings}


def synthetic_predictions(names, boxes, per_image=50, seed=0, empty_fraction=0.05):
    """Seeded hard-case predictions ``{name: [n, 5]}`` for GT ``names``/``boxes`` (xywh).

    Mixes jittered copies of faces (kept and ignored alike), boxes shifted to
    IoU exactly 0.5 / just above / just below (+1 convention), exact
    duplicates, random background boxes, scores with many ties and values on
    the threshold grid, unsorted rows, and some images with no predictions.
    """
    rng = np.random.default_rng(seed)
    grid = 1 - (np.arange(1000) + 1) / 1000
    preds = {}
    for name, g in zip(names, boxes):
        g = np.asarray(g, dtype="float").reshape(-1, 4)
        if rng.random() < empty_fraction:
            preds[name] = np.zeros((0, 5))
            continue
        n = max(1, int(rng.poisson(per_image)))
        rows = []
        if len(g):
            k = min(n // 2, 3 * len(g))
            src = g[rng.integers(0, len(g), k)]
            kind = rng.integers(0, 4, k)
            out = src.copy()
            jit = rng.normal(0, 0.12, (k, 4)) * np.repeat(src[:, 2:] + 1, 2, axis=1)
            out[kind == 0] += jit[kind == 0]
            # shift x by (w+1)/3 -> IoU exactly 0.5 (integers divisible by 3), or slightly off
            W = src[:, 2] + 1
            d = np.where(kind == 1, W / 3, np.where(kind == 2, W / 3 + rng.choice([-1e-9, 1e-9], k), 0))
            out[:, 0] += np.where(kind == 3, np.round(rng.normal(0, 1, k)), d)
            rows.append(out)
        lo = g[:, :2].min(0) if len(g) else np.zeros(2)
        hi = (g[:, :2] + g[:, 2:]).max(0) if len(g) else np.full(2, 500.0)
        m = n - sum(len(r) for r in rows)
        if m > 0:
            xy = lo + rng.random((m, 2)) * (hi - lo + 1)
            wh = np.exp(rng.uniform(np.log(2), np.log(200), (m, 2)))
            rows.append(np.hstack([xy, wh]))
        b = np.vstack(rows)
        n_face = len(rows[0]) if len(g) else 0
        style = rng.integers(0, 3)
        if style == 0:
            s = rng.random(len(b))
            s[:n_face] = np.sqrt(s[:n_face])              # boxes near faces score higher
            s[n_face:] *= 0.6
        elif style == 1:
            s = np.round(rng.random(len(b)), 2)          # many ties
        else:
            s = grid[rng.integers(0, 1000, len(b))]       # exactly on thresholds
        p = np.hstack([b, s[:, None]])
        dup = rng.random(len(p)) < 0.1
        p = np.vstack([p, p[dup]])                        # exact duplicates
        preds[name] = p[rng.permutation(len(p))]
    # make min/max 0 and 1 so grid scores stay exactly on the thresholds after normalisation
    some = [k for k, v in preds.items() if len(v)]
    if some:
        preds[some[0]][0, 4] = 1.0
        preds[some[-1]][-1, 4] = 0.0
    return preds
