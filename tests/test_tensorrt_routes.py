"""deploy/python TensorRT, up to the device: the route follows the program
format, each route makes the calls Paddle documents, PIR-TensorRT converts
once, in a child process on the --gpu_id GPU, in place into a keyed folder
under a lock, reuses it only while it matches and its engines are there, and
failures name the fallback. The CPU wheel has no paddle.tensorrt, so the
conversion runs against tests/trt_standin.py, which writes engines where
Paddle writes them and bakes their paths into the program, and loading goes
through ``load_like_paddle``, which fails where Paddle fails to find them."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from types import SimpleNamespace

import numpy as np
import paddle
import pytest

from deploy_support import exported

import predictor as deploy_predictor  # noqa: E402  (deploy/python, put on sys.path by deploy_support)
import tensorrt_routes  # noqa: E402
import trt_standin  # noqa: E402  (tests/)

MODEL = "scrfd_500m_kps"
SHAPES = {"trt_min_shape": 320, "trt_opt_shape": 640, "trt_max_shape": 960}


def calls_by_name(plan):
    return {method: (args, kwargs) for method, args, kwargs in plan}


def legacy_info(info, **extra):
    return dict(info, program="model.pdmodel", **extra)


GPU = {"gpu": "NVIDIA A10", "compute_capability": "8.6", "cuda": "12.6", "cudnn": "9.5.1", "tensorrt": "10.5.0",
       "tensorrt_package": "10.5.0"}
TESTS = os.path.dirname(os.path.abspath(__file__))
DEPLOY = os.path.join(os.path.dirname(TESTS), "deploy", "python")


class StandIn:
    """Points the conversion child at tests/trt_standin.py (which writes what
    paddle.tensorrt writes, where it writes it) and stands in for the GPU facts."""

    def __init__(self, monkeypatch, folder):
        self.monkeypatch, self.log, self.device, self.facts_asked = monkeypatch, str(folder / "standin.log"), dict(GPU), []
        monkeypatch.setattr(tensorrt_routes.PirConversion, "converter_module", ("trt_standin", TESTS))
        monkeypatch.setattr(tensorrt_routes, "device_facts", self.facts)
        self.set()

    def facts(self, gpu_id):
        self.facts_asked.append(gpu_id)
        return dict(self.device)

    def set(self, **settings):
        self.monkeypatch.setenv(trt_standin.STANDIN_ENV, json.dumps(dict(settings, log=self.log)))

    def calls(self):
        if not os.path.exists(self.log):
            return []
        with open(self.log) as f:
            return [json.loads(line) for line in f]


@pytest.fixture
def standin(monkeypatch, tmp_path):
    return StandIn(monkeypatch, tmp_path)


def load_like_paddle(config):
    """What loading a converted program needs from its engines, as Paddle's
    tensorrt_engine instruction does: it opens each op's engine_serialized_data
    path (from the working directory, if relative) and fails if it cannot. The
    engine ops are then dropped and the rest runs on the CPU wheel."""
    with open(config.prog_file()) as f:
        program = json.load(f)
    ops = program["program"]["regions"][0]["blocks"][0]["ops"]
    for op in ops:
        if op["#"].endswith(".tensorrt_engine"):
            path = next(a["AT"]["D"] for a in op["A"] if a["N"] == "engine_serialized_data")
            if not os.path.isfile(path):
                raise RuntimeError(f"(NotFound) Cannot open file {path}: the TensorRT engine is not where the "
                                   "program says")
    program["program"]["regions"][0]["blocks"][0]["ops"] = [op for op in ops
                                                            if not op["#"].endswith(".tensorrt_engine")]
    runnable = os.path.join(tempfile.mkdtemp(), "model.json")
    with open(runnable, "w") as f:
        json.dump(program, f)
    config.set_prog_file(runnable)
    return REAL_CREATE_PREDICTOR(config)


REAL_CREATE_PREDICTOR = paddle.inference.create_predictor


@pytest.fixture
def loader(monkeypatch):
    monkeypatch.setattr(paddle.inference, "create_predictor", load_like_paddle)


def load(program):
    config = paddle.inference.Config(program, os.path.splitext(program)[0] + ".pdiparams")
    config.disable_gpu()
    config.disable_glog_info()
    return load_like_paddle(config)


@pytest.fixture
def model_dir(tmp_path):
    """A private copy of the PIR export: conversions are written inside the model folder."""
    folder = tmp_path / MODEL
    shutil.copytree(exported(MODEL), folder)
    return str(folder)


def conversion_of(model_dir, **choices):
    info = deploy_predictor.load_infer_cfg(model_dir)
    choices = {"run_mode": "trt_fp16", **choices}
    return deploy_predictor.tensorrt_conversion(model_dir, info, device="GPU", **choices)


@pytest.mark.parametrize("run_mode, precision", [("trt_fp32", "Float32"), ("trt_fp16", "Half")])
def test_legacy_program_takes_enable_tensorrt_engine(run_mode, precision):
    folder = exported(MODEL)
    info = legacy_info(deploy_predictor.load_infer_cfg(folder))
    plan = deploy_predictor.config_plan(folder, info, device="GPU", run_mode=run_mode, batch_size=4, **SHAPES)
    assert [m for m, _, _ in plan] == ["set_prog_file", "set_params_file", "enable_use_gpu", "enable_tensorrt_engine",
                                       "set_trt_dynamic_shape_info", "disable_glog_info"]
    calls = calls_by_name(plan)
    assert calls["set_prog_file"][0] == (os.path.join(folder, "model.pdmodel"),)
    assert calls["enable_tensorrt_engine"][1] == {
        "workspace_size": 1 << 30, "max_batch_size": 4, "min_subgraph_size": info["tensorrt"]["min_subgraph_size"],
        "precision_mode": precision, "use_static": False, "use_calib_mode": False}
    assert calls["set_trt_dynamic_shape_info"][0] == (  # min, max, opt
        {"image": [1, 3, 320, 320]}, {"image": [4, 3, 960, 960]}, {"image": [4, 3, 640, 640]})
    assert tensorrt_routes.program_format(info) == "legacy"
    assert deploy_predictor.tensorrt_conversion(folder, info, device="GPU", run_mode=run_mode) is None


def test_legacy_int8_tuned_shapes_disabled_ops_and_nms_input(tmp_path):
    folder = exported(MODEL)
    info = legacy_info(deploy_predictor.load_infer_cfg(folder))
    with pytest.raises(ValueError, match="PaddleSlim-quantized"):
        deploy_predictor.config_plan(folder, info, device="GPU", run_mode="trt_int8")
    shapes = str(tmp_path / "shapes.pbtxt")
    plan = calls_by_name(deploy_predictor.config_plan(
        folder, dict(info, precision="int8"), device="GPU", run_mode="trt_int8", tuned_trt_shape_file=shapes,
        trt_disable_ops=["pd_op.conv2d_transpose", " slice"]))
    assert plan["enable_tensorrt_engine"][1]["precision_mode"] == "Int8"
    assert plan["enable_tensorrt_engine"][1]["use_calib_mode"] is False  # the program's own scales
    assert plan["enable_tuned_tensorrt_dynamic_shape"][0] == (shapes, True)
    assert "set_trt_dynamic_shape_info" not in plan
    assert plan["exp_disable_tensorrt_ops"][0] == (["conv2d_transpose", "slice"],)

    collect = deploy_predictor.config_plan(folder, info, device="GPU", collect_trt_shape_info=True,
                                           tuned_trt_shape_file=shapes)
    assert ("collect_shape_range_info", (shapes,), {}) in collect
    nms = calls_by_name(deploy_predictor.config_plan(folder, dict(info, inputs=["image", "scale_factor"]),
                                                     device="GPU", run_mode="trt_fp32", batch_size=2, **SHAPES))
    low, high, opt = nms["set_trt_dynamic_shape_info"][0]
    assert (low["scale_factor"], high["scale_factor"], opt["scale_factor"]) == ([1, 2], [2, 2], [2, 2])
    with pytest.raises(ValueError, match="trt_min_shape"):
        deploy_predictor.config_plan(folder, info, device="GPU", run_mode="trt_fp32", trt_min_shape=700)


def test_pir_program_loads_its_conversion_without_enable_tensorrt_engine(model_dir):
    info = deploy_predictor.load_infer_cfg(model_dir)
    assert tensorrt_routes.program_format(info) == "pir"
    plan = deploy_predictor.config_plan(model_dir, info, device="GPU", run_mode="trt_fp16", batch_size=8, gpu_id=1,
                                        **SHAPES)
    folder = os.path.join(model_dir, "tensorrt", "fp16_b8_320-640-960")
    assert plan == [("set_prog_file", (os.path.join(folder, "model.json"),), {}),
                    ("set_params_file", (os.path.join(folder, "model.pdiparams"),), {}),
                    ("enable_use_gpu", (200, 1), {}), ("disable_glog_info", (), {})]
    # Each choice that changes the engines changes the folder.
    folders = {conversion_of(model_dir, **choice).folder for choice in [
        {"run_mode": "trt_fp16"}, {"run_mode": "trt_fp32"}, {"run_mode": "trt_fp16", "batch_size": 2},
        {"run_mode": "trt_fp16", "trt_max_shape": 1024}, {"run_mode": "trt_fp16", "trt_disable_ops": ["slice"]}]}
    assert len(folders) == 5
    with pytest.raises(ValueError, match="applies to legacy programs"):
        deploy_predictor.config_plan(model_dir, info, device="GPU", run_mode="trt_fp16", tuned_trt_shape_file="s.pbtxt")
    with pytest.raises(ValueError, match="PaddleSlim-quantized"):
        conversion_of(model_dir, run_mode="trt_int8")
    int8 = deploy_predictor.tensorrt_conversion(model_dir, dict(info, precision="int8"), device="GPU",
                                                run_mode="trt_int8")
    assert int8.config_kwargs("p")["precision_mode"] == "INT8"


def test_pir_conversion_is_written_in_place_recorded_and_reused(model_dir, standin):
    conversion = conversion_of(model_dir, batch_size=4, trt_disable_ops=["nearest_interp"], **SHAPES)
    record, converted = conversion.ensure()
    assert converted and standin.facts_asked == [0]
    (_, image), (_, config), (_, source, save_model_dir) = [c["call"] for c in standin.calls()]
    assert image == {"min_input_shape": [1, 3, 320, 320], "optim_input_shape": [4, 3, 640, 640],
                     "max_input_shape": [4, 3, 960, 960], "name": "image"}
    assert config == {"min_subgraph_size": deploy_predictor.load_infer_cfg(model_dir)["tensorrt"]["min_subgraph_size"],
                      "save_model_dir": save_model_dir, "disable_ops": ["pd_op.nearest_interp"],
                      "precision_mode": "PM.FP16", "workspace_size": 1 << 30, "inputs": [["Input", "image"]]}
    # converted in place: the final folder, an absolute path, nothing renamed afterwards
    assert source == os.path.join(model_dir, "model") and save_model_dir == os.path.join(conversion.folder, "model")
    engine = record["engine_files"][0]
    assert os.path.isabs(engine) and os.path.dirname(engine) == save_model_dir and os.path.isfile(engine)
    assert tensorrt_routes.engine_files(conversion.program) == [engine]
    assert record["engines"] == 1 and record["outside_tensorrt"] == {"pd_op.nearest_interp": 1}
    assert record["device"] == GPU
    line = tensorrt_routes.describe(record, conversion.folder, converted)
    assert "converted now" in line and "ops left outside TensorRT: pd_op.nearest_interp x1" in line
    key = os.path.basename(conversion.folder)
    assert sorted(os.listdir(os.path.dirname(conversion.folder))) == [key, key + ".lock"]
    assert {"model.json", "model.pdiparams", "model", "conversion.yml", "convert.log"} == set(
        os.listdir(conversion.folder))
    load(conversion.program)  # Paddle would find the engine

    calls = len(standin.calls())
    assert conversion.ensure() == (record, False) and len(standin.calls()) == calls  # reused
    with open(os.path.join(model_dir, "model.pdiparams"), "ab") as f:  # re-exported weights: stale
        f.write(b"\0")
    assert conversion.ensure()[1] and standin.calls()[-1]["call"][0] == "convert"
    info = deploy_predictor.load_infer_cfg(model_dir)
    subgraphs = deploy_predictor.tensorrt_conversion(model_dir, dict(info, tensorrt={"min_subgraph_size": 5}),
                                                     device="GPU", run_mode="trt_fp16", batch_size=4,
                                                     trt_disable_ops=["nearest_interp"], **SHAPES)
    assert subgraphs.folder == conversion.folder and subgraphs.ensure()[1]  # a changed setting reconverts
    assert standin.calls()[-2]["call"][1]["min_subgraph_size"] == 5


def test_engine_paths_are_read_as_paddle_serializes_string_attributes(model_dir):
    """The converted program's engine paths are read from model.json the way this
    paddle writes a string attribute: its own export's data and fetch ops carry names."""
    import conversion_files
    outputs = deploy_predictor.load_infer_cfg(model_dir)["outputs"]
    assert conversion_files.string_attributes(os.path.join(model_dir, "model.json"), "name") == [
        "image", *(f"fetch_name_{i}" for i in range(len(outputs)))]
    assert tensorrt_routes.engine_files(os.path.join(model_dir, "model.json")) == []


def test_the_loader_stand_in_fails_where_paddle_fails(model_dir, tmp_path, monkeypatch):
    """Against the old design: converted elsewhere and renamed into place, or
    converted at a relative path and loaded from another directory, the program
    names engines that are not there, and loading fails as it does in Paddle."""
    monkeypatch.chdir(tmp_path)
    config = SimpleNamespace(save_model_dir=f".{MODEL}.tmp-1/model")
    trt_standin.convert(os.path.join(model_dir, "model"), config)
    os.rename(f".{MODEL}.tmp-1", "published")
    with pytest.raises(RuntimeError, match=r"Cannot open file \.scrfd_500m_kps\.tmp-1/model/engine_"):
        load(str(tmp_path / "published" / "model.json"))
    config = SimpleNamespace(save_model_dir="relative/model")
    trt_standin.convert(os.path.join(model_dir, "model"), config)
    load(str(tmp_path / "relative" / "model.json"))  # from the directory it was converted in
    monkeypatch.chdir(model_dir)
    with pytest.raises(RuntimeError, match="Cannot open file relative/model/engine_"):
        load(str(tmp_path / "relative" / "model.json"))
    assert tensorrt_routes.engine_files(str(tmp_path / "relative" / "model.json"))[0].startswith("relative/")


def test_relative_model_dir_and_another_working_directory(model_dir, standin, loader, monkeypatch, capsys):
    parent = os.path.dirname(model_dir)
    monkeypatch.chdir(parent)
    record, converted = conversion_of(MODEL).ensure()
    assert converted and standin.calls()[-1]["cwd"] == parent
    assert record["engine_files"][0].startswith(os.path.join(model_dir, "tensorrt") + os.sep)
    elsewhere = os.path.join(parent, "elsewhere", "deeper")
    os.makedirs(elsewhere)
    monkeypatch.chdir(elsewhere)
    relative = os.path.join("..", "..", MODEL)
    assert conversion_of(relative).ensure() == (record, False)  # the same conversion, found from here
    monkeypatch.setattr(deploy_predictor, "check_device", lambda device, run_mode, gpu_id: None)
    info = deploy_predictor.load_infer_cfg(relative)
    batch = np.random.RandomState(0).rand(1, 3, 64, 96).astype("float32")
    got = deploy_predictor.Predictor(relative, info, device="GPU", run_mode="trt_fp16")(batch)
    assert "cached conversion" in capsys.readouterr().err
    expected = deploy_predictor.Predictor(relative, info)(batch)
    for name in info["outputs"]:  # the two Configs differ, so to float rounding
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-5)


def test_a_moved_or_incomplete_conversion_is_redone(model_dir, standin, tmp_path):
    record, _ = conversion_of(model_dir).ensure()
    moved = str(tmp_path / "moved")
    shutil.move(model_dir, moved)
    conversion = conversion_of(moved)
    with pytest.raises(RuntimeError, match="Cannot open file"):
        load(conversion.program)  # its engines are still named at the old place
    device = tensorrt_routes.device_facts(0)
    assert conversion.cached_record(conversion.fingerprint(device), device) == (
        None, f"{conversion.program} names engine {record['engine_files'][0]}, which is not inside {conversion.folder}")
    again, converted = conversion.ensure()
    assert converted and again["engine_files"][0].startswith(conversion.folder + os.sep)
    load(conversion.program)

    os.remove(again["engine_files"][0])  # a missing engine file
    assert conversion.cached_record(conversion.fingerprint(device), device) == (
        None, f"engine file {again['engine_files'][0]}, named by {conversion.program}, is missing")
    assert conversion.ensure()[1]
    load(conversion.program)


def test_a_changed_gpu_reconverts(model_dir, standin, capsys):
    conversion = conversion_of(model_dir)
    first, _ = conversion.ensure()
    for change in ({"gpu": "NVIDIA L4", "compute_capability": "8.9"}, {"tensorrt": "10.7.0"}, {"cudnn": "9.6.0"},
                   {"cuda": "12.8"}, {"tensorrt_package": "10.7.0"}):
        before = dict(standin.device)
        standin.device.update(change)
        record, converted = conversion.ensure()
        assert converted and record["device"] == standin.device and record["fingerprint"] != first["fingerprint"]
        assert f"it was built for {tensorrt_routes.gpu_line(before)}; this is" in capsys.readouterr().err
        assert conversion.ensure() == (record, False)


def test_gpu_id_1_converts_in_a_child_that_sees_only_that_gpu(model_dir, standin, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    conversion = conversion_of(model_dir)
    conversion.ensure(gpu_id=1)
    assert standin.facts_asked == [1]  # the fingerprint is that GPU's
    assert {c["CUDA_VISIBLE_DEVICES"] for c in standin.calls()} == {"1"}
    assert {c["pid"] for c in standin.calls()} != {os.getpid()}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    standin.device["gpu"] = "another model"
    conversion.ensure(gpu_id=1)
    assert standin.calls()[-1]["CUDA_VISIBLE_DEVICES"] == "6"
    import convert_child
    assert convert_child.visible_device(0, {}) == "0"
    assert convert_child.visible_device(1, {"CUDA_VISIBLE_DEVICES": "GPU-aa, GPU-bb"}) == "GPU-bb"
    with pytest.raises(tensorrt_routes.TensorRTError, match=r"--gpu_id 2: CUDA_VISIBLE_DEVICES='4,6' makes 2 GPU"):
        convert_child.visible_device(2, {"CUDA_VISIBLE_DEVICES": "4,6"})


def test_interrupted_or_failed_conversion_is_never_used(model_dir, standin):
    conversion = conversion_of(model_dir, run_mode="trt_fp32")
    standin.set(fail="crash")  # engines written, then the process dies
    with pytest.raises(tensorrt_routes.TensorRTError, match=r"(?s)conversion process exited with status 139 \(.*"
                                                            r"convert\.log, last lines:\nF0000 engine build: out of "
                                                            r"memory\n?\); .*--run_mode paddle"):
        conversion.ensure()
    assert os.listdir(os.path.join(conversion.folder, "model")) and not os.path.exists(conversion.record_path)
    device = tensorrt_routes.device_facts(0)
    assert conversion.cached_record(conversion.fingerprint(device), device)[1] == (
        "an unfinished conversion (no conversion.yml) is redone")
    standin.set(fail="RuntimeError")
    with pytest.raises(tensorrt_routes.TensorRTError, match="convert.*failed: RuntimeError: no converter.*"
                                                            "--run_mode paddle.*--format legacy"):
        conversion.ensure()
    standin.set(write=False)
    with pytest.raises(tensorrt_routes.TensorRTError, match="wrote no model.json"):
        conversion.ensure()
    standin.set(engine_dir=os.path.join(os.path.dirname(model_dir), "home", ".pp_trt_cache"))
    with pytest.raises(tensorrt_routes.TensorRTError, match=r"not inside .* or missing: \[.*\.pp_trt_cache/engine_"):
        conversion.ensure()
    assert not os.path.exists(conversion.record_path)
    standin.set()
    record, converted = conversion.ensure()
    assert converted and record["engines"] == 1
    engine = os.path.basename(record["engine_files"][0])
    assert sorted(os.listdir(os.path.join(conversion.folder, "model"))) == [engine[:-4] + ".pir", engine]


def wait_for(predicate, seconds=20):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie has exited
        return f.read().split(")")[-1].split()[0] != "Z"


def test_an_interrupted_parent_takes_its_child_along(model_dir, standin, monkeypatch, capsys):
    """A long conversion says it is still going; Ctrl-C while the child converts:
    the parent kills the child, and nothing is recorded."""
    import _thread
    import convert_child
    monkeypatch.setattr(convert_child, "HEARTBEAT_S", 0.2)
    standin.set(fail="hang")
    conversion = conversion_of(model_dir)

    def interrupt():
        wait_for(lambda: any(c["call"] == ["hanging"] for c in standin.calls()))
        time.sleep(0.5)
        _thread.interrupt_main()

    threading.Thread(target=interrupt, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        conversion.ensure()
    assert not alive(standin.calls()[-1]["pid"]) and not os.path.exists(conversion.record_path)
    assert f"PIR-TensorRT: still converting (0 s; log {conversion.folder}/convert.log)" in capsys.readouterr().err


PARENT = """
import json, sys
sys.path[:0] = [{deploy!r}, {tests!r}]
import predictor, tensorrt_routes
tensorrt_routes.PirConversion.converter_module = ("trt_standin", {tests!r})
tensorrt_routes.device_facts = lambda gpu_id: {gpu!r}
info = predictor.load_infer_cfg({model_dir!r})
record, converted = predictor.tensorrt_conversion({model_dir!r}, info, device="GPU", run_mode="trt_fp16").ensure()
print(json.dumps({{"converted": converted, "engines": record["engine_files"]}}))
"""


def parent_process(model_dir, stderr=subprocess.PIPE, **settings):
    env = dict(os.environ, **{trt_standin.STANDIN_ENV: json.dumps(settings)})
    code = PARENT.format(deploy=DEPLOY, tests=TESTS, gpu=GPU, model_dir=model_dir)
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)


def test_a_killed_parent_takes_its_child_along(model_dir, standin):
    parent = parent_process(model_dir, log=standin.log, fail="hang")
    wait_for(lambda: any(c["call"] == ["hanging"] for c in standin.calls()))
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    child = standin.calls()[-1]["pid"]
    wait_for(lambda: not alive(child), seconds=5)


def test_two_processes_never_convert_into_one_folder(model_dir, standin, tmp_path):
    release = str(tmp_path / "release")
    first = parent_process(model_dir, log=standin.log, release=release)
    wait_for(lambda: standin.calls())  # the first one is converting, and stays so until released
    with open(tmp_path / "second.err", "w") as err:
        second = parent_process(model_dir, stderr=err, log=standin.log)
        wait_for(lambda: "waiting for" in (tmp_path / "second.err").read_text(), seconds=120)
        open(release, "w").close()
        results = [json.loads(p.communicate(timeout=120)[0]) for p in (first, second)]
    assert [c["call"][0] for c in standin.calls()].count("convert") == 1
    assert [r["converted"] for r in results] == [True, False] and results[0]["engines"] == results[1]["engines"]
    assert f"waiting for pid {first.pid} on " in (tmp_path / "second.err").read_text()


def test_only_a_live_holder_blocks_the_lock(model_dir, standin, monkeypatch):
    conversion = conversion_of(model_dir)
    os.makedirs(os.path.dirname(conversion.folder))
    hold = ("import sys, time; sys.path.insert(0, {!r}); import conversion_files\n"
            "with conversion_files.held_lock({!r}, 5):\n    print('held', flush=True); time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", hold.format(DEPLOY, conversion.lock)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(tensorrt_routes.PirConversion, "lock_timeout_s", 1.0)
        with pytest.raises(tensorrt_routes.TensorRTError, match=f"still held by pid {holder.pid} on .* after 1 s"):
            conversion.ensure()
    finally:
        holder.kill()
        holder.wait()
    with open(conversion.lock) as f:
        assert f.read().startswith(f"pid {holder.pid} ")  # left behind by a dead holder: not a lock
    start = time.monotonic()
    assert conversion.ensure()[1] and time.monotonic() - start < 30


def test_predictor_runs_the_converted_program(model_dir, standin, loader, monkeypatch, capsys):
    """The whole PIR route with the stand-ins: convert, log, load the conversion. The
    CPU wheel ignores enable_use_gpu, so the "converted" copy runs on CPU and must
    give the plain predictor's outputs (to float rounding: the two Configs differ)."""
    monkeypatch.setattr(deploy_predictor, "check_device", lambda device, run_mode, gpu_id: None)
    standin.set(outside=[])
    info = deploy_predictor.load_infer_cfg(model_dir)
    batch = np.random.RandomState(0).rand(1, 3, 64, 96).astype("float32")
    converted = deploy_predictor.Predictor(model_dir, info, device="GPU", run_mode="trt_fp16")
    got = converted(batch)
    assert "converted now): 1 engine(s); ops left outside TensorRT: none" in capsys.readouterr().err
    assert converted.conversion[2] is True
    expected = deploy_predictor.Predictor(model_dir, info)(batch)
    for name in info["outputs"]:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-5)
    assert [c["call"][0] for c in standin.calls()] == ["Input", "TensorRTConfig", "convert"]
    assert deploy_predictor.Predictor(model_dir, info, device="GPU", run_mode="trt_fp16").conversion[2] is False

    def engine_fault():
        raise RuntimeError("(External) TensorRT error in enqueueV3")

    real = converted.predictor  # kept alive: the input handles point into it
    converted.predictor = SimpleNamespace(run=engine_fault)
    with pytest.raises(tensorrt_routes.TensorRTError, match="running the TensorRT program failed: RuntimeError.*"
                                                            "--run_mode paddle"):
        converted(batch)
    assert real.get_output_names()


def test_build_failure_and_empty_outputs_name_the_fallback(model_dir, standin, monkeypatch):
    monkeypatch.setattr(deploy_predictor, "check_device", lambda device, run_mode, gpu_id: None)

    def broken(config):
        raise RuntimeError("(InvalidArgument) engine deserialization failed")

    monkeypatch.setattr(paddle.inference, "create_predictor", broken)
    info = deploy_predictor.load_infer_cfg(model_dir)
    with pytest.raises(tensorrt_routes.TensorRTError, match="building the trt_fp32 predictor failed.*"
                                                            "--run_mode paddle.*--format legacy"):
        deploy_predictor.Predictor(model_dir, info, device="GPU", run_mode="trt_fp32")

    full = {"score_8": np.zeros((1, 10, 1), "float32"), "bbox_8": np.zeros((1, 0, 4), "float32")}
    with pytest.raises(tensorrt_routes.TensorRTError, match=r"empty outputs \(bbox_8\).*--run_mode paddle"):
        tensorrt_routes.check_outputs(full, info)
    nms = {"dets": np.zeros((0, 16), "float32"), "counts": np.zeros(1, "int32")}
    tensorrt_routes.check_outputs(nms, {"with_nms": True})  # no face found is not a failure
    with pytest.raises(tensorrt_routes.TensorRTError, match=r"\(counts\)"):
        tensorrt_routes.check_outputs(dict(nms, counts=np.zeros(0, "int32")), {"with_nms": True})


@pytest.mark.skipif(paddle.is_compiled_with_cuda(), reason="this paddle has CUDA: paddle.tensorrt may exist")
def test_missing_paddle_tensorrt_names_the_gpu_wheel():
    with pytest.raises(tensorrt_routes.TensorRTError) as error:
        tensorrt_routes.import_paddle_tensorrt("trt_fp16")
    message = str(error.value)
    assert "paddle.tensorrt" in message and "a CPU-only build" in message
    assert "paddlepaddle-gpu wheel built with TensorRT" in message and "--run_mode paddle" in message


@pytest.mark.skipif(paddle.is_compiled_with_cuda(), reason="this paddle has CUDA: TensorRT may work")
def test_cpu_wheel_refuses_the_legacy_plan_at_the_device_call():
    folder = exported(MODEL)
    info = legacy_info(deploy_predictor.load_infer_cfg(folder))
    plan = deploy_predictor.config_plan(folder, info, device="GPU", run_mode="trt_fp16")
    with pytest.raises(deploy_predictor.DeviceUnavailable, match="TENSORRT|TensorRT"):
        deploy_predictor.build_config(plan)
