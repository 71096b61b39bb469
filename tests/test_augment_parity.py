"""Each family's training transforms, built from its config, against the
official pipeline run with the same decisions (tests/fixtures/augment,
PROVENANCE.md there): the crop squares drawn and the one accepted, the kept
faces, boxes, landmarks and the normalised network input."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from ppfacedet.core import DataError, load_config
from ppfacedet.data.preprocess import InputPolicy
from ppfacedet.data.transforms.compose import Compose, RandomTransform
from ppfacedet.data.transforms.flip import RandomFlip
from ppfacedet.data.transforms.photometric import PhotometricDistortion
from ppfacedet.data.transforms.resize import Resize
from ppfacedet.data.transforms.square_crop import RandomSquareCrop, centres_inside
from ppfacedet.engine.trainer import Trainer
from tiny import make_tiny_config

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "augment"
PHOTOS = ROOT.parent / "shared" / "data" / "widerface" / "val_subset_resized416"
LANDMARK_FRACTIONS = np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]], np.float32)
PATCH_AT = ((32, 32), (316, 316), (600, 600))

# fixture -> (the config whose train_dataset.transforms and input section are
# compared, the tolerance on boxes and landmarks in pixels). mmdet computes them
# in float32 as we do, so they must match exactly; Pytorch_Retinaface divides in
# float64. Images allow 1e-3 for SIMD differences between machines.
FAMILIES = {
    "scrfd": ("configs/scrfd_500m_kps.yml", 0),
    "scrfd_noclip": ("configs/scrfd_2.5g_kps.yml", 0),
    "damofd_0.5g": ("configs/damofd_0.5g_kps.yml", 0),
    "yunet_n": ("configs/yunet_n.yml", 0),
    "yunet_s": ("configs/yunet_s.yml", 0),
    "retinaface": ("configs/retinaface_mnet025.yml", 1e-4),
}


def synthetic_image(h, w, seed):
    """Integer-only BGR pattern, the same bytes on every machine: colour
    stripes plus hash noise, so every interpolation and colour step shows."""
    y, x = np.mgrid[0:h, 0:w].astype(np.int64)
    c = np.arange(3, dtype=np.int64)
    stripes = (x[..., None] * (3 + seed) + y[..., None] * (5 + 2 * seed) + c * 85) % 256
    noise = ((x[..., None] * 73856093) ^ (y[..., None] * 19349663) ^ (c * 83492791 + seed)) % 61
    return ((stripes + noise) % 256).astype(np.uint8)


def landmarks_in(boxes):
    return boxes[:, None, :2] + LANDMARK_FRACTIONS[None] * (boxes[:, None, 2:] - boxes[:, None, :2])


def synthetic_faces(spec):
    boxes = np.array(spec["boxes"], np.float32).reshape(-1, 4)
    lms = landmarks_in(boxes)
    for i, shift in spec.get("landmark_shift", {}).items():
        lms[int(i)] += np.array(shift, np.float32)
    valid = np.array(spec.get("valid", [True] * len(boxes)), bool)
    lms[~valid] = 0
    return boxes, lms.astype(np.float32), valid


def photo_faces(name):
    """A subset photo's boxes, landmarks at fixed fractions on every other face."""
    boxes, current = [], None
    for line in (PHOTOS / "labelv2_subset_scaled416.txt").read_text().splitlines():
        if line.startswith("#"):
            current = line[1:].split()[0]
        elif current == name:
            boxes.append([float(v) for v in line.split()[:4]])
    boxes = np.array(boxes, np.float32).reshape(-1, 4)
    lms = landmarks_in(boxes)
    valid = np.arange(len(boxes)) % 2 == 0
    lms[~valid] = 0
    return boxes, lms.astype(np.float32), valid


def load_sample(case):
    if "photo" in case:
        if not PHOTOS.is_dir():
            pytest.skip("../shared/data not present: WIDER photos are not redistributable")
        image = cv2.imread(str(PHOTOS / "images" / case["photo"]))
        boxes, lms, valid = photo_faces(case["photo"])
    else:
        image = synthetic_image(*case["synthetic"])
        boxes, lms, valid = synthetic_faces(case["faces"])
    return {"image": image, "boxes": boxes, "landmarks": lms, "landmark_valid": valid}


class Replay:
    """Hands our crop the numbers the official RNG calls returned, checking
    that ours asks for the same thing: a choice among the same scales, an
    offset from the same half-open range."""

    def __init__(self, log, crop_choice):
        self.log = [list(entry) for entry in log]
        self.crop_choice = crop_choice

    def integers(self, low, high=None):
        assert self.log, "our crop drew more than the official one"
        kind, value, bounds = self.log.pop(0)
        if high is None:
            assert kind == "choice" and bounds[0] == self.crop_choice
            return bounds[0].index(value)
        assert kind in ("randint", "randrange") and [low, high] == bounds, (kind, bounds, low, high)
        return value


def decision(transform, case, sample):
    if isinstance(transform, RandomSquareCrop):
        replay = Replay(case["crop_log"], transform.crop_choice)
        square = transform.draw(sample, replay)
        assert not replay.log, "the official crop drew more squares than ours"
        return square
    if isinstance(transform, RandomFlip):
        return case["flip"]
    if isinstance(transform, PhotometricDistortion):
        return case["pmd"]
    if isinstance(transform, Resize):
        return transform.INTERPOLATIONS[case["interp"]] if transform.random_interp else cv2.INTER_LINEAR
    raise AssertionError(f"no decision for {type(transform).__name__}")


def run_ours(config, case):
    cfg = load_config(str(ROOT / config))
    sample = load_sample(case)
    boxes_in = sample["boxes"].copy()
    kept = np.arange(len(boxes_in))
    for transform in Compose(cfg["train_dataset"]["transforms"]).transforms:
        if isinstance(transform, RandomTransform):
            d = decision(transform, case, sample)
            if isinstance(transform, RandomSquareCrop) and d is not None:
                kept = kept[centres_inside(boxes_in, d)]
            sample = transform.apply(sample, d)
        else:
            sample = transform(sample, None)
    network_input = InputPolicy.from_config(cfg).normalize(sample["image"]).transpose(1, 2, 0)
    return sample, kept, network_input


def fixture_cases():
    for family, (config, atol) in FAMILIES.items():
        data = np.load(FIXTURES / f"{family}.npz")
        for case in json.loads(str(data["cases"])):
            expected = {key.split("/", 1)[1]: data[key] for key in data.files if key.startswith(case["name"] + "/")}
            yield pytest.param(config, case, expected, atol, id=f"{family}-{case['name']}")


@pytest.mark.parametrize("config,case,expected,atol", list(fixture_cases()))
def test_training_transforms_equal_the_official_pipeline(config, case, expected, atol):
    sample, kept, image = run_ours(config, case)
    np.testing.assert_array_equal(kept, expected["kept"])
    np.testing.assert_allclose(sample["boxes"], expected["boxes"], rtol=0, atol=atol)
    valid = expected["landmark_valid"]
    np.testing.assert_array_equal(sample["landmark_valid"], valid)
    np.testing.assert_allclose(sample["landmarks"][valid], expected["landmarks"][valid], rtol=0, atol=atol)

    assert list(image.shape) == expected["shape"].tolist()
    for i, (y, x) in enumerate(PATCH_AT):
        np.testing.assert_allclose(image[y:y + 8, x:x + 8], expected[f"patch{i}"], rtol=0, atol=1e-3)
    thumb = cv2.resize(image, (16, 16), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(thumb, expected["thumb"], rtol=0, atol=1e-3)
    pixels = image.astype(np.float64)
    np.testing.assert_allclose(pixels.sum(), expected["sum"], rtol=1e-6, atol=1e-2)
    np.testing.assert_allclose((pixels ** 2).sum(), expected["sumsq"], rtol=1e-6)


def face_at(box, size=(100, 100)):
    box = np.array([box], np.float32)
    return {"image": np.zeros(size + (3,), np.uint8), "boxes": box, "landmarks": landmarks_in(box),
            "landmark_valid": np.array([True])}


def test_resize_clips_boxes_and_landmarks_into_the_image_only_with_clip_border():
    # After a clipped crop this only trims float rounding; without one (a
    # hand-written pipeline) it is mmdet's bbox_clip_border on the resize.
    sample = face_at([-10, 20, 50, 140])
    clipped = Resize(size=50, clip_border=True).apply(face_at([-10, 20, 50, 140]), cv2.INTER_LINEAR)
    kept = Resize(size=50, clip_border=False).apply(sample, cv2.INTER_LINEAR)
    np.testing.assert_allclose(kept["boxes"], [[-5, 10, 25, 70]])
    np.testing.assert_allclose(clipped["boxes"], [[0, 10, 25, 50]])
    assert clipped["landmarks"].min() >= 0 and clipped["landmarks"].max() <= 50
    assert kept["landmarks"][0, 3, 1] > 50


def test_a_crop_search_that_cannot_end_skips_the_sample_instead_of_hanging():
    # A face centred 60 px left of the image: no 1.5x square reaches it. The
    # official loop would spin for ever.
    crop = RandomSquareCrop(crop_choice=[1.5])
    with pytest.raises(DataError, match="no square crop keeps a face centre"):
        crop(face_at([-70, 40, -50, 60]), np.random.default_rng(0))


def test_an_image_without_faces_takes_the_first_square_drawn():
    sample = face_at([0, 0, 1, 1])
    for key in ("boxes", "landmarks", "landmark_valid"):
        sample[key] = sample[key][:0]
    out = RandomSquareCrop(crop_choice=[0.5], require_whole_face=True, max_trials=1)(sample, np.random.default_rng(0))
    assert out["image"].shape == (50, 50, 3) and len(out["boxes"]) == 0


def test_the_official_float32_pipeline_feeds_training(tmp_path):
    # SCRFD's transforms as in its config (float32 images, unclipped colours,
    # channel swap), at the tiny data's size, through the loader and one epoch.
    cfg = load_config(make_tiny_config(tmp_path, base="configs/scrfd_500m_kps.yml"), ["epochs=1"])
    official = load_config(str(ROOT / "configs/scrfd_2.5g_kps.yml"))["train_dataset"]["transforms"]
    cfg["train_dataset"]["transforms"] = [dict(t, size=96) if t["type"] == "Resize" else t for t in official]
    state = Trainer(cfg).train()
    assert state["iteration"] == 4
    assert all(np.isfinite(v) for v in state["losses"].values())
