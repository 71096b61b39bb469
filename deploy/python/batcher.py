"""Dynamic batching for the service (serve.py): one inference at a time per
engine, on the network inputs of the requests that arrived together.

A batch is the oldest waiting job plus the next waiting jobs whose network
input has its shape (up to ``max_batch``), so no input is ever padded to a
companion's size, and a face found alone is found in any batch, with the same
box and score (the engines give each image of a same-shape batch bit-identical
outputs; tests/test_serve.py checks it over HTTP). The batcher waits for more
jobs (at most ``max_wait_s``) only while requests are still being decoded:
with none on the way a lone request runs at once, so one client at a time
pays no batching delay.
"""
import collections
import contextlib
import threading
import time


class Job:
    """One request's image. ``deliver(result, error)`` is called once from the
    batching thread; setting ``abandoned`` (its client left, or its time ran
    out) before its batch is formed spares the network its work."""

    __slots__ = ("image", "min_score", "shape", "deliver", "abandoned")

    def __init__(self, image, min_score, shape, deliver):
        self.image, self.min_score, self.shape, self.deliver = image, min_score, shape, deliver
        self.abandoned = False


class Batcher:
    def __init__(self, detector, max_batch, max_wait_s, on_batch=lambda size: None):
        self.detector, self.max_batch, self.max_wait_s, self.on_batch = detector, max_batch, max_wait_s, on_batch
        self.jobs = collections.deque()
        self.condition = threading.Condition()
        self.decoding_count = 0
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="batcher", daemon=True)
        self.thread.start()

    @contextlib.contextmanager
    def decoding(self):
        """Around a request's decode and submit: the batcher may wait for it."""
        with self.condition:
            self.decoding_count += 1
        try:
            yield
        finally:
            with self.condition:
                self.decoding_count -= 1
                self.condition.notify()

    def submit(self, image, min_score, deliver):
        job = Job(image, min_score, self.detector.preprocess.layout(image.shape[:2])[0], deliver)
        with self.condition:
            self.jobs.append(job)
            self.condition.notify()
        return job

    def stop(self):
        """Runs the jobs already waiting, then ends the thread."""
        with self.condition:
            self.stopping = True
            self.condition.notify()
        self.thread.join()

    def _same_shape_count(self):
        return sum(1 for job in self.jobs if job.shape == self.jobs[0].shape and not job.abandoned)

    def _next_batch(self):
        with self.condition:
            while True:
                while self.jobs and self.jobs[0].abandoned:
                    self.jobs.popleft()
                if self.jobs or self.stopping:
                    break
                self.condition.wait()
            if not self.jobs:
                return None
            deadline = time.monotonic() + self.max_wait_s
            while self.decoding_count and self._same_shape_count() < self.max_batch:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.condition.wait(remaining)
            shape, batch, rest = self.jobs[0].shape, [], collections.deque()
            while self.jobs:
                job = self.jobs.popleft()
                if job.abandoned:
                    continue
                (batch if job.shape == shape and len(batch) < self.max_batch else rest).append(job)
            self.jobs = rest
            return batch

    def _run(self):
        while (batch := self._next_batch()) is not None:
            self._run_batch(batch)

    def _run_batch(self, batch):
        try:
            results = self.detector([job.image for job in batch], [job.min_score for job in batch])
        except Exception as error:  # noqa: BLE001 - delivered to the request that caused it
            if len(batch) > 1:  # run each alone, so that one image's failure is its own
                for job in batch:
                    self._run_batch([job])
                return
            batch[0].deliver(None, error)
            return
        self.on_batch(len(batch))
        for job, result in zip(batch, results):
            job.deliver(result, None)
