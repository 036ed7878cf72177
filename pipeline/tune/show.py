"""What a study found (``pipeline tune --show``): the trials table, the best trial's recipe as a TOML file that
``pipeline train --recipe FILE`` takes, and a page with the optimisation history and the parameter importances."""

from __future__ import annotations

import html
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.errors import ConfigError
from pipeline.fileio import write_text
from pipeline.progress import clock
from pipeline.rundir import RunDir
from pipeline.tune.storage import open_storage, shown

STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}


def trial_line(s: dict) -> str:
    """One line for a trial that ended: ``trial 3 complete: log_loss 0.4123 in 1m20s (lr=0.003, ...) -> run``."""
    value = "" if s["value"] is None else f" {s['value']:.4f}"
    params = ", ".join(f"{k}={_short(v)}" for k, v in s["params"].items())
    why = f"; {s['why'].splitlines()[0][:160]}" if s.get("why") else ""
    return f"trial {s['trial']} {s['state']}{value} in {clock(s['seconds'])} ({params}) -> {s['run']}{why}"


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def load_study(name: str, url: str):
    """The study ``name`` in ``url``; ConfigError naming the studies there when it has none of that name."""
    import optuna

    storage = open_storage(url)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    if name not in names:
        raise ConfigError(f"No study {name!r} in {shown(url)}; it holds {', '.join(names) or 'none'}.")
    return optuna.load_study(study_name=name, storage=storage)


def trials_frame(study) -> pd.DataFrame:
    """One row per trial: number, state, the metric, seconds, run folder and each sampled field."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() \
            if t.datetime_complete and t.datetime_start else math.nan
        value = t.value if t.value is not None else (t.intermediate_values[max(t.intermediate_values)]
                                                     if t.intermediate_values else math.nan)
        rows.append({"trial": t.number, "state": STATES.get(t.state.name, t.state.name.lower()), "value": value,
                     "epochs": len(t.intermediate_values), "seconds": seconds, "run": t.user_attrs.get("run"),
                     "baseline": bool(t.user_attrs.get("baseline")), **t.params})
    return pd.DataFrame(rows)


def best_recipe(study, runs_dir: str | Path) -> tuple[dict, object]:
    """The recipe fields of the study's best complete trial (as its run trained them, epochs cut by the budget
    included; rebuilt from the study when the run folder is elsewhere) and the trial."""
    from pipeline.recipe import build_recipe

    if not any(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False)):
        raise ConfigError(f"No trial of study {study.study_name!r} has completed yet: there is no best recipe.")
    best = study.best_trial
    run = RunDir(Path(runs_dir) / best.user_attrs.get("run", ""))
    if run.exists():
        return run.config()["recipe"], best
    return build_recipe(study.user_attrs["recipe"], best.user_attrs.get("fields", best.params)).to_dict(), best


def recipe_toml(fields: dict, header: str) -> str:
    """``fields`` as a recipe file (None fields left out: they keep their defaults)."""
    lines = [f"# {line}" for line in header.splitlines()]
    for name, value in fields.items():
        if value is None:
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (int, float)):
            text = repr(value)
        elif isinstance(value, list):
            text = "[" + ", ".join(str(v) for v in value) + "]"
        else:
            text = json.dumps(str(value))  # a TOML basic string
        lines.append(f"{name} = {text}")
    return "\n".join(lines) + "\n"


@dataclass
class Shown:
    frame: pd.DataFrame
    best: dict | None  # the best trial's number, value and run
    recipe_file: Path | None
    page: Path


def show_study(name: str, url: str, runs_dir: str | Path) -> Shown:
    """The trials table, the best recipe written to ``<runs_dir>/tune-<study>-best.toml`` and the page
    ``<runs_dir>/tune-<study>.html``."""
    study = load_study(name, url)
    frame = trials_frame(study)
    metric = study.user_attrs.get("metric", "value")
    best, recipe_file = None, None
    if (frame.state == "complete").any() if not frame.empty else False:
        fields, trial = best_recipe(study, runs_dir)
        recipe_file = Path(runs_dir) / f"tune-{name}-best.toml"
        header = (f"Study {name}'s best trial ({trial.number} of {len(frame)}): {metric} {trial.value:.4f} on folds "
                  f"{_folds(runs_dir, trial)}; from recipe {study.user_attrs.get('recipe')} "
                  "(`pipeline train --recipe THIS_FILE`)")
        write_text(recipe_file, recipe_toml(fields, header))
        best = {"trial": trial.number, "value": trial.value, "run": trial.user_attrs.get("run")}
    page = write_page(study, frame, metric, Path(runs_dir) / f"tune-{name}.html", recipe_file)
    return Shown(frame, best, recipe_file, page)


def _folds(runs_dir, trial) -> str:
    run = RunDir(Path(runs_dir) / trial.user_attrs.get("run", ""))
    return ",".join(map(str, run.selected_folds())) if run.exists() else "?"


def history_figure(frame: pd.DataFrame, metric: str, minimize: bool):
    """Each trial's metric by trial number (pruned ones at their last epoch's score), and the best so far."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for state, style in (("complete", {"marker": "o", "color": "tab:blue"}),
                         ("pruned", {"marker": "x", "color": "tab:gray"})):
        part = frame[frame.state == state]
        ax.scatter(part.trial, part.value, label=state, **style)
    done = frame[frame.state == "complete"].sort_values("trial")
    if not done.empty:
        best = done.value.cummin() if minimize else done.value.cummax()
        ax.step(done.trial, best, where="post", color="tab:red", label="best so far")
    ax.set(xlabel="trial", ylabel=metric, title="optimisation history")
    ax.legend()
    fig.tight_layout()
    return fig


def importance_figure(importances: dict[str, float]):
    import matplotlib.pyplot as plt

    names = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(names) + 1.2))
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    ax.set(xlabel="importance (fANOVA, share of the metric's variance)", title="parameter importances")
    fig.tight_layout()
    return fig


def write_page(study, frame: pd.DataFrame, metric: str, out: Path, recipe_file: Path | None) -> Path:
    from pipeline.report.figures import png_bytes
    from pipeline.report.page import CSS, img_data, table

    minimize = study.direction.name == "MINIMIZE"
    parts = [f"<h1>Study {html.escape(study.study_name)}</h1>",
             f"<p>{html.escape(str(study.user_attrs))}; {metric}: {'lower' if minimize else 'higher'} is better.</p>"]
    if recipe_file is not None:
        parts.append(f"<p>Best recipe: <code>{html.escape(str(recipe_file))}</code></p>")
    if not frame.empty:
        cells = [[cell(v) for v in row] for row in frame.itertuples(index=False)]
        parts.append(table(list(frame.columns), cells, frozenset({1, 5})))
        parts.append(img_data(png_bytes(history_figure(frame, metric, minimize)), "image/png", "history"))
    try:
        import optuna

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the forest's notes on few trials; the figure says what it found
            importances = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    except (RuntimeError, ValueError) as exc:  # fewer than two complete trials, or no parameter that varied
        parts.append(f"<p>No parameter importances yet ({html.escape(str(exc))}).</p>")
    else:
        if importances:
            parts.append(img_data(png_bytes(importance_figure(importances)), "image/png", "importances"))
    write_text(out, f"<!doctype html><meta charset='utf-8'><title>{html.escape(study.study_name)}</title>"
                    f"<style>{CSS}</style>\n" + "\n".join(parts) + "\n")
    return out


def cell(value) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4g}"
    return "-" if value is None else str(value)
