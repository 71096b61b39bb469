"""Convert an exported model folder to ONNX with paddle2onnx.

paddle2onnx runs in a child process: on some errors (an unsupported opset,
quantized ops) it aborts the whole process instead of raising. The equivalent
command line is

  paddle2onnx --model_dir DIR --model_filename model.json --params_filename model.pdiparams \\
              --save_file DIR/model.onnx --opset_version 11

The ONNX input keeps dynamic batch, height and width; its outputs are renamed
to the names in infer_cfg.yml (``score_8``, ``bbox_8``... or ``loc``, ``conf``,
``landms``), in the same order. An ONNX written into the export folder is
recorded in its infer_cfg.yml (``onnx: model.onnx``), which is how
deploy/python's onnxruntime and OpenVINO engines find it.

The converted graph then goes through ``onnx_rewrites.optimize``: exact
rewrites (nearest upsampling as Resize instead of the program's depthwise
transposed conv, bias adds folded, sibling head convs stacked) that make it
run faster than the official ONNX under onnxruntime and OpenVINO.

paddle2onnx 2.1 writes GroupNorm as InstanceNormalization with a wrong epsilon
(0.0 from a PIR program, a denormal from an old one), which moves SCRFD-2.5G's
outputs by up to 0.3; ``restore_norm_epsilons`` puts the program's values back.
"""
import json
import os
import subprocess
import sys

import yaml

from ..core.errors import PPFaceDetError
from .infer_cfg import save_infer_cfg
from .onnx_rewrites import optimize

MIN_OPSET = 11


def paddle2onnx_command(model_dir, save_file, opset=MIN_OPSET):
    with open(os.path.join(model_dir, "infer_cfg.yml")) as f:
        program = yaml.safe_load(f)["program"]
    return [sys.executable, "-m", "paddle2onnx.command", "--model_dir", model_dir, "--model_filename", program,
            "--params_filename", "model.pdiparams", "--save_file", save_file, "--opset_version", str(opset)]


def convert_to_onnx(model_dir, save_file=None, opset=MIN_OPSET):
    """model_dir (from export_inference_model) -> the written .onnx path."""
    if opset < MIN_OPSET:
        raise PPFaceDetError(f"--opset {opset}: paddle2onnx needs at least {MIN_OPSET} for these models")
    if not os.path.isfile(os.path.join(model_dir, "infer_cfg.yml")):
        raise PPFaceDetError(f"{model_dir}: no infer_cfg.yml; export the model first (tools/export_model.py)")
    with open(os.path.join(model_dir, "infer_cfg.yml")) as f:
        if yaml.safe_load(f).get("with_nms"):
            raise PPFaceDetError(f"{model_dir} was exported --with_nms: paddle2onnx's multiclass_nms3 conversion "
                                 "does not run in onnxruntime (a Concat shape mismatch). Convert an export "
                                 "without --with_nms and decode + NMS after the ONNX model")
    save_file = save_file or os.path.join(model_dir, "model.onnx")
    if os.path.exists(save_file):
        os.remove(save_file)
    done = subprocess.run(paddle2onnx_command(model_dir, save_file, opset), capture_output=True, text=True)
    if done.returncode != 0 or not os.path.isfile(save_file):
        how = f"was killed by signal {-done.returncode}" if done.returncode < 0 else f"exited with {done.returncode}"
        log = "\n".join((done.stdout + done.stderr).strip().splitlines()[-25:])
        raise PPFaceDetError(f"paddle2onnx {how} converting {model_dir} (opset {opset}):\n{log}")
    with open(os.path.join(model_dir, "infer_cfg.yml")) as f:
        info = yaml.safe_load(f)
    import onnx
    model = onnx.load(save_file)
    restore_norm_epsilons(model, norm_epsilons(os.path.join(model_dir, info["program"])))
    name_outputs(model, info["outputs"])
    optimize(model)
    onnx.save(model, save_file)
    if os.path.dirname(os.path.abspath(save_file)) == os.path.abspath(model_dir):
        record_onnx(model_dir, os.path.basename(save_file))
    return save_file


def record_onnx(model_dir, filename):
    """Name the folder's ONNX model in its infer_cfg.yml (key ``onnx``)."""
    path = os.path.join(model_dir, "infer_cfg.yml")
    with open(path) as f:
        info = yaml.safe_load(f)
    info["onnx"] = filename
    save_infer_cfg(model_dir, info)


NORM_OPS = ("group_norm", "instance_norm")


def norm_epsilons(program_path):
    """Epsilons of the program's group / instance norms, in program order."""
    if program_path.endswith(".json"):
        with open(program_path) as f:
            program = json.load(f)
        found = []

        def walk(node):
            if isinstance(node, dict):
                if node.get("#") in {f"1.{op}" for op in NORM_OPS}:
                    found.extend(a["AT"]["D"] for a in node.get("A", []) if a.get("N") == "epsilon")
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)
        walk(program)
        return found
    from paddle.base.proto import framework_pb2
    with open(program_path, "rb") as f:
        desc = framework_pb2.ProgramDesc.FromString(f.read())
    return [attr.f for block in desc.blocks for op in block.ops if op.type in NORM_OPS
            for attr in op.attrs if attr.name == "epsilon"]


def restore_norm_epsilons(model, epsilons):
    import onnx
    nodes = [n for n in model.graph.node if n.op_type == "InstanceNormalization"]
    if not nodes:
        return
    if len(nodes) != len(epsilons):
        raise PPFaceDetError(f"paddle2onnx wrote {len(nodes)} InstanceNormalization nodes for {len(epsilons)} "
                             "group/instance norms; cannot restore their epsilons")
    for node, epsilon in zip(nodes, epsilons):
        del node.attribute[:]
        node.attribute.append(onnx.helper.make_attribute("epsilon", float(epsilon)))


def name_outputs(model, names):
    """Give the ONNX graph outputs the deploy names, in order."""
    outputs = model.graph.output
    if len(outputs) != len(names):
        raise PPFaceDetError(f"the ONNX model has {len(outputs)} outputs, but infer_cfg.yml names {len(names)}")
    renames = {out.name: name for out, name in zip(outputs, names)}
    for node in model.graph.node:
        node.output[:] = [renames.get(o, o) for o in node.output]
        node.input[:] = [renames.get(i, i) for i in node.input]
    for out in outputs:
        out.name = renames[out.name]
