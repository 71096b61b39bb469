"""The comparison table as Markdown (for reading) and CSV (for tools)."""
import csv
import os

# (key, Markdown header, CSV header)
COLUMNS = [
    ("model", "Model", "model"),
    ("kind", "Run by", "kind"),
    ("easy", "AP easy", "ap_easy"),
    ("medium", "AP medium", "ap_medium"),
    ("hard", "AP hard", "ap_hard"),
    ("params", "Params (BN folded)", "params"),
    ("train_params", "Params (training)", "train_params"),
    ("macs", "MFLOPs (MACs) @{size}", "mflops"),
    ("fps", "FPS @{size}", "fps"),
]


def _markdown_cell(key, value):
    if value is None:
        return "-"
    if key in ("easy", "medium", "hard"):
        return f"{value:.4f}"
    if key in ("params", "train_params"):
        return f"{value:,}"
    if key == "macs":
        return f"{value / 1e6:.1f}"
    if key == "fps":
        return f"{value:.0f}"
    return str(value)


def _csv_cell(key, value):
    if value is None:
        return ""
    if key in ("easy", "medium", "hard"):
        return f"{value:.6f}"
    if key == "macs":
        return f"{value / 1e6:.3f}"
    if key == "fps":
        return f"{value:.2f}"
    return str(value)


def markdown_table(rows, input_size):
    headers = [md.format(size=f"{input_size}x{input_size}") for _, md, _ in COLUMNS]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_markdown_cell(key, row.get(key)) for key, _, _ in COLUMNS) + " |")
    return "\n".join(lines)


def write_markdown(rows, path, input_size, notes=()):
    """The table followed by the protocol notes, one bullet each."""
    text = markdown_table(rows, input_size) + "\n"
    if notes:
        text += "\n" + "\n".join(f"- {note}" for note in notes) + "\n"
    _write(path, text)


def write_csv(rows, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([name for _, _, name in COLUMNS])
        for row in rows:
            writer.writerow([_csv_cell(key, row.get(key)) for key, _, _ in COLUMNS])


def _write(path, text):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
