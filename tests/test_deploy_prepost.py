"""deploy/python's reused network input never shows pixels of an earlier
image, although the padding is written only when the area an image fills
changes."""
import numpy as np
import pytest
import yaml

from deploy_support import DEPLOY  # noqa: F401  (puts deploy/python on sys.path)

import infer as deploy_infer  # noqa: E402
from preprocess import Preprocess  # noqa: E402

STRIDES = (8, 16, 32)
INPUTS = {
    "letterbox": {"policy": "letterbox", "target_size": 96, "mean": [127.5] * 3, "std": [128.0] * 3,
                  "channel_order": "RGB"},
    "original": {"policy": "original", "pad_multiple": 32, "mean": [104, 117, 123], "std": [1, 1, 1],
                 "channel_order": "BGR"},
}


class RecordingEngine:
    """Keeps a copy of every input it is fed; scores nothing (no detections)."""

    def __init__(self, decoder):
        self.decoder, self.inputs = decoder, []

    def __call__(self, batch, scale_factor=None):
        self.inputs.append(batch.copy())
        outputs = {}
        for stride in STRIDES:
            rows = int(np.prod(self.decoder.grid(batch.shape[2:], stride)))
            outputs[f"score_{stride}"] = np.zeros((len(batch), rows, 1), np.float32)
            outputs[f"bbox_{stride}"] = np.zeros((len(batch), rows, 4), np.float32)
        return outputs


def recording_detector(tmp_path, monkeypatch, input_settings):
    info = {"program": "model.json", "params": "model.pdiparams", "input": input_settings,
            "outputs": [f"{kind}_{s}" for kind in ("score", "bbox") for s in STRIDES],
            "decode": {"kind": "distance", "strides": list(STRIDES), "num_anchors": 1, "has_kps": False},
            "test": {"score_threshold": 0.02, "nms_threshold": 0.4}}
    (tmp_path / "infer_cfg.yml").write_text(yaml.safe_dump(info))
    monkeypatch.setattr(deploy_infer, "create_engine", lambda *args, **kwargs: None)
    detector = deploy_infer.FaceDetector(str(tmp_path))
    detector.engine = RecordingEngine(detector.decoder)
    return detector


@pytest.mark.parametrize("policy", sorted(INPUTS))
def test_reused_input_shows_no_pixels_of_earlier_images(tmp_path, monkeypatch, policy):
    """The detector writes the padding only when the area an image fills
    changes; after images of other sizes and orientations in the same slots,
    every input still equals that image's own fresh preprocessing."""
    detector = recording_detector(tmp_path, monkeypatch, INPUTS[policy])
    rng = np.random.RandomState(0)
    wide, tall, small, squat = (rng.randint(0, 256, (h, w, 3), np.uint8)
                                for h, w in ((72, 96), (96, 72), (40, 50), (64, 90)))
    calls = [[wide], [tall], [small], [wide], [squat], [wide, tall], [tall, wide], [small, wide], [wide]]
    for images in calls:
        detector(images)
    fresh = Preprocess(INPUTS[policy])
    expected = [np.stack([fresh(image)[0] for image in group])
                for images in calls for group in _same_input_shape(images, fresh)]
    assert len(detector.engine.inputs) == len(expected)
    for got, want in zip(detector.engine.inputs, expected):
        np.testing.assert_array_equal(got, want)


def _same_input_shape(images, preprocess):
    groups = {}
    for image in images:
        groups.setdefault(preprocess.layout(image.shape[:2])[0], []).append(image)
    return groups.values()
