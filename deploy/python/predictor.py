"""Paddle Inference predictor for an exported ppfacedet model.

``config_plan`` turns the command-line choices into the list of
``paddle.inference.Config`` calls to make (method name, args, kwargs), so the
choices can be checked without the device; ``build_config`` makes the calls.
GPU and TensorRT requests are checked first (``check_device``): on a CPU-only
build or without a visible GPU they raise DeviceUnavailable with the reason.
TensorRT takes one of two routes by program format (tensorrt_routes.py): a
PIR program is converted first (``tensorrt_conversion``), on the same
``gpu_id`` as the predictor, then loaded like any other.
"""
import os
import sys

import numpy as np
import yaml

import tensorrt_routes
from tensorrt_routes import PirConversion, program_format, shape_ranges

RUN_MODES = ("paddle",) + tensorrt_routes.RUN_MODES
DEVICES = ("CPU", "GPU")


class DeviceUnavailable(RuntimeError):
    """The requested device or engine is not available in this paddle build / machine."""


def load_infer_cfg(model_dir):
    """infer_cfg.yml as a dict, with the sections everything else reads checked
    to be there and to be mappings; any problem is a ValueError naming the file."""
    path = os.path.join(model_dir, "infer_cfg.yml")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: --model_dir must be a folder written by "
                                "tools/export_model.py")
    try:
        with open(path, encoding="utf-8") as f:
            info = yaml.safe_load(f)
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        mark = getattr(e, "problem_mark", None)
        what = " ".join(str(getattr(e, "problem", None) or e).split())
        raise ValueError(f"{path}{f':{mark.line + 1}' if mark else ''}: invalid YAML: {what}") from None
    if not isinstance(info, dict):
        raise ValueError(f"{path}: expected a mapping of settings (re-export the model)")
    for key in ("program", "params", "input", "outputs", "decode", "test"):
        if key not in info:
            raise ValueError(f"{path}: missing key '{key}' (re-export the model)")
    for key in ("input", "decode", "test"):
        if not isinstance(info[key], dict):
            raise ValueError(f"{path}: '{key}' must be a mapping (re-export the model)")
    return info


def check_device(device, run_mode, gpu_id=0):
    """Raise DeviceUnavailable unless ``device`` / ``run_mode`` (on GPU ``gpu_id``) can run here."""
    import paddle
    if device not in DEVICES:
        raise ValueError(f"--device {device}: expected one of {', '.join(DEVICES)}")
    if run_mode not in RUN_MODES:
        raise ValueError(f"--run_mode {run_mode}: expected one of {', '.join(RUN_MODES)}")
    if run_mode != "paddle" and device != "GPU":
        raise DeviceUnavailable(f"--run_mode {run_mode} runs TensorRT, which needs --device GPU")
    if device == "GPU":
        if not paddle.is_compiled_with_cuda():
            wheel = "paddlepaddle-gpu" if run_mode == "paddle" else "a paddlepaddle-gpu wheel built with TensorRT"
            raise DeviceUnavailable("--device GPU: this paddlepaddle build has no CUDA support "
                                    f"(paddle {paddle.__version__} CPU). Install {wheel}, "
                                    "or run with --device CPU")
        count = paddle.device.cuda.device_count()
        if count == 0:
            raise DeviceUnavailable("--device GPU: paddle has CUDA support but sees no GPU "
                                    "(check CUDA_VISIBLE_DEVICES and the driver)")
        if not 0 <= gpu_id < count:
            raise DeviceUnavailable(f"--gpu_id {gpu_id}: paddle sees {count} GPU(s), ids 0..{count - 1}")
    if run_mode != "paddle":
        from paddle.inference import get_trt_compile_version
        if tuple(get_trt_compile_version()) == (0, 0, 0):
            raise DeviceUnavailable(f"--run_mode {run_mode}: this paddlepaddle build was compiled without "
                                    "TensorRT; install a paddlepaddle-gpu wheel built with TensorRT")


def tensorrt_conversion(model_dir, info, device="CPU", run_mode="paddle", batch_size=1, trt_min_shape=32,
                        trt_opt_shape=640, trt_max_shape=1280, tuned_trt_shape_file=None, trt_disable_ops=(),
                        **_other_choices):
    """The PIR-TensorRT conversion these choices need, or None (not TensorRT, or a legacy program)."""
    if device != "GPU" or run_mode not in tensorrt_routes.RUN_MODES or program_format(info) != "pir":
        return None
    if tuned_trt_shape_file:
        raise ValueError("--tuned_trt_shape_file applies to legacy programs (model.pdmodel); PIR-TensorRT "
                         "records shapes itself from --trt_min_shape / --trt_opt_shape / --trt_max_shape")
    return PirConversion(model_dir, info, run_mode, batch_size,
                         shape_ranges(info, batch_size, trt_min_shape, trt_opt_shape, trt_max_shape), trt_disable_ops)


def config_plan(model_dir, info, device="CPU", run_mode="paddle", batch_size=1, cpu_threads=1,
                enable_mkldnn=False, trt_min_shape=32, trt_opt_shape=640, trt_max_shape=1280,
                collect_trt_shape_info=False, tuned_trt_shape_file=None, trt_disable_ops=(), gpu_memory_mb=200,
                gpu_id=0):
    """The Config calls for these choices: [(method, args, kwargs)], in order. On the PIR
    TensorRT route they load the converted program (``tensorrt_conversion(...).folder``)."""
    conversion = tensorrt_conversion(model_dir, info, device, run_mode, batch_size, trt_min_shape, trt_opt_shape,
                                     trt_max_shape, tuned_trt_shape_file, trt_disable_ops)
    program, params = ((conversion.program, conversion.converted_params) if conversion else
                       (os.path.join(model_dir, info["program"]), os.path.join(model_dir, info["params"])))
    plan = [("set_prog_file", (program,), {}), ("set_params_file", (params,), {})]
    if device == "GPU":
        plan.append(("enable_use_gpu", (gpu_memory_mb, gpu_id), {}))
        if collect_trt_shape_info:
            plan.append(("collect_shape_range_info", (tuned_trt_shape_file,), {}))
        if run_mode in tensorrt_routes.RUN_MODES and not conversion:
            tensorrt_routes.check_precision(info, run_mode)
            ranges = shape_ranges(info, batch_size, trt_min_shape, trt_opt_shape, trt_max_shape)
            plan += tensorrt_routes.legacy_calls(info, run_mode, batch_size, ranges, tuned_trt_shape_file,
                                                 collect_trt_shape_info, trt_disable_ops)
    else:
        plan.append(("disable_gpu", (), {}))
        plan.append(("set_cpu_math_library_num_threads", (cpu_threads,), {}))
        if enable_mkldnn:
            # oneDNN caches kernels per input shape; a bounded cache keeps
            # memory flat over images of many sizes.
            plan.append(("set_mkldnn_cache_capacity", (10,), {}))
            plan.append(("enable_mkldnn", (), {}))
            plan += onednn_int8_plan(info)
        else:
            plan.append(("disable_mkldnn", (), {}))
    plan.append(("disable_glog_info", (), {}))
    return plan


def onednn_int8_plan(info):
    """An INT8 export (``precision: int8`` in infer_cfg.yml, written by
    tools/quant.py) needs oneDNN's int8 passes to run its quantized convs as
    int8; without oneDNN the same program runs its fake-quant ops in float
    (right outputs, no speed-up). Added by the quantization work (#5 point 4)."""
    return [("enable_mkldnn_int8", (), {})] if info.get("precision") == "int8" else []


def build_config(plan):
    from paddle.inference import Config, PrecisionType
    config = Config()
    for method, args, kwargs in plan:
        if "precision_mode" in kwargs:
            kwargs = dict(kwargs, precision_mode=getattr(PrecisionType, kwargs["precision_mode"]))
        try:
            getattr(config, method)(*args, **kwargs)
        except RuntimeError as e:  # e.g. "To use Paddle-TensorRT, please compile with TENSORRT first"
            raise DeviceUnavailable(f"Config.{method} failed: {str(e).strip().splitlines()[0]}") from None
    return config


class Predictor:
    """Feeds a normalised batch [N,3,H,W] and returns {output name: array}."""

    def __init__(self, model_dir, info, **choices):
        from paddle.inference import create_predictor
        run_mode = choices.get("run_mode", "paddle")
        check_device(choices.get("device", "CPU"), run_mode, choices.get("gpu_id", 0))
        self.info, self.names = info, list(info["outputs"])
        self.tensorrt = run_mode in tensorrt_routes.RUN_MODES
        conversion = tensorrt_conversion(model_dir, info, **choices)
        # (folder, record, converted now) of the PIR-TensorRT conversion loaded, else None
        self.conversion = None
        if conversion is not None:
            record, converted = conversion.ensure(choices.get("gpu_id", 0))
            self.conversion = conversion.folder, record, converted
            print(tensorrt_routes.describe(record, conversion.folder, converted), file=sys.stderr)
        config = build_config(config_plan(model_dir, info, **choices))
        try:
            self.predictor = create_predictor(config)
        except Exception as e:
            if not self.tensorrt:
                raise
            raise tensorrt_routes.failure(f"building the {run_mode} predictor", e) from e
        self.inputs = [self.predictor.get_input_handle(n) for n in self.predictor.get_input_names()]
        handles = self.predictor.get_output_names()
        if len(handles) != len(self.names):
            raise ValueError(f"{model_dir}: the program has {len(handles)} outputs but infer_cfg.yml lists "
                             f"{len(self.names)} ({', '.join(self.names)})")
        self.outputs = [self.predictor.get_output_handle(h) for h in handles]

    def __call__(self, batch, scale_factor=None):
        """``scale_factor`` [N,2] (sx, sy) feeds --with_nms graphs' second input."""
        feeds = [batch] if len(self.inputs) == 1 else [batch, scale_factor]
        if any(f is None for f in feeds):
            raise ValueError("this program takes scale_factor [N,2] besides the image (a --with_nms export)")
        for handle, value in zip(self.inputs, feeds):
            value = np.ascontiguousarray(value, np.float32)
            handle.reshape(list(value.shape))
            handle.copy_from_cpu(value)
        try:
            self.predictor.run()
        except Exception as e:
            if not self.tensorrt:
                raise
            raise tensorrt_routes.failure("running the TensorRT program", e) from e
        outputs = {name: handle.copy_to_cpu() for name, handle in zip(self.names, self.outputs)}
        if self.tensorrt:
            tensorrt_routes.check_outputs(outputs, self.info)
        return outputs
