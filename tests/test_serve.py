"""deploy/python/serve.py, a real server on 127.0.0.1 (ephemeral port) called
over real HTTP: the JSON infer.py writes, batching that changes no result,
every kind of bad input answered with its 4xx (and normal answers after),
503 at once on a full queue, and SIGTERM answering what it accepted.
The batcher's grouping is also checked alone, with a stand-in detector."""
import http.client
import json
import signal
import socket
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

from deploy_support import exported_with_onnx, family, photos

import infer as deploy_infer  # noqa: E402  (deploy/python, put on sys.path by deploy_support)
from batcher import Batcher  # noqa: E402
from serve_process import ServeProcess  # noqa: E402

MODEL = "scrfd_500m_kps"
# The engine of these tests: the server and the references in this process
# run the same one with the same thread count, so answers are compared exactly.
ENGINE = ["--run_mode", "onnxruntime", "--cpu_threads", "1"]
START_TIMEOUT_S = 120
MAX_BODY_MB = 1
MAX_PIXELS = 4_000_000


class ServerProcess(ServeProcess):
    """serve.py on the test model with the test engine; ``detect`` posts a body."""

    def __init__(self, model_dir, *options):
        super().__init__(["--model_dir", model_dir, *ENGINE, *options], START_TIMEOUT_S)

    def detect(self, body, query=""):
        return self.request("POST", "/v1/detect" + query, body)


def start_upload(port, body, sent):
    """A raw connection that has sent the request head and ``sent`` bytes of the body."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.sendall(b"POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
                 + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:sent])
    return sock


def finish_upload(sock, body, sent):
    """Sends the rest of the body -> (status, body bytes)."""
    sock.sendall(body[sent:])
    response = http.client.HTTPResponse(sock)
    response.begin()
    try:
        return response.status, response.read()
    finally:
        sock.close()


def encoded_photos():
    """JPEG and PNG bodies of different sizes, cut from the shared photos."""
    big, small = photos()
    images = [big, small, cv2.resize(big, (640, 480)), small[: small.shape[0] * 2 // 3],
              cv2.resize(small, (300, 200)), big[:, : big.shape[1] // 2]]
    return [cv2.imencode(".jpg" if i % 2 == 0 else ".png", image)[1].tobytes() for i, image in enumerate(images)]


def png_with_header(png, width, height):
    """``png`` with its IHDR claiming another size (CRC recomputed, image data left as it was)."""
    ihdr = png[12:29]
    patched = ihdr[:4] + struct.pack(">II", width, height) + ihdr[12:]
    return png[:12] + patched + struct.pack(">I", zlib.crc32(patched)) + png[33:]


@pytest.fixture(scope="session")
def model_dir():
    return exported_with_onnx(MODEL)


@pytest.fixture(scope="module")
def server(model_dir):
    process = ServerProcess(model_dir, "--engines", "2", "--max_batch", "4", "--max_wait_ms", "20", "--max_body_mb",
                            str(MAX_BODY_MB), "--max_pixels", str(MAX_PIXELS), "--decode_workers", "2")
    yield process
    process.kill()


@pytest.fixture(scope="module")
def bodies():
    return encoded_photos()


@pytest.fixture(scope="module")
def written_by_infer(model_dir, bodies, tmp_path_factory):
    """{(body index, threshold): the JSON file infer.py writes for that image}."""
    images, out = tmp_path_factory.mktemp("images"), tmp_path_factory.mktemp("out")
    for i, body in enumerate(bodies):
        (images / f"photo{i}.{'jpg' if i % 2 == 0 else 'png'}").write_bytes(body)
    written = {}
    for threshold in (0.5, 0.3):
        code = deploy_infer.main(["--model_dir", model_dir, "--image_dir", str(images), "--output_dir",
                                  str(out / str(threshold)), "--threshold", str(threshold), *ENGINE])
        assert code == 0
        for i in range(len(bodies)):
            written[i, threshold] = (out / str(threshold) / f"photo{i}.json").read_bytes()
    return written


def test_answers_are_the_json_infer_writes(server, bodies, written_by_infer):
    official = family(MODEL)[2]
    for i, body in enumerate(bodies):
        for threshold, query in ((0.5, ""), (0.3, "?threshold=0.3")):
            status, headers, answer = server.detect(body, query)
            assert status == 200 and headers["content-type"] == "application/json"
            assert answer == written_by_infer[i, threshold]
        if official and i < 2:  # the WIDER photos hold faces for the official weights
            assert json.loads(answer)["faces"]
    faces = json.loads(written_by_infer[0, 0.3])["faces"]
    status, _, answer = server.detect(bodies[0], "?threshold=0.3&max_faces=2")
    assert status == 200 and json.loads(answer)["faces"] == faces[:2]


def test_concurrent_requests_are_batched_without_changing_results(server, bodies, written_by_infer):
    before = server.metrics()
    order = [i % len(bodies) for i in range(24)]
    with ThreadPoolExecutor(8) as clients:
        answers = list(clients.map(lambda i: server.detect(bodies[i]), order))
    after = server.metrics()
    for i, (status, _, answer) in zip(order, answers):
        assert status == 200 and answer == written_by_infer[i, 0.5]
    runs = after["ppfacedet_batch_size_count"] - before["ppfacedet_batch_size_count"]
    images = after["ppfacedet_batch_size_sum"] - before["ppfacedet_batch_size_sum"]
    assert images == len(order) and runs < len(order), "no batch of more than one image"
    assert after['ppfacedet_detect_requests_total{code="200"}'] - \
        before['ppfacedet_detect_requests_total{code="200"}'] == len(order)


def bad_bodies(good_jpeg, good_png):
    rng = np.random.default_rng(0)
    tiny = cv2.imencode(".png", np.zeros((1, 1, 3), np.uint8))[1].tobytes()
    broken_crc = bytearray(good_png)
    broken_crc[29] ^= 0xFF  # IHDR's CRC
    return {  # name: (body, status, words the message must contain)
        "truncated JPEG": (good_jpeg[: len(good_jpeg) // 2], 400, "truncated"),
        "random bytes": (b"\x00" + rng.integers(0, 256, 5000, np.uint8).tobytes(), 400, "not a JPEG, PNG"),
        "empty body": (b"", 400, "empty body"),
        "1x1 image": (tiny, 400, "too small"),
        "PNG with a broken CRC": (bytes(broken_crc), 400, "CRC error"),
        "oversized body": (b"\xff\xd8" + bytes(MAX_BODY_MB * 2 ** 20), 413, "max_body_mb"),
        # a header above the pixel limit, over data that would not decode: refused before decoding
        "too many pixels": (png_with_header(good_png, 2500, 2000), 413, "max_pixels"),
    }


def test_bad_input_gets_its_4xx_and_the_service_answers_normally_after(server, bodies, written_by_infer):
    for name, (body, status, words) in bad_bodies(bodies[0], bodies[1]).items():
        got, _, answer = server.detect(body)
        assert got == status, f"{name}: {got} {answer[:200]}"
        assert words in json.loads(answer)["error"], name
        got, _, answer = server.detect(bodies[2])
        assert got == 200 and answer == written_by_infer[2, 0.5], f"after {name}"
    for query in ("?threshold=2", "?threshold=x", "?max_faces=0", "?treshold=0.3"):
        got, _, answer = server.detect(bodies[2], query)
        assert got == 400 and "error" in json.loads(answer), query


def test_a_client_that_leaves_costs_only_its_own_request(server, bodies, written_by_infer):
    before = server.metrics().get('ppfacedet_rejected_requests_total{reason="disconnected"}', 0)
    for _ in range(3):
        start_upload(server.port, bodies[0], len(bodies[0])).close()
    deadline = time.monotonic() + 10
    while server.metrics().get('ppfacedet_rejected_requests_total{reason="disconnected"}', 0) < before + 3:
        assert time.monotonic() < deadline, "disconnected requests not noticed"
        time.sleep(0.05)
    got, _, answer = server.detect(bodies[2])
    assert got == 200 and answer == written_by_infer[2, 0.5]


def test_health_readiness_and_metrics_text(server):
    assert server.request("GET", "/healthz")[0] == 200
    assert server.request("GET", "/readyz")[0] == 200
    status, headers, text = server.request("GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    for name in ("ppfacedet_detect_requests_total", "ppfacedet_detect_latency_seconds_bucket",
                 "ppfacedet_batch_size_bucket", "ppfacedet_queue_depth", "ppfacedet_rejected_requests_total"):
        assert f"\n{name}".encode() in text, name


def test_full_queue_gets_503_at_once_and_sigterm_answers_every_accepted_request(model_dir, bodies,
                                                                                    written_by_infer):
    server = ServerProcess(model_dir, "--max_queue", "3")
    try:
        body, half = bodies[0], len(bodies[0]) // 2
        uploads = [start_upload(server.port, body, half) for _ in range(3)]  # accepted, their bodies half sent
        deadline = time.monotonic() + 10
        while server.metrics()["ppfacedet_queue_depth"] < 3:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        start = time.monotonic()
        status, headers, answer = server.detect(bodies[1])
        assert status == 503 and headers.get("retry-after") and "queue full" in json.loads(answer)["error"]
        assert time.monotonic() - start < 10.0  # at once, not after a place freed (none ever does here)

        server.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while True:  # stops accepting: new connections are refused
            try:
                socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
            except OSError:
                break
            assert time.monotonic() < deadline, "still accepting connections after SIGTERM"
            time.sleep(0.05)
        for sock in uploads:  # ... but answers the requests it had accepted
            status, answer = finish_upload(sock, body, half)
            assert status == 200 and answer == written_by_infer[0, 0.5]
        assert server.process.wait(timeout=30) == 0
    finally:
        server.kill()


def test_the_listening_socket_says_tcp_so_asyncio_turns_nagle_off():
    """With ``proto`` 0 asyncio leaves Nagle's algorithm on, and every answer
    waited ~40 ms for the client's delayed ACK (a 400 took 47 ms, now 1.5 ms)."""
    import serve
    sock = serve.listening_socket("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()


class ShapeRecordingDetector:
    """A stand-in for FaceDetector: 'detects' each image's first pixel, records the batches,
    and fails on an image whose first pixel is 255."""

    class preprocess:  # noqa: N801 - the attribute FaceDetector has
        @staticmethod
        def layout(image_hw):
            return image_hw, image_hw, (1.0, 1.0)

    def __init__(self):
        self.batches = []

    def __call__(self, images, min_scores):
        self.batches.append([image.shape[:2] for image in images])
        if any(image[0, 0, 0] == 255 for image in images):
            raise ValueError("bad image")
        return [int(image[0, 0, 0]) for image in images]


def test_batcher_runs_only_same_shape_inputs_together_and_isolates_failures():
    detector = ShapeRecordingDetector()
    batcher = Batcher([detector, detector], max_batch=3, max_wait_s=1.0)  # two engine threads take turns
    delivered = {}
    done = threading.Event()
    shapes = [(4, 4), (4, 6), (4, 4), (4, 4), (4, 6), (4, 4), (4, 4)]
    values = [1, 2, 3, 255, 5, 6, 7]

    def deliver(index):
        def settle(result, error):
            delivered[index] = error if error is not None else result
            if len(delivered) == len(shapes) - 1:
                done.set()
        return settle

    with batcher.decoding():  # one job still "decoding": the batcher waits for it, so all are queued together
        jobs = [batcher.submit(np.full((*shape, 3), value, np.uint8), 0.5, deliver(i))
                for i, (shape, value) in enumerate(zip(shapes, values))]
        jobs[6].abandoned = True
    assert done.wait(10)
    batcher.stop()
    assert all(len(set(batch)) == 1 and len(batch) <= 3 for batch in detector.batches)
    assert 6 not in delivered  # abandoned before its batch: never run
    assert isinstance(delivered.pop(3), ValueError)  # the failing image alone gets the error
    assert delivered == {i: values[i] for i in (0, 1, 2, 4, 5)}
