import numpy as np
import paddle

from ppfacedet import FaceDetector
from ppfacedet.api import detections_to_json, detections_to_wider
from ppfacedet.core import load_config
from tiny import ROOT
from detections import assert_same_faces


def detector(**kwargs):
    paddle.seed(0)
    return FaceDetector(load_config(str(ROOT / "configs/retinaface_mnet025.yml")), score_threshold=0.3, **kwargs)


def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, shape, np.uint8) for shape in [(64, 96, 3), (80, 80, 3), (50, 120, 3)]]


def test_a_batch_of_different_sizes_equals_one_image_at_a_time():
    det = detector()
    batch = det(images())
    assert isinstance(batch, list) and len(batch) == 3
    for image, together in zip(images(), batch):
        alone = det(image)
        assert isinstance(alone, dict)
        assert_same_faces(together, alone, box_tol=1e-3, score_tol=1e-5)


def test_letterbox_maps_detections_back_to_original_pixels():
    det = detector(target_size=128)
    image = images()[2]
    out = det(image)
    assert out["boxes"].shape[1] == 4 and out["landmarks"].shape[1:] == (5, 2)
    raw_input, meta = det.policy(image)
    # SCRFD's rule: 120 -> 128 wide, int(128 * 50 / 120) = 53 tall, one scale (53 / 50) for both axes
    assert raw_input.shape == (3, 128, 128) and meta["scale"] == (53 / 50, 53 / 50)


def test_json_and_wider_forms():
    det = {"boxes": np.array([[10, 20, 30, 60]], np.float32), "scores": np.array([0.9], np.float32),
           "landmarks": np.zeros((1, 5, 2), np.float32)}
    assert detections_to_json(det, 0.5)["faces"][0]["box"] == [10, 20, 30, 60]
    assert detections_to_json(det, 0.95)["faces"] == []
    np.testing.assert_allclose(detections_to_wider(det), [[10, 20, 20, 40, 0.9]], atol=1e-6)
