"""CPU latency of our exported models against the detectors a user would pick instead.

  python deploy/python/benchmark.py --model_dir output/export/scrfd_500m --int8_model_dir output/int8/scrfd_500m \
      --onnx output/export/scrfd_500m/model.onnx --official_onnx ../shared/data/weights/scrfd/scrfd_500m.onnx \
      --yunet_onnx ../shared/data/weights/yunet/face_detection_yunet_2023mar.onnx \
      --image_file photo.jpg --input_size 640x480 --cpu_threads 2 --output bench.md

One run measures, on the same image and thread count, every runner whose
input is given:
  paddle-fp32   Paddle Inference + oneDNN on --model_dir
  paddle-int8   Paddle Inference + oneDNN int8 on --int8_model_dir (tools/quant.py)
  ort-ours      onnxruntime on --onnx (tools/export_onnx.py)
  ort-int8      onnxruntime on --int8_model_dir's QDQ ONNX (its infer_cfg.yml `onnx`)
  ort-official  onnxruntime on --official_onnx: the peer every ratio refers to
  yunet-cv2     OpenCV's cv2.FaceDetectorYN on --yunet_onnx

Fairness: the image is resized once to --input_size (W x H, VGA by default)
and every runner gets that size: the four SCRFD-style runners the very same
normalised tensor, YuNet the resized BGR image (its detect() normalises
itself). No runner letterboxes to its own test size. Paddle and onnxruntime
use --cpu_threads compute threads (onnxruntime: intra-op threads, sequential
execution), OpenCV cv2.setNumThreads(--cpu_threads).

Two medians per runner, in milliseconds:
  model   the network alone (predictor.run / session.run); the speed goals
          use this one. For YuNet, detect() cannot be split, so both columns
          are detect().
  e2e     resize + normalise + network + decode + NMS (score > --score_threshold).
Each runner is timed in its own child process: two runtimes in one process
slow each other down (onnxruntime's and OpenMP's idle worker threads keep
spinning on the same cores; measured 2x on 2 cores). The children run in
--rounds alternating rounds of --repeats / --rounds runs so drifting machine
load affects all runners alike. The ratio column is latency / the peer's
latency (below 1 is faster than the peer).
"""
import argparse
import json
import os
import subprocess
import sys
import time
import warnings

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
warnings.filterwarnings("ignore", message=".*ccache.*")  # printed by every `import paddle`

from decode import Decoder, select  # noqa: E402
from predictor import Predictor, load_infer_cfg  # noqa: E402
from preprocess import Preprocess  # noqa: E402

PEER = "ort-official"
RUNNER_NAMES = ("paddle-fp32", "paddle-int8", "ort-ours", "ort-int8", PEER, "yunet-cv2")
# The official SCRFD ONNX: (RGB - 127.5) / 128, outputs score_s [M,1] and
# bbox_s [M,4] per stride 8/16/32 (rows y, x, anchor; two anchors), in that order.
OFFICIAL_SCRFD = {
    "input": {"mean": [127.5] * 3, "std": [128.0] * 3, "channel_order": "RGB"},
    "decode": {"kind": "distance", "strides": [8, 16, 32], "num_anchors": 2, "offset": 0.0, "has_kps": False},
    "feature_sizes": {"offsets": {8: 7, 16: 15, 32: 31}},
}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
# INT8 over FP32 latency to reach (issue #12): int8 dot products gain less without VNNI
INT8_GOAL = {"vnni": 0.5, "no vnni": 0.77}


def parse_size(text):
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--input_size '{text}': expected WIDTHxHEIGHT, e.g. 640x480") from None
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"--input_size '{text}': width and height must be positive")
    return w, h


class Runner:
    """A named detector: ``feed(image)`` -> network input, ``infer(feed)`` ->
    raw outputs, ``detect(image)`` -> detections (the end-to-end path)."""

    name = ""
    source = ""

    def feed(self, image):
        raise NotImplementedError

    def infer(self, feed):
        raise NotImplementedError

    def postprocess(self, outputs, input_hw):
        raise NotImplementedError

    def detect(self, image):
        feed = self.feed(image)
        return self.postprocess(self.infer(feed), image.shape[:2])


class DecodingRunner(Runner):
    """Runners whose raw outputs go through deploy/python's numpy decode + NMS."""

    def __init__(self, settings, test):
        self.normalize = Preprocess(settings["input"]).normalize
        self.decoder = Decoder(settings)
        self.test = test

    def feed(self, image):
        return np.ascontiguousarray(self.normalize(image)[None])

    def postprocess(self, outputs, input_hw):
        boxes, scores, landmarks = self.decoder(outputs, input_hw)
        return select(boxes[0], scores[0], None if landmarks is None else landmarks[0], (1.0, 1.0), **self.test)


class PaddleRunner(DecodingRunner):
    def __init__(self, name, model_dir, threads, test):
        self.name, self.source = name, model_dir
        info = load_infer_cfg(model_dir)
        super().__init__(info, test)
        self.predictor = Predictor(model_dir, info, cpu_threads=threads, enable_mkldnn=True)

    def infer(self, feed):
        return self.predictor(feed)


class OnnxRunner(DecodingRunner):
    def __init__(self, name, path, threads, test, settings, output_names=None):
        import onnxruntime as ort
        self.name, self.source = name, path
        super().__init__(settings, test)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # the official export declares fixed output sizes; not an error
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = output_names or [o.name for o in self.session.get_outputs()]

    def infer(self, feed):
        outputs = self.session.run(None, {self.input_name: feed})
        # The official export drops the batch axis ([M, C]); the decoder wants [N, M, C].
        return {name: out if out.ndim == 3 else out[None] for name, out in zip(self.output_names, outputs)}


class YuNetRunner(Runner):
    name = "yunet-cv2"

    def __init__(self, path, input_size, test):
        self.source = path
        self.detector = cv2.FaceDetectorYN.create(path, "", input_size, test["score_threshold"],
                                                  test["nms_threshold"], test["pre_nms_top_k"])

    def feed(self, image):
        return image

    def infer(self, feed):
        return self.detector.detect(feed)[1]

    def postprocess(self, outputs, input_hw):
        return outputs

    def detect(self, image):
        return self.infer(image)


def official_scrfd_outputs(path):
    """Output names of the official ONNX in the decoder's terms, checked by their shapes."""
    import onnxruntime as ort
    outputs = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).get_outputs()
    widths = [o.shape[-1] for o in outputs]
    if len(outputs) != 6 or widths != [1, 1, 1, 4, 4, 4]:
        raise ValueError(f"--official_onnx {path}: expected the box-only SCRFD layout (3 score + 3 bbox outputs), "
                         f"got widths {widths}")
    return [f"{kind}_{s}" for kind in ("score", "bbox") for s in (8, 16, 32)]


def runner_factories(args, test):
    """[(name, factory)] of the runners whose inputs were given, in table order."""
    threads = args.cpu_threads
    factories = []
    if args.model_dir:
        factories.append(("paddle-fp32", lambda: PaddleRunner("paddle-fp32", args.model_dir, threads, test)))
    if args.int8_model_dir:
        factories.append(("paddle-int8", lambda: PaddleRunner("paddle-int8", args.int8_model_dir, threads, test)))
    if args.onnx:
        if not args.model_dir:
            raise ValueError("--onnx needs --model_dir (its infer_cfg.yml says how to normalise and decode)")
        factories.append(("ort-ours", lambda: OnnxRunner("ort-ours", args.onnx, threads, test,
                                                         load_infer_cfg(args.model_dir))))
    int8_onnx = args.int8_model_dir and load_infer_cfg(args.int8_model_dir).get("onnx")
    if int8_onnx:
        factories.append(("ort-int8", lambda: OnnxRunner("ort-int8", os.path.join(args.int8_model_dir, int8_onnx),
                                                         threads, test, load_infer_cfg(args.int8_model_dir))))
    if args.official_onnx:
        factories.append((PEER, lambda: OnnxRunner(PEER, args.official_onnx, threads, test, OFFICIAL_SCRFD,
                                                   official_scrfd_outputs(args.official_onnx))))
    if args.yunet_onnx:
        def yunet():
            cv2.setNumThreads(threads)
            return YuNetRunner(args.yunet_onnx, tuple(args.input_size), test)
        factories.append(("yunet-cv2", yunet))
    if not factories:
        raise ValueError("nothing to measure: give at least one of --model_dir, --int8_model_dir, --onnx, "
                         "--official_onnx, --yunet_onnx")
    for path in (args.model_dir, args.int8_model_dir, args.onnx, args.official_onnx, args.yunet_onnx):
        if path and not os.path.exists(path):
            raise ValueError(f"not found: {path}")
    return factories


def load_images(args):
    if args.image_file:
        paths = [args.image_file]
    else:
        paths = sorted(os.path.join(root, f) for root, _, files in os.walk(args.image_dir)
                       for f in files if f.lower().endswith(IMAGE_EXTENSIONS))[:args.max_images]
    images = []
    for path in paths:
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"cannot read image {path}")
        images.append(image)
    if not images:
        raise ValueError(f"--image_dir {args.image_dir}: no images")
    return images


def time_runner(runner, images, input_size, repeats, warmup):
    """{'model': [ms...], 'e2e': [ms...]} of one runner in this process."""
    resized = [cv2.resize(image, input_size) for image in images]
    feeds = [runner.feed(image) for image in resized]
    for i in range(warmup):
        runner.infer(feeds[i % len(feeds)])
        runner.detect(resized[i % len(resized)])
    times = {"model": [], "e2e": []}
    for i in range(repeats):
        start = time.perf_counter()
        runner.infer(feeds[i % len(feeds)])
        times["model"].append((time.perf_counter() - start) * 1000)
    for i in range(repeats):
        image = images[i % len(images)]
        start = time.perf_counter()
        runner.detect(cv2.resize(image, input_size))
        times["e2e"].append((time.perf_counter() - start) * 1000)
    return times


def measure_in_children(names, argv, repeats, rounds):
    """Run ``--only NAME`` children round by round; -> {name: {'model': [...], 'e2e': [...]}}."""
    times = {name: {"model": [], "e2e": []} for name in names}
    per_round = [repeats // rounds + (1 if r < repeats % rounds else 0) for r in range(rounds)]
    for count in per_round:
        if count == 0:
            continue
        for name in names:
            command = [sys.executable, os.path.abspath(__file__), *argv, "--only", name, "--repeats", str(count)]
            done = subprocess.run(command, capture_output=True, text=True)
            lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
            if done.returncode != 0 or not lines:
                raise RuntimeError(f"timing {name} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
            child = json.loads(lines[-1])
            for key in ("model", "e2e"):
                times[name][key] += child[key]
    return times


def cpu_has_vnni():
    """Whether the CPU has int8 dot-product instructions (AVX512-VNNI or AVX-VNNI); Linux only."""
    try:
        with open("/proc/cpuinfo") as f:
            return "vnni" in f.read()
    except OSError:
        return False


def table(names, times, args):
    medians = {name: {k: float(np.median(v)) for k, v in times[name].items()} for name in names}
    peer = medians.get(PEER)
    sources = {"paddle-fp32": args.model_dir, "paddle-int8": args.int8_model_dir, "ort-ours": args.onnx,
               "ort-int8": args.int8_model_dir,
               PEER: args.official_onnx, "yunet-cv2": args.yunet_onnx}
    w, h = args.input_size
    lines = [f"Input {w}x{h}, {args.cpu_threads} threads, {args.repeats} runs per runner in {args.rounds} rounds "
             f"(median ms). Ratio = latency / {PEER} latency.",
             "",
             "| runner | model | model ms | e2e ms | ratio (model) | ratio (e2e) |",
             "|---|---|---|---|---|---|"]
    for name in names:
        m = medians[name]
        ratio = (f"{m['model'] / peer['model']:.2f}x", f"{m['e2e'] / peer['e2e']:.2f}x") if peer else ("-", "-")
        lines.append(f"| {name} | {os.path.basename(os.path.normpath(sources[name]))} | {m['model']:.2f} | "
                     f"{m['e2e']:.2f} | {ratio[0]} | {ratio[1]} |")
    if peer:
        lines.append("")
        for name, goal, met in (("paddle-fp32", "<= 0.8x the peer", lambda x: x <= 0.8),
                                ("paddle-int8", ">= 2x faster than the peer (<= 0.5x)", lambda x: x <= 0.5)):
            if name in medians:
                ratio = medians[name]["model"] / peer["model"]
                lines.append(f"Goal (model run) {name} {goal}: {ratio:.2f}x -> {'met' if met(ratio) else 'NOT met'}")
    if "ort-int8" in medians and "ort-ours" in medians:
        ratio = medians["ort-int8"]["model"] / medians["ort-ours"]["model"]
        isa = "vnni" if cpu_has_vnni() else "no vnni"
        lines.append(f"INT8 / FP32 (model run, onnxruntime) ort-int8 / ort-ours: {ratio:.2f}x, goal <= "
                     f"{INT8_GOAL[isa]}x on a CPU with {isa} -> {'met' if ratio <= INT8_GOAL[isa] else 'NOT met'}")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", help="our FP32 export (tools/export_model.py)")
    parser.add_argument("--int8_model_dir", help="our INT8 folder (tools/quant.py)")
    parser.add_argument("--onnx", help="our ONNX (tools/export_onnx.py); decoded with --model_dir's infer_cfg.yml")
    parser.add_argument("--official_onnx", help="the official SCRFD ONNX (box-only, dynamic H/W): the peer")
    parser.add_argument("--yunet_onnx", help="OpenCV Zoo YuNet ONNX for cv2.FaceDetectorYN")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--image_file")
    source.add_argument("--image_dir")
    parser.add_argument("--max_images", type=int, default=8, help="images used from --image_dir (cycled)")
    parser.add_argument("--input_size", type=parse_size, default=(640, 480), help="WIDTHxHEIGHT (default 640x480)")
    parser.add_argument("--cpu_threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=50, help="timed runs per runner")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds the runs are split into")
    parser.add_argument("--score_threshold", type=float, default=0.5, help="e2e: detections kept above this score")
    parser.add_argument("--nms_threshold", type=float, default=0.4)
    parser.add_argument("--output", help="also write the table (Markdown) here")
    parser.add_argument("--only", choices=RUNNER_NAMES,
                        help="time this runner alone and print its times as JSON (what each child process does)")
    args = parser.parse_args(argv)
    for key in ("repeats", "rounds", "cpu_threads"):
        if getattr(args, key) < 1:
            parser.error(f"--{key} must be at least 1")
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    test = {"score_threshold": args.score_threshold, "nms_threshold": args.nms_threshold, "pre_nms_top_k": 5000,
            "max_per_image": 750, "nms_box_offset": 1.0}
    try:
        factories = dict(runner_factories(args, test))
        images = load_images(args)
        if args.only:
            if args.only not in factories:
                raise ValueError(f"--only {args.only}: its model was not given")
            runner = factories[args.only]()
            print(json.dumps(time_runner(runner, images, tuple(args.input_size), args.repeats, args.warmup)))
            return 0
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        times = measure_in_children(list(factories), argv, args.repeats, args.rounds)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report = table(list(factories), times, args)
    print(report)
    if args.output:
        with open(args.output, "w") as f:
            f.write(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
