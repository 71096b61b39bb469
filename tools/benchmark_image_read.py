"""What the damaged-image check costs: read_image (structure check + decode
with the decoder's warnings captured) against a bare cv2.imread of the same
files, interleaved in one run so a shared machine's load hits both alike.

  python tools/benchmark_image_read.py --images ../shared/data/widerface/val_subset_resized416/images --repeats 5
"""
import argparse
import glob
import os
import time

import _path  # noqa: F401


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", nargs="+", required=True, help="image files or folders (searched recursively)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import cv2
    import numpy as np

    from ppfacedet.data.image_io import read_image
    paths = []
    for item in args.images:
        paths += sorted(glob.glob(os.path.join(item, "**", "*.*"), recursive=True)) if os.path.isdir(item) else [item]
    paths = [p for p in paths if p.lower().endswith((".jpg", ".jpeg", ".png"))]
    if not paths:
        raise SystemExit("no JPEG or PNG images found")
    bare, checked = [], []
    for _ in range(args.repeats):
        for path in paths:
            start = time.perf_counter()
            cv2.imread(path, cv2.IMREAD_UNCHANGED)
            middle = time.perf_counter()
            read_image(path)
            bare.append(middle - start)
            checked.append(time.perf_counter() - middle)
    # medians: on a shared machine a preempted call would dominate a mean
    bare_ms, checked_ms = np.median(bare) * 1e3, np.median(checked) * 1e3
    print(f"{len(paths)} images x {args.repeats}, median per image: cv2.imread {bare_ms:.3f} ms, "
          f"read_image (checked) {checked_ms:.3f} ms, check cost {(checked_ms - bare_ms) * 1e3:.0f} us "
          f"({checked_ms / bare_ms:.3f}x)")

if __name__ == "__main__":
    main()
