"""Detect faces in images and save drawn pictures and JSON.

  python tools/infer.py -c configs/retinaface_mnet025.yml -o weights=W --infer_img photo.jpg --output_dir out/
  python tools/infer.py -c CFG -o weights=W --infer_dir photos/ --output_dir out/ --save_txt
  python tools/infer.py --model scrfd_500m_kps --infer_img photo.jpg  # a released model by name (tools/zoo.py list)

For each image: OUT/<stem>.json = {"faces": [{"box": [x1,y1,x2,y2], "score": s,
"landmarks": [[x,y]*5] or null}]} in original-image pixels, and OUT/<stem>.jpg
with the detections drawn. --save_txt also writes the WIDER prediction file
OUT/<path relative to --infer_dir without extension>.txt.
"""
import json
import os

import _path  # noqa: F401

from ppfacedet.cli import base_parser, load_cfg, run


def wider_lines(name, det):
    from ppfacedet.api import detections_to_wider
    rows = detections_to_wider(det)
    lines = [name, str(len(rows))]
    lines += [f"{x:.2f} {y:.2f} {w:.2f} {h:.2f} {s:.5f}" for x, y, w, h, s in rows]
    return "\n".join(lines) + "\n"


def main():
    parser = base_parser(__doc__, zoo_model=True)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--infer_img", help="one image")
    source.add_argument("--infer_dir", help="a folder of images (searched recursively)")
    parser.add_argument("--output_dir", default="output/infer", help="where results go (default output/infer)")
    parser.add_argument("--threshold", type=float, default=0.5, help="score threshold for JSON and drawing")
    parser.add_argument("--target_size", type=int, default=None,
                        help="letterbox into N x N (default: the model's official test protocol)")
    parser.add_argument("--save_txt", action="store_true", help="also write WIDER prediction txt files")
    args = parser.parse_args()
    cfg = load_cfg(args)

    import cv2
    from tqdm import tqdm

    from ppfacedet.api import FaceDetector, detections_to_json
    from ppfacedet.core.errors import PPFaceDetError
    from ppfacedet.data.image_io import read_image
    from ppfacedet.data.sources.image_folder import list_images
    from ppfacedet.visualize import draw_detections

    if not cfg.get("weights"):
        raise PPFaceDetError("no weights: pass -o weights=PATH.pdparams")
    if args.infer_img:
        paths, root = [args.infer_img], os.path.dirname(os.path.abspath(args.infer_img))
    else:
        if not os.path.isdir(args.infer_dir):
            raise PPFaceDetError(f"--infer_dir: not a folder: {args.infer_dir}")
        paths, root = list_images(args.infer_dir), os.path.abspath(args.infer_dir)
        if not paths:
            raise PPFaceDetError(f"--infer_dir: no images in {args.infer_dir}")
    detector = FaceDetector(cfg, target_size=args.target_size)
    os.makedirs(args.output_dir, exist_ok=True)
    failed = 0
    for path in tqdm(paths, desc="infer", disable=len(paths) < 2):
        try:
            image = read_image(path)
        except PPFaceDetError as e:
            print(f"error: {e}")
            failed += 1
            continue
        det = detector(image)
        stem = os.path.splitext(os.path.basename(path))[0]
        with open(os.path.join(args.output_dir, stem + ".json"), "w") as f:
            json.dump(detections_to_json(det, args.threshold), f)
        cv2.imwrite(os.path.join(args.output_dir, stem + ".jpg"), draw_detections(image, det, args.threshold))
        if args.save_txt:
            rel = os.path.splitext(os.path.relpath(os.path.abspath(path), root))[0]
            txt = os.path.join(args.output_dir, rel + ".txt")
            os.makedirs(os.path.dirname(txt), exist_ok=True)
            with open(txt, "w") as f:
                f.write(wider_lines(os.path.basename(path), det))
    print(f"{len(paths) - failed} images -> {args.output_dir}" + (f" ({failed} unreadable)" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    run(main)
