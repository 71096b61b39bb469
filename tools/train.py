"""Train a face detector.

  python tools/train.py -c configs/retinaface_mnet025_demo.yml --eval
  # fine-tune a converted release (README: "Fine-tuning a released model")
  python tools/train.py -c configs/scrfd_500m_kps.yml -o pretrain_weights=W.pdparams -o epochs=10 -o lr_schedule.base_lr=0.0001 -o lr_schedule.warmup_iters=0
  python -m paddle.distributed.launch --nproc_per_node 2 tools/train.py -c CFG   # data parallel

Checkpoints go to <save_dir>/<config name>/: latest.pdckpt (resume),
epoch_N.pdparams, best_model.pdparams (with --eval, by hard AP), model_final.pdparams.
"""
import _path  # noqa: F401

from ppfacedet.cli import base_parser, load_cfg, run


def main():
    parser = base_parser(__doc__)
    parser.add_argument("--eval", action="store_true",
                        help="evaluate WIDER easy/medium/hard AP every eval_period epochs; keep best_model by hard AP")
    parser.add_argument("-r", "--resume", nargs="?", const="latest", default=None, metavar="CKPT",
                        help="resume exactly from a .pdckpt (default: <save_dir>/<name>/latest.pdckpt)")
    parser.add_argument("--use_vdl", action="store_true", help="log to VisualDL in <save_dir>/<name>/vdl")
    parser.add_argument("--amp", action="store_true", help="mixed precision (GPU only; ignored with a warning on CPU)")
    args = parser.parse_args()
    cfg = load_cfg(args)

    from ppfacedet.data.synthetic import ensure_synthetic
    from ppfacedet.engine.trainer import Trainer
    if "synthetic" in cfg:
        ensure_synthetic(cfg["synthetic"])
    trainer = Trainer(cfg, use_vdl=args.use_vdl, evaluate_during_training=args.eval, amp=args.amp)
    if args.resume:
        import os
        path = os.path.join(trainer.out_dir, "latest.pdckpt") if args.resume == "latest" else args.resume
        trainer.resume(path)
    elif cfg.get("pretrain_weights"):
        trainer.load_pretrained(cfg["pretrain_weights"])
    trainer.train()


if __name__ == "__main__":
    run(main)
