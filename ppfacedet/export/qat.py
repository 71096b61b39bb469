"""Export of a quantization-aware-trained model (the wrapping itself is
``ppfacedet/quant/qat.py``): a program Paddle Inference runs (oneDNN int8 on CPU).

    python tools/export_model.py -c configs/scrfd_500m_kps.yml --slim_config configs/slim/qat.yml -o weights=QAT_W

``export_qat_model`` writes the int8 folder deploy/python runs.

Which API (ENVIRONMENT.md, paddle 3.3.1): ``paddle.quantization.QAT`` with
``FakeQuanterWithAbsMaxObserver`` trains in either IR, but its ``convert()``
fails and only an unconverted model saved in the old program format
(``FLAGS_enable_pir_api=0``) runs in Paddle Inference; PaddleSlim's dygraph
QAT exports programs whose outputs disagree with the trained model. So the
export saves the fake-quant model as it trained, from a child process in the
old IR, and marks it ``precision: int8``.
"""
import argparse
import os

import yaml

from ..core.config import read_section
from ..core.errors import PPFaceDetError
from ..quant.qat import QUANT_DEFAULTS
from .child import model_snapshot, run_module


def export_qat_model(cfg, model, output_dir):
    """A QAT-wrapped model -> ``output_dir/<cfg.name>`` (model.pdmodel, model.pdiparams,
    infer_cfg.yml with ``precision: int8``), exported in a child process in the old IR."""
    with model_snapshot(cfg, model) as (config, weights):
        run_module("ppfacedet.export.qat", ["-c", config, "--weights", weights, "--output_dir", output_dir],
                   pir=False, what="exporting the QAT model")
    return os.path.join(output_dir, cfg.name)


def _export_here(cfg, weights, output_dir):
    """Child side: rebuild, re-wrap, load the trained QAT state and save the old-format program."""
    from ..engine.checkpoint import read_weights
    from ..modeling.detector import build_model
    from .static import export_inference_model
    model = build_model(cfg)  # wrapped by apply_qat: cfg has the quant section
    state = read_weights(weights)
    missing = [k for k in model.state_dict() if k not in state]
    if missing:
        raise PPFaceDetError(f"{weights}: not a state of this QAT model ({len(missing)} tensors missing, "
                             f"e.g. {missing[0]})")
    model.set_state_dict(state)
    model.eval()
    folder = export_inference_model(cfg, model, output_dir, program_format="legacy")
    path = os.path.join(folder, "infer_cfg.yml")
    with open(path) as f:
        info = yaml.safe_load(f)
    info.update(precision="int8", quantization={"method": "qat", **read_section(cfg, "quant", QUANT_DEFAULTS)})
    with open(path, "w") as f:
        yaml.safe_dump(info, f, sort_keys=False, default_flow_style=None)
    return folder


def main(argv=None):
    parser = argparse.ArgumentParser(description="export a QAT state in the old program format (child process)")
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--output_dir", required=True)
    args = parser.parse_args(argv)
    import paddle
    if paddle.framework.use_pir_api():
        raise SystemExit("run with FLAGS_enable_pir_api=0 in the environment (export_qat_model does)")
    from ..core.config import load_config
    print(_export_here(load_config(args.config), args.weights, args.output_dir))


if __name__ == "__main__":
    main()
