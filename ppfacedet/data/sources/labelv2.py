"""SCRFD's labelv2.txt: ``# path w h`` then one face per line,
``x1 y1 x2 y2`` optionally followed by five ``x y flag`` keypoints.

A keypoint flag < 0 (or coordinates of -1) marks landmarks as missing; the
face still trains box and class."""
import numpy as np

from .blocks import parse_blocks


def _header(fields):
    if not fields:
        raise ValueError("header without an image path")
    if len(fields) < 3:
        return fields[0], None
    try:
        return fields[0], (int(float(fields[1])), int(float(fields[2])))
    except (ValueError, OverflowError):  # OverflowError: "inf"
        raise ValueError(f"bad image size in '# {' '.join(fields)}'") from None


def _face(values):
    if len(values) not in (4, 19):
        raise ValueError(f"expected 4 or 19 numbers (box [+ 5 x,y,flag]), got {len(values)}")
    landmarks = None
    if len(values) == 19:
        kps = np.asarray(values[4:], np.float32).reshape(5, 3)
        if not (np.any(kps[:, 2] < 0) or np.all(kps[:, :2] < 0)):
            landmarks = kps[:, :2]
    return values[:4], landmarks


def parse_labelv2(label_file, image_root):
    """-> (records, ParseReport). Malformed lines are reported with file:line
    and the image they belong to is skipped; it never raises on content."""
    return parse_blocks(label_file, image_root, _header, _face)
