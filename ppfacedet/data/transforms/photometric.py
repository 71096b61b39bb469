import cv2
import numpy as np

from ...core.registry import TRANSFORMS


@TRANSFORMS.register
class PhotometricDistortion:
    """Random brightness, contrast, saturation and hue, each applied with
    probability 1/2, contrast either before or after the colour changes (as in
    SSD-style face detector training)."""

    def __init__(self, brightness_delta=32, contrast_range=(0.5, 1.5), saturation_range=(0.5, 1.5),
                 hue_delta=18):
        self.brightness_delta = float(brightness_delta)
        self.contrast_range = tuple(contrast_range)
        self.saturation_range = tuple(saturation_range)
        self.hue_delta = float(hue_delta)

    def __call__(self, sample, rng):
        img = sample["image"].astype(np.float32)
        if rng.random() < 0.5:
            img += rng.uniform(-self.brightness_delta, self.brightness_delta)
        contrast_first = rng.random() < 0.5
        if contrast_first:
            img = self._contrast(img, rng)
        hsv = cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_BGR2HSV).astype(np.float32)
        if rng.random() < 0.5:
            hsv[..., 1] *= rng.uniform(*self.saturation_range)
        if rng.random() < 0.5:
            # OpenCV's 8-bit hue runs over 0..180, half a degree per unit.
            hsv[..., 0] = (hsv[..., 0] + rng.uniform(-self.hue_delta, self.hue_delta) / 2) % 180
        img = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2BGR).astype(np.float32)
        if not contrast_first:
            img = self._contrast(img, rng)
        sample["image"] = np.clip(img, 0, 255).astype(np.uint8)
        return sample

    def _contrast(self, img, rng):
        if rng.random() < 0.5:
            img = img * rng.uniform(*self.contrast_range)
        return img
