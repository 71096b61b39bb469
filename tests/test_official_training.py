"""Twenty training steps of each family against the official training loop.

The fixtures tests/fixtures/official_training_<family>.npz hold what the
official code did on the fixed case of tests/nstep_case.py (four WIDER photos
in two alternating batches, no augmentation, from the official weights (or,
for DamoFD, which has no release at hand, a fixed initialisation), the
official optimizer and LR schedule with its milestones moved into the 20
steps; how: tests/fixtures/PROVENANCE.md): after every step the loss terms,
the LR, and for every parameter and BatchNorm running mean and variance a few
sampled elements and the norm of its update. Here our Trainer runs the same
steps through its own loop (loader, schedule, optimizer) and every step must
stay within a tolerance set by the official code's own noise: the same run
with every weight multiplied by (1 + 1e-6 N(0,1)), whose differences the
fixture also holds."""
from pathlib import Path

import numpy as np
import pytest

import nstep_case
from ppfacedet.convert.apply import convert_official_weights
from ppfacedet.core import load_config
from ppfacedet.core.registry import CONVERTERS
from ppfacedet.engine.callbacks import Callback
from ppfacedet.engine.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
SUBSET = Path("widerface") / "val_subset_resized416"


def retinaface_names(official, model):
    from ppfacedet.convert.retinaface import paddle_name
    return [paddle_name(name) for name in official]


def yunet_names(official, model):
    from ppfacedet.convert.yunet import official_name
    ours = {official_name(name): name for name in model.state_dict()}
    return [ours[name] for name in official]


def scrfd_names(official, model):
    from ppfacedet.convert.scrfd import SCRFDConverter
    return [SCRFDConverter.official_to_ours(name) for name in official]


# family -> (config, official weights under shared data, {official term: our term},
#            -o overrides beyond the case's, official tensor names -> ours)
FAMILIES = {
    "retinaface": ("retinaface_mnet025", "weights/retinaface/mobilenet0.25_Final.pth",
                   {"loss_l": "loss_box", "loss_c": "loss_cls", "loss_landm": "loss_kps", "loss": "loss"}, [],
                   retinaface_names),
    "yunet": ("yunet_n", "weights/yunet/yunet_n.pth",
              {k: k for k in ("loss_cls", "loss_bbox", "loss_obj", "loss_kps", "loss")},
              [f"lr_schedule.warmup_iters={nstep_case.WARMUP_ITERS}"], yunet_names),
    # The release is BN-folded: both sides start from its conversion (identity BN statistics).
    "scrfd": ("scrfd_500m_kps", "weights/scrfd/scrfd_500m_bnkps.onnx",
              {"loss_cls": "loss_cls", "loss_bbox": "loss_box", "loss_kps": "loss_kps", "loss": "loss"},
              [f"lr_schedule.warmup_iters={nstep_case.WARMUP_ITERS}"], scrfd_names),
    # No DamoFD release is at hand: both sides start from nstep_case.hashed_initial_weights (None).
    "damofd": ("damofd_0.5g_kps", None,
               {"loss_cls": "loss_cls", "loss_bbox": "loss_box", "loss_kps": "loss_kps", "loss": "loss"},
               [f"lr_schedule.warmup_iters={nstep_case.WARMUP_ITERS}"], scrfd_names),
}

# A difference passes when it is within NOISE_FACTOR times the official code's
# own difference under the 1e-6 weight perturbation at that step, or under the
# metric's absolute floor (float32 rounding where the noise run is exactly 0,
# e.g. the LR). Measured noise floors and our differences: PROVENANCE.md.
NOISE_FACTOR = 10.0
FLOOR = {"lr": 1e-6, "term": 1e-5, "value": 1e-6, "update": 1e-4}


def write_labels(shared_data, path):
    """The case's faces as a labelv2 file (boxes, and landmarks with flag 1
    or -1 x 15), floats written so they read back to the same float32."""
    annotations = nstep_case.annotations(shared_data / SUBSET / "labelv2_subset_scaled416.txt")
    lines = []
    for photo, (boxes, landmarks, valid) in zip(nstep_case.PHOTOS, annotations):
        lines.append(f"# {photo} 416 416")
        for box, points, has in zip(boxes, landmarks, valid):
            kps = [f"{x:.9g} {y:.9g} 1.0" for x, y in points] if has else ["-1 -1 -1"] * 5
            lines.append(" ".join([f"{v:.9g}" for v in box] + kps))
    path.write_text("\n".join(lines) + "\n")


def case_overrides(label_file, image_root, save_dir):
    return [
        f"train_dataset={{type: LabelV2Dataset, label_file: '{label_file}', image_root: '{image_root}', "
        "transforms: []}",
        f"train_loader={{batch_size: {len(nstep_case.BATCHES[0])}, num_workers: 0, shuffle: false, "
        "drop_last: true}",
        f"epochs={nstep_case.STEPS // nstep_case.ITERS_PER_EPOCH}",
        f"lr_schedule.milestones={list(nstep_case.MILESTONES)}",
        "auto_scale_lr.enable=false", f"save_dir='{save_dir}'", "snapshot_epoch=1000", "log_iter=1000",
        # the official configs train every BatchNorm, whatever our default for BN-folded weights is
        "model.norm_eval=false",
    ]


class Recording(Callback):
    """The fixture's record of our run: the LR, loss terms and tensor summary
    after every step, tensors taken in the fixture's (official) order."""

    def __init__(self, names, terms):
        self.names, self.terms = names, terms
        self.run = {"lr": [], **{f"term_{k}": [] for k in terms}}

    def _state(self, trainer):
        state = trainer.model.state_dict()
        return {name: state[name].numpy() for name in self.names}

    def on_train_begin(self, trainer, state):
        self.initial = self._state(trainer)
        self.samples, self.norms = [nstep_case.summary(self.initial, self.names)[0]], []

    def on_step_end(self, trainer, state):
        samples, norms = nstep_case.summary(self._state(trainer), self.names, self.initial)
        self.samples.append(samples)
        self.norms.append(norms)
        self.run["lr"].append(state["lr"])
        for official, ours in self.terms.items():
            self.run[f"term_{official}"].append(state["losses"][ours])

    def result(self, fixture):
        return dict(self.run, kinds=fixture["kinds"], offsets=fixture["offsets"],
                    samples=np.stack(self.samples), update_norm=np.stack(self.norms))


def load_fixture(family):
    with np.load(FIXTURES / f"official_training_{family}.npz") as data:
        return {key: data[key] for key in data.files}


def initial_state(cfg, model, shared_data, weights, fixture):
    """The official weights converted, or (``weights`` None) the case's hashed
    initialisation of the fixture's tensors, under the official names, through
    the family's converter."""
    if weights is not None:
        return convert_official_weights(cfg, str(shared_data / weights))[0].state_dict()
    ends = fixture["shape_offsets"]
    shapes = {name: fixture["shapes"][ends[i]:ends[i + 1]] for i, name in enumerate(fixture["names"])}
    converter = CONVERTERS.build({"type": cfg["converter"]}, "converter")
    return converter(model, nstep_case.hashed_initial_weights(shapes))


def run_our_training(family, shared_data, tmp_path):
    config, weights, terms, overrides, names_of = FAMILIES[family]
    fixture = load_fixture(family)
    label_file = tmp_path / "labels.txt"
    write_labels(shared_data, label_file)
    cfg = load_config(ROOT / "configs" / f"{config}.yml",
                      case_overrides(label_file, shared_data / SUBSET / "images", tmp_path) + overrides)
    trainer = Trainer(cfg)
    trainer.model.set_state_dict(initial_state(cfg, trainer.model, shared_data, weights, fixture))
    recording = Recording(names_of(list(fixture["names"]), trainer.model), terms)
    trainer.callbacks.append(recording)
    trainer.train()
    return fixture, recording.result(fixture)


def pixel_checksums(shared_data):
    import zlib

    import cv2
    images = [cv2.imread(str(shared_data / SUBSET / "images" / photo)) for photo in nstep_case.PHOTOS]
    return np.asarray([zlib.crc32(np.ascontiguousarray(im).tobytes()) for im in images], np.int64)


def limit(fixture, metric):
    """Per step: NOISE_FACTOR x the official noise so far (its largest value up
    to that step: a difference grows through the steps, the noise of one
    step can dip), or the metric's floor."""
    floor = FLOOR["term" if metric.startswith("term_") else metric.rsplit("_", 1)[-1]]
    return np.maximum(NOISE_FACTOR * np.maximum.accumulate(fixture[f"noise_{metric}"]), floor)


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_twenty_training_steps_equal_the_official_ones(family, shared_data, tmp_path):
    # The official run read the same pixels (JPEG decoding is the one input not under our control).
    np.testing.assert_array_equal(pixel_checksums(shared_data), load_fixture(family)["pixel_crc32"])
    fixture, ours = run_our_training(family, shared_data, tmp_path)
    differences = nstep_case.differences(fixture, ours)
    failures = []
    for metric, diff in differences.items():
        over = np.flatnonzero(diff > limit(fixture, metric))
        if over.size:
            step = over[0]
            failures.append(f"{metric}: from step {step} on ({over.size} steps), e.g. {diff[step]:.3g} against "
                            f"a limit of {limit(fixture, metric)[step]:.3g} (official noise "
                            f"{fixture['noise_' + metric][step]:.3g})")
    assert not failures, f"{family}: " + "; ".join(failures)
