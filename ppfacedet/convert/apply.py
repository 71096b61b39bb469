"""Run a family's converter and check that it filled the whole model."""
import os

import numpy as np

from ..core.errors import PPFaceDetError
from ..core.registry import CONVERTERS
from ..modeling.detector import build_model


def convert_official_weights(cfg, src):
    """-> (model with the converted weights, number of tensors)."""
    if not os.path.isfile(src):
        raise PPFaceDetError(f"--src: file not found: {src}")
    if not cfg.get("converter"):
        raise PPFaceDetError(f"{cfg.path}: no 'converter' key: this family has no official-weight import")
    model = build_model(cfg)
    converter = CONVERTERS.build({"type": cfg["converter"]}, cfg.where("converter"))
    state = converter(model, src)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    wrong = [f"{k} {list(np.shape(state[k]))} vs {list(own[k].shape)}"
             for k in own if k in state and list(np.shape(state[k])) != list(own[k].shape)]
    if missing or wrong:
        raise PPFaceDetError(f"{src}: the converter left {len(missing)} tensors unfilled "
                             f"({', '.join(missing[:3])}) and {len(wrong)} with wrong shapes ({', '.join(wrong[:2])})")
    model.set_state_dict({k: np.asarray(v, dtype=np.asarray(own[k]).dtype) for k, v in state.items() if k in own})
    return model, len(own)
