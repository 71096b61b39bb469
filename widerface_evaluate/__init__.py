"""WIDER FACE evaluation: the official protocol, vectorised (library + CLI).

    from widerface_evaluate import GroundTruth, evaluate, evaluate_map
    gt = GroundTruth.from_mat_dir("ground_truth/")
    result = evaluate({"0--Parade/0_Parade_marchingband_1_465": boxes_xywhs}, gt)
    result["easy"], result["medium"], result["hard"]

See ``metric.py`` for the protocol and ``evaluation.py`` for the command line.
"""
from .errors import EvaluationError
from .ground_truth import GroundTruth, WIDER_SETTINGS
from .metric import MAP_IOUS, THRESH_NUM, evaluate, evaluate_map, voc_ap
from .predictions import load_prediction_dir, read_prediction_file, save_prediction_dir
from .custom import evaluate_custom, format_pr_table, load_val_label

__all__ = [
    "EvaluationError", "GroundTruth", "WIDER_SETTINGS", "MAP_IOUS", "THRESH_NUM",
    "evaluate", "evaluate_map", "voc_ap", "load_prediction_dir", "read_prediction_file",
    "save_prediction_dir", "evaluate_custom", "format_pr_table", "load_val_label",
]
