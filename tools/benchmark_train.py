"""Training throughput of a config: images per second for forward + loss +
backward + optimizer step on batches of synthetic faces (data loading
excluded, so the number is the model's own cost).

  python tools/benchmark_train.py -c configs/retinaface_mnet025.yml --input_size 640 --batch_size 8
"""
import time

import _path  # noqa: F401

from ppfacedet.cli import base_parser, load_cfg, run


def main():
    parser = base_parser(__doc__)
    parser.add_argument("--input_size", type=int, default=640, help="square training input (default 640)")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--iters", type=int, default=10, help="timed iterations (after 2 warm-up ones)")
    args = parser.parse_args()
    cfg = load_cfg(args)

    import numpy as np
    import paddle

    from ppfacedet.data.preprocess import InputPolicy
    from ppfacedet.data.synthetic import render_image
    from ppfacedet.engine.trainer import Trainer

    trainer = Trainer(cfg)
    optimizer = trainer._build_optimizer()
    policy = InputPolicy.from_config(cfg)
    rng = np.random.default_rng(0)
    images, boxes, lms = zip(*(render_image(rng, args.input_size, [2, 8], [16, args.input_size // 4])
                               for _ in range(args.batch_size)))
    batch = {"image": paddle.to_tensor(policy.stack([policy.normalize(i) for i in images])),
             "gt_boxes": list(boxes), "gt_landmarks": list(lms),
             "landmark_valid": [np.ones(len(b), bool) for b in boxes]}
    model = trainer.model
    model.train()
    times = []
    for i in range(args.iters + 2):
        start = time.perf_counter()
        loss = model.loss(model(batch["image"]), batch)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        if i >= 2:
            times.append(time.perf_counter() - start)
    step = float(np.median(times))
    print(f"{cfg.name}: batch {args.batch_size} at {args.input_size}x{args.input_size}, "
          f"{trainer.cpu_threads} CPU threads: {step * 1000:.0f} ms/step, {args.batch_size / step:.1f} img/s "
          f"(median of {args.iters})")


if __name__ == "__main__":
    run(main)
