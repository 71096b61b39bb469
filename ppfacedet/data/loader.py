"""Batching: samples -> padded arrays (what paddle's worker processes can
carry) -> the per-image lists of the batch contract (DESIGN.md)."""
import numpy as np
import paddle

from ..core.config import read_section
from ..core.registry import DATASETS
from . import loader_workers

LOADER_DEFAULTS = {"batch_size": 8, "num_workers": 2, "shuffle": True, "drop_last": True}


class Collate:
    """Normalises and stacks images with the model's input policy; pads the
    per-image annotations to [N, K, ...] with a count per image."""

    def __init__(self, policy):
        self.policy = policy

    def __call__(self, samples):
        kept = [s for s in samples if s is not None]
        skipped = len(samples) - len(kept)
        if not kept:
            return {"image": np.zeros((0, 3, 1, 1), np.float32), "num_skipped": np.array([skipped])}
        k = max(1, max(len(s["boxes"]) for s in kept))
        n = len(kept)
        boxes = np.zeros((n, k, 4), np.float32)
        lms = np.zeros((n, k, 5, 2), np.float32)
        valid = np.zeros((n, k), np.int32)
        for i, s in enumerate(kept):
            c = len(s["boxes"])
            boxes[i, :c], lms[i, :c], valid[i, :c] = s["boxes"], s["landmarks"], s["landmark_valid"]
        return {
            "image": self.policy.stack([self.policy.normalize(s["image"]) for s in kept]),
            "gt_boxes": boxes, "gt_landmarks": lms, "landmark_valid": valid,
            "gt_count": np.array([len(s["boxes"]) for s in kept], np.int64),
            "num_skipped": np.array([skipped], np.int64),
        }


def unpack_batch(loaded):
    """Loader output -> batch contract: image tensor plus per-image numpy lists."""
    skipped = int(np.asarray(loaded["num_skipped"]).sum())
    if loaded["image"].shape[0] == 0:
        return {"image": None, "num_skipped": skipped}
    counts = np.asarray(loaded["gt_count"]).tolist()
    arrays = {key: np.asarray(loaded[key]) for key in ("gt_boxes", "gt_landmarks", "landmark_valid")}
    image = loaded["image"]
    return {
        "image": image if isinstance(image, paddle.Tensor) else paddle.to_tensor(image),
        "gt_boxes": [arrays["gt_boxes"][i, :c] for i, c in enumerate(counts)],
        "gt_landmarks": [arrays["gt_landmarks"][i, :c] for i, c in enumerate(counts)],
        "landmark_valid": [arrays["landmark_valid"][i, :c].astype(bool) for i, c in enumerate(counts)],
        "num_skipped": skipped,
    }


def build_train_loader(cfg, policy):
    """(dataset, sampler, loader) for training; the sampler shards the data
    across processes when launched with paddle.distributed."""
    settings = read_section(cfg, "train_loader", LOADER_DEFAULTS)
    dataset_cfg = dict(cfg["train_dataset"])
    dataset_cfg.setdefault("seed", cfg.get("seed", 0))
    dataset = DATASETS.build(dataset_cfg, "train_dataset")
    if settings["num_workers"] > 0:
        loader_workers.use_fork_server()
    sampler = paddle.io.DistributedBatchSampler(dataset, batch_size=settings["batch_size"],
                                                shuffle=settings["shuffle"], drop_last=settings["drop_last"])
    loader = paddle.io.DataLoader(dataset, batch_sampler=sampler, collate_fn=Collate(policy),
                                  num_workers=settings["num_workers"], use_shared_memory=False,
                                  worker_init_fn=loader_workers.worker_init_fn())
    return dataset, sampler, loader


def build_eval_set(cfg):
    return DATASETS.build(cfg["eval_dataset"], "eval_dataset")
