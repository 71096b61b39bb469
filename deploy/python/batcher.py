"""Dynamic batching for the service (serve.py): one inference at a time per
engine, on the network inputs of the requests that arrived together. Each
detector (an engine with its own buffers) has a thread that takes the next
batch from the shared queue whenever it is free.

A batch is the oldest waiting job plus the next waiting jobs whose network
input has its shape (up to ``max_batch``), so no input is ever padded to a
companion's size, and a face found alone is found in any batch, with the same
box and score (the engines give each image of a same-shape batch bit-identical
outputs; tests/test_serve.py checks it over HTTP). The batcher waits for more
jobs (at most ``max_wait_s``) only while requests are still being decoded:
with none on the way a lone request runs at once, so one client at a time
pays no batching delay. With several engines, one waits only when no other
is free, and a batch leaves its share of the waiting jobs to each free engine
(splitting them runs them side by side instead of one after another).
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
    def __init__(self, detectors, max_batch, max_wait_s, on_batch=lambda size: None):
        self.detectors, self.max_batch, self.max_wait_s, self.on_batch = detectors, max_batch, max_wait_s, on_batch
        self.jobs = collections.deque()
        self.condition = threading.Condition()
        self.decoding_count = 0
        self.free_engines = 0  # engine threads waiting for a batch
        self.stopping = False
        self.threads = [threading.Thread(target=self._run, args=(detector,), name=f"engine-{i}", daemon=True)
                        for i, detector in enumerate(detectors)]
        for thread in self.threads:
            thread.start()

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
                self.condition.notify_all()

    def submit(self, image, min_score, deliver):
        job = Job(image, min_score, self.detectors[0].preprocess.layout(image.shape[:2])[0], deliver)
        with self.condition:
            self.jobs.append(job)
            self.condition.notify_all()
        return job

    def stop(self):
        """Runs the jobs already waiting, then ends the threads."""
        with self.condition:
            self.stopping = True
            self.condition.notify_all()
        for thread in self.threads:
            thread.join()

    def _same_shape_count(self):
        return sum(1 for job in self.jobs if job.shape == self.jobs[0].shape and not job.abandoned)

    def _next_batch(self):
        """The next batch, or None once stopping with nothing left. Several
        engine threads may wait here together: after each wait the queue is
        looked at afresh, since another thread may have taken the jobs."""
        with self.condition:
            self.free_engines += 1
            try:
                return self._wait_for_batch()
            finally:
                self.free_engines -= 1

    def _wait_for_batch(self):
        while True:
            while self.jobs and self.jobs[0].abandoned:
                self.jobs.popleft()
            if not self.jobs:
                if self.stopping:
                    return None
                self.condition.wait()
                continue
            deadline = time.monotonic() + self.max_wait_s
            while (self.jobs and self.decoding_count and self.free_engines == 1
                   and self._same_shape_count() < self.max_batch):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.condition.wait(remaining)
            batch = self._take_batch()
            if batch:
                return batch

    def _take_batch(self):
        """The oldest live job and the next live ones of its shape (up to max_batch), off the queue."""
        live = [job for job in self.jobs if not job.abandoned]
        if not live:
            self.jobs.clear()
            return []
        same_shape = [job for job in live if job.shape == live[0].shape]
        share = -(-len(same_shape) // self.free_engines)  # the free engines (this one too) split the jobs
        batch = same_shape[:min(self.max_batch, share)]
        taken = set(map(id, batch))
        self.jobs = collections.deque(job for job in live if id(job) not in taken)
        return batch

    def _run(self, detector):
        while (batch := self._next_batch()) is not None:
            self._run_batch(detector, batch)

    def _run_batch(self, detector, batch):
        try:
            results = detector([job.image for job in batch], [job.min_score for job in batch])
        except Exception as error:  # noqa: BLE001 - delivered to the request that caused it
            if len(batch) > 1:  # run each alone, so that one image's failure is its own
                for job in batch:
                    self._run_batch(detector, [job])
                return
            batch[0].deliver(None, error)
            return
        self.on_batch(len(batch))
        for job, result in zip(batch, results):
            job.deliver(result, None)
