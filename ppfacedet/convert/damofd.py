"""Official DamoFD / EasyFace checkpoints (mmdet ``.pth``) -> ppfacedet weights.

DamoFD is SCRFD with a MasterNet backbone, and the official state dict names
its parts like SCRFD's (``backbone.``, ``neck.``, ``bbox_head.``). Our
MasterNet reproduces the official backbone module tree
(``module_list.<block>.module_list.<layer>.netblock``, shortcuts ``proj.0/1``)
and our PAFPN / SCRFD head keep the official neck and head names, so the whole
mapping is SCRFD's ``.pth`` rename (``bbox_head.`` -> ``head.``, BN statistics
-> ``_mean``/``_variance``, the official buffers ``num_batches_tracked`` and
``bbox_head.integral.project`` dropped by name), reused here, on the same
files: an mmcv checkpoint (DamoFD trains with SCRFD's mmdet) or a bare state dict.
"""
import os

import numpy as np

from ..core.errors import DataError
from ..core.registry import CONVERTERS
from .scrfd import SCRFDConverter
from .torch_checkpoint import load_mmcv_state_dict


def _strip_data_parallel(state):
    """Drop the ``module.`` prefix a DataParallel-wrapped save puts on every key."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


@CONVERTERS.register
class DamoFDConverter:
    """``DamoFDConverter()(model, source)``: ``source`` is a ``.pth`` path (the
    DamoFD / EasyFace / ModelScope release format) or an already loaded
    ``{official name: array}`` state dict. Returns ``{our name: array}`` for
    every entry of ``model.state_dict()``; DataError names missing, unmatched
    or mis-shaped entries."""

    def __call__(self, model, source):
        if isinstance(source, dict):
            state, name = source, "state dict"
        else:
            ext = os.path.splitext(str(source))[1].lower()
            if ext not in (".pth", ".pt", ".pkl", ".bin"):
                raise DataError(f"{source}: unknown weight format '{ext}'; DamoFDConverter reads .pth checkpoints")
            state, name = load_mmcv_state_dict(source), source
        state = _strip_data_parallel({k: np.asarray(v) for k, v in state.items()})
        return SCRFDConverter().from_state_dict(model, state, name)
