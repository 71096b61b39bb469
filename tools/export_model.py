"""Export a trained model for deployment (Paddle Inference, ONNX, TensorRT).

  python tools/export_model.py -c configs/scrfd_500m_kps.yml -o weights=W.pdparams --output_dir output/export
  python tools/export_model.py -c CFG -o weights=W --output_dir DIR --with_nms --format legacy
  python tools/export_model.py -c CFG --slim_config configs/slim/qat.yml -o weights=QAT_W --output_dir DIR  # int8
  python tools/export_model.py --model scrfd_500m_kps --output_dir DIR  # a released model by name

Writes DIR/<config name>/: the program (model.json, or model.pdmodel with
--format legacy, which the quantization tools and paddle2onnx 1.x read),
model.pdiparams, model.onnx (paddle2onnx, in a child process; the fast CPU
engines of deploy/python run it) and infer_cfg.yml, which names them.
--with_nms exports get no model.onnx: paddle2onnx cannot convert their NMS. The input ``image`` is [N, 3, H, W] with N,
H and W free, normalised as infer_cfg.yml's ``input`` says. Outputs: the
head's per-stride score / box / keypoint tensors (names in infer_cfg.yml), or
with --with_nms the decoded, suppressed detections ``dets`` [K, 16] and
``counts`` [N] (see ppfacedet/export/graph_nms.py).
"""
import _path  # noqa: F401

from ppfacedet.cli import base_parser, load_cfg, model_with_weights, run


def main():
    parser = base_parser(__doc__, zoo_model=True)
    parser.add_argument("--output_dir", default="output/export", help="the model goes to OUTPUT_DIR/<config name>")
    parser.add_argument("--with_nms", action="store_true", help="decode and NMS inside the graph")
    parser.add_argument("--format", default="pir", choices=["pir", "legacy"],
                        help="program format: pir (model.json, default) or legacy (model.pdmodel)")
    parser.add_argument("--no_onnx", action="store_true", help="skip model.onnx (the Paddle program only)")
    args = parser.parse_args()
    cfg = load_cfg(args)

    from ppfacedet.core.errors import PPFaceDetError
    from ppfacedet.export.qat import export_qat_model
    from ppfacedet.export.static import export_inference_model
    from ppfacedet.export.to_onnx import convert_to_onnx

    model = model_with_weights(cfg)
    if cfg.get("quant"):  # a QAT model (--slim_config configs/slim/qat.yml): int8, old program format
        if args.with_nms:
            raise PPFaceDetError("--with_nms is not supported for QAT exports; export without it")
        folder = export_qat_model(cfg, model, args.output_dir)
    else:
        folder = export_inference_model(cfg, model, args.output_dir, with_nms=args.with_nms,
                                        program_format=args.format)
        if not (args.with_nms or args.no_onnx):
            convert_to_onnx(folder)
    print(f"exported {cfg.name} -> {folder}")
    return 0


if __name__ == "__main__":
    run(main)
