"""Which convs an INT8 model leaves in float, named by group, for both the
Paddle program (quant.py) and the QDQ ONNX (qdq_onnx.py):
  first      the stem conv;
  outputs    the convs that write a graph output (no conv reads their
             result; they carry the box and score precision);
  depthwise  every depthwise conv. A per-tensor int8 input scale hurts
             them most: after batch-norm folding a few near-dead channels
             get gains of 20-60x, which multiply the rounding error of
             their input (RetinaFace-mnet0.25's first stage).
"""
from ..core.errors import PPFaceDetError

SKIP_GROUPS = ("first", "outputs", "depthwise")


def parse_skip(skip):
    """'first,depthwise' | ['first'] | '' | None -> a checked list of conv groups left in float."""
    groups = [g.strip() for g in (skip.split(",") if isinstance(skip, str) else (skip or [])) if g.strip()]
    bad = [g for g in groups if g not in SKIP_GROUPS]
    if bad:
        raise PPFaceDetError(f"--skip: '{','.join(bad)}' is not among {', '.join(SKIP_GROUPS)} (comma-separated)")
    return groups


def choose_convs(convs, skip, is_depthwise, feeds_a_conv):
    """The convs (in graph order) of the ``skip`` groups; ``is_depthwise(conv)``
    and ``feeds_a_conv(conv)`` answer for the graph at hand."""
    groups = parse_skip(skip)
    chosen = []
    if "first" in groups:
        chosen += convs[:1]
    if "outputs" in groups:
        chosen += [conv for conv in convs if not feeds_a_conv(conv)]
    if "depthwise" in groups:
        chosen += [conv for conv in convs if is_depthwise(conv)]
    return [conv for conv in convs if any(conv is c for c in chosen)]
