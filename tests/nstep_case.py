"""The fixed N-step training case the official-training fixtures were computed
on (tests/fixtures/PROVENANCE.md, "Twenty steps"), and the summary of a
network's tensors both sides store, rebuilt here without storing either.

Both the official runs and tests/test_official_training.py import this file
(numpy only: the official environment has no OpenCV, so it receives the
decoded pixels; the fixture keeps a checksum of them). The case: four photos
of the WIDER val subset (416x416), every face at least 10 px, in two fixed
batches of two that alternate: [0, 1], [2, 3], [0, 1], ... (no shuffling, no
augmentation). Faces of 16 px and more carry landmarks at fixed fractions of
their box (loss_case.LANDMARK_LAYOUT); smaller ones have none (-1), so both
kinds of face are trained.

The schedule is the recipe's with its milestones moved into the 20 steps: an
"epoch" is the two batches, and the LR steps x0.1 at epochs 6 and 8 (steps 12
and 16). Warmup recipes (SCRFD, DamoFD, YuNet) warm up over 6 iterations from
0.001 x, so the comparison crosses the end of warmup and both decays.
"""
import numpy as np

from loss_case import LANDMARK_LAYOUT, hashed_uniform

PHOTOS = (
    "2--Demonstration/2_Demonstration_Political_Rally_2_187.jpg",  # 7 faces, 12-154 px
    "2--Demonstration/2_Demonstration_Protesters_2_796.jpg",       # 11 faces, 11-62 px
    "0--Parade/0_Parade_Parade_0_545.jpg",                         # 2 faces, 107-124 px
    "7--Cheering/7_Cheering_Cheering_7_195.jpg",                   # 9 faces, 15-20 px
)
BATCHES = ((0, 1), (2, 3))
STEPS = 20
ITERS_PER_EPOCH = len(BATCHES)
MILESTONES = (6, 8)        # epochs
WARMUP_ITERS = 6
WARMUP_RATIO = 0.001
LANDMARK_MIN_SIZE = 16.0   # px: smaller faces are written without landmarks
PERTURBATION = 1e-6        # noise-floor runs: every float tensor x (1 + 1e-6 N(0, 1)),
PERTURBATION_SEEDS = (0, 1)  # one run per torch.Generator seed
SAMPLES_PER_TENSOR = 8


def parse_labels(label_file):
    """{path: boxes [k,4] float32 xyxy} of a labelv2 file (boxes only)."""
    faces, current = {}, None
    with open(label_file) as f:
        for line in f:
            fields = line.split()
            if not fields:
                continue
            if fields[0] == "#":
                current = fields[1]
                faces[current] = []
            else:
                faces[current].append([float(v) for v in fields[:4]])
    return {k: np.asarray(v, np.float32).reshape(-1, 4) for k, v in faces.items()}


def annotations(label_file):
    """Per photo: (boxes [k,4] xyxy px, landmarks [k,5,2] px with -1 for
    faces without, valid [k] bool), all float32 as the datasets give them."""
    labels = parse_labels(label_file)
    out = []
    for path in PHOTOS:
        boxes = labels[path]
        size = boxes[:, 2:] - boxes[:, :2]
        valid = size.min(axis=1) >= LANDMARK_MIN_SIZE
        landmarks = boxes[:, None, :2] + LANDMARK_LAYOUT[None] * size[:, None]
        landmarks[~valid] = -1.0
        out.append((boxes, landmarks.astype(np.float32), valid))
    return out


def batch_of_step(step):
    return BATCHES[step % len(BATCHES)]


def sample_indices(size):
    """Fixed, evenly spread element indices of a flattened tensor of ``size``."""
    return np.unique(np.linspace(0, size - 1, min(size, SAMPLES_PER_TENSOR)).round().astype(np.int64))


def summary(tensors, names, initial=None):
    """(samples, update norms) of ``tensors`` ({name: array}) in ``names``
    order: the sampled elements concatenated (float32, as the networks hold
    them) and, given the ``initial`` tensors, ||tensor - initial||_2 per
    tensor in float64."""
    samples, norms = [], []
    for name in names:
        value = np.asarray(tensors[name], np.float32).reshape(-1)
        samples.append(value[sample_indices(value.size)])
        if initial is not None:
            delta = value.astype(np.float64) - np.asarray(initial[name], np.float64).reshape(-1)
            norms.append(np.sqrt(np.sum(delta * delta)))
    return np.concatenate(samples), np.asarray(norms, np.float64)


def sample_offsets(sizes):
    """Start of each tensor's samples in the concatenation, plus the end."""
    return np.concatenate([[0], np.cumsum([len(sample_indices(s)) for s in sizes])]).astype(np.int64)


KINDS = ("param", "bn_mean", "bn_var")


def differences(reference, other):
    """How far run ``other`` is from run ``reference``, per step. Runs are
    dicts with the fixture's keys (``kinds``, ``offsets``, ``samples`` [S+1, .],
    ``update_norm`` [S, T], ``lr`` [S], ``term_<name>`` [S]). Returns
    {metric: [steps]}:
      ``term_<name>``, ``lr``: relative difference;
      ``<kind>_value``: per tensor, the largest difference of a sampled element
        over the largest |element| the reference run's samples ever hold (a BN
        mean may start at 0); the largest over the kind (row 0: the initial weights);
      ``<kind>_update``: per tensor, the difference of the update norms
        ||w_t - w_0|| relative to the reference's (at least 1e-3 of the kind's
        largest at that step); the largest over the kind.
    """
    out = {}
    for key in reference:
        if key.startswith("term_") or key == "lr":
            ref, oth = np.asarray(reference[key], np.float64), np.asarray(other[key], np.float64)
            out[key] = np.abs(oth - ref) / np.maximum(np.abs(ref), 1e-30)
    kinds, offsets = np.asarray(reference["kinds"]), np.asarray(reference["offsets"])
    ref_samples = np.asarray(reference["samples"], np.float64)
    oth_samples = np.asarray(other["samples"], np.float64)
    ref_norm, oth_norm = np.asarray(reference["update_norm"]), np.asarray(other["update_norm"])
    for kind in KINDS:
        value, update = [], []
        # an update under 1e-3 of the kind's largest is rounding (e.g. the bias of a conv
        # before a BatchNorm, whose gradient is 0): compare it on that scale
        floor = np.maximum(1e-3 * ref_norm[:, kinds == kind].max(axis=1), 1e-30)
        for t in np.flatnonzero(kinds == kind):
            cols = slice(offsets[t], offsets[t + 1])
            scale = max(np.abs(ref_samples[:, cols]).max(), 1e-30)
            value.append(np.abs(oth_samples[:, cols] - ref_samples[:, cols]).max(axis=1) / scale)
            update.append(np.abs(oth_norm[:, t] - ref_norm[:, t]) / np.maximum(ref_norm[:, t], floor))
        out[f"{kind}_value"] = np.max(value, axis=0)
        out[f"{kind}_update"] = np.max(update, axis=0)
    return out


def hashed_initial_weights(shapes):
    """{name: float32 array} for a network without released weights (DamoFD),
    the same bits on both sides, following the official init's rules with
    hashed instead of normal draws (``hashed_uniform`` keyed by the CRC-32 of
    the tensor's official name): running means 0 and variances 1; 1-D
    ``weight``/``scale`` (norm and Scale layers) 1 and ``bias`` 0; head convs
    (``bbox_head.``) of standard deviation 0.01 and the class convs' bias
    -4.595 (SCRFDHead.init_weights); every other tensor of unit gain, uniform
    in +-sqrt(3 / fan_in)."""
    import zlib
    out = {}
    for name, shape in shapes.items():
        shape = tuple(int(s) for s in shape)
        if name.endswith("running_var") or (len(shape) <= 1 and name.endswith(("weight", "scale"))):
            value = np.full(shape, 1.0, np.float32)
        elif len(shape) <= 1 and ".stride_cls." in name and name.endswith("bias"):
            value = np.full(shape, -4.595, np.float32)
        elif name.endswith("running_mean") or (len(shape) <= 1 and name.endswith("bias")):
            value = np.zeros(shape, np.float32)
        else:
            std = 0.01 if name.startswith("bbox_head.") else np.sqrt(1.0 / max(1, int(np.prod(shape[1:]))))
            uniform = hashed_uniform(int(np.prod(shape)), zlib.crc32(name.encode()))
            value = ((2 * uniform - 1) * std * np.sqrt(3.0)).astype(np.float32).reshape(shape)
        out[name] = value
    return out
