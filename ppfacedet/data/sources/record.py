"""One annotated image, validated where it is read so errors can name file:line."""
from dataclasses import dataclass, field

import numpy as np

from ...core.logger import get_logger

LOG = get_logger()


@dataclass
class FaceRecord:
    image_path: str
    name: str                      # path relative to the image root, without extension
    boxes: np.ndarray              # [k,4] x1 y1 x2 y2, original pixels
    landmarks: np.ndarray          # [k,5,2]
    landmark_valid: np.ndarray     # [k] bool
    source: str = ""               # "label_file:line" of the image's header
    size: tuple = field(default=None)  # (w, h) if the label file states it


@dataclass
class ParseReport:
    """What a parser dropped, so the caller can say how much and where."""
    bad_lines: list = field(default_factory=list)      # "file:line: reason"
    dropped_boxes: int = 0

    def warn(self, where, reason):
        self.bad_lines.append(f"{where}: {reason}")
        LOG.warning("%s: %s", where, reason)


def make_record(image_path, name, faces, source, report, size=None):
    """faces: list of (box xyxy, landmarks [5,2] or None, where). Degenerate
    boxes (zero or negative area, non-finite, or wholly outside the stated image
    size) are dropped with a warning naming their line."""
    boxes, lms, valid = [], [], []
    for box, landmarks, where in faces:
        box = np.asarray(box, np.float32)
        reason = degenerate_reason(box, size)
        if reason:
            report.warn(where, f"dropped box {box.tolist()}: {reason}")
            report.dropped_boxes += 1
            continue
        boxes.append(box)
        if landmarks is None:
            lms.append(np.zeros((5, 2), np.float32))
            valid.append(False)
        else:
            lms.append(np.asarray(landmarks, np.float32).reshape(5, 2))
            valid.append(True)
    return FaceRecord(
        image_path=image_path, name=name,
        boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
        landmarks=np.asarray(lms, np.float32).reshape(-1, 5, 2),
        landmark_valid=np.asarray(valid, bool), source=source, size=size)


def degenerate_reason(box, size):
    if not np.all(np.isfinite(box)):
        return "non-finite coordinate"
    if box[2] <= box[0] or box[3] <= box[1]:
        return "zero or negative area"
    if size is not None:
        w, h = size
        if box[2] <= 0 or box[3] <= 0 or box[0] >= w or box[1] >= h:
            return f"outside the {w}x{h} image"
    return ""
