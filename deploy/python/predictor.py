"""Paddle Inference predictor for an exported ppfacedet model.

``config_plan`` turns the command-line choices into the list of
``paddle.inference.Config`` calls to make (method name, args, kwargs), so the
choices can be checked without the device; ``build_config`` makes the calls.
GPU and TensorRT requests are checked first (``check_device``): on a CPU-only
build or without a visible GPU they raise DeviceUnavailable with the reason.
"""
import os

import numpy as np
import yaml

RUN_MODES = ("paddle", "trt_fp32", "trt_fp16", "trt_int8")
DEVICES = ("CPU", "GPU")
TRT_PRECISION = {"trt_fp32": "Float32", "trt_fp16": "Half", "trt_int8": "Int8"}
INPUT_NAME = "image"


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


def check_device(device, run_mode):
    """Raise DeviceUnavailable unless ``device`` / ``run_mode`` can run here."""
    import paddle
    if device not in DEVICES:
        raise ValueError(f"--device {device}: expected one of {', '.join(DEVICES)}")
    if run_mode not in RUN_MODES:
        raise ValueError(f"--run_mode {run_mode}: expected one of {', '.join(RUN_MODES)}")
    if run_mode != "paddle" and device != "GPU":
        raise DeviceUnavailable(f"--run_mode {run_mode} runs TensorRT, which needs --device GPU")
    if device == "GPU":
        if not paddle.is_compiled_with_cuda():
            raise DeviceUnavailable("--device GPU: this paddlepaddle build has no CUDA support "
                                    f"(paddle {paddle.__version__} CPU). Install paddlepaddle-gpu, "
                                    "or run with --device CPU")
        if paddle.device.cuda.device_count() == 0:
            raise DeviceUnavailable("--device GPU: paddle has CUDA support but sees no GPU "
                                    "(check CUDA_VISIBLE_DEVICES and the driver)")
    if run_mode != "paddle":
        from paddle.inference import get_trt_compile_version
        if tuple(get_trt_compile_version()) == (0, 0, 0):
            raise DeviceUnavailable(f"--run_mode {run_mode}: this paddlepaddle build was compiled without "
                                    "TensorRT; install a paddlepaddle-gpu wheel built with TensorRT")


def config_plan(model_dir, info, device="CPU", run_mode="paddle", batch_size=1, cpu_threads=1,
                enable_mkldnn=False, trt_min_shape=1, trt_opt_shape=640, trt_max_shape=1280,
                collect_trt_shape_info=False, tuned_trt_shape_file=None, gpu_memory_mb=200, gpu_id=0):
    """The Config calls for these choices: [(method, args, kwargs)], in order."""
    plan = [("set_prog_file", (os.path.join(model_dir, info["program"]),), {}),
            ("set_params_file", (os.path.join(model_dir, info["params"]),), {})]
    if device == "GPU":
        plan.append(("enable_use_gpu", (gpu_memory_mb, gpu_id), {}))
        if collect_trt_shape_info:
            plan.append(("collect_shape_range_info", (tuned_trt_shape_file,), {}))
        if run_mode in TRT_PRECISION:
            plan.append(("enable_tensorrt_engine", (), {
                "workspace_size": 1 << 30, "max_batch_size": batch_size,
                "min_subgraph_size": info.get("tensorrt", {}).get("min_subgraph_size", 3),
                "precision_mode": TRT_PRECISION[run_mode], "use_static": False,
                "use_calib_mode": run_mode == "trt_int8"}))
            if tuned_trt_shape_file and not collect_trt_shape_info:
                plan.append(("enable_tuned_tensorrt_dynamic_shape", (tuned_trt_shape_file, True), {}))
            else:
                plan.append(("set_trt_dynamic_shape_info", (
                    {INPUT_NAME: [1, 3, trt_min_shape, trt_min_shape]},
                    {INPUT_NAME: [batch_size, 3, trt_max_shape, trt_max_shape]},
                    {INPUT_NAME: [batch_size, 3, trt_opt_shape, trt_opt_shape]}), {}))
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
        check_device(choices.get("device", "CPU"), choices.get("run_mode", "paddle"))
        self.names = list(info["outputs"])
        self.predictor = create_predictor(build_config(config_plan(model_dir, info, **choices)))
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
        self.predictor.run()
        return {name: handle.copy_to_cpu() for name, handle in zip(self.names, self.outputs)}
