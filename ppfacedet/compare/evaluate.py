"""Run every model over the same images and collect one table row each."""
import os

from tqdm import tqdm

from ..api import detections_to_wider
from ..core.errors import PPFaceDetError
from ..data.image_io import read_image
from ..data.sources.image_folder import list_images


def eval_images(image_dir, ground_truth, max_images=None):
    """[(WIDER key 'event/name', path)] of the images under ``image_dir`` that the
    ground truth knows, sorted; the first ``max_images`` when given."""
    if not os.path.isdir(image_dir):
        raise PPFaceDetError(f"--image_dir: not a folder: {image_dir}")
    items = []
    for path in list_images(image_dir):
        key = os.path.splitext(os.path.relpath(path, image_dir))[0].replace(os.sep, "/")
        if ground_truth.lookup(key) is not None:
            items.append((key, path))
    if not items:
        raise PPFaceDetError(f"--image_dir: none of the images under {image_dir} is in the ground truth "
                             f"({len(ground_truth)} images, e.g. {ground_truth.names[0]})")
    return items[:max_images] if max_images else items


def restrict_ground_truth(ground_truth, items):
    """The ground truth of the evaluated images only, so that a partial run
    does not count the faces of images it never looked at as missed."""
    return ground_truth.subset(sorted(ground_truth.lookup(key) for key, _ in items))


def predict(runner, images, progress=True, desc=""):
    """{key: [n,5] x,y,w,h,score} of one runner over pre-read images."""
    return {key: detections_to_wider(runner.detect(image))
            for key, image in tqdm(images, desc=desc, disable=not progress, leave=False)}


def read_images(items):
    return [(key, read_image(path)) for key, path in items]


def compare(runners, items, ground_truth, input_size, repeats=50, warmup=5, iou_thresh=0.5, progress=True):
    """One row per (name, runner): AP easy/medium/hard on ``items``, params,
    MACs and FPS at ``input_size``."""
    from widerface_evaluate import evaluate
    images = read_images(items)
    gt = restrict_ground_truth(ground_truth, items)
    rows = []
    for name, runner in runners:
        preds = predict(runner, images, progress, desc=name)
        ap = evaluate(preds, gt, iou_thresh=iou_thresh)
        row = {"model": name, "kind": runner.label}
        row.update({k: float(ap[k]) for k in ("easy", "medium", "hard")})
        row.update(runner.size(input_size))
        row["fps"] = runner.fps(input_size, repeats, warmup)
        rows.append(row)
    return rows
