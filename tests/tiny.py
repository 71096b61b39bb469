"""A tiny synthetic dataset and a config over it (RetinaFace-mnet unless
another base is given), so engine tests train real models in seconds."""
import textwrap
from pathlib import Path

from ppfacedet.data.synthetic import write_split

ROOT = Path(__file__).resolve().parents[1]


def make_tiny_config(tmp_path, num_train=16, num_val=8, image_size=96, extra="",
                     base="configs/retinaface_mnet025.yml"):
    data = Path(tmp_path) / "data"
    settings = {"image_size": image_size, "faces_per_image": [1, 3], "face_size": [16, 40]}
    if not (data / "train" / "labelv2.txt").exists():
        write_split(str(data / "train"), num_train, settings, 0, "tiny train")
        write_split(str(data / "val"), num_val, settings, 1, "tiny val")
    cfg = Path(tmp_path) / "tiny.yml"
    cfg.write_text(textwrap.dedent(f"""
        _BASE_: [{ROOT / base}]
        save_dir: {Path(tmp_path) / 'output'}
        train_dataset:
          type: LabelV2Dataset
          label_file: {data / 'train' / 'labelv2.txt'}
          image_root: {data / 'train' / 'images'}
          transforms:
            - {{type: RandomSquareCrop, crop_choice: [0.8, 1.0, 1.2]}}
            - {{type: RandomFlip}}
            - {{type: Resize, size: {image_size}}}
        eval_dataset:
          type: LabelV2Val
          label_file: {data / 'val' / 'labelv2.txt'}
          image_root: {data / 'val' / 'images'}
        train_loader: {{batch_size: 4, num_workers: 0}}
        auto_scale_lr: {{base_batch_size: null}}  # each test sets the LR for the batch it runs
        optimizer: {{type: Momentum, momentum: 0.9, weight_decay: 5.0e-4}}
        lr_schedule: {{type: WarmupStep, base_lr: 0.01, milestones: [100], warmup_iters: 2, warmup_ratio: 0.1}}
        epochs: 2
        log_iter: 1
        input: {{target_size: {image_size}}}
        pretrain_weights: null  # random init: the base config names ImageNet weights to download
        """) + textwrap.dedent(extra))
    return str(cfg)
