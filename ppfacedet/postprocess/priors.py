"""Anchor points per stride. Rows are ordered (y, x, anchor), which is the
order the heads flatten their outputs in.

Conventions differ per family and are kept as parameters: SCRFD and YuNet put
centres at ``x * stride`` (offset 0); RetinaFace at ``(x + 0.5) * stride``.
"""
import numpy as np


def grid_points(height, width, stride, offset=0.0, num_anchors=1):
    """[H*W*A, 2] (x, y) centres in input pixels."""
    ys, xs = np.meshgrid(np.arange(height, dtype=np.float32), np.arange(width, dtype=np.float32),
                         indexing="ij")
    pts = np.stack([(xs + offset) * stride, (ys + offset) * stride], axis=-1).reshape(-1, 2)
    return np.repeat(pts, num_anchors, axis=0)


def feature_sizes(input_h, input_w, strides):
    """Feature-map (H, W) per stride, as produced by stride-2 convs with padding."""
    return [(int(np.ceil(input_h / s)), int(np.ceil(input_w / s))) for s in strides]


def retina_priors(height, width, stride, min_sizes):
    """RetinaFace priors [H*W*len(min_sizes), 4] as (cx, cy, w, h) in input pixels."""
    centres = grid_points(height, width, stride, offset=0.5, num_anchors=len(min_sizes))
    sizes = np.tile(np.asarray(min_sizes, np.float32), height * width)[:, None].repeat(2, axis=1)
    return np.concatenate([centres, sizes], axis=1)
