"""WIDER FACE AP of a model on the config's eval_dataset, in memory."""
from tqdm import tqdm

from ..api import FaceDetector, detections_to_wider
from ..core.config import read_section
from ..core.errors import DataError
from ..core.logger import get_logger
from ..data.image_io import read_image
from ..data.loader import build_eval_set

LOG = get_logger()
METRIC_DEFAULTS = {"target": "hard", "iou_thresh": 0.5}


def predict_eval_set(detector, eval_set, progress=True):
    """{name: [n,5] xywh+score} over the eval images; unreadable ones are
    skipped with a warning (they then count as missed faces)."""
    preds, unreadable = {}, 0
    # disable=None: a bar on a terminal, nothing in a log file
    for name, path in tqdm(eval_set.images(), desc="eval", disable=None if progress else True, leave=False):
        try:
            image = read_image(path)
        except DataError as e:
            LOG.warning("%s", e)
            unreadable += 1
            continue
        preds[name] = detections_to_wider(detector(image))
    if unreadable:
        LOG.warning("%d eval images could not be read", unreadable)
    return preds


def score_predictions(preds, ground_truth, iou_thresh=0.5):
    from widerface_evaluate import evaluate
    result = evaluate(preds, ground_truth, iou_thresh=iou_thresh)
    return {k: float(result[k]) for k in ("easy", "medium", "hard")}


def evaluate_model(model, cfg, target_size=None, progress=True):
    metric = read_section(cfg, "metric", METRIC_DEFAULTS)
    eval_set = build_eval_set(cfg)
    detector = FaceDetector.from_model(model, cfg, target_size)
    preds = predict_eval_set(detector, eval_set, progress)
    return score_predictions(preds, eval_set.ground_truth(), metric["iou_thresh"])
