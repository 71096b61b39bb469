"""Post-training INT8 quantization of an exported model: a PaddleSlim
``quant_post_static`` program for Paddle Inference's oneDNN int8 path, and
beside it a QDQ ONNX (``model.onnx``, see ``qdq_onnx.py``) for onnxruntime
and OpenVINO, both calibrated on the same images.

    from ppfacedet.export.quant import quantize_model
    folder = quantize_model(cfg, model, "calib_images/", "output/int8")   # -> output/int8/<cfg.name>

Why this route (ENVIRONMENT.md, paddle 3.3.1): only the old program format
(``FLAGS_enable_pir_api=0``) can be quantized into something Paddle Inference
runs, and of the quantizers only ``quant_post_static`` gives int8 programs
whose oneDNN int8 outputs are right. The IR is fixed when paddle is imported,
so the quantization runs in a child process started with the flag off, on an
fp32 export in the old format.

The calibration images go through the exported model's own ``input`` policy
(read back from its ``infer_cfg.yml``), so the observed activation ranges are
those the deployed model sees.

Before calibration the fp32 program gets four rewrites that leave its float
outputs unchanged: shared parameters are copied per op, conv biases are added
in the form oneDNN fuses, SCRFD's per-stride box scales are folded into
their convs (without these two, oneDNN int8 returns wrong boxes for
SCRFD-500M; see ``fold_conv_scale``), and the channel ranges of each batch
norm feeding a conv are equalized (``equalize.py``). The QDQ ONNX is made from
that same rewritten program. Then the weights of the quantized convs with
signed input are rounded onto the 7-bit grid that oneDNN uses for them on CPUs
without VNNI (``weight_grid.py``), so the program computes the same on CPUs
with and without VNNI.
"""
import argparse
import os
import shutil
import tempfile

import yaml

from ..core.config import read_section
from ..core.errors import PPFaceDetError
from .child import run_module
from .to_onnx import convert_to_onnx
from .equalize import equalize_ranges
from .qdq_onnx import CALIBRATIONS, DEFAULT_CALIBRATION, DEFAULT_ONNX_SKIP, QDQ_OPSET, quantize_onnx
from .quant_groups import SKIP_GROUPS, choose_convs, parse_skip
from .weight_grid import snap_signed_input_convs

ALGOS = ("abs_max", "KL", "hist", "avg", "mse")
# Only convolutions: everything else in these detectors is cheap, and oneDNN
# int8 gains come from the convs.
QUANTIZABLE_OPS = ("conv2d", "depthwise_conv2d")
# Measured on the WIDER 200-image subset (abs_max, 32 calibration images):
# quantizing every conv drops RetinaFace-mnet0.25 by 28 / 33 / 20 AP points
# (easy / medium / hard), and leaving only the depthwise convs in float still
# drops its medium AP by 1.2-1.6 (onnxruntime QDQ and oneDNN int8 alike).
# With the ranges equalized and the stem and output convs in float too, its
# QDQ ONNX (percentile activation ranges, leaky-ReLU convs in float too, see qdq_onnx.py)
# loses 0.05 / 0.16 / 0.23.
DEFAULT_SKIP = "depthwise,first,outputs"
# A config's ``int8`` section; a family whose int8 chains lose accuracy names more float groups
# or another way to set the QDQ ONNX's activation ranges.
INT8_DEFAULTS = {"onnx_skip": DEFAULT_ONNX_SKIP, "onnx_calibration": DEFAULT_CALIBRATION}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
PROGRAM = "model.pdmodel"
PARAMS = "model.pdiparams"
ONNX = "model.onnx"


def calibration_images(calib_dir, num, seed=0):
    """``num`` image paths under ``calib_dir`` (recursive), a fixed random
    sample so a rerun calibrates on the same images."""
    import numpy as np
    if not os.path.isdir(calib_dir):
        raise PPFaceDetError(f"--calib_dir: not a directory: {calib_dir}")
    paths = sorted(os.path.join(root, name) for root, _, names in os.walk(calib_dir)
                   for name in names if name.lower().endswith(IMAGE_EXTENSIONS))
    if not paths:
        raise PPFaceDetError(f"--calib_dir: no {'/'.join(IMAGE_EXTENSIONS)} images under {calib_dir}")
    if num <= 0:
        raise PPFaceDetError(f"--calib_num must be positive, got {num}")
    order = np.random.RandomState(seed).permutation(len(paths))[:num]
    return [paths[i] for i in sorted(order)]


def read_infer_cfg(folder):
    path = os.path.join(folder, "infer_cfg.yml")
    if not os.path.isfile(path):
        raise PPFaceDetError(f"{folder}: no infer_cfg.yml (not an exported model folder)")
    with open(path) as f:
        return yaml.safe_load(f)


def calibration_batches(paths, input_settings):
    """Generator factory of ``{"image": [1,3,H,W]}`` feeds, preprocessed by the
    deployed input policy. One image per batch: sizes may differ."""
    from ..data.image_io import read_image
    from ..data.preprocess import InputPolicy
    policy = InputPolicy(**input_settings)

    def batches():
        for path in paths:
            yield {"image": policy(read_image(path))[0][None]}
    return batches


def skipped_conv_weights(program, skip):
    """Filter names of the convs left in float (``skip``: groups of quant_groups.py)."""
    ops = program.global_block().ops
    convs = [op for op in ops if op.type in QUANTIZABLE_OPS]
    chosen = choose_convs(convs, skip, _is_depthwise, lambda conv: _feeds_a_conv(ops, conv))
    return sorted({op.input("Filter")[0] for op in chosen})


def _is_depthwise(conv):
    return conv.type == "depthwise_conv2d" or (conv.attr("groups") > 1)


def _feeds_a_conv(ops, conv):
    """Whether any conv is downstream of ``conv`` in the (topologically ordered) op list."""
    reached = set(conv.output("Output"))
    start = ops.index(conv) + 1
    for op in ops[start:]:
        if reached.intersection(op.input_arg_names):
            if op.type in QUANTIZABLE_OPS:
                return True
            reached.update(op.output_arg_names)
    return False


def fold_conv_bias(program):
    """Point each conv's bias add at the 1-D bias parameter (axis 1) instead of
    its [1,C,1,1] reshape; returns how many were rewritten.

    The old-format export adds a conv bias through reshape2 + elementwise_add
    (axis -1), which oneDNN's conv_bias fuse pass rejects, leaving a separate
    add, and in int8 an extra quantize/dequantize pair, per biased conv. The
    rewritten add computes the same sum and fuses into the conv.
    """
    block = program.global_block()
    producer = {name: op for op in block.ops for name in op.output_arg_names}
    reshapes = []
    for op in block.ops:
        if op.type != "elementwise_add":
            continue
        conv, reshape = producer.get(op.input("X")[0]), producer.get(op.input("Y")[0])
        if conv is None or reshape is None or conv.type not in QUANTIZABLE_OPS or reshape.type != "reshape2":
            continue
        bias = block.var(reshape.input("X")[0])
        if not bias.persistable or len(bias.shape) != 1:
            continue
        op._rename_input(op.input("Y")[0], bias.name)
        op._set_attr("axis", 1)
        reshapes.append(reshape)
    for reshape in reshapes:
        still_read = any(reshape.output("Out")[0] in op.input_arg_names for op in block.ops if op is not reshape)
        if not still_read:
            block._remove_op(list(block.ops).index(reshape))
    program._sync_with_cpp()
    return len(reshapes)


def unshare_parameters(program, scope):
    """Give every op its own copy of a parameter that several ops read (heads
    shared across strides); returns how many copies were made. The copies hold
    the same values, so the float program is unchanged; each conv then owns
    its filter and bias, which ``fold_conv_scale`` needs.
    """
    import numpy as np
    block = program.global_block()
    readers = {}
    for op in block.ops:
        for name in set(op.input_arg_names):
            readers.setdefault(name, []).append(op)
    copies = 0
    for name, ops in readers.items():
        var = block.var(name) if block.has_var(name) else None
        if var is None or not var.persistable or len(ops) < 2:
            continue
        value = np.array(scope.find_var(name).get_tensor())
        for index, op in enumerate(ops[1:], start=1):
            copy_name = f"{name}@copy{index}"
            block.create_var(name=copy_name, shape=var.shape, dtype=var.dtype, persistable=True)
            scope.var(copy_name).get_tensor().set(value.copy(), _cpu_place())
            op._rename_input(name, copy_name)
            copies += 1
    program._sync_with_cpp()
    return copies


def fold_conv_scale(program, scope, keep=()):
    """Fold a learnable scalar multiplying a biased conv's output (SCRFD's
    per-stride box ``Scale``) into that conv's filter and bias, and drop the
    multiply; returns how many were folded. Run after ``unshare_parameters``
    and ``fold_conv_bias``.

    With conv -> bias add -> scalar multiply, oneDNN's int8 passes return
    SCRFD-500M's boxes off by up to 7 stride units although the same program
    is right in float; conv(x) * s is the conv with filter and bias times s.
    A filter or bias read by another op too is left alone, as are variables in
    ``keep`` (the fetch targets).
    """
    import numpy as np
    block = program.global_block()
    ops = list(block.ops)
    producer = {name: op for op in ops for name in op.output_arg_names}
    readers = {}
    for op in ops:
        for name in op.input_arg_names:
            readers.setdefault(name, []).append(op)
    folded = []
    for mul in ops:
        if mul.type != "elementwise_mul":
            continue
        add, factor = producer.get(mul.input("X")[0]), block.var(mul.input("Y")[0])
        if add is None or add.type != "elementwise_add" or not factor.persistable or int(np.prod(factor.shape)) != 1:
            continue
        conv, bias = producer.get(add.input("X")[0]), block.var(add.input("Y")[0])
        if conv is None or conv.type not in QUANTIZABLE_OPS or not bias.persistable:
            continue
        weight = conv.input("Filter")[0]
        out = mul.output("Out")[0]
        if (len(readers.get(weight, [])) != 1 or len(readers.get(bias.name, [])) != 1
                or len(readers.get(add.output("Out")[0], [])) != 1 or out in keep):
            continue
        value = np.float32(np.array(scope.find_var(factor.name).get_tensor()).reshape(-1)[0])
        for name in (weight, bias.name):
            tensor = scope.find_var(name).get_tensor()
            tensor.set(np.array(tensor) * value, _cpu_place())
        for reader in readers.get(out, []):
            reader._rename_input(out, add.output("Out")[0])
        folded.append(mul)
    for mul in folded:
        block._remove_op(list(block.ops).index(mul))
    program._sync_with_cpp()
    return len(folded)


def _cpu_place():
    import paddle
    return paddle.CPUPlace()


def quantize_exported_model(fp32_dir, output_dir, calib_paths, algo="abs_max", skip=DEFAULT_SKIP,
                            onnx_skip=DEFAULT_ONNX_SKIP, onnx_calibration=DEFAULT_CALIBRATION):
    """Quantize an old-format fp32 export in this process (which must have
    been started with ``FLAGS_enable_pir_api=0``); writes program, params and
    an ``infer_cfg.yml`` with ``precision: int8`` into ``output_dir``. ``skip``
    and ``onnx_skip`` name the conv groups left in float in the Paddle program
    and in the QDQ ONNX, ``onnx_calibration`` how the latter's activation
    ranges are set."""
    import paddle
    if paddle.framework.use_pir_api():
        raise PPFaceDetError("quantize_exported_model needs FLAGS_enable_pir_api=0 set before paddle is "
                             "imported; use quantize_model, which starts such a process")
    if algo not in ALGOS:
        raise PPFaceDetError(f"--algo '{algo}' is not one of {', '.join(ALGOS)}")
    if not os.path.isfile(os.path.join(fp32_dir, PROGRAM)):
        raise PPFaceDetError(f"{fp32_dir}: no {PROGRAM}; quantization needs an export in the legacy program format")
    from paddleslim.quant import quant_post_static
    infer_cfg = read_infer_cfg(fp32_dir)
    paddle.enable_static()
    exe = paddle.static.Executor(paddle.CPUPlace())
    program, feeds, fetches = paddle.static.load_inference_model(os.path.join(fp32_dir, "model"), exe)
    unshare_parameters(program, paddle.static.global_scope())
    skip_weights = skipped_conv_weights(program, skip)
    fold_conv_bias(program)
    fold_conv_scale(program, paddle.static.global_scope(), keep={v.name for v in fetches})
    batches = calibration_batches(calib_paths, infer_cfg["input"])
    equalize_ranges(exe, program, paddle.static.global_scope(), batches, keep={v.name for v in fetches})
    with tempfile.TemporaryDirectory() as folded_dir:
        def save_folded():
            paddle.static.save_inference_model(os.path.join(folded_dir, "model"),
                                               [program.global_block().var(n) for n in feeds], fetches, exe,
                                               program=program)
        save_folded()
        with open(os.path.join(folded_dir, "infer_cfg.yml"), "w") as f:
            yaml.safe_dump(dict(infer_cfg, program=PROGRAM, params=PARAMS), f, sort_keys=False)
        fp32_onnx = convert_to_onnx(folded_dir, os.path.join(folded_dir, ONNX), opset=QDQ_OPSET)
        # after the ONNX copy: the 7-bit grid is for oneDNN's kernels, not onnxruntime's
        quantized = [op for op in program.global_block().ops
                     if op.type in QUANTIZABLE_OPS and op.input("Filter")[0] not in skip_weights]
        seven_bit = snap_signed_input_convs(program, paddle.static.global_scope(), quantized)
        save_folded()
        quant_post_static(
            exe, folded_dir, output_dir,
            data_loader=batches,
            model_filename=PROGRAM, params_filename=PARAMS,
            save_model_filename=PROGRAM, save_params_filename=PARAMS,
            batch_nums=len(calib_paths), algo=algo, onnx_format=True,
            quantizable_op_type=list(QUANTIZABLE_OPS),
            skip_tensor_list=skip_weights or None)
        quantize_onnx(fp32_onnx, os.path.join(output_dir, ONNX), batches, onnx_skip, onnx_calibration)
    infer_cfg.update(program=PROGRAM, params=PARAMS, onnx=ONNX, precision="int8",
                     quantization={"method": "post_static", "algo": algo, "calib_images": len(calib_paths),
                                   "float_convs": len(skip_weights), "seven_bit_convs": seven_bit})
    with open(os.path.join(output_dir, "infer_cfg.yml"), "w") as f:
        yaml.safe_dump(infer_cfg, f, sort_keys=False, default_flow_style=None)
    return output_dir


def quantize_model(cfg, model, calib_dir, output_dir, calib_num=32, algo="abs_max", skip=DEFAULT_SKIP,
                   onnx_skip=None, onnx_calibration=None):
    """Dygraph model -> INT8 folder ``output_dir/<cfg.name>`` (model.pdmodel,
    model.pdiparams, infer_cfg.yml with ``precision: int8``)."""
    from .static import export_inference_model
    if algo not in ALGOS:
        raise PPFaceDetError(f"--algo '{algo}' is not one of {', '.join(ALGOS)}")
    section = read_section(cfg, "int8", INT8_DEFAULTS)
    onnx_skip = section["onnx_skip"] if onnx_skip is None else onnx_skip
    onnx_calibration = section["onnx_calibration"] if onnx_calibration is None else onnx_calibration
    if onnx_calibration not in CALIBRATIONS:
        raise PPFaceDetError(f"int8.onnx_calibration '{onnx_calibration}' is not one of {', '.join(CALIBRATIONS)}")
    skip, onnx_skip = ",".join(parse_skip(skip)), ",".join(parse_skip(onnx_skip))
    paths = calibration_images(calib_dir, calib_num)
    folder = os.path.join(output_dir, cfg.name)
    with tempfile.TemporaryDirectory() as tmp:
        fp32_dir = export_inference_model(cfg, model, os.path.join(tmp, "fp32"), program_format="legacy")
        list_file = os.path.join(tmp, "calib.txt")
        with open(list_file, "w") as f:
            f.write("\n".join(paths))
        if os.path.isdir(folder):
            shutil.rmtree(folder)
        run_in_legacy_process(["--fp32_dir", fp32_dir, "--output_dir", folder, "--calib_list", list_file,
                               "--algo", algo, "--skip", skip, "--onnx_skip", onnx_skip,
                               "--onnx_calibration", onnx_calibration])
    return folder


def run_in_legacy_process(args):
    run_module("ppfacedet.export.quant", args, pir=False, what="post-training quantization")


def main(argv=None):
    """Child-process entry of ``quantize_model`` (and usable by hand with
    ``FLAGS_enable_pir_api=0`` on an old-format export)."""
    parser = argparse.ArgumentParser(description="quant_post_static on an old-format fp32 export")
    parser.add_argument("--fp32_dir", required=True)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--calib_list", required=True, help="text file, one image path per line")
    parser.add_argument("--algo", default="abs_max", choices=ALGOS)
    parser.add_argument("--skip", default=DEFAULT_SKIP,
                        help=f"convs left in float, comma-separated among {', '.join(SKIP_GROUPS)}")
    parser.add_argument("--onnx_skip", default=DEFAULT_ONNX_SKIP, help="the same for the QDQ ONNX")
    parser.add_argument("--onnx_calibration", default=DEFAULT_CALIBRATION, choices=CALIBRATIONS,
                        help="how the QDQ ONNX's activation ranges are set")
    args = parser.parse_args(argv)
    with open(args.calib_list) as f:
        paths = [line.strip() for line in f if line.strip()]
    print(quantize_exported_model(args.fp32_dir, args.output_dir, paths, args.algo, args.skip, args.onnx_skip,
                                  args.onnx_calibration))


if __name__ == "__main__":
    main()
