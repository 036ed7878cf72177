"""What ``pipeline train`` was asked, and the run folder it opens: a new run (checked, then created under its
lock), a resumed one (its recipe kept, changed settings recorded), or the run a restarted torchrun job
or a launcher's worker joins."""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd
import torch

from pipeline import __version__
from pipeline.choices import PSEUDO_THRESHOLD
from pipeline.competitions.spec import data_competition
from pipeline.compute.runtime import (
    Runtime,
    batch_per_process,
    check_compile,
    gpu_capability,
    parallel_mode,
    restarting,
)
from pipeline.compute.settings import RunSettings
from pipeline.data.catalog import read_train
from pipeline.data.folds import read_folds
from pipeline.errors import ConfigError, DataError
from pipeline.fileio import write_csv
from pipeline.models import check_weights
from pipeline.recipe import build_recipe, check_fields, load_recipe_file
from pipeline.rundir import SCHEMA, RunDir, all_runs, find_run, photo_keys
from pipeline.train.preflight import check_fits, check_pretrained, recipe_warnings
from pipeline.train.pseudo import pseudo_labels
from pipeline.train.tracking import check_tracker

_logger = logging.getLogger(__name__)


@dataclass
class TrainRequest:
    """What ``pipeline train`` was asked.

    Args:
        recipe: a named recipe or a TOML file; None: the built-in defaults (LeNet).
        overrides: recipe fields given explicitly (they override the recipe).
        settings: :class:`RunSettings` fields given explicitly.
        resume: continue ``settings["run_name"]`` (or the newest run).
        attach: join a run that the launcher created and holds the lock of (``--nproc``).
    """

    recipe: str | None = None
    overrides: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    resume: bool = False
    attach: bool = False
    started: float = field(default_factory=time.time)  # when the command started (--time-limit counts from it)
    job: str | None = None  # the launcher's job id (torchrun's is TORCHELASTIC_RUN_ID)
    pseudo: str | None = None  # a submission's note or a run: its confident test predictions join the training
    pseudo_threshold: float = PSEUDO_THRESHOLD
    keep: bool = False  # keep the run folder of a run that fails before its first epoch (a tune trial's, listed failed)

def environment(rt: Runtime, processes: int) -> dict:
    import albumentations
    import timm

    env = {"pipeline": __version__, "python": platform.python_version(), "torch": torch.__version__,
           "timm": timm.__version__, "albumentations": albumentations.__version__,
           "device": str(rt.device), "precision": str(rt.dtype).removeprefix("torch."),
           "threads": torch.get_num_threads(), "processes": processes, "host": platform.node()}
    if rt.device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(rt.device)
    return env


def requested_settings(request: TrainRequest) -> RunSettings:
    """The run settings this request runs with: the given ones over the defaults (a new run) or over
    the run's saved ones (a resume or an attach)."""
    given = dict(request.settings)
    if request.resume or request.attach:
        return RunSettings.from_dict(_existing_run(given).config()["settings"] | given).checked()
    return RunSettings.from_dict(given).checked()


def _existing_run(given: dict) -> RunDir:
    """The run --resume (or a launcher's worker) continues: ``run_name``, or the newest run."""
    return find_run(given.get("runs_dir", RunSettings.runs_dir), given.get("run_name"), finished=False)


def _run_of_this_job(given: dict) -> RunDir | None:
    """The run this torchrun job created before it restarted its workers: the named one if it exists,
    else the one whose config records torchrun's run id."""
    runs_dir = given.get("runs_dir", RunSettings.runs_dir)
    if given.get("run_name"):
        run = RunDir(Path(runs_dir) / given["run_name"])
        return run if run.exists() else None
    job = os.environ.get("TORCHELASTIC_RUN_ID")
    mine = [r for r in all_runs(runs_dir)
            if job and not r.readable() and r.config().get("launch", {}).get("job") == job]
    return mine[-1] if mine else None


def prepare_run(request: TrainRequest, rt: Runtime, processes: int | None = None):
    """Create the run folder (or reopen it with ``resume``) and take its lock.

    Returns ``(RunDir, lock)``; the lock is held until released (the caller releases it at the end).
    A launcher's worker (``attach``) joins the run the launcher holds, without a lock.

    Args:
        request: what was asked.
        rt: this process's runtime.
        processes: the training processes of the job (the launcher's workers); default ``rt.world``.
    """
    settings = requested_settings(request)
    if settings.compile and rt.device.type == "cuda":  # one line before any work, not Triton's traceback at step 1
        check_compile("cuda", gpu_capability(rt.device), torch.cuda.get_device_name(rt.device))
    if request.attach:
        run = _existing_run(request.settings)
        if restarting():  # the launcher started its workers again after a failure: say so in the run
            config = run.config()
            config["resumes"] = [*config.get("resumes", []), {"time": datetime.now().isoformat(timespec="seconds"),
                                                              "changed": {}, "restart": True,
                                                              "processes": config["launch"]["processes"]}]
            run.write_config(config)
        return run, None
    resume = request.resume
    found = _run_of_this_job(request.settings) if restarting() and not resume else None
    if found is not None:  # torchrun started the workers again: continue the run this job made
        resume, request = True, dataclasses.replace(request, settings=request.settings | {"run_name": found.name})
    if resume:
        return _resume_run(request, settings, rt, processes or rt.world)
    return _new_run(request, settings, rt, processes or rt.world)


def new_session(request: TrainRequest, processes: int) -> dict:
    """An entry of config.json's ``sessions``: one per command that trains the run (a restart of its workers is
    the same session); its ``seconds`` are written when it ends."""
    return {"started": datetime.fromtimestamp(request.started).isoformat(timespec="seconds"),
            "started_ts": request.started, "processes": processes, "seconds": None}


def run_seconds(config: dict, now: float | None = None) -> float:
    """The run's training time over every session: the ended ones, and the current one until ``now``."""
    sessions = config.get("sessions") or []
    done = sum(s["seconds"] or 0.0 for s in sessions[:-1])
    return done + ((now or time.time()) - sessions[-1]["started_ts"] if sessions else 0.0)


def end_session(run: RunDir) -> None:
    """Write the current session's seconds (from its start, launch and restarts included)."""
    config = run.config()
    if config.get("sessions"):
        config["sessions"][-1]["seconds"] = round(time.time() - config["sessions"][-1]["started_ts"], 1)
        run.write_config(config)


def _new_run(request: TrainRequest, settings: RunSettings, rt: Runtime, processes: int):
    check_tracker(settings.tracker, settings.runs_dir)  # a missing package or store: one line now, not later
    recipe = build_recipe(request.recipe, request.overrides)
    check_pretrained(recipe)
    for warning in recipe_warnings(recipe):
        _logger.warning(warning)
    settings.run_name = settings.run_name or f"{recipe.arch}-{datetime.now():%Y%m%d-%H%M%S}"
    folds = read_folds(settings.data_dir)
    comp = data_competition(settings.data_dir)
    if comp.target.kind in ("single", "topk") and (folds.label.max() >= comp.n_classes or folds.label.min() < 0):
        raise DataError(f"{Path(settings.data_dir) / 'folds.csv'} has labels beyond the {comp.n_classes} classes of "
                        f"competition {comp.name}: download the data again (`pipeline download --competition ...`).")
    _check_folds_match_catalogue(folds, settings.data_dir)
    if recipe.weights:  # weights that do not fit: one line now, not when the first fold starts
        check_weights(recipe.arch, recipe.img_size, comp.outputs, recipe.weights, recipe.weights_partial)
    n_folds = int(folds.fold.max()) + 1
    selected = settings.folds if settings.folds is not None else list(range(n_folds))
    bad = [k for k in selected if not 0 <= k < n_folds]
    if bad:
        raise ConfigError(f"--folds {bad} out of range: {Path(settings.data_dir) / 'folds.csv'} has folds "
                          f"0..{n_folds - 1}.")
    settings.folds = selected
    mode = parallel_mode(settings.parallel, len(selected), processes)
    if mode == "ddp" and recipe.batch_size % processes:
        raise ConfigError(f"--parallel ddp splits each batch over {processes} processes: --batch-size "
                          f"{recipe.batch_size} must be a multiple of {processes}.")
    pseudo, pseudo_info = None, None
    if request.pseudo:
        if recipe.mixup or recipe.cutmix:
            raise ConfigError("--pseudo trains on soft labels, which mixup and cutmix (timm's Mixup mixes class "
                              "indices) cannot mix: drop --mixup/--cutmix for this run.")
        pseudo, pseudo_info = pseudo_labels(request.pseudo, settings.runs_dir, Path(settings.data_dir) / "test.csv",
                                            comp, request.pseudo_threshold, folds)
    check_fits(recipe, settings, rt.device, rt.dtype, len(folds) + (0 if pseudo is None else len(pseudo)),
               batch_per_process(recipe.batch_size, processes, mode))
    run = RunDir(Path(settings.runs_dir) / settings.run_name)
    lock = run.lock()
    if run.exists():
        lock.release()
        raise ConfigError(f"Run {run.path} exists already; add --resume to continue it or pick another --run-name.")
    root = str(settings.data_dir)  # the photos are keyed by their place in it: the run can move, and blend
    write_csv(run.folds_path, folds[["path", "label", "fold"]].assign(path=photo_keys(folds.path, root)))
    if pseudo is not None:
        write_csv(run.pseudo_path, pseudo.assign(path=photo_keys(pseudo.path, root)))
    run.write_config({"schema": SCHEMA, "competition": comp.to_dict(), "photo_root": root, "recipe": recipe.to_dict(),
                      **({"pseudo": pseudo_info} if pseudo_info else {}),
                      "settings": dataclasses.asdict(settings),
                      "folds": selected, "n_folds": n_folds,
                      "recipe_source": str(request.recipe) if request.recipe else None,
                      "environment": environment(rt, processes),
                      "launch": {"processes": processes, "job": request.job or os.environ.get("TORCHELASTIC_RUN_ID")},
                      "folds_csv": str(Path(settings.data_dir) / "folds.csv"),
                      "created": datetime.now().isoformat(timespec="seconds"), "resumes": [],
                      "sessions": [new_session(request, processes)]})
    return run, lock


def _check_folds_match_catalogue(folds: pd.DataFrame, data_dir: str | Path) -> None:
    """DataError when folds.csv holds photos that train.csv does not, or labels them differently (a catalogue
    rebuilt or edited since the split): training on it would learn shifted or stale labels. Folds of a subset of
    the catalogue's photos (a trimmed folds.csv) are fine."""
    train = read_train(data_dir)
    ours = folds.set_index("path").label
    theirs = train.set_index("path").label.reindex(ours.index)
    lacked = ~ours.index.isin(train.path)  # a photo train.csv lacks; a multilabel image without labels reads NaN
    differ = int((lacked | (theirs.fillna("").astype(str) != ours.fillna("").astype(str))).sum())
    if differ:
        raise DataError(f"{Path(data_dir) / 'folds.csv'} does not match {Path(data_dir) / 'train.csv'}: {differ} "
                        "photo(s) missing from train.csv or labelled differently; rebuild the folds with "
                        f"`pipeline split --data-dir {data_dir}` (or download the data again).")


def _resume_run(request: TrainRequest, settings: RunSettings, rt: Runtime, processes: int):
    """Reopen a run: its recipe must stay as it was; settings change how it runs, not the recipe (on a GPU the
    precision, TF32, channels_last and cuDNN's autotuning move the last digits), so any may change (and are
    recorded)."""
    run = _existing_run(request.settings)
    lock = run.lock(wait=60 if restarting() else 0)  # a restarted job waits for its old process to let go
    try:
        config = run.config()
        asked = (load_recipe_file(request.recipe) if request.recipe else {}) | check_fields(request.overrides,
                                                                                            "command line")
        differ = {k: (config["recipe"].get(k), v) for k, v in asked.items() if config["recipe"].get(k) != v}
        budget = config.get("time_limit") or {}  # what --time-limit cut is asked again as the recipe had it
        for k, was in (("epochs", budget.get("recipe_epochs")), ("warmup_epochs", budget.get("recipe_warmup_epochs"))):
            if k in differ and differ[k][1] == was:
                del differ[k]
        saved_settings = config["settings"]
        if differ:
            listing = "; ".join(f"{k.replace('_', '-')} {old!r} -> {new!r}" for k, (old, new) in differ.items())
            raise ConfigError(f"--resume continues run {run.name} with the recipe it started with; these options "
                              f"differ from it: {listing}. Drop them, or start a new run (another --run-name).")
        kept = (config.get("pseudo") or {}).get("from")
        if request.pseudo and str(request.pseudo) != kept:
            _logger.warning("--resume: run %s keeps the pseudo-labels it started with (%s); --pseudo %s is ignored",
                            run.name, kept or "none", request.pseudo)
        n_folds = config["n_folds"]
        if settings.folds is not None and any(not 0 <= k < n_folds for k in settings.folds):
            raise ConfigError(f"--folds {settings.folds} out of range: run {run.name} has folds 0..{n_folds - 1}.")
        _warn_if_resplit(run, settings)
        check_tracker(settings.tracker, settings.runs_dir)
        changed = {k: v for k, v in request.settings.items()
                   if saved_settings.get(k) != v and k not in ("run_name", "runs_dir")}
        before = (config.get("sessions") or [{}])[-1].get("processes", config["launch"]["processes"])
        if processes != before:
            changed["processes"] = processes
        if not restarting():
            config["sessions"] = [*config.get("sessions", []), new_session(request, processes)]
        config["settings"] = dataclasses.asdict(settings)
        config["folds"] = settings.folds if settings.folds is not None else config["folds"]
        config["settings"]["folds"] = config["folds"]
        config["resumes"] = [*config.get("resumes", []), {"time": datetime.now().isoformat(timespec="seconds"),
                                                          "changed": changed, "restart": restarting(),
                                                          "processes": processes}]
        run.write_config(config)
        run.failed_path.unlink(missing_ok=True)  # a process of the last attempt stopped on an error
    except BaseException:
        lock.release()
        raise
    return run, lock


def _warn_if_resplit(run: RunDir, settings: RunSettings) -> None:
    current = Path(settings.data_dir) / "folds.csv"
    if not current.exists():
        return
    cols = ["path", "label", "fold"]
    now = pd.read_csv(current)[cols].sort_values("path", kind="stable").reset_index(drop=True)
    own = run.read_folds()[cols].sort_values("path", kind="stable").reset_index(drop=True)
    if not now.equals(own):
        _logger.warning("%s has changed since run %s started (re-split?); the run keeps its own folds (%s), so its "
                        "cross-validation stays free of leaks.", current, run.name, run.folds_path)
