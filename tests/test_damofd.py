"""DamoFD: MasterNet structure strings, configs, published sizes, weight import."""
import collections
import io
import pickle
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import paddle
import pytest

from ppfacedet.convert.damofd import DamoFDConverter
from ppfacedet.core import ConfigError, load_config
from ppfacedet.core.errors import DataError
from ppfacedet.modeling.backbones.masternet import (MasterNet, format_structure, parse_structure,
                                                    structure_cost)
from ppfacedet.modeling.detector import build_model
from ppfacedet.modeling.flops import count_flops, count_params

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
VGA = [1, 3, 480, 640]
S_05G = ("SuperConvK3BNRELU(3,32,2,1)SuperResIDWE1K3(32,32,2,8,1)SuperResIDWE1K7(32,64,2,40,1)"
         "SuperResIDWE1K7(64,120,2,40,2)SuperResIDWE1K5(120,160,2,120,1)")

# DamoFD README: (params in M, FLOPs in G) at VGA.
PUBLISHED = {
    "damofd_0.5g": (0.26, 0.520), "damofd_2.5g": (0.44, 2.46),
    "damofd_10g": (1.27, 9.74), "damofd_34g": (6.24, 34.03),
    "damofd_0.5g_kps": (0.27, 0.593), "damofd_2.5g_kps": (0.45, 2.53),
    "damofd_10g_kps": (1.28, 9.83), "damofd_34g_kps": (6.28, 34.32),
}


def official_structure(name):
    return load_config(str(CONFIGS / f"{name}.yml"))["model"]["backbone"]["structure"]


@pytest.mark.parametrize("name", ["damofd_0.5g", "damofd_2.5g", "damofd_10g", "damofd_34g"])
def test_structure_round_trip(name):
    text = official_structure(name)
    blocks = parse_structure(text)
    assert len(blocks) == 5
    assert format_structure(blocks) == text
    assert parse_structure(format_structure(blocks)) == blocks


def test_bad_structure_names_the_position():
    good = "SuperConvK3BNRELU(3,32,2,1)"
    with pytest.raises(ConfigError, match=r"position 27.*SuperResIDWE1K3"):
        parse_structure(good + "SuperResIDWE1K9(32,32,2,8,1)")
    with pytest.raises(ConfigError, match=r"position 27.*5 positive integers"):
        parse_structure(good + "SuperResK3K3(32,32,2,8)")
    with pytest.raises(ConfigError, match=r"position 27"):
        parse_structure(good + "SuperResK3K3(32,32,2,8,1")
    with pytest.raises(ConfigError, match=r"block 1 .* takes 16 input channels but receives 32"):
        MasterNet(good + "SuperResK3K3(16,32,2,8,1)")


def test_stage_features_and_channels():
    net = MasterNet(S_05G)
    net.eval()
    assert net.out_channels == [32, 64, 120, 160]
    feats = net(paddle.zeros([1, 3, 64, 96]))
    assert [tuple(f.shape) for f in feats] == [(1, 32, 16, 24), (1, 64, 8, 12), (1, 120, 4, 6), (1, 160, 2, 3)]
    sub = MasterNet(S_05G, out_indices=[1, 3])
    assert sub.out_channels == [64, 160]
    with pytest.raises(ConfigError, match="out_indices"):
        MasterNet(S_05G, out_indices=[4])


def test_official_parameter_names():
    """Names and shapes read off the official module tree (PlainNet blocks:
    super block -> module_list of ConvKX/BN/RELU/ResBlock(Proj); convs and BNs
    under ``netblock``; shortcut under ``proj``)."""
    state = MasterNet(S_05G).state_dict()
    expected = {
        "module_list.0.module_list.0.netblock.weight": [32, 3, 3, 3],
        "module_list.0.module_list.1.netblock._mean": [32],
        # SuperResIDWE1K3(32,32,2,8,1): ResBlockProj 32->8 (1x1, dw 3x3/2, 1x1), RELU, ResBlock 8->32.
        "module_list.1.module_list.0.module_list.0.netblock.weight": [8, 32, 1, 1],
        "module_list.1.module_list.0.module_list.3.netblock.weight": [8, 1, 3, 3],
        "module_list.1.module_list.0.module_list.6.netblock.weight": [8, 8, 1, 1],
        "module_list.1.module_list.0.proj.0.weight": [8, 32, 1, 1],
        "module_list.1.module_list.0.proj.0.bias": [8],
        "module_list.1.module_list.0.proj.1._variance": [8],
        "module_list.1.module_list.2.module_list.0.netblock.weight": [32, 8, 1, 1],
        "module_list.1.module_list.2.proj.0.weight": [32, 8, 1, 1],
        # SuperResIDWE1K7(64,120,2,40,2): second sub-layer's first unit keeps 120->40 with a shortcut.
        "module_list.3.module_list.4.module_list.3.netblock.weight": [40, 1, 7, 7],
        "module_list.3.module_list.4.proj.0.weight": [40, 120, 1, 1],
    }
    for name, shape in expected.items():
        assert name in state, name
        assert list(state[name].shape) == shape, name
    assert not any("module_list.0.module_list.2." in k for k in state)  # RELU holds an index, no params


def test_analytic_cost_equals_counted():
    blocks = parse_structure(official_structure("damofd_2.5g"))
    flops, params = structure_cost(blocks, 96, 128)
    net = MasterNet(official_structure("damofd_2.5g"))
    assert count_params(net) == params
    assert count_flops(net, [1, 3, 96, 128]) == flops


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_size(name):
    model = build_model(load_config(str(CONFIGS / f"{name}.yml")))
    params, flops = count_params(model) / 1e6, count_flops(model, VGA) / 1e9
    want_params, want_flops = PUBLISHED[name]
    assert abs(params - want_params) <= 0.03 * want_params, (name, params)
    assert abs(flops - want_flops) <= 0.03 * want_flops, (name, flops)


def test_kps_configs_differ_only_by_keypoints():
    for base in ("damofd_0.5g", "damofd_34g"):
        plain = load_config(str(CONFIGS / f"{base}.yml"))
        kps = load_config(str(CONFIGS / f"{base}_kps.yml"))
        assert kps["model"]["head"].pop("use_kps") is True
        assert plain["model"]["head"].pop("use_kps") is False
        assert plain["model"] == kps["model"]
        assert plain["input"] == kps["input"] == {
            "policy": "letterbox", "target_size": 640, "mean": [127.5] * 3, "std": [128.0] * 3,
            "channel_order": "RGB"}


def official_checkpoint(model, rng):
    """A fake official state dict with random values: mmdet prefixes
    (``bbox_head.``), torch BN buffer names and num_batches_tracked counters."""
    state = {}
    for name, value in model.state_dict().items():
        official = "bbox_head." + name[len("head."):] if name.startswith("head.") else name
        official = official.replace("._mean", ".running_mean").replace("._variance", ".running_var")
        state[official] = rng.standard_normal(value.shape).astype(np.float32)
        if official.endswith(".running_var"):
            state[official[:-len("running_var")] + "num_batches_tracked"] = np.array(7, np.int64)
    return state


def save_torch_zip(path, state, monkeypatch):
    """Write ``state`` as torch.save's zip format does (data.pkl + one file per
    storage), without torch: stand-in ``torch`` globals make pickle emit the
    same references torch.save emits."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")
    storage_types = {}
    for dtype, name in ((np.float32, "FloatStorage"), (np.int64, "LongStorage")):
        storage_types[np.dtype(dtype)] = type(name, (), {"__module__": "torch", "__qualname__": name})
        setattr(torch, name, storage_types[np.dtype(dtype)])

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called when writing")

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)

    class Storage:
        def __init__(self, key, array):
            self.key, self.array = key, array

    storages = []

    class Writer(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, Storage):
                return ("storage", storage_types[obj.array.dtype], obj.key, "cpu", obj.array.size)
            return None

        def reducer_override(self, obj):
            if isinstance(obj, np.ndarray):
                storage = Storage(str(len(storages)), np.ascontiguousarray(obj))
                storages.append(storage)
                # as torch writes them: no strides for a 0-d tensor (ascontiguousarray makes it 1-d)
                strides = tuple(s // obj.itemsize for s in storage.array.reshape(obj.shape).strides)
                return _rebuild_tensor_v2, (storage, 0, obj.shape, strides, False, collections.OrderedDict())
            return NotImplemented

    buffer = io.BytesIO()
    Writer(buffer, protocol=2).dump({"meta": {"epoch": 640}, "state_dict": collections.OrderedDict(state)})
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", buffer.getvalue())
        for storage in storages:
            zf.writestr(f"archive/data/{storage.key}", storage.array.tobytes())


def test_converter_reads_official_pth(tmp_path, monkeypatch):
    model = build_model(load_config(str(CONFIGS / "damofd_0.5g.yml")))
    official = official_checkpoint(model, np.random.default_rng(1))
    path = tmp_path / "DamoFD_0.5g.pth"
    save_torch_zip(path, official, monkeypatch)
    weights = DamoFDConverter()(model, str(path))
    assert set(weights) == set(model.state_dict())
    key = "backbone.module_list.3.module_list.4.module_list.3.netblock.weight"
    np.testing.assert_array_equal(weights[key], official[key])
    np.testing.assert_array_equal(weights["neck.pafpn_convs.1.conv.bias"], official["neck.pafpn_convs.1.conv.bias"])


def test_converter_on_official_names():
    model = build_model(load_config(str(CONFIGS / "damofd_0.5g_kps.yml")))
    official = official_checkpoint(model, np.random.default_rng(0))
    # Spot-check that the fake uses the official backbone tree, not just ours renamed.
    assert "backbone.module_list.1.module_list.0.proj.1.running_mean" in official
    assert "bbox_head.stride_kps.0.weight" in official
    weights = DamoFDConverter()(model, {"module." + k: v for k, v in official.items()})
    assert set(weights) == set(model.state_dict())
    np.testing.assert_array_equal(weights["backbone.module_list.1.module_list.0.proj.1._mean"],
                                  official["backbone.module_list.1.module_list.0.proj.1.running_mean"])
    np.testing.assert_array_equal(weights["head.stride_cls.0.weight"], official["bbox_head.stride_cls.0.weight"])
    model.set_state_dict(weights)
    got = model.state_dict()["backbone.module_list.4.module_list.0.module_list.0.netblock.weight"].numpy()
    np.testing.assert_array_equal(got, official["backbone.module_list.4.module_list.0.module_list.0.netblock.weight"])


def test_converter_rejects_wrong_model():
    small = build_model(load_config(str(CONFIGS / "damofd_0.5g.yml")))
    other = build_model(load_config(str(CONFIGS / "damofd_0.5g_kps.yml")))
    official = official_checkpoint(small, np.random.default_rng(0))
    with pytest.raises(DataError, match="stride_kps"):
        DamoFDConverter()(other, official)


def test_training_init_starts_residual_units_as_shortcuts():
    net = MasterNet(S_05G)
    state = net.state_dict()
    # The last BN of the first unit of block 1 (index 7 in its branch) starts at zero, others at one.
    assert not state["module_list.1.module_list.0.module_list.7.netblock.weight"].numpy().any()
    assert (state["module_list.1.module_list.0.module_list.1.netblock.weight"].numpy() == 1).all()
    feats = net(paddle.randn([2, 3, 64, 64]))  # train mode
    assert all(np.isfinite(f.numpy()).all() and f.numpy().std() > 0 for f in feats)
