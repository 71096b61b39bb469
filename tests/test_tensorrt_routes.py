"""deploy/python TensorRT, up to the device: the route follows the program
format, each route makes the calls Paddle documents, PIR-TensorRT converts
once into a keyed, atomically written folder, and failures name the fallback.
The CPU wheel has no paddle.tensorrt, so the PIR conversion runs against a
stand-in that records the calls."""
import os
import shutil
from types import SimpleNamespace

import numpy as np
import paddle
import pytest

from deploy_support import exported

import predictor as deploy_predictor  # noqa: E402  (deploy/python, put on sys.path by deploy_support)
import tensorrt_routes  # noqa: E402

MODEL = "scrfd_500m_kps"
SHAPES = {"trt_min_shape": 320, "trt_opt_shape": 640, "trt_max_shape": 960}


def calls_by_name(plan):
    return {method: (args, kwargs) for method, args, kwargs in plan}


def legacy_info(info, **extra):
    return dict(info, program="model.pdmodel", **extra)


class StandInTensorRT:
    """paddle.tensorrt's four names. ``convert`` records its arguments, writes the
    source program as the "converted" one at <save_model_dir>.json/.pdiparams
    (where paddle.static.save_inference_model puts it) and returns a program
    with one engine and the ops given as left outside."""

    PrecisionMode = SimpleNamespace(FP32="PM.FP32", FP16="PM.FP16", INT8="PM.INT8")

    def __init__(self, outside=("pd_op.nearest_interp",), fail=None, write=True):
        self.calls, self.outside, self.fail, self.write = [], list(outside), fail, write

    def Input(self, **kwargs):  # noqa: N802  (paddle's name)
        self.calls.append(("Input", kwargs))
        return ("Input", kwargs["name"])

    def TensorRTConfig(self, **kwargs):  # noqa: N802
        self.calls.append(("TensorRTConfig", kwargs))
        return SimpleNamespace(**kwargs)

    def convert(self, model_path, config):
        self.calls.append(("convert", model_path, config))
        if self.write:
            shutil.copy(model_path + ".json", config.save_model_dir + ".json")
            shutil.copy(model_path + ".pdiparams", config.save_model_dir + ".pdiparams")
        if self.fail:
            raise self.fail
        names = ["pd_op.data", "builtin.parameter", "builtin.combine", "pd_op.tensorrt_engine", "builtin.split",
                 *self.outside, "pd_op.fetch"]
        ops = [SimpleNamespace(name=lambda n=n: n) for n in names]
        return SimpleNamespace(global_block=lambda: SimpleNamespace(ops=ops))


@pytest.fixture
def model_dir(tmp_path):
    """A private copy of the PIR export: conversions are written inside the model folder."""
    folder = tmp_path / MODEL
    shutil.copytree(exported(MODEL), folder)
    return str(folder)


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
    plan = deploy_predictor.config_plan(model_dir, info, device="GPU", run_mode="trt_fp16", batch_size=8, **SHAPES)
    folder = os.path.join(model_dir, "tensorrt", "fp16_b8_320-640-960")
    assert plan == [("set_prog_file", (os.path.join(folder, "model.json"),), {}),
                    ("set_params_file", (os.path.join(folder, "model.pdiparams"),), {}),
                    ("enable_use_gpu", (200, 0), {}), ("disable_glog_info", (), {})]
    # Each choice that changes the engines changes the folder.
    folders = {deploy_predictor.tensorrt_conversion(model_dir, info, device="GPU", **choice).folder for choice in [
        {"run_mode": "trt_fp16"}, {"run_mode": "trt_fp32"}, {"run_mode": "trt_fp16", "batch_size": 2},
        {"run_mode": "trt_fp16", "trt_max_shape": 1024}, {"run_mode": "trt_fp16", "trt_disable_ops": ["slice"]}]}
    assert len(folders) == 5
    with pytest.raises(ValueError, match="applies to legacy programs"):
        deploy_predictor.config_plan(model_dir, info, device="GPU", run_mode="trt_fp16", tuned_trt_shape_file="s.pbtxt")
    with pytest.raises(ValueError, match="PaddleSlim-quantized"):
        deploy_predictor.tensorrt_conversion(model_dir, info, device="GPU", run_mode="trt_int8")
    int8 = deploy_predictor.tensorrt_conversion(model_dir, dict(info, precision="int8"), device="GPU",
                                                run_mode="trt_int8")
    assert int8.config_kwargs("p")["precision_mode"] == "INT8"


def test_pir_conversion_calls_record_and_reuse(model_dir):
    info = deploy_predictor.load_infer_cfg(model_dir)
    conversion = deploy_predictor.tensorrt_conversion(model_dir, info, device="GPU", run_mode="trt_fp16",
                                                      batch_size=4, trt_disable_ops=["nearest_interp"], **SHAPES)
    trt = StandInTensorRT()
    record = conversion.ensure(trt)
    (_, image), (_, config_kwargs), (_, source, config) = trt.calls
    assert image == {"min_input_shape": (1, 3, 320, 320), "optim_input_shape": (4, 3, 640, 640),
                     "max_input_shape": (4, 3, 960, 960), "name": "image"}
    temp_prefix = config_kwargs.pop("save_model_dir")
    assert config_kwargs == {"inputs": [("Input", "image")], "min_subgraph_size": info["tensorrt"]["min_subgraph_size"],
                             "disable_ops": ["pd_op.nearest_interp"], "precision_mode": "PM.FP16",
                             "workspace_size": 1 << 30}
    assert source == os.path.join(model_dir, "model") and config.save_model_dir == temp_prefix
    assert not temp_prefix.startswith(conversion.folder)  # written elsewhere, then renamed into place
    assert record["engines"] == 1 and record["outside_tensorrt"] == {"pd_op.nearest_interp": 1}
    assert "ops left outside TensorRT: pd_op.nearest_interp x1" in tensorrt_routes.describe(record, conversion.folder)
    assert sorted(os.listdir(os.path.dirname(conversion.folder))) == [os.path.basename(conversion.folder)]
    assert {"model.json", "model.pdiparams", "conversion.yml"} <= set(os.listdir(conversion.folder))

    again = StandInTensorRT()
    assert conversion.ensure(again) == record and again.calls == []  # reused
    with open(os.path.join(model_dir, "model.pdiparams"), "ab") as f:  # re-exported weights: stale
        f.write(b"\0")
    assert conversion.ensure(again)["engines"] == 1 and [c[0] for c in again.calls][-1] == "convert"
    subgraphs = deploy_predictor.tensorrt_conversion(model_dir, dict(info, tensorrt={"min_subgraph_size": 5}),
                                                     device="GPU", run_mode="trt_fp16", batch_size=4,
                                                     trt_disable_ops=["nearest_interp"], **SHAPES)
    third = StandInTensorRT()
    assert subgraphs.folder == conversion.folder and subgraphs.ensure(third)["engines"] == 1
    assert third.calls[1][1]["min_subgraph_size"] == 5  # a changed setting reconverts


def test_interrupted_or_failed_conversion_is_never_used(model_dir):
    info = deploy_predictor.load_infer_cfg(model_dir)
    conversion = deploy_predictor.tensorrt_conversion(model_dir, info, device="GPU", run_mode="trt_fp32")
    with pytest.raises(KeyboardInterrupt):  # files written, then the user stops the conversion
        conversion.ensure(StandInTensorRT(fail=KeyboardInterrupt()))
    assert not os.path.exists(conversion.folder) and os.listdir(os.path.dirname(conversion.folder)) == []
    with pytest.raises(tensorrt_routes.TensorRTError, match="convert.*failed: RuntimeError: no converter.*"
                                                            "--run_mode paddle.*--format legacy"):
        conversion.ensure(StandInTensorRT(fail=RuntimeError("no converter for pd_op.foo")))
    with pytest.raises(tensorrt_routes.TensorRTError, match="wrote no model.json"):
        conversion.ensure(StandInTensorRT(write=False))
    assert not os.path.exists(conversion.folder)
    assert conversion.ensure(StandInTensorRT())["engines"] == 1


def test_predictor_runs_the_converted_program(model_dir, monkeypatch, capsys):
    """The whole PIR route with the stand-in: convert, log, load the conversion. The
    CPU wheel ignores enable_use_gpu, so the "converted" copy runs on CPU and must
    give the plain predictor's outputs (to float rounding: the two Configs differ)."""
    monkeypatch.setattr(deploy_predictor, "check_device", lambda device, run_mode: None)
    trt = StandInTensorRT(outside=())
    monkeypatch.setattr(tensorrt_routes, "import_paddle_tensorrt", lambda run_mode: trt)
    info = deploy_predictor.load_infer_cfg(model_dir)
    batch = np.random.RandomState(0).rand(1, 3, 64, 96).astype("float32")
    converted = deploy_predictor.Predictor(model_dir, info, device="GPU", run_mode="trt_fp16")
    got = converted(batch)
    assert "1 engine(s); ops left outside TensorRT: none" in capsys.readouterr().err
    expected = deploy_predictor.Predictor(model_dir, info)(batch)
    for name in info["outputs"]:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-5)
    assert [c[0] for c in trt.calls] == ["Input", "TensorRTConfig", "convert"]

    def engine_fault():
        raise RuntimeError("(External) TensorRT error in enqueueV3")

    real = converted.predictor  # kept alive: the input handles point into it
    converted.predictor = SimpleNamespace(run=engine_fault)
    with pytest.raises(tensorrt_routes.TensorRTError, match="running the TensorRT program failed: RuntimeError.*"
                                                            "--run_mode paddle"):
        converted(batch)
    assert real.get_output_names()


def test_build_failure_and_empty_outputs_name_the_fallback(model_dir, monkeypatch):
    monkeypatch.setattr(deploy_predictor, "check_device", lambda device, run_mode: None)
    monkeypatch.setattr(tensorrt_routes, "import_paddle_tensorrt", lambda run_mode: StandInTensorRT())

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
