import numpy as np

from ...core.errors import DataError
from ...core.registry import TRANSFORMS
from .compose import RandomTransform, keep_faces

# SCRFD's rule for choices that never zoom out: after a round of failed tries
# the scale grows by this factor, so the search ends.
SCALE_GROWTH = 1.2
# Where the official search would loop for ever (every face centred beyond the
# reach of any square), ours stops after this many squares and the sample is skipped.
UNBOUNDED_SEARCH_LIMIT = 100 * 250


@TRANSFORMS.register
class RandomSquareCrop(RandomTransform):
    """The square crop of SCRFD's sample redistribution and of
    Pytorch_Retinaface: a side of ``crop_choice`` times the image's short side
    at a random offset. Choices above 1 zoom out; the canvas is padded with
    ``pad_value``. Faces whose centre lies strictly inside are kept.

    The official rules, as parameters:
      require_whole_face  accept a square only if some face lies wholly inside
                          it (Pytorch_Retinaface's ``matrix_iof >= 1``, where
                          a face under 1 pixel of area never counts); otherwise
                          one kept face is enough (SCRFD);
      clip_border         clip kept boxes and landmarks into the square
                          (mmdet's ``bbox_clip_border``);
      trials_per_scale    squares tried with one drawn scale before drawing
                          again (SCRFD 250, Pytorch_Retinaface 1);
      max_trials          squares tried in all before giving up and leaving the
                          image uncropped (Pytorch_Retinaface 250, then
                          ``PadToSquare``); None tries until one is accepted
                          (SCRFD).
    Offsets exclude the upper end, as numpy's ``randint`` and Python's
    ``randrange`` in the official code do. An image without faces takes the
    first square drawn (the official pipelines never see one).
    """

    def __init__(self, crop_choice=(0.3, 0.45, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0),
                 pad_value=(128, 128, 128), require_whole_face=False, clip_border=True,
                 trials_per_scale=250, max_trials=None):
        self.crop_choice = [float(c) for c in crop_choice]
        self.pad_value = np.asarray(pad_value, np.float32)
        self.require_whole_face = bool(require_whole_face)
        self.clip_border = bool(clip_border)
        self.trials_per_scale = max(1, int(trials_per_scale))
        self.max_trials = None if max_trials is None else int(max_trials)

    def draw(self, sample, rng):
        """The accepted square (left, top, side), or None if none was."""
        h, w = sample["image"].shape[:2]
        for square in self.squares(h, w, rng):
            if self.accepts(sample["boxes"], square):
                return square
        if self.max_trials is None:
            raise DataError(f"no square crop keeps a face centre after {UNBOUNDED_SEARCH_LIMIT} tries")
        return None

    def squares(self, h, w, rng):
        """Candidate squares in the order the official loops draw them."""
        grow = self.max_trials is None and max(self.crop_choice) <= 1
        scale, trial = None, 0
        limit = UNBOUNDED_SEARCH_LIMIT if self.max_trials is None else self.max_trials
        while trial < limit:
            if trial % self.trials_per_scale == 0:
                if scale is not None and grow:
                    scale *= SCALE_GROWTH
                else:
                    scale = self.crop_choice[rng.integers(len(self.crop_choice))]
            side = int(scale * min(h, w))
            yield _offset(w, side, rng), _offset(h, side, rng), side
            trial += 1

    def accepts(self, boxes, square):
        if len(boxes) == 0:
            return True
        if not centres_inside(boxes, square).any():
            return False
        return not self.require_whole_face or wholly_inside(boxes, square).any()

    def apply(self, sample, square):
        if square is None:
            return sample
        left, top, side = square
        sample = keep_faces(sample, centres_inside(sample["boxes"], square))
        image = sample["image"]
        h, w = image.shape[:2]
        canvas = np.empty((side, side, 3), image.dtype)
        canvas[:] = self.pad_value
        sx0, sy0 = max(left, 0), max(top, 0)
        sx1, sy1 = min(left + side, w), min(top + side, h)
        canvas[sy0 - top:sy1 - top, sx0 - left:sx1 - left] = image[sy0:sy1, sx0:sx1]
        sample["image"] = canvas
        offset = np.array([left, top], np.float32)
        boxes = sample["boxes"].reshape(-1, 2, 2) - offset
        landmarks = sample["landmarks"] - offset
        if self.clip_border:
            boxes, landmarks = np.clip(boxes, 0, side), np.clip(landmarks, 0, side)
        sample["boxes"], sample["landmarks"] = boxes.reshape(-1, 4), landmarks
        return sample


def _offset(size, side, rng):
    if size == side:
        return 0
    return int(rng.integers(min(0, size - side), max(0, size - side)))


def centres_inside(boxes, square):
    """Faces whose centre lies strictly inside the square."""
    left, top, side = square
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    return ((centres[:, 0] > left) & (centres[:, 0] < left + side)
            & (centres[:, 1] > top) & (centres[:, 1] < top + side))


def wholly_inside(boxes, square):
    """Faces entirely inside the square, with at least 1 pixel of area: the
    official ``matrix_iof(box, square) >= 1`` divides by max(area, 1)."""
    left, top, side = square
    wh = boxes[:, 2:] - boxes[:, :2]
    return ((boxes[:, 0] >= left) & (boxes[:, 1] >= top)
            & (boxes[:, 2] <= left + side) & (boxes[:, 3] <= top + side)
            & (wh > 0).all(axis=1) & (wh.prod(axis=1) >= 1))


@TRANSFORMS.register
class PadToSquare:
    """Pad a non-square image at the bottom/right to a square of its long side
    with ``pad_value``: Pytorch_Retinaface's answer to a crop search that gave
    up (a cropped image is already square, so this does nothing to it)."""

    def __init__(self, pad_value=(104, 117, 123)):
        self.pad_value = np.asarray(pad_value, np.float32)

    def __call__(self, sample, rng):
        image = sample["image"]
        h, w = image.shape[:2]
        if h == w:
            return sample
        canvas = np.empty((max(h, w), max(h, w), 3), image.dtype)
        canvas[:] = self.pad_value
        canvas[:h, :w] = image
        sample["image"] = canvas
        return sample
