"""SCRFD training pieces: losses against hand-computed values, the ATSS
assigner on a hand-made case, and the head's loss end to end."""
import math
from pathlib import Path

import numpy as np
import paddle
import pytest

from ppfacedet.core import load_config
from ppfacedet.modeling.assigners.atss import ATSSAssigner, nearest_lowest_index_first
from ppfacedet.modeling.detector import build_model
from ppfacedet.modeling.losses.iou_losses import DIoULoss, EIoULoss, GIoULoss
from ppfacedet.modeling.losses.quality_focal import QualityFocalLoss
from ppfacedet.modeling.losses.smooth_l1 import SmoothL1Loss

ROOT = Path(__file__).resolve().parents[1]


def t(values):
    return paddle.to_tensor(np.asarray(values, np.float32))


def test_quality_focal_loss_hand_computed():
    # logit 0 (p=0.5) against quality 0.8: BCE = ln 2, modulator 0.3^2.
    # logit ln 3 (p=0.75) against 0: BCE = -ln 0.25, modulator 0.75^2.
    expected = (math.log(2) * 0.09 + -math.log(0.25) * 0.5625) / 2
    loss = QualityFocalLoss(beta=2.0)(t([0.0, math.log(3)]), t([0.8, 0.0]), avg_factor=2.0)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    # A prediction equal to its soft target costs nothing however uncertain.
    assert float(QualityFocalLoss()(t([0.0]), t([0.5]))) == pytest.approx(0.0, abs=1e-7)


def test_iou_losses_hand_computed():
    pred, target = t([[0, 0, 2, 2]]), t([[1, 1, 3, 3]])
    iou = 1 / 7  # overlap 1, union 7
    # Enclosing box 3x3: diagonal^2 18, centre distance^2 2, area 9.
    assert float(DIoULoss()(pred, target)) == pytest.approx(1 - (iou - 2 / 18), rel=1e-5)
    assert float(GIoULoss()(pred, target)) == pytest.approx(1 - (iou - 2 / 9), rel=1e-5)
    assert float(DIoULoss(loss_weight=2.0)(pred, target, weight=t([0.5]), avg_factor=0.5)) == \
        pytest.approx(2 * (1 - (iou - 2 / 18)), rel=1e-5)
    assert float(DIoULoss()(pred, pred)) == pytest.approx(0.0, abs=1e-5)
    # EIoU: overlapping boxes use the plain IoU, u = 6/7 is past the smooth point.
    assert float(EIoULoss(smooth_point=0.1)(pred, target)) == pytest.approx(6 / 7 - 0.05, rel=1e-5)
    # Disjoint unit boxes one unit apart: extended overlap -1, union 3, u = 4/3.
    far = EIoULoss(smooth_point=0.1)(t([[0, 0, 1, 1]]), t([[2, 0, 3, 1]]))
    assert float(far) == pytest.approx(4 / 3 - 0.05, rel=1e-5)
    # Near-perfect boxes fall in the quadratic zone: u = 1 - 0.95 = 0.05.
    near = EIoULoss(smooth_point=0.1)(t([[0, 0, 1, 0.95]]), t([[0, 0, 1, 1]]))
    assert float(near) == pytest.approx(0.5 * 0.05 ** 2 / 0.1, rel=1e-3)


def test_smooth_l1_hand_computed():
    loss = SmoothL1Loss(beta=1 / 9, loss_weight=0.1)(t([0.05, 1.0]), t([0.0, 0.0]), weight=t([1.0, 2.0]))
    expected = 0.1 * (0.5 * 0.05 ** 2 * 9 + 2 * (1 - 0.5 / 9))
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def row_of_anchors():
    """Five 16x16 anchors centred at x = 0, 8, ..., 32 (y = 8), plus one 32x32 on a second level."""
    fine = np.array([[x - 8, 0, x + 8, 16] for x in (0, 8, 16, 24, 32)], np.float32)
    coarse = np.array([[0, -8, 32, 24]], np.float32)
    return np.concatenate([fine, coarse]), [5, 1]


def test_atss_assigns_the_candidate_above_mean_plus_std():
    anchors, levels = row_of_anchors()
    gt = np.array([[9, 0, 25, 16]], np.float32)
    # Candidates: 3 nearest of level 1 (anchors 2, 3, 1: IoU 0.882, 0.391, 0.28)
    # and the single coarse anchor (0.25); threshold mean + std = 0.745.
    assigned = ATSSAssigner(topk=3)(anchors, levels, gt)
    assert assigned.tolist() == [-1, -1, 0, -1, -1, -1]
    assert (ATSSAssigner(topk=3)(anchors, levels, np.zeros((0, 4))) == -1).all()


def test_atss_gives_a_shared_anchor_to_the_box_it_overlaps_most():
    anchors, levels = row_of_anchors()
    # Each face alone takes anchor 2 ([8, 0, 24, 16]); the second fits it better.
    gt = np.array([[10, 1, 26, 17], [8.5, 0, 24.5, 16]], np.float32)
    for alone in gt:
        assert ATSSAssigner(topk=3)(anchors, levels, alone[None]).tolist() == [-1, -1, 0, -1, -1, -1]
    assert ATSSAssigner(topk=3)(anchors, levels, gt).tolist() == [-1, -1, 1, -1, -1, -1]


def test_atss_rejects_candidates_whose_centre_is_outside_the_box():
    anchors, levels = row_of_anchors()
    # Anchor 2 passes the IoU threshold (0.3125 against 0.293) but its centre
    # (16, 8) lies 0.5 px above the face: rejected by the inside rule, kept
    # once the margin allows centres slightly outside.
    gt = np.array([[8, 8.5, 24, 24]], np.float32)
    assert (ATSSAssigner(topk=3)(anchors, levels, gt) == -1).all()
    assert ATSSAssigner(topk=3, inside_margin=-0.1)(anchors, levels, gt).tolist() == [-1, -1, 0, -1, -1, -1]


def training_batch(with_landmarks=True, valid=(True, False), empty_second=True):
    rng = np.random.default_rng(0)
    boxes = [np.array([[8, 10, 40, 44], [30, 5, 60, 30]], np.float32),
             np.zeros((0, 4), np.float32) if empty_second else np.array([[0, 0, 20, 24]], np.float32)]
    batch = {"image": paddle.to_tensor(rng.standard_normal((2, 3, 64, 64)).astype(np.float32)),
             "gt_boxes": boxes, "metas": [{}, {}], "num_skipped": 0}
    if with_landmarks:
        batch["gt_landmarks"] = [b[:, None, :2] + rng.uniform(2, 8, (len(b), 5, 2)).astype(np.float32)
                                 for b in boxes]
        batch["landmark_valid"] = [np.array(valid[:len(b)], bool) for b in boxes]
    return batch


def build(name):
    model = build_model(load_config(ROOT / "configs" / f"{name}.yml"))
    model.train()
    return model


def test_head_loss_with_landmarks_is_finite_and_trains_every_branch():
    model = build("scrfd_500m_kps")
    batch = training_batch()
    losses = model.loss(model(batch["image"]), batch)
    assert set(losses) == {"loss", "loss_cls", "loss_box", "loss_kps"}
    for name, value in losses.items():
        assert np.isfinite(float(value)), name
    assert float(losses["loss_box"]) > 0 and float(losses["loss_kps"]) > 0
    assert float(losses["loss"]) == pytest.approx(
        float(losses["loss_cls"]) + float(losses["loss_box"]) + float(losses["loss_kps"]), rel=1e-5)
    losses["loss"].backward()
    head = model.head
    for layer in (head.stride_cls["8"], head.stride_reg["8"], head.stride_kps["8"]):
        assert float(layer.weight.grad.abs().sum()) > 0
    assert float(model.backbone.stem[0][0].weight.grad.abs().sum()) > 0


def test_head_loss_masks_keypoints_without_valid_landmarks():
    model = build("scrfd_500m_kps")
    batch = training_batch(valid=(False, False))
    assert float(model.loss(model(batch["image"]), batch)["loss_kps"]) == 0.0
    batch = training_batch(with_landmarks=False)
    losses = model.loss(model(batch["image"]), batch)
    assert float(losses["loss_kps"]) == 0.0 and np.isfinite(float(losses["loss"]))


def test_head_loss_without_keypoint_branch_and_without_faces():
    model = build("scrfd_500m")
    batch = training_batch(with_landmarks=False)
    losses = model.loss(model(batch["image"]), batch)
    assert set(losses) == {"loss", "loss_cls", "loss_box"}
    assert np.isfinite(float(losses["loss"]))
    batch["gt_boxes"] = [np.zeros((0, 4), np.float32)] * 2
    losses = model.loss(model(batch["image"]), batch)
    assert float(losses["loss_box"]) == 0.0 and float(losses["loss_cls"]) > 0
    losses["loss"].backward()
    assert float(model.head.stride_cls["0"].weight.grad.abs().sum()) > 0


def test_atss_topk_ties_go_to_the_lower_anchor_index():
    # Two anchors (16 and 32 px) share each centre x = 0, 8, 16, as SCRFD's do.
    # A face centred at x = 8: anchors 2 and 3 are at distance 0; the third
    # place is a four-way tie at distance 8 (anchors 0, 1, 4, 5) -> anchor 0.
    centres = np.repeat([0.0, 8.0, 16.0], 2)
    sides = np.tile([16.0, 32.0], 3)
    distance = np.abs(centres - 8.0)[:, None]
    assert sorted(nearest_lowest_index_first(distance, 3)[:, 0].tolist()) == [0, 2, 3]
    # The rule is a stable sort's, on every column of a tie-heavy matrix.
    rng = np.random.default_rng(0)
    many = rng.integers(0, 4, (50, 7)).astype(np.float32)
    for k in (1, 5, 9, 50, 60):
        chosen = np.sort(nearest_lowest_index_first(many, k), axis=0)
        expected = np.sort(np.argsort(many, axis=0, kind="stable")[:k], axis=0)
        np.testing.assert_array_equal(chosen, expected)
    # The tie decides the positives. A tall 6x38 face: IoUs 0.247 (anchor 2),
    # 0.181 (anchor 3) and, for the tied third place, 0.110 (anchor 0) or 0.181
    # (anchor 1). With anchor 0 the threshold mean + std is 0.248 and nothing
    # passes; anchor 1 would lower it to 0.241 and make anchor 2 positive.
    anchors = np.stack([centres - sides / 2, 8 - sides / 2, centres + sides / 2, 8 + sides / 2], axis=1)
    face = np.array([[5, -12, 11, 26]], np.float32)
    assert (ATSSAssigner(topk=3)(anchors, [6], face) == -1).all()
