"""Run reports: learning curves, the out-of-fold confusion matrix, ROC and reliability diagram, the
most confidently wrong photos, and one self-contained HTML page; a page comparing runs; and a table of
all runs.

Report folder ``runs/<name>/report/``::

    curves.png  confusion.png  roc.png  calibration.png
    report.html   the four figures and JPEG thumbnails of the wrong photos embedded as data: URIs,
                  so the page can be mailed or moved alone

``build_comparison`` writes one self-contained page comparing runs (``runs/compare-<names>.html``).
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from PIL import Image
from sklearn.calibration import calibration_curve
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve

from pipeline.errors import ConfigError, DataError
from pipeline.fileio import atomic_path, write_text
from pipeline.rundir import RunDir, all_runs

matplotlib.use("Agg")  # files only, no display; must precede the pyplot import
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

_logger = logging.getLogger(__name__)

DPI = 100
CLASSES = ("cat", "dog")
RUN_COLUMNS = ["run", "arch", "recipe", "img_size", "epochs", "folds", "accuracy", "log_loss", "roc_auc", "seconds",
               "test_probs", "created", "status"]
FIGURES = {"curves.png": "Learning curves", "confusion.png": "Out-of-fold confusion matrix (threshold 0.5)",
           "roc.png": "Out-of-fold ROC curve", "calibration.png": "Reliability diagram (out-of-fold)"}
THUMBNAIL = 192  # longest side of a gallery photo, in pixels
JPEG_QUALITY = 80


# ---- reading a run ----------------------------------------------------------------------------
def read_run(run_dir: Path) -> tuple[dict, pd.DataFrame, pd.DataFrame, dict]:
    """config.json, metrics.csv, oof.csv and cv.json of a finished run.

    Args:
        run_dir: the run folder.

    Raises:
        DataError: when one of the files is missing.
    """
    run = RunDir(run_dir)
    for path in (run.config_path, run.metrics_path, run.oof_path, run.cv_path):
        if not path.exists():
            raise DataError(f"Run folder {run_dir} has no {path.name}; train the run first (`pipeline train`).")
    return run.config(), run.read_metrics(), run.read_oof(), run.read_cv()


def most_confident_wrong(oof: pd.DataFrame, n: int) -> pd.DataFrame:
    """The ``n`` wrongly classified rows (threshold 0.5) with the largest ``|prob_dog - label|``.

    Args:
        oof: out-of-fold predictions with ``label`` and ``prob_dog`` columns.
        n: how many rows at most; ties keep the order of ``oof``.
    """
    wrong = oof[(oof.prob_dog >= 0.5).astype(int) != oof.label]
    error = (wrong.prob_dog - wrong.label).abs()
    order = np.argsort(-error.to_numpy(), kind="stable")
    return wrong.iloc[order[:n]].reset_index(drop=True)


# ---- figures ----------------------------------------------------------------------------------
def _save(fig, path: Path) -> Path:
    """Write ``fig`` as a PNG atomically and close it."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    return path


def plot_curves(metrics: pd.DataFrame, path: Path) -> Path:
    """Loss, accuracy and learning rate against epoch, one colour per fold (dashed: train, solid: val).

    Args:
        metrics: the run's metrics.csv.
        path: the PNG to write.
    """
    fig, (loss_ax, acc_ax, lr_ax) = plt.subplots(1, 3, figsize=(12, 4), layout="constrained")
    for i, (fold, m) in enumerate(metrics.sort_values(["fold", "epoch"]).groupby("fold")):
        color = f"C{i % 10}"
        loss_ax.plot(m.epoch, m.train_loss, "--", color=color)
        loss_ax.plot(m.epoch, m.val_loss, "-o", color=color, ms=3, label=f"fold {fold}")
        acc_ax.plot(m.epoch, m.train_acc, "--", color=color)
        acc_ax.plot(m.epoch, m.val_acc, "-o", color=color, ms=3, label=f"fold {fold}")
        lr_ax.plot(m.epoch, m.lr, "-o", color=color, ms=3, label=f"fold {fold}")
    for ax, title in ((loss_ax, "loss (dashed: train, solid: val)"),
                      (acc_ax, "accuracy (dashed: train, solid: val)"), (lr_ax, "learning rate")):
        ax.set(title=title, xlabel="epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
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
    parts = [(f"fold {k}", part, dict(lw=0.8, alpha=0.6)) for k, part in oof.groupby("fold")]
    for label, part, style in parts + [("all", oof, dict(lw=2.5, color="black"))]:
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


def thumbnails(wrong: pd.DataFrame, size: int = THUMBNAIL, quality: int = JPEG_QUALITY) -> list[tuple[bytes, pd.Series]]:
    """JPEG thumbnails (longest side ``size``) of ``wrong``'s photos with their rows; unreadable ones skipped.

    Args:
        wrong: rows from :func:`most_confident_wrong` (``path``, ``label``, ``prob_dog``, ...).
        size: longest side in pixels.
        quality: JPEG quality (1-95).
    """
    out = []
    for _, row in wrong.iterrows():
        try:
            with Image.open(row.path) as img:
                img = img.convert("RGB")
                img.thumbnail((size, size))
        except OSError as e:
            _logger.warning("skipping %s in the gallery: %s", row.path, e)
            continue
        buffer = io.BytesIO()
        img.save(buffer, format="JPEG", quality=quality, optimize=True)
        out.append((buffer.getvalue(), row))
    return out


# ---- the HTML page ----------------------------------------------------------------------------
_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1250px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.7em; text-align: right; }
th { background: #f2f2f2; }
td.text { text-align: left; font-family: monospace; }
img { max-width: 100%; border: 1px solid #eee; }
.gallery { display: flex; flex-wrap: wrap; gap: 0.8em; }
.gallery figure { margin: 0; width: 200px; font-size: 0.8em; }
.gallery figcaption { font-family: monospace; overflow-wrap: anywhere; }
.note { max-width: 60em; }
"""


def _table(header: list[str], rows: list[list], text_columns: frozenset[int] = frozenset(), css: str = "") -> str:
    """An HTML table; every cell is escaped, columns in ``text_columns`` are left-aligned."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    cell = ['<td class="text">' if i in text_columns else "<td>" for i in range(len(header))]
    body = "".join("<tr>" + "".join(f"{cell[i]}{html.escape(str(v))}</td>" for i, v in enumerate(row)) + "</tr>\n"
                   for row in rows)
    return f'<table class="{css}"><thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody></table>'


def _score(value) -> str:
    return "-" if value is None else f"{value:.4f}"


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
    return _table(["setting", "value"], [list(item) for item in items], frozenset({0, 1}), "config")


def _cv_table(cv: dict) -> str:
    rows = [(k, v) for k, v in cv["folds"].items()] + [("all", cv["overall"])]
    return _table(["fold", "n", "accuracy", "log-loss", "ROC-AUC", "best epoch"],
                  [[k, v["n"], _score(v["accuracy"]), _score(v["log_loss"]), _score(v.get("roc_auc")),
                    v.get("best_epoch", "")] for k, v in rows], css="cv")


def _wrong_table(wrong: pd.DataFrame) -> str:
    if wrong.empty:
        return "<p>Every training photo is on the right side of 0.5.</p>"
    return _table(["path", "fold", "label", "P(dog)"],
                  [[r.path, r.fold, CLASSES[int(r.label)], f"{r.prob_dog:.3f}"] for r in wrong.itertuples()],
                  frozenset({0}), "wrong")


def _img_data(data: bytes, mime: str, alt: str) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img src="data:{mime};base64,{encoded}" alt="{html.escape(alt)}">'


def _img(path: Path, alt: str) -> str:
    return _img_data(path.read_bytes(), "image/png", alt)


def _figure_img(fig, alt: str) -> str:
    """``fig`` as an embedded PNG (not written to a file); the figure is closed."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    return _img_data(buffer.getvalue(), "image/png", alt)


def _gallery(wrong: pd.DataFrame) -> str:
    """The wrong photos as JPEG thumbnails with file name, true label and P(dog); '' when there are none."""
    figures = []
    for data, row in thumbnails(wrong):
        name = Path(row.path).name
        caption = f"{html.escape(name)}<br>true {CLASSES[int(row.label)]}, P(dog) {row.prob_dog:.3f}"
        figures.append(f"<figure>{_img_data(data, 'image/jpeg', name)}<figcaption>{caption}</figcaption></figure>")
    return '<div class="gallery">\n' + "\n".join(figures) + "\n</div>" if figures else ""


def _calibration_note(oof: pd.DataFrame) -> str:
    """What one temperature (``pipeline predict --calibrate temperature``) would do to these predictions."""
    from pipeline.inference import fit_temperature

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
    plot_curves(metrics, out_dir / "curves.png")
    plot_confusion(oof, out_dir / "confusion.png")
    plot_roc(oof, out_dir / "roc.png")
    plot_calibration(oof, out_dir / "calibration.png")

    name = html.escape(cv.get("run", run_dir.name))
    figures = "\n".join(f"<h2>{html.escape(title)}</h2>\n{_img(out_dir / file, title)}"
                        + (f"\n{_calibration_note(oof)}" if file == "calibration.png" else "")
                        for file, title in FIGURES.items())
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Run {name}</title><style>{_CSS}</style></head>
<body>
<h1>Run {name}</h1>
<h2>Configuration</h2>
{_config_table(config, cv)}
<h2>Cross-validation</h2>
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


# ---- comparing runs ---------------------------------------------------------------------------
def comparison_path(runs_dir: str | Path, names: list[str]) -> Path:
    """``<runs_dir>/compare-<name>+<name>.html`` (names beyond 150 characters are cut and a digest added)."""
    import hashlib

    joined = "+".join(names)
    if len(joined) > 150:  # file names stop at 255 bytes
        joined = f"{joined[:140]}-{hashlib.sha256(joined.encode()).hexdigest()[:8]}"
    return Path(runs_dir) / f"compare-{joined}.html"


def _finished(run: RunDir) -> tuple[dict, dict]:
    """config.json and cv.json of a run that has both (and oof.csv); DataError otherwise."""
    for path in (run.config_path, run.oof_path, run.cv_path):
        if not path.exists():
            raise DataError(f"Run {run.name} has no {path.name}, so it cannot be compared; finish its training "
                            f"first (`pipeline train --run-name {run.name} --resume`).")
    return run.config(), run.read_cv()


def _summary_table(runs: list[RunDir], configs: list[dict], cvs: list[dict]) -> str:
    """Runs side by side: one column per run, one row per setting or score."""
    def get(config, cv, key):
        c, overall = config["recipe"], cv["overall"]
        return {"arch": c.get("arch"), "recipe": _recipe_name(config.get("recipe_source")) or "-",
                "image size": c.get("img_size"), "epochs": c.get("epochs"),
                "folds": f"{len(config['folds'])} of {config.get('n_folds', '?')}",
                "accuracy": _score(overall.get("accuracy")), "log-loss": _score(overall.get("log_loss")),
                "ROC-AUC": _score(overall.get("roc_auc")),
                "training time": f"{cv['seconds']:.0f} s" if cv.get("seconds") is not None else "-",
                "created": config.get("created", "-")}[key]

    keys = ["arch", "recipe", "image size", "epochs", "folds", "accuracy", "log-loss", "ROC-AUC", "training time",
            "created"]
    return _table([""] + [r.name for r in runs], [[k] + [get(c, cv, k) for c, cv in zip(configs, cvs)]
                                                   for k in keys], frozenset({0}), "compare")


def _fold_scores(runs: list[RunDir], cvs: list[dict]) -> tuple[str, str]:
    """The per-fold table (log-loss and accuracy of each run) and a small plot of both."""
    folds = sorted({int(k) for cv in cvs for k in cv["folds"]})
    header = ["fold"] + [f"{r.name} {m}" for r in runs for m in ("log-loss", "accuracy")]
    rows = [[k] + [_score(cv["folds"].get(str(k), {}).get(m)) for cv in cvs for m in ("log_loss", "accuracy")]
            for k in folds]
    fig, (ll_ax, acc_ax) = plt.subplots(1, 2, figsize=(9, 3.2), layout="constrained")
    for i, (run, cv) in enumerate(zip(runs, cvs)):
        ks = sorted(int(k) for k in cv["folds"])
        for ax, metric in ((ll_ax, "log_loss"), (acc_ax, "accuracy")):
            ax.plot(ks, [cv["folds"][str(k)][metric] for k in ks], "-o", color=f"C{i % 10}", ms=4, label=run.name)
    for ax, title in ((ll_ax, "log-loss per fold (lower is better)"), (acc_ax, "accuracy per fold")):
        ax.set(title=title, xlabel="fold")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _table(header, rows, css="folds"), _figure_img(fig, "scores per fold")


def _blend_sections(runs: list[RunDir]) -> str:
    """The OOF correlation matrix and the fitted blend; a note instead when the runs' folds differ."""
    from pipeline.inference import aligned_oof, blend_runs

    try:
        _, probs = aligned_oof([r.path for r in runs])
    except ConfigError as exc:
        why = html.escape(str(exc))
        return (f'<h2>Out-of-fold correlation</h2>\n<p class="note">Cannot be computed: {why}</p>\n'
                f'<h2>Blend</h2>\n<p class="note">Cannot be fitted, for the same reason: '
                "<code>pipeline predict</code> refuses to blend these runs.</p>")
    names = [r.name for r in runs]
    corr = np.corrcoef(probs, rowvar=False)
    cells = [[_score(None if np.isnan(r) else r) for r in row] for row in corr]  # nan: a run of constant P(dog)
    corr_table = _table(["correlation"] + names, [[a] + row for a, row in zip(names, cells)], frozenset({0}),
                        "correlation")
    blend = blend_runs([r.path for r in runs], "fit")
    rows = [[n, f"{w:.3f}", _score(blend.run_scores[n]["accuracy"]), _score(blend.run_scores[n]["log_loss"]),
             _score(blend.run_scores[n].get("roc_auc"))] for n, w in zip(blend.runs, blend.weights)]
    rows.append(["blend", f"{sum(blend.weights):.3f}", _score(blend.blend_score["accuracy"]),
                 _score(blend.blend_score["log_loss"]), _score(blend.blend_score.get("roc_auc"))])
    blend_table = _table(["run", "weight", "accuracy", "log-loss", "ROC-AUC"], rows, frozenset({0}), "blend")
    return f"""<h2>Out-of-fold correlation</h2>
<p class="note">Pearson correlation of the runs' out-of-fold P(dog) on the same {probs.shape[0]} training photos. A
blend can beat its best run only where the runs disagree, that is where the correlation is below 1.</p>
{corr_table}
<h2>Blend</h2>
<p class="note">The weights <code>pipeline predict --run ... --ensemble fit</code> would use: non-negative, summing
to 1, minimising the out-of-fold log-loss (never worse than the best run alone).</p>
{blend_table}"""


def build_comparison(run_dirs: list[str | Path], out: str | Path) -> Path:
    """Write one self-contained HTML page comparing finished runs.

    The page holds the runs' settings and CV scores side by side, their scores fold by fold (a table
    and a plot), the Pearson correlation of their out-of-fold predictions and the blend ``pipeline
    predict`` would fit. Runs trained on other folds are shown, with a note that they cannot be
    correlated or blended.

    Args:
        run_dirs: two or more run folders.
        out: the HTML file to write.

    Returns:
        ``out``.

    Raises:
        ConfigError: fewer than two runs, or one given twice.
        DataError: a run has not finished (no oof.csv or cv.json).
    """
    runs = [RunDir(r) for r in run_dirs]
    if len(runs) < 2:
        raise ConfigError("--compare needs at least two runs, e.g. `pipeline report --compare RUN_A RUN_B`.")
    if len(set(runs)) != len(runs):
        raise ConfigError("The same run was given twice to --compare; name each run once.")
    configs, cvs = zip(*[_finished(r) for r in runs])
    fold_table, fold_plot = _fold_scores(runs, list(cvs))
    names = " vs ".join(html.escape(r.name) for r in runs)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Compare {names}</title><style>{_CSS}</style></head>
<body>
<h1>Compare {names}</h1>
<h2>Cross-validation</h2>
{_summary_table(runs, list(configs), list(cvs))}
<h2>Fold by fold</h2>
{fold_table}
{fold_plot}
{_blend_sections(runs)}
</body></html>
"""
    path = write_text(out, page)
    _logger.info("comparison written to %s", path)
    return path


# ---- all runs ---------------------------------------------------------------------------------
SORTS = ("logloss", "accuracy", "auc", "time", "created", "name")


def _nan_if_none(value) -> float:
    return math.nan if value is None else value


def _recipe_name(source: str | None) -> str | None:
    """A named recipe as is; a recipe file by its stem (``recipes/big.toml`` -> ``big``)."""
    if not source:
        return None
    return Path(source).stem if source.endswith(".toml") else source


def _run_row(run: RunDir) -> dict:
    config = run.config()
    c = config["recipe"]
    finished = run.is_finished()
    cv = (run.read_cv() or {}) if finished else {}
    overall = cv.get("overall", {})
    selected, n_folds = len(run.selected_folds()), config.get("n_folds")
    folds = f"{len(run.finished_folds())}/{selected}"
    if n_folds and selected and selected != n_folds:
        folds += f" of {n_folds}"  # a run of some folds only: its CV covers part of the training set
    return {"run": run.name, "arch": c.get("arch"), "recipe": _recipe_name(config.get("recipe_source")),
            "img_size": c.get("img_size"), "epochs": c.get("epochs"), "folds": folds,
            **{k: _nan_if_none(overall.get(k)) for k in ("accuracy", "log_loss", "roc_auc")},
            "seconds": _nan_if_none(cv.get("seconds")), "test_probs": run.test_probs_path.exists(),
            "created": config.get("created"), "status": "done" if finished else "unfinished"}


def list_runs(runs_dir: str | Path, sort: str = "logloss") -> pd.DataFrame:
    """One row per run folder, in the order ``sort`` asks for.

    Args:
        runs_dir: the folder holding the run folders; missing is the same as empty.
        sort: ``logloss`` (lowest first), ``accuracy`` or ``auc`` (highest first), ``time`` (shortest
            training first), ``created`` (newest first) or ``name``. For the four scores, unfinished runs
            (which have none) come last; ties go to the lower log-loss, then the name.

    Returns:
        Columns ``run, arch, recipe, img_size, epochs, folds, accuracy, log_loss, roc_auc, seconds,
        test_probs, created, status``: ``recipe`` is the recipe the run was started from (missing when
        options alone made it), ``folds`` reads ``finished/trained`` (``1/1 of 5`` for a run of one
        fold of five), ``seconds`` is the training wall time from cv.json, ``test_probs`` whether
        ``pipeline predict`` has saved the run's test predictions. Unfinished runs have NaN scores and
        status ``unfinished`` (``pipeline runs`` shows NaN and None as ``-``).

    Raises:
        ConfigError: for an unknown ``sort``.
    """
    if sort not in SORTS:
        raise ConfigError(f"--sort must be one of {', '.join(SORTS)}, got {sort!r}.")
    runs = all_runs(runs_dir)
    if not runs:
        return pd.DataFrame(columns=RUN_COLUMNS)
    df = pd.DataFrame([_run_row(r) for r in runs], columns=RUN_COLUMNS)
    df["unfinished"] = df.status != "done"
    first = {"logloss": [("unfinished", True), ("log_loss", True)],
             "accuracy": [("unfinished", True), ("accuracy", False)],
             "auc": [("unfinished", True), ("roc_auc", False)],
             "time": [("unfinished", True), ("seconds", True)],
             "created": [("created", False)],
             "name": []}[sort]
    keys = dict(first + [(k, a) for k, a in (("log_loss", True), ("accuracy", False)) if sort != "name"]
                + [("run", True)])  # a key listed twice keeps its first place; later keys break ties
    df = df.sort_values(list(keys), ascending=list(keys.values()), kind="stable", na_position="last")
    return df.drop(columns="unfinished").reset_index(drop=True)
