import numpy as np

from ...core.registry import TRANSFORMS
from .compose import keep_faces


@TRANSFORMS.register
class RandomSquareCrop:
    """SCRFD's sample redistribution: a square crop whose side is a random
    choice of ``crop_choice`` times the image's short side. Choices above 1
    zoom out (the canvas is padded with ``pad_value``), which turns large faces
    into the small ones a fixed-size input otherwise rarely sees. Faces whose
    centre falls outside the crop are dropped; a crop keeping none is retried."""

    def __init__(self, crop_choice=(0.3, 0.45, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0), max_trials=50,
                 pad_value=(127, 127, 127)):
        self.crop_choice = [float(c) for c in crop_choice]
        self.max_trials = int(max_trials)
        self.pad_value = np.asarray(pad_value, np.uint8)

    def __call__(self, sample, rng):
        image, boxes = sample["image"], sample["boxes"]
        h, w = image.shape[:2]
        if len(boxes) == 0:
            return sample
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        for _ in range(self.max_trials):
            side = max(1, int(self.crop_choice[rng.integers(len(self.crop_choice))] * min(h, w)))
            left = int(rng.integers(min(0, w - side), max(0, w - side) + 1))
            top = int(rng.integers(min(0, h - side), max(0, h - side) + 1))
            inside = ((centres[:, 0] > left) & (centres[:, 0] < left + side)
                      & (centres[:, 1] > top) & (centres[:, 1] < top + side))
            if inside.any():
                return self._crop(keep_faces(sample, inside), left, top, side)
        return sample

    def _crop(self, sample, left, top, side):
        image = sample["image"]
        h, w = image.shape[:2]
        canvas = np.empty((side, side, 3), np.uint8)
        canvas[:] = self.pad_value
        sx0, sy0 = max(left, 0), max(top, 0)
        sx1, sy1 = min(left + side, w), min(top + side, h)
        canvas[sy0 - top:sy1 - top, sx0 - left:sx1 - left] = image[sy0:sy1, sx0:sx1]
        offset = np.array([left, top], np.float32)
        boxes = sample["boxes"] - np.tile(offset, 2)
        sample["boxes"] = np.clip(boxes, 0, side)
        sample["landmarks"] = sample["landmarks"] - offset
        sample["image"] = canvas
        return sample
