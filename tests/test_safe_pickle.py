"""Untrusted weight files never run code: every gadget family, in every place
a pickle-based file can hide one, is refused by name and leaves no trace;
genuine files (ours and the official releases) still load exactly."""
import pickle
import random
import subprocess
import sys
import time

import numpy as np
import paddle
import pytest

import crafted_pickles as cp
from conftest import ROOT
from ppfacedet.convert.torch_checkpoint import load_mmcv_state_dict, load_state_dict
from ppfacedet.core import safe_pickle
from ppfacedet.core.errors import DataError, PPFaceDetError
from ppfacedet.engine import checkpoint

ARRAYS = {"conv.weight": np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2),
          "conv.bias": np.array([1.5, -2.0], np.float32)}


def pdparams_with(fragment):
    """A state dict written by paddle.save with a gadget nested two levels down."""
    import io
    buf = io.BytesIO()
    paddle.save({"w": paddle.ones([2]), "meta": {"inner": [cp.SLOT]}}, buf, protocol=2)
    return cp.splice(buf.getvalue(), fragment)


def pdckpt_with(fragment):
    import io
    buf = io.BytesIO()
    paddle.save({"model": {"w": paddle.ones([2])}, "optimizer": {"w_velocity_0": paddle.zeros([2]),
                 "LR_Scheduler": {"last_epoch": cp.SLOT}}, "epoch": 1, "iteration": 4}, buf, protocol=2)
    return cp.splice(buf.getvalue(), fragment)


# where a gadget hides -> (file name, bytes builder, the reader a user reaches it through)
PLACES = {
    "pdparams top level": ("w.pdparams", cp.whole, checkpoint.read_weights),
    "pdparams nested in a state dict": ("w.pdparams", pdparams_with, checkpoint.read_weights),
    "pdckpt nested in the optimizer state": ("latest.pdckpt", pdckpt_with, checkpoint.read_checkpoint),
    "pth legacy magic-number pickle": (
        "w.pth", lambda g: cp.legacy_pth(cp.state_dict_body(ARRAYS), ARRAYS, [g, cp.integer(1001), b"N"]),
        load_state_dict),
    "pth legacy sys-info pickle": (
        "w.pth", lambda g: cp.legacy_pth(cp.state_dict_body(ARRAYS), ARRAYS,
                                         [cp.integer(cp.LEGACY_MAGIC), cp.integer(1001), g]), load_state_dict),
    "pth legacy nested in the state dict": (
        "w.pth", lambda g: cp.legacy_pth(cp.state_dict_body(ARRAYS, extra=g), ARRAYS), load_state_dict),
    "pth zip data.pkl nested in the state dict": (
        "w.pth", lambda g: cp.zip_pth(cp.state_dict_body(ARRAYS, extra=g), ARRAYS), load_state_dict),
    # SCRFD/DamoFD read mmcv checkpoints, whose meta holds non-tensor objects: still only allowlisted ones
    "pth zip mmcv meta, read by the SCRFD/DamoFD converters": (
        "epoch_640.pth", lambda g: cp.zip_pth(cp.state_dict_body(ARRAYS, extra=g), ARRAYS), load_mmcv_state_dict),
}
FAMILIES = ["builtins.exec", "builtins.eval", "builtins.getattr", "builtins.__import__", "numpy.runstring",
            "numpy.load", "os.system", "posix.system", "subprocess.call", "subprocess.Popen"]


def wait_for(path, seconds=2.0):
    """Whether ``path`` appears (Popen gadgets create it asynchronously)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists():
            return True
        time.sleep(0.05)
    return path.exists()


@pytest.mark.parametrize("family", FAMILIES)
def test_gadgets_are_live_under_plain_pickle(tmp_path, family):
    """The crafted gadgets really run code under pickle.load: a refusal below is a real one."""
    marker = tmp_path / "pwned"
    fragment, _ = cp.gadgets(marker, tmp_path)[family]
    pickle.loads(cp.whole(fragment))  # noqa: S301  (the point of the test)
    assert wait_for(marker)


@pytest.mark.parametrize("place", sorted(PLACES))
@pytest.mark.parametrize("family", FAMILIES)
def test_gadget_refused_by_name_and_never_runs(tmp_path, family, place):
    marker = tmp_path / "pwned"
    fragment, refused_global = cp.gadgets(marker, tmp_path)[family]
    name, build, reader = PLACES[place]
    path = tmp_path / name
    path.write_bytes(build(fragment))
    with pytest.raises(PPFaceDetError) as info:
        reader(str(path))
    message = str(info.value)
    assert f"'{refused_global}'" in message and str(path) in message and "malicious" in message
    assert "\n" not in message
    assert not wait_for(marker, 0.5 if "Popen" in family else 0.0)  # Popen would create it asynchronously


def test_object_arrays_and_forged_dtype_state_are_refused(tmp_path):
    """numpy lets a dtype's pickled state claim it holds objects (raw bytes
    would then be read as pointers), and object arrays unpickle any items."""
    forged = cp.call(cp.glob("numpy", "dtype"), cp.text("f8"), b"I00\n", b"I01\n") + cp.tup(
        cp.integer(3), cp.text("<"), b"N", b"N", b"N", cp.integer(-1), cp.integer(-1), cp.integer(63)) + b"b"
    objects = cp.call(cp.glob("numpy", "dtype"), cp.text("O8"), b"I00\n", b"I01\n")
    for fragment, expected in [(forged, "set the state of a"), (objects, "refused numpy dtype 'O8'")]:
        path = tmp_path / "w.pdparams"
        path.write_bytes(cp.whole(fragment))
        with pytest.raises(safe_pickle.UnsafeFileError, match=expected) as info:
            safe_pickle.unpickle_file(str(path))
        assert str(path) in str(info.value)


def test_shared_numpy_dtypes_cannot_be_altered(tmp_path):
    """np.dtype('f4') is a process-wide singleton: a BUILD on it must not flip its byte order."""
    flipped = cp.call(cp.glob("numpy", "dtype"), cp.text("f4"), b"I00\n", b"I00\n") + cp.tup(
        cp.integer(3), cp.text(">"), b"N", b"N", b"N", cp.integer(-1), cp.integer(-1), cp.integer(0)) + b"b"
    path = tmp_path / "w.pdparams"
    path.write_bytes(cp.whole(flipped))
    assert safe_pickle.unpickle_file(str(path)).byteorder == ">"
    assert np.dtype("f4").byteorder == "="


def test_billion_laughs_and_cycles_end_quickly(tmp_path):
    """A list referencing one list ten times, 40 levels deep, is tiny on disk;
    walking it naively would take forever."""
    body = cp.lst() + b"p0\n"
    for level in range(1, 41):
        body += b"(" + b"g%d\n" % (level - 1) * 10 + b"lp%d\n" % level
    path = tmp_path / "w.pdparams"
    path.write_bytes(cp.whole(body))
    start = time.monotonic()
    with pytest.raises(PPFaceDetError, match="not a state dict"):
        checkpoint.read_weights(str(path))
    path.write_bytes(cp.whole(cp.lst() + b"p0\n0g0\ng0\na"))  # a list that contains itself
    with pytest.raises(PPFaceDetError, match="nested deeper"):
        checkpoint.read_weights(str(path))
    assert time.monotonic() - start < 30  # generous: a naive walk never ends


def test_crafted_torch_files_load_exactly(tmp_path):
    for name, data in [("zip.pth", cp.zip_pth(cp.state_dict_body(ARRAYS), ARRAYS)),
                       ("legacy.pth", cp.legacy_pth(cp.state_dict_body(ARRAYS), ARRAYS))]:
        (tmp_path / name).write_bytes(data)
        state = load_state_dict(str(tmp_path / name))
        assert set(state) == set(ARRAYS)
        for key, value in ARRAYS.items():
            np.testing.assert_array_equal(state[key], value)


def test_tensor_views_cannot_reach_outside_their_storage(tmp_path):
    """A size/stride pair larger than the storage would make numpy read
    arbitrary memory; it must be an error instead."""
    arrays = {"w": np.zeros(4, np.float32)}
    body = cp.state_dict_body(arrays).replace(cp.tup(cp.integer(4)), cp.tup(cp.integer(4096)), 1)
    (tmp_path / "w.pth").write_bytes(cp.legacy_pth(body, arrays))
    with pytest.raises(DataError, match="reaches element 4096 of a storage of 4"):
        load_state_dict(str(tmp_path / "w.pth"))


def test_official_pth_files_still_load(shared_data):
    files = sorted((shared_data / "weights").glob("*/*.pth"))
    if not files:
        pytest.skip("no official .pth files in ../shared/data/weights")
    for path in files:
        state = load_state_dict(str(path))
        assert len(state) > 100 and all(v.dtype in (np.float32, np.int64) for v in state.values()), path


class _RecordingUnpickler(safe_pickle.RestrictedUnpickler):
    def find_class(self, module, name):
        self.seen.add(f"{module}.{name}")
        return super().find_class(module, name)


def globals_in(path):
    with open(path, "rb") as f:
        reader = _RecordingUnpickler(f, str(path))
        reader.seen = set()
        reader.load()
    return reader.seen


def test_our_checkpoint_round_trips_bit_exactly_with_allowlisted_globals_only(tmp_path):
    from ppfacedet.core import load_config
    from ppfacedet.engine.trainer import Trainer
    from tiny import make_tiny_config
    trainer = Trainer(load_config(make_tiny_config(tmp_path)))
    trainer.optimizer = trainer._build_optimizer()
    loss = sum((p * p).sum() for p in trainer.model.parameters())
    loss.backward()
    trainer.optimizer.step()  # creates the momentum accumulators
    random.random(), np.random.rand()
    state = trainer.training_state()
    checkpoint.atomic_save(state, str(tmp_path / "latest.pdckpt"))
    checkpoint.atomic_save(trainer.model_state(), str(tmp_path / "best.pdparams"))

    back = checkpoint.read_checkpoint(str(tmp_path / "latest.pdckpt"))
    for group in ("model", "optimizer"):
        assert set(back[group]) == set(state[group])
        for key, value in state[group].items():
            assert back[group][key].dtype == value.dtype
            np.testing.assert_array_equal(back[group][key].numpy(), value.numpy(), err_msg=key)
    assert back["python_rng"] == state["python_rng"]
    assert back["numpy_rng"][0] == state["numpy_rng"][0] and back["numpy_rng"][2:] == state["numpy_rng"][2:]
    np.testing.assert_array_equal(back["numpy_rng"][1], state["numpy_rng"][1])
    assert (back["epoch"], back["iteration"], back["best_metric"]) == (
        state["epoch"], state["iteration"], state["best_metric"])
    weights = checkpoint.read_weights(str(tmp_path / "best.pdparams"))
    for key, value in trainer.model_state().items():
        np.testing.assert_array_equal(weights[key].numpy(), value.numpy())

    allowed = {f"{m}.{n}" for m, n in safe_pickle.ALLOWLIST}
    written = globals_in(tmp_path / "latest.pdckpt") | globals_in(tmp_path / "best.pdparams")
    assert written <= allowed and "collections.OrderedDict" in written, written


def test_cli_refuses_a_crafted_pdparams_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "w.pdparams").write_bytes(pdparams_with(cp.gadgets(marker, tmp_path)["os.system"][0]))
    image = tmp_path / "a.png"
    import cv2
    cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
    run = subprocess.run([sys.executable, str(ROOT / "tools/infer.py"), "-c", str(ROOT / "configs/yunet_n.yml"),
                          "-o", f"weights={tmp_path / 'w.pdparams'}", "--infer_img", str(image),
                          "--output_dir", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr
    assert "refused to load global 'os.system'" in run.stderr and "Traceback" not in run.stderr
    assert not marker.exists()


@pytest.mark.parametrize("protocol", range(6))
def test_plain_state_pickles_of_every_protocol_load_equal(protocol):
    """What other tools write for a state dict (any protocol, numpy scalars,
    Fortran-ordered arrays, torch's ``_metadata`` attribute) is read back equal."""
    import collections
    import io
    state = collections.OrderedDict(w=np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)),
                                    s=np.float64(0.25), n=np.arange(3, dtype=np.int64), meta={"epoch": 3, "b": b"x"})
    state._metadata = collections.OrderedDict({"": {"version": 1}})
    back = safe_pickle.unpickle(io.BytesIO(pickle.dumps(state, protocol=protocol)), "state.pkl")
    assert list(back) == list(state) and back._metadata == state._metadata and back["meta"] == state["meta"]
    for key in ("w", "s", "n"):
        np.testing.assert_array_equal(back[key], state[key])
        assert np.asarray(back[key]).dtype == np.asarray(state[key]).dtype
