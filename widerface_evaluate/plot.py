"""Precision-recall curves to a PNG (matplotlib, Agg backend, imported lazily)."""


def plot_pr(result, path, title=None):
    """Draw every setting of ``result["pr"]`` with its AP in the legend; returns ``path``.

    ``result`` is what :func:`~widerface_evaluate.evaluate` returns (or any
    dict with ``"pr": {name: (precision, recall)}`` and ``result[name]`` = AP).
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 5), dpi=100)
    for name, (precision, recall) in result["pr"].items():
        ok = np.isfinite(precision) & np.isfinite(recall)
        ap = result.get(name, result.get("ap"))
        label = name.capitalize() if ap is None else "%s (AP %.4f)" % (name.capitalize(), ap)
        ax.plot(recall[ok], precision[ok], label=label, linewidth=1.8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("Recall")
    ax.set_ylabel("Precision")
    iou = result.get("iou")
    ax.set_title(title or ("WIDER FACE val, IoU %.2f" % iou if iou else "Precision-recall"))
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(str(path))
    plt.close(fig)
    return path
