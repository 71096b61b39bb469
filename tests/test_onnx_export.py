"""ONNX export: paddle2onnx in a child process, dynamic batch and size, equal
to Paddle within 1e-4 under onnxruntime; failures are reported, not fatal."""
import os
import subprocess
import sys

import numpy as np
import pytest

from deploy_support import FAMILY_NAMES, ROOT, dygraph_outputs, exported, family, work_dir
from ppfacedet.core.errors import PPFaceDetError
from ppfacedet.data.preprocess import InputPolicy

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("paddle2onnx")

TOLERANCE = 1e-4


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_onnx_equals_paddle_with_dynamic_batch_and_size(name):
    from ppfacedet.export.to_onnx import convert_to_onnx
    cfg, model, _ = family(name)
    folder = exported(name)
    path = convert_to_onnx(folder, os.path.join(work_dir("onnx"), f"{name}.onnx"))
    import onnx
    ops = {node.op_type for node in onnx.load(path).graph.node}
    # The program's nearest upsample (a ones depthwise ConvTranspose) is a Resize in the ONNX (onnx_rewrites).
    assert "ConvTranspose" not in ops
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    image = session.get_inputs()[0]
    assert image.name == "image" and image.shape[1] == 3
    assert all(isinstance(d, str) for d in (image.shape[0], image.shape[2], image.shape[3]))
    import yaml
    names = yaml.safe_load(open(os.path.join(folder, "infer_cfg.yml")))["outputs"]
    assert [o.name for o in session.get_outputs()] == names
    # Sizes the model accepts: YuNet's input is padded to multiples of 32.
    policy = InputPolicy.from_config(cfg)
    shapes = [(1, 3, 96, 128), (2, 3, 160, 224)] if policy.pad_multiple else [(1, 3, 96, 128), (2, 3, 150, 201)]
    rng = np.random.RandomState(0)
    for shape in shapes:
        batch = (rng.randn(*shape) * 50).astype("float32")
        got = session.run(None, {"image": batch})
        expected = dygraph_outputs(model, batch)
        diff = max(float(np.abs(g - e).max()) for g, e in zip(got, expected))
        assert diff <= TOLERANCE, f"{name} {shape}: ONNX vs Paddle max abs diff {diff}"


def test_paddle2onnx_failure_is_reported(tmp_path):
    """A program paddle2onnx cannot read ends in an error carrying its log, not a crash."""
    from ppfacedet.export.to_onnx import convert_to_onnx
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "infer_cfg.yml").write_text("program: model.json\noutputs: [x]\n")
    (broken / "model.json").write_text("not a program")
    (broken / "model.pdiparams").write_bytes(b"")
    with pytest.raises(PPFaceDetError, match="paddle2onnx (exited with|was killed by)"):
        convert_to_onnx(str(broken))
    with pytest.raises(PPFaceDetError, match="at least 11"):
        convert_to_onnx(str(broken), opset=9)


def test_with_nms_export_is_refused():
    from ppfacedet.export.to_onnx import convert_to_onnx
    with pytest.raises(PPFaceDetError, match="without --with_nms"):
        convert_to_onnx(exported("scrfd_500m_kps", with_nms=True))


@pytest.mark.slow
def test_export_onnx_tool_from_model_dir(tmp_path):
    save = tmp_path / "model.onnx"
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "export_onnx.py"), "--model_dir",
                           exported(FAMILY_NAMES[0]), "--save_file", str(save)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert save.is_file() and f"ONNX model -> {save}" in done.stdout
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "export_onnx.py")], capture_output=True, text=True)
    assert done.returncode == 2 and "either -c CONFIG" in done.stderr
