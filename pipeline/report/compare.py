"""One self-contained page comparing runs: CV figures side by side, fold by fold, the correlation of their
out-of-fold predictions and the blend ``pipeline predict`` would fit (``runs/compare-<names>.html``)."""

from __future__ import annotations

import hashlib
import html
import logging
from pathlib import Path

import numpy as np

from pipeline.errors import ConfigError, DataError
from pipeline.fileio import write_text
from pipeline.predict.ensemble import aligned_oof, blend_runs
from pipeline.report.figures import MARKERS, MaxNLocator, plt, png_bytes
from pipeline.report.page import CSS, img_data, score_cell, table
from pipeline.report.runs_table import recipe_name
from pipeline.rundir import RunDir

_logger = logging.getLogger(__name__)


def comparison_path(runs_dir: str | Path, names: list[str]) -> Path:
    """``<runs_dir>/compare-<name>+<name>.html`` (names beyond 150 characters are cut and a digest added)."""
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
        return {"arch": c.get("arch"), "recipe": recipe_name(config.get("recipe_source")),
                "image size": c.get("img_size"), "epochs": c.get("epochs"),
                "folds": f"{len(config['folds'])} of {config.get('n_folds', '?')}",
                "accuracy": score_cell(overall.get("accuracy")), "log-loss": score_cell(overall.get("log_loss")),
                "ROC-AUC": score_cell(overall.get("roc_auc")),
                "training time": f"{cv['seconds']:.0f} s" if cv.get("seconds") is not None else "-",
                "created": config.get("created", "-")}[key]

    keys = ["arch", "recipe", "image size", "epochs", "folds", "accuracy", "log-loss", "ROC-AUC", "training time",
            "created"]
    return table([""] + [r.name for r in runs], [[k] + [get(c, cv, k) for c, cv in zip(configs, cvs, strict=True)]
                                                   for k in keys], frozenset({0}), "compare")


def _fold_scores(runs: list[RunDir], cvs: list[dict]) -> tuple[str, str]:
    """The per-fold table (log-loss and accuracy of each run) and a small plot of both."""
    folds = sorted({int(k) for cv in cvs for k in cv["folds"]})
    header = ["fold"] + [f"{r.name} {m}" for r in runs for m in ("log-loss", "accuracy")]
    rows = [[k] + [score_cell(cv["folds"].get(str(k), {}).get(m)) for cv in cvs for m in ("log_loss", "accuracy")]
            for k in folds]
    fig, (ll_ax, acc_ax) = plt.subplots(1, 2, figsize=(9, 3.4), layout="constrained")
    for i, (run, cv) in enumerate(zip(runs, cvs, strict=True)):
        ks = sorted(int(k) for k in cv["folds"])
        dodge = (i - (len(runs) - 1) / 2) * 0.08  # runs side by side, so one never hides another it equals
        for ax, metric in ((ll_ax, "log_loss"), (acc_ax, "accuracy")):
            ax.plot([k + dodge for k in ks], [cv["folds"][str(k)][metric] for k in ks], "-", color=f"C{i % 10}",
                    marker=MARKERS[i % len(MARKERS)], ms=5, label=run.name)
    for ax, title in ((ll_ax, "log-loss per fold (lower is better)"), (acc_ax, "accuracy per fold")):
        ax.set(title=title, xlabel="fold", ylabel=title.split(" per")[0])
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return table(header, rows, css="folds"), img_data(png_bytes(fig), "image/png", "scores per fold")


def _blend_sections(runs: list[RunDir]) -> str:
    """The OOF correlation matrix and the fitted blend; a note instead when the runs' folds differ."""
    try:
        _, probs = aligned_oof([r.path for r in runs])
    except ConfigError as exc:
        why = html.escape(str(exc))
        return (f'<h2>Out-of-fold correlation</h2>\n<p class="note">Cannot be computed: {why}</p>\n'
                f'<h2>Blend (out-of-fold, without TTA)</h2>\n<p class="note">Cannot be fitted, for the same reason: '
                "<code>pipeline predict</code> refuses to blend these runs.</p>")
    names = [r.name for r in runs]
    with np.errstate(invalid="ignore", divide="ignore"):  # a run of constant P(dog) has no correlation: shown as -
        corr = np.corrcoef(probs, rowvar=False)
    cells = [[score_cell(None if np.isnan(r) else r) for r in row] for row in corr]  # nan: a run of constant P(dog)
    rows = [[a, *row] for a, row in zip(names, cells, strict=True)]
    corr_table = table(["correlation", *names], rows, frozenset({0}),
                        "correlation")
    blend = blend_runs([r.path for r in runs], "fit")
    rows = [[n, f"{w:.3f}", score_cell(blend.run_scores[n]["accuracy"]), score_cell(blend.run_scores[n]["log_loss"]),
             score_cell(blend.run_scores[n].get("roc_auc"))] for n, w in zip(blend.runs, blend.weights, strict=True)]
    rows.append(["blend", f"{sum(blend.weights):.3f}", score_cell(blend.blend_score["accuracy"]),
                 score_cell(blend.blend_score["log_loss"]), score_cell(blend.blend_score.get("roc_auc"))])
    blend_table = table(["run", "weight", "accuracy", "log-loss", "ROC-AUC"], rows, frozenset({0}), "blend")
    return f"""<h2>Out-of-fold correlation</h2>
<p class="note">Pearson correlation of the runs' out-of-fold P(dog) on the same {probs.shape[0]} training photos. A
blend can beat its best run only where the runs disagree, that is where the correlation is below 1.</p>
{corr_table}
<h2>Blend (out-of-fold, without TTA)</h2>
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
    configs, cvs = zip(*[_finished(r) for r in runs], strict=True)
    fold_table, fold_plot = _fold_scores(runs, list(cvs))
    names = " vs ".join(html.escape(r.name) for r in runs)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Compare {names}</title><style>{CSS}</style></head>
<body>
<h1>Compare {names}</h1>
<h2>Cross-validation (out-of-fold, without TTA)</h2>
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
