"""Read PyTorch ``.pth`` checkpoints into numpy arrays without PyTorch.

Both formats torch.save has written are supported:
  * zip (torch >= 1.6): ``<root>/data.pkl`` plus one file per storage;
  * legacy: a run of pickles (magic, protocol, sys info, the object, the
    storage keys) followed by each storage as an int64 element count and raw bytes.
Tensors are rebuilt from (storage, offset, size, stride) with numpy views.
"""
import collections
import io
import pickle
import struct
import zipfile

import numpy as np

from ..core.errors import DataError

_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
    "BFloat16Storage": np.uint16,
}


class _StorageType:
    def __init__(self, name):
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _Storage:
    """A lazily filled flat array standing in for a torch storage."""

    def __init__(self, dtype):
        self.dtype = dtype
        self.array = None


class _LazyTensor:
    """A tensor whose storage bytes may arrive after the pickle (legacy format)."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def materialize(self):
        flat = self.storage.array[self.offset:]
        if not self.size:
            return flat[:1].reshape(()).copy()
        item = self.storage.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(flat, shape=self.size,
                                               strides=tuple(s * item for s in self.stride))
        return np.array(view)


def _rebuild_tensor(storage, offset, size, stride, *unused):
    return _LazyTensor(storage, offset, size, stride)


def _materialize(obj):
    if isinstance(obj, _LazyTensor):
        return obj.materialize()
    if isinstance(obj, dict):
        return type(obj)((k, _materialize(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialize(v) for v in obj)
    return obj


def _rebuild_parameter(data, *unused):
    return data


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, storages, load_storage):
        super().__init__(file)
        self.storages = storages
        self.load_storage = load_storage

    def find_class(self, module, name):
        if module.startswith("torch"):
            if name in _STORAGE_DTYPES:
                return _StorageType(name)
            if name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
                return _rebuild_tensor
            if name == "_rebuild_parameter":
                return _rebuild_parameter
            if name == "UntypedStorage":
                return _StorageType("ByteStorage")
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module.startswith(("numpy", "builtins", "_codecs")):
            return super().find_class(module, name)
        # Anything else (mmcv config objects, optimizer classes, ...) is
        # irrelevant to the weights: stand it in with a harmless placeholder.
        return lambda *args, **kwargs: None

    def persistent_load(self, pid):
        kind, storage_type, key = pid[0], pid[1], pid[2]
        if kind != "storage":
            raise pickle.UnpicklingError(f"unsupported persistent id {kind!r}")
        if key not in self.storages:
            storage = _Storage(storage_type.dtype)
            self.storages[key] = storage
            self.load_storage(key, storage)
        return self.storages[key]


def _load_zip(path):
    with zipfile.ZipFile(path) as zf:
        pkl = next(n for n in zf.namelist() if n.endswith("data.pkl"))
        root = pkl[:-len("data.pkl")]

        def load_storage(key, storage):
            storage.array = np.frombuffer(zf.read(f"{root}data/{key}"), dtype=storage.dtype)

        return _Unpickler(io.BytesIO(zf.read(pkl)), {}, load_storage).load()


def _load_legacy(path):
    with open(path, "rb") as f:
        if pickle.load(f) != _LEGACY_MAGIC:
            raise DataError(f"{path}: not a PyTorch checkpoint (bad magic number)")
        pickle.load(f)  # protocol version
        pickle.load(f)  # sys info
        storages = {}
        obj = _Unpickler(f, storages, lambda key, storage: None).load()
        keys = pickle.load(f)
        for key in keys:
            storage = storages[key]
            (count,) = struct.unpack("<q", f.read(8))
            storage.array = np.frombuffer(f.read(count * storage.dtype.itemsize), dtype=storage.dtype)
    return obj


def load_torch_checkpoint(path):
    """The object saved in ``path`` with tensors as numpy arrays."""
    try:
        obj = _load_zip(path) if zipfile.is_zipfile(path) else _load_legacy(path)
        return _materialize(obj)
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, ValueError, StopIteration) as e:
        raise DataError(f"{path}: cannot read as a PyTorch checkpoint: {e}") from None


def load_state_dict(path):
    """The flat name -> array state dict of a checkpoint, unwrapping the
    ``state_dict`` / ``model`` containers training scripts save."""
    obj = load_torch_checkpoint(path)
    for key in ("state_dict", "model", "net"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise DataError(f"{path}: no state dict found in the checkpoint")
    return {k: v for k, v in obj.items() if isinstance(v, np.ndarray)}
