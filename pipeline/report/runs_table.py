"""The table of every run (``pipeline runs``): settings, folds finished, CV scores, time, in a chosen order."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from pipeline.choices import RUN_SORTS as SORTS
from pipeline.errors import ConfigError
from pipeline.recipe import DEFAULT_RECIPE
from pipeline.rundir import RunDir, all_runs

RUN_COLUMNS = ["run", "arch", "recipe", "img_size", "epochs", "folds", "metric", "score", "accuracy", "log_loss",
               "roc_auc", "seconds", "test_probs", "created", "status"]


def _nan_if_none(value) -> float:
    return math.nan if value is None else value


def recipe_name(source: str | None) -> str:
    """A named recipe as is; a recipe file by its stem (``recipes/big.toml`` -> ``big``); none given: the default
    recipe (``lenet``), which the options of a run without --recipe start from."""
    if not source:
        return DEFAULT_RECIPE
    return Path(source).stem if source.endswith(".toml") else source


def _run_row(run: RunDir) -> dict:
    why = run.readable()
    if why:  # listed, with why, so that one broken folder does not hide the others
        return {"run": run.name, "status": f"unreadable: {why}", "test_probs": run.test_probs_path.exists(),
                **dict.fromkeys(("score", "accuracy", "log_loss", "roc_auc", "seconds"), math.nan)}
    config = run.config()
    c = config["recipe"]
    finished = run.is_finished()
    cv = (run.read_cv() or {}) if finished else {}
    overall = cv.get("overall", {})
    selected, n_folds = len(run.selected_folds()), config.get("n_folds")
    folds = f"{len(run.finished_folds())}/{selected}"
    if n_folds and selected and selected != n_folds:
        folds += f" of {n_folds}"  # a run of some folds only: its CV covers part of the training set
    return {"run": run.name, "arch": c.get("arch"), "recipe": recipe_name(config.get("recipe_source")),
            "img_size": c.get("img_size"), "epochs": c.get("epochs"), "folds": folds,
            # the competition's metric first (cv.json: the first of its overall scores)
            "metric": cv.get("metric") or (config.get("competition") or {}).get("metric"),
            "score": _nan_if_none(overall.get(cv.get("metric"))) if cv.get("metric") else math.nan,
            **{k: _nan_if_none(overall.get(k)) for k in ("accuracy", "log_loss", "roc_auc")},
            "seconds": _nan_if_none(cv.get("seconds")), "test_probs": run.test_probs_path.exists(),
            "created": config.get("created"), "status": _status(run, finished)}


def _status(run: RunDir, finished: bool) -> str:
    """done, unfinished, or what stopped a tune trial (pruned, failed)."""
    state = None if finished else run.trial_state()
    return state if state in ("pruned", "failed") else "done" if finished else "unfinished"


def list_runs(runs_dir: str | Path, sort: str = "logloss") -> pd.DataFrame:
    """One row per run folder, in the order ``sort`` asks for.

    Args:
        runs_dir: the folder holding the run folders; missing is the same as empty.
        sort: ``logloss`` (lowest first), ``accuracy`` or ``auc`` (highest first), ``time`` (shortest
            training first), ``created`` (newest first) or ``name``. For the four scores, unfinished runs
            (which have none) come last; ties go to the lower log-loss, then the name.

    Returns:
        Columns ``run, arch, recipe, img_size, epochs, folds, metric, score, accuracy, log_loss, roc_auc,
        seconds, test_probs, created, status`` (``metric``: the competition's, ``score``: its CV value):
        ``recipe`` is the recipe the run was started from (``lenet`` when none was named: the defaults),
        ``folds`` reads ``finished/trained`` (``1/1 of 5`` for a run of one fold of five), ``seconds`` is the
        training wall time from cv.json, ``test_probs`` whether ``pipeline predict`` has saved the run's test
        predictions. Unfinished runs have NaN scores and status ``unfinished`` (``pipeline runs`` shows NaN and
        None as ``-``).

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
