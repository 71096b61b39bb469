"""Run by ``tools/gpu_check.py --train`` under paddle.distributed.launch: a few
iterations of a config with the shared Trainer on every launched GPU, then rank
0 writes the loss and the images per second per GPU as JSON.

  python -m paddle.distributed.launch --devices 0,1 tools/gpu_check_train.py \
      -c configs/retinaface_mnet025_demo.yml --iters 20 --out result.json [--amp] [-o KEY=VALUE ...]
"""
import json
import time

import _path  # noqa: F401

from ppfacedet.cli import base_parser, load_cfg, run
from ppfacedet.engine.callbacks import Callback

LOSS_WINDOW = 5  # the loss is the mean of the last iterations: one batch's loss is noisy
TIMING_FROM = 5  # img/s counts from this iteration on, after start-up


class Enough(Exception):
    """Raised by StopAfter on every rank at the same iteration (ranks step in lockstep)."""


class StopAfter(Callback):
    def __init__(self, iters, batch_size):
        self.iters, self.batch_size = iters, batch_size
        self.losses, self.start, self.result = [], None, None

    def on_step_end(self, trainer, state):
        if state["iteration"] == TIMING_FROM:
            self.start = time.perf_counter()
        self.losses.append(state["losses"]["loss"])
        if state["iteration"] >= self.iters:
            elapsed = time.perf_counter() - self.start
            self.result = {"loss": sum(self.losses[-LOSS_WINDOW:]) / LOSS_WINDOW, "loss_window": LOSS_WINDOW,
                           "iterations": state["iteration"], "world_size": trainer.world_size,
                           "images_per_sec_per_gpu": (self.iters - TIMING_FROM) * self.batch_size / elapsed,
                           "amp": trainer.amp}
            raise Enough


def main():
    parser = base_parser(__doc__)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--out", required=True, help="JSON result (written by rank 0)")
    parser.add_argument("--amp", action="store_true")
    args = parser.parse_args()
    if args.iters <= TIMING_FROM:
        parser.error(f"--iters must be more than {TIMING_FROM}")
    cfg = load_cfg(args)

    from ppfacedet.engine.trainer import Trainer
    trainer = Trainer(cfg, amp=args.amp)
    stop = StopAfter(args.iters, int(cfg["train_loader"]["batch_size"]))
    trainer.callbacks.append(stop)
    try:
        trainer.train()
    except Enough:
        pass
    if stop.result is None:
        raise SystemExit(f"training ended after {trainer.state['iteration']} iterations, before --iters "
                         f"{args.iters}: raise -o epochs=")
    if trainer.is_main:
        with open(args.out, "w") as f:
            json.dump(stop.result, f)
    return 0


if __name__ == "__main__":
    run(main)
