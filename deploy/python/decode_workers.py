"""Image decoding for the service in worker processes.

Processes, not threads: libjpeg reports damaged data only on the process's
stderr, which image_check.py watches for one decode at a time (it swaps file
descriptor 2), so decoding threads would take turns; each worker process has
a stderr of its own. A worker that crashes on an image (a decoder bug) breaks
the pool: it is replaced, the requests it held are decoded once more, and an
image that breaks the new pool too is refused as undecodable.
"""
import asyncio
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from child_process import die_with_parent
from infer import InputError, image_from_bytes


def decode_image(data):
    """(BGR uint8 image, None) or (None, the problem): runs in a worker."""
    try:
        return image_from_bytes(data), None
    except InputError as e:
        return None, str(e)


class DecodePool:
    def __init__(self, workers):
        self.workers = workers
        self.pool = self._new_pool()

    def _new_pool(self):
        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=die_with_parent, initargs=(os.getpid(),))

    async def decode(self, data):
        """-> BGR uint8 image; InputError naming the problem."""
        loop = asyncio.get_running_loop()
        for _ in range(2):
            pool = self.pool
            try:
                image, problem = await loop.run_in_executor(pool, decode_image, data)
                break
            except BrokenProcessPool:
                if self.pool is pool:
                    self.pool = self._new_pool()
                    pool.shutdown(wait=False)
        else:
            raise InputError("the image decoder crashed on it")
        if problem:
            raise InputError(problem)
        return image

    async def warm_up(self):
        """Starts every worker (each imports cv2) before the service says it is ready."""
        import cv2
        tiny = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
        await asyncio.gather(*(self.decode(tiny) for _ in range(self.workers)))

    def shutdown(self):
        self.pool.shutdown(wait=True, cancel_futures=True)
