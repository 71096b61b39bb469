"""The model zoo: released models by name, their official files and licences.

  python tools/zoo.py list                      # name, family, size, official WIDER AP, licence, cached
  python tools/zoo.py show scrfd_500m_kps       # its official files, sources (in order) and sha256
  python tools/zoo.py fetch scrfd_500m_kps      # fetch and convert now (prints the licence)
  python tools/zoo.py identify FILE [FILE...]   # which official file each is, by its sha256

Offline: PPFACEDET_ZOO_DIR=<folder> holds official files under their official
names (checked by sha256); PPFACEDET_OFFLINE=1 never touches the network.
"""
import argparse

import _path  # noqa: F401

from ppfacedet.cli import run


def licence_short(entry):
    text = entry.licence.split(" (")[0]
    return text if not entry.non_commercial or "non-commercial" in text else f"{text}; non-commercial"


def cache_state(entry):
    import glob

    from ppfacedet.zoo.fetch import locate
    from ppfacedet.zoo.store import converted_file
    if glob.glob(converted_file(entry, "*")[:-len(".pdparams")] + "*.pdparams"):
        return "converted"
    found, _ = locate(entry)
    return "official file" if found else "no"


def list_rows():
    from ppfacedet.zoo.catalog import ENTRIES
    header = ("name", "family", "params", "FLOPs@VGA", "WIDER AP (official) E/M/H", "licence", "cached")
    rows = [header]
    for e in ENTRIES:
        ap = "/".join(f"{v:.2f}" for v in e.wider_ap)
        rows.append((e.name, e.family, f"{e.params / 1e6:.3f}M", f"{e.flops / 1e9:.3f}G", ap, licence_short(e),
                     cache_state(e)))
    return rows


def print_table(rows):
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())


def show(name):
    from ppfacedet.zoo import entry
    from ppfacedet.zoo.fetch import licence_notice, source_label
    e = entry(name)
    print(f"{e.name} ({e.family}): {e.page}")
    print(f"  WIDER val AP {'/'.join(str(v) for v in e.wider_ap)} ({e.ap_source})")
    print(f"  {licence_notice(e)}")
    for f in e.files:
        size = f"{f.size} bytes" if f.size else "size not published"
        print(f"  {' = '.join(f.names)}: sha256 {f.sha256 or 'UNKNOWN'} ({size}); {f.checksum_origin}")
        for s in f.sources:
            print(f"      {s.kind:10s} {source_label(s)}" + (f"  [{s.note}]" if s.note else ""))


def identify(paths):
    from ppfacedet.zoo.registry import describe, file_sha256
    unknown = 0
    for path in paths:
        sha = file_sha256(path)
        what = describe(sha)
        unknown += what is None
        print(f"{path}: {what or 'not a file the zoo knows'} (sha256 {sha})")
    return 1 if unknown else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="every name with family, size, official AP, licence and cache state")
    sub.add_parser("show", help="one name's official files and sources").add_argument("name")
    sub.add_parser("fetch", help="fetch and convert one name now").add_argument("name")
    sub.add_parser("identify", help="name official files by sha256").add_argument("files", nargs="+")
    args = parser.parse_args()
    if args.command == "list":
        print_table(list_rows())
    elif args.command == "show":
        show(args.name)
    elif args.command == "fetch":
        from ppfacedet.zoo import converted_weights
        print(converted_weights(args.name))
    else:
        return identify(args.files)
    return 0


if __name__ == "__main__":
    run(main)
