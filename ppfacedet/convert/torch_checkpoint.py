"""Read PyTorch ``.pth`` checkpoints into numpy arrays without PyTorch.

Both formats torch.save has written are supported:
  * zip (torch >= 1.6): ``<root>/data.pkl`` plus one file per storage;
  * legacy: a run of pickles (magic, protocol, sys info, the object, the
    storage keys) followed by each storage as an int64 element count and raw bytes.
Tensors are rebuilt from (storage, offset, size, stride) with numpy views.
"""
import io
import pickle
import struct
import zipfile

import numpy as np

from ..core import safe_pickle
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


def _non_negative_ints(values):
    return isinstance(values, (tuple, list)) and all(type(v) is int and v >= 0 for v in values)


class _LazyTensor:
    """A tensor whose storage bytes may arrive after the pickle (legacy format)."""

    def __init__(self, storage, offset, size, stride):
        if not (isinstance(storage, _Storage) and type(offset) is int and offset >= 0
                and _non_negative_ints(size) and _non_negative_ints(stride) and len(size) == len(stride)):
            raise pickle.UnpicklingError("tensor rebuilt from arguments torch never writes")
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def materialize(self, path):
        flat = self.storage.array
        if flat is None:
            raise DataError(f"{path}: a tensor's storage is missing from the file")
        # the last element a view reaches must lie inside the storage, or
        # as_strided would read beyond the buffer
        end = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride)) + 1
        if 0 not in self.size and end > flat.size:
            raise DataError(f"{path}: a tensor reaches element {end} of a storage of {flat.size} (truncated file?)")
        if 0 in self.size:
            return np.zeros(self.size, flat.dtype)
        item = self.storage.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(flat[self.offset:], shape=self.size,
                                               strides=tuple(s * item for s in self.stride))
        return np.array(view)


def _rebuild_tensor(storage, offset, size, stride, *unused):
    return _LazyTensor(storage, offset, size, stride)


def _rebuild_parameter(data, *unused):
    return data


# What torch.save writes for a state dict, mapped to stand-ins, by exact name.
_TORCH_GLOBALS = {
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
    ("torch", "UntypedStorage"): _StorageType("ByteStorage"),
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}


class _Unpickler(safe_pickle.RestrictedUnpickler):
    def __init__(self, file, path, storages, load_storage):
        super().__init__(file, path, _TORCH_GLOBALS)
        self.storages = storages
        self.load_storage = load_storage

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)):
            raise pickle.UnpicklingError("a persistent reference that is not a torch storage")
        storage_type, key = pid[1], pid[2]
        if key not in self.storages:
            storage = _Storage(storage_type.dtype)
            self.storages[key] = storage
            self.load_storage(key, storage)
        return self.storages[key]


def _unpickle(file, path, storages, load_storage):
    try:
        return _Unpickler(file, path, storages, load_storage).load()
    except DataError:
        raise
    except Exception as e:  # a corrupt pickle fails in many ways; all of them mean "unreadable"
        raise DataError(f"{path}: cannot read as a PyTorch checkpoint ({type(e).__name__}: {e})") from None


def _load_zip(path):
    with zipfile.ZipFile(path) as zf:
        pkl = next((n for n in zf.namelist() if n.endswith("data.pkl")), None)
        if pkl is None:
            raise DataError(f"{path}: a zip without data.pkl, not a PyTorch checkpoint")
        root = pkl[:-len("data.pkl")]

        def load_storage(key, storage):
            storage.array = np.frombuffer(zf.read(f"{root}data/{key}"), dtype=storage.dtype)

        return _unpickle(io.BytesIO(zf.read(pkl)), path, {}, load_storage)


def _load_legacy(path):
    with open(path, "rb") as f:
        if safe_pickle.unpickle(f, path) != _LEGACY_MAGIC:
            raise DataError(f"{path}: not a PyTorch checkpoint (bad magic number)")
        safe_pickle.unpickle(f, path)  # protocol version
        safe_pickle.unpickle(f, path)  # sys info
        storages = {}
        obj = _unpickle(f, path, storages, lambda key, storage: None)
        keys = safe_pickle.unpickle(f, path)
        if not isinstance(keys, list):
            raise DataError(f"{path}: the storage key list is not a list")
        for key in keys:
            if key not in storages:
                raise DataError(f"{path}: storage {key!r} is listed but no tensor uses it")
            storage = storages[key]
            (count,) = struct.unpack("<q", f.read(8))
            data = f.read(count * storage.dtype.itemsize) if count >= 0 else b""
            if count < 0 or len(data) != count * storage.dtype.itemsize:
                raise DataError(f"{path}: truncated: storage {key!r} is shorter than its header says")
            storage.array = np.frombuffer(data, dtype=storage.dtype)
    return obj


def load_torch_checkpoint(path):
    """The object saved in ``path`` with tensors as numpy arrays."""
    def materialize(node):
        return node.materialize(path) if isinstance(node, _LazyTensor) else node

    try:
        obj = _load_zip(path) if zipfile.is_zipfile(path) else _load_legacy(path)
        return safe_pickle.rebuild(obj, materialize, path)
    except DataError:
        raise
    except Exception as e:  # zip, struct and numpy errors on a damaged file
        raise DataError(f"{path}: cannot read as a PyTorch checkpoint ({type(e).__name__}: {e})") from None


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


# What mmcv's save_checkpoint (the SCRFD and DamoFD trainers') writes next to the weights: ``meta`` (mmcv and
# mmdet versions, time, CLASSES, the config text, env info, seed, epoch/iter, hook_msgs: plain strings, numbers,
# tuples and dicts) and ``optimizer`` (the optimizer's state_dict: SGD momentum buffers and param groups).
MMCV_CHECKPOINT_KEYS = ("state_dict", "meta", "optimizer")


def load_mmcv_state_dict(path):
    """The model state dict of an mmcv checkpoint (``{'state_dict', 'meta', 'optimizer'}``) or of a bare
    ``torch.save(model.state_dict())`` file. Unlike ``load_state_dict`` nothing is skipped silently: other
    top-level entries next to ``state_dict``, or a state dict entry that is not a tensor, are errors."""
    obj = load_torch_checkpoint(path)
    if isinstance(obj, dict) and "state_dict" in obj:
        other = sorted(str(k) for k in obj if k not in MMCV_CHECKPOINT_KEYS)
        if other:
            raise DataError(f"{path}: top-level entries {other} next to 'state_dict': not what mmcv's "
                            f"save_checkpoint writes ({', '.join(MMCV_CHECKPOINT_KEYS)})")
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise DataError(f"{path}: neither an mmcv checkpoint nor a state dict")
    for key, value in obj.items():
        if not (isinstance(key, str) and isinstance(value, np.ndarray)):
            raise DataError(f"{path}: state dict entry {key!r} is a {type(value).__name__}, not a tensor")
    return dict(obj)
