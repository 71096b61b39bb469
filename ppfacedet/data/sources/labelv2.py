"""SCRFD's labelv2.txt: ``# path w h`` then one face per line,
``x1 y1 x2 y2`` optionally followed by five ``x y flag`` keypoints.

A keypoint flag < 0 (or coordinates of -1) marks landmarks as missing; the
face still trains box and class."""
import os

import numpy as np

from .record import ParseReport, make_record


def _parse_numbers(text, where, report):
    try:
        return [float(v) for v in text.split()]
    except ValueError:
        report.warn(where, f"not a number in {text.strip()!r}")
        return None


def _landmarks(values):
    kps = np.asarray(values, np.float32).reshape(5, 3)
    if np.any(kps[:, 2] < 0) or np.all(kps[:, :2] < 0):
        return None
    return kps[:, :2]


def parse_labelv2(label_file, image_root):
    """-> (records, ParseReport). Malformed lines are reported with file:line
    and the image they belong to is skipped; it never raises on content."""
    report = ParseReport()
    records, header, faces, bad = [], None, [], False

    def flush():
        if header is not None and not bad:
            rel, size, where = header
            name = os.path.splitext(rel)[0]
            records.append(make_record(os.path.join(image_root, rel), name, faces, where, report, size))

    with open(label_file, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            where = f"{label_file}:{lineno}"
            text = line.strip()
            if not text:
                continue
            if text.startswith("#"):
                flush()
                parts = text[1:].split()
                faces, bad = [], False
                if not parts:
                    report.warn(where, "header without an image path")
                    header, bad = None, True
                    continue
                size = None
                if len(parts) >= 3:
                    try:
                        size = (int(float(parts[1])), int(float(parts[2])))
                    except ValueError:
                        report.warn(where, f"bad image size in {text!r}")
                        bad = True
                header = (parts[0], size, where)
                continue
            if header is None:
                report.warn(where, "face line before any '# path' header")
                continue
            values = _parse_numbers(text, where, report)
            if values is None or len(values) not in (4, 19):
                if values is not None:
                    report.warn(where, f"expected 4 or 19 numbers (box [+ 5 x,y,flag]), got {len(values)}")
                bad = True
                continue
            landmarks = _landmarks(values[4:]) if len(values) == 19 else None
            faces.append((values[:4], landmarks, where))
    flush()
    return records, report
