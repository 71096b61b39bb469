"""The layout both label formats share: a ``# <image> ...`` header line, then
one line per face. A format supplies how to read a header and a face line;
this module walks the file, reports bad lines with file:line and skips only
the image they belong to."""
import os

from .record import ParseReport, make_record


def parse_blocks(label_file, image_root, read_header, read_face):
    """read_header(fields after '#') -> (relative path, (w, h) or None), or
    raise ValueError; read_face(numbers) -> (box xyxy, landmarks or None), or
    raise ValueError. Returns (records, ParseReport)."""
    report = ParseReport()
    records, header, faces, bad = [], None, [], False

    def flush():
        if header is not None and not bad:
            rel, size, where = header
            records.append(make_record(os.path.join(image_root, rel), os.path.splitext(rel)[0], faces,
                                       where, report, size))

    with open(label_file, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            where = f"{label_file}:{lineno}"
            try:
                text = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                report.warn(where, "not UTF-8 text (a binary or damaged file?)")
                bad = True
                continue
            if not text:
                continue
            if text.startswith("#"):
                flush()
                faces, bad = [], False
                try:
                    rel, size = read_header(text[1:].split())
                    header = (rel, size, where)
                except ValueError as e:
                    report.warn(where, str(e))
                    header, bad = None, True
                continue
            if header is None:
                if not bad:
                    report.warn(where, "face line before any '# path' header")
                continue
            try:
                values = [float(v) for v in text.split()]
            except ValueError:
                report.warn(where, f"not a number in {text!r}")
                bad = True
                continue
            try:
                box, landmarks = read_face(values)
            except ValueError as e:
                report.warn(where, str(e))
                bad = True
                continue
            faces.append((box, landmarks, where))
    flush()
    return records, report
