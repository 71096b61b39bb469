"""A pickle reader that cannot run code, for every pickle-based file a user
hands us (``.pdparams``, ``.pdckpt``, ``.pdopt``, ``.pth``, ``.pt``, ``.tar``).

A pickle is a small program: its GLOBAL opcodes import any callable and
REDUCE calls it, so ``pickle.load`` (and ``paddle.load``, which is a plain
unpickler) runs whatever a downloaded file carries. This reader resolves only
the globals a tensor state dict is made of, each mapped to a stand-in that
checks its arguments; any other global is refused by name, never imported.
It also checks the one opcode that mutates existing objects (BUILD): numpy
lets a dtype's state claim it holds Python objects, after which raw bytes
would be read as object pointers.

Compared with torch's own ``weights_only=True`` loading: the same closed set of
globals, plus no ``numpy`` object arrays, no dtype state other than the one
numpy itself writes, and a fresh dtype per file (numpy hands out shared
singletons, which a BUILD could otherwise alter process-wide).
"""
import codecs
import collections
import pickle

import numpy as np

from .errors import DataError

REFUSAL_HINT = "the file may be malicious or made by an unsupported tool"
MAX_NESTING = 64
PLAIN_DTYPE_KINDS = "biufcSU"  # numbers, booleans, byte and text strings: never Python objects


class UnsafeFileError(DataError):
    """A pickle asked for something outside the allowlist."""


class _Refused(Exception):
    """Raised by a stand-in; ``unpickle`` turns it into an UnsafeFileError naming the file."""


class _NdarrayType:
    """Stands in for ``numpy.ndarray``: pickles name it only as the first
    argument of ``_reconstruct``, and nothing may call or instantiate it."""

    def __repr__(self):
        return "numpy.ndarray"


NDARRAY = _NdarrayType()


def _reconstruct(subtype, shape, typecode):
    """numpy's ``_reconstruct``: an empty array that BUILD then fills."""
    if subtype is not NDARRAY or tuple(shape) != (0,) or typecode not in (b"b", "b"):
        raise pickle.UnpicklingError("numpy _reconstruct called with arguments numpy never writes")
    return np.ndarray((0,), np.int8)


def _dtype(spec, align=False, copy=True):
    """``numpy.dtype``: only plain dtypes, and always a private copy."""
    if not isinstance(spec, str):
        raise pickle.UnpicklingError("numpy.dtype from a non-string specification")
    dtype = np.dtype(spec, bool(align), True)
    if dtype.kind not in PLAIN_DTYPE_KINDS or dtype.hasobject:
        raise _Refused(f"refused numpy dtype {spec!r} (only plain numeric and string arrays are read)")
    return dtype


def _frombuffer(buffer, dtype, shape, order):
    """numpy's ``_frombuffer``: how protocol-5 pickles store an array's bytes."""
    if not (isinstance(buffer, (bytes, bytearray)) and isinstance(dtype, np.dtype) and not dtype.hasobject
            and isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape) and order in ("C", "F")):
        raise pickle.UnpicklingError("numpy _frombuffer called with arguments numpy never writes")
    return np.frombuffer(buffer, dtype).reshape(shape, order=order).copy()


def _scalar(dtype, data=None):
    """numpy's ``scalar``: a numpy number from its raw bytes."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, (bytes, str)):
        raise pickle.UnpicklingError("numpy scalar with an object dtype or non-bytes data")
    raw = data.encode("latin1") if isinstance(data, str) else data
    if len(raw) != dtype.itemsize:
        raise pickle.UnpicklingError("numpy scalar with the wrong number of bytes")
    return np.frombuffer(raw, dtype)[0]


def _bytearray(data=b""):
    """``bytearray``, but only from bytes: ``bytearray(10**11)`` would zero-fill 100 GB."""
    if not isinstance(data, (bytes, str)):
        raise pickle.UnpicklingError("bytearray built from something other than bytes")
    return bytearray(data.encode("latin1") if isinstance(data, str) else data)


def _codecs_encode(text, encoding="utf-8"):
    """How protocol-2 pickles spell ``bytes``: ``_codecs.encode(str, 'latin1')``."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode used for something other than bytes")
    return codecs.encode(text, "latin1")


# (module, name) -> what it resolves to. Nothing here runs code given any arguments.
ALLOWLIST = {
    ("builtins", "tuple"): tuple,  # paddle.save writes a Tensor as tuple((name, ndarray))
    ("builtins", "list"): list,
    ("builtins", "dict"): dict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "bytearray"): _bytearray,
    ("builtins", "complex"): complex,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): _codecs_encode,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # numpy 1.x
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # numpy 2.x
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,  # protocol 5
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy", "ndarray"): NDARRAY,
    ("numpy", "dtype"): _dtype,
}
# Python 2 pickles (old .pth and .pdparams) spell builtins this way.
_PY2_MODULES = {"__builtin__": "builtins"}


class RestrictedUnpickler(pickle._Unpickler):
    """Unpickles ``file`` resolving only ``ALLOWLIST`` (plus ``extra``).

    The pure-Python unpickler, because its opcode table can be extended: the
    C one cannot check BUILD. Errors name ``path``."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, path, extra=None):
        super().__init__(file, encoding="latin1")  # as paddle.load: Python 2 str -> str
        self.path = path
        self.allowed = {**ALLOWLIST, **(extra or {})}

    def find_class(self, module, name):
        key = (_PY2_MODULES.get(module, module), name)
        if key not in self.allowed:
            raise UnsafeFileError(f"{self.path}: refused to load global '{module}.{name}': {REFUSAL_HINT} "
                                  "(only tensor state dicts are read)")
        return self.allowed[key]

    def persistent_load(self, pid):
        raise UnsafeFileError(f"{self.path}: refused a persistent reference: {REFUSAL_HINT}")

    def load_build(self):
        _check_build(self.stack[-2], self.stack[-1], self.path)
        super().load_build()

    dispatch[pickle.BUILD[0]] = load_build


def _check_build(target, state, path):
    """BUILD sets an object's state; allow only the states numpy and
    OrderedDict write for themselves."""
    if isinstance(target, np.dtype):
        expected = target.__reduce__()[2]
        ok = (isinstance(state, tuple) and len(state) == len(expected) and state[0] == expected[0]
              and state[1] in ("<", ">", "|", "=") and state[2:] == expected[2:])
    elif type(target) is np.ndarray:
        ok = (isinstance(state, tuple) and len(state) == 5 and isinstance(state[2], np.dtype)
              and not state[2].hasobject and isinstance(state[4], (bytes, bytearray, str)))
    elif type(target) is collections.OrderedDict:  # torch keeps `_metadata` on state dicts
        ok = isinstance(state, dict) and all(isinstance(k, str) and not k.startswith("__") for k in state)
    else:
        ok = False
    if not ok:
        raise UnsafeFileError(f"{path}: refused to set the state of a {type(target).__name__}: {REFUSAL_HINT}")


def rebuild(obj, convert, path, depth=0, memo=None):
    """``obj`` with ``convert`` applied to every node top-down (a node it
    returns unchanged has its dict, list or tuple items rebuilt in turn).
    Shared nodes are converted once, so a small pickle that references one
    list a billion times costs no more than the list; cycles and absurd
    nesting end in a DataError."""
    memo = {} if memo is None else memo
    if id(obj) in memo:
        return memo[id(obj)]
    if depth > MAX_NESTING:
        raise DataError(f"{path}: nested deeper than {MAX_NESTING} levels (or circular): {REFUSAL_HINT}")
    new = convert(obj)
    if new is obj and type(obj) in (dict, collections.OrderedDict):
        new = type(obj)((k, rebuild(v, convert, path, depth + 1, memo)) for k, v in obj.items())
    elif new is obj and type(obj) in (list, tuple):
        new = type(obj)(rebuild(v, convert, path, depth + 1, memo) for v in obj)
    memo[id(obj)] = new
    return new


def unpickle(file, path, extra=None):
    """The object pickled at the current position of ``file``. Any failure is
    a DataError naming ``path``; a refused global an UnsafeFileError."""
    try:
        return RestrictedUnpickler(file, path, extra).load()
    except DataError:
        raise
    except _Refused as e:
        raise UnsafeFileError(f"{path}: {e}: {REFUSAL_HINT}") from None
    except Exception as e:  # a corrupt pickle fails in many ways; all of them mean "unreadable"
        raise DataError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from None


def unpickle_file(path, extra=None):
    """The one object pickled in the file at ``path`` (what ``paddle.save`` writes)."""
    try:
        with open(path, "rb") as f:
            return unpickle(f, path, extra)
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
