"""One interface over every detector a comparison runs.

A runner turns a BGR image into detections in original-image pixels
(``{'boxes' [k,4] xyxy, 'scores' [k], 'landmarks' [k,5,2] | None}``) and
reports its size and speed (``ppfacedet.compare.metrics``). Two kinds:

* ``PaddleRunner``: a ppfacedet config plus weights (``.pdparams``, or the
  family's official ``.pth``/``.onnx`` converted on load), run by
  ``FaceDetector`` with the config's normalisation;
* ``OnnxRunner``: an official ONNX export run by onnxruntime with its family's
  official preprocessing and decode, the family recognised from the outputs:

  ======================  ==========================================  =======================
  family                  outputs                                     input
  ======================  ==========================================  =======================
  YuNet                   ``cls_S obj_S bbox_S kps_S`` (S = 8,16,32)  raw BGR pixels
  SCRFD                   ``score_S bbox_S [kps_S]``, or 6 / 9        (RGB - 127.5) / 128
                          unnamed outputs in that order
  RetinaFace (mnet0.25)   ``loc conf iou|landms`` (4 / 2 / 10 wide)   BGR - (104, 117, 123)
  ======================  ==========================================  =======================

Every runner sees the same image geometry (``Protocol``) and the same
selection: score > ``score_threshold``, greedy NMS at ``nms_threshold`` (IoU
without the +1 pixel convention), no top-k cap, all by the library's
``select_detections``.
"""
import os

import numpy as np
import paddle

from ..core.errors import PPFaceDetError
from ..data.preprocess import InputPolicy
from ..postprocess.select import select_detections
from ..postprocess.priors import feature_sizes, grid_points, retina_priors
from . import metrics

NO_CAP = 10 ** 9  # pre-NMS top-k and per-image limits: off, as in YuNet's test_cfg


class Protocol:
    """The test-time geometry shared by all runners: each image at its own size
    padded bottom/right to a multiple of ``pad_multiple`` (default), or
    letterboxed into ``eval_size`` x ``eval_size``."""

    def __init__(self, eval_size=None, pad_multiple=32):
        self.eval_size = eval_size
        self.pad_multiple = pad_multiple
        if eval_size:
            self.policy = InputPolicy(policy="letterbox", target_size=eval_size)
        else:
            self.policy = InputPolicy(policy="original", pad_multiple=pad_multiple)

    def input_overrides(self):
        """The same geometry as config overrides for a ppfacedet model."""
        if self.eval_size:
            return ["input.policy=letterbox", f"input.target_size={self.eval_size}"]
        return ["input.policy=original", f"input.pad_multiple={self.pad_multiple}"]

    def describe(self):
        if self.eval_size:
            return f"letterboxed into {self.eval_size}x{self.eval_size}"
        return f"own size, padded bottom/right to a multiple of {self.pad_multiple}"

    def __call__(self, image):
        """BGR uint8 -> (canvas BGR uint8, (sx, sy))."""
        return self.policy.resize(image)


class Runner:
    """What the comparison needs from a model."""
    label = ""  # what runs it, for the table

    def detect(self, image):
        raise NotImplementedError

    def size(self, input_size):
        """{'params', 'train_params', 'macs'} at an input_size x input_size input."""
        raise NotImplementedError

    def fps(self, input_size, repeats, warmup):
        raise NotImplementedError


# ------------------------------------------------------------------ ppfacedet
class PaddleRunner(Runner):
    label = "ppfacedet (paddle)"

    def __init__(self, config, weights, protocol, score_threshold, nms_threshold):
        from ..api import FaceDetector
        from ..core.config import load_config
        cfg = load_config(config, protocol.input_overrides())
        # The family's own NMS convention (SCRFD's "+1 pixel" IoU) is switched
        # off so that every model goes through the same selection.
        test = {"score_threshold": score_threshold, "nms_threshold": nms_threshold,
                "pre_nms_top_k": NO_CAP, "max_per_image": NO_CAP, "nms_box_offset": 0.0}
        model = _load_model(cfg, weights)
        self.detector = FaceDetector.from_model(model, cfg, **test)
        self.model = model

    def detect(self, image):
        # One image per call: batching would pad images to a common size,
        # which changes the input some models see.
        return self.detector(image)

    def size(self, input_size):
        return {**metrics.paddle_params(self.model), "macs": metrics.paddle_macs(self.model, input_size)}

    def fps(self, input_size, repeats, warmup):
        import paddle
        x = paddle.zeros([1, 3, input_size, input_size], dtype="float32")
        self.model.eval()

        def run_once():
            with paddle.no_grad():
                self.model(x)

        return metrics.measure_fps(run_once, repeats, warmup)


def _load_model(cfg, weights):
    """A model with ``weights``: ppfacedet ``.pdparams``/``.pdckpt`` load
    directly, anything else goes through the config's official-weight converter."""
    from ..engine.checkpoint import load_weights
    from ..modeling.detector import build_model
    if not os.path.isfile(weights):
        raise PPFaceDetError(f"weights file not found: {weights}")
    if weights.endswith((".pdparams", ".pdckpt")):
        model = build_model(cfg)
        load_weights(model, weights)
        return model
    from ..convert.apply import convert_official_weights
    model, _ = convert_official_weights(cfg, weights)
    return model


# ------------------------------------------------------------------ ONNX
class OnnxRunner(Runner):

    def __init__(self, path, protocol, score_threshold, nms_threshold, threads=1):
        import onnxruntime as ort
        if not os.path.isfile(path):
            raise PPFaceDetError(f"ONNX file not found: {path}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # stale declared output shapes of fixed-size exports warn per run
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.path = str(path)
        self.input_name = self.session.get_inputs()[0].name
        self.decoder = detect_family(self.session, path)
        self.family = self.decoder.family
        self.label = f"onnxruntime ({self.family})"
        self.protocol = protocol
        self.score_threshold, self.nms_threshold = score_threshold, nms_threshold

    def outputs(self, canvas):
        """{name: array} of the network on a BGR canvas."""
        x = self.decoder.preprocess(canvas)[None]
        return dict(zip(self.decoder.output_names, self.session.run(self.decoder.output_names,
                                                                    {self.input_name: x})))

    def detect(self, image):
        canvas, scale = self.protocol(image)
        h, w = canvas.shape[:2]
        boxes, scores, landmarks = self.decoder.decode(self.outputs(canvas), h, w)
        n = len(scores)
        return select_detections(
            batch_of_one(boxes, [n, 4]), batch_of_one(scores, [n]),
            None if landmarks is None else batch_of_one(landmarks, [n, 10]), [{"scale": scale}],
            self.score_threshold, self.nms_threshold, pre_nms_top_k=NO_CAP, max_per_image=NO_CAP)[0]

    def size(self, input_size):
        return {**metrics.onnx_params(self.path), "macs": metrics.onnx_macs(self.path, input_size)}

    def fps(self, input_size, repeats, warmup):
        x = np.zeros((1, 3, input_size, input_size), np.float32)
        feed = {self.input_name: x}

        def run_once():
            self.session.run(None, feed)

        return metrics.measure_fps(run_once, repeats, warmup)


def detect_family(session, path=""):
    """The decoder for an ONNX session, recognised from its output names and widths."""
    outputs = session.get_outputs()
    names = [o.name for o in outputs]
    widths = [o.shape[-1] if o.shape and isinstance(o.shape[-1], int) else None for o in outputs]
    strides = (8, 16, 32)
    if all(f"{k}_{s}" in names for k in ("cls", "obj", "bbox", "kps") for s in strides):
        return YuNetDecoder()
    if all(f"{k}_{s}" in names for k in ("score", "bbox") for s in strides):
        kps = [f"kps_{s}" for s in strides] if all(f"kps_{s}" in names for s in strides) else None
        return SCRFDDecoder([f"score_{s}" for s in strides], [f"bbox_{s}" for s in strides], kps)
    if len(names) in (6, 9) and widths == [1, 1, 1, 4, 4, 4, 10, 10, 10][:len(names)]:
        # insightface's own exports leave the names to the tracer; their
        # order (scores, boxes, keypoints per stride) is what scrfd.py relies on.
        return SCRFDDecoder(names[:3], names[3:6], names[6:9] if len(names) == 9 else None)
    landmark_name = next((n for n in ("landms", "iou") if n in names), None)
    if {"loc", "conf"} <= set(names) and landmark_name and len(names) == 3:
        by_name = dict(zip(names, widths))
        if (by_name["loc"], by_name["conf"], by_name[landmark_name]) == (4, 2, 10):
            return RetinaFaceDecoder(["loc", "conf", landmark_name])
    layout = ", ".join(f"{n}{list(o.shape)}" for n, o in zip(names, outputs))
    raise PPFaceDetError(
        f"{path}: unknown ONNX output layout ({layout}). Known: YuNet (cls_/obj_/bbox_/kps_ 8,16,32), "
        f"SCRFD (score_/bbox_[/kps_] 8,16,32, or 6/9 unnamed outputs of width 1,4[,10]), "
        f"RetinaFace-mnet0.25 (loc/conf/iou or landms, widths 4/2/10)")


class YuNetDecoder:
    """libfacedetection.train's protocol: raw BGR, point (x*s, y*s), centre =
    point + d*s, size = exp(d)*s, keypoint = point + d*s, score = cls*obj."""
    family = "yunet"
    strides = (8, 16, 32)

    def __init__(self):
        self.output_names = [f"{k}_{s}" for k in ("cls", "obj", "bbox", "kps") for s in self.strides]

    @staticmethod
    def preprocess(canvas):
        return canvas.transpose(2, 0, 1).astype(np.float32)

    def decode(self, out, height, width):
        boxes, scores, landmarks = [], [], []
        for s in self.strides:
            points = grid_points(height // s, width // s, s)
            d = out[f"bbox_{s}"].reshape(-1, 4)
            centre, half = points + d[:, :2] * s, np.exp(d[:, 2:]) * s / 2
            boxes.append(np.concatenate([centre - half, centre + half], 1))
            scores.append(out[f"cls_{s}"].reshape(-1) * out[f"obj_{s}"].reshape(-1))
            landmarks.append(out[f"kps_{s}"].reshape(-1, 5, 2) * s + points[:, None])
        return np.concatenate(boxes), np.concatenate(scores), np.concatenate(landmarks)


class SCRFDDecoder:
    """insightface's protocol: (RGB - 127.5) / 128; two anchors per cell at
    (x*s, y*s) (offset 0); distances and keypoint offsets times the stride."""
    family = "scrfd"
    strides = (8, 16, 32)
    num_anchors = 2

    def __init__(self, score_names, box_names, kps_names):
        self.score_names, self.box_names, self.kps_names = score_names, box_names, kps_names
        self.output_names = score_names + box_names + (kps_names or [])

    @staticmethod
    def preprocess(canvas):
        return (canvas[:, :, ::-1].transpose(2, 0, 1).astype(np.float32) - 127.5) / 128.0

    def decode(self, out, height, width):
        boxes, scores, landmarks = [], [], []
        for i, s in enumerate(self.strides):
            points = grid_points(height // s, width // s, s, num_anchors=self.num_anchors)
            d = out[self.box_names[i]].reshape(-1, 4) * s
            boxes.append(np.concatenate([points - d[:, :2], points + d[:, 2:]], 1))
            scores.append(out[self.score_names[i]].reshape(-1))
            if self.kps_names:
                landmarks.append(out[self.kps_names[i]].reshape(-1, 5, 2) * s + points[:, None])
        return (np.concatenate(boxes), np.concatenate(scores),
                np.concatenate(landmarks) if self.kps_names else None)


class RetinaFaceDecoder:
    """Pytorch_Retinaface's protocol: BGR - (104, 117, 123); priors of sizes
    16/32, 64/128, 256/512 centred at (x + 0.5) * s; variances 0.1 / 0.2;
    score = softmax face probability (the export already applies softmax)."""
    family = "retinaface"
    strides = (8, 16, 32)
    min_sizes = ((16, 32), (64, 128), (256, 512))
    variances = (0.1, 0.2)
    mean = np.array([104, 117, 123], np.float32).reshape(3, 1, 1)

    def __init__(self, names):
        self.output_names = names

    def preprocess(self, canvas):
        return canvas.transpose(2, 0, 1).astype(np.float32) - self.mean

    def decode(self, out, height, width):
        priors = np.concatenate([retina_priors(h, w, s, m) for (h, w), s, m in
                                 zip(feature_sizes(height, width, self.strides), self.strides, self.min_sizes)])
        loc, conf, lms = (out[n].reshape(len(priors), -1) for n in self.output_names)
        centre = priors[:, :2] + loc[:, :2] * self.variances[0] * priors[:, 2:]
        half = priors[:, 2:] * np.exp(loc[:, 2:] * self.variances[1]) / 2
        landmarks = priors[:, None, :2] + lms.reshape(-1, 5, 2) * self.variances[0] * priors[:, None, 2:]
        return np.concatenate([centre - half, centre + half], 1), conf[:, 1], landmarks


def batch_of_one(array, shape):
    """A numpy decode result as the [1, ...] float32 tensor ``select_detections`` takes."""
    return paddle.to_tensor(np.asarray(array, np.float32).reshape([1, *shape]))


def build_runner(spec, protocol, score_threshold, nms_threshold, threads=1):
    """(name, runner) from a model spec: ``[NAME=]FILE.onnx`` or
    ``[NAME=]CONFIG.yml:WEIGHTS``."""
    name, _, target = spec.partition("=") if "=" in spec else ("", "", spec)
    # CONFIG.yml:WEIGHTS first: the weights may themselves be an official .onnx.
    for suffix in (".yml", ".yaml"):
        config, sep, weights = target.partition(suffix + ":")
        if sep and weights:
            config += suffix
            runner = PaddleRunner(config, weights, protocol, score_threshold, nms_threshold)
            return name or os.path.splitext(os.path.basename(config))[0], runner
    if target.lower().endswith(".onnx"):
        runner = OnnxRunner(target, protocol, score_threshold, nms_threshold, threads)
        return name or f"{os.path.splitext(os.path.basename(target))[0]} (onnx)", runner
    raise PPFaceDetError(f"model spec '{spec}': expected FILE.onnx or CONFIG.yml:WEIGHTS "
                         f"(optionally prefixed by NAME=)")
