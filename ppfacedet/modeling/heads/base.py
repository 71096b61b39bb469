"""The interface every head implements (see modeling/detector.py)."""
import paddle.nn as nn


class DenseHead(nn.Layer):
    """A dense per-stride head.

    Subclasses implement:
      forward(feats) -> OrderedDict name -> [N, H*W*A, C] (scores as logits)
      loss(raw, batch) -> {'loss': total, '<term>': value, ...}
      decode(raw) -> boxes [N, M, 4] xyxy, scores [N, M], landmarks [N, M, 10] or None,
                     all in network-input pixels, M = all anchors of all strides
      deploy_outputs(raw) -> [(name, tensor)] with scores activated
      deploy_config() -> dict for infer_cfg.yml 'decode' (kind, strides, ...)
    """
    strides = (8, 16, 32)
