"""WIDER FACE evaluation from the command line.

    python widerface_evaluate/evaluation.py -p PRED_DIR -g GT_DIR [--iou 0.5] [--map] [--plot pr.png]

PRED_DIR holds ``<event>/<image>.txt`` files (image name, box count, then
``x y w h score`` lines).  GT_DIR holds the official ``wider_face_val.mat`` and
``wider_{easy,medium,hard}_val.mat``.  If ``-g`` is a file instead, it is read
as a ``val_label.txt`` of your own data (image name lines, then ``x y w h``
lines) and AP is printed with a recall/precision table.
"""
import argparse
import os
import sys
import time

if __package__ in (None, ""):  # run as a script: import the package from the repo root,
    _here = os.path.dirname(os.path.abspath(__file__))  # not its modules as top-level names
    sys.path = [p for p in sys.path if os.path.abspath(p or ".") != _here]
    sys.path.insert(0, os.path.dirname(_here))

from widerface_evaluate.custom import DEFAULT_TABLE_THRESHOLDS, evaluate_custom, format_pr_table, load_val_label  # noqa: E402
from widerface_evaluate.errors import EvaluationError  # noqa: E402
from widerface_evaluate.ground_truth import GroundTruth  # noqa: E402
from widerface_evaluate.metric import evaluate, evaluate_map, normalise_and_match  # noqa: E402
from widerface_evaluate.predictions import load_prediction_dir  # noqa: E402

LABELS = {"easy": "Easy  ", "medium": "Medium", "hard": "Hard  "}


def build_parser():
    p = argparse.ArgumentParser(
        prog="evaluation.py",
        description="WIDER FACE evaluation (official protocol: score normalisation, IoU matching "
                    "with ignored faces, 1000 score thresholds, VOC AP), vectorised.",
        epilog="Examples:\n"
               "  python widerface_evaluate/evaluation.py -p widerface_txt -g ground_truth\n"
               "  python widerface_evaluate/evaluation.py -p widerface_txt -g ground_truth --map --plot pr.png\n"
               "  python widerface_evaluate/evaluation.py -p my_preds -g my_data/val_label.txt",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-p", "--pred", required=True, metavar="PRED_DIR",
                   help="folder of predictions, <event>/<image>.txt")
    p.add_argument("-g", "--gt", required=True, metavar="GT_DIR",
                   help="folder with wider_face_val.mat and wider_{easy,medium,hard}_val.mat, "
                        "or a val_label.txt file of your own data")
    p.add_argument("--iou", type=float, default=0.5, metavar="T",
                   help="IoU threshold for a match (default 0.5)")
    p.add_argument("--map", action="store_true",
                   help="also print mean AP over IoU 0.50:0.05:0.95")
    p.add_argument("--plot", metavar="PNG", help="write the precision-recall curves to this image")
    p.add_argument("--thresholds", type=float, nargs="+", default=list(DEFAULT_TABLE_THRESHOLDS),
                   metavar="S", help="raw score thresholds of the recall/precision table "
                                     "(val_label.txt mode only)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def run(args, out=sys.stdout, err=sys.stderr):
    progress = not args.no_progress
    t0 = time.time()
    if not 0 < args.iou <= 1:
        raise EvaluationError("--iou must be in (0, 1], got %g" % args.iou)
    if not os.path.exists(args.gt):
        raise EvaluationError("ground truth not found: %s" % args.gt)
    preds = load_prediction_dir(args.pred, progress=progress)
    if os.path.isfile(args.gt):
        gt = load_val_label(args.gt)
        res = evaluate_custom(preds, gt, args.iou, args.thresholds, progress=progress)
        _report_counts(res, err)
        print("Images: %d, faces: %d, IoU %.2f" % (len(gt), gt.num_faces("all"), res["iou"]), file=out)
        print("AP: %.4f" % res["ap"], file=out)
        print(format_pr_table(res), file=out)
        if args.plot:
            from widerface_evaluate.plot import plot_pr
            plot_pr({"pr": {"all": res["pr"]}, "all": res["ap"], "iou": res["iou"]}, args.plot,
                    title="Precision-recall, IoU %.2f" % res["iou"])
        return 0
    gt = GroundTruth.from_mat_dir(args.gt)
    matched = normalise_and_match(preds, gt, progress)  # overlaps once, for every IoU
    res = evaluate(preds, gt, args.iou, _matched=matched)
    _report_counts(res, err)
    print("==================== Results ====================", file=out)
    if args.iou != 0.5:
        print("IoU threshold: %g" % args.iou, file=out)
    for s in gt.settings:
        print("%s Val AP: %.4f" % (LABELS.get(s, s), res[s]), file=out)
    if args.map:
        mres = evaluate_map(preds, gt, _matched=matched)
        for s in gt.settings:
            print("%s Val mAP@0.50:0.95: %.4f" % (LABELS.get(s, s), mres[s]), file=out)
    print("=================================================", file=out)
    if args.plot:
        from widerface_evaluate.plot import plot_pr
        plot_pr(res, args.plot)
        print("Wrote %s" % args.plot, file=err)
    print("Evaluated in %.2f s" % (time.time() - t0), file=err)
    return 0


def _report_counts(res, err):
    if res["missing"]:
        print("warning: %d images have no prediction file (counted as no detections)"
              % res["missing"], file=err)
    if res["extra"]:
        print("warning: %d prediction files are not in the ground truth (ignored, but their "
              "scores take part in score normalisation)" % res["extra"], file=err)


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (EvaluationError, OSError) as e:
        print("error: %s" % e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
