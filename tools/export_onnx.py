"""Export a model to ONNX (dynamic batch, height and width) through paddle2onnx.

  python tools/export_onnx.py -c configs/scrfd_500m_kps.yml -o weights=W.pdparams --output_dir output/export
  python tools/export_onnx.py --model_dir output/export/scrfd_500m_kps      # an existing export

The first form exports the static model (as tools/export_model.py) to
OUTPUT_DIR/<config name>/ and converts it to model.onnx there; the second
converts the folder given. The ONNX outputs carry the names of infer_cfg.yml.
paddle2onnx runs in a child process; when it fails its log is shown. The same
conversion by hand:

  paddle2onnx --model_dir DIR --model_filename model.json --params_filename model.pdiparams \\
              --save_file DIR/model.onnx --opset_version 11
"""
import _path  # noqa: F401

from ppfacedet.cli import base_parser, load_cfg, model_with_weights, run


def main():
    parser = base_parser(__doc__, config_required=False)
    parser.add_argument("--model_dir", help="convert this export folder instead of exporting from -c")
    parser.add_argument("--output_dir", default="output/export", help="with -c: the export goes to OUTPUT_DIR/<name>")
    parser.add_argument("--save_file", help="the .onnx path (default: model.onnx in the export folder)")
    parser.add_argument("--opset", type=int, default=11, help="ONNX opset (at least 11; default 11)")
    args = parser.parse_args()
    if bool(args.config) == bool(args.model_dir):
        parser.error("give either -c CONFIG (with -o weights=...) or --model_dir of an export, not both")

    from ppfacedet.export.to_onnx import convert_to_onnx

    model_dir = args.model_dir
    if args.config:
        from ppfacedet.export.static import export_inference_model
        cfg = load_cfg(args)
        model_dir = export_inference_model(cfg, model_with_weights(cfg), args.output_dir)
    path = convert_to_onnx(model_dir, args.save_file, args.opset)
    print(f"ONNX model -> {path}")
    return 0


if __name__ == "__main__":
    run(main)
