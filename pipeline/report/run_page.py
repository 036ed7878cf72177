"""A run's report: learning curves, the out-of-fold confusion matrix, ROC curve (two classes) and reliability
diagram, per-class figures and the most confused pairs (K classes), the most confidently wrong photos, and one
self-contained HTML page.

Report folder ``runs/<name>/report/``::

    curves.png  confusion.png  roc.png (two classes)  calibration.png
    report.html   the figures and JPEG thumbnails of the wrong photos embedded as data: URIs,
                  so the page can be mailed or moved alone
"""

from __future__ import annotations

import html
import logging
from pathlib import Path

import pandas as pd

from pipeline.competitions.spec import Competition, run_competition
from pipeline.errors import DataError
from pipeline.fileio import write_text
from pipeline.metrics import confused_pairs, most_confident_wrong, predicted_class, table_probs
from pipeline.predict.calibration import fit_temperature
from pipeline.report.figures import plot_calibration, plot_confusion, plot_curves, plot_roc
from pipeline.report.kind_page import VIEWS, build_kind_report
from pipeline.report.page import img_data, img_file, run_page_head, score_cell, table, thumbnails
from pipeline.rundir import RunDir

_logger = logging.getLogger(__name__)



def figures(comp: Competition) -> dict[str, str]:
    """The report's figures for a competition's run: file name -> title."""
    if comp.binary:
        return {"curves.png": "Learning curves", "confusion.png": "Out-of-fold confusion matrix (threshold 0.5)",
                "roc.png": "Out-of-fold ROC curve", "calibration.png": "Reliability diagram (out-of-fold)"}
    return {"curves.png": "Learning curves", "confusion.png": "Out-of-fold confusion matrix (the top class)",
            "calibration.png": "Reliability diagram (out-of-fold, the top class's probability)"}


def read_run(run_dir: Path) -> tuple[dict, pd.DataFrame, pd.DataFrame, dict]:
    """config.json, metrics.csv, oof.csv and cv.json of a finished run.

    Args:
        run_dir: the run folder.

    Raises:
        DataError: when one of the files is missing.
    """
    run = RunDir(run_dir)
    config = run.config()  # first: a run that cannot be read says so, whatever else it lacks
    for path in (run.metrics_path, run.oof_path, run.cv_path):
        if not path.exists():
            raise DataError(f"Run folder {run_dir} has no {path.name}; train the run first (`pipeline train`).")
    return config, run.read_metrics(), run.read_oof(), run.read_cv()


def _config_table(config: dict, cv: dict) -> str:
    c, settings, env = config["recipe"], config["settings"], config.get("environment", {})
    device = env.get("device", settings.get("device")) + (f" ({env['gpu']})" if "gpu" in env else "")
    comp = run_competition(config)
    what = f"{comp.n_classes} classes" if comp.target.kind == "single" else f"{comp.target.kind} target"
    items = [("competition", f"{comp.name} ({what}, scored by {comp.metric})"),
             ("arch", c["arch"]), ("image size", c["img_size"]), ("epochs", c["epochs"]),
             ("batch size", c["batch_size"]), ("learning rate", c["lr"]),
             ("folds", f"{len(config['folds'])} of {config.get('n_folds', '?')}"), ("seed", c.get("seed")),
             ("precision", env.get("precision", settings.get("precision"))), ("device", device),
             ("created", config.get("created", "?"))]
    if "seconds" in cv:
        items.append(("training time", f"{cv['seconds']:.0f} s"))
    return table(["setting", "value"], [list(item) for item in items], frozenset({0, 1}), "config")


def _cv_table(cv: dict, comp: Competition) -> str:
    rows = [(k, v) for k, v in cv["folds"].items()] + [("all", cv["overall"])]
    f1 = [] if comp.binary else ["macro F1"]
    return table(["fold", "n", "accuracy", "log-loss", "ROC-AUC", *f1, "best epoch"],
                 [[k, v["n"], score_cell(v["accuracy"]), score_cell(v["log_loss"]), score_cell(v.get("roc_auc")),
                   *([score_cell(v.get("f1_macro"))] if f1 else []), _best(v)] for k, v in rows],
                 css="cv")


def _best(scores: dict) -> str:
    """The best epoch of a fold, and what best.pt holds when it is not that epoch's model (ema, swa, soup)."""
    best = scores.get("best_epoch", "")
    return f"{best} ({scores['weights']})" if "weights" in scores else str(best)


def _class_tables(labels, predicted, comp: Competition) -> str:
    """K classes: each class's count, recall, precision and most frequent wrong answer; the most confused pairs."""
    from sklearn.metrics import precision_recall_fscore_support

    k = comp.n_classes
    precision, recall, _, support = precision_recall_fscore_support(labels, predicted, labels=list(range(k)),
                                                                    zero_division=0)
    pairs = confused_pairs(labels, predicted, n=10 * k)
    worst = {}
    for t, p, count in pairs:
        worst.setdefault(t, (p, count))
    rows = [[c, int(support[i]), f"{recall[i]:.3f}", f"{precision[i]:.3f}",
             f"{comp.classes[worst[i][0]]} ({worst[i][1]})" if i in worst else "-"]
            for i, c in enumerate(comp.classes)]
    per_class = table(["class", "photos", "recall (right when it is this)", "precision (right when called this)",
                       "most often called"], rows, frozenset({0, 4}), "classes")
    total = {i: max(1, int(s)) for i, s in enumerate(support)}
    rows = [[comp.classes[t], comp.classes[p], count, f"{count / total[t]:.1%}"] for t, p, count in pairs[:10]]
    confused = table(["true class", "called", "photos", "share of the class"], rows, frozenset({0, 1}), "pairs") \
        if pairs else "<p>No photo is confused with another class.</p>"
    return f"<h2>Per class (out-of-fold)</h2>\n{per_class}\n<h2>Most confused pairs</h2>\n{confused}"


def _said(row, comp: Competition) -> str:
    """What the model said about one wrong photo: P(positive) for two classes, else the class and its probability."""
    if comp.binary:
        return f"P({comp.positive}) {float(row[comp.prob_columns()[0]]):.3f}"
    return f"called {comp.classes[int(row.predicted)]} ({float(row.confidence):.3f})"


def _gallery(wrong: pd.DataFrame, comp: Competition) -> str:
    """The wrong photos, most confident first, as JPEG thumbnails captioned with the file name (not its folders: the
    page is shared), the fold that scored it, the true class and what the model said; a photo that cannot be read
    any more keeps its caption without a picture."""
    if wrong.empty:
        return "<p>Every training photo is on the right side of 0.5.</p>" if comp.binary else \
            "<p>Every training photo's top class is its own.</p>"
    figures = []
    for data, row in thumbnails(wrong):
        name = Path(row.path).name
        picture = img_data(data, "image/jpeg", name) if data is not None else '<p class="note">(cannot be read)</p>'
        caption = (f"{html.escape(name)}<br>fold {int(row.fold)}, true {html.escape(comp.classes[int(row.label)])}, "
                   f"{html.escape(_said(row, comp))}")
        figures.append(f"<figure>{picture}<figcaption>{caption}</figcaption></figure>")
    return '<div class="gallery">\n' + "\n".join(figures) + "\n</div>"


def _calibration_note(labels, probs) -> str:
    """What one temperature (``pipeline predict --calibrate temperature``) would do to these predictions."""
    if len(set(labels)) < 2:
        return ""
    cal = fit_temperature(labels, probs)
    if cal.temperature == 1.0:
        verdict = "No temperature lowers the out-of-fold log-loss: the predictions are as well calibrated as one " \
                  "temperature can make them."
    else:
        kind = "over-confident" if cal.temperature > 1 else "timid (under-confident)"
        verdict = (f"The predictions are {kind}: temperature scaling with T = {cal.temperature:.3f} (what "
                   f"<code>pipeline predict --calibrate temperature</code> fits on the blend it submits) lowers the "
                   f"out-of-fold log-loss from {cal.oof_log_loss_before:.4f} to {cal.oof_log_loss_after:.4f}.")
    return (f'<p class="note">Points below the diagonal on the right, or above it on the left, are over-confidence, '
            f"which log-loss punishes hardest. {verdict}</p>")


def build_report(run_dir: str | Path, out_dir: str | Path | None = None, n_wrong: int = 16) -> Path:
    """Write the four PNGs and ``report.html`` (self-contained) for a finished run.

    Args:
        run_dir: the run folder (with config.json, metrics.csv, oof.csv and cv.json).
        out_dir: where to write; default ``run_dir/report``.
        n_wrong: how many of the most confidently wrong photos to show (as JPEG thumbnails in the page).

    Returns:
        The path of report.html.

    Raises:
        DataError: when the run has not been trained (a file is missing).
    """
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir else RunDir(run_dir).report_dir
    config, metrics, oof, cv = read_run(run_dir)
    comp = run_competition(config)
    if comp.target.kind in VIEWS:  # multilabel, ordinal, regression: their own page
        return build_kind_report(run_dir, out_dir, config, metrics, oof, cv, comp)
    labels = oof.label.to_numpy().astype(int)
    probs = table_probs(oof, [comp.prob_columns()])
    predicted = predicted_class(probs)
    wrong = most_confident_wrong(oof, n_wrong, comp.prob_columns())
    plot_curves(metrics, out_dir / "curves.png", {int(k): v["best_epoch"] for k, v in cv["folds"].items()
                                                  if "best_epoch" in v})
    plot_confusion(labels, predicted, comp.classes, out_dir / "confusion.png")
    if comp.binary:
        plot_roc(oof, out_dir / "roc.png", comp.prob_columns()[0], (comp.classes[0], comp.positive))
    plot_calibration(labels, probs, out_dir / "calibration.png", comp.positive if comp.binary else "")

    name = html.escape(cv.get("run", run_dir.name))
    pictures = "\n".join(f"<h2>{html.escape(title)}</h2>\n{img_file(out_dir / file, title)}"
                        + (f"\n{_calibration_note(labels, probs)}" if file == "calibration.png" else "")
                        for file, title in figures(comp).items())
    page = f"""{run_page_head(name)}
{_config_table(config, cv)}
<h2>Cross-validation (out-of-fold, without TTA)</h2>
{_cv_table(cv, comp)}
{pictures}
{"" if comp.binary else _class_tables(labels, predicted, comp)}
<h2>Most confidently wrong training photos</h2>
{_gallery(wrong, comp)}
</body></html>
"""
    path = write_text(out_dir / "report.html", page)
    _logger.info("report written to %s", path)
    return path
