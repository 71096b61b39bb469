"""WIDER FACE AP (easy / medium / hard) of an export folder's ONNX model run
by onnxruntime or OpenVINO, with deploy/python's preprocessing, decoding and
NMS, as deploy/python/eval_subset.py measures the Paddle program.

  python tools/eval_onnx.py --model_dir output/int8/retinaface_mnet025 --engine onnxruntime \
      --image_dir ../shared/data/widerface/val_subset_resized416/images \
      --gt_dir ../shared/data/widerface/val_subset_resized416/ground_truth

The ONNX file is the folder's ``onnx`` entry of infer_cfg.yml (tools/quant.py
writes its QDQ INT8 model there), run through the deploy predictor's own
engine (``--run_mode``), so what is measured is what users run. This is how
the INT8 ONNX's AP drop is measured against the FP32 model.
"""
import argparse
import os
import sys

import _path  # noqa: F401

from ppfacedet.cli import run
from ppfacedet.core.errors import PPFaceDetError

DEPLOY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "deploy", "python")
ENGINES = ("onnxruntime", "openvino")
if DEPLOY not in sys.path:
    sys.path.insert(0, DEPLOY)


def onnx_detector(model_dir, engine="onnxruntime", cpu_threads=2):
    """deploy/python's FaceDetector for ``model_dir`` with its network run by ``engine``."""
    from infer import FaceDetector
    if engine not in ENGINES:
        raise PPFaceDetError(f"--engine {engine}: expected one of {', '.join(ENGINES)}")
    return FaceDetector(model_dir, run_mode=engine, cpu_threads=cpu_threads)


def evaluate_onnx(model_dir, image_dir, gt_dir, engine="onnxruntime", cpu_threads=2, iou_thresh=0.5):
    """-> {'easy', 'medium', 'hard'} AP in percent."""
    from eval_subset import _import_widerface_evaluate, predict_folder
    detector = onnx_detector(model_dir, engine, cpu_threads)
    wider = _import_widerface_evaluate()
    result = wider.evaluate(predict_folder(detector, image_dir), wider.GroundTruth.from_mat_dir(gt_dir),
                            iou_thresh=iou_thresh)
    return {k: 100.0 * float(result[k]) for k in ("easy", "medium", "hard")}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", required=True, help="export folder (infer_cfg.yml says how to decode)")
    parser.add_argument("--engine", default="onnxruntime", choices=ENGINES)
    parser.add_argument("--image_dir", required=True, help="WIDER-style images: <event>/<image>.jpg")
    parser.add_argument("--gt_dir", required=True, help="folder of the four wider_*_val.mat files")
    parser.add_argument("--cpu_threads", type=int, default=2)
    args = parser.parse_args()
    try:
        ap = evaluate_onnx(args.model_dir, args.image_dir, args.gt_dir, args.engine, args.cpu_threads)
    except (FileNotFoundError, ValueError) as e:  # deploy/python's errors for a bad folder or image dir
        raise PPFaceDetError(str(e)) from None
    print(f"| {args.model_dir} ({args.engine}) | {ap['easy']:.2f} | {ap['medium']:.2f} | {ap['hard']:.2f} |")
    return 0


if __name__ == "__main__":
    run(main)
