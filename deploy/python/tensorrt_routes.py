"""TensorRT for an exported program: the route its format takes and the exact calls.

Paddle 3 has two TensorRT integrations and the program format picks one:

- legacy ``model.pdmodel``: ``Config.enable_tensorrt_engine`` builds engines
  for subgraphs when the predictor is created, with dynamic shapes from
  ``set_trt_dynamic_shape_info`` or a tuned shape file (``legacy_calls``).
- PIR ``model.json``: ``enable_tensorrt_engine`` does not apply to PIR
  programs. ``paddle.tensorrt.convert`` rewrites the program with
  ``pd_op.tensorrt_engine`` ops once (``PirConversion``); a plain GPU Config
  then loads the converted program. The conversion is kept in
  MODEL_DIR/tensorrt/<key>/, keyed by precision, batch size and min/opt/max
  shapes, and reused while the source program, weights, paddle and TensorRT
  stay the same.

int8 on both routes takes a PaddleSlim-quantized program (tools/quant.py or a
QAT export: ``precision: int8`` in infer_cfg.yml), as Paddle's TensorRT guides
describe; TensorRT's own calibration is not used.

Named tensorrt_routes, not tensorrt: this folder is put first on sys.path, and
a module named tensorrt would shadow the TensorRT package paddle.tensorrt imports.
"""
import hashlib
import os
import shutil

import yaml

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


class PirConversion:
    """One PIR-TensorRT conversion: the ``paddle.tensorrt`` calls and where their result lives."""

    def __init__(self, model_dir, info, run_mode, batch_size, ranges, disable_ops=()):
        check_precision(info, run_mode)
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
        self.program = os.path.join(self.folder, "model.json")
        self.converted_params = os.path.join(self.folder, "model.pdiparams")

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

    def fingerprint(self):
        """Source program, weights, min_subgraph_size, paddle and TensorRT: a conversion is
        reused only while all of them are the same."""
        import paddle
        return file_digest([self.source, self.params], [str(self.min_subgraph_size), paddle.__version__,
                                                        paddle.version.commit, str(paddle.version.tensorrt())])

    def cached_record(self, fingerprint):
        """The conversion record if a finished conversion of this very program is there, else None."""
        record = os.path.join(self.folder, RECORD)
        if not (os.path.isfile(record) and os.path.isfile(self.program) and os.path.isfile(self.converted_params)):
            return None
        with open(record) as f:
            saved = yaml.safe_load(f) or {}
        return saved if saved.get("fingerprint") == fingerprint else None

    def ensure(self, trt_module):
        """Convert unless a finished conversion of this program is cached; returns its record
        ({engines, outside_tensorrt: {op: count}, ...}). The result is written to a temporary
        folder and renamed into place, so an interrupted conversion is never loaded."""
        fingerprint = self.fingerprint()
        record = self.cached_record(fingerprint)
        if record is not None:
            return record
        parent = os.path.dirname(self.folder)
        os.makedirs(parent, exist_ok=True)
        temp = os.path.join(parent, f".{os.path.basename(self.folder)}.tmp-{os.getpid()}")
        shutil.rmtree(temp, ignore_errors=True)
        os.makedirs(temp)
        try:
            program = self._run(trt_module, os.path.join(temp, "model"))
            for name in ("model.json", "model.pdiparams"):
                if not os.path.isfile(os.path.join(temp, name)):
                    raise TensorRTError(f"paddle.tensorrt.convert({self.source}) wrote no {name} "
                                        f"(found {sorted(os.listdir(temp))}); {FALLBACK}")
            record = {"fingerprint": fingerprint, "source": self.source, "precision": self.precision,
                      "shapes": {k: [list(s) for s in v] for k, v in self.ranges.items()},
                      "disable_ops": self.disable_ops, **op_report(program)}
            with open(os.path.join(temp, RECORD), "w") as f:
                yaml.safe_dump(record, f, sort_keys=False)
            self._publish(temp)
        finally:
            shutil.rmtree(temp, ignore_errors=True)
        return record

    def _run(self, trt, save_model_dir):
        kwargs = self.config_kwargs(save_model_dir)
        config = trt.TensorRTConfig(inputs=[trt.Input(**k) for k in self.input_kwargs()],
                                    **dict(kwargs, precision_mode=getattr(trt.PrecisionMode, kwargs["precision_mode"])))
        try:
            return trt.convert(self.prefix, config)
        except Exception as e:
            raise failure(f"paddle.tensorrt.convert({self.source})", e) from e

    def _publish(self, temp):
        """Rename the finished conversion into place, replacing a stale one."""
        stale = None
        if os.path.exists(self.folder):
            stale = f"{temp}.stale"
            os.rename(self.folder, stale)
        try:
            os.rename(temp, self.folder)
        except OSError:
            if not os.path.isdir(self.folder):  # not another process finishing first: a real failure
                raise
        if stale:
            shutil.rmtree(stale, ignore_errors=True)


def op_report(program):
    """How much of a converted program TensorRT took: engine count and the other ops by name."""
    names = [op.name() for op in program.global_block().ops] if program is not None else []
    outside = {}
    for name in names:
        if name not in PLUMBING_OPS and not name.startswith("builtin."):
            outside[name] = outside.get(name, 0) + 1
    return {"engines": names.count("pd_op.tensorrt_engine"), "outside_tensorrt": outside}


def describe(record, folder):
    """The log line on what TensorRT took over and what stayed with Paddle."""
    outside = record.get("outside_tensorrt", {})
    left = ", ".join(f"{name} x{n}" for name, n in sorted(outside.items())) or "none"
    line = f"PIR-TensorRT ({folder}): {record.get('engines', 0)} engine(s); ops left outside TensorRT: {left}"
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
