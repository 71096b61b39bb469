"""The fixed training cases the official-loss fixtures were computed on
(tests/fixtures/PROVENANCE.md), rebuilt here without storing them.

"main": three 416x448 (h x w) images: the first with eight faces from 4 to
180 px, three of them without landmarks; the second with a 400 px face, a
6 px face without landmarks and a 20x24 face; the third without faces.
The other cases are one 64x64 image each, built to reach a place where our
loss deviates from the official one on purpose (README, "Training"). Raw head outputs
come from an integer hash of (kind, element index), so they are the same bits
on every machine and numpy version (no RNG stream involved), and they carry
24-bit fractions, so no two anchors tie on a score.
"""
import numpy as np

# Landmark layout inside a face box: eyes, nose, mouth corners (fractions of w, h).
LANDMARK_LAYOUT = np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]], np.float32)

# name -> (height, width, per image: (face boxes xyxy, has landmarks))
CASES = {
    "main": (416, 448, [
        ([[10, 12, 14, 16], [30, 20, 36, 27], [50, 40, 60, 52], [80, 30, 96, 50],
          [120, 60, 150, 96], [200, 40, 248, 100], [300, 150, 380, 250], [20, 200, 160, 380]],
         [False, True, True, False, True, True, False, True]),
        ([[24, 8, 424, 408], [430, 400, 436, 406], [5, 380, 25, 404]], [True, False, True]),
        ([], []),
    ]),
    # RetinaFace: the 4 px face matches no prior (best IoU 0.06 < 0.2), but its
    # best prior is the 20 px face's best prior too.
    "unmatchable_face": (64, 64, [([[40, 40, 60, 60], [50, 50, 54, 54]], [True, True])]),
    # SCRFD: no anchor centre lies inside the 4 px face, so no positive at all.
    "no_positive": (64, 64, [([[10, 12, 14, 16]], [True])]),
    # YuNet: positives, none with landmarks.
    "no_landmarks": (64, 64, [([[20, 20, 44, 44]], [False])]),
}


def faces(case="main"):
    """Per image: boxes [k,4] xyxy, landmarks [k,5,2] (-1 where the face has
    none, as the datasets write them), valid [k] bool."""
    out = []
    for boxes, valid in CASES[case][2]:
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        valid = np.asarray(valid, bool)
        size = boxes[:, 2:] - boxes[:, :2]
        landmarks = boxes[:, None, :2] + LANDMARK_LAYOUT[None] * size[:, None]
        landmarks[~valid] = -1.0
        out.append((boxes, landmarks.astype(np.float32), valid))
    return out


def hashed_uniform(count, key):
    """``count`` values in [0, 1) with 24-bit resolution from a splitmix64 hash
    of (key, index): exact in float32 and identical everywhere."""
    with np.errstate(over="ignore"):
        z = np.arange(count, dtype=np.uint64) + np.uint64(key) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.float64) / float(1 << 24)


def raw_output(shape, key, low, high):
    """A fixed float32 array of ``shape`` with values in [low, high)."""
    values = low + (high - low) * hashed_uniform(int(np.prod(shape)), key)
    return values.astype(np.float32).reshape(shape)


# Per family: raw kind -> (channels, low, high), in the head's own layout
# [N, H*W*A, C] (rows y, x, anchor); the hash key is the kind's position.
RAW_SPECS = {
    "retinaface": {"cls": (2, -3.0, 3.0), "box": (4, -1.0, 1.0), "kps": (10, -2.0, 2.0)},
    "scrfd": {"cls": (1, -6.0, 1.0), "box": (4, 0.2, 3.0), "kps": (10, -3.0, 3.0)},
    "yunet": {"cls": (1, -6.0, 2.0), "obj": (1, -6.0, 2.0), "box": (4, -0.5, 3.0), "kps": (10, -3.0, 3.0)},
}


def raw_outputs(family, strides, rows_per_stride, seed, num_images):
    """{'<kind>_<stride>': float32 [num_images, rows, C]} for one family.
    ``seed`` separates families that share a spec (SCRFD and DamoFD)."""
    out = {}
    for k, (kind, (channels, low, high)) in enumerate(RAW_SPECS[family].items()):
        for s, (stride, rows) in enumerate(zip(strides, rows_per_stride)):
            key = seed * 1000 + k * 10 + s
            out[f"{kind}_{stride}"] = raw_output((num_images, rows, channels), key, low, high)
    return out
