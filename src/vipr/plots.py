"""PNG plots of run folders: training curves, confusion matrices, and runs overlaid.

Drawn with matplotlib's Agg canvas (no display, no pyplot state), imported only when a plot is
made, and only when a run ends or stops: nothing here runs inside the training loop.

    RUN/plots/loss.png, lr.png, throughput.png   from metrics.jsonl (per step; per epoch if no steps)
    RUN/plots/knn.png                            the online kNN probe (train.knn_every), per epoch
    RUN/plots/confusion.png                      classification evaluation (knn, linear, finetune)

Every file is written atomically (vipr.fsutil). ``write_run_plots`` never fails a run: a plot
that cannot be drawn is a warning.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from vipr.errors import ViprError
from vipr.fsutil import atomic_path

PLOTS_DIR = "plots"
# file name -> (metric of the step records, y-axis label); epoch records stand in when a run logged no steps
CURVES = {"loss": ("loss", "loss"), "lr": ("lr", "learning rate"), "throughput": ("images_per_s", "images / s")}
EPOCH_CURVES = {"knn": ("knn_top1", "kNN top-1 (%)"), "val_acc": ("val_acc", "validation accuracy (%)")}
MAX_TICK_CLASSES = 30  # class names on the confusion matrix's axes up to this many classes
MAX_COUNT_CLASSES = 12  # and the counts in its cells


def read_history(folder: Path) -> list[dict]:
    """metrics.jsonl's records (none when absent); a torn last line (a killed run) is skipped."""
    path = Path(folder) / "metrics.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def series(records: list[dict], metric: str) -> tuple[str, list[float], list[float]] | None:
    """(x-axis name, x, y) of ``metric``: per step from step records, else per epoch (also ``METRIC_mean``)."""
    steps = [(r["step"], r[metric]) for r in records if "epoch_seconds" not in r and _number(r.get(metric))]
    if steps:
        return "step", *map(list, zip(*steps))
    for key in (metric, f"{metric}_mean"):
        epochs = [(r["epoch"], r[key]) for r in records if "epoch_seconds" in r and _number(r.get(key))]
        if epochs:
            return "epoch", *map(list, zip(*epochs))
    return None


def write_run_plots(folder: str | Path) -> list[Path]:
    """The curves of run folder ``folder`` under ``folder/plots``; returns the files written."""
    folder = Path(folder)
    records = read_history(folder)
    written = []
    for name, (metric, label) in {**CURVES, **EPOCH_CURVES}.items():
        found = series(records, metric)
        if found is None:
            continue
        path = folder / PLOTS_DIR / f"{name}.png"
        try:
            save(line_figure([(folder.name, found[1], found[2])], found[0], label), path)
        except Exception as err:  # a plot is a convenience: the numbers are in metrics.jsonl
            warnings.warn(f"could not draw {path} ({type(err).__name__}: {err}); the figures are in metrics.jsonl",
                          stacklevel=2)
            continue
        written.append(path)
    return written


def overlay_runs(folders: dict[str, Path], metric: str, out: str | Path) -> Path:
    """One figure of ``metric`` for every run (label -> run folder), written to ``out`` (.png)."""
    lines, x_name, available = [], None, set()
    for label, folder in folders.items():
        records = read_history(folder)
        found = series(records, metric)
        available |= {k for r in records for k, v in r.items() if _number(v) and k not in ("step", "epoch")}
        if found is not None and x_name in (None, found[0]):
            x_name = found[0]
            lines.append((label, found[1], found[2]))
    if not lines:
        names = ", ".join(sorted(available)) or "none (no metrics.jsonl)"
        raise ViprError(f"no run among {', '.join(folders)} logged '{metric}'; pass --metric with one of: {names}")
    save(line_figure(lines, x_name, metric), Path(out))
    return Path(out)


def confusion_matrix(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts: row = true class, column = predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels, np.int64), np.asarray(predictions, np.int64)), 1)
    return matrix


def write_confusion(folder: str | Path, matrix: np.ndarray, classes: list[str]) -> Path | None:
    """RUN/plots/confusion.png of a (C, C) count matrix, rows normalised; None (a warning) if it cannot be drawn."""
    path = Path(folder) / PLOTS_DIR / "confusion.png"
    try:
        save(confusion_figure(matrix, classes), path)
    except Exception as err:
        warnings.warn(f"could not draw {path} ({type(err).__name__}: {err})", stacklevel=2)
        return None
    return path


def line_figure(lines: list[tuple[str, list, list]], x_name: str, y_name: str):
    figure = _figure((6.4, 4.0))
    axes = figure.add_subplot()
    for label, x, y in lines:
        axes.plot(x, y, label=label, linewidth=1.2)
    axes.set_xlabel(x_name)
    axes.set_ylabel(y_name)
    axes.grid(alpha=0.3)
    if len(lines) > 1:
        axes.legend(fontsize="small")
    return figure


def confusion_figure(matrix: np.ndarray, classes: list[str]):
    count = len(matrix)
    names = list(classes) + [str(i) for i in range(len(classes), count)]
    rates = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)  # per true class
    side = min(4.0 + 0.25 * count, 12.0)
    figure = _figure((side + 1.0, side))
    axes = figure.add_subplot()
    image = axes.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, label="share of the true class")
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    if count <= MAX_TICK_CLASSES:
        axes.set_xticks(range(count), names[:count], rotation=90, fontsize="small")
        axes.set_yticks(range(count), names[:count], fontsize="small")
    if count <= MAX_COUNT_CLASSES:
        for (row, col), value in np.ndenumerate(matrix):
            axes.text(col, row, str(value), ha="center", va="center", fontsize="small",
                      color="white" if rates[row, col] > 0.5 else "black")
    return figure


def save(figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100, bbox_inches="tight")


def _figure(size: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size)
    FigureCanvasAgg(figure)  # the Agg canvas: no display, no global pyplot state
    return figure


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)
