"""DamoFD on the shared engine: a searched backbone trains, and DamoFD-0.5G
learns synthetic faces from scratch."""
import logging
import subprocess
import sys

import numpy as np
import pytest

from ppfacedet.core import load_config
from ppfacedet.engine.trainer import Trainer
from tiny import ROOT, make_tiny_config

logging.getLogger("ppfacedet").setLevel(logging.WARNING)


def test_a_searched_structure_trains_for_a_few_steps(tmp_path):
    out = tmp_path / "struct.txt"
    r = subprocess.run([sys.executable, "tools/search.py", "--budget_flops", "300M", "--iters", "200",
                        "--population", "16", "--seed", "1", "--output", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    structure = out.read_text().strip()
    cfg = make_tiny_config(tmp_path, base="configs/damofd_0.5g.yml")
    trainer = Trainer(load_config(cfg, ["epochs=1", f'model.backbone.structure="{structure}"']))
    assert trainer.model.backbone.structure == structure
    state = trainer.train()
    assert state["iteration"] == 4
    assert all(np.isfinite(v) for v in state["losses"].values())


@pytest.mark.slow
def test_damofd_learns_synthetic_faces_from_scratch(tmp_path):
    cfg = make_tiny_config(tmp_path, num_train=96, num_val=16, image_size=128, base="configs/damofd_0.5g.yml")
    trainer = Trainer(load_config(cfg, ["epochs=16", "train_loader.batch_size=8", "lr_schedule.base_lr=0.02",
                                        "lr_schedule.warmup_iters=20", "eval_period=100"]),
                      evaluate_during_training=True)
    state = trainer.train()
    before, after = state["initial_metrics"]["hard"], state["metrics"]["hard"]
    print(f"damofd_0.5g hard AP before {before:.4f} after {after:.4f}")
    assert after > before + 0.2
