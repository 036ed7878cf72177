"""k-fold training: the run folder, the folds, one model per fold on the engine, the CV score.

One process trains every fold in turn. Under torchrun (or ``pipeline train --nproc N``) the
processes either share the folds (``--parallel folds``: rank r trains folds r, r+W, ...) or train
each fold together with DistributedDataParallel (``--parallel ddp``). Only the main process writes
run-level files; every process reaches every barrier. A run is resumable fold by fold and, within a
fold, from its last finished epoch (also after torchrun restarts its workers).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from pipeline import __version__
from pipeline.cache import open_cache
from pipeline.engine import (Amp, BinaryMix, Checkpointer, EarlyStopping, Ema, FitState, FreezeBatchNorm,
                             MetricsLog, ProgressBar, evaluate, fit, score)
from pipeline.errors import ConfigError, PipelineError
from pipeline.fileio import human_size, write_csv, write_json
from pipeline.folds import read_folds
from pipeline.images import (BatchNormalizer, ImageDataset, SizedTransforms, base_size_for, build_eval_transform,
                             build_train_transform, make_loader)
from pipeline.models import build_model, normalization, training_memory_bytes
from pipeline.progress import NoProgress, make_progress
from pipeline.recipe import Recipe, build_recipe, check_fields, load_recipe_file
from pipeline.rundir import RunDir, all_runs, find_run
from pipeline.runtime import RunSettings, Runtime, default_workers
from pipeline.tracking import Tracker, make_tracker, resolve_tracker

_logger = logging.getLogger(__name__)


class Interrupted(PipelineError):
    """Ctrl-C during training; the state of the last finished epoch is on disk."""


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


# ---- loaders, cache, optimizer ---------------------------------------------------------------
def build_optimizer(recipe: Recipe, model: nn.Module, steps_per_epoch: int):
    """AdamW (or SGD Nesterov) without weight decay on biases and norms, and its per-step schedule.

    With ``layer_decay`` below 1, timm's layer-wise groups: the head learns at ``lr``, each block
    before it at ``layer_decay`` times the next block's rate (pretrained features move less).
    """
    if recipe.layer_decay < 1:
        from timm.optim import param_groups_layer_decay

        groups = param_groups_layer_decay(model, weight_decay=recipe.weight_decay, layer_decay=recipe.layer_decay)
    else:
        decay, no_decay = [], []
        for p in model.parameters():
            (no_decay if p.ndim <= 1 else decay).append(p)
        groups = [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    for g in groups:
        g["lr"] = recipe.lr * g.get("lr_scale", 1.0)
    if recipe.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=recipe.lr, momentum=0.9, nesterov=True)
    else:
        opt = torch.optim.AdamW(groups, lr=recipe.lr)
    total = recipe.epochs * steps_per_epoch
    if recipe.schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in groups], total_steps=total)
    else:
        warm = max(1, int(recipe.warmup_epochs * steps_per_epoch))

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    return opt, sched


# ---- one fold ---------------------------------------------------------------------------------
def train_fold(run: RunDir, fold: int, rt: Runtime, recipe: Recipe, settings: RunSettings, folds: pd.DataFrame,
               cache, progress, tracker: Tracker | None = None) -> dict:
    """Train one fold to its best epoch (resuming from its last.pt), write its OOF predictions.

    With a distributed ``rt`` every process trains this fold together (DDP); otherwise this
    process trains it alone. Returns the fold's validation scores (from the best checkpoint).
    """
    train_rows, val_rows = folds[folds.fold != fold], folds[folds.fold == fold]
    base = base_size_for(recipe.img_size)
    transform = SizedTransforms(recipe.augment) if recipe.sizes else build_train_transform(recipe.img_size,
                                                                                           recipe.augment)
    train_ds = ImageDataset(train_rows.path, train_rows.label, base, transform, cache)
    val_ds = ImageDataset(val_rows.path, val_rows.label, base, build_eval_transform(recipe.img_size), cache)
    workers = settings.workers if settings.workers is not None else default_workers(rt.device, local_processes())
    batch = recipe.batch_size // rt.world
    train_loader = make_loader(train_ds, batch, shuffle=True, seed=recipe.seed * 31 + fold, workers=workers, runtime=rt,
                               sizes=recipe.size_for_epoch if recipe.sizes else None)
    val_loader = make_loader(val_ds, batch * 2, shuffle=False, seed=0, workers=workers, runtime=rt)

    torch.manual_seed(recipe.seed * 1000 + fold)  # the same initial weights on every process
    np.random.seed(recipe.seed * 1000 + fold + 7919 * rt.rank)  # mixup's draws (timm uses numpy's generator)
    model = build_model(recipe.arch, recipe.img_size, pretrained=recipe.pretrained, weights=recipe.weights,
                        drop_rate=recipe.drop_rate)
    conv = settings.channels_last and any(isinstance(m, nn.Conv2d) for m in model.modules())
    model = model.to(rt.device, memory_format=torch.channels_last if conv else torch.contiguous_format)
    net = model
    if rt.distributed:
        if rt.rank:  # each process its own dropout draws; the first keeps the one-process stream
            torch.manual_seed(int(np.random.SeedSequence([recipe.seed, fold, rt.rank]).generate_state(1)[0]))
        if rt.backend == "nccl":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        net = nn.parallel.DistributedDataParallel(model, device_ids=[rt.device.index] if rt.device.type == "cuda"
                                                  else None)
    if settings.compile:
        net = torch.compile(net)
    normalize = BatchNormalizer(*normalization(model), rt.device, conv)
    amp = Amp(rt.device, rt.dtype)
    optimizer, scheduler = build_optimizer(recipe, model, len(train_loader))
    state = FitState(fold=fold, epochs=recipe.epochs, model=model, net=net, optimizer=optimizer,
                     scheduler=scheduler, amp=amp, runtime=rt)

    def validate(weights: nn.Module) -> dict:
        rt.sync_buffers(weights)  # every process evaluates (and the main one saves) the same weights
        preds = evaluate(weights, val_loader, normalize, amp, rt)
        val = score(val_ds.labels[preds.rows], preds.probs)
        return {"val_loss": preds.loss, "val_acc": val["accuracy"], "val_logloss": val["log_loss"]}

    extra, callbacks = {}, []
    if recipe.freeze_bn:
        callbacks.append(FreezeBatchNorm())
    if recipe.ema:
        extra["ema"] = Ema(model, recipe.ema_decay, validate)
        callbacks.append(extra["ema"])
    callbacks += [MetricsLog(run), Checkpointer(run, fold, meta={"recipe": recipe.to_dict()}, extra=extra),
                  EarlyStopping(recipe.patience)]
    if rt.is_main:
        callbacks.append(ProgressBar(progress))
    if tracker is not None:
        callbacks.append(tracker)
    mix = BinaryMix(recipe.mixup, recipe.cutmix, recipe.mix_prob, recipe.label_smoothing) \
        if recipe.mixup or recipe.cutmix or recipe.label_smoothing else None
    fit(state, train_loader, validate, normalize, callbacks, mix)
    rt.barrier()  # best.pt is complete before any process reads it

    best = torch.load(run.best(fold), map_location="cpu", weights_only=False)
    model.load_state_dict(best["model"])
    preds = evaluate(model, val_loader, normalize, amp, rt)
    mirrored = evaluate(model, val_loader, normalize, amp, rt, hflip=True)  # what predict's hflip TTA gives
    oof = val_rows.iloc[preds.rows][["path", "label", "fold"]].assign(prob_dog=preds.probs,
                                                                       prob_dog_hflip=mirrored.probs)
    if rt.is_main:
        write_csv(run.fold_oof(fold), oof)
        if tracker is not None:
            tracker.fold_done(fold, oof)
    rt.barrier()
    return score(oof.label.to_numpy(), oof.prob_dog.to_numpy()) | {"best_epoch": int(best["epoch"])}


def local_processes() -> int:
    """Training processes on this machine (torchrun sets LOCAL_WORLD_SIZE)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


# ---- the run folder ---------------------------------------------------------------------------
def environment(rt: Runtime) -> dict:
    import albumentations
    import timm

    env = {"pipeline": __version__, "python": platform.python_version(), "torch": torch.__version__,
           "timm": timm.__version__, "albumentations": albumentations.__version__,
           "device": str(rt.device), "precision": str(rt.dtype).removeprefix("torch."),
           "threads": torch.get_num_threads(), "processes": rt.world, "host": platform.node()}
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


def restarting() -> bool:
    """True in workers that torchrun started again after a failure."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0


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
    mine = [r for r in all_runs(runs_dir) if job and r.config().get("launch", {}).get("job") == job]
    return mine[-1] if mine else None


def prepare_run(request: TrainRequest, rt: Runtime):
    """Create the run folder (or reopen it with ``resume``) and take its lock.

    Returns ``(RunDir, lock)``; the lock is held until released (the caller releases it at the end).
    A launcher's worker (``attach``) joins the run the launcher holds, without a lock.
    """
    settings = requested_settings(request)
    if request.attach:
        return _existing_run(request.settings), None
    resume = request.resume
    found = _run_of_this_job(request.settings) if restarting() and not resume else None
    if found is not None:  # torchrun started the workers again: continue the run this job made
        resume, request = True, dataclasses.replace(request, settings=request.settings | {"run_name": found.name})
    return (_resume_run if resume else _new_run)(request, settings, rt)


def _new_run(request: TrainRequest, settings: RunSettings, rt: Runtime):
    resolve_tracker(settings.tracker)  # a missing package is one line now, not after the first fold
    recipe = build_recipe(request.recipe, request.overrides)
    settings.run_name = settings.run_name or f"{recipe.arch}-{datetime.now():%Y%m%d-%H%M%S}"
    folds = read_folds(settings.data_dir)
    n_folds = int(folds.fold.max()) + 1
    selected = settings.folds if settings.folds is not None else list(range(n_folds))
    bad = [k for k in selected if not 0 <= k < n_folds]
    if bad:
        raise ConfigError(f"--folds {bad} out of range: {Path(settings.data_dir) / 'folds.csv'} has folds "
                          f"0..{n_folds - 1}.")
    settings.folds = selected
    check_fits(recipe, settings, rt, n_images=len(folds))
    run = RunDir(Path(settings.runs_dir) / settings.run_name)
    lock = run.lock()
    if run.exists():
        lock.release()
        raise ConfigError(f"Run {run.path} exists already; add --resume to continue it or pick another --run-name.")
    write_csv(run.folds_path, folds[["path", "label", "fold"]])
    run.write_config({"recipe": recipe.to_dict(), "settings": dataclasses.asdict(settings), "folds": selected,
                      "n_folds": n_folds, "recipe_source": str(request.recipe) if request.recipe else None,
                      "environment": environment(rt),
                      "launch": {"processes": rt.world, "job": os.environ.get("TORCHELASTIC_RUN_ID")},
                      "folds_csv": str(Path(settings.data_dir) / "folds.csv"),
                      "created": datetime.now().isoformat(timespec="seconds"), "resumes": []})
    return run, lock


def _resume_run(request: TrainRequest, settings: RunSettings, rt: Runtime):
    """Reopen a run: its recipe must stay as it was; settings never change what is learned, so any may
    change (and are recorded)."""
    run = _existing_run(request.settings)
    lock = run.lock(wait=60 if restarting() else 0)  # a restarted job waits for its old process to let go
    try:
        config = run.config()
        asked = (load_recipe_file(request.recipe) if request.recipe else {}) | check_fields(request.overrides,
                                                                                            "command line")
        differ = {k: (config["recipe"].get(k), v) for k, v in asked.items() if config["recipe"].get(k) != v}
        saved_settings = config["settings"]
        if differ:
            listing = "; ".join(f"{k.replace('_', '-')} {old!r} -> {new!r}" for k, (old, new) in differ.items())
            raise ConfigError(f"--resume continues run {run.name} with the recipe it started with; these options "
                              f"differ from it: {listing}. Drop them, or start a new run (another --run-name).")
        n_folds = config["n_folds"]
        if settings.folds is not None and any(not 0 <= k < n_folds for k in settings.folds):
            raise ConfigError(f"--folds {settings.folds} out of range: run {run.name} has folds 0..{n_folds - 1}.")
        _warn_if_resplit(run, settings)
        resolve_tracker(settings.tracker)
        changed = {k: v for k, v in request.settings.items()
                   if saved_settings.get(k) != v and k not in ("run_name", "runs_dir")}
        config["settings"] = dataclasses.asdict(settings)
        config["folds"] = settings.folds if settings.folds is not None else config["folds"]
        config["settings"]["folds"] = config["folds"]
        config["resumes"] = config.get("resumes", []) + [{"time": datetime.now().isoformat(timespec="seconds"),
                                                          "changed": changed, "restart": restarting()}]
        run.write_config(config)
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


def check_fits(recipe: Recipe, settings: RunSettings, rt: Runtime, n_images: int) -> None:
    """Refuse an image size or batch that cannot fit: the decoded cache on the disk, one training
    step in memory (estimated on the meta device, so nothing is allocated)."""
    from pipeline.cache import DecodedCache

    base = base_size_for(recipe.img_size)
    if settings.cache:
        cache_dir = Path(settings.data_dir) / "cache"
        probe = next(p for p in (cache_dir, *cache_dir.parents) if p.exists())
        need, free = DecodedCache.bytes_for(base, n_images), shutil.disk_usage(probe).free
        if need > free:
            raise ConfigError(f"--img-size {recipe.img_size} needs a {human_size(need)} image cache for "
                              f"{n_images} photos but {probe} has {human_size(free)} free; lower --img-size, "
                              "free some space, or pass --no-cache.")
    need = training_memory_bytes(recipe.arch, recipe.img_size, recipe.batch_size // max(1, rt.world),
                                 half=rt.dtype != torch.float32)
    have, where = available_memory(rt.device)
    if need > have:
        raise ConfigError(f"--img-size {recipe.img_size} with --batch-size {recipe.batch_size} needs about "
                          f"{human_size(need)} for one training step of {recipe.arch}, but {where} has "
                          f"{human_size(have)} available; lower --img-size or --batch-size.")


def available_memory(device: torch.device) -> tuple[int, str]:
    """Bytes a training step may use on ``device`` and a name for it."""
    if device.type == "cuda":  # the card's size: asking for free memory would open a CUDA context here
        return torch.cuda.get_device_properties(device).total_memory, f"GPU {device.index}"
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024, "this machine"
    except (OSError, KeyError, ValueError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"), "this machine"


# ---- the run ----------------------------------------------------------------------------------
def run(request: TrainRequest, resume: bool | None = None) -> dict:
    """Train every selected fold; write oof.csv and cv.json. Returns the cv.json content.

    Args:
        request: the recipe, the options given and how to run (see :class:`TrainRequest`).
        resume: overrides ``request.resume`` when given.
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
        return _train(run_dir, rt)
    finally:
        for lock in held:
            if lock is not None:
                lock.release()
        rt.close()


def _train(run: RunDir, rt: Runtime) -> dict:
    recipe, settings = run.recipe(), run.settings()
    folds, selected = run.read_folds(), run.selected_folds()
    mode = settings.parallel
    if mode == "auto":
        mode = "ddp" if rt.distributed and len(selected) < rt.world else "folds"
    if mode == "ddp" and recipe.batch_size % rt.world:
        raise ConfigError(f"--parallel ddp splits each batch over {rt.world} processes: --batch-size "
                          f"{recipe.batch_size} must be a multiple of {rt.world}.")
    cache = None
    if settings.cache:  # built once per machine (by its first process), then opened by the others
        if rt.local_rank == 0:
            cache = open_cache(settings.data_dir, folds.path, base_size_for(recipe.img_size),
                               progress=settings.progress and rt.is_main)
        rt.barrier()
        if rt.local_rank != 0:
            cache = open_cache(settings.data_dir, folds.path, base_size_for(recipe.img_size))
    mine, fold_rt = (selected, rt) if mode == "ddp" else (selected[rt.rank::rt.world], rt.alone())
    tracker = make_tracker(settings.tracker, run, recipe, main=rt.is_main)
    t0 = time.perf_counter()
    try:
        _train_folds(run, rt, fold_rt, mine, recipe, settings, folds, cache, tracker)
        rt.barrier()
        cv = rt.decided_by_main(lambda: write_cv(run, selected, seconds=time.perf_counter() - t0))
        if rt.is_main:
            report = _report(run) if settings.report else None
            tracker.run_done(cv, report)
        return cv
    finally:
        tracker.close()


def _report(run: RunDir) -> Path:
    from pipeline.report import build_report

    return build_report(run.path)


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


def write_cv(run: RunDir, selected: list[int], seconds: float | None = None) -> dict:
    """Merge the folds' OOF predictions into oof.csv and score them into cv.json."""
    parts = [pd.read_csv(run.fold_oof(k)) for k in selected]
    oof = pd.concat(parts, ignore_index=True)
    write_csv(run.oof_path, oof)
    per_fold = {}
    for k, part in zip(selected, parts):
        # mmap: only the epoch is needed, not the weights
        best = torch.load(run.best(k), map_location="cpu", weights_only=False, mmap=True)
        per_fold[str(k)] = score(part.label, part.prob_dog) | {"best_epoch": int(best["epoch"])}
    cv = {"run": run.name, "folds": per_fold, "overall": score(oof.label, oof.prob_dog)}
    if seconds is not None:
        cv["seconds"] = seconds  # this session's training time (a resumed run counts only its own part)
    write_json(run.cv_path, cv)
    return cv
