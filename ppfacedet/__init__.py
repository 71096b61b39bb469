"""ppfacedet: PaddlePaddle face detection (boxes and five landmarks)."""
from .core.autoload import import_submodules

for _package in ("ppfacedet.modeling", "ppfacedet.data", "ppfacedet.convert", "ppfacedet.engine"):
    import_submodules(_package)

from .api import FaceDetector  # noqa: E402  (after registration)
