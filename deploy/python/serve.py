"""Face detection as an HTTP service: the deploy predictor (infer.py) behind
Starlette on uvicorn, with dynamic batching.

  python deploy/python/serve.py --model_dir output/export/scrfd_500m_kps --port 8866
  curl --data-binary @photo.jpg 'http://127.0.0.1:8866/v1/detect?threshold=0.5&max_faces=10'

POST /v1/detect    the image bytes as the body (JPEG, PNG, BMP, WebP) ->
                   200 {"faces": [{"box", "score", "landmarks"}]}, exactly
                   what infer.py writes for that image at that threshold;
                   query parameters threshold (default --threshold) and
                   max_faces (the highest-scoring ones; default all)
GET /healthz       200 while the process serves
GET /readyz        200 once the model is loaded and warmed up, 503 before
                   that and while shutting down
GET /metrics       Prometheus text format (serve_metrics.py)

Errors are JSON {"error": "..."}: 400 bad input (empty, not an image,
truncated, corrupt, too small, bad query), 413 body above --max_body_mb or
image above --max_pixels (read from the header, before decoding), 503 with
Retry-After when --max_queue requests are already accepted or the model is
still loading, 504 when a request has waited --timeout_s. A client that
disconnects is dropped from the queue. SIGTERM: stop accepting, answer
every accepted request, exit 0.

Requests are decoded in worker processes (decode_workers.py) and run through
the network in batches (batcher.py): one inference at a time per engine
(--engines, each on --cpu_threads).
"""
import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import socket
import sys
import time
import traceback
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
warnings.filterwarnings("ignore", message=".*ccache.*")  # printed by every `import paddle`

import uvicorn  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.requests import ClientDisconnect  # noqa: E402
from starlette.responses import JSONResponse, PlainTextResponse, Response  # noqa: E402
from starlette.routing import Route  # noqa: E402

from batcher import Batcher  # noqa: E402
from decode_workers import DecodePool  # noqa: E402
from engines import RUN_MODES  # noqa: E402
from image_check import declared_size  # noqa: E402
from infer import FaceDetector, InputError, detections_to_json  # noqa: E402
from predictor import load_infer_cfg  # noqa: E402
from serve_metrics import ServiceMetrics  # noqa: E402

QUERY_PARAMETERS = ("threshold", "max_faces")
WARM_UP_HW = (480, 640)  # a VGA photo


class Refusal(Exception):
    """An answer other than 200: HTTP status, message, metrics reason."""

    def __init__(self, status, message, reason, headers=None):
        super().__init__(message)
        self.status, self.message, self.reason, self.headers = status, message, reason, headers


def parse_query(params, default_threshold):
    """-> (min score, max faces or None); Refusal 400 naming the parameter."""
    unknown = sorted(set(params) - set(QUERY_PARAMETERS))
    if unknown:
        raise Refusal(400, f"unknown query parameter(s) {', '.join(unknown)}; expected "
                           f"{', '.join(QUERY_PARAMETERS)}", "bad_input")
    threshold = default_threshold
    if "threshold" in params:
        try:
            threshold = float(params["threshold"])
        except ValueError:
            threshold = math.nan
        if not 0.0 <= threshold <= 1.0:
            raise Refusal(400, f"threshold={params['threshold']!r}: expected a number from 0 to 1", "bad_input")
    max_faces = None
    if "max_faces" in params:
        try:
            max_faces = int(params["max_faces"])
        except ValueError:
            max_faces = 0
        if max_faces < 1:
            raise Refusal(400, f"max_faces={params['max_faces']!r}: expected a whole number of at least 1",
                          "bad_input")
    return threshold, max_faces


class Service:
    """The model, its batcher and decode workers, the limits and the metrics."""

    def __init__(self, args):
        self.args = args
        self.metrics = ServiceMetrics(args.max_batch)
        self.detector = self.batcher = self.decoders = self.loading = None
        self.ready = self.draining = False
        self.accepted = 0
        self.exit_code = 0
        self.server = None  # the uvicorn.Server, told to exit when the model cannot load

    # ---- life cycle
    async def start(self):
        """Loads and warms up in the background: /healthz answers meanwhile, /readyz says 503."""
        self.decoders = DecodePool(self.args.decode_workers)
        self.loading = asyncio.create_task(self._load())

    async def _load(self):
        try:
            await asyncio.to_thread(self._load_model)
            await self.decoders.warm_up()
        except Exception as e:  # noqa: BLE001 - a model that cannot run ends the service
            print(f"error: cannot serve {self.args.model_dir}: {' '.join(str(e).split()) or type(e).__name__}",
                  file=sys.stderr, flush=True)
            self.exit_code = 2
            if self.server is not None:
                self.server.should_exit = True
            return
        self.ready = True
        print(f"ready: {self.args.model_dir}", flush=True)

    def _load_model(self):
        a = self.args
        detectors = [FaceDetector(a.model_dir, min_score=a.threshold, run_mode=a.run_mode,
                                  cpu_threads=a.cpu_threads, enable_mkldnn=True) for _ in range(a.engines)]
        photo = np.zeros((*WARM_UP_HW, 3), np.uint8)
        for detector in detectors:
            for size in sorted({1, a.max_batch}):  # the engines size their buffers on the first run of a batch size
                detector([photo] * size)
        self.detector = detectors[0]
        self.batcher = Batcher(detectors, a.max_batch, a.max_wait_ms / 1000, self.metrics.batch_size.observe)

    async def stop(self):
        """After uvicorn has answered every accepted request."""
        if self.loading is not None and not self.loading.done():
            self.loading.cancel()
        if self.batcher is not None:
            await asyncio.to_thread(self.batcher.stop)
        if self.decoders is not None:
            await asyncio.to_thread(self.decoders.shutdown)

    # ---- endpoints
    async def healthz(self, request):
        return PlainTextResponse("ok\n")

    async def readyz(self, request):
        if self.draining:
            return PlainTextResponse("shutting down\n", status_code=503)
        if not self.ready:
            return PlainTextResponse("loading the model\n", status_code=503)
        return PlainTextResponse("ready\n")

    async def metrics_text(self, request):
        return Response(self.metrics.render(), media_type=self.metrics.content_type)

    async def detect(self, request):
        arrival = time.monotonic()
        try:
            min_score, max_faces = parse_query(request.query_params, self.args.threshold)
            with self._admitted():
                det = await self._detect(request, min_score, arrival)
            faces = detections_to_json(det, min_score)
            if max_faces is not None:
                faces["faces"] = faces["faces"][:max_faces]
            response = Response(json.dumps(faces), media_type="application/json")
        except Refusal as refusal:
            self.metrics.rejected.labels(refusal.reason).inc()
            response = JSONResponse({"error": refusal.message}, status_code=refusal.status, headers=refusal.headers)
        except ClientDisconnect:
            self.metrics.rejected.labels("disconnected").inc()
            return Response(status_code=499)  # never delivered: nobody is there
        except Exception:  # noqa: BLE001 - a bug, reported, never a dead service
            traceback.print_exc()
            response = JSONResponse({"error": "internal error (see the service's log)"}, status_code=500)
        self.metrics.requests.labels(str(response.status_code)).inc()
        if response.status_code == 200:
            self.metrics.latency.observe(time.monotonic() - arrival)
        return response

    @contextlib.contextmanager
    def _admitted(self):
        """A place among the --max_queue accepted requests, or 503 at once."""
        if not self.ready:
            raise Refusal(503, "the model is loading", "not_ready", {"Retry-After": "1"})
        if self.accepted >= self.args.max_queue:
            raise Refusal(503, f"queue full ({self.accepted} requests accepted); retry later", "queue_full",
                          {"Retry-After": "1"})
        self.accepted += 1
        self.metrics.queue_depth.set(self.accepted)
        try:
            yield
        finally:
            self.accepted -= 1
            self.metrics.queue_depth.set(self.accepted)

    async def _detect(self, request, min_score, arrival):
        deadline = arrival + self.args.timeout_s
        body = await self._body(request, deadline)
        try:
            _, (height, width) = declared_size(body)
        except ValueError as e:
            raise Refusal(400, str(e), "bad_input") from None
        self._check_size(height, width)
        with self.batcher.decoding():
            try:
                image = await asyncio.wait_for(self.decoders.decode(body), deadline - time.monotonic())
            except InputError as e:
                raise Refusal(400, str(e), "bad_input") from None
            except asyncio.TimeoutError:
                raise self._timeout() from None
            if image.shape[:2] != (height, width):
                raise Refusal(400, f"decoded to {image.shape[1]}x{image.shape[0]}, but its header says "
                                   f"{width}x{height}", "bad_input")
            result = asyncio.get_running_loop().create_future()
            job = self.batcher.submit(image, min_score, _deliverer(result))
        disconnected = asyncio.ensure_future(_disconnect(request.receive))
        try:
            done, _ = await asyncio.wait({result, disconnected}, timeout=max(deadline - time.monotonic(), 0),
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            disconnected.cancel()
        if result not in done:
            job.abandoned = True
            if disconnected in done:
                raise ClientDisconnect()
            raise self._timeout()
        return result.result()

    def _timeout(self):
        return Refusal(504, f"not answered within --timeout_s {self.args.timeout_s:g} s", "timeout")

    async def _body(self, request, deadline):
        limit = int(self.args.max_body_mb * 2 ** 20)
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:  # refused unread
            raise Refusal(413, f"body of {int(length)} bytes is above --max_body_mb {self.args.max_body_mb:g}",
                          "too_large")
        chunks, size = [], 0

        async def read():
            nonlocal size
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise Refusal(413, f"body above --max_body_mb {self.args.max_body_mb:g}", "too_large")
                chunks.append(chunk)

        try:
            await asyncio.wait_for(read(), max(deadline - time.monotonic(), 0))
        except asyncio.TimeoutError:
            raise Refusal(408, f"body not received within --timeout_s {self.args.timeout_s:g} s",
                          "timeout") from None
        if not size:
            raise Refusal(400, "empty body: send the image bytes (JPEG, PNG, BMP or WebP)", "bad_input")
        return b"".join(chunks)

    def _check_size(self, height, width):
        a = self.args
        if height * width > a.max_pixels:
            raise Refusal(413, f"image of {width}x{height} = {height * width} pixels is above --max_pixels "
                               f"{a.max_pixels}", "too_large")
        if min(height, width) < a.min_side:
            raise Refusal(400, f"image of {width}x{height} is too small: --min_side is {a.min_side} pixels",
                          "bad_input")
        _, (filled_h, filled_w), _ = self.detector.preprocess.layout((height, width))
        if min(filled_h, filled_w) < 1:
            raise Refusal(400, f"image of {width}x{height} is too elongated for the network's "
                               f"{self.detector.preprocess.target_size}-pixel input", "bad_input")


def _deliverer(future):
    """A callback for the batching thread that settles ``future`` on its event loop."""
    loop = future.get_loop()

    def settle(result, error):
        if not future.done():
            future.set_exception(error) if error is not None else future.set_result(result)

    return lambda result, error: loop.call_soon_threadsafe(settle, result, error)


async def _disconnect(receive):
    """Returns when the client has gone (the body was read before)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def build_app(service):
    @contextlib.asynccontextmanager
    async def lifespan(app):
        await service.start()
        yield
        await service.stop()

    return Starlette(routes=[Route("/v1/detect", service.detect, methods=["POST"]),
                             Route("/healthz", service.healthz), Route("/readyz", service.readyz),
                             Route("/metrics", service.metrics_text)], lifespan=lifespan)


class Server(uvicorn.Server):
    """uvicorn's server, telling the service when a signal starts the shutdown
    (/readyz turns 503 at once, so a load balancer stops sending)."""

    def __init__(self, config, service):
        super().__init__(config)
        self.service = service
        service.server = self

    def handle_exit(self, sig, frame):
        self.service.draining = True
        super().handle_exit(sig, frame)


def listening_socket(host, port):
    """Bound here so that port 0 can be printed as the port it became. The
    protocol is named: asyncio turns Nagle's algorithm off only on sockets whose
    ``proto`` says TCP, and with it on every answer (head and body, two writes)
    waited about 40 ms for the client's delayed ACK."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def usable_cpus():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", required=True, help="folder written by tools/export_model.py")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8866, help="0: any free port (printed at start)")
    parser.add_argument("--run_mode", default="auto", choices=RUN_MODES, help="engine, as in infer.py")
    parser.add_argument("--cpu_threads", type=int, default=usable_cpus(), help="each engine's threads")
    parser.add_argument("--engines", type=int, default=1,
                        help="copies of the network running side by side, each one batch at a time on "
                             "--cpu_threads (engines x threads = cores); more than one pays where the network's "
                             "threads scale poorly, e.g. SCRFD-500M on 2 AVX2 cores: 2 threads take 0.9x the time "
                             "of 1")
    parser.add_argument("--decode_workers", type=int, default=usable_cpus(), help="image decoding processes")
    parser.add_argument("--max_batch", type=int, default=8, help="images per network run at most")
    parser.add_argument("--max_wait_ms", type=float, default=5.0,
                        help="how long a batch waits for requests still being decoded")
    parser.add_argument("--max_queue", type=int, default=64,
                        help="requests accepted at once; more get 503 with Retry-After")
    parser.add_argument("--timeout_s", type=float, default=10.0, help="a request not answered by then gets 504")
    parser.add_argument("--max_body_mb", type=float, default=20.0, help="larger bodies get 413")
    parser.add_argument("--max_pixels", type=int, default=36_000_000,
                        help="larger images (by their header) get 413 before decoding")
    parser.add_argument("--min_side", type=int, default=16,
                        help="images with a shorter side get 400: the models' smallest anchors are 16 pixels")
    parser.add_argument("--threshold", type=float, default=0.5, help="default score threshold (as infer.py's)")
    parser.add_argument("--log_level", default="warning", choices=["critical", "error", "warning", "info", "debug"])
    args = parser.parse_args(argv)
    for key in ("cpu_threads", "engines", "decode_workers", "max_batch", "max_queue", "min_side", "max_pixels"):
        if getattr(args, key) < 1:
            parser.error(f"--{key} must be at least 1")
    for key in ("timeout_s", "max_body_mb"):
        if not getattr(args, key) > 0:
            parser.error(f"--{key} must be positive")
    if not args.max_wait_ms >= 0:
        parser.error("--max_wait_ms must be 0 or more")
    if not 0.0 <= args.threshold <= 1.0:
        parser.error("--threshold must be from 0 to 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        load_infer_cfg(args.model_dir)  # a wrong folder fails here, not in the background
        sock = listening_socket(args.host, args.port)
    except (FileNotFoundError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    service = Service(args)
    config = uvicorn.Config(build_app(service), log_level=args.log_level, access_log=False, lifespan="on",
                            timeout_graceful_shutdown=None)
    server = Server(config, service)
    # uvicorn re-raises the signal that stopped it once it has shut down
    # gracefully; with these handlers in place that ends nothing, and the
    # process exits with the service's own status (0 after SIGTERM).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    host, port = sock.getsockname()[:2]
    print(f"listening on http://{host}:{port}", flush=True)
    server.run(sockets=[sock])
    return service.exit_code


if __name__ == "__main__":
    sys.exit(main())
