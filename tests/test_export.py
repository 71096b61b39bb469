"""The exported static program equals the dynamic graph (max abs diff <= 1e-4)
for every family, with oneDNN off and on, in both program formats, and
infer_cfg.yml carries what the deploy predictor needs."""
import os

import numpy as np
import pytest
import yaml

from deploy_support import FAMILY_NAMES, ROOT, dygraph_outputs, exported, family, photos, run_program
from detections import assert_same_faces
from ppfacedet.data.preprocess import InputPolicy

TOLERANCE = 1e-4


def batches(cfg):
    """The full-size photo under the model's own input policy (batch of 1), then
    both photos letterboxed to 320 (batch of 2): two sizes, two batch sizes."""
    own, small = InputPolicy.from_config(cfg), InputPolicy.from_config(cfg, target_size=320)
    return [own(photos()[0])[0][None], small.stack([small(image)[0] for image in photos()])]


def max_diff(got, expected):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape
    return max(float(np.abs(g - e).max()) for g, e in zip(got, expected))


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_exported_program_equals_dygraph(name):
    cfg, model, _ = family(name)
    folder = exported(name)
    assert sorted(os.listdir(folder)) == ["infer_cfg.yml", "model.json", "model.pdiparams"]
    program = open(os.path.join(folder, "model.json")).read()
    # nearest_interp fails under PIR + oneDNN; repeat_interleave converts wrongly to ONNX.
    assert "nearest_interp" not in program and "repeat_interleave" not in program
    for batch in batches(cfg):
        expected = dygraph_outputs(model, batch)
        for mkldnn in (False, True):
            diff = max_diff(run_program(folder, batch, enable_mkldnn=mkldnn), expected)
            assert diff <= TOLERANCE, f"{name} {batch.shape} oneDNN={mkldnn}: max abs diff {diff}"


@pytest.mark.isa_sensitive  # oneDNN picks its kernels by ISA
@pytest.mark.parametrize("name", ["retinaface_mnet025", "yunet_n"])
def test_legacy_program_equals_dygraph(name):
    """The old ProgramDesc (for quantization and paddle2onnx 1.x) is written by
    a child process with FLAGS_enable_pir_api=0, through the stand-ins for the
    PIR-only ops (RetinaFace uses maximum, YuNet sigmoid and logical_or)."""
    cfg, model, _ = family(name)
    folder = exported(name, program_format="legacy")
    assert {"model.pdmodel", "model.pdiparams", "infer_cfg.yml"} <= set(os.listdir(folder))
    assert yaml.safe_load(open(os.path.join(folder, "infer_cfg.yml")))["program"] == "model.pdmodel"
    batch = batches(cfg)[0]
    expected = dygraph_outputs(model, batch)
    for mkldnn in (False, True):
        diff = max_diff(run_program(folder, batch, enable_mkldnn=mkldnn), expected)
        assert diff <= TOLERANCE, f"{name} legacy oneDNN={mkldnn}: max abs diff {diff}"


def test_legacy_conv_biases_are_channel_adds():
    """Every conv bias in the old ProgramDesc is added as a 1-D parameter with
    axis 1, the form Paddle's conv+bias fuse passes match (Paddle's own trace
    writes reshape2(bias) + add, which stays two unfused ops)."""
    from paddle.base.proto import framework_pb2
    folder = exported("retinaface_mnet025", program_format="legacy")
    with open(os.path.join(folder, "model.pdmodel"), "rb") as f:
        block = framework_pb2.ProgramDesc.FromString(f.read()).blocks[0]
    parameters = {v.name for v in block.vars if v.persistable}
    inputs = [{slot.parameter: list(slot.arguments) for slot in op.inputs} for op in block.ops]
    conv_outputs = {arg for op in block.ops if op.type in ("conv2d", "depthwise_conv2d")
                    for slot in op.outputs for arg in slot.arguments}
    bias_adds = [(op, ins) for op, ins in zip(block.ops, inputs)
                 if op.type == "elementwise_add" and ins["X"][0] in conv_outputs and ins["Y"][0] in parameters]
    assert len(bias_adds) >= 9  # RetinaFace's heads: 3 levels x (class, box, landmark) convs
    for op, _ in bias_adds:
        assert [a.i for a in op.attrs if a.name == "axis"] == [1]
    assert not [ins for op, ins in zip(block.ops, inputs) if op.type == "reshape2" and ins["X"][0] in parameters]


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_infer_cfg_describes_the_graph(name):
    cfg, model, _ = family(name)
    with open(os.path.join(exported(name), "infer_cfg.yml")) as f:
        info = yaml.safe_load(f)
    policy = InputPolicy.from_config(cfg)
    assert info["model_name"] == name and info["program"] == "model.json" and info["with_nms"] is False
    assert info["input"]["policy"] == policy.policy and info["input"]["channel_order"] == policy.channel_order
    np.testing.assert_allclose(info["input"]["mean"], policy.mean.ravel())
    np.testing.assert_allclose(info["input"]["std"], policy.std.ravel())
    assert info["decode"] == yaml.safe_load(yaml.safe_dump(model.deploy_config()))
    import paddle
    with paddle.no_grad():
        raw = model(paddle.zeros([1, 3, 64, 64]))
    assert info["outputs"] == [n for n, _ in model.deploy_outputs(raw)]
    assert info["test"]["score_threshold"] == cfg["test"]["score_threshold"]
    # The recorded grid rule reproduces the model's feature sizes at sizes
    # the model accepts (YuNet needs its padding to 32).
    offsets = info["feature_sizes"]["offsets"]
    sizes = [(96, 160), (128, 224)] if policy.pad_multiple else [(97, 161), (250, 333)]
    for h, w in sizes:
        with paddle.no_grad():
            raw = model(paddle.zeros([1, 3, h, w]))
        assert raw.feat_sizes == [((h + offsets[s]) // s, (w + offsets[s]) // s) for s in model.head.strides]


def test_unknown_format_is_rejected(tmp_path):
    from ppfacedet.core.errors import PPFaceDetError
    from ppfacedet.export.static import export_inference_model
    cfg, model, _ = family(FAMILY_NAMES[0])
    with pytest.raises(PPFaceDetError, match="onnx.*pir, legacy"):
        export_inference_model(cfg, model, str(tmp_path), program_format="onnx")


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_with_nms_graph_equals_decode_and_select(name):
    """--with_nms: decode + NMS in the graph give the detections the
    predictor's numpy decode + selection give on the plain export."""
    import infer as deploy_infer
    folder = exported(name, with_nms=True)
    info = yaml.safe_load(open(os.path.join(folder, "infer_cfg.yml")))
    assert info["with_nms"] is True and info["outputs"] == ["dets", "counts"]
    assert len(info["nms_output"]["columns"]) == 16
    images = list(photos()) + [np.zeros((96, 128, 3), np.uint8)]
    in_graph = deploy_infer.FaceDetector(folder)(images)
    reference = deploy_infer.FaceDetector(exported(name))(images)
    for got, expected in zip(in_graph, reference):
        assert_same_faces(got, expected, box_tol=1e-3, score_tol=1e-5)
        if expected["landmarks"] is None:
            assert got["landmarks"] is None
        else:
            np.testing.assert_allclose(got["landmarks"], expected["landmarks"], atol=1e-3)


def test_with_nms_batch_layout(shared_data):
    """A batch of two: rows carry their image index, counts add up, oneDNN agrees.
    Needs the WIDER photos: the layout checks need faces kept in both images."""
    cfg, model, _ = family("scrfd_500m_kps")
    policy = InputPolicy.from_config(cfg)
    prepared = [policy(image) for image in photos()]
    batch = np.stack([tensor for tensor, _ in prepared])
    scales = np.asarray([meta["scale"] for _, meta in prepared], np.float32)
    from predictor import Predictor, load_infer_cfg
    folder = exported("scrfd_500m_kps", with_nms=True)
    info = load_infer_cfg(folder)
    assert info["inputs"] == ["image", "scale_factor"]
    plain = Predictor(folder, info)(batch, scales)
    onednn = Predictor(folder, info, enable_mkldnn=True)(batch, scales)
    dets, counts = plain["dets"], plain["counts"]
    assert dets.shape[1] == 16 and counts.tolist() == [int((dets[:, 0] == i).sum()) for i in range(2)]
    assert min(counts) > 0 and np.all(np.diff(dets[:, 0]) >= 0)
    for i in range(2):
        assert np.all(np.diff(dets[dets[:, 0] == i, 1]) <= 0), "rows of an image by decreasing score"
    assert onednn["counts"].tolist() == counts.tolist()
    np.testing.assert_allclose(onednn["dets"], dets, atol=1e-3)


def test_with_nms_graph_keeps_no_rows_plain_and_under_onednn(tmp_path):
    """When no face passes the threshold the graph returns zero rows, with
    oneDNN too (concatenating the empty kept parts crashed oneDNN's concat)."""
    from ppfacedet.core import load_config
    from ppfacedet.export.static import export_inference_model
    from predictor import Predictor, load_infer_cfg
    name = "scrfd_500m_kps"
    _, model, _ = family(name)
    # sigmoid scores never exceed 1.0, so nothing is kept
    cfg = load_config(str(ROOT / "configs" / f"{name}.yml"), overrides=["test.score_threshold=1.0"])
    folder = export_inference_model(cfg, model, str(tmp_path), with_nms=True)
    info = load_infer_cfg(folder)
    policy = InputPolicy.from_config(cfg)
    prepared = [policy(image) for image in photos()]
    batch = np.stack([tensor for tensor, _ in prepared])
    scales = np.asarray([meta["scale"] for _, meta in prepared], np.float32)
    for mkldnn in (False, True):
        out = Predictor(folder, info, enable_mkldnn=mkldnn)(batch, scales)
        assert out["dets"].shape == (0, 16) and out["counts"].tolist() == [0, 0]


@pytest.mark.slow
def test_export_model_tool(tmp_path):
    import subprocess
    import sys

    import paddle
    cfg, model, _ = family("yunet_n")
    weights = tmp_path / "yunet_n.pdparams"
    paddle.save(model.state_dict(), str(weights))
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "export_model.py"), "-c", str(ROOT / "configs/yunet_n.yml"),
                           "-o", f"weights={weights}", "--output_dir", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    folder = tmp_path / "out" / "yunet_n"
    assert sorted(os.listdir(folder)) == ["infer_cfg.yml", "model.json", "model.onnx", "model.pdiparams"]
    assert yaml.safe_load((folder / "infer_cfg.yml").read_text())["onnx"] == "model.onnx"
    batch = InputPolicy.from_config(cfg)(photos()[1])[0][None]
    assert max_diff(run_program(str(folder), batch), dygraph_outputs(model, batch)) <= TOLERANCE
    from engines import create_engine
    from predictor import load_infer_cfg
    on_onnxruntime = create_engine(str(folder), load_infer_cfg(str(folder)), run_mode="onnxruntime")(batch)
    assert max_diff(list(on_onnxruntime.values()), dygraph_outputs(model, batch)) <= TOLERANCE
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "export_model.py"), "-c", str(ROOT / "configs/yunet_n.yml"),
                           "--output_dir", str(tmp_path / "out")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and "-o weights=" in done.stderr
