"""Build components by name from config dicts.

A component is registered under its class name in the registry of its kind
(backbone, neck, head, ...). A config names it with ``type`` and gives the
constructor arguments beside it; an unknown name or argument is a ConfigError
naming the closest valid one.
"""
import difflib
import inspect

from .errors import ConfigError


def closest(name, choices):
    """The valid name most like ``name``, phrased for an error message."""
    match = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.4)
    return f" (did you mean '{match[0]}'?)" if match else ""


class Registry:
    def __init__(self, kind):
        self.kind = kind
        self._items = {}

    def register(self, obj):
        """Class decorator: make ``obj`` buildable as ``type: <ClassName>``."""
        name = obj.__name__
        if name in self._items and self._items[name] is not obj:
            raise ValueError(f"{self.kind} '{name}' registered twice")
        self._items[name] = obj
        return obj

    def names(self):
        return sorted(self._items)

    def get(self, name, where=""):
        if name not in self._items:
            at = f"{where}: " if where else ""
            raise ConfigError(
                f"{at}unknown {self.kind} '{name}'{closest(name, self._items)}; "
                f"valid: {', '.join(self.names())}")
        return self._items[name]

    def build(self, cfg, where="", **extra):
        """Build from ``{'type': Name, **kwargs}``; ``extra`` supplies wiring
        arguments the config does not hold (e.g. in_channels)."""
        if not isinstance(cfg, dict) or "type" not in cfg:
            raise ConfigError(f"{where or self.kind}: expected a mapping with a 'type' key, got {cfg!r}")
        kwargs = {k: v for k, v in cfg.items() if k != "type"}
        cls = self.get(cfg["type"], where)
        check_arguments(cls, kwargs, where or cfg["type"])
        return cls(**kwargs, **extra)


def check_arguments(cls, kwargs, where):
    """Reject keys that the constructor of ``cls`` does not take."""
    params = inspect.signature(cls.__init__ if inspect.isclass(cls) else cls).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return
    valid = [n for n in params if n != "self"]
    for key in kwargs:
        if key not in valid:
            raise ConfigError(
                f"{where}: unknown key '{key}' for {getattr(cls, '__name__', cls)}{closest(key, valid)}; "
                f"valid keys: {', '.join(valid)}")


BACKBONES = Registry("backbone")
NECKS = Registry("neck")
HEADS = Registry("head")
ASSIGNERS = Registry("assigner")
LOSSES = Registry("loss")
DATASETS = Registry("dataset")
TRANSFORMS = Registry("transform")
CONVERTERS = Registry("weight converter")
OPTIMIZERS = Registry("optimizer")
LR_SCHEDULES = Registry("LR schedule")
METRICS = Registry("metric")
