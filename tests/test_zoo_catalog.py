"""The zoo's catalog against the code and the official files: every name has
a config and a converter, the stored params/FLOPs are the model's, and every
official file in ../shared/data/weights is recognised by its sha256."""
import re

import pytest

from ppfacedet.core.config import load_config
from ppfacedet.modeling.detector import build_model
from ppfacedet.modeling.flops import count_flops, count_params
from ppfacedet.zoo import config_path, entry, names
from ppfacedet.zoo.catalog import ENTRIES, KNOWN_ELSEWHERE
from ppfacedet.zoo.registry import ZooError, describe, file_sha256, identify_sha256

RELEASES = {"retinaface_mnet025", "retinaface_r50", "scrfd_500m", "scrfd_500m_kps", "scrfd_1g", "scrfd_2.5g",
            "scrfd_2.5g_kps", "scrfd_10g", "scrfd_10g_kps", "scrfd_34g", "yunet_n", "yunet_s", "damofd_0.5g_kps",
            "damofd_2.5g_kps", "damofd_10g_kps", "damofd_34g_kps"}


def test_every_release_is_a_name_with_a_config_a_converter_and_pinned_sources():
    assert set(names()) == RELEASES and len(names()) == len(RELEASES)
    for e in ENTRIES:
        cfg = load_config(config_path(e.name))
        assert cfg.get("converter"), e.name
        assert e.files and all(f.sources for f in e.files), e.name
        for f in e.files:
            assert f.sha256 is None or re.fullmatch("[0-9a-f]{64}", f.sha256), f.name
            for s in f.sources:
                # a raw GitHub file is pinned to a commit, never a branch
                if "raw.githubusercontent.com" in s.ref or "media.githubusercontent.com" in s.ref:
                    assert re.search(r"/[0-9a-f]{40}/", s.ref), s.ref
    with pytest.raises(ZooError, match="did you mean 'scrfd_500m_kps'"):
        entry("scrfd_500m_kp")


# Counting FLOPs runs the model at 640x480: the 10G-34G nets take 5-17 s each on this 2-core machine,
# so their FLOPs are checked by the same counter through their small siblings' code paths, and their
# parameter counts (which need no forward) are checked here.
CHEAP_FORWARD = 3e9


@pytest.mark.parametrize("e", ENTRIES, ids=lambda e: e.name)
def test_stored_params_and_flops_are_the_models(e):
    """The table tools/zoo.py list prints is what ppfacedet.modeling.flops counts at 640x480 (exact ints)."""
    model = build_model(load_config(config_path(e.name)))
    assert count_params(model) == e.params
    if e.flops < CHEAP_FORWARD:
        assert count_flops(model, [1, 3, 480, 640]) == e.flops


def test_every_official_file_in_shared_data_is_recognised(shared_data):
    files = sorted(p for p in (shared_data / "weights").rglob("*") if p.is_file())
    assert len(files) >= 20
    served = 0
    for path in files:
        found = identify_sha256(file_sha256(path))
        assert found, f"{path} is not in the zoo"
        for kind, detail in found:
            if kind == "served":
                served += 1
                assert path.name in detail[1].names, (path, detail[1].names)  # the file it is, by name too
    assert served >= 17
    # a same-named file with other weights is told apart by its content, not its name
    assert "Face-Detector-1MB" in describe(file_sha256(shared_data / "weights/face-detector-1mb/mobilenet0.25_Final.pth"))
    assert "retinaface_mnet025" in describe(file_sha256(shared_data / "weights/retinaface/mobilenet0.25_Final.pth"))
    assert {k.name for k in KNOWN_ELSEWHERE} >= {"Final_Retinaface.pth", "face_detection_yunet_2022mar.onnx"}
