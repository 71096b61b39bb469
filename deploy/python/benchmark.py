"""CPU latency of our exported models against the detectors a CPU user picks instead.

  python deploy/python/benchmark.py --model_dir output/export/scrfd_500m_kps \
      --official_onnx scrfd_500m_bnkps.onnx --insightface \
      --yunet_model_dir output/export/yunet_n --yunet_onnx face_detection_yunet_2023mar.onnx \
      --image_file photo.jpg --input_size 640x480 --cpu_threads 2 --output bench.md

One run measures, on the same photo and thread count, every runner whose
input is given:
  ours-ENGINE       deploy/python's FaceDetector (infer.py) on --model_dir, once
                    per engine of --engines (paddle: Paddle Inference + oneDNN)
  int8-ENGINE       the same on --int8_model_dir (tools/quant.py)
  ort-official      onnxruntime on --official_onnx, the network alone: the
                    peer of the network goal
  insightface       insightface's own SCRFD class (model_zoo.scrfd.SCRFD, pip
                    install insightface) on --official_onnx, end to end: the
                    peer of the end-to-end goal
  yunet-ours-ENGINE FaceDetector on --yunet_model_dir (our YuNet export)
  yunet-cv2         OpenCV's cv2.FaceDetectorYN on --yunet_onnx: YuNet's peer

Fairness: the photo is resized once to --input_size (W x H, VGA by default)
and every runner detects on that photo with its own pipeline, which for SCRFD
is the same on both sides (letterbox into 640x640, (RGB - 127.5) / 128, score
>= --score_threshold, NMS at --nms_threshold); YuNet runs at the photo's own
size on both sides. ``model`` times the network alone on the runner's input
tensor (ort-official gets ours, so the network goal compares like with like);
``e2e`` times photo in, detections out. Threads: Paddle and OpenVINO use
--cpu_threads; every onnxruntime session (the peers' included) gets the
deploy engine's options (engines.onnxruntime_options: --cpu_threads intra-op
threads, sequential, no spinning), so the network goal compares graphs, not
settings; OpenCV cv2.setNumThreads(--cpu_threads).

Each runner is timed in its own child process: two runtimes in one process
slow each other down (idle worker threads of one spin on the cores the other
needs; measured 2x on 2 cores). The children start once, warm up, then wait;
the parent asks each in turn for a few runs, --rounds times, pausing between
turns so one runtime's spinning threads are asleep before the next runs,
and each turn starts with an untimed run.
Fine alternation matters on a shared machine: its speed drifts by up to 1.7x
within seconds, and runners timed in different stretches gave ratios 0.2
apart from run to run. The table gives medians, each ratio against the
goal's peer, and the CPU model with its ISA flags, since the ratios move
with them.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
warnings.filterwarnings("ignore", message=".*ccache.*")  # printed by every `import paddle`

from engines import ONNX_ENGINES, onnxruntime_options  # noqa: E402
from infer import FaceDetector  # noqa: E402
from predictor import load_infer_cfg  # noqa: E402
from preprocess import Preprocess  # noqa: E402

ENGINES = ("paddle",) + tuple(ONNX_ENGINES)
NETWORK_PEER, E2E_PEER, YUNET_PEER = "ort-official", "insightface", "yunet-cv2"
# (goal text, our runners' prefix, peer, column, largest ratio that meets it)
GOALS = (("end to end, our best engine <= 0.8x insightface's SCRFD class", "ours-", E2E_PEER, "e2e", 0.8),
         ("network only, our best engine <= 1.0x onnxruntime on the official ONNX", "ours-", NETWORK_PEER,
          "model", 1.0),
         ("YuNet-n end to end, our best engine <= 1.0x cv2.FaceDetectorYN", "yunet-ours-", YUNET_PEER, "e2e", 1.0))
ISA_FLAGS = {"AVX2": ("avx2",), "AVX-512": ("avx512f",), "VNNI": ("avx512_vnni", "avx_vnni")}
# INT8 over FP32 latency to reach (issue #12): int8 dot products gain less without VNNI.
INT8_GOAL = {True: 0.5, False: 0.77}


def parse_size(text):
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--input_size '{text}': expected WIDTHxHEIGHT, e.g. 640x480") from None
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"--input_size '{text}': width and height must be positive")
    return w, h


def parse_engines(text):
    engines = [e.strip() for e in text.split(",") if e.strip()]
    unknown = [e for e in engines if e not in ENGINES]
    if unknown or not engines:
        raise argparse.ArgumentTypeError(f"--engines '{text}': expected a comma list of {', '.join(ENGINES)}")
    return engines


def cpu_description():
    """'model; ISA: AVX2 yes, AVX-512 no, VNNI no' from /proc/cpuinfo (Linux), else the platform's name."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return f"{platform.processor() or platform.machine()}; ISA flags unknown (no /proc/cpuinfo)"
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    isa = ", ".join(f"{name} {'yes' if flags & set(names) else 'no'}" for name, names in ISA_FLAGS.items())
    return f"{fields.get('model name', 'unknown CPU')}, {os.cpu_count()} logical CPUs; ISA: {isa}"


class DeployRunner:
    """Our deploy predictor with one engine: ``feed`` preprocesses, ``infer``
    runs the network alone, ``detect`` the whole FaceDetector call."""

    def __init__(self, model_dir, engine, threads, min_score):
        self.detector = FaceDetector(model_dir, min_score=min_score, run_mode=engine, cpu_threads=threads,
                                     enable_mkldnn=True)

    def feed(self, photo):
        return network_input(self.detector.preprocess, photo)

    def infer(self, feed):
        return self.detector.engine(feed)

    def detect(self, photo):
        return self.detector([photo])[0]


def network_input(preprocess, photo):
    batch = np.empty((1, 3, *preprocess.layout(photo.shape[:2])[0]), np.float32)
    preprocess.into(photo, batch[0])
    return batch


class OfficialOnnxRunner:
    """onnxruntime on the official ONNX, network only, on our preprocessed tensor
    (the same normalisation as the official one: infer_cfg.yml ``input``)."""

    def __init__(self, path, threads, model_dir):
        import onnxruntime as ort
        self.session = ort.InferenceSession(path, onnx_session_options(ort, threads),
                                            providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.preprocess = Preprocess(load_infer_cfg(model_dir)["input"])

    def feed(self, photo):
        return network_input(self.preprocess, photo)

    def infer(self, feed):
        return self.session.run(None, {self.input_name: feed})

    detect = None


class InsightFaceRunner:
    """insightface.model_zoo.scrfd.SCRFD, as its README uses it (prepare, then
    detect), on a session with our thread settings."""

    def __init__(self, path, threads, score_threshold, nms_threshold):
        import onnxruntime as ort
        try:
            from insightface.model_zoo.scrfd import SCRFD
        except ImportError as e:
            raise ValueError(f"--insightface: cannot import insightface ({e}); pip install insightface") from None
        session = ort.InferenceSession(path, onnx_session_options(ort, threads), providers=["CPUExecutionProvider"])
        self.detector = SCRFD(model_file=path, session=session)
        self.detector.prepare(-1, input_size=(640, 640), det_thresh=score_threshold, nms_thresh=nms_threshold)

    feed = infer = None

    def detect(self, photo):
        return self.detector.detect(photo)


class YuNetCv2Runner:
    def __init__(self, path, threads, input_size, score_threshold, nms_threshold):
        cv2.setNumThreads(threads)
        self.detector = cv2.FaceDetectorYN.create(path, "", input_size, score_threshold, nms_threshold, 5000)

    feed = infer = None

    def detect(self, photo):
        return self.detector.detect(photo)[1]


def onnx_session_options(ort, threads):
    options = onnxruntime_options(ort, threads)
    options.log_severity_level = 3  # the official exports declare fixed output sizes; not an error
    return options


def runner_factories(args):
    """{name: factory} of the runners whose inputs were given, in table order."""
    threads, score, nms = args.cpu_threads, args.score_threshold, args.nms_threshold
    factories = {}
    for prefix, model_dir in (("ours-", args.model_dir), ("int8-", args.int8_model_dir),
                              ("yunet-ours-", args.yunet_model_dir)):
        for engine in args.engines if model_dir else ():
            factories[prefix + engine] = (lambda d=model_dir, e=engine: DeployRunner(d, e, threads, score))
    if args.official_onnx:
        if not args.model_dir:
            raise ValueError("--official_onnx needs --model_dir: the network runs on our preprocessed tensor")
        factories[NETWORK_PEER] = lambda: OfficialOnnxRunner(args.official_onnx, threads, args.model_dir)
    if args.insightface:
        if not args.official_onnx:
            raise ValueError("--insightface runs insightface's SCRFD class on --official_onnx; give it")
        factories[E2E_PEER] = lambda: InsightFaceRunner(args.official_onnx, threads, score, nms)
    if args.yunet_onnx:
        factories[YUNET_PEER] = lambda: YuNetCv2Runner(args.yunet_onnx, threads, tuple(args.input_size), score, nms)
    if not factories:
        raise ValueError("nothing to measure: give at least one of --model_dir, --int8_model_dir, "
                         "--yunet_model_dir, --official_onnx, --yunet_onnx")
    for path in (args.model_dir, args.int8_model_dir, args.yunet_model_dir, args.official_onnx, args.yunet_onnx):
        if path and not os.path.exists(path):
            raise ValueError(f"not found: {path}")
    return factories


def load_photo(path, input_size):
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"--image_file {path}: cannot read image")
    return cv2.resize(image, input_size, interpolation=cv2.INTER_AREA)


def warm_up(runner, photo, warmup):
    """-> the runner's network input; runs each of its paths ``warmup`` times."""
    feed = runner.feed(photo) if runner.infer else None
    for _ in range(warmup):
        if runner.infer:
            runner.infer(feed)
        if runner.detect:
            runner.detect(photo)
    return feed


def time_runner(runner, photo, feed, repeats):
    """{'model': [ms...], 'e2e': [ms...]} of one runner in this process (empty where it has no such path)."""
    times = {"model": [], "e2e": []}
    for key, run, arg in (("model", runner.infer, feed), ("e2e", runner.detect, photo)):
        for _ in range(repeats if run else 0):
            start = time.perf_counter()
            run(arg)
            times[key].append((time.perf_counter() - start) * 1000)
    return times


def serve(runner, photo, warmup):
    """The child's side: warm up, say ready, then for each run count read
    from stdin print that many runs' times as one JSON line. Each turn
    starts with one untimed run of each path: the first run after the pause
    pays for woken threads and caches the other runners have since filled."""
    feed = warm_up(runner, photo, warmup)
    print("ready", flush=True)
    for line in sys.stdin:
        warm_up(runner, photo, 1)
        print(json.dumps(time_runner(runner, photo, feed, int(line))), flush=True)


class Child:
    """One runner's process (``--only NAME``), asked for runs over a pipe."""

    def __init__(self, name, argv):
        self.name = name
        command = [sys.executable, os.path.abspath(__file__), *argv, "--only", name]
        self.log = tempfile.TemporaryFile("w+")  # a file, not a pipe: nobody reads stderr while it runs
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                        text=True)

    def reply(self, prefix):
        for line in self.process.stdout:
            if line.startswith(prefix):
                return line
        self.process.wait()
        self.log.seek(0)
        raise RuntimeError(f"timing {self.name} failed (exit {self.process.returncode}):\n{self.log.read()[-2000:]}")

    def run(self, count):
        try:
            self.process.stdin.write(f"{count}\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            pass  # the child has died: reply() reports its log
        return json.loads(self.reply("{"))

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait()
        self.log.close()


# Between two runners' turns: longer than OpenMP's default spin-wait after a
# parallel region (Intel's KMP_BLOCKTIME is 200 ms), so a child that just ran
# is asleep when the next one starts.
SWITCH_PAUSE_S = 0.25


def measure_in_children(names, argv, repeats, rounds):
    """Alternate ``--only NAME`` children round by round; -> {name: {'model': [...], 'e2e': [...]}}."""
    times = {name: {"model": [], "e2e": []} for name in names}
    per_round = [repeats // rounds + (1 if r < repeats % rounds else 0) for r in range(rounds)]
    children = []
    try:
        for name in names:  # one at a time: each warms up alone
            children.append(Child(name, argv))
            children[-1].reply("ready")
        for count in per_round:
            for child in children if count else ():
                time.sleep(SWITCH_PAUSE_S)
                got = child.run(count)
                for key in ("model", "e2e"):
                    times[child.name][key] += got[key]
    finally:
        for child in children:
            child.close()
    return times


def cpu_has_vnni():
    """Whether the CPU has int8 dot-product instructions (AVX512-VNNI or AVX-VNNI); Linux only."""
    try:
        with open("/proc/cpuinfo") as f:
            return bool(set(f.read().split()) & set(ISA_FLAGS["VNNI"]))
    except OSError:
        return False


def table(names, times, args):
    medians = {name: {k: float(np.median(v)) if v else None for k, v in times[name].items()} for name in names}

    def ms(value):
        return "-" if value is None else f"{value:.2f}"

    def peer_of(name):
        return next((peer for _, prefix, peer, _, _ in GOALS if name.startswith(prefix) and peer in medians),
                    None)

    w, h = args.input_size
    lines = [f"CPU: {cpu_description()}",
             f"Photo {w}x{h}, {args.cpu_threads} threads, {args.repeats} runs per runner in {args.rounds} rounds "
             f"(median ms). Ratios: ours against the peer of each goal (model: {NETWORK_PEER}; e2e: "
             f"{E2E_PEER}, or {YUNET_PEER} for YuNet).",
             "",
             "| runner | model ms | e2e ms | ratio (model) | ratio (e2e) |",
             "|---|---|---|---|---|"]
    for name in names:
        m, ratios = medians[name], []
        for key, peer in (("model", NETWORK_PEER if name.startswith("ours-") or name.startswith("int8-") else None),
                          ("e2e", peer_of(name))):
            ok = peer in medians and m[key] is not None and medians[peer][key]
            ratios.append(f"{m[key] / medians[peer][key]:.2f}x" if ok else "-")
        lines.append(f"| {name} | {ms(m['model'])} | {ms(m['e2e'])} | {ratios[0]} | {ratios[1]} |")
    lines.append("")
    for goal, prefix, peer, key, limit in GOALS:
        ours = {n: medians[n][key] for n in names if n.startswith(prefix) and medians[n][key] is not None}
        if ours and peer in medians and medians[peer][key]:
            best = min(ours, key=ours.get)
            ratio = ours[best] / medians[peer][key]
            lines.append(f"Goal ({goal}): {best} {ratio:.2f}x -> {'met' if ratio <= limit else 'NOT met'}")
    lines += int8_lines(names, medians, cpu_has_vnni())
    return "\n".join(lines)


def int8_lines(names, medians, vnni):
    """The INT8 goal: our fastest INT8 runner against our fastest FP32 runner
    (each on its best engine), network and end to end; per engine beside it."""
    limit, lines = INT8_GOAL[vnni], []
    for key, what in (("model", "network"), ("e2e", "end to end")):
        fp32 = {n: medians[n][key] for n in names if n.startswith("ours-") and medians[n][key]}
        int8 = {n: medians[n][key] for n in names if n.startswith("int8-") and medians[n][key] is not None}
        if not (fp32 and int8):
            continue
        best32, best8 = min(fp32, key=fp32.get), min(int8, key=int8.get)
        ratio = int8[best8] / fp32[best32]
        same = ", ".join(f"{n[len('int8-'):]} {int8[n] / fp32['ours-' + n[len('int8-'):]]:.2f}x" for n in int8
                         if "ours-" + n[len("int8-"):] in fp32)
        lines.append(f"INT8 / FP32 ({what}, best engine each): {best8} / {best32} {ratio:.2f}x, goal <= {limit}x on "
                     f"a CPU {'with' if vnni else 'without'} VNNI -> {'met' if ratio <= limit else 'NOT met'} "
                     f"(same engine: {same or '-'})")
    return lines


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", help="our SCRFD export (tools/export_model.py, with model.onnx)")
    parser.add_argument("--int8_model_dir", help="our INT8 folder (tools/quant.py)")
    parser.add_argument("--yunet_model_dir", help="our YuNet export")
    parser.add_argument("--engines", type=parse_engines, default=list(ENGINES),
                        help=f"engines to run our folders with (default {','.join(ENGINES)})")
    parser.add_argument("--official_onnx", help="the official SCRFD ONNX of the same model: the network peer")
    parser.add_argument("--insightface", action="store_true",
                        help="also time insightface's SCRFD class on --official_onnx (the end-to-end peer)")
    parser.add_argument("--yunet_onnx", help="OpenCV Zoo YuNet ONNX for cv2.FaceDetectorYN")
    parser.add_argument("--image_file", required=True)
    parser.add_argument("--input_size", type=parse_size, default=(640, 480), help="WIDTHxHEIGHT (default 640x480)")
    parser.add_argument("--cpu_threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=60, help="timed runs per runner")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=20, help="alternating rounds the runs are split into")
    parser.add_argument("--score_threshold", type=float, default=0.5, help="detections kept at or above this score")
    parser.add_argument("--nms_threshold", type=float, default=0.4)
    parser.add_argument("--output", help="also write the table (Markdown) here")
    parser.add_argument("--only", help="serve this runner's timings over stdin/stdout (what each child does)")
    args = parser.parse_args(argv)
    for key in ("repeats", "rounds", "cpu_threads"):
        if getattr(args, key) < 1:
            parser.error(f"--{key} must be at least 1")
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    try:
        factories = runner_factories(args)
        photo = load_photo(args.image_file, tuple(args.input_size))
        if args.only:
            if args.only not in factories:
                raise ValueError(f"--only {args.only}: not one of the runners given ({', '.join(factories)})")
            serve(factories[args.only](), photo, args.warmup)
            return 0
        times = measure_in_children(list(factories), argv, args.repeats, args.rounds)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
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
