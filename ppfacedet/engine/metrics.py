"""Evaluation metrics, built by name from the ``metric:`` config section.

A metric scores in-memory predictions ({name: [n,5] xywh+score}) against a
WIDER-protocol ground truth and says which of its keys picks ``best_model``.
"""
from ..core.errors import ConfigError
from ..core.registry import METRICS

SETTINGS = ("easy", "medium", "hard")


class _WiderMetric:
    def __init__(self, target="hard"):
        if target not in SETTINGS:
            raise ConfigError(f"metric.target: '{target}' is not one of {', '.join(SETTINGS)}")
        self.target = target


@METRICS.register
class WiderFaceAP(_WiderMetric):
    """The official WIDER FACE easy/medium/hard AP at one IoU threshold."""

    def __init__(self, iou_thresh=0.5, target="hard"):
        super().__init__(target)
        self.iou_thresh = float(iou_thresh)

    def __call__(self, preds, ground_truth):
        from widerface_evaluate import evaluate
        result = evaluate(preds, ground_truth, iou_thresh=self.iou_thresh)
        return {k: float(result[k]) for k in SETTINGS}


@METRICS.register
class WiderFaceMAP(_WiderMetric):
    """Mean AP over IoU 0.50:0.05:0.95 per setting (the stricter metric)."""

    def __call__(self, preds, ground_truth):
        from widerface_evaluate import evaluate_map
        result = evaluate_map(preds, ground_truth)
        return {k: float(result[k]) for k in SETTINGS}


def build_metric(cfg):
    return METRICS.build(cfg.get("metric") or {"type": "WiderFaceAP"}, "metric")
