"""The run report of a target other than one label per image: the configuration, the cross-validation table with
the competition's metric first, the learning curves, and the kind's own view of the out-of-fold predictions:
per-column ROC-AUC (and F1 at 0.5) for multi-label, the grades' confusion matrix and kappa for ordinal, predicted
against true and the residuals for regression."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from pipeline.fileio import write_text
from pipeline.metrics import metric_value, roc_auc, table_probs
from pipeline.report.figures import _save, plot_confusion, plot_curves, plt
from pipeline.report.page import img_file, run_page_head, score_cell, table


def _cv_table(cv: dict, metric: str) -> str:
    rows = [(k, v) for k, v in cv["folds"].items()] + [("all", cv["overall"])]
    keys = [metric] + [k for k in cv["overall"] if k not in (metric, "n", "best_epoch", "weights")]
    return table(["fold", "n", *keys, "best epoch"],
                 [[k, v.get("n"), *(score_cell(metric_value(v, key)) for key in keys), v.get("best_epoch", "")]
                  for k, v in rows], css="cv")


def _multilabel(comp, labels, probs, out_dir: Path) -> str:
    kind = comp.kind
    truth, predicted = kind.truth(labels), kind.decide(probs)
    p = probs.reshape(len(truth), -1)
    rows = []
    for j, name in enumerate(comp.classes):
        t, d = truth[:, j], predicted[:, j]
        tp = int((t & d).sum())
        f1 = 2 * tp / max(1, int(t.sum() + d.sum()))
        rows.append([name, int(t.sum()), score_cell(roc_auc(t, p[:, j])), f"{f1:.4f}"])
    return "<h2>Per label (out-of-fold)</h2>\n" + table(["label", "images with it", "ROC-AUC", "F1 at 0.5"], rows,
                                                         frozenset({0}), "labels")


def _ordinal(comp, labels, probs, out_dir: Path) -> str:
    kind = comp.kind
    grades, graded = kind.truth(labels), kind.graded(probs)
    plot_confusion(grades, graded, comp.classes, out_dir / "confusion.png", title="out-of-fold grades (rounded)")
    kappa = kind.score(labels, probs)["qwk"]
    return (f"<h2>Grades: out-of-fold confusion matrix</h2>\n<p>Quadratic weighted kappa of the rounded grades "
            f"{kappa:.4f} (predict fits cut points on these predictions).</p>\n"
            f"{img_file(out_dir / 'confusion.png', 'confusion matrix')}")


def _regression(comp, labels, probs, out_dir: Path) -> str:
    kind = comp.kind
    truth, value = kind.truth(labels), kind.value(probs)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.5), layout="constrained")
    left.scatter(truth, value, s=6, alpha=0.5)
    left.plot([kind.low, kind.high], [kind.low, kind.high], color="grey", lw=1)
    left.set(xlabel="true", ylabel="predicted", title=f"out-of-fold, RMSE {kind.score(labels, probs)['rmse']:.3f}")
    right.scatter(truth, value - truth, s=6, alpha=0.5)
    right.axhline(0, color="grey", lw=1)
    right.set(xlabel="true", ylabel="predicted - true", title="residuals")
    _save(fig, out_dir / "scatter.png")
    return f"<h2>Predicted against true (out-of-fold)</h2>\n{img_file(out_dir / 'scatter.png', 'predicted vs true')}"


VIEWS = {"multilabel": _multilabel, "ordinal": _ordinal, "regression": _regression}


def build_kind_report(run_dir: Path, out_dir: Path, config: dict, metrics, oof, cv: dict, comp) -> Path:
    """report.html (and its PNGs) of a run whose target is multilabel, ordinal or regression."""
    from pipeline.report.run_page import _config_table

    probs = table_probs(oof, [comp.prob_columns()])
    plot_curves(metrics, out_dir / "curves.png", {int(k): v["best_epoch"] for k, v in cv["folds"].items()
                                                  if "best_epoch" in v})
    view = VIEWS[comp.target.kind](comp, oof.label.to_numpy(), np.asarray(probs), out_dir)
    name = html.escape(cv.get("run", run_dir.name))
    page = f"""{run_page_head(name)}
{_config_table(config, cv)}
<h2>Cross-validation (out-of-fold, without TTA; {html.escape(comp.metric)} first)</h2>
{_cv_table(cv, comp.metric)}
<h2>Learning curves</h2>
{img_file(out_dir / "curves.png", "Learning curves")}
{view}
</body></html>
"""
    return write_text(out_dir / "report.html", page)
