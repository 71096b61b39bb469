"""One training step of each family against the official code.

The fixtures in tests/fixtures/ hold what the official losses computed on the
fixed cases of tests/loss_case.py (how: tests/fixtures/PROVENANCE.md): the
positives and their matched faces per image, every loss term, and the
gradient of the total with respect to every raw head output (stored sparse:
the indices where it is non-zero and the values there). Our head runs on the
same raw outputs and faces and must give the same assignment, every term
within relative 1e-4 and every gradient element within 1e-4. The deviations
README ("Training") lists are pinned by their own cases."""
from pathlib import Path

import numpy as np
import paddle
import pytest

import loss_case
from ppfacedet.core import load_config
from ppfacedet.modeling.detector import build_model
from ppfacedet.modeling.heads.base import RawOutputs

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
TERM_RTOL = 1e-4
GRAD_ATOL = 1e-4

# family -> (config, raw-output spec, anchors per location, grid rule, seed,
#            {official term: our term})
FAMILIES = {
    "retinaface": ("retinaface_mnet025", "retinaface", 2, "ceil", 0,
                   {"loss_l": "loss_box", "loss_c": "loss_cls", "loss_landm": "loss_kps", "loss": "loss"}),
    "scrfd": ("scrfd_500m_kps", "scrfd", 2, "floor", 1,
              {"loss_cls": "loss_cls", "loss_bbox": "loss_box", "loss_kps": "loss_kps", "loss": "loss"}),
    "damofd": ("damofd_0.5g_kps", "scrfd", 2, "floor", 2,
               {"loss_cls": "loss_cls", "loss_bbox": "loss_box", "loss_kps": "loss_kps", "loss": "loss"}),
    "yunet": ("yunet_n", "yunet", 1, "floor", 3,
              {"loss_cls": "loss_cls", "loss_bbox": "loss_bbox", "loss_obj": "loss_obj", "loss_kps": "loss_kps",
               "loss": "loss"}),
}


class RecordingAssigner:
    """Wraps a head's assigner and keeps, per call, the face index it gave
    every anchor (-1 background). Heads call assigners either directly (ATSS)
    or through ``assign`` (max-IoU, SimOTA, which also returns IoUs)."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = []

    def _keep(self, result):
        index = result[0] if isinstance(result, tuple) else result
        self.calls.append(np.asarray(index.numpy() if isinstance(index, paddle.Tensor) else index))
        return result

    def __call__(self, *args, **kwargs):
        return self._keep(self.inner(*args, **kwargs))

    def assign(self, *args, **kwargs):
        return self._keep(self.inner.assign(*args, **kwargs))


def batch_of_the_case(case):
    faces = loss_case.faces(case)
    return {"gt_boxes": [f[0] for f in faces], "gt_landmarks": [f[1] for f in faces],
            "landmark_valid": [f[2] for f in faces], "metas": [{}] * len(faces), "num_skipped": 0}


def run_our_step(family, case="main"):
    config, spec, anchors, grid, seed, _ = FAMILIES[family]
    height, width, images = loss_case.CASES[case]
    head = build_model(load_config(ROOT / "configs" / f"{config}.yml")).head
    head.train()
    recorder = RecordingAssigner(head.assigner)
    head.assigner = recorder
    cells = [(-(-height // s), -(-width // s)) if grid == "ceil" else (height // s, width // s)
             for s in head.strides]
    values = loss_case.raw_outputs(spec, head.strides, [h * w * anchors for h, w in cells], seed, len(images))
    raw = RawOutputs(cells)
    for name, value in values.items():
        raw[name] = paddle.to_tensor(value, stop_gradient=False)
    losses = head.loss(raw, batch_of_the_case(case))
    losses["loss"].backward()
    return losses, raw, recorder.calls


def load_fixture(name):
    path = FIXTURES / f"official_loss_{name}.npz"
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def assignment_per_image(calls, case):
    """The assigner's output for each image of ``case``: one call per image,
    except that YuNet (like the official head) makes none for an image
    without faces (then: an empty array)."""
    images = loss_case.CASES[case][2]
    indices = list(range(len(images)))
    if len(calls) != len(images):
        indices = [i for i, (boxes, _) in enumerate(images) if boxes]
    assert len(calls) == len(indices)
    by_image = dict(zip(indices, calls))
    return [by_image.get(i, np.zeros(0, np.int64)) for i in range(len(images))]


def positives_and_faces(assigned):
    positives = np.flatnonzero(assigned >= 0)
    return positives, assigned[positives]


def expected_gradient(official, name, size):
    expected = np.zeros(size, np.float32)
    expected[official[f"grad_index_{name}"]] = official[f"grad_value_{name}"]
    return expected


@pytest.mark.parametrize("family, case", [(family, "main") for family in sorted(FAMILIES)] +
                         [("yunet", "no_landmarks")])
def test_training_step_equals_the_official_one(family, case):
    official = load_fixture(f"{family}_{case}")
    losses, raw, calls = run_our_step(family, case)

    for i, assigned in enumerate(assignment_per_image(calls, case)):
        positives, faces = positives_and_faces(assigned)
        np.testing.assert_array_equal(positives, official[f"pos_index_{i}"], err_msg=f"{family} image {i}")
        np.testing.assert_array_equal(faces, official[f"pos_gt_{i}"], err_msg=f"{family} image {i}")

    terms = FAMILIES[family][5]
    assert set(losses) == set(terms.values())
    for official_name, ours in terms.items():
        assert float(losses[ours]) == pytest.approx(float(official[f"term_{official_name}"]), rel=TERM_RTOL), ours

    for name, tensor in raw.items():
        grad = tensor.grad.numpy().reshape(-1)
        assert np.abs(grad - expected_gradient(official, name, grad.size)).max() <= GRAD_ATOL, name


def test_retinaface_deviation_a_face_without_a_matchable_prior_claims_nothing():
    """README, Training: the official match() lets a face whose best prior IoU
    is below 0.2 re-point that prior to itself, and when the prior is positive
    through another face it then regresses the unmatchable face. Ours leaves
    the prior to the face it overlaps."""
    official = load_fixture("retinaface_unmatchable_face")
    losses, raw, calls = run_our_step("retinaface", "unmatchable_face")
    positives, faces = positives_and_faces(calls[0])
    np.testing.assert_array_equal(positives, official["pos_index_0"])
    moved = np.flatnonzero(faces != official["pos_gt_0"])
    # Exactly one prior: the official code gives it to the 4 px face (1), ours to the 20 px face (0).
    assert len(moved) == 1 and official["pos_gt_0"][moved[0]] == 1 and faces[moved[0]] == 0
    assert float(losses["loss_cls"]) == pytest.approx(float(official["term_loss_c"]), rel=TERM_RTOL)
    assert float(losses["loss_box"]) != pytest.approx(float(official["term_loss_l"]), rel=0.1)


def test_scrfd_deviation_a_batch_without_positives_has_zero_box_and_keypoint_losses():
    """README, Training: with no positive in the whole batch the official
    SCRFD loss divides 0 by a zero score sum and returns NaN box and keypoint
    terms; ours returns 0 for them and the same class term."""
    official = load_fixture("scrfd_no_positive")
    losses, raw, calls = run_our_step("scrfd", "no_positive")
    assert len(official["pos_index_0"]) == 0 and (calls[0] < 0).all()
    assert np.isnan(official["term_loss_bbox"]) and np.isnan(official["term_loss_kps"])
    assert float(losses["loss_box"]) == 0.0 and float(losses["loss_kps"]) == 0.0
    assert float(losses["loss_cls"]) == pytest.approx(float(official["term_loss_cls"]), rel=TERM_RTOL)
    for name, tensor in raw.items():
        grad = tensor.grad.numpy().reshape(-1)
        if name.startswith("cls"):
            assert np.abs(grad - expected_gradient(official, name, grad.size)).max() <= GRAD_ATOL, name
        else:
            assert (grad == 0).all(), name
