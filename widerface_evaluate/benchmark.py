"""Benchmark: our evaluator vs the loop oracle on the full WIDER FACE val set.

    python widerface_evaluate/benchmark.py [-g GT_DIR] [--per-image 210] [--seed 0] [--no-oracle]

Builds seeded synthetic predictions (~700k boxes, about 210 per image, as a
detector at score >= 0.02 gives) over the official ground truth, times
``evaluate`` (in memory, the 3 settings, IoU 0.5) and the literal loop oracle
of ``tests/widerface_oracle.py`` on the same predictions, prints both times,
their ratio and the largest AP difference, and fails if that exceeds 1e-6.
"""
import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

DEFAULT_GT = os.path.join(os.path.dirname(ROOT), "shared", "data", "widerface", "ground_truth")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-g", "--gt", default=DEFAULT_GT, help="folder of the official .mat files")
    ap.add_argument("--per-image", type=float, default=190, help="mean predictions per image (+10%% duplicates)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of ours (best is reported)")
    ap.add_argument("--no-oracle", action="store_true", help="skip the slow oracle")
    args = ap.parse_args(argv)

    import numpy as np
    import widerface_oracle as oracle
    from widerface_evaluate import GroundTruth, evaluate

    gt = GroundTruth.from_mat_dir(args.gt)
    preds = oracle.synthetic_predictions(gt.names, gt.boxes, per_image=args.per_image,
                                         seed=args.seed, empty_fraction=0.01)
    n = sum(len(v) for v in preds.values())
    print("ground truth: %d images, %d faces; predictions: %d" % (len(gt), gt.offsets[-1], n))

    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        ours = evaluate(preds, gt, 0.5)
        times.append(time.perf_counter() - t0)
    t_ours = min(times)
    print("ours:   %.3f s (best of %d: %s)  easy %.6f  medium %.6f  hard %.6f"
          % (t_ours, args.repeat, ", ".join("%.3f" % t for t in times),
             ours["easy"], ours["medium"], ours["hard"]))
    if args.no_oracle:
        return 0
    t0 = time.perf_counter()
    ref = oracle.evaluate(preds, oracle.load_gt(args.gt), 0.5)
    t_ref = time.perf_counter() - t0
    print("oracle: %.3f s              easy %.6f  medium %.6f  hard %.6f"
          % (t_ref, ref["easy"], ref["medium"], ref["hard"]))
    diff = max(abs(ours[s] - ref[s]) for s in ("easy", "medium", "hard"))
    print("speed-up: %.1fx   max |AP difference|: %.3g" % (t_ref / t_ours, diff))
    if not diff <= 1e-6 or not np.isfinite(diff):
        print("FAIL: APs differ")
        return 1
    print("OK: APs equal to 1e-6")
    return 0


if __name__ == "__main__":
    sys.exit(main())
