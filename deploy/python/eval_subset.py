"""WIDER FACE AP (easy / medium / hard) of an exported model folder, run by the
deploy predictor exactly as deploy/python/infer.py runs it, on any of its
engines (--run_mode paddle, onnxruntime, openvino or auto).

  python deploy/python/eval_subset.py --model_dir output/export/scrfd_500m_kps \
      --image_dir ../shared/data/widerface/val_subset_resized416/images \
      --gt_dir ../shared/data/widerface/val_subset_resized416/ground_truth --enable_mkldnn --cpu_threads 2

Images are found recursively under --image_dir and keyed ``<event>/<stem>``
as the WIDER ground truth keys them. An INT8 folder (tools/quant.py) with
--enable_mkldnn runs its quantized convs as oneDNN int8. This is an eval tool,
so unlike infer.py it imports the repository's ``widerface_evaluate``.
"""
import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from engines import RUN_MODES  # noqa: E402
from infer import FaceDetector, list_images, read_image  # noqa: E402


def _import_widerface_evaluate():
    try:
        import widerface_evaluate
    except ImportError:  # running from a source checkout: the package sits at the repository root
        sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
        import widerface_evaluate
    return widerface_evaluate


def to_wider_rows(det):
    """Detections -> [n,5] (x, y, w, h, score) rows as the WIDER evaluation reads them."""
    boxes = np.asarray(det["boxes"], np.float64).reshape(-1, 4)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    return np.concatenate([xywh, np.asarray(det["scores"], np.float64).reshape(-1, 1)], axis=1)


def predict_folder(detector, image_dir, limit=None):
    """{``event/stem``: rows} over the images under ``image_dir``."""
    paths = list_images(image_dir)[:limit]
    if not paths:
        raise FileNotFoundError(f"--image_dir: no images under {image_dir}")
    preds = {}
    for path in paths:
        key = os.path.splitext(os.path.relpath(path, image_dir))[0].replace(os.sep, "/")
        preds[key] = to_wider_rows(detector([read_image(path)])[0])
    return preds


def evaluate_folder(model_dir, image_dir, gt_dir, iou_thresh=0.5, limit=None, **choices):
    """-> {'easy', 'medium', 'hard'} AP in percent."""
    wider = _import_widerface_evaluate()
    detector = FaceDetector(model_dir, **choices)
    preds = predict_folder(detector, image_dir, limit)
    result = wider.evaluate(preds, wider.GroundTruth.from_mat_dir(gt_dir), iou_thresh=iou_thresh)
    return {k: 100.0 * float(result[k]) for k in ("easy", "medium", "hard")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", required=True, action="append",
                        help="exported folder (repeatable: one AP row per folder)")
    parser.add_argument("--image_dir", required=True, help="WIDER-style images: <event>/<image>.jpg")
    parser.add_argument("--gt_dir", required=True, help="folder of the four wider_*_val.mat files")
    parser.add_argument("--cpu_threads", type=int, default=1)
    parser.add_argument("--enable_mkldnn", action="store_true",
                        help="Paddle Inference: oneDNN kernels (int8 for an INT8 folder)")
    parser.add_argument("--run_mode", default="paddle", choices=[m for m in RUN_MODES if not m.startswith("trt")],
                        help="the engine, as in infer.py")
    parser.add_argument("--iou", type=float, default=0.5)
    args = parser.parse_args(argv)
    print("| model | easy | medium | hard |\n|---|---|---|---|")
    for model_dir in args.model_dir:
        ap = evaluate_folder(model_dir, args.image_dir, args.gt_dir, args.iou,
                             cpu_threads=args.cpu_threads, enable_mkldnn=args.enable_mkldnn, run_mode=args.run_mode)
        print(f"| {model_dir} | {ap['easy']:.2f} | {ap['medium']:.2f} | {ap['hard']:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
