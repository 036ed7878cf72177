"""``pipeline tune``: an Optuna study whose trials are runs.

Each trial samples the search space (TPE), trains the recipe with those fields as the run ``tune-<study>-<n>`` on
the folds asked (fold 0 by default) and reports the competition's metric on the fold after every epoch to a
median pruner, which stops a trial that does worse than the others had at that epoch. The study lives in an
RDB storage: an SQLite file beside the runs by default (several processes on one machine), or any URL Optuna's
``RDBStorage`` takes (PostgreSQL for workers on several machines, each running the same command). The study
records the competition and recipe it was made for and refuses another; ``trials`` counts the study's trials of
every state, so a re-run continues it up to that number.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock

from pipeline.errors import ConfigError, PipelineError
from pipeline.fileio import write_json
from pipeline.metrics import LOWER_IS_BETTER, metric_value
from pipeline.rundir import RunDir
from pipeline.tune.show import STATES
from pipeline.tune.space import Space, default_space_file, load_space
from pipeline.tune.storage import open_storage, shown, storage_url

MIN_TRIAL_S = 30.0  # with --time-limit: no trial starts with less than this left


@dataclass
class TuneJob:
    """What ``pipeline tune`` was asked (JSON-able: each worker process gets it as a file).

    Args:
        recipe: a named recipe or a recipe file.
        trials: the study's trials, of every state, after which the workers stop.
        space: the search space file (None: the recipe's default).
        study: the study's name (None: the recipe's name).
        storage: an RDB URL (None: ``sqlite:///<runs_dir>/tune.db``).
        folds: the folds each trial trains (None: all).
        time_limit: seconds for the whole study (each worker's), split over the trials left.
        jobs: worker processes on this machine (the split of the budget counts them).
        settings: run settings of every trial (data_dir, runs_dir, device, workers, threads, tracker, ...).
    """

    recipe: str
    trials: int
    space: str | None = None
    study: str | None = None
    storage: str | None = None
    folds: list[int] | None = field(default_factory=lambda: [0])
    time_limit: float | None = None
    jobs: int = 1
    settings: dict = field(default_factory=dict)

    def __post_init__(self):
        self.recipe = str(self.recipe)
        self.study = self.study or Path(self.recipe).stem
        self.space = str(self.space or default_space_file(self.recipe))
        self.storage = storage_url(self.runs_dir, self.storage)
        if self.trials < 1:
            raise ConfigError(f"--trials must be at least 1, got {self.trials}.")
        if self.jobs < 1:
            raise ConfigError(f"--jobs must be at least 1, got {self.jobs}.")

    @property
    def runs_dir(self) -> Path:
        return Path(self.settings.get("runs_dir", "runs"))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def epoch_score(row: dict, metric: str) -> float:
    """What a trial reports after an epoch, in the direction of the competition's ``metric``: the metric on the
    fold (``val_metric``) when the epoch's row has it, else the fold's log-loss (negated when higher is better)."""
    if row.get("val_metric") is not None:
        return float(row["val_metric"])
    return float(row["val_logloss"]) * (1 if metric in LOWER_IS_BETTER else -1)


def direction(metric: str) -> str:
    return "minimize" if metric in LOWER_IS_BETTER else "maximize"


def make_pruning(trial, metric: str):
    """An engine callback that reports each epoch's score to ``trial`` and stops the run when the pruner says so
    (``optuna.TrialPruned`` leaves the fold, the run and the trial)."""
    import optuna

    from pipeline.train.engine import Callback

    class Pruning(Callback):
        def __init__(self):
            self.step = 0  # epochs of every fold of the trial, in order

        def on_epoch_end(self, state) -> None:
            value = epoch_score(state.row, metric)
            trial.report(value, self.step)
            self.step += 1
            if trial.should_prune():
                raise optuna.TrialPruned(f"fold {state.fold}, epoch {state.epoch + 1}: {value:.4f} is behind the "
                                         "other trials at that epoch")

    return Pruning()


def open_study(job: TuneJob):
    """The study ``job.study`` in its storage, created when new; ConfigError when it was made for another
    competition or recipe."""
    import optuna

    from pipeline.competitions.spec import data_competition

    comp = data_competition(job.settings.get("data_dir", "data"))
    storage = open_storage(job.storage)
    made_for = {"competition": comp.name, "metric": comp.metric, "recipe": job.recipe}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=storage, study_name=job.study, load_if_exists=True,
                                direction=direction(comp.metric),
                                sampler=optuna.samplers.TPESampler(n_startup_trials=4),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1))
    attrs = study.user_attrs
    differ = {k: (attrs[k], v) for k, v in made_for.items() if k in attrs and attrs[k] != v}
    if differ:
        listing = "; ".join(f"{k} {old!r}, not {new!r}" for k, (old, new) in differ.items())
        raise ConfigError(f"Study {job.study!r} in {shown(job.storage)} was made for {listing}: pick "
                          "another --study for this one.")
    for k, v in made_for.items():
        if k not in attrs:
            study.set_user_attr(k, v)
    return study


def check_job(job: TuneJob) -> Space:
    """Everything a worker needs, checked once before any starts: the storage, the study, the space. A new study's
    first trial is the recipe's own values (where the space holds them): the yardstick the others are read against.
    """
    space = load_space(job.space, job.recipe)  # first: a refused space leaves no study behind
    study = open_study(job)
    if not study.get_trials(deepcopy=False) and not study.user_attrs.get("baseline"):
        study.set_user_attr("baseline", True)
        study.enqueue_trial(space.recipe_point(job.recipe), user_attrs={"baseline": True})
    return space


def run_worker(job: TuneJob, on_trial: Callable[[dict], None] | None = None, started: float | None = None) -> int:
    """Run trials until the study has ``job.trials`` (or the time is up); the number this worker ran.

    Trials are taken one at a time under a lock beside the runs (workers on one machine never start more than
    ``job.trials``; workers on several machines sharing a database may end one or two above it when they start
    trials at the same moment). ``on_trial(summary)`` is called as each ends.
    """
    started = started or time.time()
    space = load_space(job.space, job.recipe)
    study = open_study(job)
    job.runs_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(job.runs_dir / f".tune-{job.study}.lock")
    ran = 0
    while True:
        with lock:
            if len(study.get_trials(deepcopy=False)) >= job.trials:
                return ran
            left = job.time_limit - (time.time() - started) if job.time_limit else None
            if left is not None and left < MIN_TRIAL_S:
                return ran
            trial = study.ask()
        share = None if left is None else left / math.ceil(max(1, job.trials - trial.number) / job.jobs)
        summary = run_trial(study, trial, job, space, share)
        ran += 1
        if on_trial is not None:
            on_trial(summary)


def run_trial(study, trial, job: TuneJob, space: Space, seconds: float | None) -> dict:
    """Train the run of ``trial`` and tell the study how it ended; its summary (number, state, value, params,
    seconds, run, why)."""
    import optuna

    from pipeline.train.engine import Diverged
    from pipeline.train.request import TrainRequest
    from pipeline.train.session import train

    metric = study.user_attrs["metric"]
    name = f"tune-{job.study}-{trial.number}"
    trial.set_user_attr("run", name)
    t0 = time.time()
    value, state, why = None, optuna.trial.TrialState.COMPLETE, None
    try:
        params = space.suggest(trial)
        trial.set_user_attr("fields", params)  # the sampled fields and the fixed ones: the recipe, with the study's
        settings = job.settings | {"run_name": name, "folds": job.folds, "progress": False, "report": False,
                                   **({"time_limit": seconds} if seconds else {})}
        request = TrainRequest(recipe=job.recipe, overrides=params, settings=settings, keep=True)
        cv = train(request, callbacks=(make_pruning(trial, metric),))
        value = metric_value(cv["overall"], cv.get("metric") or metric)
        if value is None or not math.isfinite(value):
            state, why = optuna.trial.TrialState.FAIL, f"the run's {metric} is {value}"
    except optuna.TrialPruned as exc:
        state, why = optuna.trial.TrialState.PRUNED, str(exc)
    except Diverged as exc:
        state, why = optuna.trial.TrialState.PRUNED, f"diverged: {exc}"
    except PipelineError as exc:
        state, why = optuna.trial.TrialState.FAIL, str(exc)
    except BaseException as exc:  # a bug or an interrupt: the trial is marked, then the error goes on
        _end(study, trial, optuna.trial.TrialState.FAIL, None, f"{type(exc).__name__}: {exc}", job, name)
        raise
    return _end(study, trial, state, value, why, job, name, time.time() - t0)


def _end(study, trial, state, value, why: str | None, job: TuneJob, name: str, seconds: float = 0.0) -> dict:
    import optuna

    if why:
        trial.set_user_attr("why", why[:500])
    params = trial.params
    study.tell(trial, value if state == optuna.trial.TrialState.COMPLETE else None, state=state)
    summary = {"study": job.study, "trial": trial.number, "state": STATES[state.name], "value": value,
               "params": params, "seconds": round(seconds, 1), "run": name, "why": why}
    run = RunDir(job.runs_dir / name)
    if run.exists():
        write_json(run.trial_path, summary)
    return summary


# ---- several worker processes ----------------------------------------------------------------------------------
def worker_env(index: int, gpus: int, jobs: int, cpus: int | None = None) -> dict:
    """The environment of worker ``index``: its own GPU (round robin) on a GPU machine, else its share of the
    CPU threads."""
    env = dict(os.environ)
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = str(index % gpus)
    else:
        env["OMP_NUM_THREADS"] = str(max(1, (cpus or os.cpu_count() or 1) // jobs))
    return env


def run_workers(job: TuneJob, started: float) -> list[int]:
    """Start ``job.jobs`` worker processes (``python -m pipeline.tune.worker``) and wait for them; their exit
    codes. Each prints a line per trial."""
    import subprocess
    import sys
    import tempfile

    from pipeline.compute.runtime import visible_gpus

    gpus = visible_gpus() if job.settings.get("device", "auto") != "cpu" else 0
    job.runs_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".json", dir=job.runs_dir, prefix=".tune-", delete=False) as f:
        json.dump({"job": job.to_dict(), "started": started}, f)
    try:
        procs = [subprocess.Popen([sys.executable, "-m", "pipeline.tune.worker", f.name],
                                  env=worker_env(i, gpus, job.jobs)) for i in range(job.jobs)]
        return [p.wait() for p in procs]
    finally:
        Path(f.name).unlink(missing_ok=True)
