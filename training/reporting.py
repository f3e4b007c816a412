"""Run artifacts: the CSV history on resume, the training-curve plot, the summary.

Example:
    >>> trim_history("runs/x/history.csv", epochs_done=3)   # before resuming at epoch 3
    >>> plot_history("runs/x/history.csv", "runs/x/curves.png")
"""

import csv
import io
from pathlib import Path

from keras_mobilevit.fileio import atomic_path, write_text_atomic


def read_history(path):
    """Rows of a Keras CSVLogger file as dicts of floats; a torn last line is dropped."""
    path = Path(path)
    if not path.exists():
        return []
    rows = list(csv.reader(io.StringIO(path.read_text())))
    if not rows:
        return []
    header, rows = rows[0], rows[1:]
    history = []
    for row in rows:
        try:
            history.append({key: float(value) for key, value in zip(header, row, strict=True)})
        except ValueError:  # a partial row left by a kill
            break
    return history


def trim_history(path, epochs_done):
    """Keeps the rows of epochs before `epochs_done` (a resumed epoch is logged again)."""
    path = Path(path)
    history = [row for row in read_history(path) if row["epoch"] < epochs_done]
    if not path.exists():
        return
    if not history:
        path.unlink()
        return
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(history[0]), lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: int(v) if k == "epoch" else v for k, v in row.items()})
    write_text_atomic(path, out.getvalue())


def plot_history(csv_path, png_path):
    """Loss, top-1 and learning rate per epoch (train and held-out) as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    history = read_history(csv_path)
    if not history:
        return
    epochs = [row["epoch"] + 1 for row in history]
    panels = [("loss", "loss"), ("accuracy", "top-1 accuracy"), ("lr", "learning rate")]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6))
    for ax, (key, title) in zip(axes, panels):
        for prefix, label in (("", "train"), ("val_", "held-out")):
            if prefix + key in history[0]:
                ax.plot(epochs, [row[prefix + key] for row in history], marker=".", label=label)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if key != "lr":
            ax.legend()
    fig.tight_layout()
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def format_summary(summary):
    """The end-of-run report, as printed."""
    lines = ["", "=" * 64, f"Finished {summary['model']} on {summary['dataset']}"]
    metrics = summary["metrics"]
    weights = "EMA weights" if summary["ema"] else "final weights"
    lines.append(f"  held-out top-1 ({weights}): {100 * metrics['accuracy']:.2f}%"
                 + (f"   top-5: {100 * metrics['top5']:.2f}%" if "top5" in metrics else "")
                 + f"   loss: {metrics['loss']:.4f}   [{summary['eval_split']}, "
                 f"{summary['eval_examples']} images]")
    if summary.get("raw_accuracy") is not None and summary["ema"]:
        lines.append(f"  held-out top-1 (raw weights, last epoch): "
                     f"{100 * summary['raw_accuracy']:.2f}%")
    if summary.get("images_per_sec"):
        lines.append(f"  training throughput: {summary['images_per_sec']:.0f} images/s "
                     f"(training steps only, after tracing)")
    lines.append(f"  wall time: {summary['wall_seconds'] / 60:.1f} min"
                 + (" (resumed)" if summary["resumed"] else ""))
    for key, label in (("model_path", "model"), ("history_path", "history (CSV)"),
                       ("plot_path", "curves (PNG)"), ("log_dir", "TensorBoard logs"),
                       ("summary_path", "summary (JSON)")):
        lines.append(f"  {label + ':':18s}{summary[key]}")
    lines.append("=" * 64)
    return "\n".join(lines)
