"""The README's table of official recipes is what the configs train with, and a
launched batch that is not the recipe's scales the LR linearly."""
import logging
import re

import pytest

from ppfacedet.core import load_config
from ppfacedet.engine.optim import scaled_base_lr
from ppfacedet.engine.trainer import Trainer
from tiny import ROOT, make_tiny_config

COLUMNS = ["config", "epochs", "batch per GPU × GPUs", "base LR", "warmup", "schedule", "weight decay", "input",
           "initialisation", "official config: file:line"]


def recipe_rows():
    """{config name: {column: cell}} from the table under '### The official recipes'."""
    text = (ROOT / "README.md").read_text()
    section = text.split("### The official recipes", 1)[1].splitlines()
    start = next(i for i, line in enumerate(section) if line.startswith("|"))
    end = next(i for i in range(start, len(section)) if not section[i].startswith("|"))
    lines = section[start:end]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header == COLUMNS
    rows = {}
    for line in lines[2:]:
        cells = dict(zip(header, (cell.strip() for cell in line.strip("|").split("|"))))
        rows[cells["config"].strip("`")] = cells
    return rows


ROWS = recipe_rows()


def recipe_configs():
    return sorted(p.stem for p in (ROOT / "configs").glob("*.yml") if not p.stem.endswith("_demo"))


def train_input_size(cfg):
    sizes = [t["size"] for t in cfg["train_dataset"]["transforms"] if t["type"] == "Resize"]
    assert len(sizes) == 1, sizes
    return sizes[0]


def test_every_config_has_one_row():
    assert sorted(ROWS) == recipe_configs()


@pytest.mark.parametrize("name", sorted(ROWS))
def test_config_follows_its_recipe_row(name):
    row = ROWS[name]
    cfg = load_config(str(ROOT / "configs" / f"{name}.yml"))
    schedule, optimizer = cfg["lr_schedule"], cfg["optimizer"]

    assert cfg["epochs"] == int(row["epochs"])
    per_gpu, gpus = (int(v) for v in row["batch per GPU × GPUs"].split("×"))
    assert cfg["train_loader"]["batch_size"] == per_gpu
    assert cfg["auto_scale_lr"]["base_batch_size"] == per_gpu * gpus
    assert schedule["base_lr"] == pytest.approx(float(row["base LR"]))

    if row["warmup"] == "none":
        assert schedule["warmup_iters"] == 0
    else:
        iters, ratio = re.fullmatch(r"(\d+) it from ([\d.e-]+)×", row["warmup"]).groups()
        assert schedule["warmup_iters"] == int(iters)
        assert schedule["warmup_ratio"] == pytest.approx(float(ratio))

    gamma, milestones = re.fullmatch(r"step ×([\d.]+) at ([\d, ]+)", row["schedule"]).groups()
    assert schedule["type"] == "WarmupStep"
    assert schedule["gamma"] == pytest.approx(float(gamma))
    assert schedule["milestones"] == [int(m) for m in milestones.split(",")]

    assert optimizer["type"] == "Momentum" and optimizer["momentum"] == pytest.approx(0.9)
    assert optimizer["weight_decay"] == pytest.approx(float(row["weight decay"]))
    assert train_input_size(cfg) == int(row["input"])
    assert re.search(r"`[^`]+\.py:\d+", row["official config: file:line"])


@pytest.mark.parametrize("name", sorted(ROWS))
def test_config_starts_from_its_recipes_initialisation(name):
    initialisation = ROWS[name]["initialisation"]
    cfg = load_config(str(ROOT / "configs" / f"{name}.yml"))
    assert initialisation in ("scratch", "ImageNet backbone (official)")
    assert bool(cfg.get("pretrain_weights")) == (initialisation != "scratch")


def test_a_launched_batch_other_than_the_recipes_scales_the_lr():
    cfg = load_config(str(ROOT / "configs" / "retinaface_r50.yml"))  # 6 x 4 GPUs, lr 0.001
    lr, note = scaled_base_lr(cfg, 0.001, 6)
    assert lr == pytest.approx(0.00025)
    assert "6" in note and "24" in note and "linear scaling" in note
    assert scaled_base_lr(cfg, 0.001, 24) == (0.001, None)
    off = load_config(str(ROOT / "configs" / "retinaface_r50.yml"), ["auto_scale_lr.enable=false"])
    lr, note = scaled_base_lr(off, 0.001, 6)
    assert lr == 0.001 and "enable is false" in note


def test_training_says_so_at_start_and_trains_at_the_scaled_lr(tmp_path, caplog):
    cfg = make_tiny_config(tmp_path, num_train=8)
    trainer = Trainer(load_config(cfg, ["epochs=1", "auto_scale_lr.base_batch_size=16",
                                        "lr_schedule.base_lr=0.01", "lr_schedule.warmup_iters=0"]))
    with caplog.at_level(logging.WARNING, logger="ppfacedet"):
        state = trainer.train()
    assert trainer.schedule.base_lr == pytest.approx(0.01 * 4 / 16)
    assert state["lr"] == pytest.approx(0.0025)
    assert "launched total batch 4 differs from the recipe's 16" in caplog.text
