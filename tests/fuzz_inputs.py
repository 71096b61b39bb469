"""Seeded fuzzing of every input ppfacedet parses (run by test_fuzz_inputs.py
in a child process, so a crash of the interpreter is caught, not suffered).

    python tests/fuzz_inputs.py --seed 0 --work DIR [--scale 1.0]

For each input kind a valid file is built, then damaged at random
(truncations, bit flips, garbage spans, line edits, nasty tokens) and handed
to the parser a user reaches it through. Each case's outcome is one line,
printed before the next case starts (so a segfault names its case):

    CASE <kind> <i> <mutation>
    RESULT OK | RESULT SKIP <n> | RESULT ERROR <message> | RESULT BAD <what went wrong>

``ERROR`` is an expected error class whose message is one line naming the
file; ``SKIP`` a parser that dropped and counted bad lines; ``OK`` damage the
format cannot notice (e.g. a flipped pixel). Anything else is ``BAD``.
"""
import argparse
import os
import random
import signal
import struct
import sys
import textwrap
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE), str(ROOT / "deploy" / "python")]
warnings.filterwarnings("ignore")
os.environ.setdefault("FLAGS_call_stack_level", "0")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

CASE_SECONDS = 30  # a case running longer is a hang (generous: a shared CI machine is slow)
NASTY_TOKENS = ["", "nan", "inf", "-inf", "-1", "0", "1e999", "-1e-999", "0x1F", "1.5.5", "#", "{", "}", "[", "]",
                ":", "- ", "'", '"', "\t", "ä", "\\x00", "9" * 40, "!!python/object/apply:os.system ['id']",
                "*ref", "&ref", "~", "null", "true", "[1, 2, [3", "{a: 1}", "%YAML 1.1", "---", "..."]


class Timeout(Exception):
    pass


def _on_alarm(signum, frame):
    raise Timeout(f"no answer within {CASE_SECONDS} s")


# -- mutations ---------------------------------------------------------------------
def mutate_bytes(rng, data):
    kind = rng.choice(["truncate", "flip", "garbage_span", "insert", "delete", "duplicate", "all_garbage", "empty"])
    data = bytearray(data)
    n = len(data)
    if kind == "truncate" and n:
        data = data[:rng.randrange(n)]
    elif kind == "flip" and n:
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(n)] ^= 1 << rng.randrange(8)
    elif kind == "garbage_span" and n:
        start = rng.randrange(n)
        span = rng.randint(1, 64)
        data[start:start + span] = os.urandom(0) + bytes(rng.randrange(256) for _ in range(span))
    elif kind == "insert":
        pos = rng.randint(0, n)
        data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    elif kind == "delete" and n:
        start = rng.randrange(n)
        del data[start:start + rng.randint(1, 64)]
    elif kind == "duplicate" and n:
        start = rng.randrange(n)
        data[start:start] = data[start:start + rng.randint(1, 256)]
    elif kind == "all_garbage":
        data = bytearray(rng.randrange(256) for _ in range(rng.randint(1, 2048)))
    elif kind == "empty":
        data = bytearray()
    return bytes(data), kind


def mutate_text(rng, text):
    lines = text.splitlines()
    kind = rng.choice(["token", "token", "delete_line", "duplicate_line", "swap_lines", "insert_line", "bytes"])
    if kind == "bytes" or not lines:
        data, how = mutate_bytes(rng, text.encode())
        return data, f"bytes:{how}"
    i = rng.randrange(len(lines))
    if kind == "token":
        parts = lines[i].split(" ")
        parts[rng.randrange(len(parts))] = rng.choice(NASTY_TOKENS)
        lines[i] = " ".join(parts)
    elif kind == "delete_line":
        del lines[i]
    elif kind == "duplicate_line":
        lines.insert(i, lines[i])
    elif kind == "swap_lines":
        j = rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    elif kind == "insert_line":
        lines.insert(i, " ".join(rng.choice(NASTY_TOKENS) for _ in range(rng.randint(1, 6))))
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass"), kind


# -- valid inputs ----------------------------------------------------------------------
def make_images(work):
    y, x = np.mgrid[0:96, 0:128]
    image = np.stack([x * 2, y * 2, (x + y) % 256], -1).astype(np.uint8)
    return {"jpg": cv2.imencode(".jpg", image)[1].tobytes(), "png": cv2.imencode(".png", image)[1].tobytes()}


def make_label_files(work):
    images = work / "images"
    images.mkdir(parents=True, exist_ok=True)
    retina = "# a.jpg\n10 10 20 20 12 14 0.0 26 14 0.0 19 20 0.0 14 25 0.0 24 25 0.0 0.9\n" \
             "# b.jpg\n5 6 30 30 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1\n"
    v2 = "# a.jpg 128 96\n10 10 30 30\n40 40 60 70 45 50 0 55 50 0 50 55 0 46 60 0 54 60 0\n# b.jpg 128 96\n1 1 5 5\n"
    return retina, v2


def make_config(work):
    """A complete config (no _BASE_ to resolve from the damaged copy's folder)."""
    from ppfacedet.core import load_config
    import yaml
    cfg = load_config(str(ROOT / "configs" / "yunet_n.yml"))
    return yaml.safe_dump(dict(cfg), sort_keys=False)


INFER_CFG = textwrap.dedent("""\
    model_name: scrfd_500m_kps
    program: model.json
    params: model.pdiparams
    input:
      policy: letterbox
      target_size: 640
      pad_multiple: 0
      mean: [127.5, 127.5, 127.5]
      std: [128.0, 128.0, 128.0]
      channel_order: RGB
    inputs: [image]
    outputs: [score_8, score_16, score_32, bbox_8, bbox_16, bbox_32, kps_8, kps_16, kps_32]
    decode:
      kind: distance
      strides: [8, 16, 32]
      num_anchors: 2
      offset: 0.0
      score_activation: none
      has_kps: true
    test: {score_threshold: 0.02, nms_threshold: 0.4, pre_nms_top_k: -1, max_per_image: -1, nms_box_offset: 1}
    feature_sizes:
      rule: (size + offset) // stride
      offsets: {8: 7, 16: 15, 32: 31}
    with_nms: false
    """)

PREDICTION = "0_Parade_marchingband_1_20.jpg\n3\n10.0 20.0 30.0 40.0 0.99\n1 2 3 4 0.5\n5 5 10 10 0.1\n"


def write_mats(folder):
    """A two-event WIDER ground truth in the official .mat layout (cells of cells)."""
    from scipy.io import savemat
    folder.mkdir(parents=True, exist_ok=True)
    events = ["0--Parade", "1--Handshaking"]

    def cells(items):
        out = np.empty((len(items), 1), object)
        for i, item in enumerate(items):
            out[i, 0] = item
        return out

    files = [cells([f"{e[0]}_img_{j}" for j in range(2)]) for e in events]
    boxes = [cells([np.array([[10, 10, 20, 20], [40, 40, 15, 15]], np.float64)] * 2) for _ in events]
    keep = [cells([np.array([[1], [2]], np.float64)] * 2) for _ in events]
    savemat(folder / "wider_face_val.mat", {"event_list": cells(events), "file_list": cells(files),
                                            "face_bbx_list": cells(boxes)})
    for setting in ("easy", "medium", "hard"):
        savemat(folder / f"wider_{setting}_val.mat", {"gt_list": cells(keep)})


def make_weight_files(work):
    import io

    import paddle

    import crafted_pickles as cp
    paddle.seed(0)
    layer = paddle.nn.Linear(3, 2)
    state = {"w": layer.weight, "b": layer.bias}
    files = {}
    for protocol in (2, 4):
        buf = io.BytesIO()
        paddle.save(state, buf, protocol=protocol)
        files[f"p{protocol}.pdparams"] = buf.getvalue()
    buf = io.BytesIO()
    paddle.save({"model": dict(state), "optimizer": {"w_velocity_0": paddle.zeros([3, 2])}, "epoch": 1,
                 "iteration": 3, "best_metric": -1.0, "python_rng": random.getstate(),
                 "numpy_rng": np.random.get_state(), "config": "x"}, buf)
    files["latest.pdckpt"] = buf.getvalue()
    arrays = {"conv.weight": np.ones((2, 3, 1, 1), np.float32), "conv.bias": np.zeros(2, np.float32)}
    files["zip.pth"] = cp.zip_pth(cp.state_dict_body(arrays), arrays)
    files["legacy.pth"] = cp.legacy_pth(cp.state_dict_body(arrays), arrays)
    return files


# -- one case ------------------------------------------------------------------------
def one_line_naming(message, names):
    return "\n" not in message.strip() and any(n in message for n in names)


def run_case(call, expected_errors, names):
    """-> (outcome, detail)."""
    signal.alarm(CASE_SECONDS)
    try:
        result = call()
    except Timeout as e:
        return "BAD", f"hang: {e}"
    except expected_errors as e:
        message = str(e)
        if one_line_naming(message, names):
            return "ERROR", message.strip()[:200]
        return "BAD", f"{type(e).__name__} not naming the file in one line: {message[:300]!r}"
    except BaseException as e:  # anything else would reach the user as a traceback
        return "BAD", f"{type(e).__name__}: {str(e)[:300]}"
    finally:
        signal.alarm(0)
    skipped = result if isinstance(result, int) else 0
    return ("SKIP", str(skipped)) if skipped else ("OK", "")


# -- the kinds -----------------------------------------------------------------------
def kinds(work):
    """{kind: (count weight, case builder(rng, i) -> (mutation, call, expected errors, names))}."""
    from ppfacedet.core.errors import PPFaceDetError
    from widerface_evaluate import EvaluationError

    images = make_images(work)
    retina, v2 = make_label_files(work)
    config = make_config(work)
    write_mats(work / "gt_clean")
    weights = make_weight_files(work)

    def image_case(rng, i):
        from ppfacedet.data.image_io import read_image
        ext = rng.choice(sorted(images))
        data, how = mutate_bytes(rng, images[ext])
        path = work / f"img_{i}.{ext}"
        path.write_bytes(data)
        return f"{ext}:{how}", lambda: read_image(str(path)) is None, PPFaceDetError, [str(path)]

    def label_case(rng, i):
        from ppfacedet.data.sources.labelv2 import parse_labelv2
        from ppfacedet.data.sources.retinaface_label import parse_retinaface_label
        fmt = rng.choice(["label.txt", "labelv2.txt"])
        data, how = mutate_text(rng, retina if fmt == "label.txt" else v2)
        path = work / f"{i}_{fmt}"
        path.write_bytes(data)
        parse = parse_retinaface_label if fmt == "label.txt" else parse_labelv2

        def call():
            _, report = parse(str(path), str(work / "images"))
            return len(report.bad_lines)
        return f"{fmt}:{how}", call, PPFaceDetError, [str(path)]

    def config_case(rng, i):
        from ppfacedet.core.config import load_config
        from ppfacedet.data.preprocess import InputPolicy
        from ppfacedet.modeling.detector import build_model
        if rng.random() < 0.4:  # a damaged -o value on the genuine config
            path = ROOT / "configs" / "yunet_n.yml"
            key = rng.choice(["epochs", "model.head.num_classes", "input.target_size", "test.nms_threshold",
                              "model.backbone.type", "lr_schedule.base_lr", "input", "model.neck.out_channels",
                              "input.mean", "train_loader.batch_size", "nonsense.key", ""])
            value = " ".join(rng.choice(NASTY_TOKENS) for _ in range(rng.randint(1, 3)))
            override = rng.choice([f"{key}={value}", f"{key}{value}", value])
            how, overrides, names = f"-o {override!r}", [override], ["-o ", "yunet_n.yml"]
        else:
            data, how = mutate_text(rng, config)
            path = work / f"config_{i}.yml"
            path.write_bytes(data)
            overrides, names = [], [str(path)]

        def call():
            cfg = load_config(str(path), overrides)
            InputPolicy.from_config(cfg)
            build_model(cfg)
        return how, call, PPFaceDetError, names

    def infer_cfg_case(rng, i):
        import infer as deploy_infer
        data, how = mutate_text(rng, INFER_CFG)
        folder = work / f"model_{i}"
        folder.mkdir()
        (folder / "infer_cfg.yml").write_bytes(data)

        def call():
            deploy_infer.read_model_settings(str(folder))
        return how, call, (ValueError, deploy_infer.InputError), [str(folder / "infer_cfg.yml")]

    def prediction_case(rng, i):
        from widerface_evaluate.predictions import load_prediction_dir
        folder = work / f"preds_{i}" / "0--Parade"
        folder.mkdir(parents=True)
        for j in range(3):
            (folder / f"img_{j}.txt").write_text(PREDICTION.replace("_20.jpg", f"_{j}.jpg"))
        victim = folder / f"img_{rng.randrange(3)}.txt"
        data, how = mutate_text(rng, victim.read_text())
        victim.write_bytes(data)
        return how, lambda: load_prediction_dir(str(folder.parent)) and 0, EvaluationError, [str(folder)]

    def mat_case(rng, i):
        import shutil

        from widerface_evaluate.ground_truth import GroundTruth
        folder = work / f"gt_{i}"
        shutil.copytree(work / "gt_clean", folder)
        victim = rng.choice(sorted(folder.iterdir()))
        data, how = mutate_bytes(rng, victim.read_bytes())
        victim.write_bytes(data)
        return f"{victim.name}:{how}", lambda: GroundTruth.from_mat_dir(str(folder)) and 0, EvaluationError, \
            [str(folder)]

    def weights_case(rng, i):
        from ppfacedet.convert.torch_checkpoint import load_state_dict
        from ppfacedet.engine.checkpoint import read_checkpoint, read_weights
        name = rng.choice(sorted(weights))
        data, how = mutate_bytes(rng, weights[name])
        path = work / f"{i}_{name}"
        path.write_bytes(data)
        reader = load_state_dict if name.endswith(".pth") else (
            read_checkpoint if name.endswith(".pdckpt") else read_weights)
        return f"{name}:{how}", lambda: reader(str(path)) and 0, PPFaceDetError, [str(path)]

    return {"image": (60, image_case), "label": (120, label_case), "config": (50, config_case),
            "infer_cfg": (80, infer_cfg_case), "wider_predictions": (80, prediction_case),
            "wider_mat": (12, mat_case), "weights": (120, weights_case)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", required=True)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every kind's case count")
    args = parser.parse_args()
    signal.signal(signal.SIGALRM, _on_alarm)
    work = Path(args.work)
    for kind, (count, build) in kinds(work).items():
        rng = random.Random(f"{args.seed}:{kind}")
        for i in range(max(1, int(count * args.scale))):
            mutation, call, expected, names = build(rng, i)
            print(f"CASE {kind} {i} {mutation!r}", flush=True)
            outcome, detail = run_case(call, expected, names)
            print(f"RESULT {outcome} {detail}".rstrip(), flush=True)


if __name__ == "__main__":
    main()
