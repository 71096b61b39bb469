"""What every tool shares: -c/-o parsing and turning known errors into one
clear line and a non-zero exit instead of a traceback."""
import argparse
import sys
import warnings

from .core.config import load_config
from .core.errors import PPFaceDetError


def base_parser(description, config_required=True):
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", required=config_required,
                        help="model config, e.g. configs/retinaface_mnet025.yml")
    parser.add_argument("-o", "--opt", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. -o weights=out.pdparams -o test.nms_threshold=0.45 "
                             "(repeatable)")
    parser.add_argument("--slim_config", action="append", default=[], metavar="YML",
                        help="overlay merged over the config before -o, e.g. configs/slim/qat.yml for "
                             "quantization-aware training")
    return parser


def load_cfg(args):
    return load_config(args.config, args.opt, overlays=args.slim_config)


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
