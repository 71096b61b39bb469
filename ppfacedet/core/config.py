"""YAML configs with ``_BASE_`` inheritance, ``-o key=value`` overrides and
errors that point at the file and line a bad key came from.

A config is a plain nested dict (``Config``) plus ``sources``: for every key
path, the ``file:line`` where its value was last set, so a builder that
rejects a value can say where it came from.
"""
import contextlib
import copy
import os
import re

import yaml

from .errors import ConfigError
from .registry import closest

# Every top-level key a config may hold, with what it is for. A key outside
# this table is a typo and is reported with the closest valid one.
TOP_LEVEL_KEYS = {
    "model": "backbone / neck / head components of the Detector",
    "input": "test-time input policy: resize mode, size, mean/std, channel order",
    "test": "postprocess thresholds: score, NMS, top-k",
    "train_dataset": "training data source and its transforms",
    "eval_dataset": "evaluation data source and its WIDER ground truth",
    "train_loader": "batch size, workers, shuffling for training",
    "eval_loader": "batch size and workers for evaluation",
    "optimizer": "optimizer settings (momentum, weight decay, grad clip)",
    "lr_schedule": "base LR, warmup and decay",
    "epochs": "number of training epochs",
    "seed": "random seed for a deterministic run",
    "save_dir": "where checkpoints and logs are written",
    "weights": "weights to evaluate, infer or export with",
    "pretrain_weights": "weights to initialise training from: a file, a URL, {url, sha256 | md5, download_page} "
                        "or a model zoo name (tools/zoo.py list)",
    "pretrain_strict": "false: train on when pretrain_weights fills less than 90% of the backbone",
    "log_iter": "print a log line every N iterations",
    "snapshot_epoch": "save a checkpoint every N epochs",
    "eval_period": "evaluate every N epochs when --eval is given",
    "converter": "name of the official-weights converter for this family",
    "synthetic": "settings of the synthetic face generator (demo configs)",
    "export": "export settings (NMS in graph, program format)",
    "quant": "quantization-aware-training overlay settings",
    "int8": "post-training INT8 settings (tools/quant.py): conv groups the QDQ ONNX leaves in float",
    "metric": "evaluation metric and the setting that picks best_model",
    "amp": "mixed precision on GPU (a no-op on CPU)",
    "cpu_threads": "CPU math threads per training process (0: the usable cores shared by the node's processes)",
    "auto_scale_lr": "linear LR scaling when the launched total batch differs from the recipe's base_batch_size",
    "sync_bn": "true: BatchNorm statistics over the whole batch of every process (SyncBN)",
    "watchdog_minutes": "stop training with stacks and exit status 3 when no step and no evaluation image "
                        "finishes for this long (default 30; 0: never)",
}

BASE_KEY = "_BASE_"


class Config(dict):
    """A nested dict with the ``file:line`` source of every key path."""

    def __init__(self, data=None, sources=None):
        super().__init__(data or {})
        self.sources = dict(sources or {})

    def where(self, path):
        """``file:line`` for a key path like ``model.head.type`` (or its
        closest set ancestor)."""
        parts = tuple(path.split(".")) if isinstance(path, str) else tuple(path)
        while parts:
            if parts in self.sources:
                return self.sources[parts]
            parts = parts[:-1]
        return getattr(self, "path", None) or "<config>"  # set nowhere: a default missing from the file


def yaml_error(path, error):
    """A YAMLError as one line, ``file:line: invalid YAML: what``."""
    mark = getattr(error, "problem_mark", None)
    where = f"{path}:{mark.line + 1}" if mark is not None else path
    what = getattr(error, "problem", None) or str(error)
    return ConfigError(f"{where}: invalid YAML: {' '.join(str(what).split())}")


MAX_NODES = 100_000  # YAML aliases can make a few lines expand exponentially


def _to_python(node, path, source_file, sources, budget=None):
    """Turn a composed YAML node into Python values, recording sources."""
    budget = [MAX_NODES] if budget is None else budget
    budget[0] -= 1
    if budget[0] < 0:
        raise ConfigError(f"{source_file}: more than {MAX_NODES} values (an alias expanding without end?)")
    if isinstance(node, yaml.MappingNode):
        out = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise ConfigError(f"{source_file}:{key_node.start_mark.line + 1}: a key must be a plain name")
            key = key_node.value
            sub = path + (key,)
            sources[sub] = f"{source_file}:{key_node.start_mark.line + 1}"
            out[key] = _to_python(value_node, sub, source_file, sources, budget)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(v, path + (str(i),), source_file, sources, budget) for i, v in enumerate(node.value)]
    try:  # the safe loader's own rules for a scalar (int, float, bool, null, str...)
        return yaml.constructor.SafeConstructor().construct_object(node, deep=True)
    except yaml.YAMLError as e:
        raise yaml_error(source_file, e) from None


def _merge(base, child):
    """Deep-merge ``child`` into ``base``: mappings merge, everything else replaces."""
    out = copy.deepcopy(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and "type" not in value:
            out[key] = _merge(out[key], value)
        elif isinstance(value, dict) and isinstance(out.get(key), dict) and value.get("type") == out[key].get("type"):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _load_file(path, stack):
    path = os.path.abspath(path)
    if path in stack:
        raise ConfigError(f"{path}: _BASE_ cycle through {' -> '.join(stack)}")
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    with open(path, encoding="utf-8") as f:
        try:
            node = yaml.compose(f)
        except yaml.YAMLError as e:
            raise yaml_error(path, e) from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not UTF-8 text (a binary or damaged file?)") from None
    sources = {}
    data = _to_python(node, (), path, sources) if node is not None else {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping at the top level")
    bases = data.pop(BASE_KEY, [])
    bases = [bases] if isinstance(bases, str) else bases
    merged, merged_sources = {}, {}
    for base in bases:
        base_data, base_sources = _load_file(os.path.join(os.path.dirname(path), base), stack + [path])
        merged = _merge(merged, base_data)
        merged_sources.update(base_sources)
    merged = _merge(merged, data)
    merged_sources.update({k: v for k, v in sources.items() if k[0] != BASE_KEY})
    return merged, merged_sources


def parse_override(text):
    """``a.b=c`` -> (['a', 'b'], value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"-o {text!r}: expected key=value, e.g. -o epochs=10")
    key, value = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"-o {text!r}: empty key")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return key.strip().split("."), parsed


def apply_override(cfg, text):
    keys, value = parse_override(text)
    node = cfg
    for depth, key in enumerate(keys[:-1]):
        if not isinstance(node.get(key), dict):
            if key in node:
                raise ConfigError(f"-o {text}: '{'.'.join(keys[:depth + 1])}' is not a mapping")
            node[key] = {}
            cfg.sources[tuple(keys[:depth + 1])] = f"-o {text}"  # created here: an error about it names the -o
        node = node[key]
    node[keys[-1]] = value
    cfg.sources[tuple(keys)] = f"-o {text}"


def check_top_level(cfg):
    for key in cfg:
        if key not in TOP_LEVEL_KEYS:
            raise ConfigError(
                f"{cfg.where(key)}: unknown config key '{key}'{closest(key, TOP_LEVEL_KEYS)}; "
                f"valid top-level keys: {', '.join(sorted(TOP_LEVEL_KEYS))}")


def load_config(path, overrides=(), overlays=()):
    """Load ``path`` with its ``_BASE_`` chain, merge each overlay file over it
    (``--slim_config``: e.g. quantization-aware training), then apply ``-o``
    overrides."""
    data, sources = _load_file(path, [])
    for overlay in overlays:
        overlay_data, overlay_sources = _load_file(overlay, [])
        data = _merge(data, overlay_data)
        sources.update(overlay_sources)
    cfg = Config(data, sources)
    cfg.name = os.path.splitext(os.path.basename(path))[0]
    cfg.path = os.path.abspath(path)
    for text in overrides:
        apply_override(cfg, text)
    check_top_level(cfg)
    return cfg


_KEY_PATH = re.compile(r"[A-Za-z_][\w.]*")
# what a component constructor raises when a config value has the wrong kind or range
BUILD_ERRORS = (TypeError, ValueError, AssertionError, IndexError, KeyError, ZeroDivisionError, OverflowError,
                AttributeError)


@contextlib.contextmanager
def located(cfg, section):
    """Errors while building ``section`` from ``cfg`` point into the config: a
    ConfigError that starts with a key path gets that key's ``file:line``, and
    a constructor choking on a value of the wrong kind becomes a ConfigError."""
    try:
        yield
    except ConfigError as e:
        message = str(e)
        key = message.split(":", 1)[0]
        if not _KEY_PATH.fullmatch(key):
            raise
        raise ConfigError(f"{cfg.where(key)}: {message}") from None
    except BUILD_ERRORS as e:
        detail = " ".join(str(e).split())
        raise ConfigError(f"{cfg.where(section)}: '{section}' cannot be built from these settings "
                          f"({type(e).__name__}: {detail})") from None


def read_section(cfg, key, defaults):
    """Read a plain settings section (not a component), filling defaults and
    rejecting keys that are not among them."""
    given = cfg.get(key) or {}
    if not isinstance(given, dict):
        raise ConfigError(f"{cfg.where(key)}: '{key}' must be a mapping")
    for k in given:
        if k not in defaults:
            raise ConfigError(
                f"{cfg.where((key, k))}: unknown key '{key}.{k}'{closest(k, defaults)}; "
                f"valid: {', '.join(sorted(defaults))}")
    return {**defaults, **given}
