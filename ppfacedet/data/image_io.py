"""Reading images into 3-channel BGR uint8, whatever they were stored as,
and refusing damaged ones.

OpenCV decodes a JPEG cut off halfway with only a warning on stderr and a
grey fill, so detections would silently cover half a picture. Before a
JPEG or PNG is trusted we check its structure (start and end markers, PNG
chunk CRCs, that the decoded size is the size its header declares) and
that the decoder printed no warning. ``deploy/python/image_check.py`` does
the same checks without ppfacedet; a test keeps the two in agreement.
"""
import os
import struct
import threading
import zlib

import cv2
import numpy as np

from ..core.errors import DataError

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# SOF markers carry the frame size; C4 (DHT), C8 (reserved) and CC (DAC) share the range
_SOF_MARKERS = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE_MARKERS = {0x01, 0xD8} | set(range(0xD0, 0xD8))
_stderr_lock = threading.Lock()


def _jpeg_structure(data):
    """(problem or None, (height, width) from the frame header or None)."""
    if not data.startswith(b"\xff\xd8"):
        return "not a JPEG (no start-of-image marker)", None
    pos, size = 2, None
    while True:
        if pos + 4 > len(data):
            return "truncated inside its headers", None
        if data[pos] != 0xFF:
            return f"corrupt header (no marker at byte {pos})", None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE_MARKERS:
            pos += 2
            continue
        if marker == 0xD9:
            return "no image data before its end marker", None
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if length < 2:
            return f"corrupt header (segment length {length} at byte {pos})", None
        if marker in _SOF_MARKERS and length >= 7 and pos + 9 <= len(data):
            height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
            size = (height, width) if height else None  # height 0: given later by a DNL marker
        if marker == 0xDA:
            break
        pos += 2 + length
    # entropy-coded data cannot contain FF D9 (a data FF is stuffed as FF 00), so
    # an end marker after the first scan header means the file was not cut short
    # (searched from the end, where it normally is: a forward search costs 0.1 ms)
    if data.rfind(b"\xff\xd9", pos) < 0:
        return "truncated (no end-of-image marker)", size
    return None, size


def _png_structure(data):
    """(problem or None, (height, width) from IHDR or None). libpng checks the
    CRC of image-data chunks itself; the other chunks' CRCs are checked here."""
    if not data.startswith(_PNG_SIGNATURE):
        return "not a PNG (bad signature)", None
    view, pos, size = memoryview(data), len(_PNG_SIGNATURE), None
    while pos + 12 <= len(data):
        length, kind = struct.unpack(">I4s", view[pos:pos + 8])
        end = pos + 12 + length
        if end > len(data):
            return f"truncated (chunk {kind!r} runs past the end of the file)", size
        if kind != b"IDAT" and zlib.crc32(view[pos + 4:end - 4]) != int.from_bytes(view[end - 4:end], "big"):
            return f"CRC error in its {kind.decode('latin1')} chunk", size
        if kind == b"IHDR" and length >= 8:
            width, height = struct.unpack(">II", view[pos + 8:pos + 16])
            size = (height, width)
        if kind == b"IEND":
            return None, size
        pos = end
    return "truncated (no IEND chunk)", size


def _decode(data, flags):
    try:
        return cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error:  # OpenCV asserts on some malformed headers instead of returning None
        return None


def _decode_capturing_warnings(data, flags):
    """cv2.imdecode, and what the decoder printed on stderr meanwhile (libjpeg
    reports damaged data only there). The lock keeps two threads from
    swapping file descriptor 2 at once."""
    with _stderr_lock:
        try:
            saved = os.dup(2)
        except OSError:  # no stderr at all (a daemon): nothing to capture
            return _decode(data, flags), ""
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)  # a flood of warnings must not block the decoder
        try:
            os.dup2(write_end, 2)
            image = _decode(data, flags)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(write_end)
        printed = os.read(read_end, 1 << 16).decode("utf-8", "replace").strip()  # one pipe's worth at most
        os.close(read_end)
    return image, printed


def decode_checked(data, flags=cv2.IMREAD_UNCHANGED):
    """(image or None, problem or None) for encoded image bytes. JPEG and PNG
    are checked for damage; other formats are decoded as they are."""
    if not data:
        return None, "empty file"
    if data.startswith(b"\xff\xd8"):
        problem, size = _jpeg_structure(data)
    elif data.startswith(_PNG_SIGNATURE):
        problem, size = _png_structure(data)
    else:
        image, _ = _decode_capturing_warnings(data, flags)
        return image, None
    if problem:
        return None, problem
    image, printed = _decode_capturing_warnings(data, flags)
    if image is None or image.size == 0:
        return None, f"cannot decode ({printed.splitlines()[-1]})" if printed else "cannot decode"
    if printed:
        return None, f"damaged (decoder: {printed.splitlines()[0]})"
    if size and image.shape[:2] != size:
        return None, f"decoded to {image.shape[1]}x{image.shape[0]}, but its header says {size[1]}x{size[0]}"
    return image, None


def read_image(path):
    """BGR uint8 [H,W,3]. Grayscale is replicated, alpha dropped, 16-bit scaled.
    Missing, undecodable, truncated or corrupt files raise DataError naming the file."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: image file not found")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    image, problem = decode_checked(data)
    if problem:
        raise DataError(f"{path}: {problem}")
    if image is None or image.size == 0:
        raise DataError(f"{path}: cannot decode image (corrupt or unsupported format)")
    if image.dtype == np.uint16:
        image = (image / 257).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise DataError(f"{path}: unsupported pixel type {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return image
