"""Training datasets (annotated images + transforms) and evaluation sets
(images + WIDER-protocol ground truth)."""
import os

import numpy as np
import paddle

from ..core.errors import DataError
from ..core.logger import get_logger
from ..core.registry import DATASETS
from .image_io import read_image
from .sources.labelv2 import parse_labelv2
from .sources.retinaface_label import parse_retinaface_label
from .transforms.compose import Compose

LOG = get_logger()


def _check_label_file(label_file):
    if not os.path.isfile(label_file):
        raise DataError(f"{label_file}: label file not found")


class FaceDataset(paddle.io.Dataset):
    """Annotated images through a transform pipeline. Subclasses name the
    label format's ``parser``. A sample that cannot be read returns None; the
    collate function drops and counts it."""

    parser = None

    def __init__(self, label_file, image_root, transforms=(), seed=0):
        _check_label_file(label_file)
        records, self.report = type(self).parser(label_file, image_root)
        _summarise(label_file, records, self.report)
        if not records:
            raise DataError(f"{label_file}: no usable images (empty or entirely malformed label file)")
        self.records = records
        self.transforms = Compose(transforms, "train_dataset.transforms")
        self.seed = int(seed)
        self.epoch = 0
        self._warned = set()

    def __len__(self):
        return len(self.records)

    def __getitem__(self, index):
        record = self.records[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        try:
            sample = {"image": read_image(record.image_path), "boxes": record.boxes.copy(),
                      "landmarks": record.landmarks.copy(), "landmark_valid": record.landmark_valid.copy()}
            return self.transforms(sample, rng)
        except DataError as e:
            if record.image_path not in self._warned:
                self._warned.add(record.image_path)
                LOG.warning("skipping sample (%s): %s", record.source, e)
            return None


def _summarise(label_file, records, report):
    if report.bad_lines or report.dropped_boxes:
        LOG.warning("%s: %d images kept, %d malformed lines skipped, %d degenerate boxes dropped",
                    label_file, len(records), len(report.bad_lines), report.dropped_boxes)


@DATASETS.register
class LabelV2Dataset(FaceDataset):
    """SCRFD labelv2 annotations (``# path w h`` + ``x1 y1 x2 y2 [x y flag]*5``)."""
    parser = staticmethod(parse_labelv2)


@DATASETS.register
class RetinaFaceLabelDataset(FaceDataset):
    """Pytorch_Retinaface label.txt annotations (``# path`` + ``x y w h`` + 5 landmarks)."""
    parser = staticmethod(parse_retinaface_label)


@DATASETS.register
class WiderFaceVal:
    """Images named by the official WIDER ground truth (.mat files in ``gt_dir``)
    under ``image_root/<event>/<name>.jpg``."""

    def __init__(self, image_root, gt_dir):
        from widerface_evaluate import GroundTruth
        self.image_root = image_root
        self.gt = GroundTruth.from_mat_dir(gt_dir)
        self.items = [(name, os.path.join(image_root, name + ".jpg")) for name in self.gt.names]
        present = [item for item in self.items if os.path.isfile(item[1])]
        if not present:
            raise DataError(f"{image_root}: none of the {len(self.items)} ground-truth images is there")
        if len(present) < len(self.items):
            LOG.info("%s: %d of %d ground-truth images present; absent ones score as missed",
                     image_root, len(present), len(self.items))
        self.items = present

    def images(self):
        return self.items

    def ground_truth(self):
        return self.gt


@DATASETS.register
class LabelV2Val:
    """Evaluation on a labelv2 file. Difficulty follows face size, WIDER-style:
    a face belongs to a setting when its shorter side is at least that
    setting's entry in ``min_sizes`` (hard keeps everything by default)."""

    def __init__(self, label_file, image_root, min_sizes=None):
        from widerface_evaluate import GroundTruth
        _check_label_file(label_file)
        records, report = parse_labelv2(label_file, image_root)
        _summarise(label_file, records, report)
        if not records:
            raise DataError(f"{label_file}: no usable images")
        min_sizes = {"easy": 32, "medium": 16, "hard": 0, **(min_sizes or {})}
        names, boxes, keep = [], [], {k: [] for k in ("easy", "medium", "hard")}
        for r in records:
            xywh = np.concatenate([r.boxes[:, :2], r.boxes[:, 2:] - r.boxes[:, :2]], axis=1)
            names.append(r.name)
            boxes.append(xywh)
            short = xywh[:, 2:].min(axis=1) if len(xywh) else np.zeros(0)
            for setting in keep:
                keep[setting].append(np.nonzero(short >= min_sizes[setting])[0])
        self.items = [(r.name, r.image_path) for r in records]
        self.gt = GroundTruth.from_lists(names, boxes, keep)

    def images(self):
        return self.items

    def ground_truth(self):
        return self.gt
