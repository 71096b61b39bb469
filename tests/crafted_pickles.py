"""Builds pickle-based weight files at test time: genuine-looking ones (a
PyTorch ``.pth`` in the zip or legacy layout, without torch) and malicious
ones carrying code-execution gadgets. Nothing built here is ever committed.

Pickles are composed from protocol-0 opcodes, which any unpickler accepts
inside any stream, so a gadget can be spliced into a file paddle.save wrote.
"""
import io
import struct
import zipfile

import numpy as np

SLOT = "GADGET_SLOT"  # a string placeholder paddle.save writes, replaced by a gadget
LEGACY_MAGIC = 0x1950a86a20f9469cfc6c


# -- protocol-0 opcode composition ------------------------------------------------
def text(s):
    return b"V" + s.encode("raw_unicode_escape") + b"\n"


def integer(i):
    return b"I%d\n" % i


def tup(*items):
    return b"(" + b"".join(items) + b"t"


def lst(*items):
    return b"(" + b"".join(items) + b"l"


def dct(pairs):
    return b"(" + b"".join(k + v for k, v in pairs) + b"d"


def glob(module, name):
    return b"c%s\n%s\n" % (module.encode(), name.encode())


def call(func, *args):
    """``func(*args)``; ``func`` is a fragment (usually ``glob(...)``)."""
    return func + tup(*args) + b"R"


def whole(fragment):
    return b"\x80\x02" + fragment + b"."


# -- gadgets: each would create ``marker`` when unpickled by pickle.load ----------
def gadgets(marker, tmp_dir):
    """{family: (fragment, the global it must be refused with)}."""
    marker = str(marker)
    code = text(f"open({marker!r}, 'w').close()")
    system = call(glob("builtins", "getattr"), call(glob("builtins", "__import__"), text("os")), text("system"))
    npy = tmp_dir / "object_array.npy"
    np.save(npy, np.array([_Exec(f"open({marker!r}, 'w').close()")], dtype=object), allow_pickle=True)
    return {
        "builtins.exec": (call(glob("builtins", "exec"), code), "builtins.exec"),
        "builtins.eval": (call(glob("builtins", "eval"), code), "builtins.eval"),
        "builtins.getattr": (call(system, text(f"touch {marker}")), "builtins.getattr"),
        # __import__ first, its module kept in the memo, then getattr on it
        "builtins.__import__": (call(glob("builtins", "__import__"), text("os")) + b"p90001\n0"
                                + call(call(glob("builtins", "getattr"), b"g90001\n", text("system")),
                                       text(f"touch {marker}")), "builtins.__import__"),
        "numpy.runstring": (call(glob("numpy.testing._private.utils", "runstring"), code, b"(d"),
                            "numpy.testing._private.utils.runstring"),
        "numpy.load": (call(glob("numpy", "load"), text(str(npy)), b"N", b"I01\n"), "numpy.load"),
        "os.system": (call(glob("os", "system"), text(f"touch {marker}")), "os.system"),
        "posix.system": (call(glob("posix", "system"), text(f"touch {marker}")), "posix.system"),
        "subprocess.call": (call(glob("subprocess", "call"), lst(text("touch"), text(marker))), "subprocess.call"),
        "subprocess.Popen": (call(glob("subprocess", "Popen"), lst(text("touch"), text(marker))),
                             "subprocess.Popen"),
    }


class _Exec:
    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        return exec, (self.code,)


def splice(data, fragment):
    """A protocol-2 pickle with its SLOT string replaced by ``fragment``."""
    slot = b"X" + struct.pack("<I", len(SLOT)) + SLOT.encode()
    assert data.count(slot) == 1, "the placeholder must appear once"
    return data.replace(slot, fragment)


# -- PyTorch checkpoints without torch ---------------------------------------------
def tensor(key, shape):
    """A float32 tensor over storage ``key`` (as torch.save writes it)."""
    numel = int(np.prod(shape))
    strides = [int(np.prod(shape[i + 1:])) for i in range(len(shape))]
    pid = tup(text("storage"), glob("torch", "FloatStorage"), text(key), text("cpu"), integer(numel)) + b"Q"
    return call(glob("torch._utils", "_rebuild_tensor_v2"), pid, integer(0),
                tup(*map(integer, shape)), tup(*map(integer, strides)), b"I00\n",
                call(glob("collections", "OrderedDict")))


def state_dict_body(arrays, extra=b""):
    """{'state_dict': OrderedDict(name -> tensor)} plus optional extra (key, value) fragments."""
    pairs = [(text(name), tensor(str(i), a.shape)) for i, (name, a) in enumerate(arrays.items())]
    state = call(glob("collections", "OrderedDict"), lst(*[tup(k, v) for k, v in pairs]))
    return dct([(text("state_dict"), state)] + ([(text("meta"), extra)] if extra else []))


def zip_pth(body, arrays):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", whole(body))
        for i, a in enumerate(arrays.values()):
            zf.writestr(f"archive/data/{i}", np.ascontiguousarray(a, np.float32).tobytes())
        zf.writestr("archive/version", "3\n")
    return buf.getvalue()


def legacy_pth(body, arrays, header=None):
    """Magic, protocol, sys info (or ``header`` fragments in their place), the
    object, the storage keys, then each storage as a count and raw bytes."""
    header = header or [integer(LEGACY_MAGIC), integer(1001), dct([(text("little_endian"), b"I01\n")])]
    out = b"".join(whole(h) for h in header) + whole(body)
    out += whole(lst(*[text(str(i)) for i in range(len(arrays))]))
    for a in arrays.values():
        out += struct.pack("<q", a.size) + np.ascontiguousarray(a, np.float32).tobytes()
    return out
