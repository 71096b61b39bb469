"""pretrain_weights in the layouts ImageNet trunks are published in, built
here with random values: every backbone tensor must land where it belongs."""
import collections
import logging
import re
from pathlib import Path

import numpy as np
import paddle
import pytest
from paddle.vision.models import resnet50

from ppfacedet.core.config import load_config
from ppfacedet.core.download import DownloadError
from ppfacedet.core.errors import PPFaceDetError
from ppfacedet.engine.pretrain import load_pretrained
from ppfacedet.engine.trainer import Trainer
from ppfacedet.modeling.detector import build_model
from torch_files import save_legacy, save_zip, state_dict

ROOT = Path(__file__).resolve().parents[1]
R50_BACKBONE_TENSORS = 53 * 5  # 53 convs, each with a BN (weight, bias, mean, variance)
MNET_BACKBONE_TENSORS = 27 * 5


def random_state(names_shapes, seed):
    """Random values that keep a deep ResNet's activations finite in eval mode."""
    rng = np.random.default_rng(seed)
    out = collections.OrderedDict()
    for name, shape in names_shapes:
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ("running_var", "_variance"):
            value = rng.uniform(0.5, 1.5, shape)
        elif len(shape) == 4:
            value = rng.standard_normal(shape, np.float32) * np.float32(np.sqrt(2.0 / np.prod(shape[1:])))
        elif leaf == "weight" and len(shape) == 1:
            value = rng.uniform(0.5, 1.0, shape)
        else:
            value = rng.standard_normal(shape, np.float32) * np.float32(0.1)
        out[name] = value.astype(np.float32)
    return out


@pytest.fixture(scope="module")
def paddle_vision_r50():
    """paddle.vision's ResNet-50 and its names and shapes."""
    model = resnet50()
    model.eval()
    return model, [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


def torchvision_layout(paddle_state):
    """torchvision's names: BN buffers running_mean/var plus num_batches_tracked; Linear [out, in]."""
    out = collections.OrderedDict()
    for name, value in paddle_state.items():
        stem, leaf = name.rsplit(".", 1)
        if name == "fc.weight":
            value = value.T.copy()
        out[f"{stem}.{ {'_mean': 'running_mean', '_variance': 'running_var'}.get(leaf, leaf) }"] = value
        if leaf == "_variance":
            out[f"{stem}.num_batches_tracked"] = np.array(100, np.int64)
    return out


def paddleclas_name(name):
    """paddle.vision name -> PaddleClas ppcls ResNet50 name (stem / blocks.k.convN / short)."""
    if name.startswith(("conv1.", "bn1.")):
        return f"stem.0.{'conv' if name.startswith('conv1') else 'bn'}.{name.split('.', 1)[1]}"
    layer = re.fullmatch(r"layer(\d)\.(\d+)\.(conv|bn|downsample\.)(\d)\.(\w+)", name)
    if not layer:
        return name  # fc
    stage, block, kind, number, leaf = int(layer[1]), int(layer[2]), layer[3], int(layer[4]), layer[5]
    index = sum((3, 4, 6, 3)[:stage - 1]) + block
    inner = (f"short.{'conv' if number == 0 else 'bn'}" if kind == "downsample." else
             f"conv{number - 1}.{kind}")
    return f"blocks.{index}.{inner}.{leaf}"


@pytest.fixture(scope="module")
def r50_model():
    return build_model(load_config(str(ROOT / "configs" / "retinaface_r50.yml")))


def assert_backbone_holds(model, expected):
    """expected: {our backbone name (without 'backbone.'): array}; every backbone tensor is covered."""
    own = {k[len("backbone."):]: v for k, v in model.state_dict().items() if k.startswith("backbone.")}
    assert sorted(own) == sorted(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(own[name].numpy(), value, err_msg=name)


def r50_stages(layers, x):
    """C3, C4, C5 of a torchvision-layout ResNet (paddle.vision's or ours)."""
    x = layers.maxpool(layers.relu(layers.bn1(layers.conv1(x))))
    c3 = layers.layer2(layers.layer1(x))
    c4 = layers.layer3(c3)
    return [c3, c4, layers.layer4(c4)]


@pytest.mark.parametrize("writer, seed", [(save_zip, 10), (save_legacy, 11)], ids=["zip", "legacy"])
def test_torchvision_resnet50_fills_the_trunk_and_computes_as_paddle_vision(tmp_path, r50_model, writer, seed,
                                                                            paddle_vision_r50):
    reference, names_shapes = paddle_vision_r50
    state = random_state(names_shapes, seed)
    path = tmp_path / "resnet50-19c8e357.pth"
    writer(state_dict(torchvision_layout(state)), path)
    report = load_pretrained(r50_model, str(path))
    assert report.backbone_loaded == len(report.backbone) == R50_BACKBONE_TENSORS
    assert sorted(report.unused) == ["fc.bias", "fc.weight"]
    assert_backbone_holds(r50_model, {k: v for k, v in state.items() if not k.startswith("fc.")})

    reference.set_state_dict(state)
    r50_model.eval()
    x = paddle.to_tensor(np.random.RandomState(1).randn(1, 3, 64, 64).astype(np.float32))
    with paddle.no_grad():
        ours, theirs = r50_model.backbone(x), r50_stages(reference, x)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rename, seed", [(lambda name: name, 20), (paddleclas_name, 21)],
                         ids=["paddle.vision", "PaddleClas"])
def test_paddle_imagenet_resnet50_fills_the_trunk(tmp_path, r50_model, rename, seed, paddle_vision_r50):
    state = random_state(paddle_vision_r50[1], seed)
    path = tmp_path / "ResNet50_pretrained.pdparams"
    paddle.save({rename(k): v for k, v in state.items()}, str(path))
    report = load_pretrained(r50_model, str(path))
    assert report.backbone_loaded == R50_BACKBONE_TENSORS and report.other_loaded == 0
    assert_backbone_holds(r50_model, {k: v for k, v in state.items() if not k.startswith("fc.")})


def official_mnet025_state(seed=3):
    """Pytorch_Retinaface models/net.py MobileNetV1 (width 0.25) as its ImageNet
    checkpoint names it: stage1 = conv_bn(3, 8, 2) + 5 conv_dw, stage2 = 6,
    stage3 = 2; conv_dw = 3x3 depthwise (0, 1) then 1x1 (3, 4); plus fc."""
    stages = {"stage1": [(8, 16), (16, 32), (32, 32), (32, 64), (64, 64)],
              "stage2": [(64, 128)] + [(128, 128)] * 5, "stage3": [(128, 256), (256, 256)]}
    convs = [("stage1.0.0", (8, 3, 3, 3))]
    for stage, blocks in stages.items():
        first = 1 if stage == "stage1" else 0
        for index, (cin, cout) in enumerate(blocks, start=first):
            convs += [(f"{stage}.{index}.0", (cin, 1, 3, 3)), (f"{stage}.{index}.3", (cout, cin, 1, 1))]
    names_shapes = []
    for conv, shape in convs:
        prefix, position = conv.rsplit(".", 1)
        bn = f"{prefix}.{int(position) + 1}"
        names_shapes += [(f"{conv}.weight", shape)] + [(f"{bn}.{leaf}", (shape[0],)) for leaf in
                                                       ("weight", "bias", "running_mean", "running_var")]
    state = random_state(names_shapes + [("fc.weight", (1000, 256)), ("fc.bias", (1000,))], seed)
    for name in [n for n in state if n.endswith("running_var")]:
        state[name.replace("running_var", "num_batches_tracked")] = np.array(7, np.int64)
    return state


def test_pytorch_retinaface_mnet025_pretrain_tar_fills_every_trunk_tensor(tmp_path):
    state = official_mnet025_state()
    checkpoint = {"epoch": 18, "arch": "mobilenet", "best_acc1": 46.58,
                  "state_dict": state_dict((f"module.{k}", v) for k, v in state.items()),
                  "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": [0, 1]}]}}
    path = tmp_path / "mobilenetV1X0.25_pretrain.tar"
    save_legacy(checkpoint, path, location="cuda:0")  # saved from GPU, as the official file was
    model = build_model(load_config(str(ROOT / "configs" / "retinaface_mnet025.yml")))
    report = load_pretrained(model, str(path))
    assert report.backbone_loaded == len(report.backbone) == MNET_BACKBONE_TENSORS
    renamed = {k.replace("running_mean", "_mean").replace("running_var", "_variance"): v
               for k, v in state.items() if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    assert_backbone_holds(model, renamed)


def test_a_file_for_another_trunk_is_an_error_naming_both_sides(tmp_path, r50_model):
    path = tmp_path / "mnet.pth"
    save_zip(official_mnet025_state(), path)
    with pytest.raises(PPFaceDetError) as error:
        load_pretrained(r50_model, str(path))
    message = str(error.value)
    assert "fills 0 of the 265 backbone tensors" in message and "pretrain_strict: false" in message
    assert "backbone.conv1.weight" in message and "stage1.0.0.weight" in message and "\n" not in message
    before = r50_model.backbone.conv1.weight.numpy()
    report = load_pretrained(r50_model, str(path), strict=False)
    assert report.backbone_loaded == 0 and not report.fills_backbone
    np.testing.assert_array_equal(r50_model.backbone.conv1.weight.numpy(), before)


def test_a_partial_file_below_90_percent_is_refused(tmp_path, r50_model, paddle_vision_r50):
    state = random_state(paddle_vision_r50[1], seed=4)
    kept = dict(list(state.items())[:200])  # 200 of 265 trunk tensors: 75%
    path = tmp_path / "partial.pdparams"
    paddle.save(kept, str(path))
    with pytest.raises(PPFaceDetError, match="fills 200 of the 265 backbone tensors"):
        load_pretrained(r50_model, str(path))


def test_trainer_logs_the_backbone_count_and_reads_pretrain_strict(tmp_path, caplog, paddle_vision_r50):
    path = tmp_path / "mobilenetV1X0.25_pretrain.tar"
    save_legacy({"state_dict": {f"module.{k}": v for k, v in official_mnet025_state().items()}}, path)
    demo = str(ROOT / "configs" / "retinaface_mnet025_demo.yml")
    trainer = Trainer(load_config(demo, [f"pretrain_weights={path}", f"save_dir={tmp_path}"]))
    with caplog.at_level(logging.INFO, logger="ppfacedet"):
        trainer.load_pretrained(trainer.cfg["pretrain_weights"])
    assert f"135 of 135 backbone tensors loaded from {path}" in caplog.text

    r50 = tmp_path / "r50.pdparams"
    paddle.save(random_state(paddle_vision_r50[1], seed=5), str(r50))
    trainer = Trainer(load_config(demo, [f"pretrain_weights={r50}", "pretrain_strict=false", f"save_dir={tmp_path}"]))
    with caplog.at_level(logging.WARNING, logger="ppfacedet"):
        trainer.load_pretrained(trainer.cfg["pretrain_weights"])
    assert "fills 0 of the 135 backbone tensors" in caplog.text


def test_configs_state_their_initialisation():
    """RetinaFace: the official ImageNet trunks, pinned by sha256; the demo
    trains offline from random init; SCRFD, YuNet, DamoFD: from scratch, as
    their official recipes."""
    for name, file_name in (("retinaface_r50", "resnet50-19c8e357.pth"),
                            ("retinaface_mnet025", "mobilenetV1X0.25_pretrain.tar")):
        source = load_config(str(ROOT / "configs" / f"{name}.yml"))["pretrain_weights"]
        assert source["url"].startswith("https://") and source["url"].endswith(file_name)
        assert re.fullmatch("[0-9a-f]{64}", source["sha256"])
    assert load_config(str(ROOT / "configs" / "retinaface_mnet025_demo.yml"))["pretrain_weights"] is None
    scratch = [p for p in (ROOT / "configs").glob("*.yml") if p.name.startswith(("scrfd", "yunet", "damofd"))]
    assert len(scratch) == 19
    for path in scratch:
        assert load_config(str(path))["pretrain_weights"] is None, path.name
        text = (path.parent / path.name.replace("_demo", "")).read_text()
        assert re.search(r"official recipe trains from scratch: .+\.py:\d+", text), path.name


def test_offline_the_default_initialisation_names_the_file_and_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PPFACEDET_OFFLINE", "1")
    monkeypatch.setenv("PPFACEDET_CACHE_DIR", str(tmp_path / "cache"))
    cfg = load_config(str(ROOT / "configs" / "retinaface_mnet025.yml"))
    with pytest.raises(DownloadError) as error:
        load_pretrained(build_model(cfg), cfg["pretrain_weights"])
    message = str(error.value)
    assert str(tmp_path / "cache" / "mobilenetV1X0.25_pretrain.tar") in message
    assert "drive.google.com" in message and "-o pretrain_weights=" in message


def test_qat_quanters_are_not_backbone_tensors_a_float_model_must_fill(tmp_path):
    """The QAT overlay fine-tunes from float weights: its quanters' scales are
    observed from data, so the float model fills the backbone entirely."""
    config = str(ROOT / "configs" / "scrfd_500m_kps.yml")
    float_model = build_model(load_config(config))
    path = tmp_path / "scrfd_500m_kps.pdparams"
    paddle.save(float_model.state_dict(), str(path))
    qat_model = build_model(load_config(config, overlays=[str(ROOT / "configs" / "slim" / "qat.yml")]))
    report = load_pretrained(qat_model, str(path))
    assert report.backbone_loaded == len(report.backbone) > 0 and report.left_at_init == 0
    assert report.other_loaded == len(float_model.state_dict()) - len(report.backbone)
