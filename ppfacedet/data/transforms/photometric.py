import cv2
import numpy as np

from ...core.errors import ConfigError
from ...core.registry import TRANSFORMS
from .compose import RandomTransform

ARITHMETICS = ("float", "uint8")


@TRANSFORMS.register
class PhotometricDistortion(RandomTransform):
    """Random brightness, contrast, saturation and hue, each applied with
    probability 1/2, contrast either before or after the colour changes, then
    a random channel permutation with probability ``channel_swap_prob``.

    ``arithmetic`` says how the official pipeline computes:
      float  mmdet's ``PhotoMetricDistortion`` (SCRFD, DamoFD): float32 all
             the way, HSV with hue in degrees (``hue_delta`` degrees, wrapped
             into 0..360), nothing clipped or rounded between steps;
      uint8  Pytorch_Retinaface's ``_distort``: every step clipped to 0..255
             and truncated to 8 bits, hue in OpenCV's 0..180 units (an integer
             shift of up to ``hue_delta`` units, modulo 180).
    """

    def __init__(self, brightness_delta=32, contrast_range=(0.5, 1.5), saturation_range=(0.5, 1.5),
                 hue_delta=18, arithmetic="float", channel_swap_prob=0.0):
        if arithmetic not in ARITHMETICS:
            raise ConfigError(f"PhotometricDistortion.arithmetic: '{arithmetic}' is not one of "
                              f"{', '.join(ARITHMETICS)}")
        self.brightness_delta = float(brightness_delta)
        self.contrast_range = tuple(float(c) for c in contrast_range)
        self.saturation_range = tuple(float(s) for s in saturation_range)
        self.hue_delta = hue_delta
        self.arithmetic = arithmetic
        self.channel_swap_prob = float(channel_swap_prob)

    def draw(self, sample, rng):
        """Each change's parameter, or None when it is skipped."""
        def maybe(value):
            return value() if rng.random() < 0.5 else None
        return {
            "brightness": maybe(lambda: float(rng.uniform(-self.brightness_delta, self.brightness_delta))),
            "contrast_first": bool(rng.random() < 0.5),
            "contrast": maybe(lambda: float(rng.uniform(*self.contrast_range))),
            "saturation": maybe(lambda: float(rng.uniform(*self.saturation_range))),
            "hue": maybe(lambda: self._draw_hue(rng)),
            "channel_order": rng.permutation(3) if rng.random() < self.channel_swap_prob else None,
        }

    def _draw_hue(self, rng):
        if self.arithmetic == "uint8":
            return int(rng.integers(-int(self.hue_delta), int(self.hue_delta) + 1))
        return float(rng.uniform(-self.hue_delta, self.hue_delta))

    def apply(self, sample, d):
        distort = _distort_uint8 if self.arithmetic == "uint8" else _distort_float
        image = distort(sample["image"], d)
        if d["channel_order"] is not None:
            image = image[..., np.asarray(d["channel_order"])]
        sample["image"] = np.ascontiguousarray(image)
        return sample


def _distort_float(image, d):
    # Scalars are float32 before they meet the image: that is what numpy does
    # with mmdet's Python-float parameters, and it keeps results bit-identical.
    img = image.astype(np.float32)
    if d["brightness"] is not None:
        img += np.float32(d["brightness"])
    if d["contrast_first"] and d["contrast"] is not None:
        img *= np.float32(d["contrast"])
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
    if d["saturation"] is not None:
        hsv[..., 1] *= np.float32(d["saturation"])
    if d["hue"] is not None:
        hue = hsv[..., 0]
        hue += np.float32(d["hue"])
        hue[hue > 360] -= 360
        hue[hue < 0] += 360
    img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    if not d["contrast_first"] and d["contrast"] is not None:
        img *= np.float32(d["contrast"])
    return img


def _clipped_uint8(values, alpha=1.0, beta=0.0):
    # float -> uint8 truncates, as Pytorch_Retinaface's in-place assignment does.
    return np.clip(values.astype(np.float64) * alpha + beta, 0, 255).astype(np.uint8)


def _distort_uint8(image, d):
    img = np.clip(image, 0, 255).astype(np.uint8)
    if d["brightness"] is not None:
        img = _clipped_uint8(img, beta=d["brightness"])
    if d["contrast_first"] and d["contrast"] is not None:
        img = _clipped_uint8(img, alpha=d["contrast"])
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
    if d["saturation"] is not None:
        hsv[..., 1] = _clipped_uint8(hsv[..., 1], alpha=d["saturation"])
    if d["hue"] is not None:
        hsv[..., 0] = (hsv[..., 0].astype(np.int64) + int(d["hue"])) % 180
    img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    if not d["contrast_first"] and d["contrast"] is not None:
        img = _clipped_uint8(img, alpha=d["contrast"])
    return img
