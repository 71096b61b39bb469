"""What every tool shares: -c/-o parsing and turning known errors into one
clear line and a non-zero exit instead of a traceback."""
import argparse
import json
import sys
import warnings

from .core.config import load_config
from .core.errors import PPFaceDetError


def base_parser(description, config_required=True, zoo_model=False):
    """``zoo_model``: also take ``--model NAME`` (config and weights from the model zoo; -c then optional)."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", required=config_required and not zoo_model,
                        help="model config, e.g. configs/retinaface_mnet025.yml"
                             + (" (default with --model: the zoo model's own)" if zoo_model else ""))
    if zoo_model:
        parser.add_argument("--model", default=None, metavar="NAME",
                            help="a released model by name (tools/zoo.py list): its config, and its official "
                                 "weights fetched and converted once; -c and -o still apply on top")
    parser.add_argument("-o", "--opt", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. -o weights=out.pdparams -o test.nms_threshold=0.45 "
                             "(repeatable)")
    parser.add_argument("--slim_config", action="append", default=[], metavar="YML",
                        help="overlay merged over the config before -o, e.g. configs/slim/qat.yml for "
                             "quantization-aware training")
    return parser


def load_cfg(args):
    name = getattr(args, "model", None)
    if not name:
        if not args.config:
            raise PPFaceDetError("give a config (-c FILE) or a released model (--model NAME, tools/zoo.py list)")
        return load_config(args.config, args.opt, overlays=args.slim_config)
    from .zoo import config_path, converted_weights
    config = args.config or config_path(name)  # config_path first: an unknown name fails before any download
    # the zoo's weights go first, so that an explicit -o weights=... still wins
    return load_config(config, [f"weights={json.dumps(converted_weights(name))}"] + list(args.opt), overlays=args.slim_config)


def run(main):
    """Run ``main()``; PPFaceDetError / EvaluationError (bad files, values) end the process with exit
    status 2 and the message, never a traceback."""
    warnings.filterwarnings("ignore", message=".*ccache.*")
    from widerface_evaluate import EvaluationError
    try:
        code = main()
    except (PPFaceDetError, EvaluationError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)


def parse_input_shape(text):
    """argparse type for ``--input_shape N,3,H,W``."""
    try:
        shape = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not N,C,H,W integers, e.g. 1,3,480,640") from None
    if len(shape) != 4 or min(shape) <= 0 or shape[1] != 3:
        raise argparse.ArgumentTypeError(f"'{text}' must be four positive integers N,3,H,W")
    return shape


def model_with_weights(cfg, required=True):
    """The config's model with ``cfg['weights']`` loaded (an error naming the
    fix when they are required and missing)."""
    from .engine.checkpoint import load_weights
    from .modeling.detector import build_model
    if required and not cfg.get("weights"):
        raise PPFaceDetError("no weights: pass -o weights=PATH.pdparams (a trained or converted model)")
    model = build_model(cfg)
    if cfg.get("weights"):
        load_weights(model, cfg["weights"])
    return model
