"""A list of transforms built from config, applied in order.

Every transform is ``__call__(sample, rng) -> sample`` where ``sample`` holds
``image`` (HWC BGR uint8), ``boxes`` [k,4], ``landmarks`` [k,5,2] and
``landmark_valid`` [k], and ``rng`` is a numpy Generator owned by the caller,
so a sample's augmentation depends only on (seed, epoch, index).
"""
from ...core.registry import TRANSFORMS


class Compose:
    def __init__(self, transforms, where="transforms"):
        self.transforms = [TRANSFORMS.build(t, f"{where}[{i}]") for i, t in enumerate(transforms or [])]

    def __call__(self, sample, rng):
        for transform in self.transforms:
            sample = transform(sample, rng)
        return sample


def keep_faces(sample, mask):
    """The sample with only the faces where ``mask`` is true."""
    for key in ("boxes", "landmarks", "landmark_valid"):
        sample[key] = sample[key][mask]
    return sample
