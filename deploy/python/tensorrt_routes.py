"""TensorRT for an exported program: the route its format takes and the exact calls.

Paddle 3 has two TensorRT integrations and the program format picks one:

- legacy ``model.pdmodel``: ``Config.enable_tensorrt_engine`` builds engines
  for subgraphs when the predictor is created, with dynamic shapes from
  ``set_trt_dynamic_shape_info`` or a tuned shape file (``legacy_calls``).
- PIR ``model.json``: ``enable_tensorrt_engine`` does not apply to PIR
  programs. ``paddle.tensorrt.convert`` rewrites the program with
  ``pd_op.tensorrt_engine`` ops once (``PirConversion``), in a child process
  that sees only the --gpu_id GPU (convert_child.py); a plain GPU Config then
  loads the converted program. The conversion is kept in
  MODEL_DIR/tensorrt/<key>/, keyed by precision, batch size and min/opt/max
  shapes, written in place (Paddle stores each engine's absolute path in the
  program: conversion_files.py), and reused while the source program,
  weights, settings, paddle, the GPU model and the CUDA, cuDNN and TensorRT
  versions stay the same and every engine file the program names is there.

INT8: ``trt_int8`` takes a PaddleSlim-quantized program (``precision: int8``
in infer_cfg.yml), whose quantize/dequantize scales TensorRT uses
(``use_calib_mode=False``); TensorRT's own calibration is not used. This
project's INT8 exports (tools/quant.py, the QAT export) are always
``model.pdmodel``, because on Paddle 3.3.1 quantization that deploys works
only on the old program format (PaddleSlim's quant_post_static fails on PIR
programs, and the quantized PIR programs Paddle's PTQ/QAT save do not run in
Paddle Inference), so for them ``trt_int8`` always takes the legacy route:
``enable_tensorrt_engine(precision_mode=Int8)``. The PIR
route's ``PrecisionMode.INT8`` would apply only to a quantized ``model.json``,
which nothing here writes.

Named tensorrt_routes, not tensorrt: this folder is put first on sys.path, and
a module named tensorrt would shadow the TensorRT package paddle.tensorrt imports.
"""
import hashlib
import json
import os
import shutil
import sys

from conversion_files import engine_files, held_lock, is_inside, read_record, write_record

RUN_MODES = ("trt_fp32", "trt_fp16", "trt_int8")
LEGACY_PRECISION = {"trt_fp32": "Float32", "trt_fp16": "Half", "trt_int8": "Int8"}  # paddle.inference.PrecisionType
PIR_PRECISION = {"trt_fp32": "FP32", "trt_fp16": "FP16", "trt_int8": "INT8"}  # paddle.tensorrt.PrecisionMode
WORKSPACE_BYTES = 1 << 30
CACHE_FOLDER = "tensorrt"
RECORD = "conversion.yml"
# Ops that carry values in and out of engines rather than compute: what else
# remains in a converted program ran outside TensorRT.
PLUMBING_OPS = {"pd_op.tensorrt_engine", "pd_op.data", "pd_op.feed", "pd_op.fetch"}
FALLBACK = ("fall back to --run_mode paddle (plain GPU), or export with --format legacy "
            "(tools/export_model.py) and use the legacy TensorRT route")


class TensorRTError(RuntimeError):
    """A converted program that cannot be built or run; the message names the fallback."""


def failure(stage, error):
    """The TensorRTError for ``stage`` failing with ``error`` (converters and engines fail
    with many exception types)."""
    return TensorRTError(f"{stage} failed: {type(error).__name__}: {str(error).strip()[:500]}; {FALLBACK}")


def program_format(info):
    program = info["program"]
    if program.endswith(".json"):
        return "pir"
    if program.endswith(".pdmodel"):
        return "legacy"
    raise ValueError(f"infer_cfg.yml: program '{program}' is neither .json (PIR) nor .pdmodel (legacy)")


def check_precision(info, run_mode):
    if run_mode == "trt_int8" and info.get("precision") != "int8":
        raise ValueError("--run_mode trt_int8 takes a PaddleSlim-quantized program (tools/quant.py, or a QAT "
                         "export), whose infer_cfg.yml says 'precision: int8'; this one is float")


def op_names(names, pir):
    """``--trt_disable_ops`` names as each route spells them: PIR ``pd_op.conv2d``, legacy ``conv2d``."""
    bare = [n.strip().split(".", 1)[1] if n.strip().startswith("pd_op.") else n.strip() for n in names]
    return [f"pd_op.{n}" if pir else n for n in bare if n]


def shape_ranges(info, batch_size, min_side, opt_side, max_side):
    """{input name: (min, opt, max) shape}: the image's square sides, batch 1 .. batch_size;
    a --with_nms graph's scale_factor [N, 2] follows the batch."""
    if not 0 < min_side <= opt_side <= max_side:
        raise ValueError(f"TensorRT shapes: need 0 < --trt_min_shape ({min_side}) <= --trt_opt_shape ({opt_side}) "
                         f"<= --trt_max_shape ({max_side})")
    ranges = {"image": ([1, 3, min_side, min_side], [batch_size, 3, opt_side, opt_side],
                        [batch_size, 3, max_side, max_side])}
    if "scale_factor" in info.get("inputs", ["image"]):
        ranges["scale_factor"] = ([1, 2], [batch_size, 2], [batch_size, 2])
    return ranges


def legacy_calls(info, run_mode, batch_size, ranges, tuned_trt_shape_file, collect_trt_shape_info, disable_ops):
    """The Config calls of the legacy route, after enable_use_gpu."""
    calls = [("enable_tensorrt_engine", (), {
        "workspace_size": WORKSPACE_BYTES, "max_batch_size": batch_size,
        "min_subgraph_size": info.get("tensorrt", {}).get("min_subgraph_size", 3),
        "precision_mode": LEGACY_PRECISION[run_mode], "use_static": False, "use_calib_mode": False})]
    if tuned_trt_shape_file and not collect_trt_shape_info:
        calls.append(("enable_tuned_tensorrt_dynamic_shape", (tuned_trt_shape_file, True), {}))
    else:
        calls.append(("set_trt_dynamic_shape_info", tuple(
            {name: shapes[i] for name, shapes in ranges.items()} for i in (0, 2, 1)), {}))  # min, max, opt
    if disable_ops:
        calls.append(("exp_disable_tensorrt_ops", (op_names(disable_ops, pir=False),), {}))
    return calls


def file_digest(paths, extra):
    digest = hashlib.sha256("\n".join(extra).encode())
    for path in paths:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def device_facts(gpu_id):
    """What a serialized TensorRT engine is bound to: the model of GPU ``gpu_id``
    (name, compute capability), CUDA and cuDNN, the TensorRT that deserializes
    engines (Paddle's) and the one that builds them (the ``tensorrt`` package
    paddle.tensorrt imports)."""
    import paddle
    from paddle.inference import get_trt_runtime_version
    props = paddle.device.cuda.get_device_properties(gpu_id)
    try:
        import tensorrt
        builder = tensorrt.__version__
    except ImportError:  # the conversion then says what to install
        builder = None
    return {"gpu": props.name, "compute_capability": f"{props.major}.{props.minor}", "cuda": paddle.version.cuda(),
            "cudnn": paddle.version.cudnn(), "tensorrt": ".".join(map(str, get_trt_runtime_version())),
            "tensorrt_package": builder}


class PirConversion:
    """One PIR-TensorRT conversion: the ``paddle.tensorrt`` calls and where their result lives.

    Paddle bakes each engine's path into the converted program (conversion_files.py),
    so the conversion is written in place, at an absolute path, into its final
    folder, and never moved: MODEL_DIR/tensorrt/<key>/model.json, model.pdiparams
    and model/engine_*.trt. A lock file beside the folder (<key>.lock) keeps two
    processes from converting into it at once; conversion.yml, written last, marks
    it finished."""

    # the module providing Input, TensorRTConfig, PrecisionMode and convert, and a
    # folder to import it from (None: sys.path)
    converter_module = ("paddle.tensorrt", None)
    lock_timeout_s = 3600  # waiting for another process's conversion (minutes per model at most)

    def __init__(self, model_dir, info, run_mode, batch_size, ranges, disable_ops=()):
        check_precision(info, run_mode)
        model_dir = os.path.abspath(model_dir)  # engine paths must not depend on the working directory
        self.run_mode = run_mode
        self.source = os.path.join(model_dir, info["program"])
        self.params = os.path.join(model_dir, info["params"])
        # convert takes the path prefix of <prefix>.json + <prefix>.pdiparams, as in Paddle's guide
        self.prefix = os.path.splitext(self.source)[0]
        if os.path.splitext(self.params)[0] != self.prefix:
            raise ValueError(f"{model_dir}: paddle.tensorrt.convert needs the program and weights to share a name "
                             f"(<prefix>.json, <prefix>.pdiparams); infer_cfg.yml has {info['program']} and "
                             f"{info['params']}")
        self.precision = PIR_PRECISION[run_mode]
        self.min_subgraph_size = info.get("tensorrt", {}).get("min_subgraph_size", 3)
        self.ranges = ranges
        self.disable_ops = op_names(disable_ops, pir=True)
        image = ranges["image"]
        key = f"{self.precision.lower()}_b{batch_size}_{image[0][2]}-{image[1][2]}-{image[2][2]}"
        if self.disable_ops:
            key += "_no-" + hashlib.sha256(",".join(sorted(self.disable_ops)).encode()).hexdigest()[:8]
        self.folder = os.path.join(model_dir, CACHE_FOLDER, key)
        self.lock = self.folder + ".lock"
        self.record_path = os.path.join(self.folder, RECORD)
        # save_model_dir: convert writes <it>.json, <it>.pdiparams, and the engines inside a folder <it>/
        self.save_model_dir = os.path.join(self.folder, "model")
        self.program = self.save_model_dir + ".json"
        self.converted_params = self.save_model_dir + ".pdiparams"

    def input_kwargs(self):
        """One paddle.tensorrt.Input per program input: random warm-up data at these shapes
        records the shape ranges the engines are built for."""
        return [{"min_input_shape": tuple(lo), "optim_input_shape": tuple(opt), "max_input_shape": tuple(hi),
                 "name": name} for name, (lo, opt, hi) in self.ranges.items()]

    def config_kwargs(self, save_model_dir):
        """paddle.tensorrt.TensorRTConfig's arguments besides ``inputs`` (precision_mode names a
        PrecisionMode member). ``save_model_dir`` is a path prefix: convert saves the program
        with paddle.static.save_inference_model, i.e. <prefix>.json and <prefix>.pdiparams."""
        return {"min_subgraph_size": self.min_subgraph_size, "save_model_dir": save_model_dir,
                "disable_ops": self.disable_ops or None, "precision_mode": self.precision,
                "workspace_size": WORKSPACE_BYTES}

    def fingerprint(self, device):
        """Source program, weights, conversion settings, paddle and the GPU facts
        (``device_facts``): a conversion is reused only while all of them are the same."""
        import paddle
        settings = json.dumps({"config": self.config_kwargs(None), "inputs": self.input_kwargs(), "device": device},
                              sort_keys=True)
        return file_digest([self.source, self.params], [settings, paddle.__version__, paddle.version.commit])

    def cached_record(self, fingerprint, device):
        """(record, None) if a finished conversion of this program for this GPU is here
        and every engine its program names exists inside the folder, else (None, why not)."""
        if not os.path.isfile(self.record_path):
            return None, ("an unfinished conversion (no conversion.yml) is redone" if os.path.isdir(self.folder)
                          else "no conversion yet")
        try:
            saved = read_record(self.record_path)
        except (OSError, ValueError) as e:
            return None, f"{RECORD} is unreadable ({e})"
        if saved.get("fingerprint") != fingerprint:
            if saved.get("device") != device:
                return None, f"it was built for {gpu_line(saved.get('device'))}; this is {gpu_line(device)}"
            return None, "the program, weights, conversion settings or paddle changed"
        for path in (self.program, self.converted_params):
            if not os.path.isfile(path):
                return None, f"{path} is missing"
        try:
            engines = engine_files(self.program)
        except (OSError, ValueError) as e:
            return None, f"{self.program} is unreadable ({e})"
        if len(engines) != saved.get("engines"):
            return None, f"{self.program} names {len(engines)} engine(s), {RECORD} {saved.get('engines')}"
        for path in engines:
            if not is_inside(path, self.folder):
                return None, f"{self.program} names engine {path}, which is not inside {self.folder}"
            if not os.path.isfile(path):
                return None, f"engine file {path}, named by {self.program}, is missing"
        return saved, None

    def ensure(self, gpu_id=0):
        """(record, converted): a finished conversion for GPU ``gpu_id``, converting
        first unless a matching one is cached. The record is {engines, engine_files,
        outside_tensorrt: {op: count}, device, ...}; converted says whether this call converted."""
        from convert_child import run_conversion  # imports this module
        device = device_facts(gpu_id)
        fingerprint = self.fingerprint(device)
        record, _ = self.cached_record(fingerprint, device)
        if record is not None:
            return record, False
        os.makedirs(os.path.dirname(self.folder), exist_ok=True)
        try:
            with held_lock(self.lock, self.lock_timeout_s):
                record, reason = self.cached_record(fingerprint, device)  # another process may have converted
                if record is not None:
                    return record, False
                print(f"PIR-TensorRT: converting {self.source} into {self.folder} on GPU {gpu_id} ({reason})",
                      file=sys.stderr, flush=True)
                self._clear()
                result = run_conversion(self._child_spec(), gpu_id, os.path.join(self.folder, "convert.log"))
                record = self._finish(fingerprint, device, result["ops"])
        except (OSError, TimeoutError) as e:
            raise TensorRTError(f"PIR-TensorRT conversion into {self.folder}: {e}; {FALLBACK}") from e
        return record, True

    def _clear(self):
        """Empty the folder for a new conversion; the record goes first, so an
        interruption here leaves nothing that looks finished."""
        if os.path.exists(self.record_path):
            os.remove(self.record_path)
        shutil.rmtree(self.folder, ignore_errors=True)
        os.makedirs(self.folder)

    def _child_spec(self):
        module, module_path = self.converter_module
        return {"module": module, "module_path": module_path, "run_mode": self.run_mode, "source": self.source,
                "prefix": self.prefix, "inputs": self.input_kwargs(), "config": self.config_kwargs(self.save_model_dir),
                "result": os.path.join(self.folder, "convert_result.json")}

    def _finish(self, fingerprint, device, ops):
        """Check what convert wrote and write the record, last."""
        for path in (self.program, self.converted_params):
            if not os.path.isfile(path):
                raise TensorRTError(f"paddle.tensorrt.convert({self.source}) wrote no {os.path.basename(path)} "
                                    f"(found {sorted(os.listdir(self.folder))}); {FALLBACK}")
        engines, report = engine_files(self.program), op_report(ops)
        missing = [p for p in engines if not (is_inside(p, self.folder) and os.path.isfile(p))]
        if missing or len(engines) != report["engines"]:
            raise TensorRTError(f"{self.program} names engine files {engines} for {report['engines']} tensorrt_engine "
                                f"op(s); not inside {self.folder} or missing: {missing} (a paddle that writes "
                                f"engines outside save_model_dir, as early 3.0 betas did, is not supported); "
                                f"{FALLBACK}")
        record = {"fingerprint": fingerprint, "source": self.source, "precision": self.precision,
                  "shapes": {k: [list(s) for s in v] for k, v in self.ranges.items()},
                  "disable_ops": self.disable_ops, "min_subgraph_size": self.min_subgraph_size, "device": device,
                  **report, "engine_files": engines}
        write_record(self.record_path, record)
        return record


def gpu_line(device):
    if not isinstance(device, dict):
        return "an unknown GPU"
    return (f"{device.get('gpu')} (compute capability {device.get('compute_capability')}), CUDA {device.get('cuda')}, "
            f"cuDNN {device.get('cudnn')}, TensorRT {device.get('tensorrt')} (package {device.get('tensorrt_package')})")


def op_report(names):
    """How much of a converted program TensorRT took, from its op names: engine count and the other ops."""
    outside = {}
    for name in names:
        if name not in PLUMBING_OPS and not name.startswith("builtin."):
            outside[name] = outside.get(name, 0) + 1
    return {"engines": names.count("pd_op.tensorrt_engine"), "outside_tensorrt": outside}


def describe(record, folder, converted):
    """The log line on what TensorRT took over and what stayed with Paddle."""
    outside = record.get("outside_tensorrt", {})
    left = ", ".join(f"{name} x{n}" for name, n in sorted(outside.items())) or "none"
    line = (f"PIR-TensorRT ({folder}, {'converted now' if converted else 'cached conversion'}): "
            f"{record.get('engines', 0)} engine(s); ops left outside TensorRT: {left}")
    if not record.get("engines"):
        line += " -- TensorRT took no part of this program"
    return line


def import_paddle_tensorrt(run_mode):
    """paddle.tensorrt, or a TensorRTError naming the wheel to install."""
    try:
        import paddle.tensorrt as trt
        from paddle.tensorrt import Input, PrecisionMode, TensorRTConfig, convert  # noqa: F401
    except ImportError as e:
        import paddle
        build = (f"CUDA {paddle.version.cuda()}, TensorRT {paddle.version.tensorrt()}"
                 if paddle.is_compiled_with_cuda() else "a CPU-only build")
        raise TensorRTError(
            f"--run_mode {run_mode} on a PIR program (model.json) needs paddle.tensorrt, which this paddle "
            f"cannot import ({e}; paddle {paddle.__version__}, {build}). Install a paddlepaddle-gpu wheel built "
            "with TensorRT, and the 'tensorrt' Python package of the same TensorRT version; or " + FALLBACK) from None
    return trt


def check_outputs(outputs, info):
    """The first run's outputs must not be empty (PIR-TRT can build engines that return
    nothing, Paddle issue #79449); only a --with_nms graph's ``dets`` rows may be zero."""
    may_be_empty = {"dets"} if info.get("with_nms") else set()
    empty = [name for name, value in outputs.items() if value.size == 0 and name not in may_be_empty]
    if empty:
        raise TensorRTError(f"the TensorRT program returned empty outputs ({', '.join(empty)}); {FALLBACK}")
