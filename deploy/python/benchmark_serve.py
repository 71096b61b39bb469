"""Load benchmark of the detection service (serve.py), over loopback.

  python deploy/python/benchmark_serve.py --model_dir output/export/scrfd_500m_kps \
      --image_dir photos/ --levels 1,4,8,16 --requests 240 --output serve_bench.md

Starts serve.py (a child that dies with this process), then for each
concurrency level runs a closed loop: that many client threads, each on its
own keep-alive connection, send the next request as soon as the last one is
answered, --requests in all per level (after --warmup untimed ones). The
photos (--image_dir, resized to --input_size, VGA by default, JPEG) are sent
in turn, and every --bad_every-th request is a bad one instead (truncated
JPEG, random bytes, empty body, 1x1 image, PNG with a broken CRC, in turn),
which must get a 4xx while the photos get 200. Throughput and latency
percentiles count the photos; batch sizes are the service's own histogram
(GET /metrics) over the level. Finally SIGTERM, which must end the service
with status 0.

Goals (issue 21, on the same service): at concurrency 8 a throughput of at
least 1.2x that of one client at a time, p99 at most 4x p50, and no 5xx or
failed connection while bad requests are mixed in. The client threads share
the machine with the service, as a co-located caller would.
"""
import argparse
import http.client
import os
import re
import sys
import threading
import time

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchmark import cpu_description, parse_size  # noqa: E402
from infer import list_images  # noqa: E402
from serve_process import ServeProcess  # noqa: E402

GOAL_SPEEDUP, GOAL_LEVEL, GOAL_TAIL = 1.2, 8, 4.0


def photo_bodies(image_dir, input_size, count):
    paths = list_images(image_dir)[:count]
    if not paths:
        raise ValueError(f"--image_dir {image_dir}: no images")
    bodies = []
    for path in paths:
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is not None:
            bodies.append(cv2.imencode(".jpg", cv2.resize(image, input_size, interpolation=cv2.INTER_AREA),
                                       [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    return bodies


def bad_bodies(jpeg):
    """Bodies the service must refuse with a 4xx."""
    png = cv2.imencode(".png", cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR))[1].tobytes()
    broken_crc = bytearray(png)
    broken_crc[29] ^= 0xFF  # IHDR's CRC
    random_bytes = b"\x00" + np.random.default_rng(0).integers(0, 256, 20000, np.uint8).tobytes()
    tiny = cv2.imencode(".png", np.zeros((1, 1, 3), np.uint8))[1].tobytes()
    return [jpeg[: len(jpeg) // 2], random_bytes, b"", tiny, bytes(broken_crc)]


def batch_histogram(service):
    """{batch size: number of network runs so far} from the service's /metrics."""
    buckets = {int(float(re.search(r'le="([0-9.]+)"', name).group(1))): value
               for name, value in service.metrics().items() if name.startswith("ppfacedet_batch_size_bucket{le=")
               and "+Inf" not in name}
    sizes = sorted(buckets)
    return {size: buckets[size] - (buckets[sizes[i - 1]] if i else 0) for i, size in enumerate(sizes)}


def engine_line(service):
    return next((line for line in service.stderr().splitlines() if line.startswith("--run_mode auto")), "")


def run_level(port, concurrency, requests, photos, bads, bad_every):
    """-> {'wall': s, 'latency': [s of each photo], 'codes': {status: n}, 'bad_codes': {...}, 'failed': n}."""
    plan = [(True, bads[(i // bad_every) % len(bads)]) if bad_every and i % bad_every == bad_every - 1
            else (False, photos[i % len(photos)]) for i in range(requests)]
    next_index, lock = iter(range(requests)), threading.Lock()
    latency, codes, bad_codes, failed = [], {}, {}, [0]

    def client():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                break
            bad, body = plan[i]
            start = time.perf_counter()
            try:
                connection.request("POST", "/v1/detect", body=body,
                                   headers={"Content-Type": "application/octet-stream"})
                response = connection.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                with lock:
                    failed[0] += 1
                continue
            elapsed = time.perf_counter() - start
            with lock:
                target = bad_codes if bad else codes
                target[status] = target.get(status, 0) + 1
                if not bad and status == 200:
                    latency.append(elapsed)
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"wall": time.perf_counter() - start, "latency": latency, "codes": codes, "bad_codes": bad_codes,
            "failed": failed[0]}


def count(codes, low, high):
    return sum(n for code, n in codes.items() if low <= code < high)


def report(results, args, engine, exit_status):
    lines = [f"CPU: {cpu_description()}",
             f"Service: serve.py --run_mode {args.run_mode} --engines {args.engines} --cpu_threads {args.cpu_threads} "
             f"--max_batch "
             f"{args.max_batch} --max_wait_ms {args.max_wait_ms:g} --decode_workers {args.decode_workers}"
             + (f" ({engine})" if engine else ""),
             f"Load: {args.requests} requests per level over loopback, {args.input_size[0]}x{args.input_size[1]} "
             f"JPEG photos, every {args.bad_every}th a bad one; throughput and latency over the photos answered 200.",
             "",
             "| concurrency | photos/s | p50 ms | p99 ms | p99/p50 | batch sizes (runs) | photos 200 | bad 4xx | "
             "5xx | failed |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for level, r in results.items():
        p50, p99 = (float(np.percentile(r["latency"], q)) * 1000 for q in (50, 99))
        batches = ", ".join(f"{size}: {int(n)}" for size, n in r["batches"].items() if n)
        lines.append(f"| {level} | {len(r['latency']) / r['wall']:.1f} | {p50:.1f} | {p99:.1f} | {p99 / p50:.2f} | "
                     f"{batches} | {r['codes'].get(200, 0)} | {count(r['bad_codes'], 400, 500)} | "
                     f"{count(r['codes'], 500, 600) + count(r['bad_codes'], 500, 600)} | {r['failed']} |")
    lines.append("")
    throughput = {level: len(r["latency"]) / r["wall"] for level, r in results.items()}
    if 1 in throughput and GOAL_LEVEL in throughput:
        ratio = throughput[GOAL_LEVEL] / throughput[1]
        lines.append(f"Goal (throughput at concurrency {GOAL_LEVEL} >= {GOAL_SPEEDUP}x concurrency 1): "
                     f"{ratio:.2f}x -> {'met' if ratio >= GOAL_SPEEDUP else 'NOT met'}")
    if GOAL_LEVEL in results:
        latency = results[GOAL_LEVEL]["latency"]
        tail = np.percentile(latency, 99) / np.percentile(latency, 50)
        lines.append(f"Goal (p99 <= {GOAL_TAIL}x p50 at concurrency {GOAL_LEVEL}): {tail:.2f}x -> "
                     f"{'met' if tail <= GOAL_TAIL else 'NOT met'}")
    wrong = sum(count(r["codes"], 300, 600) + count(r["bad_codes"], 500, 600) + count(r["bad_codes"], 200, 400)
                + r["failed"] for r in results.values())
    fives = sum(count(r["codes"], 500, 600) + count(r["bad_codes"], 500, 600) for r in results.values())
    bad_total = sum(sum(r["bad_codes"].values()) for r in results.values())
    lines.append(f"Goal (no 5xx, no failed connection, every bad request a 4xx, every photo a 200; {bad_total} bad "
                 f"requests mixed in): {fives} 5xx, {wrong} wrong answers in all -> "
                 f"{'met' if wrong == 0 else 'NOT met'}")
    lines.append(f"SIGTERM after the load: exit status {exit_status}")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", required=True, help="folder written by tools/export_model.py")
    parser.add_argument("--image_dir", required=True, help="photos to send (resized to --input_size)")
    parser.add_argument("--photos", type=int, default=32, help="how many of the folder's photos to use")
    parser.add_argument("--input_size", type=parse_size, default=(640, 480), help="WIDTHxHEIGHT (default 640x480)")
    parser.add_argument("--levels", default="1,4,8,16", help="client concurrency levels")
    parser.add_argument("--requests", type=int, default=240, help="timed requests per level (photos and bad ones)")
    parser.add_argument("--warmup", type=int, default=16, help="untimed requests before each level")
    parser.add_argument("--bad_every", type=int, default=10, help="every Nth request is a bad one (0: none)")
    parser.add_argument("--run_mode", default="auto")
    parser.add_argument("--cpu_threads", type=int, default=2)
    parser.add_argument("--engines", type=int, default=1)
    parser.add_argument("--decode_workers", type=int, default=2)
    parser.add_argument("--max_batch", type=int, default=8)
    parser.add_argument("--max_wait_ms", type=float, default=5.0)
    parser.add_argument("--output", help="also write the table (Markdown) here")
    args = parser.parse_args(argv)
    try:
        args.levels = [int(v) for v in args.levels.split(",")]
    except ValueError:
        parser.error(f"--levels {args.levels}: expected a comma list of whole numbers")
    if min(args.levels) < 1 or args.requests < 1 or args.bad_every < 0:
        parser.error("--levels and --requests must be at least 1, --bad_every at least 0")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        photos = photo_bodies(args.image_dir, tuple(args.input_size), args.photos)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    bads = bad_bodies(photos[0])
    try:
        service = ServeProcess(["--model_dir", args.model_dir, "--run_mode", args.run_mode, "--cpu_threads",
                                str(args.cpu_threads), "--engines", str(args.engines), "--decode_workers", str(args.decode_workers), "--max_batch",
                                str(args.max_batch), "--max_wait_ms", str(args.max_wait_ms), "--max_queue", "256"])
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    results = {}
    try:
        for level in args.levels:
            run_level(service.port, level, args.warmup, photos, bads, 0)
            before = batch_histogram(service)
            results[level] = run_level(service.port, level, args.requests, photos, bads, args.bad_every)
            after = batch_histogram(service)
            results[level]["batches"] = {size: after[size] - before.get(size, 0) for size in after}
            print(f"concurrency {level}: {len(results[level]['latency']) / results[level]['wall']:.1f} photos/s",
                  file=sys.stderr, flush=True)
        engine = engine_line(service)
    finally:
        exit_status = service.terminate()
    text = report(results, args, engine, exit_status)
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
