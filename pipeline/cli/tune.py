"""``pipeline tune``: a hyper-parameter search whose trials are runs (:mod:`pipeline.tune`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer import Option

from pipeline.cli.app import OUTPUT, RECIPE, SEARCH, SETTINGS, STAGE_TRAIN, command, console, friendly, given
from pipeline.cli.train import Device, Tracker, _parse_folds


@command(STAGE_TRAIN)
@friendly
def tune(
    recipe: Annotated[str | None, Option(help="The recipe searched around: a name or a TOML file.",
                                         rich_help_panel=RECIPE)] = None,
    space: Annotated[Path | None, Option(help="Search space file (ranges, log, choices) \\[default: the "
                                         "recipe's own]", rich_help_panel=RECIPE)] = None,
    trials: Annotated[int, Option(help="Trials in the study, every state counted; a re-run continues to this.",
                                  rich_help_panel=SEARCH)] = 20,
    time_limit: Annotated[str | None, Option(help="Budget of this command (90s, 30m, 2h, 1h30), split over the "
                                             "trials left \\[default: none]", rich_help_panel=SEARCH)] = None,
    folds: Annotated[str, Option(help="Folds each trial trains: e.g. 0 or 0,1,2, or 'all'.",
                                 rich_help_panel=SEARCH)] = "0",
    jobs: Annotated[int, Option(help="Worker processes here: one GPU each on a GPU machine.",
                                rich_help_panel=SEARCH)] = 1,
    study: Annotated[str | None, Option(help="Study name \\[default: the recipe's name]",
                                        rich_help_panel=SEARCH)] = None,
    storage: Annotated[str | None, Option(help="Database URL, e.g. postgresql://u:p@host/db \\[default: "
                                          "<runs-dir>/tune.db]", rich_help_panel=SEARCH)] = None,
    show: Annotated[bool, Option("--show", help="Show the study: trials, best recipe file, figures page.",
                                 rich_help_panel=OUTPUT)] = False,
    device: Annotated[Device | None, Option(help="auto picks CUDA when present", rich_help_panel=SETTINGS)] = None,
    workers: Annotated[int | None, Option(help="Loader processes per trial", rich_help_panel=SETTINGS)] = None,
    threads: Annotated[int | None, Option(help="CPU threads per trial \\[default: the cores / --jobs]",
                                          rich_help_panel=SETTINGS)] = None,
    tracker: Annotated[Tracker | None, Option(metavar="NAME", help="Live curves of each trial (as train's)",
                                              rich_help_panel=SETTINGS)] = None,
    data_dir: Annotated[Path, Option(help="Where the catalogue and folds live.", rich_help_panel=SETTINGS)] = Path(
        "data"),
    runs_dir: Annotated[Path, Option(help="Where the trials' run folders live.", rich_help_panel=OUTPUT)] = Path(
        "runs"),
):
    """Search a recipe's fields with Optuna; each trial is a run.

    Each trial trains the run tune-<study>-<n>, and is pruned when it falls behind. TPE samples the space; a
    median pruner reads the competition's metric after every epoch. Workers on several machines share a study
    through --storage postgresql://...; `pipeline tune --study NAME --show` shows it.
    """
    import time

    started = time.time()
    from pipeline.train.budget import parse_duration
    from pipeline.tune.storage import storage_url

    if show:
        if study is None and recipe is None:
            raise_usage("--show needs --study NAME (or --recipe NAME, whose name the study has by default).")
        _show(study or Path(str(recipe)).stem, storage_url(runs_dir, storage), runs_dir)
        return
    if recipe is None:
        raise_usage("Give --recipe NAME|FILE: the recipe whose fields the study searches (`pipeline recipes`).")
    from pipeline.tune.show import trial_line
    from pipeline.tune.study import TuneJob, check_job, run_worker, run_workers

    selected = _parse_folds(folds)
    settings = given(device=device, workers=workers, threads=threads, tracker=tracker, data_dir=data_dir,
                     runs_dir=runs_dir)
    job = TuneJob(recipe=recipe, trials=trials, space=str(space) if space else None, study=study, storage=storage,
                  folds=selected, jobs=jobs, settings=settings,
                  time_limit=parse_duration(time_limit) if time_limit else None)
    check_job(job)
    console.print(f"study {job.study} in {escape(_shown(job.storage))}: up to {trials} trials of recipe {recipe} "
                  f"over {escape(job.space)}, {jobs} worker(s)", highlight=False)
    if jobs == 1:
        run_worker(job, lambda s: console.print(escape(trial_line(s)), highlight=False), started=started)
    else:
        codes = run_workers(job, started)
        if any(codes):
            raise_usage(f"{sum(1 for c in codes if c)} of {jobs} workers stopped on an error (above).")
    _show(job.study, job.storage, runs_dir)


def raise_usage(message: str):
    from pipeline.errors import ConfigError

    raise ConfigError(message)


def _shown(url: str) -> str:
    from pipeline.tune.storage import shown

    return shown(url)


def _show(name: str, url: str, runs_dir: Path) -> None:
    from pipeline.tune.show import cell, show_study

    result = show_study(name, url, runs_dir)
    table = Table(title=f"study {name}")
    for col in result.frame.columns:
        table.add_column(str(col), justify="left" if col in ("state", "run") else "right")
    for row in result.frame.itertuples(index=False):
        table.add_row(*[cell(v) for v in row])
    # piped (not a terminal): the table at its natural width, one line per trial, for grep and files
    (console if console.is_terminal else Console(file=console.file, width=1000)).print(table)
    if result.best:
        console.print(f"best: trial {result.best['trial']} ({result.best['value']:.4f}), run {result.best['run']}; "
                      f"its recipe: {escape(str(result.recipe_file))} (`pipeline train --recipe FILE`)",
                      highlight=False)
    console.print(f"page: {escape(str(result.page))}", highlight=False)
