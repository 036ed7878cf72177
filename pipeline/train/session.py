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
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch

from pipeline.data.cache import open_cache
from pipeline.data.images import base_size_for
from pipeline.errors import ConfigError, Interrupted, PipelineError
from pipeline.fileio import write_csv, write_json, write_text
from pipeline.metrics import score
from pipeline.progress import NoProgress, make_progress
from pipeline.rundir import RunDir
from pipeline.train.fold import train_fold
from pipeline.train.recipe import Recipe
from pipeline.train.request import TrainRequest, prepare_run, requested_settings
from pipeline.train.runtime import Runtime, parallel_mode, restarting
from pipeline.train.settings import RunSettings
from pipeline.train.tracking import Tracker, make_tracker

_logger = logging.getLogger(__name__)


def train(request: TrainRequest, resume: bool | None = None, *, report: Callable[[Path], Path] | None = None) -> dict:
    """Train every selected fold; write oof.csv and cv.json. Returns the cv.json content.

    Args:
        request: the recipe, the options given and how to run (see :class:`TrainRequest`).
        resume: overrides ``request.resume`` when given.
        report: ``report(run folder) -> page`` writes the run's report when the run finishes (with the
            ``report`` setting on; the main process only); ``pipeline.report.build_report`` is the one
            the command line passes.
    """
    if resume is not None:
        request = dataclasses.replace(request, resume=resume)
    settings = requested_settings(request)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    rt = Runtime.from_env(settings.device, settings.precision)
    held = []

    def prepare() -> str:
        run_dir, lock = prepare_run(request, rt)
        held.append(lock)
        return str(run_dir.path)

    try:
        run_dir = RunDir(rt.decided_by_main(prepare))
        return _train(run_dir, rt, report)
    finally:
        for lock in held:
            if lock is not None:
                lock.release()
        rt.close()


def _train(run: RunDir, rt: Runtime, report: Callable[[Path], Path] | None) -> dict:
    recipe, settings = Recipe.of_run(run), RunSettings.of_run(run)
    folds, selected = run.read_folds(), run.selected_folds()
    mode = parallel_mode(settings.parallel, len(selected), rt.world)
    if mode == "ddp" and recipe.batch_size % rt.world:  # a resume with another --nproc
        raise ConfigError(f"--parallel ddp splits each batch over {rt.world} processes: --batch-size "
                          f"{recipe.batch_size} must be a multiple of {rt.world}.")
    rt.open_tensor_group(mode)
    cache = None
    if settings.cache:  # built once per machine (by its first process), then opened by the others
        if rt.local_rank == 0:
            cache = open_cache(settings.data_dir, folds.path, base_size_for(recipe.img_size),
                               progress=settings.progress and rt.is_main)
        rt.barrier()
        if rt.local_rank != 0:
            cache = open_cache(settings.data_dir, folds.path, base_size_for(recipe.img_size))
    mine, fold_rt = (selected, rt) if mode == "ddp" else (selected[rt.rank::rt.world], rt.as_single_process())
    tracker = make_tracker(settings.tracker, run, recipe, main=rt.is_main)
    t0 = time.perf_counter()
    try:
        try:
            _train_folds(run, rt, fold_rt, mine, recipe, settings, folds, cache, tracker)
        except PipelineError as exc:
            if rt.distributed and mode == "folds":  # tell the processes waiting for this one's folds
                write_text(run.failed_path, f"process {rt.rank}: {exc}\n")
            raise
        if rt.distributed and mode == "folds":  # idle processes wait for the busiest, holding no collective open
            wait_for_folds(run, selected)
        rt.barrier()
        cv = rt.decided_by_main(lambda: write_cv(run, selected, seconds=time.perf_counter() - t0))
        if rt.is_main:
            page = report(run.path) if settings.report and report is not None else None
            tracker.run_done(cv, page)
        return cv
    finally:
        tracker.close()


def _train_folds(run: RunDir, rt: Runtime, fold_rt: Runtime, mine: list[int], recipe: Recipe,
                 settings: RunSettings, folds: pd.DataFrame, cache, tracker: Tracker) -> None:
    """Train this process's folds (skipping finished ones)."""
    with make_progress() if settings.progress and rt.is_main else NoProgress() as progress:
        for k in mine:
            if run.fold_oof(k).exists():
                _logger.info("fold %d already finished; skipping", k)
                continue
            if restarting() and run.last(k).exists():
                done = torch.load(run.last(k), map_location="cpu", weights_only=False, mmap=True)["epoch"]
                _logger.warning("fold %d: restarted after a failure; continuing after epoch %d (epochs 0-%d are kept, "
                                "not trained again)", k, done, done)
            try:
                result = train_fold(run, k, fold_rt, recipe, settings, folds, cache, progress, tracker)
            except KeyboardInterrupt:
                how = f" --nproc {rt.world}" if rt.distributed else ""
                raise Interrupted(f"Interrupted during fold {k}; finished epochs are saved. Continue with "
                                  f"`pipeline train --run-name {run.name} --resume{how}`.") from None
            _logger.info("fold %d: %s", k, result)


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
    per_fold = {}
    for k, part in zip(selected, parts, strict=True):
        # mmap: only the epoch is needed, not the weights
        best = torch.load(run.best(k), map_location="cpu", weights_only=False, mmap=True)
        per_fold[str(k)] = score(part.label, part.prob_dog) | {"best_epoch": int(best["epoch"])}
    cv = {"run": run.name, "folds": per_fold, "overall": score(oof.label, oof.prob_dog)}
    if seconds is not None:
        cv["seconds"] = seconds  # this session's training time (a resumed run counts only its own part)
    write_json(run.cv_path, cv)
    return cv
