"""YuNet architecture, decode, SimOTA and loss on small hand-made cases."""
import math
from pathlib import Path

import numpy as np
import paddle
import pytest

from ppfacedet.core import load_config
from ppfacedet.core.errors import ConfigError
from ppfacedet.modeling.assigners.simota import SimOTAAssigner
from ppfacedet.modeling.detector import build_model
from ppfacedet.modeling.heads.base import RawOutputs
from ppfacedet.modeling.heads.yunet_head import YuNetHead

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _build(variant):
    return build_model(load_config(CONFIGS / f"yunet_{variant}.yml"))


@pytest.mark.parametrize("variant,expected", [("n", 75856), ("s", 54608)])
def test_parameter_count_matches_the_official_model(variant, expected):
    model = _build(variant)
    trainable = sum(int(np.prod(p.shape)) for p in model.parameters() if not p.stop_gradient)
    assert trainable == expected


@pytest.mark.parametrize("variant", ["n", "s"])
def test_raw_and_deploy_output_shapes(variant):
    model = _build(variant)
    model.eval()
    with paddle.no_grad():
        raw = model(paddle.rand([2, 3, 64, 96]) * 255)
    widths = {"cls": 1, "obj": 1, "box": 4, "kps": 10}
    expected = [f"{k}_{s}" for k in ("cls", "obj", "box", "kps") for s in (8, 16, 32)]
    assert list(raw) == expected
    for name, t in raw.items():
        kind, stride = name.split("_")
        assert tuple(t.shape) == (2, (64 // int(stride)) * (96 // int(stride)), widths[kind])
    deployed = model.deploy_outputs(raw)
    assert [n for n, _ in deployed] == [n.replace("box", "bbox") for n in expected]
    for name, t in deployed:
        if name.startswith(("cls", "obj")):
            assert float(t.min()) >= 0 and float(t.max()) <= 1
    cfg = model.deploy_config()
    assert cfg["kind"] == "yunet" and cfg["strides"] == [8, 16, 32] and cfg["offset"] == 0.0
    assert sum(cfg["outputs"].values(), []) == [n for n, _ in deployed]


def _raw_for_decode(head):
    """Feature maps 2x3 (stride 8), 1x2 (16), 1x1 (32), all predictions zero
    except the ones the test sets."""
    sizes = [(2, 3), (1, 2), (1, 1)]
    raw = RawOutputs(sizes)
    for kind, c in (("cls", 1), ("obj", 1), ("box", 4), ("kps", 10)):
        for (h, w), s in zip(sizes, head.strides):
            raw[f"{kind}_{s}"] = np.zeros((1, h * w, c), np.float32)
    # stride 8, cell (y=1, x=2) -> row 5
    raw["box_8"][0, 5] = [0.5, -0.25, math.log(2.0), 0.0]
    raw["obj_8"][0, 5] = math.log(3.0)  # sigmoid -> 0.75; cls logit 0 -> 0.5
    raw["kps_8"][0, 5, :4] = [1.0, 0.0, 0.0, -1.0]
    for k in raw:
        raw[k] = paddle.to_tensor(raw[k])
    return raw


@pytest.mark.parametrize("fusion,score", [("product", 0.375), ("sqrt", math.sqrt(0.375))])
def test_decode_hand_computed(fusion, score):
    head = YuNetHead(in_channels=8, feat_channels=8, score_fusion=fusion)
    boxes, scores, landmarks = head.decode(_raw_for_decode(head))
    assert tuple(boxes.shape) == (1, 9, 4) and tuple(landmarks.shape) == (1, 9, 10)
    # centre (2*8 + 0.5*8, 1*8 - 0.25*8) = (20, 6); size (2*8, 1*8)
    np.testing.assert_allclose(boxes[0, 5].numpy(), [12, 2, 28, 10], atol=1e-5)
    assert scores[0, 5].item() == pytest.approx(score, rel=1e-6)
    np.testing.assert_allclose(landmarks[0, 5, :4].numpy(), [24, 8, 16, 0], atol=1e-5)
    np.testing.assert_allclose(landmarks[0, 5, 4:].numpy(), [16, 8] * 3, atol=1e-5)
    # stride 16, cell (y=0, x=1) -> row 6 + 1; zero deltas give a stride-sized box at (16, 0)
    np.testing.assert_allclose(boxes[0, 7].numpy(), [8, -8, 24, 8], atol=1e-5)
    # stride 32, cell (0, 0) -> last row
    np.testing.assert_allclose(boxes[0, 8].numpy(), [-16, -16, 16, 16], atol=1e-5)


def test_head_rejects_unknown_score_fusion():
    with pytest.raises(ConfigError, match="score_fusion"):
        YuNetHead(in_channels=8, score_fusion="mean")


def _grid_priors():
    """4x4 stride-8 cells, centres at x*8 + 4 (as the head assigns)."""
    ys, xs = np.meshgrid(np.arange(4), np.arange(4), indexing="ij")
    centres = np.stack([xs * 8 + 4, ys * 8 + 4], -1).reshape(-1, 2).astype(np.float32)
    return paddle.to_tensor(np.concatenate([centres, np.full((16, 2), 8, np.float32)], 1))


def _far_boxes(n):
    return np.tile(np.array([[100, 100, 101, 101]], np.float32), (n, 1))


def test_simota_takes_dynamic_k_best_priors():
    gt = np.array([[2, 2, 22, 22]], np.float32)
    preds = _far_boxes(16)
    preds[[4, 5]] = gt  # two predictions hit the gt exactly: IoU sum 2 -> k = 2
    gt_index, iou = SimOTAAssigner(center_radius=2.5).assign(
        paddle.full([16], 0.5), _grid_priors(), paddle.to_tensor(preds), paddle.to_tensor(gt))
    assert sorted(np.nonzero(gt_index.numpy() >= 0)[0].tolist()) == [4, 5]
    assert (gt_index.numpy()[[4, 5]] == 0).all()
    np.testing.assert_allclose(iou.numpy()[[4, 5]], 1.0, atol=1e-6)


def test_simota_contested_prior_goes_to_cheapest_gt():
    gts = np.array([[2, 2, 22, 22], [3, 3, 21, 21]], np.float32)
    preds = _far_boxes(16)
    preds[5] = gts[1]  # IoU 1 with gt 1, 0.81 with gt 0: both gts want prior 5
    gt_index, iou = SimOTAAssigner().assign(
        paddle.full([16], 0.5), _grid_priors(), paddle.to_tensor(preds), paddle.to_tensor(gts))
    assigned = gt_index.numpy()
    assert np.nonzero(assigned >= 0)[0].tolist() == [5]
    assert assigned[5] == 1
    assert iou.numpy()[5] == pytest.approx(1.0, abs=1e-6)


def test_simota_without_gt_or_candidates_is_all_background():
    assigner = SimOTAAssigner()
    preds = paddle.to_tensor(_far_boxes(16))
    none, _ = assigner.assign(paddle.full([16], 0.5), _grid_priors(), preds, paddle.zeros([0, 4]))
    assert (none.numpy() == -1).all()
    # a gt far from every prior centre (beyond 2.5 strides) has no candidate
    far_gt = paddle.to_tensor(np.array([[200, 200, 210, 210]], np.float32))
    lone, _ = assigner.assign(paddle.full([16], 0.5), _grid_priors(), preds, far_gt)
    assert (lone.numpy() == -1).all()


def _batch(boxes_per_image, valid_per_image):
    gt_boxes, gt_landmarks, valid = [], [], []
    for boxes, v in zip(boxes_per_image, valid_per_image):
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        offsets = np.array([[-4, -4], [4, -4], [0, 0], [-3, 4], [3, 4]], np.float32)
        gt_boxes.append(boxes)
        gt_landmarks.append(np.stack([cx, cy], -1)[:, None, :] + offsets[None])
        valid.append(np.asarray(v, bool).reshape(-1))
    return {"gt_boxes": gt_boxes, "gt_landmarks": gt_landmarks, "landmark_valid": valid,
            "metas": [{} for _ in gt_boxes], "num_skipped": 0}


@pytest.fixture(scope="module")
def model():
    paddle.seed(0)
    return _build("n")


def _loss(model, batch):
    model.train()
    images = paddle.rand([len(batch["gt_boxes"]), 3, 64, 64]) * 255
    return model.loss(model(images), batch)


def test_loss_with_landmarks_and_an_empty_image(model):
    batch = _batch([[[8, 8, 40, 44], [30, 10, 60, 30]], []], [[True, False], []])
    losses = _loss(model, batch)
    assert {"loss", "loss_cls", "loss_obj", "loss_bbox", "loss_kps"} <= set(losses)
    for name, value in losses.items():
        assert np.isfinite(value.item()), name
    assert losses["loss_bbox"].item() > 0 and losses["loss_kps"].item() > 0
    total = sum(losses[k].item() for k in ("loss_cls", "loss_obj", "loss_bbox", "loss_kps"))
    assert losses["loss"].item() == pytest.approx(total, rel=1e-5)

    model.clear_gradients()
    losses["loss"].backward()
    for name in ("backbone.model0.conv1.weight", "head.multi_level_cls.0.conv1.weight",
                 "head.multi_level_bbox.0.conv2.weight", "head.multi_level_kps.0.conv1.weight",
                 "head.multi_level_obj.2.conv1.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and float(grad.abs().sum()) > 0, name


def test_loss_without_landmarks_has_zero_keypoint_term(model):
    losses = _loss(model, _batch([[[8, 8, 40, 44]]], [[False]]))
    assert np.isfinite(losses["loss"].item())
    assert losses["loss_kps"].item() == 0.0
    assert losses["loss_bbox"].item() > 0


def test_loss_with_no_faces_trains_objectness_only(model):
    losses = _loss(model, _batch([[], []], [[], []]))
    assert np.isfinite(losses["loss"].item())
    assert losses["loss_obj"].item() > 0
    assert losses["loss_cls"].item() == 0 and losses["loss_bbox"].item() == 0
    model.clear_gradients()
    losses["loss"].backward()
    grad = dict(model.named_parameters())["head.multi_level_obj.0.conv1.weight"].grad
    assert grad is not None and float(grad.abs().sum()) > 0
