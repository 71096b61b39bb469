"""The files of a PIR-TensorRT conversion folder, and the lock that keeps two
processes from converting into one.

Where Paddle puts them (python/paddle/tensorrt, Paddle 3.x):
``paddle.tensorrt.convert(prefix, TensorRTConfig(save_model_dir=D))`` saves the
converted program with ``paddle.static.save_inference_model(D, ...)``, i.e.
D.json and D.pdiparams (made absolute first), and writes each engine to
``f"{get_cache_path(D)}/engine_{hash}_{n}.trt"``: inside a folder named D,
with D exactly as given (a relative D stays relative). That path is stored in
the program as the ``engine_serialized_data`` attribute of its
``pd_op.tensorrt_engine`` op, and the op opens it when the program is loaded.
So a conversion works only where it was written: moving or renaming the
folder, or a relative D read from another working directory, loses the engines.
"""
import contextlib
import errno
import json
import os
import socket
import sys
import time

import yaml

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

ENGINE_ATTRIBUTE = "engine_serialized_data"


def engine_files(program_json):
    """The engine paths a converted PIR program names, in program order: the
    ``engine_serialized_data`` attribute of each tensorrt_engine op."""
    return string_attributes(program_json, ENGINE_ATTRIBUTE)


def string_attributes(program_json, name):
    """The values of every op attribute ``name`` in a PIR program file, in program
    order. Paddle 3.3.1 serializes an op's attributes, nested blocks included, as
    ``{"AT": {"#": "0.a_str", "D": value}, "N": name}`` (a string attribute)."""
    with open(program_json, encoding="utf-8") as f:
        program = json.load(f)
    found, pending = [], [program]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            if node.get("N") == name and isinstance(node.get("AT"), dict):
                found.append(node["AT"].get("D"))
            else:
                pending.extend(reversed(list(node.values())))
        elif isinstance(node, list):
            pending.extend(reversed(node))
    return found


def is_inside(path, folder):
    """Whether ``path`` is an absolute path under ``folder`` (a relative engine
    path would be looked up from whatever working directory loads the program)."""
    if not isinstance(path, str) or not os.path.isabs(path):
        return False
    folder = os.path.realpath(folder)
    return os.path.commonpath([os.path.realpath(path), folder]) == folder


def read_record(path):
    """The record as a dict; a file that is not a YAML mapping raises ValueError naming it."""
    with open(path, encoding="utf-8") as f:
        try:
            record = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: invalid YAML ({' '.join(str(e).split())})") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path}: not a mapping")
    return record


def write_record(path, record):
    """Write the record atomically (a temporary file renamed over it): it is the
    mark of a finished conversion, so it is either whole or absent."""
    temp = f"{path}.tmp-{os.getpid()}"
    with open(temp, "w", encoding="utf-8") as f:
        yaml.safe_dump(record, f, sort_keys=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, path)


@contextlib.contextmanager
def held_lock(path, timeout, poll=0.5):
    """Hold an exclusive lock on the file ``path`` (fcntl.flock) for the ``with``
    block. The kernel drops the lock when its holder exits or is killed, so a lock
    file left behind by a dead process blocks nobody: only a live holder is waited
    for. Waiting says who holds it; after ``timeout`` seconds TimeoutError names them."""
    if fcntl is None:
        raise OSError("PIR-TensorRT conversion needs POSIX file locks (fcntl), which this platform lacks")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        start, told = time.monotonic(), False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
            holder = os.pread(fd, 300, 0).decode(errors="replace").strip() or "another process"
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"{path} is still held by {holder} after {timeout:.0f} s")
            if not told:
                print(f"waiting for {holder}, which holds {path}", file=sys.stderr, flush=True)
                told = True
            time.sleep(poll)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%H:%M:%S')}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
