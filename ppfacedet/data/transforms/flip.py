from ...core.registry import TRANSFORMS
from .compose import RandomTransform

# Mirroring turns the left eye into the right one: landmarks are
# (left eye, right eye, nose, left mouth corner, right mouth corner).
LANDMARK_FLIP_ORDER = (1, 0, 2, 4, 3)


@TRANSFORMS.register
class RandomFlip(RandomTransform):
    """Horizontal flip with probability ``prob``; boxes and landmarks follow
    (x -> width - x, as every official pipeline does) and left/right landmarks
    swap so the model never learns mirrored semantics."""

    def __init__(self, prob=0.5):
        self.prob = float(prob)

    def draw(self, sample, rng):
        return bool(rng.random() < self.prob)

    def apply(self, sample, flip):
        if not flip:
            return sample
        w = sample["image"].shape[1]
        sample["image"] = sample["image"][:, ::-1].copy()
        boxes = sample["boxes"].copy()
        boxes[:, 0], boxes[:, 2] = w - sample["boxes"][:, 2], w - sample["boxes"][:, 0]
        sample["boxes"] = boxes
        lms = sample["landmarks"][:, LANDMARK_FLIP_ORDER].copy()
        lms[..., 0] = w - lms[..., 0]
        sample["landmarks"] = lms
        return sample
