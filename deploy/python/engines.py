"""The engines that run an exported network, behind one interface.

``engine(batch, scale_factor=None) -> {output name: array}`` with the names of
infer_cfg.yml ``outputs``; preprocess, decode and NMS around it are the same
for every engine (infer.py). The engines:

  paddle       Paddle Inference on the program (predictor.py), the default and
               the one that reaches TensorRT (``trt_*`` run modes, GPU)
  onnxruntime  onnxruntime's CPU provider on ``model.onnx`` (infer_cfg.yml ``onnx``)
  openvino     OpenVINO's CPU plugin on the same ``model.onnx``
  auto         the fastest engine installed for the device: on CPU the
               ONNX engines installed are timed on the folder's model at
               start (about a second) and the faster one is kept, since which
               one wins depends on the model (on 2 AVX2 cores at VGA size:
               onnxruntime for SCRFD and YuNet, OpenVINO for RetinaFace and
               INT8 models; README, "Benchmark"); Paddle only when neither is
               installed (about 2x their time on every model measured); on GPU
               Paddle

onnxruntime and OpenVINO are optional: asking for one that is not installed,
or for an ONNX engine on a folder without ``model.onnx``, raises
DeviceUnavailable with what to install or run.
"""
import importlib
import os
import sys
import time

import numpy as np

from predictor import RUN_MODES as PADDLE_RUN_MODES
from predictor import DeviceUnavailable, Predictor
from preprocess import Preprocess

ONNX_ENGINES = {"onnxruntime": "onnxruntime", "openvino": "openvino"}  # engine -> pip package
RUN_MODES = PADDLE_RUN_MODES + tuple(ONNX_ENGINES) + ("auto",)
# ``auto``: timed calls per engine, alternating, after one warm-up call each.
AUTO_TIMING_RUNS = 5
AUTO_TIMING_IMAGE_HW = (480, 640)  # a VGA photo, placed by the folder's input policy


def onnx_path(model_dir, info):
    """The folder's ONNX model named by infer_cfg.yml ``onnx``, or None."""
    name = info.get("onnx")
    path = name and os.path.join(model_dir, name)
    return path if path and os.path.isfile(path) else None


def installed(engine):
    try:
        importlib.import_module(ONNX_ENGINES[engine])
    except ImportError:
        return False
    return True


def auto_candidates(model_dir, info, device="CPU"):
    """The engines ``auto`` chooses among here: the installed ONNX engines on
    CPU when the folder has ``model.onnx``, else Paddle."""
    if device == "CPU" and onnx_path(model_dir, info) and not info.get("with_nms"):
        found = [engine for engine in ONNX_ENGINES if installed(engine)]
        if found:
            return found
    return ["paddle"]


def median_seconds(engines, batch, runs=AUTO_TIMING_RUNS):
    """{name: median seconds per call on ``batch``}, the engines taking turns call by call."""
    times = {name: [] for name in engines}
    for engine in engines.values():
        engine(batch)
    for _ in range(runs):
        for name, engine in engines.items():
            start = time.perf_counter()
            engine(batch)
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def fastest_engine(model_dir, info, names, cpu_threads):
    """Builds the engines ``names``, times them on a VGA photo's network input
    and keeps the fastest (the choice and its times go to stderr)."""
    built = {name: create_engine(model_dir, info, name, "CPU", cpu_threads) for name in names}
    (height, width), _, _ = Preprocess(info["input"]).layout(AUTO_TIMING_IMAGE_HW)
    times = median_seconds(built, np.zeros((1, 3, height, width), np.float32))
    best = min(times, key=times.get)
    others = ", ".join(f"{name} {times[name] * 1000:.1f} ms" for name in times if name != best)
    print(f"--run_mode auto: {best} ({times[best] * 1000:.1f} ms per {width}x{height} input; {others})",
          file=sys.stderr)
    return built[best]


def _require_onnx(model_dir, info, engine, device):
    if device != "CPU":
        raise DeviceUnavailable(f"--run_mode {engine} runs on CPU here; use --device CPU, or the paddle / trt_* "
                                "run modes on GPU")
    path = onnx_path(model_dir, info)
    if path is None:
        raise DeviceUnavailable(f"--run_mode {engine}: {model_dir} has no ONNX model (infer_cfg.yml key 'onnx'); "
                                "re-export it with tools/export_model.py, or run tools/export_onnx.py --model_dir "
                                f"{model_dir}")
    try:
        return path, importlib.import_module(ONNX_ENGINES[engine])
    except ImportError as e:
        raise DeviceUnavailable(f"--run_mode {engine}: the '{ONNX_ENGINES[engine]}' package is not installed "
                                f"({e}); pip install {ONNX_ENGINES[engine]}, or use --run_mode paddle") from None


def onnxruntime_options(ort, cpu_threads):
    """Session options of the onnxruntime engine (the benchmark's onnxruntime peers get the same).

    Worker threads sleep instead of spinning between parallel sections: on 2
    AVX2 cores with a busy loop on one of them, spinning took SCRFD-500M-KPS
    from 27 to 54 ms (median) and to 93 ms at p90, while on a quiet machine
    the two are within noise (README, "Benchmark"). A detector shares the
    cores with its application, so it should not burn them waiting.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = cpu_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OnnxRuntimeEngine:
    def __init__(self, path, names, ort, cpu_threads=1):
        self.session = ort.InferenceSession(path, onnxruntime_options(ort, cpu_threads),
                                            providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.names = list(names)

    def __call__(self, batch, scale_factor=None):
        feeds = dict(zip(self.input_names, [np.ascontiguousarray(batch, np.float32), scale_factor]))
        return dict(zip(self.names, self.session.run(self.names, feeds)))


class OpenVINOEngine:
    def __init__(self, path, names, ov, cpu_threads=1):
        # f32 inference everywhere: on CPUs with bf16 units OpenVINO would
        # otherwise lower the precision, and the engines would no longer agree.
        config = {"INFERENCE_NUM_THREADS": cpu_threads, "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_PRECISION_HINT": "f32"}
        model = ov.Core().compile_model(path, "CPU", config)
        self.request = model.create_infer_request()
        self.outputs = {name: model.output(name) for name in names}

    def __call__(self, batch, scale_factor=None):
        results = self.request.infer([np.ascontiguousarray(batch, np.float32)])
        return {name: results[port] for name, port in self.outputs.items()}


def create_engine(model_dir, info, run_mode="paddle", device="CPU", cpu_threads=1, **paddle_choices):
    """The engine for ``run_mode`` (``auto``: see the module docstring); Paddle gets every choice."""
    if run_mode == "auto":
        names = auto_candidates(model_dir, info, device)
        if len(names) > 1:
            return fastest_engine(model_dir, info, names, cpu_threads)
        run_mode = names[0]
    if run_mode in PADDLE_RUN_MODES:
        return Predictor(model_dir, info, device=device, run_mode=run_mode, cpu_threads=cpu_threads,
                         **paddle_choices)
    if run_mode not in ONNX_ENGINES:
        raise ValueError(f"--run_mode {run_mode}: expected one of {', '.join(RUN_MODES)}")
    if info.get("with_nms"):
        raise DeviceUnavailable(f"--run_mode {run_mode}: --with_nms exports have no ONNX model (paddle2onnx "
                                "cannot convert their NMS); use --run_mode paddle, or an export without --with_nms")
    path, module = _require_onnx(model_dir, info, run_mode, device)
    engine = OnnxRuntimeEngine if run_mode == "onnxruntime" else OpenVINOEngine
    return engine(path, info["outputs"], module, cpu_threads)
