"""paddle.tensorrt.convert in a child process that sees only the --gpu_id GPU.

paddle.tensorrt works on GPU 0: ``convert`` loads the program with
``Executor(paddle.CUDAPlace(0))`` and saves it the same way, and the converter
places the constants it rewrites on ``CUDAPlace(0)`` (export.py, converter.py,
Paddle 3.x). A serialized engine runs only on the GPU model it was built on,
so the conversion must happen on the GPU the predictor will use. The child is
started with CUDA_VISIBLE_DEVICES naming that one GPU, whose GPU 0 it then is.

The child dies with its parent (child_process.die_with_parent), writes its output to a log file, and reports the
converted program's op names (or its error) in a small JSON result file.

  python convert_child.py '<spec as JSON>'      (started by run_conversion)
"""
import importlib
import json
import os
import subprocess
import sys
import time

from child_process import die_with_parent
from tensorrt_routes import FALLBACK, PIR_PRECISION, TensorRTError, failure, import_paddle_tensorrt

HEARTBEAT_S = 60


def visible_device(gpu_id, environ=os.environ):
    """The CUDA_VISIBLE_DEVICES entry of this process's GPU ``gpu_id`` (the
    variable renumbers GPUs, so GPU 1 under "4,6" is 6)."""
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    entries = None if visible is None else [e.strip() for e in visible.split(",") if e.strip()]
    if gpu_id < 0 or (entries is not None and gpu_id >= len(entries)):
        raise TensorRTError(f"--gpu_id {gpu_id}: " + ("must be 0 or more" if gpu_id < 0 else
                            f"CUDA_VISIBLE_DEVICES={visible!r} makes {len(entries)} GPU(s) visible"))
    return str(gpu_id) if entries is None else entries[gpu_id]


def run_conversion(spec, gpu_id, log_path):
    """Run the child on ``spec`` with only GPU ``gpu_id`` visible; returns its result
    ({"ops": [op names]}). Its output goes to ``log_path``; every HEARTBEAT_S seconds
    a line says it is still converting. Failure raises TensorRTError with the child's
    error, or its exit status and the log's last lines."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=visible_device(gpu_id))
    spec = dict(spec, parent=os.getpid())
    start = time.monotonic()
    with open(log_path, "w") as log:
        child = subprocess.Popen([sys.executable, os.path.abspath(__file__), json.dumps(spec)], env=env,
                                 stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            while True:
                try:
                    status = child.wait(timeout=HEARTBEAT_S)
                    break
                except subprocess.TimeoutExpired:
                    print(f"PIR-TensorRT: still converting ({time.monotonic() - start:.0f} s; log {log_path})",
                          file=sys.stderr, flush=True)
        finally:
            if child.poll() is None:  # interrupted: the child must not outlive us
                child.kill()
                child.wait()
    result = read_result(spec["result"])
    if status == 0 and result and "ops" in result:
        return result
    if result and "error" in result:
        raise TensorRTError(result["error"])
    how = f"was killed by signal {-status}" if status < 0 else f"exited with status {status}"
    raise TensorRTError(f"the conversion process {how} ({log_path}, last lines:\n{log_tail(log_path)}); {FALLBACK}")


def read_result(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
    finally:
        if os.path.exists(path):
            os.remove(path)


def log_tail(path, lines=15):
    with open(path, errors="replace") as f:
        return "".join(f.readlines()[-lines:]).rstrip()


def converter_module(spec):
    """paddle.tensorrt, or the module ``spec["module"]`` names (importable from ``spec["module_path"]``)."""
    if spec["module"] == "paddle.tensorrt":
        return import_paddle_tensorrt(spec["run_mode"])
    if spec.get("module_path"):
        sys.path.insert(0, spec["module_path"])
    return importlib.import_module(spec["module"])


def convert(spec):
    """The documented calls: Input per program input, TensorRTConfig, convert(prefix, config)."""
    trt = converter_module(spec)
    config = spec["config"]
    precision = getattr(trt.PrecisionMode, PIR_PRECISION[spec["run_mode"]])
    inputs = [trt.Input(**{k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()})
              for kwargs in spec["inputs"]]
    config = trt.TensorRTConfig(inputs=inputs, **dict(config, precision_mode=precision))
    try:
        return trt.convert(spec["prefix"], config)
    except Exception as e:  # converters and engine builds fail with many exception types
        raise failure(f"paddle.tensorrt.convert({spec['source']})", e) from e


def main(argv):
    spec = json.loads(argv[1])
    die_with_parent(spec["parent"])
    try:
        program = convert(spec)
        result = {"ops": [op.name() for op in program.global_block().ops] if program is not None else []}
    except TensorRTError as e:
        result = {"error": str(e)}
    temp = spec["result"] + ".tmp"
    with open(temp, "w", encoding="utf-8") as f:
        json.dump(result, f)
    os.replace(temp, spec["result"])
    return 0 if "ops" in result else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
