"""DDSAR-scored evolutionary search for a DamoFD (MasterNet) backbone, on CPU.

No network is trained or run: the DDSAR score and the FLOPs are computed from
the structure, so the official 96000-iteration search takes minutes.

    python tools/search.py --budget_flops 420M --output struct.txt
    python tools/search.py --budget_flops 2.1G --space res --max_layers 20 --output struct.txt

The written string goes into a config as ``model.backbone.structure``
(type MasterNet); the neck's in_channels follow from it.
"""
import argparse
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_UNITS = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9}


def parse_flops(text):
    """'500M', '2.5G', '65e6' -> float."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMgG]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"'{text}' is not a FLOPs value like 500M, 2.5G or 65e6")
    return float(m.group(1)) * _UNITS[m.group(2).upper()]


def main(argv=None):
    from ppfacedet.search.space import SEEDS, SPACES

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget_flops", type=parse_flops, required=True,
                        help="backbone FLOPs budget at VGA 640x480, counted like tools/flops.py (DamoFD-0.5G's "
                             "backbone is 413M, 2.5G's 2.04G, 10G's 8.40G, 34G's 26.5G); checked at the search "
                             "size scaled by area")
    parser.add_argument("--input_size", type=int, default=224,
                        help="square resolution the score and FLOPs are computed at (official: 224)")
    parser.add_argument("--iters", type=int, default=96000, help="evolution iterations (official: 96000)")
    parser.add_argument("--population", type=int, default=512, help="population size (official: 512)")
    parser.add_argument("--max_layers", type=int, default=14,
                        help="limit on the total sub-layers (official: 14 for 0.5G, 20 for larger)")
    parser.add_argument("--space", choices=sorted(SPACES), default="idw",
                        help="block families: idw = inverted depthwise (0.5G), res = K1KXK1/KXKX (2.5G+)")
    parser.add_argument("--init", default=None,
                        help="seed structure string (default: the official seed of the space)")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--output", required=True, help="file to write the best structure string to")
    args = parser.parse_args(argv)

    from tqdm import tqdm

    from ppfacedet.search.evolution import VGA_PIXELS, SearchConfig, search

    cfg = SearchConfig(budget_flops=args.budget_flops, input_size=args.input_size, iters=args.iters,
                       population=args.population, max_layers=args.max_layers, space=args.space,
                       seed_structure=args.init or SEEDS[args.space], seed=args.seed)
    print(f"budget: {args.budget_flops / 1e6:.1f} MFLOPs at VGA = {cfg.budget_at_search_size() / 1e6:.2f} "
          f"MFLOPs at {args.input_size}x{args.input_size}; space {args.space}, max {args.max_layers} layers")
    bar = tqdm(total=args.iters, desc="search", mininterval=1.0)

    def progress(it, best, size):
        bar.update(1)
        if it % 200 == 0 and best is not None:
            bar.set_postfix(best=f"{best.score:.4f}", pop=size)

    start = time.time()
    best = search(cfg, progress)
    bar.close()
    elapsed = time.time() - start
    vga_flops = best.flops * VGA_PIXELS / args.input_size ** 2
    print(f"done: {args.iters} iterations in {elapsed:.1f} s; rejected: {cfg.stats}")
    print(f"best structure: {best.structure}")
    print(f"  DDSAR score {best.score:.4f}; backbone {best.params / 1e6:.4f} M params, "
          f"{best.flops / 1e6:.2f} MFLOPs at {args.input_size}x{args.input_size} (~{vga_flops / 1e6:.0f}M at VGA)")
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        f.write(best.structure + "\n")
    print(f"written to {args.output}")
    return best


if __name__ == "__main__":
    main()
