"""The SCRFD and DamoFD converters on exactly what the official trainers save (issue 24).

``fixtures/official_checkpoint_keys.json.gz`` holds, for every official SCRFD config with a ppfacedet
counterpart and every DamoFD config, the state dict the official code builds (names, shapes, dtypes; which
entries are buffers) and what mmcv's checkpoint writing puts around it (fixtures/PROVENANCE.md says how it was
recorded). Each key set is filled with seeded random values, written in the official layouts with the
torch-free writer, converted, and every model tensor is compared with its source value.
"""
import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from ppfacedet.convert.apply import convert_official_weights
from ppfacedet.convert.scrfd import DROPPED_BUFFERS, SCRFDConverter
from ppfacedet.convert.torch_checkpoint import load_mmcv_state_dict
from ppfacedet.core.config import load_config
from ppfacedet.core.errors import DataError, PPFaceDetError
from torch_files import save_legacy, save_zip, state_dict

RECORDED = json.loads(gzip.decompress((Path(__file__).parent / "fixtures" / "official_checkpoint_keys.json.gz")
                                      .read_bytes()))
# official config -> ours
OURS = {"scrfd_500m": "scrfd_500m", "scrfd_500m_bnkps": "scrfd_500m_kps", "scrfd_1g": "scrfd_1g",
        "scrfd_2.5g": "scrfd_2.5g", "scrfd_2.5g_bnkps": "scrfd_2.5g_kps", "scrfd_10g": "scrfd_10g",
        "scrfd_10g_bnkps": "scrfd_10g_kps", "scrfd_34g": "scrfd_34g",
        **{f"DamoFD_{size}": f"damofd_{size}" for size in ("0.5g", "2.5g", "10g", "34g")},
        **{f"DamoFD_{size}_lms": f"damofd_{size}_kps" for size in ("0.5g", "2.5g", "10g", "34g")}}
CASES = [(repo, name) for repo in RECORDED for name in RECORDED[repo]["models"]]
SMALL = [("insightface", "scrfd_500m_bnkps"), ("DamoFD", "DamoFD_0.5g_lms")]


def our_config(name):
    return load_config(str(ROOT / "configs" / f"{OURS[name]}.yml"))


def official_state(repo, name, seed):
    """The official state dict of ``name``, filled with seeded random values of the recorded dtypes."""
    rng = np.random.default_rng(seed)
    out = state_dict([])
    for key, shape, dtype in RECORDED[repo]["models"][name]["state_dict"]:
        out[key] = (rng.integers(0, 10 ** 6, shape, dtype=np.int64) if dtype == "int64"
                    else rng.standard_normal(shape).astype(np.float32))
    return out


def mmcv_checkpoint(repo, name, state):
    """``state`` wrapped as mmcv's save_checkpoint writes it in the official trainer: the recorded meta
    (long texts stood in for by texts of their length) and SGD momentum for every parameter."""
    layout = RECORDED[repo]["mmcv_checkpoint"]
    meta = {}
    for key, value in layout["meta"].items():
        if layout["meta_types"][key] == "tuple":  # CLASSES; JSON kept it as a list
            value = tuple(value)
        elif isinstance(value, str) and value.endswith(" characters>"):
            value = "\n".join(f"line {i}" for i in range(int(value[1:].split()[0]) // 8))
        meta[key] = value
    buffers = set(RECORDED[repo]["models"][name]["buffers"])
    params = [key for key in state if key not in buffers]
    group = dict(layout["optimizer"]["param_group"], params=list(range(len(params))))
    momentum = {i: {"momentum_buffer": np.asarray(state[key] * np.float32(0.1))} for i, key in enumerate(params)}
    optimizer = {"state": momentum, "param_groups": [group]}
    checkpoint = {"meta": meta, "state_dict": state, "optimizer": optimizer}
    assert sorted(checkpoint) == layout["top_level"]
    return checkpoint


def assert_filled_from(model, state):
    """Every tensor of ``model`` holds the value of its official entry; the entries with none are dropped buffers."""
    ours = model.state_dict()
    filled = set()
    for key, value in state.items():
        name = SCRFDConverter.official_to_ours(key)
        if name is None:
            assert DROPPED_BUFFERS.search(key), key
            continue
        np.testing.assert_array_equal(ours[name].numpy(), value.reshape(ours[name].shape), err_msg=key)
        filled.add(name)
    assert filled == set(ours)


def test_fixture_covers_every_config_and_dtype():
    assert sorted(name for _, name in CASES) == sorted(OURS)
    for repo, name in CASES:
        model = RECORDED[repo]["models"][name]
        assert {dtype for _, _, dtype in model["state_dict"]} <= {"float32", "int64"}
        assert set(model["buffers"]) <= {key for key, _, _ in model["state_dict"]}


def test_every_official_buffer_is_mapped_or_dropped_by_name():
    """The buffers the official modules carry: BN running statistics (mapped), BN num_batches_tracked and the
    head's integral.project (dropped by name); no other kind exists, and no parameter is dropped."""
    for repo, name in CASES:
        model = RECORDED[repo]["models"][name]
        buffers = set(model["buffers"])
        assert "bbox_head.integral.project" in buffers, name
        for key, _, _ in model["state_dict"]:
            dropped = SCRFDConverter.official_to_ours(key) is None
            assert dropped == bool(DROPPED_BUFFERS.search(key)), key
            assert not dropped or key in buffers, key
            if key in buffers and not dropped:
                assert key.endswith((".running_mean", ".running_var")), key


@pytest.mark.parametrize("repo,name", CASES)
def test_official_mmcv_checkpoint_converts(tmp_path, repo, name):
    """What the official trainer saves (mmcv layout, zip format) fills every tensor of our model, through the
    tool's entry point."""
    state = official_state(repo, name, seed=CASES.index((repo, name)))
    path = tmp_path / "epoch_640.pth"
    save_zip(mmcv_checkpoint(repo, name, state), path)
    model, count = convert_official_weights(our_config(name), str(path))
    assert count == len(model.state_dict())
    assert_filled_from(model, state)


@pytest.mark.parametrize("repo,name", SMALL)
@pytest.mark.parametrize("save", [save_zip, save_legacy])
def test_bare_state_dict_converts(tmp_path, repo, name, save):
    state = official_state(repo, name, seed=7)
    path = tmp_path / "model.pth"
    save(state, path)
    model, _ = convert_official_weights(our_config(name), str(path))
    assert_filled_from(model, state)


@pytest.mark.parametrize("repo,name", SMALL)
@pytest.mark.parametrize("unknown", ["bbox_head.integral.scale", "backbone.extra.num_batches_tracked_x",
                                     "neck.lateral_convs.0.conv.weight_orig"])
def test_unknown_entry_is_refused_by_name(tmp_path, repo, name, unknown):
    state = official_state(repo, name, seed=3)
    state[unknown] = np.zeros(3, np.float32)
    path = tmp_path / "epoch_640.pth"
    save_zip(mmcv_checkpoint(repo, name, state), path)
    cfg = our_config(name)
    with pytest.raises(PPFaceDetError) as info:
        convert_official_weights(cfg, str(path))
    assert str(path) in str(info.value) and f"'{unknown}'" in str(info.value) and "match nothing" in str(info.value)


def test_mmcv_layout_is_read_exactly(tmp_path):
    """Only the entries mmcv writes may sit next to 'state_dict', and every state dict entry is a tensor."""
    repo, name = SMALL[0]
    state = official_state(repo, name, seed=5)
    checkpoint = mmcv_checkpoint(repo, name, state)
    path = tmp_path / "epoch_1.pth"
    save_zip(checkpoint, path)
    read = load_mmcv_state_dict(str(path))
    assert list(read) == list(state)
    save_zip(dict(checkpoint, ema_state_dict=state), path)
    with pytest.raises(DataError, match=r"top-level entries \['ema_state_dict'\] next to 'state_dict'"):
        load_mmcv_state_dict(str(path))
    bad = state_dict(list(state.items()) + [("bbox_head.note", "text")])
    save_zip(dict(checkpoint, state_dict=bad), path)
    with pytest.raises(DataError, match="'bbox_head.note' is a str, not a tensor"):
        load_mmcv_state_dict(str(path))


def test_an_official_name_and_its_renamed_twin_are_refused(tmp_path):
    """A file holding both an official name and our name for it would otherwise keep whichever came last."""
    repo, name = SMALL[0]
    state = official_state(repo, name, seed=4)
    twin = next(key for key in state if key.startswith("bbox_head."))
    state["head." + twin[len("bbox_head."):]] = state[twin]
    path = tmp_path / "epoch_640.pth"
    save_zip(state, path)
    with pytest.raises(PPFaceDetError) as info:
        convert_official_weights(our_config(name), str(path))
    assert f"'{twin}' and 'head.{twin[len('bbox_head.'):]}' both map to" in str(info.value)
