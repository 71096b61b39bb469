"""A list of transforms built from config, applied in order.

Every transform is ``__call__(sample, rng) -> sample`` where ``sample`` holds
``image`` (HWC BGR, uint8 or float32 after ``ToFloat32``), ``boxes`` [k,4],
``landmarks`` [k,5,2] and ``landmark_valid`` [k], and ``rng`` is a numpy
Generator owned by the caller, so a sample's augmentation depends only on
(seed, epoch, index).
"""
import numpy as np

from ...core.registry import TRANSFORMS


class Compose:
    def __init__(self, transforms, where="transforms"):
        self.transforms = [TRANSFORMS.build(t, f"{where}[{i}]") for i, t in enumerate(transforms or [])]

    def __call__(self, sample, rng):
        for transform in self.transforms:
            sample = transform(sample, rng)
        return sample


class RandomTransform:
    """A transform whose randomness is one ``draw`` (the decision: a crop
    square, a flip, colour parameters) followed by a deterministic ``apply``.
    Tests hand ``apply`` the decisions an official pipeline took and compare
    the outputs."""

    def __call__(self, sample, rng):
        return self.apply(sample, self.draw(sample, rng))

    def draw(self, sample, rng):
        raise NotImplementedError

    def apply(self, sample, decision):
        raise NotImplementedError


@TRANSFORMS.register
class ToFloat32:
    """The image as float32 from here on. SCRFD, DamoFD and YuNet load images
    as float32 (mmdet's ``LoadImageFromFile(to_float32=True)``), so their
    resize and colour changes are never rounded back to 8 bits."""

    def __call__(self, sample, rng):
        sample["image"] = sample["image"].astype(np.float32)
        return sample


def keep_faces(sample, mask):
    """The sample with only the faces where ``mask`` is true."""
    for key in ("boxes", "landmarks", "landmark_valid"):
        sample[key] = sample[key][mask]
    return sample
