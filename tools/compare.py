r"""Compare face detectors on the same images with the same thresholds.

  python tools/compare.py \
      --models yunet_n=configs/yunet_n.yml:yunet_n.pdparams \
               configs/scrfd_500m_kps.yml:/path/scrfd_500m_bnkps.onnx \
               /path/yunet_n_dynamic.onnx /path/retinaface_mbnet0.25.onnx \
      --image_dir widerface/val_subset_resized416/images \
      --gt_dir widerface/val_subset_resized416/ground_truth --output out/compare

A model is [NAME=]CONFIG.yml:WEIGHTS (a ppfacedet model; WEIGHTS is a
.pdparams, or official .pth/.onnx weights converted on load by the config's
converter) or [NAME=]FILE.onnx (an official YuNet, SCRFD or RetinaFace-mnet0.25
export, run by onnxruntime with its family's preprocessing and decode; the
family is recognised from the output names).

Protocol, identical for every model:
  AP      WIDER easy/medium/hard (IoU 0.5) over the images of --image_dir that
          are in --gt_dir; each image at its own size padded bottom/right to a
          multiple of 32 (libfacedetection.train's "AUTO" mode), or letterboxed
          into N x N with --eval_size N. Each model keeps its own normalisation.
          Selection: score > --score_threshold, greedy NMS at --nms_threshold,
          no top-k cap.
  params  parameters with BN folded into the convs (comparable between a
          paddle model and an ONNX export); "Params (training)" is the count
          the official READMEs publish (ppfacedet models only).
  MFLOPs  conv/fully-connected multiply-accumulates at --input_size squared.
  FPS     1 / median time of the bare network forward at --input_size squared
          over --repeats runs, --threads CPU threads for every model. Paddle
          runs eagerly (dygraph) and onnxruntime a fused graph, so compare FPS
          within one engine.
--input_size affects MFLOPs and FPS only; AP uses --eval_size.

Writes OUTPUT/compare.md and OUTPUT/compare.csv and prints the table.
"""
import argparse
import os

import _path  # noqa: F401


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", required=True, metavar="SPEC",
                        help="[NAME=]CONFIG.yml:WEIGHTS or [NAME=]FILE.onnx, one or more")
    parser.add_argument("--image_dir", required=True, help="images as <event>/<name>.jpg")
    parser.add_argument("--gt_dir", required=True, help="folder with wider_{face,easy,medium,hard}_val.mat")
    parser.add_argument("--input_size", type=int, default=320, help="N for MFLOPs and FPS at N x N (default 320)")
    parser.add_argument("--eval_size", type=int, default=None,
                        help="letterbox every image into N x N for AP (default: own size padded to 32)")
    parser.add_argument("--score_threshold", type=float, default=0.02, help="default 0.02")
    parser.add_argument("--nms_threshold", type=float, default=0.45, help="default 0.45")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for every model (default 1)")
    parser.add_argument("--repeats", type=int, default=50, help="timed forwards per model (default 50)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed forwards first (default 5)")
    parser.add_argument("--max_images", type=int, default=None, help="evaluate the first N images only")
    parser.add_argument("--output", default="output/compare", help="folder for compare.md and compare.csv")
    parser.add_argument("--no_progress", action="store_true", help="no progress bars")
    args = parser.parse_args()
    for name in ("input_size", "threads", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.eval_size is not None and args.eval_size < 32:
        parser.error(f"--eval_size must be >= 32, got {args.eval_size}")
    return args


def main():
    args = parse_args()
    # Thread pools are sized when the libraries load, so this goes first.
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import paddle

    from ppfacedet.compare import report
    from ppfacedet.compare.evaluate import compare, eval_images
    from ppfacedet.compare.runners import Protocol, build_runner
    from widerface_evaluate import GroundTruth

    paddle.set_device("cpu")
    paddle.base.core.set_num_threads(args.threads)
    ground_truth = GroundTruth.from_mat_dir(args.gt_dir)
    items = eval_images(args.image_dir, ground_truth, args.max_images)
    protocol = Protocol(eval_size=args.eval_size)
    runners = [build_runner(spec, protocol, args.score_threshold, args.nms_threshold, args.threads)
               for spec in args.models]
    rows = compare(runners, items, ground_truth, args.input_size, args.repeats, args.warmup,
                   progress=not args.no_progress)
    notes = [
        f"{len(items)} images from {args.image_dir}; AP input: {protocol.describe()}; "
        f"score > {args.score_threshold}, NMS {args.nms_threshold}, no top-k cap.",
        f"MFLOPs = conv/FC multiply-accumulates at {args.input_size}x{args.input_size}; "
        f"FPS = 1 / median bare forward at {args.input_size}x{args.input_size} over {args.repeats} runs, "
        f"{args.threads} thread(s); paddle runs eagerly, onnxruntime a fused graph.",
        "Params (BN folded) is comparable across engines; Params (training) is the published count.",
    ]
    report.write_markdown(rows, os.path.join(args.output, "compare.md"), args.input_size, notes)
    report.write_csv(rows, os.path.join(args.output, "compare.csv"))
    print(report.markdown_table(rows, args.input_size))
    print(f"-> {os.path.join(args.output, 'compare.md')}, {os.path.join(args.output, 'compare.csv')}")
    return 0


if __name__ == "__main__":
    from ppfacedet.cli import run
    run(main)
