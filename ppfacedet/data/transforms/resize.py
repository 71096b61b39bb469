import cv2
import numpy as np

from ...core.registry import TRANSFORMS
from .compose import RandomTransform, keep_faces


@TRANSFORMS.register
class Resize(RandomTransform):
    """Resize to ``size`` x ``size`` (training crops are square), scaling boxes
    and landmarks by float32 factors as mmdet does. ``random_interp`` draws the
    interpolation among Pytorch_Retinaface's five; ``clip_border`` clips boxes
    and landmarks into the image afterwards (mmdet's ``bbox_clip_border``)."""

    INTERPOLATIONS = (cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_AREA, cv2.INTER_NEAREST, cv2.INTER_LANCZOS4)

    def __init__(self, size=640, random_interp=False, clip_border=False):
        self.size = int(size)
        self.random_interp = bool(random_interp)
        self.clip_border = bool(clip_border)

    def draw(self, sample, rng):
        """The cv2 interpolation flag."""
        if not self.random_interp:
            return cv2.INTER_LINEAR
        return self.INTERPOLATIONS[rng.integers(len(self.INTERPOLATIONS))]

    def apply(self, sample, interpolation):
        h, w = sample["image"].shape[:2]
        sample["image"] = cv2.resize(sample["image"], (self.size, self.size), interpolation=interpolation)
        scale = np.array([self.size / w, self.size / h], np.float32)
        boxes = sample["boxes"].reshape(-1, 2, 2) * scale
        landmarks = sample["landmarks"] * scale
        if self.clip_border:
            boxes, landmarks = np.clip(boxes, 0, self.size), np.clip(landmarks, 0, self.size)
        sample["boxes"], sample["landmarks"] = boxes.reshape(-1, 4), landmarks
        return sample


@TRANSFORMS.register
class FilterSmallFaces:
    """Drop faces narrower or shorter than ``min_size`` pixels (after resize).
    No official recipe filters (Pytorch_Retinaface's 'face > 16 px' check
    compares with 0); the synthetic demo uses it for its tiny drawn faces."""

    def __init__(self, min_size=2.0):
        self.min_size = float(min_size)

    def __call__(self, sample, rng):
        wh = sample["boxes"][:, 2:] - sample["boxes"][:, :2]
        return keep_faces(sample, (wh >= self.min_size).all(axis=1))
