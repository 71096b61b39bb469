"""Predictions: the standard folder layout, and checks of in-memory predictions.

Folder layout (the one every WIDER FACE tool writes)::

    PRED_DIR/<event>/<image>.txt
        <image name>           # may carry a path and an extension
        <count>
        x y w h score          # `count` lines, pixels, top-left + size

The key of a file is ``"<folder relative to PRED_DIR>/<image name>"`` with a
real image extension removed (``0--Parade/0_Parade_marchingband_1_465``).
Errors name ``file:line``.
"""
import math
import os
from pathlib import Path

import numpy as np

from .errors import EvaluationError
from .ground_truth import strip_image_extension


def _bad(path, lineno, msg):
    return EvaluationError("%s:%d: %s" % (path, lineno, msg))


def read_prediction_file(path):
    """Parse one ``<image>.txt``; returns ``(image name without extension, [n, 5] array)``."""
    path = str(path)
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise EvaluationError("cannot read %s: %s" % (path, e))
    if not lines or not lines[0].strip():
        raise _bad(path, 1, "first line must be the image name")
    name = strip_image_extension(lines[0].strip().replace("\\", "/").rsplit("/", 1)[-1])
    if len(lines) < 2 or not lines[1].strip():
        raise _bad(path, 2, "second line must be the number of boxes")
    try:
        count = int(lines[1].split()[0])
        if count < 0 or len(lines[1].split()) != 1:
            raise ValueError
    except ValueError:
        raise _bad(path, 2, "expected the number of boxes, got %r" % lines[1].strip())
    body = [(i + 3, ln) for i, ln in enumerate(lines[2:]) if ln.strip()]
    if len(body) != count:
        raise _bad(path, 2, "the file says %d boxes but has %d box lines" % (count, len(body)))
    if count == 0:
        return name, np.zeros((0, 5))
    try:  # fast path; a ragged or non-numeric body falls through to the checker
        arr = np.array([ln.split() for _, ln in body], dtype=np.float64)
        ok = arr.ndim == 2 and arr.shape[1] == 5
    except ValueError:
        ok = False
    if not ok:
        for lineno, ln in body:
            parts = ln.split()
            if len(parts) != 5:
                raise _bad(path, lineno, "expected 5 values 'x y w h score', got %d: %r"
                           % (len(parts), ln.strip()))
            for p in parts:
                try:
                    float(p)
                except ValueError:
                    raise _bad(path, lineno, "not a number: %r" % p)
        raise _bad(path, body[0][0], "cannot parse box lines")  # pragma: no cover
    bad = ~np.isfinite(arr).all(axis=1) | (arr[:, 4] < 0)
    if bad.any():
        k = int(np.argmax(bad))
        lineno, ln = body[k]
        what = "NaN score" if math.isnan(arr[k, 4]) else (
            "negative score" if arr[k, 4] < 0 else "non-finite value")
        raise _bad(path, lineno, "%s in %r" % (what, ln.strip()))
    return name, arr


def load_prediction_dir(pred_dir, progress=False):
    """Read every ``*.txt`` under ``pred_dir`` into ``{"event/name": [n, 5] array}``."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise EvaluationError("prediction folder not found: %s" % pred_dir)
    files = []
    for root, dirs, fnames in os.walk(pred_dir):
        dirs.sort()
        files.extend(os.path.join(root, f) for f in sorted(fnames) if f.lower().endswith(".txt"))
    if not files:
        raise EvaluationError("prediction folder %s has no <event>/<image>.txt files" % pred_dir)
    it = files
    if progress:
        from tqdm import tqdm
        it = tqdm(files, desc="Reading predictions", unit="file", leave=False)
    preds = {}
    for fp in it:
        name, arr = read_prediction_file(fp)
        rel = os.path.relpath(os.path.dirname(fp), pred_dir).replace(os.sep, "/")
        key = name if rel == "." else rel + "/" + name
        if key in preds:
            raise EvaluationError("%s: image %r already read from another file" % (fp, key))
        preds[key] = arr
    return preds


def save_prediction_dir(preds, out_dir):
    """Write ``{"event/name": [n, 5]}`` in the standard layout (exact float round trip)."""
    out_dir = Path(out_dir)
    for key, arr in preds.items():
        arr = check_prediction_array(key, arr)
        key = strip_image_extension(str(key))
        event, _, name = key.rpartition("/")
        d = out_dir / event if event else out_dir
        d.mkdir(parents=True, exist_ok=True)
        lines = [name, str(len(arr))]
        lines.extend(" ".join(repr(v) for v in row) for row in arr.tolist())
        (d / (name + ".txt")).write_text("\n".join(lines) + "\n")


def check_prediction_array(key, arr):
    """``arr`` as float64 ``[n, 5]``; clear errors for bad shapes, NaN and negative scores."""
    a = np.asarray(arr, dtype=np.float64)
    if a.size == 0:
        return np.zeros((0, 5))
    if a.ndim != 2 or a.shape[1] != 5:
        raise EvaluationError("predictions of %r must be [n, 5] (x, y, w, h, score), got shape %s"
                              % (key, a.shape))
    if np.isnan(a[:, 4]).any():
        raise EvaluationError("predictions of %r contain a NaN score" % key)
    if (a[:, 4] < 0).any():
        raise EvaluationError("predictions of %r contain a negative score (%g)" % (key, a[:, 4].min()))
    if not np.isfinite(a).all():
        raise EvaluationError("predictions of %r contain a non-finite value" % key)
    return a
