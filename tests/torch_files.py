"""Write PyTorch checkpoints without PyTorch, in both formats torch.save has
used, so tests can build files in the official layouts from random values.

The pickle stream is emitted opcode by opcode (protocol 2, as torch.save
writes it): a tensor is ``torch._utils._rebuild_tensor_v2(storage, offset,
size, stride, requires_grad, hooks)`` whose storage is a persistent id
``('storage', torch.<Type>Storage, key, 'cpu', numel)``. A state dict's
``_metadata`` attribute (module versions) is written as torch writes it, with
BUILD. The standard pickler cannot write those globals without importing torch.
"""
import collections
import io
import struct
import zipfile

import numpy as np

LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
LEGACY_PROTOCOL = 1001
_STORAGES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.int64): "LongStorage",
             np.dtype(np.float64): "DoubleStorage", np.dtype(np.int32): "IntStorage"}


class _Emitter:
    def __init__(self, legacy, location):
        self.legacy = legacy  # legacy persistent ids end with a view_metadata field
        self.location = location
        self.out = io.BytesIO()
        self.storages = []  # (key, array) in order of appearance

    def op(self, data):
        self.out.write(data)

    def global_(self, module, name):
        self.op(b"c" + module.encode() + b"\n" + name.encode() + b"\n")

    def tuple_(self, items):
        self.op(b"(")
        for item in items:
            self.value(item)
        self.op(b"t")

    def tensor(self, array):
        array = np.asarray(array, order="C")
        key = str(len(self.storages))
        self.storages.append((key, array))
        self.global_("torch._utils", "_rebuild_tensor_v2")
        self.op(b"(")
        self.op(b"(")  # the persistent id tuple
        self.value("storage")
        self.global_("torch", _STORAGES[array.dtype])
        self.value(key)
        self.value(self.location)
        self.value(array.size)
        if self.legacy:
            self.value(None)
        self.op(b"t")
        self.op(b"Q")
        self.value(0)
        self.tuple_(array.shape)
        self.tuple_(tuple(s // array.itemsize for s in array.strides))
        self.value(False)
        self.global_("collections", "OrderedDict")
        self.op(b")R")
        self.op(b"t")
        self.op(b"R")

    def value(self, obj):
        if isinstance(obj, np.ndarray):
            self.tensor(obj)
        elif obj is None:
            self.op(b"N")
        elif isinstance(obj, bool):
            self.op(b"\x88" if obj else b"\x89")
        elif isinstance(obj, int):
            if -2 ** 31 <= obj < 2 ** 31:
                self.op(b"J" + struct.pack("<i", obj))
            else:
                data = obj.to_bytes((obj.bit_length() + 8) // 8, "little", signed=True)
                self.op(b"\x8a" + bytes([len(data)]) + data)
        elif isinstance(obj, float):
            self.op(b"G" + struct.pack(">d", obj))
        elif isinstance(obj, str):
            data = obj.encode()
            self.op(b"X" + struct.pack("<I", len(data)) + data)
        elif isinstance(obj, tuple):
            self.tuple_(obj)
        elif isinstance(obj, list):
            self.op(b"](")
            for item in obj:
                self.value(item)
            self.op(b"e")
        elif isinstance(obj, dict):
            if isinstance(obj, collections.OrderedDict):
                self.global_("collections", "OrderedDict")
                self.op(b")R")
            else:
                self.op(b"}")
            self.op(b"(")
            for key, item in obj.items():
                self.value(key)
                self.value(item)
            self.op(b"u")
            if getattr(obj, "_metadata", None) is not None:
                self.value({"_metadata": obj._metadata})
                self.op(b"b")
        else:
            raise TypeError(f"cannot emit {type(obj).__name__}")


def _pickle(obj, legacy=False, location="cpu"):
    emitter = _Emitter(legacy, location)
    emitter.op(b"\x80\x02")
    emitter.value(obj)
    emitter.op(b".")
    return emitter.out.getvalue(), emitter.storages


def save_zip(obj, path, root="archive", location="cpu"):
    """torch >= 1.6's format: ``<root>/data.pkl`` plus one file per storage."""
    data, storages = _pickle(obj, location=location)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{root}/data.pkl", data)
        zf.writestr(f"{root}/byteorder", "little")
        for key, array in storages:
            zf.writestr(f"{root}/data/{key}", array.tobytes())
        zf.writestr(f"{root}/version", "3\n")


def save_legacy(obj, path, location="cpu"):
    """torch < 1.6's format: magic, protocol, system info, the object, the
    storage keys, then each storage as an int64 element count and its bytes."""
    sys_info = {"protocol_version": LEGACY_PROTOCOL, "little_endian": True,
                "type_sizes": {"short": 2, "int": 4, "long": 4}}
    data, storages = _pickle(obj, legacy=True, location=location)
    with open(path, "wb") as f:
        for header in (LEGACY_MAGIC, LEGACY_PROTOCOL, sys_info):
            f.write(_pickle(header)[0])
        f.write(data)
        f.write(_pickle([key for key, _ in storages])[0])
        for _, array in storages:
            f.write(struct.pack("<q", array.size))
            f.write(array.tobytes())


def state_dict(items):
    """An OrderedDict carrying ``_metadata`` like ``torch.nn.Module.state_dict()``'s."""
    out = collections.OrderedDict(items)
    out._metadata = collections.OrderedDict([("", {"version": 1})])
    return out
