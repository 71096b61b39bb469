"""Print a model's parameters (M, and the exact count) and FLOPs (G), counted like the published
SCRFD / DamoFD tables (see ppfacedet/modeling/flops.py).

    python tools/flops.py -c configs/damofd_0.5g.yml
    python tools/flops.py -c configs/scrfd_500m.yml --input_shape 1,3,640,640 --per_layer
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppfacedet.cli import parse_input_shape  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", required=True, help="model config (YAML)")
    parser.add_argument("--input_shape", type=parse_input_shape, default=[1, 3, 480, 640],
                        help="N,C,H,W of the dummy input (default 1,3,480,640 = VGA, the published tables' size)")
    parser.add_argument("-o", "--opt", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, e.g. -o model.head.feat_channels=32 (repeatable)")
    parser.add_argument("--per_layer", action="store_true", help="also list the FLOPs of every counted layer")
    args = parser.parse_args(argv)

    from ppfacedet.core import load_config
    from ppfacedet.modeling.detector import build_model
    from ppfacedet.modeling.flops import count_flops, count_params

    model = build_model(load_config(args.config, args.opt))
    params = count_params(model)
    flops, per_layer = count_flops(model, args.input_shape, per_layer=True)
    if args.per_layer:
        for name, value in per_layer.items():
            print(f"{name:60s} {value / 1e6:10.3f} MFLOPs")
    shape = "x".join(str(v) for v in args.input_shape)
    print(f"config: {args.config}")
    print(f"input:  {shape}")
    print(f"params: {params / 1e6:.4f} M ({params:,})")
    print(f"FLOPs:  {flops / 1e9:.4f} G")
    return params, flops


if __name__ == "__main__":
    main()
