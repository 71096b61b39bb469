"""Evaluate a model on its config's eval_dataset with the WIDER FACE protocol.

  python tools/eval.py -c configs/scrfd_500m_kps.yml -o weights=W.pdparams
  python tools/eval.py -c CFG -o weights=W --target_size 640 --output_dir preds/  # also write WIDER txt files
  python tools/eval.py --model yunet_n                      # a released model by name (tools/zoo.py list)
"""
import sys

import _path  # noqa: F401

from ppfacedet.cli import base_parser, load_cfg, run


def main():
    parser = base_parser(__doc__, zoo_model=True)
    parser.add_argument("--target_size", type=int, default=None,
                        help="letterbox every image into N x N (default: the model's official protocol)")
    parser.add_argument("--output_dir", default=None,
                        help="also write predictions in the standard <event>/<image>.txt layout here")
    parser.add_argument("--plot", default=None, metavar="PNG", help="draw precision-recall curves to this file")
    args = parser.parse_args()
    cfg = load_cfg(args)

    from ppfacedet.api import FaceDetector
    from ppfacedet.core.errors import PPFaceDetError
    from ppfacedet.data.loader import build_eval_set
    from ppfacedet.engine.evaluation import predict_eval_set
    from widerface_evaluate import evaluate, save_prediction_dir
    if not cfg.get("weights"):
        raise PPFaceDetError("no weights: pass -o weights=PATH.pdparams")
    if "synthetic" in cfg:
        from ppfacedet.data.synthetic import ensure_synthetic
        ensure_synthetic(cfg["synthetic"])
    eval_set = build_eval_set(cfg)
    preds, unreadable = predict_eval_set(FaceDetector(cfg, target_size=args.target_size), eval_set)
    if args.output_dir:
        save_prediction_dir(preds, args.output_dir)
    result = evaluate(preds, eval_set.ground_truth())
    print(f"Easy   Val AP: {result['easy']:.4f}")
    print(f"Medium Val AP: {result['medium']:.4f}")
    print(f"Hard   Val AP: {result['hard']:.4f}")
    if args.plot:
        from widerface_evaluate.plot import plot_pr
        plot_pr(result, args.plot, title=cfg.name)
        print(f"precision-recall curves: {args.plot}")
    if unreadable:  # each was reported as it was met
        print(f"error: {len(unreadable)} images could not be read; the AP above counts their faces as missed",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    run(main)
