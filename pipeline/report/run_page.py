"""A run's report: learning curves, the out-of-fold confusion matrix, ROC and reliability diagram, the most
confidently wrong photos, and one self-contained HTML page.

Report folder ``runs/<name>/report/``::

    curves.png  confusion.png  roc.png  calibration.png
    report.html   the four figures and JPEG thumbnails of the wrong photos embedded as data: URIs,
                  so the page can be mailed or moved alone
"""

from __future__ import annotations

import html
import logging
from pathlib import Path

import pandas as pd

from pipeline.errors import DataError
from pipeline.fileio import write_text
from pipeline.metrics import most_confident_wrong
from pipeline.predict.calibration import fit_temperature
from pipeline.report.figures import CLASSES, plot_calibration, plot_confusion, plot_curves, plot_roc
from pipeline.report.page import CSS, img_data, img_file, score_cell, table, thumbnails
from pipeline.rundir import RunDir

_logger = logging.getLogger(__name__)

FIGURES = {"curves.png": "Learning curves", "confusion.png": "Out-of-fold confusion matrix (threshold 0.5)",
           "roc.png": "Out-of-fold ROC curve", "calibration.png": "Reliability diagram (out-of-fold)"}


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
    items = [("arch", c["arch"]), ("image size", c["img_size"]), ("epochs", c["epochs"]),
             ("batch size", c["batch_size"]), ("learning rate", c["lr"]),
             ("folds", f"{len(config['folds'])} of {config.get('n_folds', '?')}"), ("seed", c.get("seed")),
             ("precision", env.get("precision", settings.get("precision"))), ("device", device),
             ("created", config.get("created", "?"))]
    if "seconds" in cv:
        items.append(("training time", f"{cv['seconds']:.0f} s"))
    return table(["setting", "value"], [list(item) for item in items], frozenset({0, 1}), "config")


def _cv_table(cv: dict) -> str:
    rows = [(k, v) for k, v in cv["folds"].items()] + [("all", cv["overall"])]
    return table(["fold", "n", "accuracy", "log-loss", "ROC-AUC", "best epoch"],
                  [[k, v["n"], score_cell(v["accuracy"]), score_cell(v["log_loss"]), score_cell(v.get("roc_auc")),
                    v.get("best_epoch", "")] for k, v in rows], css="cv")


def _wrong_table(wrong: pd.DataFrame) -> str:
    if wrong.empty:
        return "<p>Every training photo is on the right side of 0.5.</p>"
    return table(["photo", "fold", "label", "P(dog)"],  # file names: the page is shared, the folders are yours
                 [[Path(r.path).name, r.fold, CLASSES[int(r.label)], f"{r.prob_dog:.3f}"] for r in wrong.itertuples()],
                 frozenset({0}), "wrong")


def _gallery(wrong: pd.DataFrame) -> str:
    """The wrong photos as JPEG thumbnails with file name, true label and P(dog); '' when there are none."""
    figures = []
    for data, row in thumbnails(wrong):
        name = Path(row.path).name
        caption = f"{html.escape(name)}<br>true {CLASSES[int(row.label)]}, P(dog) {row.prob_dog:.3f}"
        figures.append(f"<figure>{img_data(data, 'image/jpeg', name)}<figcaption>{caption}</figcaption></figure>")
    return '<div class="gallery">\n' + "\n".join(figures) + "\n</div>" if figures else ""


def _calibration_note(oof: pd.DataFrame) -> str:
    """What one temperature (``pipeline predict --calibrate temperature``) would do to these predictions."""
    if oof.label.nunique() < 2:
        return ""
    cal = fit_temperature(oof.label.to_numpy(), oof.prob_dog.to_numpy())
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
    wrong = most_confident_wrong(oof, n_wrong)
    plot_curves(metrics, out_dir / "curves.png", {int(k): v["best_epoch"] for k, v in cv["folds"].items()
                                                  if "best_epoch" in v})
    plot_confusion(oof, out_dir / "confusion.png")
    plot_roc(oof, out_dir / "roc.png")
    plot_calibration(oof, out_dir / "calibration.png")

    name = html.escape(cv.get("run", run_dir.name))
    figures = "\n".join(f"<h2>{html.escape(title)}</h2>\n{img_file(out_dir / file, title)}"
                        + (f"\n{_calibration_note(oof)}" if file == "calibration.png" else "")
                        for file, title in FIGURES.items())
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Run {name}</title><style>{CSS}</style></head>
<body>
<h1>Run {name}</h1>
<h2>Configuration</h2>
{_config_table(config, cv)}
<h2>Cross-validation (out-of-fold, without TTA)</h2>
{_cv_table(cv)}
{figures}
<h2>Most confidently wrong training photos</h2>
{_gallery(wrong)}
{_wrong_table(wrong)}
</body></html>
"""
    path = write_text(out_dir / "report.html", page)
    _logger.info("report written to %s", path)
    return path
