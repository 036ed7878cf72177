"""The report's figures (matplotlib, no display): learning curves, the out-of-fold confusion matrix (two or K
classes), ROC curve (two classes) and reliability diagram, written as PNG files or returned as PNG bytes."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve

from pipeline.fileio import atomic_path

matplotlib.use("Agg")  # files only, no display; must precede the pyplot import
import matplotlib.pyplot as plt
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

DPI = 100
CLASSES = ("cat", "dog")


def _save(fig, path: Path) -> Path:
    """Write ``fig`` as a PNG atomically and close it."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    return path


MARKERS = "osD^v<>ph*"


def ringed_row(metrics: pd.DataFrame, best_epoch: int | None) -> int:
    """The row of one fold's ``metrics`` whose epoch the curves ring: ``best_epoch`` (from 1; metrics.csv counts
    from 0), else the lowest validation loss."""
    if best_epoch is not None and (metrics.epoch + 1 == best_epoch).any():
        return metrics.index[metrics.epoch + 1 == best_epoch][0]
    return metrics.val_loss.idxmin()


def plot_curves(metrics: pd.DataFrame, path: Path, best_epochs: dict[int, int] | None = None) -> Path:
    """Write :func:`curves_figure` as a PNG.

    Args:
        metrics: the run's metrics.csv.
        path: the PNG to write.
        best_epochs: fold -> best epoch (from 1, as the epoch log and cv.json count); default: the lowest
            validation loss.
    """
    return _save(curves_figure(metrics, best_epochs), path)


def curves_figure(metrics: pd.DataFrame, best_epochs: dict[int, int] | None = None):
    """Loss, accuracy and learning rate against epoch (epochs from 1): one colour and marker per fold, train
    dashed and validation solid, each fold's best epoch (the one best.pt keeps) ringed; one legend, outside the
    plots on the right, so that it covers no curve."""
    fig, (loss_ax, acc_ax, lr_ax) = plt.subplots(1, 3, figsize=(14, 4.2), layout="constrained")
    folds = list(metrics.sort_values(["fold", "epoch"]).groupby("fold"))
    for i, (fold, m) in enumerate(folds):
        style = {"color": f"C{i % 10}", "marker": MARKERS[i % len(MARKERS)], "ms": 3}
        best = ringed_row(m, (best_epochs or {}).get(fold))
        for ax, train, val in ((loss_ax, m.train_loss, m.val_loss), (acc_ax, m.train_acc, m.val_acc)):
            ax.plot(m.epoch + 1, train, "--", color=style["color"], alpha=0.6)
            ax.plot(m.epoch + 1, val, "-", label=f"fold {fold}", **style)
            ax.plot(m.epoch[best] + 1, val[best], "o", ms=11, mfc="none", mec=style["color"], mew=1.5)
    lrs = [m.lr.to_numpy() for _, m in folds]
    same_lr = all(len(lr) == len(lrs[0]) and np.allclose(lr, lrs[0]) for lr in lrs)
    for i, (_fold, m) in enumerate(folds[:1] if same_lr else folds):  # identical schedules: one line, not N on top
        lr_ax.plot(m.epoch + 1, m.lr, "-", color=f"C{i % 10}", marker=MARKERS[i % len(MARKERS)], ms=3)
    key = [Line2D([], [], color="grey", ls="--", label="train"), Line2D([], [], color="grey", ls="-", label="val"),
           Line2D([], [], color="grey", ls="", marker="o", ms=9, mfc="none", label="best epoch")]
    lr_title = "learning rate (the head's, after the epoch)" + (", every fold" if same_lr and len(folds) > 1 else "")
    for ax, title, ylabel in ((loss_ax, "loss", "cross-entropy"), (acc_ax, "accuracy", "accuracy"),
                              (lr_ax, lr_title, "learning rate")):
        ax.set(title=title, xlabel="epoch", ylabel=ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    handles, _ = loss_ax.get_legend_handles_labels()
    fig.legend(handles=handles + key, loc="outside right upper", fontsize=8)
    return fig


def plot_confusion(labels: np.ndarray, predicted: np.ndarray, classes: tuple[str, ...], path: Path,
                   title: str = "out-of-fold") -> Path:
    """Counts and row shares of true against predicted class; the shares colour the cells. Up to 12 classes
    each cell is written out (count and share; from 6 classes the count only), beyond that the colours say it.

    Args:
        labels, predicted: class indices per image.
        classes: the class names, in index order.
        path: the PNG to write.
        title: what the predictions are.
    """
    k = len(classes)
    counts = confusion_matrix(labels, predicted, labels=list(range(k)))
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    side = 4.5 if k <= 2 else min(16.0, 3 + 0.55 * k)
    fig, ax = plt.subplots(figsize=(side + 0.5, side), layout="constrained")
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    if k <= 12:
        for (i, j), count in np.ndenumerate(counts):
            if k >= 6 and count == 0:
                continue
            text = f"{count}\n{share[i, j]:.1%}" if k < 6 else str(count)
            ax.text(j, i, text, ha="center", va="center", fontsize=12 if k < 6 else 8,
                    color="white" if share[i, j] > 0.5 else "black")
    ticks = list(range(k))
    ax.set(xticks=ticks, yticks=ticks, xticklabels=classes, yticklabels=classes, xlabel="predicted", ylabel="true",
           title=f"{title}, n={len(labels)}, accuracy {np.trace(counts) / max(1, len(labels)):.3f}")
    if k > 2:
        ax.tick_params(axis="x", labelrotation=60, labelsize=8 if k > 12 else 9)
        ax.tick_params(axis="y", labelsize=8 if k > 12 else 9)
    return _save(fig, path)


def plot_roc(oof: pd.DataFrame, path: Path, column: str = "prob_dog", classes: tuple[str, str] = CLASSES) -> Path:
    """The overall out-of-fold ROC curve with its AUC, and each fold's as a thin line (two classes).

    Args:
        oof: out-of-fold predictions (``label``, ``fold`` and ``column``, P(positive)).
        path: the PNG to write.
        column: the probability column.
        classes: the negative and the positive class.
    """
    fig, ax = plt.subplots(figsize=(5, 5), layout="constrained")
    parts = [(f"fold {k}", part, {"lw": 0.8, "alpha": 0.6}) for k, part in oof.groupby("fold")]
    for label, part, style in [*parts, ("all", oof, {"lw": 2.5, "color": "black"})]:
        if part.label.nunique() < 2:  # ROC needs both classes
            continue
        fpr, tpr, _ = roc_curve(part.label, part[column])
        ax.plot(fpr, tpr, label=f"{label} (AUC {roc_auc_score(part.label, part[column]):.3f})", **style)
    ax.plot([0, 1], [0, 1], ":", color="grey")
    negative, positive = classes
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel=f"false positive rate ({negative} called {positive})",
           ylabel=f"true positive rate ({positive} found)", title="out-of-fold ROC")
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_calibration(labels: np.ndarray, probs: np.ndarray, path: Path, positive: str = "dog",
                     n_bins: int = 10) -> Path:
    """The reliability diagram, with the diagonal of perfect calibration and below it a histogram of the
    predictions. Two classes: the observed share of the positive class against the mean predicted P(positive)
    per bin. K classes: the share of right answers against the confidence (the top class's probability).

    Points under the diagonal on the right (and above it on the left) are over-confidence, which
    log-loss punishes hardest.

    Args:
        labels: class indices.
        probs: P(positive) (n,) or class probabilities (n, K).
        path: the PNG to write.
        positive: the positive class (two classes).
        n_bins: equal-width bins.
    """
    labels, probs = np.asarray(labels).astype(int), np.asarray(probs, dtype=np.float64)
    if probs.ndim == 1:
        outcome, said = labels, probs
        ylabel, xlabel = f"share of {positive} (observed)", f"predicted P({positive})"
    else:
        said = probs.max(axis=1)
        outcome = (probs.argmax(axis=1) == labels).astype(int)
        ylabel, xlabel = "share right (observed)", "confidence (the top class's probability)"
    fig, (ax, hist_ax) = plt.subplots(2, 1, figsize=(5, 6), height_ratios=(3, 1), sharex=True, layout="constrained")
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfectly calibrated")
    if len(set(outcome)) == 2:
        observed, predicted = calibration_curve(outcome, said, n_bins=n_bins, strategy="uniform")
        ax.plot(predicted, observed, "-o", color="C0", ms=4, label="out-of-fold")
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel=ylabel, title=f"reliability, n={len(labels)}, {n_bins} bins")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    hist_ax.hist(said, bins=np.linspace(0, 1, 2 * n_bins + 1), color="C0", alpha=0.7)
    hist_ax.set(xlabel=xlabel, ylabel="photos")
    return _save(fig, path)


def png_bytes(fig) -> bytes:
    """``fig`` as PNG bytes (not written to a file); the figure is closed."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    return buffer.getvalue()
