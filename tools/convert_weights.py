"""Import official weights (PyTorch .pth, ONNX) into a ppfacedet model.

  python tools/convert_weights.py -c configs/retinaface_mnet025.yml --src mobilenet0.25_Final.pth --out retinaface_mnet025.pdparams
  python tools/convert_weights.py -c configs/scrfd_500m_kps.yml --src scrfd_500m_bnkps.onnx --out scrfd_500m_kps.pdparams
  python tools/convert_weights.py -c configs/scrfd_500m_kps.yml --src work_dirs/scrfd_500m_bnkps/epoch_640.pth --out scrfd_500m_kps.pdparams

No PyTorch is needed: checkpoints are read directly. The config's
``converter`` names the family's name map.
"""
import _path  # noqa: F401

from ppfacedet.cli import base_parser, load_cfg, run


def main():
    parser = base_parser(__doc__)
    parser.add_argument("--src", required=True, help="official weights: .pth/.pt/.tar or .onnx")
    parser.add_argument("--out", required=True, help="output .pdparams")
    args = parser.parse_args()
    cfg = load_cfg(args)

    from ppfacedet.convert.apply import convert_official_weights
    from ppfacedet.engine.checkpoint import atomic_save
    model, n = convert_official_weights(cfg, args.src)
    atomic_save(model.state_dict(), args.out)
    print(f"converted {n} tensors from {args.src} -> {args.out}")


if __name__ == "__main__":
    run(main)
