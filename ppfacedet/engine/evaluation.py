"""WIDER FACE AP of a model on the config's eval_dataset, in memory."""
from tqdm import tqdm

from ..api import FaceDetector, detections_to_wider
from ..core.errors import DataError
from ..core.logger import get_logger
from ..data.image_io import read_image
from ..data.loader import build_eval_set
from .metrics import build_metric

LOG = get_logger()


def predict_eval_set(detector, eval_set, progress=True, on_image=None):
    """({name: [n,5] xywh+score} over the eval images, [the unreadable ones'
    errors]); unreadable (missing, corrupt, truncated) images are skipped with
    a warning and then count as missed faces. ``on_image()`` is called after
    each image (the training watchdog's beat)."""
    preds, unreadable = {}, []
    # disable=None: a bar on a terminal, nothing in a log file
    for name, path in tqdm(eval_set.images(), desc="eval", disable=None if progress else True, leave=False):
        try:
            image = read_image(path)
        except DataError as e:
            LOG.warning("%s", e)
            unreadable.append(str(e))
            continue
        preds[name] = detections_to_wider(detector(image))
        if on_image is not None:
            on_image()
    if unreadable:
        LOG.warning("%d eval images could not be read", len(unreadable))
    return preds, unreadable


def evaluate_model(model, cfg, target_size=None, progress=True, on_image=None):
    metric = build_metric(cfg)
    eval_set = build_eval_set(cfg)
    detector = FaceDetector.from_model(model, cfg, target_size)
    preds, _ = predict_eval_set(detector, eval_set, progress, on_image)  # unreadable ones were logged
    return metric(preds, eval_set.ground_truth())
