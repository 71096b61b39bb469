"""GPU self-check: does Paddle Inference on GPU, with TensorRT on both program
routes, find what the CPU predictor finds, and how fast? With --train, do
multi-GPU training and AMP work?

  python tools/gpu_check.py --weights scrfd_500m_bnkps.onnx --image_dir photos/
  python tools/gpu_check.py --weights W.pdparams --image_dir photos/ --quant_model_dir output/int8/scrfd_500m_kps
  python tools/gpu_check.py --train          # also: 20 iterations on every visible GPU, fp32 then --amp

Exports SCRFD-500M-KPS (--config) in both program formats (PIR model.json ->
PIR-TensorRT, legacy model.pdmodel -> enable_tensorrt_engine), runs
deploy/python's predictor on GPU with run modes paddle, trt_fp32 and trt_fp16
on each (trt_int8 on --quant_model_dir, a tools/quant.py export) and checks
every run's detections on the --image_dir photos against the CPU predictor's:
the same faces (IoU >= 0.95) with scores within 0.01 (fp32), 0.02 (fp16) or
0.05 (int8). The PIR TensorRT runs convert from one working directory (with a
relative model path) and run again from another, where they must load that
conversion instead of converting again. Prints a latency table (ms per image at batch 1 and 8) with the
GPU, CUDA, cuDNN and TensorRT versions.

--train runs tools/gpu_check_train.py under paddle.distributed.launch on
every visible GPU: 20 iterations of retinaface_mnet025 on the synthetic demo
faces, in fp32 then with --amp; it reports img/s per GPU and the loss (mean of
the last 5 iterations) and fails if AMP's loss is not finite or differs from
fp32's by more than 10%.

Exit status: 0 all checks pass, 1 a mismatch or failure, 2 no GPU (or bad arguments).
"""
import argparse
import contextlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
import warnings

import _path  # noqa: F401

warnings.filterwarnings("ignore", message=".*ccache.*")  # printed by every `import paddle`
from latency import time_calls  # noqa: E402

ROOT = _path.ROOT
DEPLOY_INFER = os.path.join(ROOT, "deploy", "python", "infer.py")
SCORE_TOLERANCE = {"paddle": 0.01, "trt_fp32": 0.01, "trt_fp16": 0.02, "trt_int8": 0.05}
MIN_IOU = 0.95
THRESHOLD = 0.5
LATENCY_BATCHES = (1, 8)
WARMUP = 3
TRAIN_CONFIG = "configs/retinaface_mnet025_demo.yml"
TRAIN_ITERS = 20
AMP_LOSS_TOLERANCE = 0.10
PIR_AGAIN = "pir cached, other cwd"
FIRST_CWD, SECOND_CWD = "cwd_first", os.path.join("cwd_second", "deeper")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", default=os.path.join(ROOT, "configs", "scrfd_500m_kps.yml"))
    parser.add_argument("--weights", help="the config's weights: .pdparams, or official .onnx / .pth (converted)")
    parser.add_argument("--image_dir", help="photos with faces to compare on (the first --max_images)")
    parser.add_argument("--max_images", type=int, default=8)
    parser.add_argument("--quant_model_dir", help="an int8 export (tools/quant.py) to run trt_int8 on")
    parser.add_argument("--work_dir", default=os.path.join("output", "gpu_check"))
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per latency figure")
    parser.add_argument("--train", action="store_true", help="also check multi-GPU training and AMP")
    parser.add_argument("--skip_inference", action="store_true", help="with --train: only the training check")
    args = parser.parse_args(argv)
    if args.max_images < 1 or args.repeats < 1:
        parser.error("--max_images and --repeats must be at least 1")
    if args.skip_inference and not args.train:
        parser.error("--skip_inference only makes sense with --train")
    return args, parser


# ---------------------------------------------------------------- environment
def gpu_environment():
    """What this paddle and machine offer: versions and GPU names."""
    import paddle
    env = {"paddle": paddle.__version__, "cuda_build": paddle.is_compiled_with_cuda(), "gpus": []}
    if env["cuda_build"]:
        from paddle.inference import get_trt_compile_version, get_trt_runtime_version
        count = paddle.device.cuda.device_count()
        env.update(gpus=[paddle.device.cuda.get_device_name(i) for i in range(count)],
                   cuda=paddle.version.cuda(), cudnn=paddle.version.cudnn(),
                   tensorrt_compiled=".".join(map(str, get_trt_compile_version())),
                   tensorrt_runtime=".".join(map(str, get_trt_runtime_version())))
    return env


def no_gpu_reason(env):
    if not env["cuda_build"]:
        return (f"no GPU: paddlepaddle {env['paddle']} here is a CPU-only build (no CUDA), so nothing was "
                "checked. Run this on a machine with an NVIDIA GPU and a paddlepaddle-gpu wheel built with TensorRT.")
    if not env["gpus"]:
        return (f"no GPU: paddlepaddle {env['paddle']} has CUDA {env['cuda']} but sees no GPU (check the driver "
                "and CUDA_VISIBLE_DEVICES), so nothing was checked.")
    return None


def environment_line(env):
    gpus = ", ".join(f"{i}: {name}" for i, name in enumerate(env["gpus"]))
    return (f"GPU {gpus} | paddle {env['paddle']} | CUDA {env.get('cuda')} | cuDNN {env.get('cudnn')} | "
            f"TensorRT {env.get('tensorrt_runtime')} (compiled {env.get('tensorrt_compiled')})")


# ---------------------------------------------------------------- inference
def export_both_formats(args):
    """{'pir': folder, 'legacy': folder} of the config with --weights."""
    from ppfacedet.core import load_config
    from ppfacedet.core.errors import PPFaceDetError
    from ppfacedet.export.static import export_inference_model
    if not args.weights or not os.path.isfile(args.weights):
        raise PPFaceDetError(f"--weights: need the model's weights file (got {args.weights})")
    cfg = load_config(args.config)
    if args.weights.endswith(".pdparams"):
        from ppfacedet.cli import model_with_weights
        model = model_with_weights(load_config(args.config, [f"weights={args.weights}"]))
    else:
        from ppfacedet.convert.apply import convert_official_weights
        model, _ = convert_official_weights(cfg, args.weights)
    model.eval()
    return {fmt: export_inference_model(cfg, model, os.path.join(args.work_dir, fmt), program_format=fmt)
            for fmt in ("pir", "legacy")}


def deploy_infer():
    """deploy/python/infer.py, loaded by path: tools/ has an infer.py of its own."""
    import importlib.util
    if "deploy_infer" not in sys.modules:
        spec = importlib.util.spec_from_file_location("deploy_infer", DEPLOY_INFER)
        sys.modules["deploy_infer"] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules["deploy_infer"]


def read_photos(args):
    from ppfacedet.core.errors import PPFaceDetError
    if not args.image_dir or not os.path.isdir(args.image_dir):
        raise PPFaceDetError(f"--image_dir: need a folder of photos with faces (got {args.image_dir})")
    infer = deploy_infer()
    images = [infer.read_image(p) for p in infer.list_images(args.image_dir)[:args.max_images]]
    if not images:
        raise PPFaceDetError(f"--image_dir: no images in {args.image_dir}")
    return images


def run_plan(folders, quant_model_dir):
    """[(label, model folder, run mode, working directory or None)] to check; the
    program format picks the TensorRT route. The PIR TensorRT runs go twice: first
    from one working directory (converting), then from another with a different
    relative path to the same folder, which must load the cached conversion."""
    plan = []
    for fmt, folder in folders.items():
        plan += [(fmt, folder, mode, FIRST_CWD if fmt == "pir" and mode != "paddle" else None)
                 for mode in ("paddle", "trt_fp32", "trt_fp16")]
        if fmt == "pir":
            plan += [(PIR_AGAIN, folder, mode, SECOND_CWD) for mode in ("trt_fp32", "trt_fp16")]
    if quant_model_dir:
        program = deploy_infer().load_infer_cfg(quant_model_dir)["program"]
        plan.append((f"int8 {'pir' if program.endswith('.json') else 'legacy'}", quant_model_dir, "trt_int8", None))
    return plan


@contextlib.contextmanager
def working_directory(work_dir, where, folder):
    """``folder`` as seen from ``work_dir/where``, made the working directory for the
    ``with`` block (``where`` None: as it is, from here)."""
    if where is None:
        yield folder
        return
    cwd, folder = os.path.abspath(os.path.join(work_dir, where)), os.path.abspath(folder)
    os.makedirs(cwd, exist_ok=True)
    previous = os.getcwd()
    os.chdir(cwd)
    try:
        yield os.path.relpath(folder, cwd)
    finally:
        os.chdir(previous)


def conversion_problems(label, detector):
    """A repeated PIR run must have loaded the conversion its first run wrote."""
    if label != PIR_AGAIN:
        return []
    conversion = getattr(detector.engine, "conversion", None)
    if conversion is None:
        return ["no PIR-TensorRT conversion was loaded"]
    folder, _, converted = conversion
    return [f"converted again into {folder} instead of loading the first run's conversion"] if converted else []


def latency(detector, images, repeats):
    """{batch: ms per image} of the predictor alone (preprocessed input, no decoding)."""
    import numpy as np
    tensor, scale = detector.preprocess(images[0])
    result = {}
    for batch in LATENCY_BATCHES:
        feed = np.repeat(tensor[None], batch, axis=0)
        scales = np.repeat(np.asarray([scale], np.float32), batch, axis=0)
        times = time_calls(lambda: detector.engine(feed, scales), repeats, WARMUP)
        result[batch] = statistics.median(times) / batch
    return result


def shape_range(detector, images):
    """TensorRT's min / opt / max square side: the photos' network inputs, rounded up to 32."""
    sides = [max(detector.preprocess(image)[0].shape[1:]) for image in images]
    low, high = (-(-min(sides) // 32) * 32), (-(-max(sides) // 32) * 32)
    return {"trt_min_shape": low, "trt_opt_shape": high, "trt_max_shape": high}


def check_inference(args):
    """One row per run: label, run mode, problems, agreement figures, latency."""
    from ppfacedet.compare.agreement import compare_runs
    infer = deploy_infer()
    images = read_photos(args)
    folders = export_both_formats(args)
    shutil.rmtree(os.path.join(folders["pir"], "tensorrt"), ignore_errors=True)  # the first PIR run converts
    references, batch = {}, max(LATENCY_BATCHES)
    rows = []
    for label, folder, run_mode, where in run_plan(folders, args.quant_model_dir):
        row = {"format": label, "run_mode": run_mode, "problems": []}
        try:
            if folder not in references:  # the CPU predictor on the same program
                cpu = infer.FaceDetector(folder, batch_size=len(images))
                references[folder] = (cpu(images), shape_range(cpu, images))
            reference, shapes = references[folder]
            with working_directory(args.work_dir, where, folder) as model_dir:
                detector = infer.FaceDetector(model_dir, device="GPU", run_mode=run_mode, batch_size=batch, **shapes)
                found = [d for start in range(0, len(images), batch) for d in detector(images[start:start + batch])]
            row.update(compare_runs(reference, found, SCORE_TOLERANCE[run_mode], MIN_IOU, THRESHOLD))
            row["problems"] += conversion_problems(label, detector)
            row["latency"] = latency(detector, images, args.repeats)
        except Exception as e:  # every failure is a finding of the check, reported in its row
            row["problems"].append(f"{type(e).__name__}: {e}")
        rows.append(row)
        print(f"checked {label} {run_mode}: {'ok' if not row['problems'] else 'FAIL'}", flush=True)
    return rows


def inference_report(env, rows):
    lines = [environment_line(env), "",
             f"| format | run mode | faces | result | max score diff | min IoU | "
             f"{' | '.join(f'ms/img b{b}' for b in LATENCY_BATCHES)} |",
             "|---|---|---|---|---|---|" + "---|" * len(LATENCY_BATCHES)]
    for row in rows:
        times = row.get("latency", {})
        cells = [row["format"], row["run_mode"], str(row.get("faces", "-")),
                 "ok" if not row["problems"] else "FAIL",
                 f"{row['max_score_diff']:.4f} (<= {SCORE_TOLERANCE[row['run_mode']]})" if "max_score_diff" in row
                 else "-", f"{row['min_iou']:.3f}" if "min_iou" in row else "-"]
        cells += [f"{times[b]:.2f}" if b in times else "-" for b in LATENCY_BATCHES]
        lines.append("| " + " | ".join(cells) + " |")
    for row in rows:
        for problem in row["problems"]:
            lines.append(f"FAIL {row['format']} {row['run_mode']}: {problem}")
    return "\n".join(lines)


# ---------------------------------------------------------------- training
def train_command(gpu_count, amp, out, log_dir, overrides):
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--devices", ",".join(map(str, range(gpu_count))),
           "--log_dir", log_dir, os.path.join(ROOT, "tools", "gpu_check_train.py"),
           "-c", os.path.join(ROOT, TRAIN_CONFIG), "--iters", str(TRAIN_ITERS), "--out", out]
    for override in overrides:
        cmd += ["-o", override]
    return cmd + (["--amp"] if amp else [])


def train_overrides(work_dir):
    """Synthetic faces and checkpoints inside the work folder; enough epochs for the iterations."""
    data = os.path.join(work_dir, "synthetic")
    return [f"synthetic.root={data}", f"train_dataset.label_file={data}/train/labelv2.txt",
            f"train_dataset.image_root={data}/train/images", f"save_dir={work_dir}/train_output", "epochs=1000"]


def check_training(args, env):
    from ppfacedet.core import load_config
    from ppfacedet.data.synthetic import ensure_synthetic
    work = os.path.abspath(os.path.join(args.work_dir, "train"))
    overrides = train_overrides(work)
    ensure_synthetic(load_config(os.path.join(ROOT, TRAIN_CONFIG), overrides)["synthetic"])  # once, not per rank
    results = {}
    for amp in (False, True):
        name = "amp" if amp else "fp32"
        out, log_dir = os.path.join(work, f"{name}.json"), os.path.join(work, f"log_{name}")
        start = time.perf_counter()
        done = subprocess.run(train_command(len(env["gpus"]), amp, out, log_dir, overrides), cwd=ROOT)
        if done.returncode != 0 or not os.path.isfile(out):
            results[name] = {"error": f"exit status {done.returncode}; see {log_dir}/workerlog.0"}
        else:
            with open(out) as f:
                results[name] = json.load(f)
        print(f"trained {name} in {time.perf_counter() - start:.0f} s", flush=True)
    return results, judge_training(results)


def judge_training(results):
    problems = [f"{name}: {r['error']}" for name, r in results.items() if "error" in r]
    if problems:
        return problems
    fp32, amp = results["fp32"]["loss"], results["amp"]["loss"]
    if not math.isfinite(amp):
        return [f"AMP loss is not finite ({amp})"]
    if not math.isfinite(fp32) or abs(amp - fp32) > AMP_LOSS_TOLERANCE * abs(fp32):
        return [f"AMP loss {amp:.4f} differs from fp32's {fp32:.4f} by more than {AMP_LOSS_TOLERANCE:.0%}"]
    return []


def training_report(results, problems):
    lines = ["| training | GPUs | img/s per GPU | loss (mean of last iterations) |", "|---|---|---|---|"]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | - | - | {r['error']} |")
        else:
            lines.append(f"| {name} | {r['world_size']} | {r['images_per_sec_per_gpu']:.1f} | {r['loss']:.4f} |")
    lines += [f"FAIL training: {p}" for p in problems]
    return "\n".join(lines)


def main(argv=None):
    args, _ = parse_args(argv)
    env = gpu_environment()
    reason = no_gpu_reason(env)
    if reason:
        print(reason, file=sys.stderr)
        return 2
    failed = False
    if not args.skip_inference:
        rows = check_inference(args)
        print(inference_report(env, rows))
        failed |= any(row["problems"] for row in rows)
    if args.train:
        results, problems = check_training(args, env)
        print(training_report(results, problems))
        failed |= bool(problems)
    print("GPU self-check: " + ("FAILED" if failed else "all checks passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    from ppfacedet.cli import run
    run(main)
