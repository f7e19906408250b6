"""The figures of run and cross-validation reports: learning curves, confusion matrices, reliability diagrams.

Figures are drawn on :class:`matplotlib.figure.Figure` objects rendered by the Agg canvas, which works without
a display and never switches the backend of the process that imports clipwise (a notebook).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from clipwise.errors import ConfigError
from clipwise.evaluate._notes import find_best_epoch, numeric
from clipwise._io import atomic_path

LOSS_COLUMNS = ("train_loss", "val_loss", "train_clean_loss")
SCORE_METRICS = ("accuracy", "macro_f1", "lwlrap", "mAP")


def plot_curves(
    metrics: pd.DataFrame,
    path: str | os.PathLike,
    *,
    monitor: str = "val_accuracy",
    best_epoch: int | None = None,
) -> Path:
    """Plot learning curves: losses on the left, scores on the right, the best epoch as a vertical line.

    Args:
        metrics: the rows of metrics.csv; missing columns and NaN cells are skipped.
        path: the PNG to write.
        monitor: the column that chose the best epoch (highest score, or lowest if it names a loss).
        best_epoch: the best epoch; default: found from ``monitor``.

    Returns:
        ``path``.
    """
    x = numeric(metrics["epoch"]) if "epoch" in metrics else np.arange(len(metrics), dtype=float)
    if best_epoch is None:
        best_epoch = find_best_epoch(metrics, monitor)
    scores = [f"{split}_{m}" for m in SCORE_METRICS for split in ("val", "train_clean")]
    if "loss" not in monitor and monitor not in scores:
        scores.append(monitor)
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    for ax, columns, title in zip(fig.subplots(1, 2), (LOSS_COLUMNS, scores), ("loss", "score")):
        drawn = False
        for i, col in enumerate(columns):
            y = numeric(metrics[col]) if col in metrics else np.array([])
            ok = np.isfinite(x) & np.isfinite(y) if len(y) else np.zeros(0, bool)
            if ok.any():
                # Line style tells the split; colour tells the loss (left) or the metric (right, val and
                # clean-train of one metric share a colour).
                style = "--" if col.startswith("train_clean") else ":" if col.startswith("train") else "-"
                color = f"C{i if title == 'loss' else i // 2}"
                ax.plot(x[ok], y[ok], style, color=color, marker="o", markersize=3, label=col)
                drawn = True
        if best_epoch is not None:
            ax.axvline(best_epoch, color="0.4", linewidth=1, label=f"best epoch ({best_epoch})")
        if not drawn:
            ax.text(0.5, 0.5, f"no {title} values", ha="center", va="center", transform=ax.transAxes)
        ax.set(title=title, xlabel="epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if drawn or best_epoch is not None:
            ax.legend(fontsize=8)
    return save_figure(fig, path, dpi=110)


def plot_confusion(cm_normalised: np.ndarray, labels: Sequence[str], path: str | os.PathLike) -> Path:
    """Plot a row-normalised confusion matrix (rows = true class), readable from 2 to 60+ classes.

    The figure and fonts scale with the number of classes; cells are annotated up to 20 classes.

    Args:
        cm_normalised: (C, C) array with rows summing to 1 (or 0 for classes without clips).
        labels: the C class names.
        path: the PNG to write.

    Returns:
        ``path``.

    Raises:
        ConfigError: if the matrix is not C x C.
    """
    cm = np.asarray(cm_normalised, dtype=float)
    n = len(labels)
    if cm.shape != (n, n):
        raise ConfigError(f"cm_normalised must have shape ({n}, {n}) for {n} labels, got {cm.shape}")
    side = float(np.clip(2.5 + 0.32 * n, 4.5, 24.0))
    font = float(np.clip(220 / max(n, 1), 7.5, 11.0))  # a cell stays ~20 pt high, so 7.5 pt labels fit
    fig = Figure(figsize=(side + 1.5, side), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(cm, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true class")
    names = [lab if len(lab) <= 24 else lab[:23] + "…" for lab in labels]
    rotation, align = (90, "center") if n > 6 else (45, "right")
    ax.set_xticks(range(n), names, rotation=rotation, ha=align, fontsize=font)
    ax.set_yticks(range(n), names, fontsize=font)
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix (each row sums to 1)")
    if n <= 20:
        for (i, j), value in np.ndenumerate(cm):
            if value > 0:
                color = "white" if value > 0.5 else "black"
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=font * 0.85, color=color)
    return save_figure(fig, path, dpi=110)


def plot_reliability(cal: dict, path: str | os.PathLike) -> Path:
    """Reliability diagram: accuracy against mean confidence per bin, bin counts below."""
    fig = Figure(figsize=(5.2, 5.6), layout="constrained")
    top, bottom = fig.subplots(2, 1, height_ratios=(3, 1), sharex=True)
    bins = [b for b in cal["bins"] if b["count"]]
    width = cal["bins"][0]["high"] - cal["bins"][0]["low"]
    top.bar([b["low"] for b in bins], [b["accuracy"] for b in bins], width=width, align="edge", color="C0",
            edgecolor="white", label="accuracy")
    top.plot([0, 1], [0, 1], "--", color="gray", lw=1, label="perfect calibration")
    top.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o", color="C3", ms=4,
             label="bin mean confidence")
    top.set(ylim=(0, 1), ylabel="accuracy", title=f"Reliability (ECE {cal['ece']:.3f})")
    top.legend(loc="upper left", fontsize=8)
    bottom.bar([b["low"] for b in cal["bins"]], [b["count"] for b in cal["bins"]], width=width, align="edge",
               color="C7", edgecolor="white")
    bottom.set(xlim=(0, 1), xlabel="top-1 confidence", ylabel="clips")
    return save_figure(fig, path, dpi=110)


def save_figure(fig: Figure, path: str | os.PathLike, *, dpi: int) -> Path:
    """Write ``fig`` to ``path`` (atomically) at ``dpi``; returns the path."""
    FigureCanvasAgg(fig)  # render with Agg regardless of the process's backend
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi)
    return Path(path)
