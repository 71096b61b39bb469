"""Released models by name: ``FaceDetector.from_pretrained('scrfd_500m_kps')``,
``--model NAME`` on the tools, ``pretrain_weights: NAME`` in a config.

records.py (the types), catalog.py (the data), registry.py (look-ups),
hosts.py / transfer.py / pack.py (getting bytes), store.py (where files
live), fetch.py (an official file on disk), converted.py (Paddle weights).
"""
from .converted import converted_weights
from .registry import ZooError, config_path, entry, is_zoo_name, names

__all__ = ["ZooError", "config_path", "converted_weights", "entry", "is_zoo_name", "names"]
