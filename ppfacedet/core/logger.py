"""One logger for the package; only rank 0 prints INFO in multi-process runs."""
import logging
import os
import sys

_FORMAT = "[%(asctime)s] %(levelname)s %(message)s"


def get_logger(name="ppfacedet"):
    logger = logging.getLogger(name)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter(_FORMAT, "%H:%M:%S"))
        logger.addHandler(handler)
        rank = int(os.environ.get("PADDLE_TRAINER_ID", "0"))
        logger.setLevel(logging.INFO if rank == 0 else logging.WARNING)
        logger.propagate = False
    return logger
