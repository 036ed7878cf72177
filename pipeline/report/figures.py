"""The report's figures (matplotlib, no display): learning curves, the out-of-fold confusion matrix, ROC
curve and reliability diagram, written as PNG files or returned as PNG bytes."""

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


def plot_curves(metrics: pd.DataFrame, path: Path, best_epochs: dict[int, int] | None = None) -> Path:
    """Loss, accuracy and learning rate against epoch (epochs from 1): one colour and marker per fold, train
    dashed and validation solid, each fold's best epoch (the one best.pt keeps) ringed.

    Args:
        metrics: the run's metrics.csv.
        path: the PNG to write.
        best_epochs: fold -> best epoch (from 0), as cv.json records it; default: the lowest validation loss.
    """
    fig, (loss_ax, acc_ax, lr_ax) = plt.subplots(1, 3, figsize=(13, 4.2), layout="constrained")
    folds = list(metrics.sort_values(["fold", "epoch"]).groupby("fold"))
    for i, (fold, m) in enumerate(folds):
        style = {"color": f"C{i % 10}", "marker": MARKERS[i % len(MARKERS)], "ms": 3}
        best = m.val_loss.idxmin()
        if best_epochs and fold in best_epochs and (m.epoch == best_epochs[fold]).any():
            best = m.index[m.epoch == best_epochs[fold]][0]
        for ax, train, val in ((loss_ax, m.train_loss, m.val_loss), (acc_ax, m.train_acc, m.val_acc)):
            ax.plot(m.epoch + 1, train, "--", color=style["color"], alpha=0.6)
            ax.plot(m.epoch + 1, val, "-", label=f"fold {fold}", **style)
            ax.plot(m.epoch[best] + 1, val[best], "o", ms=11, mfc="none", mec=style["color"], mew=1.5)
    lrs = [m.lr.to_numpy() for _, m in folds]
    same_lr = all(len(lr) == len(lrs[0]) and np.allclose(lr, lrs[0]) for lr in lrs)
    for i, (fold, m) in enumerate(folds[:1] if same_lr else folds):  # identical schedules: one line, not N on top
        lr_ax.plot(m.epoch + 1, m.lr, "-", color=f"C{i % 10}", marker=MARKERS[i % len(MARKERS)], ms=3,
                   label="every fold" if same_lr else f"fold {fold}")
    key = [Line2D([], [], color="grey", ls="--", label="train"), Line2D([], [], color="grey", ls="-", label="val"),
           Line2D([], [], color="grey", ls="", marker="o", ms=9, mfc="none", label="best epoch")]
    for ax, title, ylabel in ((loss_ax, "loss", "binary cross-entropy"), (acc_ax, "accuracy", "accuracy"),
                              (lr_ax, "learning rate (the head's, after the epoch)", "learning rate")):
        ax.set(title=title, xlabel="epoch", ylabel=ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        handles, _ = ax.get_legend_handles_labels()
        ax.legend(handles=handles + (key if ax is not lr_ax else []), fontsize=8)
    return _save(fig, path)


def plot_confusion(oof: pd.DataFrame, path: Path) -> Path:
    """Counts and row percentages of true vs predicted class at threshold 0.5.

    Args:
        oof: out-of-fold predictions (``label``, ``prob_dog``).
        path: the PNG to write.
    """
    counts = confusion_matrix(oof.label, (oof.prob_dog >= 0.5).astype(int), labels=[0, 1])
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    fig, ax = plt.subplots(figsize=(5, 4.5), layout="constrained")
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for (i, j), count in np.ndenumerate(counts):
        ax.text(j, i, f"{count}\n{share[i, j]:.1%}", ha="center", va="center", fontsize=12,
                color="white" if share[i, j] > 0.5 else "black")
    ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=CLASSES, yticklabels=CLASSES, xlabel="predicted",
           ylabel="true", title=f"out-of-fold, n={len(oof)}, accuracy {np.trace(counts) / max(1, len(oof)):.3f}")
    return _save(fig, path)


def plot_roc(oof: pd.DataFrame, path: Path) -> Path:
    """The overall out-of-fold ROC curve with its AUC, and each fold's as a thin line.

    Args:
        oof: out-of-fold predictions (``label``, ``prob_dog``, ``fold``).
        path: the PNG to write.
    """
    fig, ax = plt.subplots(figsize=(5, 5), layout="constrained")
    parts = [(f"fold {k}", part, {"lw": 0.8, "alpha": 0.6}) for k, part in oof.groupby("fold")]
    for label, part, style in [*parts, ("all", oof, {"lw": 2.5, "color": "black"})]:
        if part.label.nunique() < 2:  # ROC needs both classes
            continue
        fpr, tpr, _ = roc_curve(part.label, part.prob_dog)
        ax.plot(fpr, tpr, label=f"{label} (AUC {roc_auc_score(part.label, part.prob_dog):.3f})", **style)
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate (cats called dogs)",
           ylabel="true positive rate (dogs found)", title="out-of-fold ROC")
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_calibration(oof: pd.DataFrame, path: Path, n_bins: int = 10) -> Path:
    """The reliability diagram: observed share of dogs against mean predicted P(dog) per bin, with the
    diagonal of perfect calibration, and below it a histogram of the predicted probabilities.

    Points under the diagonal on the right (and above it on the left) are over-confidence, which
    log-loss punishes hardest.

    Args:
        oof: out-of-fold predictions (``label``, ``prob_dog``).
        path: the PNG to write.
        n_bins: equal-width bins of P(dog).
    """
    fig, (ax, hist_ax) = plt.subplots(2, 1, figsize=(5, 6), height_ratios=(3, 1), sharex=True, layout="constrained")
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfectly calibrated")
    if oof.label.nunique() == 2:
        observed, predicted = calibration_curve(oof.label, oof.prob_dog, n_bins=n_bins, strategy="uniform")
        ax.plot(predicted, observed, "-o", color="C0", ms=4, label="out-of-fold")
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="share of dogs (observed)",
           title=f"reliability, n={len(oof)}, {n_bins} bins")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    hist_ax.hist(oof.prob_dog, bins=np.linspace(0, 1, 2 * n_bins + 1), color="C0", alpha=0.7)
    hist_ax.set(xlabel="predicted P(dog)", ylabel="photos")
    return _save(fig, path)


def png_bytes(fig) -> bytes:
    """``fig`` as PNG bytes (not written to a file); the figure is closed."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    return buffer.getvalue()
