"""A stand-in for paddle.tensorrt (Input, TensorRTConfig, PrecisionMode, convert)
that writes what Paddle 3.x writes, where Paddle writes it, so the tests can
catch a conversion that Paddle could not load. It runs in deploy/python's
conversion child process (convert_child.py imports it by name), so it is set up
through the environment variable PPFACEDET_TRT_STANDIN (JSON):

  log      file that gets one JSON line per call, with the child's pid, cwd and
           CUDA_VISIBLE_DEVICES
  outside  op names the "converted" program keeps outside TensorRT
  release  a file whose appearance the conversion waits for (to make two overlap)
  fail     after writing the engines: "RuntimeError" (a converter error),
           "crash" (the process dies) or "hang" (sleeps until killed)
  write    false: write no program (a convert that returns without saving)
  engine_dir  where to write engines instead of save_model_dir (early Paddle 3.0
           betas used ~/.pp_trt_cache)

What ``convert(model_path, config)`` models (python/paddle/tensorrt/export.py,
converter.py, util.py; paddle/static/pir_io.py):
- save_model_dir equal to the model path is refused (export.py ``convert``);
- one engine per TensorRT subgraph at ``f"{save_model_dir}/engine_{hash}_{n}.trt"``
  (+ ``.pir``), in a folder ``save_model_dir`` made if missing, the string used
  as given: a relative save_model_dir gives a relative engine path
  (converter.py ``CACHE_FILE``, util.py ``get_cache_path``);
- that path stored in the program as the tensorrt_engine op's
  ``engine_serialized_data`` attribute, in the serialized form Paddle 3.3.1's
  model.json uses for string attributes (``{"AT": {"#": "0.a_str", "D": ...},
  "N": name}``);
- the program saved to ``<abspath(save_model_dir)>.json`` and ``.pdiparams``
  (save_inference_model makes the prefix absolute);
- the returned program's ops: data, parameters, one pd_op.tensorrt_engine, the
  ops left outside, fetch.
The source program's own ops are kept so the CPU wheel can run the "converted"
program once tests/test_tensorrt_routes.py's loader stand-in has checked and
removed the engine ops.
"""
import hashlib
import json
import os
import shutil
import sys
import time
from types import SimpleNamespace

STANDIN_ENV = "PPFACEDET_TRT_STANDIN"
PrecisionMode = SimpleNamespace(FP32="PM.FP32", FP16="PM.FP16", INT8="PM.INT8")


def _settings():
    return json.loads(os.environ.get(STANDIN_ENV, "{}"))


def _log(*call):
    path = _settings().get("log")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"call": list(call), "pid": os.getpid(), "cwd": os.getcwd(),
                                "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES")}) + "\n")


def Input(**kwargs):  # noqa: N802  (paddle's name)
    _log("Input", {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()})
    return ("Input", kwargs["name"])


def TensorRTConfig(**kwargs):  # noqa: N802
    _log("TensorRTConfig", {k: v for k, v in kwargs.items() if k != "inputs"} | {"inputs": [list(i) for i in
                                                                                         kwargs["inputs"]]})
    return SimpleNamespace(**kwargs)


def engine_op(path):
    return {"#": "1.tensorrt_engine", "A": [{"AT": {"#": "0.a_str", "D": path}, "N": "engine_serialized_data"}],
            "I": [], "O": [], "OA": []}


def convert(model_path, config):
    settings = _settings()
    _log("convert", model_path, config.save_model_dir)
    if os.path.abspath(config.save_model_dir) == os.path.abspath(model_path):
        raise ValueError("The `config.save_model_dir` and `model_path` cannot be the same.")
    with open(model_path + ".json") as f:
        program = json.load(f)
    while settings.get("release") and not os.path.exists(settings["release"]):
        time.sleep(0.05)
    cache_root = settings.get("engine_dir", config.save_model_dir)
    os.makedirs(cache_root, exist_ok=True)
    name = int(hashlib.sha256(model_path.encode()).hexdigest(), 16) % 10 ** 8
    engine = f"{cache_root}/engine_{name}_1.trt"
    with open(engine, "wb") as f:
        f.write(b"serialized engine")
    with open(f"{cache_root}/engine_{name}_1.pir", "w") as f:
        f.write("group op")
    program["program"]["regions"][0]["blocks"][0]["ops"].insert(0, engine_op(engine))
    fail = settings.get("fail")
    if fail == "crash":
        print("F0000 engine build: out of memory", file=sys.stderr, flush=True)
        os._exit(139)
    if fail == "hang":
        _log("hanging")
        time.sleep(3600)
    if fail == "RuntimeError":
        raise RuntimeError("no converter for pd_op.foo")
    if settings.get("write", True):
        prefix = os.path.abspath(config.save_model_dir)
        with open(prefix + ".json", "w") as f:
            json.dump(program, f)
        shutil.copy(model_path + ".pdiparams", prefix + ".pdiparams")
    names = ["pd_op.data", "builtin.parameter", "builtin.combine", "pd_op.tensorrt_engine", "builtin.split",
             *settings.get("outside", ["pd_op.nearest_interp"]), "pd_op.fetch"]
    ops = [SimpleNamespace(name=lambda n=n: n) for n in names]
    return SimpleNamespace(global_block=lambda: SimpleNamespace(ops=ops))
