import logging

import cv2
import numpy as np
import pytest

from ppfacedet.core import DataError
from ppfacedet.data.datasets import LabelV2Dataset, RetinaFaceLabelDataset
from ppfacedet.data.image_io import read_image
from ppfacedet.data.loader import Collate, unpack_batch
from ppfacedet.data.preprocess import InputPolicy
from ppfacedet.data.sources.labelv2 import parse_labelv2
from ppfacedet.data.sources.retinaface_label import parse_retinaface_label
from ppfacedet.data.synthetic import render_image, write_split
from ppfacedet.data.transforms.flip import RandomFlip
from ppfacedet.data.transforms.resize import FilterSmallFaces, Resize
from ppfacedet.data.transforms.square_crop import RandomSquareCrop


def sample_with_face(w=200, h=100):
    image = np.zeros((h, w, 3), np.uint8)
    image[:, :10] = 255  # a marker on the left edge to see the flip
    lms = np.array([[[30, 40], [50, 40], [40, 50], [32, 60], [48, 60]]], np.float32)
    return {"image": image, "boxes": np.array([[20, 30, 60, 70]], np.float32), "landmarks": lms,
            "landmark_valid": np.array([True])}


def test_labelv2_parses_boxes_landmarks_and_flags(tmp_path):
    label = tmp_path / "labelv2.txt"
    label.write_text("# a/img1.jpg 100 80\n"
                     "10 10 30 40 12 20 1.0 25 20 1.0 18 28 1.0 14 33 1.0 24 33 1.0\n"
                     "50 10 70 30\n"
                     "40 40 60 60 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1\n"
                     "# b/img2.jpg 100 80\n")
    records, report = parse_labelv2(str(label), "root")
    assert [r.name for r in records] == ["a/img1", "b/img2"]
    r = records[0]
    assert r.image_path == "root/a/img1.jpg" and r.size == (100, 80)
    np.testing.assert_allclose(r.boxes[0], [10, 10, 30, 40])
    np.testing.assert_allclose(r.landmarks[0, 1], [25, 20])
    assert r.landmark_valid.tolist() == [True, False, False]
    assert len(records[1].boxes) == 0 and not report.bad_lines


def test_malformed_lines_name_file_and_line_and_skip_only_their_image(tmp_path, caplog):
    label = tmp_path / "labelv2.txt"
    label.write_text("# a.jpg 100 80\n10 10 30 x\n# b.jpg 100 80\n1 2 3\n# c.jpg 100 80\n5 5 20 20\n")
    with caplog.at_level(logging.WARNING, logger="ppfacedet"):
        records, report = parse_labelv2(str(label), "")
    assert [r.name for r in records] == ["c"]
    assert any(f"{label}:2" in line for line in report.bad_lines)
    assert any(f"{label}:4" in line and "got 3" in line for line in report.bad_lines)


def test_degenerate_and_outside_boxes_are_dropped_with_their_line(tmp_path):
    label = tmp_path / "labelv2.txt"
    label.write_text("# a.jpg 100 80\n10 10 10 40\n200 10 220 40\n5 5 20 20\n")
    records, report = parse_labelv2(str(label), "")
    assert len(records[0].boxes) == 1 and report.dropped_boxes == 2
    assert f"{label}:2" in report.bad_lines[0] and "zero" in report.bad_lines[0]
    assert "outside" in report.bad_lines[1]


def test_retinaface_label_format(tmp_path):
    label = tmp_path / "label.txt"
    label.write_text("# 0--Parade/x.jpg\n"
                     "10 20 30 40 15 25 0.0 30 25 0.0 22 35 0.0 16 50 0.0 30 50 0.0 0.8\n"
                     "50 50 10 10 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1\n")
    records, _ = parse_retinaface_label(str(label), "imgs")
    r = records[0]
    np.testing.assert_allclose(r.boxes, [[10, 20, 40, 60], [50, 50, 60, 60]])
    assert r.landmark_valid.tolist() == [True, False]
    assert r.name == "0--Parade/x"


def test_empty_label_file_is_a_clear_error(tmp_path):
    label = tmp_path / "labelv2.txt"
    label.write_text("")
    with pytest.raises(DataError, match="no usable images"):
        LabelV2Dataset(str(label), str(tmp_path))
    with pytest.raises(DataError, match="not found"):
        RetinaFaceLabelDataset(str(tmp_path / "nope.txt"), str(tmp_path))


def test_read_image_handles_gray_rgba_and_reports_corrupt_files(tmp_path):
    gray = tmp_path / "g.png"
    cv2.imwrite(str(gray), np.full((5, 6), 100, np.uint8))
    rgba = tmp_path / "a.png"
    cv2.imwrite(str(rgba), np.full((5, 6, 4), 50, np.uint8))
    assert read_image(str(gray)).shape == (5, 6, 3)
    assert read_image(str(rgba)).shape == (5, 6, 3)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError, match="bad.jpg"):
        read_image(str(bad))
    with pytest.raises(DataError, match="not found"):
        read_image(str(tmp_path / "missing.jpg"))


def test_flip_mirrors_boxes_and_swaps_left_right_landmarks():
    s = RandomFlip(prob=1.0)(sample_with_face(), np.random.default_rng(0))
    np.testing.assert_allclose(s["boxes"][0], [140, 30, 180, 70])
    # the right eye (x=50) mirrored to 150 becomes the new left eye
    np.testing.assert_allclose(s["landmarks"][0], [[150, 40], [170, 40], [160, 50], [152, 60], [168, 60]])
    assert s["image"][:, -10:].min() == 255


def test_square_crop_keeps_annotations_aligned_with_pixels():
    rng = np.random.default_rng(3)
    for _ in range(20):
        sample = sample_with_face(300, 200)
        sample["image"][30:70, 20:60] = 77  # the face area, to find it again after cropping
        out = RandomSquareCrop(crop_choice=[0.5, 1.0, 1.5])(sample, rng)
        assert out["image"].shape[0] == out["image"].shape[1]
        if len(out["boxes"]):
            x1, y1, x2, y2 = out["boxes"][0].astype(int)
            inner = out["image"][y1 + 1:y2 - 1, x1 + 1:x2 - 1]
            assert inner.size == 0 or (inner == 77).mean() > 0.9
            if np.allclose(out["boxes"][0, 2:] - out["boxes"][0, :2], 40):  # not clipped by the crop edge
                np.testing.assert_allclose(out["landmarks"][0, 0] - out["boxes"][0, :2], [10, 10], atol=1e-4)


def test_resize_scales_annotations_and_filter_drops_tiny_faces():
    s = Resize(size=100)(sample_with_face(200, 100), np.random.default_rng(0))
    assert s["image"].shape == (100, 100, 3)
    np.testing.assert_allclose(s["boxes"][0], [10, 30, 30, 70])
    np.testing.assert_allclose(s["landmarks"][0, 0], [15, 40])
    assert len(FilterSmallFaces(min_size=25)(s, None)["boxes"]) == 0


def test_collate_pads_annotations_and_unpack_restores_lists():
    policy = InputPolicy(mean=(1, 2, 3), std=(2, 2, 2))
    a, b = sample_with_face(), sample_with_face(120, 90)
    b = {**b, "boxes": np.zeros((0, 4), np.float32), "landmarks": np.zeros((0, 5, 2), np.float32),
         "landmark_valid": np.zeros(0, bool)}
    loaded = Collate(policy)([a, None, b])
    assert loaded["image"].shape == (2, 3, 100, 200) and int(loaded["num_skipped"][0]) == 1
    np.testing.assert_allclose(loaded["image"][1, 0, 95, 0], -0.5)  # padding is normalised black
    batch = unpack_batch(loaded)
    assert [len(x) for x in batch["gt_boxes"]] == [1, 0]
    assert batch["landmark_valid"][0].dtype == bool and batch["num_skipped"] == 1


def test_dataset_skips_unreadable_images_and_is_deterministic(tmp_path):
    write_split(str(tmp_path), 3, {"image_size": 64, "faces_per_image": [1, 2], "face_size": [10, 20]}, 0, "t")
    (tmp_path / "images" / "synth_00001.jpg").write_bytes(b"corrupt")
    ds = LabelV2Dataset(str(tmp_path / "labelv2.txt"), str(tmp_path / "images"),
                        transforms=[{"type": "RandomFlip"}, {"type": "Resize", "size": 32}], seed=5)
    assert ds[1] is None
    first, again = ds[0], ds[0]
    np.testing.assert_array_equal(first["image"], again["image"])
    assert first["image"].shape == (32, 32, 3)
    flips = set()
    for epoch in range(8):  # the augmentation is drawn anew each epoch
        ds.epoch = epoch
        flips.add(ds[0]["image"].tobytes())
    assert len(flips) == 2


def test_synthetic_faces_are_deterministic_and_inside_the_image():
    img1, boxes1, lms1 = render_image(np.random.default_rng([7, 1]), 128, [2, 4], [12, 40])
    img2, boxes2, lms2 = render_image(np.random.default_rng([7, 1]), 128, [2, 4], [12, 40])
    np.testing.assert_array_equal(img1, img2)
    np.testing.assert_array_equal(boxes1, boxes2)
    assert 2 <= len(boxes1) <= 4 and boxes1.min() >= 0 and boxes1.max() <= 128
    # landmarks lie inside their face box
    for box, lm in zip(boxes1, lms1):
        assert (lm[:, 0] >= box[0] - 1).all() and (lm[:, 0] <= box[2] + 1).all()
        assert (lm[:, 1] >= box[1] - 1).all() and (lm[:, 1] <= box[3] + 1).all()


@pytest.mark.parametrize("order", ["BGR", "RGB"])
def test_normalize_is_channel_order_then_mean_and_std(order):
    """The fast cv2 path is bit-identical to the plain formula, per-channel
    mean and std included (ImageNet's values are not powers of two)."""
    image = np.random.RandomState(3).randint(0, 256, (37, 53, 3), dtype=np.uint8)
    mean, std = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
    got = InputPolicy(mean=mean, std=std, channel_order=order).normalize(image)
    swapped = image[:, :, ::-1] if order == "RGB" else image
    expected = (swapped.transpose(2, 0, 1).astype(np.float32) - np.float32(mean).reshape(3, 1, 1)) \
        / np.float32(std).reshape(3, 1, 1)
    assert got.dtype == np.float32 and got.shape == (3, 37, 53)
    np.testing.assert_array_equal(got, expected)
