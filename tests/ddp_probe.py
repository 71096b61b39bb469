"""Run under paddle.distributed.launch by test_distributed.py: trains with the
shared Trainer, then every rank saves its parameters so the test can check
that data parallelism kept them identical."""
import sys

import numpy as np
import paddle.distributed as dist

sys.path.insert(0, sys.argv[3])
from ppfacedet.core import load_config  # noqa: E402
from ppfacedet.engine.trainer import Trainer  # noqa: E402

cfg_path, out_prefix = sys.argv[1], sys.argv[2]
trainer = Trainer(load_config(cfg_path, sys.argv[4:]))
trainer.train()
np.savez(f"{out_prefix}{dist.get_rank()}.npz", **{k: v.numpy() for k, v in trainer.model.state_dict().items()})
