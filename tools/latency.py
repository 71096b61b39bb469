"""CPU latency of a model config at a given input size.

  python tools/latency.py -c configs/scrfd_500m_kps.yml --input_shape 1,3,480,640 --threads 2 --repeats 20
  python tools/latency.py -c CFG --threads 1 --pipeline photo.jpg   # also preprocess + forward + decode + NMS

Prints the median (and min/max) wall time of the dygraph forward pass over
``--repeats`` runs after ``--warmup`` runs, with random weights unless
``-o weights=...`` is given (the forward's cost does not depend on them).
With ``--pipeline IMAGE`` it also times ``FaceDetector`` end to end on that
image at the model's test protocol (or ``--target_size``); that figure depends
on the weights through the number of candidates NMS sees.
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppfacedet.cli import parse_input_shape  # noqa: E402


def positive_int(text):
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be a positive integer")
    return value


def time_calls(fn, repeats, warmup):
    """Milliseconds of each of ``repeats`` calls, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return times


def summary(label, times):
    return (f"{label}: median {statistics.median(times):.2f} ms "
            f"(min {min(times):.2f}, max {max(times):.2f}, {len(times)} runs)")


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", required=True, help="model config (YAML)")
    parser.add_argument("-o", "--opt", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, e.g. -o weights=W.pdparams (repeatable)")
    parser.add_argument("--input_shape", type=parse_input_shape, default=[1, 3, 480, 640],
                        help="N,3,H,W of the forward's input (default 1,3,480,640 = VGA)")
    parser.add_argument("--threads", type=positive_int, default=1, help="CPU threads (default 1)")
    parser.add_argument("--repeats", type=positive_int, default=20, help="timed runs (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    parser.add_argument("--pipeline", metavar="IMAGE", default=None,
                        help="also time FaceDetector (preprocess, forward, decode, NMS) on this image")
    parser.add_argument("--target_size", type=int, default=None,
                        help="with --pipeline: letterbox into N x N instead of the config's protocol")
    return parser


def limit_threads(threads):
    """Set before paddle is imported: the math libraries read these when they load."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)


def measure(args):
    """-> {'forward_ms': median[, 'pipeline_ms': median]}, also printed."""
    import numpy as np
    import paddle

    from ppfacedet.core import load_config
    from ppfacedet.engine.checkpoint import load_weights
    from ppfacedet.modeling.detector import build_model

    paddle.set_device("cpu")
    paddle.base.core.set_num_threads(args.threads)
    cfg = load_config(args.config, args.opt)
    model = build_model(cfg)
    if cfg.get("weights"):
        load_weights(model, cfg["weights"])
    model.eval()
    images = paddle.to_tensor(np.random.default_rng(0).uniform(-1, 1, args.input_shape).astype(np.float32))

    def forward():
        with paddle.no_grad():
            outputs = model(images)
            # Reading one value back makes sure the work is done, not just queued.
            next(iter(outputs.values())).numpy()

    shape = "x".join(str(v) for v in args.input_shape)
    print(f"config: {args.config}  input: {shape}  threads: {args.threads}")
    forward_times = time_calls(forward, args.repeats, args.warmup)
    print(summary("forward", forward_times))
    result = {"forward_ms": statistics.median(forward_times)}
    if args.pipeline:
        from ppfacedet.api import FaceDetector
        from ppfacedet.data.image_io import read_image
        image = read_image(args.pipeline)
        detector = FaceDetector.from_model(model, cfg, target_size=args.target_size)
        pipeline_times = time_calls(lambda: detector(image), args.repeats, args.warmup)
        print(summary(f"pipeline ({image.shape[1]}x{image.shape[0]} image)", pipeline_times))
        result["pipeline_ms"] = statistics.median(pipeline_times)
    return result


def main(argv=None):
    args = build_parser().parse_args(argv)
    limit_threads(args.threads)
    from ppfacedet.cli import run
    run(lambda: measure(args) and 0)


if __name__ == "__main__":
    main()
