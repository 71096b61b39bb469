"""Standalone face detection with an exported ppfacedet model.

Needs only paddle, numpy, cv2 and yaml (plus onnxruntime or OpenVINO for those
engines): the model folder written by tools/export_model.py (program,
model.pdiparams, model.onnx, infer_cfg.yml) says everything.

  python deploy/python/infer.py --model_dir output/export/scrfd_500m_kps --image_file photo.jpg
  python deploy/python/infer.py --model_dir DIR --image_dir photos/ --enable_mkldnn --cpu_threads 4 --benchmark
  python deploy/python/infer.py --model_dir DIR --video_file clip.mp4 --output_dir out/
  python deploy/python/infer.py --model_dir DIR --image_file p.jpg --run_mode auto --cpu_threads 2   # fastest CPU engine
  python deploy/python/infer.py --model_dir DIR --image_file p.jpg --device GPU --run_mode trt_fp16

For each image OUT/<stem>.json ({"faces": [{"box", "score", "landmarks"}]},
original-image pixels, as tools/infer.py writes) and OUT/<stem>.jpg with the
detections drawn; a video or camera gives OUT/<stem>.mp4 and OUT/<stem>.json
with one {"frame": i, "faces": [...]} per frame. Exit status 2 when the
requested device (GPU, TensorRT) is unavailable, TensorRT fails on the program
(the message names the fallback), or the input is unusable, 1
when some images of a folder could not be read (they are reported and skipped).
"""
import argparse
import json
import os
import sys
import time
import warnings

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
warnings.filterwarnings("ignore", message=".*ccache.*")  # printed by every `import paddle`

from decode import Decoder, select, to_original_pixels  # noqa: E402
from engines import RUN_MODES, create_engine  # noqa: E402
from image_check import decode_checked  # noqa: E402
from predictor import DEVICES, DeviceUnavailable, load_infer_cfg  # noqa: E402
from tensorrt_routes import TensorRTError  # noqa: E402
from preprocess import Preprocess  # noqa: E402
from visualize import draw_detections  # noqa: E402

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
TEST_KEYS = ("score_threshold", "nms_threshold", "pre_nms_top_k", "max_per_image", "nms_box_offset")


class InputError(ValueError):
    """An unreadable or missing input."""


class Timer:
    """Accumulated milliseconds per stage and the number of images they cover."""

    def __init__(self):
        self.totals = {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}
        self.images = 0

    def add(self, stage, start):
        self.totals[stage] += (time.perf_counter() - start) * 1000

    def per_image(self):
        return {stage: total / max(self.images, 1) for stage, total in self.totals.items()}


def read_model_settings(model_dir):
    """(infer_cfg.yml as a dict, its Preprocess, its Decoder); a value of the
    wrong kind is a ValueError naming the file."""
    info = load_infer_cfg(model_dir)
    try:
        return info, Preprocess(info["input"]), Decoder(info)
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        path = os.path.join(model_dir, "infer_cfg.yml")
        raise ValueError(f"{path}: {' '.join(str(e).split())}") from None


class FaceDetector:
    """BGR images -> per image {'boxes' [k,4], 'scores' [k], 'landmarks' [k,5,2] | None}
    in original pixels, like ppfacedet.FaceDetector.

    ``min_score``: keep only detections scoring at least this (infer.py passes
    --threshold, below which it writes nothing). Greedy NMS decides a box from
    higher-scoring boxes alone, so these are exactly the full result's
    detections at or above ``min_score``, found without decoding and
    suppressing the low-scoring rest."""

    def __init__(self, model_dir, min_score=None, **choices):
        self.info, self.preprocess, self.decoder = read_model_settings(model_dir)
        self.test_cfg = {k: v for k, v in self.info["test"].items() if k in TEST_KEYS}
        self.min_score = -np.inf if min_score is None else min_score
        self.engine = create_engine(model_dir, self.info, **choices)
        self.input_buffers = {}
        self.timer = Timer()

    def input_buffer(self, shape):
        """A reused [N,3,H,W] input per shape (a video or a folder of one size
        repeats it) and, per slot, the image area its padding surrounds (None:
        unknown). The engines copy their input, so one call's data never
        outlives the next."""
        if shape not in self.input_buffers:
            if len(self.input_buffers) >= 4:
                self.input_buffers.pop(next(iter(self.input_buffers)))
            self.input_buffers[shape] = np.empty(shape, np.float32), [None] * shape[0]
        return self.input_buffers[shape]

    def selection(self, min_score):
        """The test settings that keep the detections scoring at least ``min_score``."""
        if min_score == -np.inf:
            return self.test_cfg
        # "score >= min_score" as the strict "> threshold" that selection applies
        at_least = float(np.nextafter(np.float32(min_score), np.float32(-np.inf)))
        return {**self.test_cfg, "score_threshold": max(self.test_cfg.get("score_threshold", 0.0), at_least)}

    def __call__(self, images, min_scores=None):
        """Images whose network inputs share a shape run as one batch, others
        apart (as ppfacedet.FaceDetector does): padding an input to a
        companion's size would change its detections near the border.
        ``min_scores``: one per image instead of the detector's ``min_score``
        (the service's per-request threshold)."""
        min_scores = [self.min_score] * len(images) if min_scores is None else min_scores
        start = time.perf_counter()
        groups = {}
        for index, image in enumerate(images):
            groups.setdefault(self.preprocess.layout(image.shape[:2])[0], []).append(index)
        self.timer.add("preprocess", start)
        results = [None] * len(images)
        for (height, width), indices in groups.items():
            start = time.perf_counter()
            batch, areas = self.input_buffer((len(indices), 3, height, width))
            scales = []
            for slot, i in enumerate(indices):
                padded, areas[slot] = areas[slot], None  # unknown until this image is in
                scale, areas[slot] = self.preprocess.into(images[i], batch[slot], padded)
                scales.append(scale)
            self.timer.add("preprocess", start)
            start = time.perf_counter()
            outputs = self.engine(batch, np.asarray(scales, np.float32))
            self.timer.add("inference", start)
            start = time.perf_counter()
            for i, det in zip(indices, self._detections(outputs, batch.shape[2:], scales,
                                                        [min_scores[i] for i in indices])):
                results[i] = det
            self.timer.add("postprocess", start)
        self.timer.images += len(images)
        return results

    def _detections(self, outputs, input_hw, scales, min_scores):
        if self.info.get("with_nms"):
            return self._split_graph_detections(outputs, scales, min_scores)
        results = []
        for i, (scale, min_score) in enumerate(zip(scales, min_scores)):
            test_cfg = self.selection(min_score)
            candidates = self.decoder.candidates(outputs, input_hw, i, test_cfg.get("score_threshold", 0.0))
            results.append(select(*candidates, scale, **test_cfg))
        return results

    def _split_graph_detections(self, outputs, scales, min_scores):
        """``dets`` [K,16] (image index, score, x1 y1 x2 y2, 10 landmark coords) -> per image."""
        dets = outputs["dets"]
        has_landmarks = self.info.get("nms_output", {}).get("landmarks", True)
        results = []
        for i, (scale, min_score) in enumerate(zip(scales, min_scores)):
            mine = dets[(dets[:, 0] == i) & (dets[:, 1] >= min_score)]
            results.append(to_original_pixels(mine[:, 2:6], mine[:, 1], mine[:, 6:16] if has_landmarks else None,
                                              scale))
        return results


def detections_to_json(det, threshold=0.0):
    """The JSON form tools/infer.py writes."""
    faces = []
    for i in np.nonzero(det["scores"] >= threshold)[0]:
        faces.append({
            "box": [round(float(v), 2) for v in det["boxes"][i]],
            "score": round(float(det["scores"][i]), 5),
            "landmarks": None if det["landmarks"] is None
            else [[round(float(x), 2), round(float(y), 2)] for x, y in det["landmarks"][i]],
        })
    return {"faces": faces}


def read_image(path):
    """BGR uint8 (see ``image_from_bytes``); errors name the file."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise InputError(f"{path}: cannot read image ({e.strerror or e})") from None
    try:
        return image_from_bytes(data)
    except InputError as e:
        raise InputError(f"{path}: {e}") from None


def image_from_bytes(data):
    """BGR uint8; grayscale replicated, alpha dropped, 16-bit scaled (as ppfacedet reads images).
    Truncated or corrupt JPEG and PNG files are errors, not half pictures."""
    image, problem = decode_checked(data)
    if problem:
        raise InputError(problem)
    if image is None or image.size == 0:
        raise InputError("cannot read image (corrupt or unsupported format)")
    if image.dtype == np.uint16:
        image = (image / 257).astype(np.uint8)
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def list_images(root):
    paths = []
    for dirpath, _, files in os.walk(root):
        paths.extend(os.path.join(dirpath, f) for f in files if f.lower().endswith(IMAGE_EXTENSIONS))
    return sorted(paths)


def image_paths(args):
    if args.image_file:
        if not os.path.isfile(args.image_file):
            raise InputError(f"--image_file: not found: {args.image_file}")
        return [args.image_file]
    if not os.path.isdir(args.image_dir):
        raise InputError(f"--image_dir: not a folder: {args.image_dir}")
    paths = list_images(args.image_dir)
    if not paths:
        raise InputError(f"--image_dir: no images ({', '.join(IMAGE_EXTENSIONS)}) in {args.image_dir}")
    return paths


def run_images(detector, args):
    """Detect, write JSON + drawings; returns the number of unreadable images (reported, skipped)."""
    paths = image_paths(args)
    failed, readable = 0, []
    for start in range(0, len(paths), args.batch_size):
        chunk, images = [], []
        for path in paths[start:start + args.batch_size]:
            try:
                images.append(read_image(path))
                chunk.append(path)
            except InputError as e:
                print(f"error: {e}", file=sys.stderr)
                failed += 1
        if not images:
            continue
        readable.extend(images[:args.batch_size - len(readable)])
        for path, image, det in zip(chunk, images, detector(images)):
            stem = os.path.splitext(os.path.basename(path))[0]
            with open(os.path.join(args.output_dir, stem + ".json"), "w") as f:
                json.dump(detections_to_json(det, args.threshold), f)
            cv2.imwrite(os.path.join(args.output_dir, stem + ".jpg"), draw_detections(image, det, args.threshold))
            print(f"{path}: {int((det['scores'] >= args.threshold).sum())} faces")
    if args.benchmark and readable:
        benchmark(detector, readable, args.repeats)
    return failed


def run_stream(detector, args):
    source = args.video_file if args.video_file else args.camera_id
    capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        raise InputError(f"cannot open {'--video_file ' + args.video_file if args.video_file else f'camera {source}'}")
    stem = os.path.splitext(os.path.basename(args.video_file))[0] if args.video_file else f"camera_{source}"
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    writer, frames, index = None, [], 0
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            det = detector([frame])[0]
            if writer is None:
                h, w = frame.shape[:2]
                writer = cv2.VideoWriter(os.path.join(args.output_dir, stem + ".mp4"),
                                         cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
            writer.write(draw_detections(frame, det, args.threshold))
            frames.append({"frame": index, **detections_to_json(det, args.threshold)})
            index += 1
    except KeyboardInterrupt:
        pass
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    with open(os.path.join(args.output_dir, stem + ".json"), "w") as f:
        json.dump({"frames": frames}, f)
    print(f"{index} frames -> {os.path.join(args.output_dir, stem + '.mp4')}")
    return index


def benchmark(detector, images, repeats):
    """Mean per-image milliseconds of each stage over ``repeats`` runs after two warm-up runs."""
    for _ in range(2):
        detector(images)
    detector.timer = Timer()
    for _ in range(repeats):
        detector(images)
    times = detector.timer.per_image()
    print(f"benchmark ({repeats} runs, batch {len(images)}): preprocess {times['preprocess']:.2f} ms, "
          f"inference {times['inference']:.2f} ms, postprocess {times['postprocess']:.2f} ms per image")
    return times


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", required=True, help="folder written by tools/export_model.py")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--image_file")
    source.add_argument("--image_dir", help="folder of images (searched recursively)")
    source.add_argument("--video_file")
    source.add_argument("--camera_id", type=int)
    parser.add_argument("--device", default="CPU", type=str.upper, choices=DEVICES)
    parser.add_argument("--run_mode", default="paddle", choices=RUN_MODES,
                        help="paddle (Paddle Inference), TensorRT at fp32 / fp16 / int8 (GPU only), onnxruntime or "
                             "openvino (CPU, on the folder's model.onnx), or auto: the fastest one installed for "
                             "the device (on CPU onnxruntime)")
    parser.add_argument("--gpu_id", type=int, default=0,
                        help="with --device GPU: which GPU (PIR-TensorRT also converts on it)")
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--cpu_threads", type=int, default=1)
    parser.add_argument("--enable_mkldnn", action="store_true",
                        help="oneDNN kernels for Paddle Inference on CPU (much faster)")
    parser.add_argument("--trt_min_shape", type=int, default=32, help="TensorRT dynamic shape: smallest H = W")
    parser.add_argument("--trt_opt_shape", type=int, default=640, help="TensorRT dynamic shape: tuned-for H = W")
    parser.add_argument("--trt_max_shape", type=int, default=1280, help="TensorRT dynamic shape: largest H = W")
    parser.add_argument("--collect_trt_shape_info", action="store_true",
                        help="run on GPU and record tensor shape ranges into --tuned_trt_shape_file")
    parser.add_argument("--tuned_trt_shape_file", default=None,
                        help="shape-range file for TensorRT (default MODEL_DIR/shape_range_info.pbtxt when "
                             "collecting)")
    parser.add_argument("--trt_disable_ops", default="",
                        help="comma-separated ops kept out of TensorRT, e.g. conv2d_transpose,slice (PIR: pd_op.NAME)")
    parser.add_argument("--threshold", type=float, default=0.5, help="score threshold for JSON and drawing")
    parser.add_argument("--output_dir", default="output/deploy")
    parser.add_argument("--benchmark", action="store_true",
                        help="also time preprocess / inference / postprocess over --repeats runs")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch_size {args.batch_size}: must be at least 1")
    if args.collect_trt_shape_info and not args.tuned_trt_shape_file:
        args.tuned_trt_shape_file = os.path.join(args.model_dir, "shape_range_info.pbtxt")
    return args


def predictor_choices(args):
    return {"device": args.device, "run_mode": args.run_mode, "gpu_id": args.gpu_id, "batch_size": args.batch_size,
            "cpu_threads": args.cpu_threads, "enable_mkldnn": args.enable_mkldnn,
            "trt_min_shape": args.trt_min_shape, "trt_opt_shape": args.trt_opt_shape,
            "trt_max_shape": args.trt_max_shape, "collect_trt_shape_info": args.collect_trt_shape_info,
            "tuned_trt_shape_file": args.tuned_trt_shape_file,
            "trt_disable_ops": [op for op in args.trt_disable_ops.split(",") if op.strip()]}


def main(argv=None):
    args = parse_args(argv)
    try:
        detector = FaceDetector(args.model_dir, min_score=args.threshold, **predictor_choices(args))
        os.makedirs(args.output_dir, exist_ok=True)
        if args.image_file or args.image_dir:
            if run_images(detector, args):
                return 1
        else:
            run_stream(detector, args)
    except (DeviceUnavailable, TensorRTError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (InputError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
