"""Post-training INT8 quantization for CPU deployment: a PaddleSlim
quant_post_static program (Paddle Inference, oneDNN int8) and a QDQ ONNX
(onnxruntime, OpenVINO), calibrated on the same images.

  python tools/quant.py -c configs/scrfd_500m_kps.yml -o weights=W.pdparams --calib_dir photos/ --output_dir output/int8
  python tools/quant.py -c CFG -o weights=W --calib_dir DIR --output_dir OUT --calib_num 64 --algo mse --skip depthwise

Writes OUT/<config name>/: model.pdmodel, model.pdiparams, model.onnx and
infer_cfg.yml (``precision: int8``, ``onnx: model.onnx``), a folder
deploy/python/infer.py runs; with --enable_mkldnn the quantized convs run as
oneDNN int8 kernels. tools/eval_onnx.py measures the ONNX model's AP.

Calibration images (searched recursively under --calib_dir) go through the
model's own input policy. Before calibration each batch norm's channel
ranges are equalized with the conv reading it (float outputs unchanged), and
in the Paddle program the convs with signed input get weights on the 7-bit grid
oneDNN uses for them on CPUs without VNNI, so the program runs alike with and
without VNNI. In the Paddle program the depthwise, stem and output convs stay in float by default:
measured on the WIDER 200-image subset, quantizing the depthwise convs costs
RetinaFace-mnet0.25 up to 33 AP points under oneDNN, and the stem and output
convs another 0.5 (medium). The QDQ ONNX quantizes whole chains and leaves
only the stem in float (--onnx_skip; see ppfacedet/export/qdq_onnx.py).
"""
import _path  # noqa: F401

from ppfacedet.cli import base_parser, load_cfg, model_with_weights, run
from ppfacedet.export.qdq_onnx import CALIBRATIONS, DEFAULT_CALIBRATION, DEFAULT_ONNX_SKIP
from ppfacedet.export.quant import ALGOS, DEFAULT_SKIP, SKIP_GROUPS


def main():
    parser = base_parser(__doc__)
    parser.add_argument("--calib_dir", required=True, help="folder of calibration images (searched recursively)")
    parser.add_argument("--output_dir", default="output/int8", help="the model goes to OUTPUT_DIR/<config name>")
    parser.add_argument("--calib_num", type=int, default=32, help="number of calibration images (default 32)")
    parser.add_argument("--algo", default="abs_max", choices=ALGOS,
                        help="activation range estimate (default abs_max)")
    parser.add_argument("--skip", default=DEFAULT_SKIP,
                        help=f"convs left in float, comma-separated among {', '.join(SKIP_GROUPS)}; "
                             f"'' quantizes all (default {DEFAULT_SKIP})")
    parser.add_argument("--onnx_skip",
                        help=f"the same for model.onnx, the QDQ ONNX (default: the config's int8.onnx_skip, "
                             f"else {DEFAULT_ONNX_SKIP})")
    parser.add_argument("--onnx_calibration", choices=CALIBRATIONS,
                        help=f"how model.onnx's activation ranges are set (default: the config's "
                             f"int8.onnx_calibration, else {DEFAULT_CALIBRATION})")
    args = parser.parse_args()
    cfg = load_cfg(args)

    from ppfacedet.export.quant import quantize_model

    model = model_with_weights(cfg)
    folder = quantize_model(cfg, model, args.calib_dir, args.output_dir, calib_num=args.calib_num,
                            algo=args.algo, skip=args.skip, onnx_skip=args.onnx_skip,
                            onnx_calibration=args.onnx_calibration)
    print(f"quantized {cfg.name} -> {folder}")
    return 0


if __name__ == "__main__":
    run(main)
