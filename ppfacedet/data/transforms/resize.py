import cv2
import numpy as np

from ...core.registry import TRANSFORMS
from .compose import keep_faces


@TRANSFORMS.register
class Resize:
    """Resize to ``size`` x ``size`` (training crops are square), scaling boxes
    and landmarks, with a random interpolation when ``random_interp``."""

    INTERPOLATIONS = (cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_AREA, cv2.INTER_NEAREST, cv2.INTER_LANCZOS4)

    def __init__(self, size=640, random_interp=False):
        self.size = int(size)
        self.random_interp = bool(random_interp)

    def __call__(self, sample, rng):
        h, w = sample["image"].shape[:2]
        interp = self.INTERPOLATIONS[rng.integers(len(self.INTERPOLATIONS))] if self.random_interp \
            else cv2.INTER_LINEAR
        sample["image"] = cv2.resize(sample["image"], (self.size, self.size), interpolation=interp)
        scale = np.array([self.size / w, self.size / h], np.float32)
        sample["boxes"] = sample["boxes"] * np.tile(scale, 2)
        sample["landmarks"] = sample["landmarks"] * scale
        return sample


@TRANSFORMS.register
class FilterSmallFaces:
    """Drop faces narrower or shorter than ``min_size`` pixels (after resize):
    such boxes teach nothing and distort the matching of tiny anchors."""

    def __init__(self, min_size=2.0):
        self.min_size = float(min_size)

    def __call__(self, sample, rng):
        wh = sample["boxes"][:, 2:] - sample["boxes"][:, :2]
        return keep_faces(sample, (wh >= self.min_size).all(axis=1))
