"""FaceDetector: the high-level inference API.

    from ppfacedet import FaceDetector
    det = FaceDetector("configs/retinaface_mnet025.yml", weights="retinaface_mnet025.pdparams")
    faces = det(image_bgr)            # {'boxes' [k,4], 'scores' [k], 'landmarks' [k,5,2] | None}
    batch = det([img1, img2])         # a list in, a list out
    faces = det("photo.jpg")          # paths are read (a damaged file is a DataError naming it)
    det = FaceDetector.from_pretrained("scrfd_500m_kps")  # a released model by name (tools/zoo.py list)

Boxes and landmarks are in the original image's pixels. Without
``target_size`` the model's official test protocol (its ``input`` section)
applies; with it, the image is letterboxed into a square of that size.
"""
import os

import numpy as np
import paddle

from .core.config import load_config, read_section
from .data.image_io import read_image
from .data.preprocess import InputPolicy
from .engine.checkpoint import load_weights
from .modeling.detector import build_model

TEST_DEFAULTS = {"score_threshold": 0.02, "nms_threshold": 0.4, "pre_nms_top_k": 5000, "max_per_image": 750,
                 "nms_box_offset": 0.0}


class FaceDetector:
    def __init__(self, config, weights=None, target_size=None, overrides=(), **test_settings):
        cfg = load_config(config, overrides) if isinstance(config, str) else config
        model = build_model(cfg)
        weights = weights or cfg.get("weights")
        if weights:
            load_weights(model, weights)
        self._setup(model, cfg, target_size, test_settings)

    @classmethod
    def from_pretrained(cls, name, target_size=None, overrides=(), **test_settings):
        """A released model by name (``tools/zoo.py list``): its config, and its official weights
        fetched (or found in ``PPFACEDET_ZOO_DIR``) and converted once."""
        from .zoo import config_path, converted_weights
        cfg = load_config(config_path(name), overrides)
        return cls(cfg, weights=cfg.get("weights") or converted_weights(name), target_size=target_size,
                   **test_settings)

    @classmethod
    def from_model(cls, model, cfg, target_size=None, **test_settings):
        """Wrap an already built (e.g. training) model without copying it."""
        det = cls.__new__(cls)
        det._setup(model, cfg, target_size, test_settings)
        return det

    def _setup(self, model, cfg, target_size, test_settings):
        self.model = model
        self.cfg = cfg
        self.policy = InputPolicy.from_config(cfg, target_size)
        self.test_cfg = {**read_section(cfg, "test", TEST_DEFAULTS), **test_settings}

    def __call__(self, images, batch_size=8):
        single = isinstance(images, (np.ndarray, str, os.PathLike))
        images = [read_image(os.fspath(i)) if isinstance(i, (str, os.PathLike)) else i
                  for i in ([images] if single else images)]
        results = []
        for start in range(0, len(images), batch_size):
            results.extend(self._detect_batch(images[start:start + batch_size]))
        return results[0] if single else results

    def raw_outputs(self, image):
        """The model's raw per-stride tensors for one BGR image (for parity checks)."""
        tensor, _ = self.policy(image)
        with paddle.no_grad():
            self.model.eval()
            return self.model(paddle.to_tensor(tensor[None]))

    def _detect_batch(self, images):
        """Images whose network inputs share a shape run as one batch; others
        run apart, because padding an input to a companion's size would change
        its detections near the border (and add anchors over the padding)."""
        for image in images:
            if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3):
                raise ValueError(f"expected a BGR image [H,W,3], got {getattr(image, 'shape', type(image))}")
        prepared = [self.policy(image) for image in images]
        groups = {}
        for index, (tensor, _) in enumerate(prepared):
            groups.setdefault(tensor.shape, []).append(index)
        results = [None] * len(images)
        was_training = self.model.training
        self.model.eval()
        with paddle.no_grad():
            for indices in groups.values():
                batch = np.stack([prepared[i][0] for i in indices])
                raw = self.model(paddle.to_tensor(batch))
                metas = [prepared[i][1] for i in indices]
                for i, det in zip(indices, self.model.predict(raw, metas, self.test_cfg)):
                    results[i] = det
        if was_training:
            self.model.train()
        return results


def detections_to_json(det, threshold=0.0):
    """The JSON form written by tools/infer.py and deploy/python/infer.py."""
    faces = []
    for i in np.nonzero(det["scores"] >= threshold)[0]:
        faces.append({
            "box": [round(float(v), 2) for v in det["boxes"][i]],
            "score": round(float(det["scores"][i]), 5),
            "landmarks": None if det["landmarks"] is None
            else [[round(float(x), 2), round(float(y), 2)] for x, y in det["landmarks"][i]],
        })
    return {"faces": faces}


def detections_to_wider(det):
    """[n,5] (x, y, w, h, score) rows as the WIDER evaluation expects."""
    boxes = det["boxes"]
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    return np.concatenate([xywh, det["scores"][:, None]], axis=1).astype(np.float64)
