"""Export a Detector to a static inference program plus ``infer_cfg.yml``.

    from ppfacedet.export.static import export_inference_model
    folder = export_inference_model(cfg, model, "output/export")   # -> output/export/<cfg.name>

The graph takes ``image`` [N, 3, H, W] (normalised as the ``input`` section
says; N, H and W dynamic) and returns the head's deploy tensors in the order of
``model.deploy_outputs`` (names recorded in infer_cfg.yml ``outputs``), or with
``with_nms`` the in-graph detections (see ``graph_nms.py``).

Two program formats:
  pir     ``model.json`` (Paddle 3's default IR), the default: exact and as
          fast as legacy under oneDNN for every family (the necks avoid
          nearest_interp, which oneDNN cannot run under PIR), and read by
          paddle2onnx 2.x;
  legacy  ``model.pdmodel`` (the old ProgramDesc), which the quantization tools
          and paddle2onnx 1.x need. The IR is fixed when paddle is imported
          (``FLAGS_enable_pir_api``), so an export in the other format than
          this process's runs in a child process started with the flag set.
"""
import argparse
import contextlib
import os

import paddle
import paddle.nn as nn
from paddle.static import InputSpec

from ..core.errors import PPFaceDetError
from .child import model_snapshot, run_module
from .infer_cfg import write_infer_cfg
from .legacy_ops import legacy_static_ops

PROGRAM_FILES = {"pir": "model.json", "legacy": "model.pdmodel"}
INPUT_SPEC = [InputSpec([None, 3, None, None], "float32", "image")]
# --with_nms graphs also take each image's scale, original -> network pixels
NMS_INPUT_SPEC = INPUT_SPEC + [InputSpec([None, 2], "float32", "scale_factor")]


class DeployGraph(nn.Layer):
    """image -> the deploy tensors, in order (what the exported program returns)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image):
        return [tensor for _, tensor in self.model.deploy_outputs(self.model(image))]


def current_program_format():
    return "pir" if paddle.framework.use_pir_api() else "legacy"


def export_inference_model(cfg, model, output_dir, with_nms=False, program_format="pir"):
    """Write ``output_dir/<cfg.name>/`` (program, ``model.pdiparams``, ``infer_cfg.yml``);
    returns that folder."""
    if program_format not in PROGRAM_FILES:
        raise PPFaceDetError(f"program_format '{program_format}' is not one of {', '.join(PROGRAM_FILES)}")
    folder = os.path.join(output_dir, cfg.name)
    if program_format != current_program_format():
        return _export_in_child(cfg, model, output_dir, with_nms, program_format)
    os.makedirs(folder, exist_ok=True)
    was_training = model.training
    model.eval()
    if with_nms:
        from .graph_nms import NMSGraph
        graph = NMSGraph(model, cfg)
    else:
        graph = DeployGraph(model)
    with paddle.no_grad():
        raw = model(paddle.zeros([1, 3, 64, 64]))
        names = [name for name, _ in model.deploy_outputs(raw)]
        has_landmarks = model.head.decode(raw)[2] is not None
    with legacy_static_ops() if program_format == "legacy" else contextlib.nullcontext():
        paddle.jit.save(graph, os.path.join(folder, "model"), input_spec=NMS_INPUT_SPEC if with_nms else INPUT_SPEC)
    if was_training:
        model.train()
    outputs = graph.output_names if with_nms else names
    write_infer_cfg(folder, cfg, model, outputs, with_nms, PROGRAM_FILES[program_format], has_landmarks)
    return folder


def _export_in_child(cfg, model, output_dir, with_nms, program_format):
    """Save the weights, then export from a fresh interpreter with the other IR."""
    with model_snapshot(cfg, model) as (config, weights):
        args = ["-c", config, "--weights", weights, "--output_dir", output_dir, "--format", program_format]
        run_module("ppfacedet.export.static", args + (["--with_nms"] if with_nms else []),
                   pir=program_format == "pir", what=f"exporting {cfg.name} in the {program_format} format")
    return os.path.join(output_dir, cfg.name)


def main(argv=None):
    """Child-process entry of ``_export_in_child`` (and usable by hand)."""
    parser = argparse.ArgumentParser(description="export with the IR this process was started with")
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--format", choices=sorted(PROGRAM_FILES), required=True)
    parser.add_argument("--with_nms", action="store_true")
    args = parser.parse_args(argv)
    if args.format != current_program_format():
        raise SystemExit(f"--format {args.format} needs FLAGS_enable_pir_api="
                         f"{'1' if args.format == 'pir' else '0'} in the environment")
    from ..core.config import load_config
    from ..engine.checkpoint import load_weights
    from ..modeling.detector import build_model
    cfg = load_config(args.config)
    model = build_model(cfg)
    load_weights(model, args.weights)
    print(export_inference_model(cfg, model, args.output_dir, args.with_nms, args.format))


if __name__ == "__main__":
    main()
