from .config import Config, load_config, read_section
from .errors import ConfigError, DataError, PPFaceDetError
from .registry import (ASSIGNERS, BACKBONES, CONVERTERS, DATASETS, HEADS, LOSSES, LR_SCHEDULES,
                       METRICS, NECKS, OPTIMIZERS, TRANSFORMS, Registry)
