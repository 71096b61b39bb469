"""Refusing damaged JPEG and PNG files (standalone: cv2 and numpy only).

OpenCV decodes a JPEG cut off halfway with only a warning on stderr and a
grey fill. ``decode_checked`` checks the structure (start and end markers,
PNG chunk CRCs, the decoded size against the header's) and that the decoder
printed no warning. ppfacedet/data/image_io.py holds the library's copy of
these checks (deploy/ cannot import ppfacedet); tests/test_image_check.py
keeps the two giving the same verdicts.

``declared_size`` reads an image's size from its header alone, so that the
service (serve.py) refuses an oversized image before decoding it.
"""
import os
import struct
import threading
import zlib

import cv2
import numpy as np

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


SERVED_FORMATS = "JPEG, PNG, BMP or WebP"


def _bmp_size(data):
    if len(data) < 26:
        return "truncated inside its headers", None
    header_size = int.from_bytes(data[14:18], "little")
    if header_size == 12:  # OS/2 BITMAPCOREHEADER: unsigned 16-bit sides
        width, height = struct.unpack("<HH", data[18:22])
    elif header_size >= 40:
        width, height = struct.unpack("<ii", data[18:26])
    else:
        return f"corrupt header (info header of {header_size} bytes)", None
    return None, (abs(height), width)  # a negative height: rows stored top-down


def _webp_size(data):
    kind, payload = data[12:16], data[20:30]
    if kind == b"VP8 " and len(payload) >= 10 and payload[3:6] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", payload[6:10])
        return None, (height & 0x3FFF, width & 0x3FFF)
    if kind == b"VP8L" and len(payload) >= 5 and payload[0] == 0x2F:
        bits = int.from_bytes(payload[1:5], "little")
        return None, (((bits >> 14) & 0x3FFF) + 1, (bits & 0x3FFF) + 1)
    if kind == b"VP8X" and len(payload) >= 10:
        return None, (int.from_bytes(payload[7:10], "little") + 1, int.from_bytes(payload[4:7], "little") + 1)
    return "corrupt or truncated header", None


def declared_size(data):
    """(format, (height, width)) from the header alone, for the formats the
    service takes; ValueError naming the problem for anything else (other
    formats, damaged or truncated JPEG / PNG structure, unreadable headers)."""
    if not data:
        raise ValueError("empty body")
    if data.startswith(b"\xff\xd8"):
        kind, (problem, size) = "JPEG", _jpeg_structure(data)
    elif data.startswith(_PNG_SIGNATURE):
        kind, (problem, size) = "PNG", _png_structure(data)
    elif data.startswith(b"BM"):
        kind, (problem, size) = "BMP", _bmp_size(data)
    elif data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        kind, (problem, size) = "WebP", _webp_size(data)
    else:
        raise ValueError(f"not a {SERVED_FORMATS} image")
    if problem:
        raise ValueError(f"{kind} {problem}")
    if size is None or min(size) < 1:
        raise ValueError(f"{kind} header gives no image size")
    return kind, size
