"""Tests of widerface_evaluate: exactness against the loop oracle, formats, errors, CLI."""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
for p in (str(ROOT), str(ROOT / "tests")):
    if p not in sys.path:
        sys.path.insert(0, p)

import widerface_oracle as oracle  # noqa: E402
from widerface_evaluate import (  # noqa: E402
    EvaluationError, GroundTruth, evaluate, evaluate_custom, evaluate_map, load_prediction_dir,
    load_val_label, save_prediction_dir)

DATA = ROOT.parent / "shared" / "data"
WIDER = DATA / "widerface"
FULL_GT = WIDER / "ground_truth"
SUBSET_GT = WIDER / "val_subset_resized416" / "ground_truth"
needs_data = pytest.mark.skipif(
    not (FULL_GT / "wider_face_val.mat").is_file() or not (SUBSET_GT / "wider_face_val.mat").is_file(),
    reason="WIDER FACE ground truth not found under %s (shared data folder absent)" % WIDER)
SETTINGS = ("easy", "medium", "hard")


def assert_same_aps(ours, ref, settings=SETTINGS):
    for s in settings:
        assert np.isfinite(ours[s]), s
        assert abs(ours[s] - ref[s]) <= 1e-6, (s, ours[s], ref[s])


# --------------------------------------------------------------- exactness
@pytest.fixture(scope="module")
def subset():
    return GroundTruth.from_mat_dir(SUBSET_GT), oracle.load_gt(str(SUBSET_GT))


@needs_data
def test_subset_ground_truth_matches_oracle_reader(subset):
    gt, ref = subset
    assert len(gt) == len(ref) == 200
    for i, (key, boxes, keep) in enumerate(ref):
        assert gt.names[i] == key
        np.testing.assert_array_equal(gt.boxes[i], boxes)
        for s in SETTINGS:
            np.testing.assert_array_equal(np.flatnonzero(gt.keep[s][i]), np.sort(keep[s] - 1))


@needs_data
@pytest.mark.parametrize("iou,seed", [(0.5, 1), (0.35, 2), (0.7, 3)])
def test_subset_exact_vs_oracle(subset, iou, seed):
    gt, ref = subset
    preds = oracle.synthetic_predictions(gt.names, gt.boxes, per_image=25, seed=seed)
    ours = evaluate(preds, gt, iou)
    assert ours["missing"] == 0 and ours["extra"] == 0
    assert_same_aps(ours, oracle.evaluate(preds, ref, iou))
    for s in SETTINGS:  # a curve per setting, 1000 points, recall non-decreasing
        prec, rec = ours["pr"][s]
        assert prec.shape == rec.shape == (1000,)
        assert np.all(np.diff(rec) >= 0)


@needs_data
def test_full_gt_events_exact_vs_oracle():
    gt = GroundTruth.from_mat_dir(FULL_GT)
    assert len(gt) == 3226 and gt.offsets[-1] == 39708
    assert [gt.num_faces(s) for s in SETTINGS] == [7211, 13319, 31958]
    ref_all = oracle.load_gt(str(FULL_GT))
    # a crowded event, a sparse one, and one more: keep the oracle fast
    events = ("0--Parade", "20--Family_Group", "12--Group")
    idx = [i for i, n in enumerate(gt.names) if n.split("/")[0] in events][::2]
    sub = gt.subset(idx)
    ref = [ref_all[i] for i in idx]
    assert [r[0] for r in ref] == sub.names
    preds = oracle.synthetic_predictions(sub.names, sub.boxes, per_image=20, seed=7)
    for iou in (0.5, 0.6):
        assert_same_aps(evaluate(preds, sub, iou), oracle.evaluate(preds, ref, iou))
    # the same set built in memory from lists gives the same numbers
    mem = GroundTruth.from_lists(sub.names, sub.boxes,
                                 {s: [np.flatnonzero(k) for k in sub.keep[s]] for s in SETTINGS})
    a, b = evaluate(preds, sub), evaluate(preds, mem)
    assert [a[s] for s in SETTINGS] == [b[s] for s in SETTINGS]


@needs_data
def test_map_exact_vs_oracle(subset):
    gt, ref = subset
    idx = list(range(0, 200, 5))
    sub, sref = gt.subset(idx), [ref[i] for i in idx]
    preds = oracle.synthetic_predictions(sub.names, sub.boxes, per_image=15, seed=11)
    ours = evaluate_map(preds, sub)
    assert_same_aps(ours, oracle.evaluate_map(preds, sref))
    assert sorted(ours["per_iou"]) == [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
    at50 = evaluate(preds, sub, 0.5)
    assert [ours["per_iou"][0.5][s] for s in SETTINGS] == [at50[s] for s in SETTINGS]


@needs_data
def test_edge_cases_vs_oracle(subset):
    gt, ref = subset
    base = oracle.synthetic_predictions(gt.names, gt.boxes, per_image=10, seed=5)
    # only predictions exactly on faces ignored in "easy": easy sees none of them
    ign = {}
    for i, n in enumerate(gt.names):
        drop = ~gt.keep["easy"][i]
        b = gt.boxes[i][drop]
        ign[n] = np.hstack([b, np.linspace(0.2, 0.9, len(b))[:, None]])
    ours = evaluate(ign, gt)
    assert_same_aps(ours, oracle.evaluate(ign, ref))
    assert ours["easy"] == 0 and ours["hard"] > 0
    # missing images, empty arrays and unsorted rows
    half = {k: v for i, (k, v) in enumerate(base.items()) if i % 2 == 0}
    half[gt.names[1]] = np.zeros((0, 5))
    r = evaluate(half, gt)
    assert r["missing"] == 100 - 1
    assert_same_aps(r, oracle.evaluate(half, ref))
    # row order does not matter except among ties (stable sort, like MATLAB's read_pred)
    shuffled = {k: v[np.argsort(-v[:, 4], kind="stable")][::-1] if len(v) and len(np.unique(v[:, 4])) == len(v)
                else v for k, v in base.items()}
    a, b = evaluate(base, gt), evaluate(shuffled, gt)
    assert [a[s] for s in SETTINGS] == [b[s] for s in SETTINGS]
    # keys with an extension / without the event folder resolve to the same images
    renamed = {(k + ".jpg" if i % 2 else k.split("/")[1]): v for i, (k, v) in enumerate(base.items())}
    c = evaluate(renamed, gt)
    assert c["missing"] == 0 and [c[s] for s in SETTINGS] == [a[s] for s in SETTINGS]
    # predictions for unknown images are not matched but join the score normalisation
    extra = dict(base, **{"99--Nowhere/x": np.array([[0, 0, 5, 5, 50.0]])})
    d = evaluate(extra, gt)
    assert d["extra"] == 1 and d["hard"] != a["hard"]


# --------------------------------------------------------- hand computed
def _toy_gt():
    faces = np.array([[10, 10, 20, 20], [100, 10, 20, 20], [200, 10, 20, 20]], float)  # A, B, C
    return GroundTruth.from_lists(["ev/img"], [faces], {"all": [[0, 1, 2]], "no_c": [[0, 1]]}), faces


def _toy_preds(faces):
    far = [400, 400, 20, 20]
    return np.array([list(faces[0]) + [0.9],   # A: true positive
                     list(faces[2]) + [0.8],   # C: TP in "all", ignored in "no_c"
                     far + [0.7],              # false positive
                     list(faces[1]) + [0.6],   # B: true positive
                     list(faces[0]) + [0.5]])  # duplicate of A: false positive


def test_hand_computed_ap():
    gt, faces = _toy_gt()
    p = _toy_preds(faces)
    r = evaluate({"ev/img": p[[3, 0, 4, 2, 1]]}, gt)   # unsorted on purpose
    # all:  P/R after each prediction 1/(1/3), 1/(2/3), (2/3)/(2/3), (3/4)/1, (3/5)/1
    assert r["all"] == pytest.approx(1 / 3 + 1 / 3 + (1 / 3) * (3 / 4), abs=1e-12)
    # no_c: the C prediction is ignored: 1/.5, 1/.5, .5/.5, (2/3)/1, .5/1
    assert r["no_c"] == pytest.approx(0.5 + 0.5 * (2 / 3), abs=1e-12)
    prec, rec = r["pr"]["no_c"]
    assert rec[-1] == 1.0 and prec[-1] == pytest.approx(0.5)
    assert_same_aps(r, oracle.evaluate({"ev/img": p}, oracle.gt_from_lists(gt.names, gt.boxes, {
        "all": [[0, 1, 2]], "no_c": [[0, 1]]}), settings=("all", "no_c")), ("all", "no_c"))


def test_images_without_faces_are_not_scored():
    # WIDER protocol: predictions on an image with no face are neither TP nor FP
    names, boxes = ["e/face", "e/none"], [np.array([[0, 0, 9, 9.]]), np.zeros((0, 4))]
    gt = GroundTruth.from_lists(names, boxes, {"all": [[0], []]})
    preds = {"e/face": np.array([[0, 0, 9, 9, 0.5]]), "e/none": np.array([[0, 0, 9, 9, 0.9]])}
    r = evaluate(preds, gt)
    assert r["all"] == 1.0
    ref = oracle.evaluate(preds, oracle.gt_from_lists(names, boxes, {"all": [[0], []]}),
                          settings=("all",))
    assert_same_aps(r, ref, ("all",))


def test_plus_one_pixel_convention():
    # GT 5x5 covers 6x6 pixels; shifting by 2 gives IoU (4*6)/(72-24) = 0.5 exactly
    # (without the +1 it would be 15/35 = 0.43 and no match)
    gt = GroundTruth.from_lists(["e/i"], [np.array([[0, 0, 5, 5.]])], {"all": [[0]]})
    pred = {"e/i": np.array([[2, 0, 5, 5, 0.9], [50, 50, 5, 5, 0.1]])}
    assert evaluate(pred, gt, 0.5)["all"] == pytest.approx(1.0)
    assert evaluate(pred, gt, 0.51)["all"] == 0.0


def test_score_normalisation_uses_1_as_lower_bound():
    # scores 3 (TP) and 2 (FP): lo = min(1, 2) = 1, hi = 3, so the FP normalises to 0.5
    # and first passes threshold index 499 (1 - 500/1000 = 0.5), not the last one
    gt = GroundTruth.from_lists(["e/i"], [np.array([[0, 0, 9, 9.]])], {"all": [[0]]})
    r = evaluate({"e/i": np.array([[0, 0, 9, 9, 3.0], [30, 30, 9, 9, 2.0]])}, gt)
    prec, rec = r["pr"]["all"]
    assert prec[498] == 1.0 and prec[499] == 0.5 and prec[-1] == 0.5
    assert rec[0] == 1.0 and r["all"] == 1.0


# ------------------------------------------------------------ custom format
def test_custom_format_round_trip(tmp_path):
    gt0, faces = _toy_gt()
    label = tmp_path / "val_label.txt"
    lines = ["# img_a.jpg"] + ["%d %d %d %d" % tuple(f) for f in faces] + ["neg.jpg"]
    label.write_text("\n".join(lines) + "\n")
    gt = load_val_label(label)
    assert gt.names == ["img_a", "neg"] and gt.settings == ("all",)
    np.testing.assert_array_equal(gt.boxes[0], faces)
    assert len(gt.boxes[1]) == 0

    preds = {"img_a": _toy_preds(faces), "neg": np.array([[5, 5, 30, 30, 0.85]])}
    pred_dir = tmp_path / "preds"
    save_prediction_dir(preds, pred_dir)
    back = load_prediction_dir(pred_dir)
    assert sorted(back) == ["img_a", "neg"]
    for k in preds:
        np.testing.assert_array_equal(back[k], preds[k])

    r = evaluate_custom(back, gt, 0.5, thresholds=(0.65, 0.95))
    # order: A(TP) neg(FP) C(TP) far(FP) B(TP) dupA(FP); 3 faces
    # P/R: 1/(1/3), .5/(1/3), (2/3)/(2/3), .5/(2/3), .6/1, .5/1
    assert r["ap"] == pytest.approx(1 / 3 + (1 / 3) * (2 / 3) + (1 / 3) * 0.6, abs=1e-12)
    (t1, rec1, prec1, n1), (t2, rec2, prec2, n2) = r["table"]
    assert (t1, n1) == (0.65, 4) and rec1 == pytest.approx(2 / 3) and prec1 == pytest.approx(0.5)
    assert n2 == 0 and rec2 == 0 and np.isnan(prec2)


def test_custom_label_errors(tmp_path):
    f = tmp_path / "val_label.txt"
    f.write_text("a.jpg\n1 2 3 4\n1 2\n")
    with pytest.raises(EvaluationError, match=re.escape("%s:3" % f)):
        load_val_label(f)
    f.write_text("1 2 3 4\n")
    with pytest.raises(EvaluationError, match=re.escape("%s:1" % f)):
        load_val_label(f)


# ---------------------------------------------------------------- bad input
def _write(tmp_path, body, name="0--Parade/img_1.txt"):
    p = tmp_path / "pred" / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(body)
    return p


@pytest.mark.parametrize("body,line,what", [
    ("img_1.jpg\n2\n1 2 3 4 0.9\n1 2 3 x 0.5\n", 4, "not a number"),
    ("img_1.jpg\n2\n1 2 3 4 0.9\n1 2 3 4\n", 4, "expected 5 values"),
    ("img_1.jpg\n2\n1 2 3 4 0.9\n", 2, "says 2 boxes"),
    ("img_1.jpg\ntwo\n1 2 3 4 0.9\n", 2, "number of boxes"),
    ("img_1.jpg\n2\n1 2 3 4 0.9\n1 2 3 4 nan\n", 4, "NaN score"),
    ("img_1.jpg\n1\n1 2 3 4 -0.5\n", 3, "negative score"),
])
def test_malformed_prediction_names_file_and_line(tmp_path, body, line, what):
    p = _write(tmp_path, body)
    with pytest.raises(EvaluationError) as e:
        load_prediction_dir(tmp_path / "pred")
    assert "%s:%d" % (p, line) in str(e.value) and what in str(e.value)


def test_prediction_file_reading(tmp_path):
    # trailing spaces, blank lines, a path in the name line; no rstrip('.jpg') bug
    _write(tmp_path, "0--Parade/gpj_1.jpg\n2\n1 2 3 4 0.9 \n\n5 6 7 8 0.1\n", "0--Parade/gpj_1.txt")
    _write(tmp_path, "empty_img\n0\n", "0--Parade/empty_img.txt")
    preds = load_prediction_dir(tmp_path / "pred")
    assert sorted(preds) == ["0--Parade/empty_img", "0--Parade/gpj_1"]
    np.testing.assert_array_equal(preds["0--Parade/gpj_1"], [[1, 2, 3, 4, 0.9], [5, 6, 7, 8, 0.1]])
    assert preds["0--Parade/empty_img"].shape == (0, 5)


def test_in_memory_bad_scores():
    gt = GroundTruth.from_lists(["e/i"], [np.array([[0, 0, 5, 5.]])], {"all": [[0]]})
    with pytest.raises(EvaluationError, match="NaN score"):
        evaluate({"e/i": np.array([[0, 0, 5, 5, np.nan]])}, gt)
    with pytest.raises(EvaluationError, match="negative score"):
        evaluate({"e/i": np.array([[0, 0, 5, 5, -1.0]])}, gt)
    with pytest.raises(EvaluationError, match=r"\[n, 5\]"):
        evaluate({"e/i": np.zeros((2, 4))}, gt)
    # all scores equal: one operating point (precision 1/2, recall 1) instead of 0/0
    assert evaluate({"e/i": np.array([[0, 0, 5, 5, 1.0], [9, 9, 5, 5, 1.0]])}, gt)["all"] == 0.5
    with pytest.raises(EvaluationError, match="IoU"):
        evaluate({}, gt, iou_thresh=0)


def test_missing_counted_and_empty_folder(tmp_path):
    gt = GroundTruth.from_lists(["e/a", "e/b", "e/c"], [np.array([[0, 0, 5, 5.]])] * 3,
                                {"all": [[0]] * 3})
    r = evaluate({"e/a": np.array([[0, 0, 5, 5, 0.9]])}, gt)
    assert r["missing"] == 2 and r["all"] == pytest.approx(1 / 3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvaluationError, match="no <event>/<image>.txt"):
        load_prediction_dir(tmp_path / "empty")
    with pytest.raises(EvaluationError, match="not found"):
        load_prediction_dir(tmp_path / "nope")


def test_missing_mat_file_is_named(tmp_path):
    with pytest.raises(EvaluationError, match="wider_face_val.mat"):
        GroundTruth.from_mat_dir(tmp_path)


# ----------------------------------------------------------------------- CLI
def _cli(*args):
    return subprocess.run([sys.executable, "widerface_evaluate/evaluation.py", *map(str, args)],
                          cwd=str(ROOT), capture_output=True, text=True, timeout=120)


@needs_data
def test_cli_wider(tmp_path, subset):
    gt, _ = subset
    idx = list(range(0, 200, 4))  # a tiny folder: the other images are "missing"
    preds = oracle.synthetic_predictions([gt.names[i] for i in idx], [gt.boxes[i] for i in idx],
                                         per_image=8, seed=3)
    save_prediction_dir(preds, tmp_path / "pred")
    png = tmp_path / "pr.png"
    res = _cli("-p", tmp_path / "pred", "-g", SUBSET_GT, "--map", "--plot", png)
    assert res.returncode == 0, res.stderr
    want = evaluate(preds, gt)
    wmap = evaluate_map(preds, gt)
    lines = res.stdout.splitlines()
    for label, s in (("Easy  ", "easy"), ("Medium", "medium"), ("Hard  ", "hard")):
        assert "%s Val AP: %.4f" % (label, want[s]) in lines
        assert "%s Val mAP@0.50:0.95: %.4f" % (label, wmap[s]) in lines
    assert "150 images have no prediction file" in res.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_cli_custom_and_errors(tmp_path):
    _, faces = _toy_gt()
    label = tmp_path / "val_label.txt"
    label.write_text("img_a.jpg\n" + "\n".join("%d %d %d %d" % tuple(f) for f in faces) + "\n")
    save_prediction_dir({"img_a": _toy_preds(faces)}, tmp_path / "pred")
    res = _cli("-p", tmp_path / "pred", "-g", label, "--no-progress")
    assert res.returncode == 0, res.stderr
    assert "AP: %.4f" % (11 / 12) in res.stdout.splitlines()
    assert re.search(r"^\s+0\.70\s+0\.6667\s+0\.6667\s+3$", res.stdout, re.M), res.stdout

    (tmp_path / "empty").mkdir()
    res = _cli("-p", tmp_path / "empty", "-g", label)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert res.stderr.strip().startswith("error:") and len(res.stderr.strip().splitlines()) == 1

    _write(tmp_path, "img_1\n1\n1 2 3 4 nan\n")
    res = _cli("-p", tmp_path / "pred", "-g", label)
    assert res.returncode != 0 and "Traceback" not in res.stderr and ":3: NaN score" in res.stderr


def test_cli_help():
    res = _cli("--help")
    assert res.returncode == 0
    for opt in ("-p", "-g", "--iou", "--map", "--plot"):
        assert opt in res.stdout
