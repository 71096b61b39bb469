"""The ``input`` section of infer_cfg.yml applied with numpy and cv2 (the same
steps as ppfacedet/data/preprocess.py: InputPolicy).

  original   the image at its own size, padded bottom/right to a multiple of
             ``pad_multiple`` when that is set;
  letterbox  aspect-preserving resize into the top-left of a ``target_size``
             square, zero padding.
Then channel order (BGR or RGB), CHW float32, (x - mean) / std.

Speed (per VGA photo into SCRFD's 640x640 input, measured on 2 AVX2 cores
right after the network ran, as in a real call; about 5x
cv2.dnn.blobFromImage): the image is never copied onto a padded canvas. It is
split into reused uint8 planes (a fresh allocation costs page faults on every
call), and each plane is normalised straight into its place in the network
input. The padding gets the value a zero pixel gets, and only when the area
the image fills changed: ``into`` leaves it in place for the next image of
the same layout (a video, a folder of one size). Normalisation is a lookup in
a 256-entry table filled from the reference expression (``cv2.LUT``, which
OpenCV spreads over its threads): exact for every mean and std, and 0.77x
the time of one multiply-add per pixel (``cv2.addWeighted``) on a VGA photo,
0.66x on a 1024x684 one.
"""
import cv2
import numpy as np

POLICIES = ("original", "letterbox")


class Preprocess:
    def __init__(self, settings):
        self.policy = settings.get("policy", "original")
        if self.policy not in POLICIES:
            raise ValueError(f"infer_cfg.yml input.policy '{self.policy}' is not one of {', '.join(POLICIES)}")
        self.target_size = int(settings.get("target_size", 640))
        self.pad_multiple = int(settings.get("pad_multiple") or 0)
        self.mean = np.asarray(settings.get("mean", [0, 0, 0]), np.float32)
        self.std = np.asarray(settings.get("std", [1, 1, 1]), np.float32)
        self.channel_order = settings.get("channel_order", "BGR")
        if self.channel_order not in ("BGR", "RGB"):
            raise ValueError(f"infer_cfg.yml input.channel_order '{self.channel_order}' must be BGR or RGB")
        # Model channel c reads BGR plane source_planes[c]; tables[c][0, v] is its value for pixel value v.
        self.source_planes = (2, 1, 0) if self.channel_order == "RGB" else (0, 1, 2)
        values = np.arange(256, dtype=np.float32)
        self.tables = [((values - self.mean[c]) / self.std[c]).astype(np.float32).reshape(1, 256) for c in range(3)]
        self.scratch = np.empty(0, np.uint8)

    def layout(self, image_hw):
        """-> ((H, W) of the network input, (h, w) the image fills in its top-left, scale (sx, sy))."""
        h, w = image_hw
        if self.policy == "letterbox":
            # SCRFD's rule: the long side fills the canvas, the other is
            # truncated, and one scale (of the height) maps both axes back.
            size = self.target_size
            nh, nw = (size, int(size * w / h)) if h > w else (int(size * h / w), size)
            return (size, size), (nh, nw), (nh / h, nh / h)
        if self.pad_multiple:
            m = self.pad_multiple
            return (-(-h // m) * m, -(-w // m) * m), (h, w), (1.0, 1.0)
        return (h, w), (h, w), (1.0, 1.0)

    def into(self, image, out, padded_area=None):
        """BGR uint8 [h,w,3] -> ``out`` [3,H,W] float32 (shape from ``layout``).
        ``padded_area``: the image area ``out`` already holds the padding
        around (what this returned for the previous image written into it);
        the padding is written only when the area differs.
        -> (scale (sx, sy), (h, w) of the area the image fills)."""
        _, (nh, nw), scale = self.layout(image.shape[:2])
        area = nh * nw
        scratch = self._scratch(6 * area)  # the resized image, then its three planes
        if image.shape[:2] != (nh, nw):
            image = cv2.resize(image, (nw, nh), dst=scratch[:3 * area].reshape(nh, nw, 3))
        planes = cv2.split(image, [scratch[(3 + c) * area:(4 + c) * area].reshape(nh, nw) for c in range(3)])
        for c, source in enumerate(self.source_planes):
            cv2.LUT(planes[source], self.tables[c], dst=out[c, :nh, :nw])
        if padded_area != (nh, nw):
            for c in range(3):
                pad = self.tables[c][0, 0]
                out[c, nh:] = pad
                out[c, :nh, nw:] = pad
        return scale, (nh, nw)

    def _scratch(self, size):
        """A reused uint8 buffer of at least ``size`` bytes (a fresh one costs page faults on every call)."""
        if len(self.scratch) < size:
            self.scratch = np.empty(size, np.uint8)
        return self.scratch

    def __call__(self, image):
        """BGR uint8 [H,W,3] -> (CHW float32, scale (sx, sy))."""
        (height, width), _, _ = self.layout(image.shape[:2])
        out = np.empty((3, height, width), np.float32)
        return out, self.into(image, out)[0]
