"""``pipeline report``, ``runs``, ``demo`` and ``doctor``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipeline.choices import RUN_SORTS
from pipeline.cli.app import STAGE_TOOLS, DataDir, RunsDir, choice, command, console, friendly

RunSort = choice("RunSort", RUN_SORTS)


@command(STAGE_TOOLS)
@friendly
def report(
    run: Annotated[list[Path] | None, typer.Argument(help="Run folder or name; with --compare, two or more "
                                                        "\\[default: the newest finished run]")] = None,
    compare: Annotated[bool, typer.Option("--compare", help="One page comparing the runs: CV scores side by side, "
                                          "fold by fold, out-of-fold correlation and the fitted blend.")] = False,
    out: Annotated[Path | None, typer.Option(help="With --compare: the HTML file to write "
                                                "\\[default: <runs-dir>/compare-<names>.html]")] = None,
    runs_dir: RunsDir = Path("runs"),
):
    """A run's plots and HTML page, or (--compare) a page of runs."""
    from pipeline.report import build_comparison, build_report, comparison_path
    from pipeline.rundir import find_run

    names = [str(r) for r in run or []]
    if compare:
        runs = [find_run(runs_dir, name) for name in names]
        if len(runs) < 2:
            raise typer.BadParameter("--compare takes two or more runs, e.g. `pipeline report --compare A B`.")
        path = build_comparison([r.path for r in runs], out or comparison_path(runs_dir, [r.name for r in runs]))
        console.print(f"comparison: {escape(str(path))}")
        return
    if len(names) > 1 or out is not None:
        raise typer.BadParameter("One run at a time (its page goes to its report/ folder); to put several on one "
                                 "page, or to choose the file, add --compare.")
    console.print(f"report: {escape(str(build_report(find_run(runs_dir, names[0] if names else None).path)))}")


RUN_HEADERS = {"img_size": "size", "log_loss": "log-loss", "roc_auc": "ROC-AUC", "seconds": "time",
               "test_probs": "test preds"}


@command(STAGE_TOOLS)
@friendly
def runs(
    runs_dir: RunsDir = Path("runs"),
    sort: Annotated[RunSort, typer.Option(metavar="KEY", help="logloss (lowest first), accuracy, auc, time, "
                                          "created (newest first) or name.")] = RunSort.logloss,
):
    """List the runs, best first, with their CV scores and times.

    Also arch, image size and whether `pipeline predict` saved the test predictions.
    """
    from pipeline.report import list_runs

    df = list_runs(runs_dir, sort.value)
    if df.empty:
        console.print(f"no runs in {runs_dir}")
        return
    table = Table(caption="CV figures: out-of-fold, without TTA (cv.json); `pipeline predict` prints them with "
                          "its --tta")
    for col in df.columns:
        table.add_column(RUN_HEADERS.get(col, col), justify="left" if col in ("run", "arch", "recipe") else "right")
    for row in df.itertuples(index=False):
        table.add_row(*[_run_cell(col, v) for col, v in zip(df.columns, row, strict=True)])
    # piped (not a terminal): the table at its natural width, one line per run, for grep and files
    (console if console.is_terminal else Console(file=console.file, width=1000)).print(table)


def _duration(seconds: float) -> str:
    """``42 s``, ``12.5 min`` or ``3.2 h``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _run_cell(column: str, value) -> str:
    """One cell of the runs table: scores with four decimals, counts as integers, ``-`` where there is none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"  # an unfinished run has no scores; a run without config.json has no settings
    if column in ("score", "accuracy", "log_loss", "roc_auc"):
        return f"{value:.4f}"
    if column == "seconds":
        return _duration(value)
    if column == "test_probs":
        return "yes" if value else "no"
    if column == "created":
        return escape(str(value).replace("T", " ")[:16])  # 2026-11-23 17:26
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # a column holding a missing value is float: 64.0 px is 64
    return escape(str(value))


@command(STAGE_TOOLS)
@friendly
def demo(
    workdir: Annotated[Path, typer.Option(help="Folder for the demo's data, runs and submission.")] = Path("demo"),
    epochs: Annotated[int, typer.Option(help="Epochs per fold.")] = 20,
    folds: Annotated[int, typer.Option(help="Number of folds.")] = 3,
):
    """Start here: every stage on a bundled sample, offline, minutes.

    600 training and 100 test photos of Kaggle's Dogs vs. Cats, a 3-fold LeNet; outputs go to --workdir.
    """
    from pipeline.demo import demo as run_demo

    run_demo(workdir, epochs=epochs, n_folds=folds, console=console)


@command(STAGE_TOOLS)
@friendly
def doctor(data_dir: DataDir = Path("data"), runs_dir: RunsDir = Path("runs")):
    """Versions, devices, disk, data, runs: facts for a bug report."""
    from pipeline.doctor import doctor as facts

    for key, value in facts(data_dir, runs_dir).items():
        console.print(f"{key:>16}: {value}", highlight=False)
