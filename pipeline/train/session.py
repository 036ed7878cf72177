"""k-fold training: one model per fold on the engine, the out-of-fold predictions and the CV score.

One process trains every fold in turn. Under torchrun (or ``pipeline train --nproc N``) the
processes either share the folds (``--parallel folds``: rank r trains folds r, r+W, ...) or train
each fold together with DistributedDataParallel (``--parallel ddp``). Only the main process writes
run-level files; every process reaches every barrier. A run is resumable fold by fold and, within a
fold, from its last finished epoch (also after torchrun restarts its workers).
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch

from pipeline.competitions.spec import run_competition
from pipeline.compute.runtime import (
    Runtime,
    batch_per_process,
    gpu_names,
    local_processes,
    parallel_mode,
    processes_line,
    restarting,
)
from pipeline.compute.settings import RunSettings
from pipeline.data.cache import open_cache
from pipeline.data.images import base_size_for
from pipeline.errors import ConfigError, Interrupted, PipelineError
from pipeline.fileio import write_csv, write_json, write_text
from pipeline.metrics import table_probs
from pipeline.progress import clock, say
from pipeline.recipe import Recipe
from pipeline.rundir import RunDir
from pipeline.train.budget import oof_passes, plan_epochs
from pipeline.train.display import Display, Estimate, RunClock
from pipeline.train.engine import Callback
from pipeline.train.fold import time_fold, train_fold
from pipeline.train.request import TrainRequest, end_session, prepare_run, requested_settings, run_seconds
from pipeline.train.tracking import Tracker, make_tracker

_logger = logging.getLogger(__name__)


def train(request: TrainRequest, resume: bool | None = None, *, report: Callable[[Path], Path] | None = None,
          callbacks: tuple[Callback, ...] = ()) -> dict:
    """Train every selected fold; write oof.csv and cv.json. Returns the cv.json content.

    Args:
        request: the recipe, the options given and how to run (see :class:`TrainRequest`).
        resume: overrides ``request.resume`` when given.
        report: ``report(run folder) -> page`` writes the run's report when the run finishes (with the
            ``report`` setting on; the main process only); ``pipeline.report.build_report`` is the one
            the command line passes.
        callbacks: more engine callbacks for every fold, after the run's own (``pipeline tune``'s pruning).
    """
    if resume is not None:
        request = dataclasses.replace(request, resume=resume)
    settings = requested_settings(request)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    rt = Runtime.from_env(settings.device, settings.precision, channels_last=settings.channels_last,
                          deterministic=settings.deterministic)
    held, run_dir, ok = [], None, False
    created = not (request.resume or request.attach or restarting())

    def prepare() -> str:
        run_dir, lock = prepare_run(request, rt)
        held.append(lock)
        return str(run_dir.path)

    try:
        run_dir = RunDir(rt.decided_by_main(prepare))
        if rt.is_main and not request.attach:  # the launcher's workers: the launcher said it
            announce(processes_line(rt.world, gpu_names() if rt.device.type == "cuda" else [], local_processes()),
                     settings.progress)
        cv = _train(run_dir, rt, report, request.started, callbacks)
        ok = True
        return cv
    except PipelineError:
        if created and rt.is_main and run_dir is not None and not request.keep and run_dir.discard_if_untrained():
            run_dir = None  # a refused run leaves no folder: its name stays free
        raise
    finally:
        if rt.is_main and run_dir is not None and run_dir.exists() and not request.attach:
            end_session(run_dir)  # the launcher's workers: the launcher ends the session
        for lock in held:
            if lock is not None:
                lock.release()
        error = sys.exc_info()[1]
        if error is not None:  # the failed frames hold the fold's model (a DDP wrapper holds the process group)
            traceback.clear_frames(error.__traceback__)
        rt.close(ok)


def announce(line: str, progress: bool) -> None:
    """A run's first line: on the screen with progress, in the log without."""
    if progress:
        say(line)
    else:
        _logger.info(line)


def _train(run: RunDir, rt: Runtime, report: Callable[[Path], Path] | None, started: float,
           callbacks: tuple[Callback, ...] = ()) -> dict:
    recipe, settings = Recipe.of_run(run), RunSettings.of_run(run)
    folds, selected = run.read_folds(), run.selected_folds()
    mode = parallel_mode(settings.parallel, len(selected), rt.world)
    if mode == "ddp" and recipe.batch_size % rt.world:  # a resume with another --nproc
        raise ConfigError(f"--parallel ddp splits each batch over {rt.world} processes: --batch-size "
                          f"{recipe.batch_size} must be a multiple of {rt.world}.")
    rt.open_tensor_group(mode)
    cache = None
    pseudo = run.read_pseudo()
    paths = folds.path if pseudo is None else pd.concat([folds.path, pseudo.path], ignore_index=True)
    if settings.cache:  # built once per machine (by its first process), then opened by the others
        if rt.local_rank == 0:
            cache = open_cache(settings.data_dir, paths, base_size_for(recipe.img_size),
                               progress=settings.progress and rt.is_main)
        rt.barrier()
        if rt.local_rank != 0:
            cache = open_cache(settings.data_dir, paths, base_size_for(recipe.img_size))
    mine, fold_rt = (selected, rt) if mode == "ddp" else (selected[rt.rank::rt.world], rt.as_single_process())
    if settings.time_limit:
        recipe = _fit_time_limit(run, rt, recipe, settings, folds, cache, mode, started)
    tracker = make_tracker(settings.tracker, run, recipe, main=rt.is_main)
    try:
        try:
            _train_folds(run, rt, fold_rt, mine, recipe, settings, folds, cache, tracker, callbacks)
        except PipelineError as exc:
            if rt.distributed and mode == "folds":  # tell the processes waiting for this one's folds
                write_text(run.failed_path, f"process {rt.rank}: {exc}\n")
            raise
        if rt.distributed and mode == "folds":  # idle processes wait for the busiest, holding no collective open
            wait_for_folds(run, selected)
        rt.barrier()
        cv = rt.decided_by_main(lambda: write_cv(run, selected, seconds=run_seconds(run.config())))
        if rt.is_main:
            page = report(run.path) if settings.report and report is not None else None
            tracker.run_done(cv, page)
        return cv
    finally:
        tracker.close()


def _fit_time_limit(run: RunDir, rt: Runtime, recipe: Recipe, settings: RunSettings, folds: pd.DataFrame, cache,
                    mode: str, started: float) -> Recipe:
    """Lower the run's epochs so that every fold finishes inside ``--time-limit`` (decided once, by the main
    process, from a few timed batches of the first fold, and saved in the run's recipe); the run's recipe."""
    selected = run.selected_folds()

    def decide() -> None:
        config = run.config()
        if "time_limit" in config:
            return  # decided when the run started: a resume keeps those epochs
        if run.metrics_path.exists():
            _logger.warning("--time-limit: run %s has trained epochs already; it keeps its %d epochs a fold",
                            run.name, recipe.epochs)
            return
        probe = dataclasses.replace(recipe, batch_size=batch_per_process(recipe.batch_size, rt.world, mode))
        epoch_s, extra_s = time_fold(selected[0], rt.as_single_process(), probe, settings, folds, cache,
                                     run_competition(config), pseudo=run.read_pseudo())
        per_process = -(-len(selected) // rt.world) if mode == "folds" else len(selected)
        plan = plan_epochs(settings.time_limit, time.time() - started, epoch_s, extra_s, per_process, recipe.epochs)
        config["recipe"]["epochs"], config["time_limit"] = plan.epochs, plan.to_dict()
        if plan.epochs < plan.recipe_epochs and recipe.warmup_epochs > 0:
            # the warm-up shrinks with the epochs, so that a cut schedule keeps its shape and still ends at zero
            # (a recipe's 1-epoch warm-up in a 1-epoch budget would never decay)
            warmup = recipe.warmup_epochs * plan.epochs / plan.recipe_epochs
            config["time_limit"]["recipe_warmup_epochs"] = recipe.warmup_epochs
            config["recipe"]["warmup_epochs"] = config["time_limit"]["warmup_epochs"] = warmup
        run.write_config(config)
        if settings.progress:
            cut = f"(of the recipe's {plan.recipe_epochs})" if plan.epochs < plan.recipe_epochs else "(the recipe's)"
            say(f"--time-limit {clock(plan.seconds)}: {plan.epochs} epochs a fold {cut}, about "
                f"{clock(plan.epoch_seconds)} each, for {plan.folds_per_process} fold(s) in this process")

    rt.decided_by_main(decide)
    return Recipe.of_run(run)


def _train_folds(run: RunDir, rt: Runtime, fold_rt: Runtime, mine: list[int], recipe: Recipe,
                 settings: RunSettings, folds: pd.DataFrame, cache, tracker: Tracker,
                 callbacks: tuple[Callback, ...] = ()) -> None:
    """Train this process's folds (skipping finished ones), showing their progress on the main process."""
    todo = [k for k in mine if not run.fold_oof(k).exists()]
    for k in sorted(set(mine) - set(todo)):
        _logger.info("fold %d already finished; skipping", k)
    trained = {k: _epochs_done(run, k) for k in todo}
    clock = RunClock(sum(recipe.epochs - done for done in trained.values()), folds=len(todo))
    with Display(settings.progress and rt.is_main, run.name) as display:
        for position, k in enumerate(todo, start=1):
            if restarting() and trained[k]:
                _logger.warning("fold %d: restarted after a failure; continuing after epoch %d (epochs 1-%d are kept, "
                                "not trained again)", k, trained[k], trained[k])
            shown = display.callbacks(k, position, len(todo), clock)
            if position == 1 and shown:
                passes = oof_passes(len(run_competition(run.config()).oof_views()), recipe.average,
                                    recipe.average_epochs)
                shown.append(Estimate(clock, display.say, len(todo), passes, lambda: run_seconds(run.config()),
                                      patience=recipe.patience))
            try:
                result = train_fold(run, k, fold_rt, recipe, settings, folds, cache, [*shown, *callbacks], tracker)
            except KeyboardInterrupt:
                how = f" --nproc {rt.world}" if rt.distributed else ""
                raise Interrupted(f"Interrupted during fold {k}; finished epochs are saved. Continue with "
                                  f"`pipeline train --run-name {run.name} --resume{how}`.") from None
            _logger.info("fold %d: %s", k, result)


def _epochs_done(run: RunDir, fold: int) -> int:
    """Epochs of ``fold`` already trained (its last.pt; mmap: only the epoch is read, not the weights)."""
    if not run.last(fold).exists():
        return 0
    return int(torch.load(run.last(fold), map_location="cpu", weights_only=False, mmap=True)["epoch"]) + 1


def wait_for_folds(run: RunDir, folds: list[int], poll: float = 2.0) -> None:
    """Return once every fold in ``folds`` has finished (its oof.csv exists), looking every ``poll`` seconds.

    In ``--parallel folds`` a process that has trained its folds waits here for the others, on the run
    folder, instead of in a barrier that times out (and, under nccl, has its watchdog abort the job) when one
    fold takes hours longer. If another process dies, torchrun stops (or restarts) this one.
    """
    while missing := [k for k in folds if not run.fold_oof(k).exists()]:
        if run.failed_path.exists():
            error = PipelineError(f"Stopped: another training process failed ({run.failed_path.read_text().strip()}).")
            error.secondary = True
            raise error
        _logger.debug("waiting for folds %s", missing)
        time.sleep(poll)


def write_cv(run: RunDir, selected: list[int], seconds: float | None = None) -> dict:
    """Merge the folds' OOF predictions into oof.csv and score them into cv.json."""
    parts = [pd.read_csv(run.fold_oof(k)) for k in selected]
    oof = pd.concat(parts, ignore_index=True)
    write_csv(run.oof_path, oof)
    comp = run_competition(run.config())
    columns = [comp.prob_columns()]
    per_fold = {}
    for k, part in zip(selected, parts, strict=True):
        # mmap: only the epoch is needed, not the weights
        best = torch.load(run.best(k), map_location="cpu", weights_only=False, mmap=True)
        per_fold[str(k)] = comp.kind.scores(part.label, table_probs(part, columns)) | \
            {"best_epoch": int(best["epoch"]) + 1} | \
            ({"weights": best["weights"]} if best.get("weights", "model") != "model" else {})
    # epochs_from: best_epoch counts from 1, as the epoch log and the report do (runs without it counted from 0)
    cv = {"run": run.name, "metric": comp.metric, "epochs_from": 1, "folds": per_fold,
          "overall": comp.kind.scores(oof.label, table_probs(oof, columns))}
    if seconds is not None:
        cv["seconds"] = seconds  # the run's training time over all its sessions, start-up and restarts included
    write_json(run.cv_path, cv)
    return cv
