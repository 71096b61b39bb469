"""Pytorch_Retinaface's label.txt: ``# path`` then one face per line,
``x y w h`` followed (train) by five ``x y v`` landmarks and a blur score.
A landmark x of -1 marks the face's landmarks as missing."""
import numpy as np

from .blocks import parse_blocks


def _header(fields):
    if not fields:
        raise ValueError("header without an image path")
    return " ".join(fields), None


def _face(values):
    if len(values) < 4 or 4 < len(values) < 19:
        raise ValueError(f"expected 4 numbers (x y w h) or 4 + 15 landmark values, got {len(values)}")
    x, y, w, h = values[:4]
    landmarks = None
    if len(values) >= 19:
        kps = np.asarray(values[4:19], np.float32).reshape(5, 3)
        if kps[0, 0] >= 0:
            landmarks = kps[:, :2]
    return [x, y, x + w, y + h], landmarks


def parse_retinaface_label(label_file, image_root):
    """-> (records, ParseReport); malformed lines name file:line and their image is skipped."""
    return parse_blocks(label_file, image_root, _header, _face)
