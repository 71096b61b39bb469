"""The interface every head implements (see DESIGN.md and modeling/detector.py)."""
from collections import OrderedDict

import paddle
import paddle.nn as nn


class RawOutputs(OrderedDict):
    """A head's raw per-stride tensors plus ``feat_sizes``, the feature-map
    ``(h, w)`` per stride: the flattened ``[N, H*W*A, C]`` tensors no longer
    carry the width, and decode and loss need it to lay out anchors. Carrying
    it with the outputs (not on the head) keeps stale outputs from being
    decoded with another input's sizes."""

    def __init__(self, feat_sizes):
        super().__init__()
        self.feat_sizes = [tuple(size) for size in feat_sizes]

    @classmethod
    def for_features(cls, feats):
        """Sizes as ints in dynamic mode; while a static graph is traced they
        are symbolic (shape tensors), which only in-graph decoding may use."""
        if paddle.in_dynamic_mode():
            return cls([(int(f.shape[2]), int(f.shape[3])) for f in feats])
        return cls([(paddle.shape(f)[2], paddle.shape(f)[3]) for f in feats])


def feature_sizes_of(raw, head_name):
    """``raw.feat_sizes``, or a clear error if raw lost them (e.g. copied into a plain dict)."""
    sizes = getattr(raw, "feat_sizes", None)
    if sizes is None:
        raise ValueError(f"{head_name}.decode/loss need the RawOutputs returned by its forward "
                         "(they carry feat_sizes); got a plain mapping")
    return sizes


class DenseHead(nn.Layer):
    """A dense per-stride head.

    Subclasses implement:
      forward(feats) -> RawOutputs name -> [N, H*W*A, C] (scores as logits)
      loss(raw, batch) -> {'loss': total, '<term>': value, ...}
      decode(raw) -> boxes [N, M, 4] xyxy, scores [N, M], landmarks [N, M, 10] or None,
                     all in network-input pixels, M = all anchors of all strides
      deploy_outputs(raw) -> [(name, tensor)] with scores activated
      deploy_config() -> dict for infer_cfg.yml 'decode' (kind, strides, ...)
    """
    strides = (8, 16, 32)
