"""Pytorch_Retinaface's label.txt: ``# path`` then one face per line,
``x y w h`` followed (train) by five ``x y v`` landmarks and a blur score.
A landmark x of -1 marks the face's landmarks as missing."""
import os

import numpy as np

from .record import ParseReport, make_record


def parse_retinaface_label(label_file, image_root):
    """-> (records, ParseReport); malformed lines name file:line and their image is skipped."""
    report = ParseReport()
    records, header, faces, bad = [], None, [], False

    def flush():
        if header is not None and not bad:
            rel, where = header
            records.append(make_record(os.path.join(image_root, rel), os.path.splitext(rel)[0],
                                       faces, where, report))

    with open(label_file, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            where = f"{label_file}:{lineno}"
            text = line.strip()
            if not text:
                continue
            if text.startswith("#"):
                flush()
                rel = text[1:].strip()
                header, faces, bad = ((rel, where) if rel else None), [], not rel
                if not rel:
                    report.warn(where, "header without an image path")
                continue
            if header is None:
                report.warn(where, "face line before any '# path' header")
                continue
            try:
                values = [float(v) for v in text.split()]
            except ValueError:
                report.warn(where, f"not a number in {text!r}")
                bad = True
                continue
            if len(values) < 4 or (len(values) > 4 and len(values) < 19):
                report.warn(where, f"expected 4 numbers (x y w h) or 4 + 15 landmark values, got {len(values)}")
                bad = True
                continue
            x, y, w, h = values[:4]
            landmarks = None
            if len(values) >= 19:
                kps = np.asarray(values[4:19], np.float32).reshape(5, 3)
                if kps[0, 0] >= 0:
                    landmarks = kps[:, :2]
            faces.append(([x, y, x + w, y + h], landmarks, where))
    flush()
    return records, report
