"""One fold: its loaders, its model on the engine with the callbacks, and its out-of-fold predictions."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from pipeline.competitions.spec import Competition, run_competition
from pipeline.compute.evaluation import Amp, evaluate
from pipeline.compute.placement import Placed, place_model
from pipeline.compute.runtime import Runtime, default_workers, local_processes
from pipeline.compute.settings import RunSettings
from pipeline.data.images import (
    BatchNormalizer,
    ImageDataset,
    SizedTransforms,
    base_size_for,
    build_eval_transform,
    build_train_transform,
    make_loader,
)
from pipeline.fileio import write_csv
from pipeline.metrics import metric_value, selection
from pipeline.models import build_model, normalization
from pipeline.recipe import Recipe
from pipeline.rundir import RunDir
from pipeline.train.budget import oof_passes, time_batches
from pipeline.train.callbacks import Checkpointer, EarlyStopping, Ema, FreezeBatchNorm, MetricsLog, WeightAverage
from pipeline.train.engine import Callback, FitState, fit, train_step
from pipeline.train.optim import build_optimizer
from pipeline.train.preflight import out_of_memory
from pipeline.train.pseudo import of_fold, soft_labels
from pipeline.train.tracking import Tracker


@dataclass
class FoldData:
    """A fold's datasets and loaders (each sharded by the fold's runtime)."""

    val_rows: pd.DataFrame
    train_ds: ImageDataset
    val_ds: ImageDataset
    train_loader: torch.utils.data.DataLoader
    val_loader: torch.utils.data.DataLoader


def fold_data(fold: int, rt: Runtime, recipe: Recipe, settings: RunSettings, folds: pd.DataFrame, cache,
              comp: Competition, pseudo: pd.DataFrame | None = None) -> FoldData:
    """The training rows (every other fold, and the pseudo-labelled test photos) and validation rows (this fold
    alone) as loaders."""
    train_rows, val_rows = folds[folds.fold != fold], folds[folds.fold == fold]
    pseudo = of_fold(pseudo, fold)  # labelled by models that never saw this fold's photos (pipeline.train.pseudo)
    train_paths = train_rows.path if pseudo is None else pd.concat([train_rows.path, pseudo.path], ignore_index=True)
    base = base_size_for(recipe.img_size)
    flips = (comp.augment.hflip, comp.augment.vflip, comp.augment.rot90)
    transform = SizedTransforms(recipe.augment, flips) if recipe.sizes else \
        build_train_transform(recipe.img_size, recipe.augment, flips)
    train_ds = ImageDataset(train_paths, targets(train_rows.label, pseudo, comp), base, transform, cache)
    val_ds = ImageDataset(val_rows.path, targets(val_rows.label, None, comp), base,
                          build_eval_transform(recipe.img_size), cache)
    workers = settings.workers if settings.workers is not None else default_workers(rt.device, local_processes())
    batch = recipe.batch_size // rt.world
    train_loader = make_loader(train_ds, batch, shuffle=True, seed=recipe.seed * 31 + fold, workers=workers,
                               runtime=rt, sizes=recipe.size_for_epoch if recipe.sizes else None)
    val_loader = make_loader(val_ds, batch * 2, shuffle=False, seed=0, workers=workers, runtime=rt)
    return FoldData(val_rows, train_ds, val_ds, train_loader, val_loader)


def targets(labels: pd.Series, pseudo: pd.DataFrame | None, comp: Competition) -> np.ndarray:
    """The training targets of the catalogue's labels (and of the pseudo-labelled photos after them): the class
    indices of one label (:func:`pipeline.train.pseudo.soft_labels`), else the target kind's encoding (label
    indicators, the scaled grade or value) followed by the pseudo-labels' prediction columns."""
    if comp.kind.class_indices:  # one label (or an ordinal grade as a class)
        return soft_labels(labels, pseudo, comp)
    encoded = comp.kind.encode(labels.to_numpy())
    if pseudo is None:
        return encoded
    soft = pseudo[comp.prob_columns()].to_numpy(dtype=np.float32)
    return np.concatenate([encoded, soft if encoded.ndim == 2 else soft[:, 0]])


@dataclass
class FoldModel:
    """A fold's model on its device with what trains it: the batch normaliser, mixed precision, the optimizer
    and its schedule, and the batch mixing (None: the targets are the labels)."""

    placed: Placed
    normalize: BatchNormalizer
    amp: Amp
    optimizer: torch.optim.Optimizer
    scheduler: object
    mix: object | None
    task: object  # the target kind's loss, activation and correct count (pipeline.targets)


def fold_model(fold: int, rt: Runtime, recipe: Recipe, settings: RunSettings, steps_per_epoch: int,
               comp: Competition) -> FoldModel:
    """The model of ``fold``, seeded so that every process (and every resume) starts from the same weights."""
    torch.manual_seed(recipe.seed * 1000 + fold)  # the same initial weights on every process
    np.random.seed(recipe.seed * 1000 + fold + 7919 * rt.rank)  # mixup's draws (timm uses numpy's generator)
    placed = place_model(build_model(recipe.arch, recipe.img_size, pretrained=recipe.pretrained,
                                     weights=recipe.weights, drop_rate=recipe.drop_rate, num_classes=comp.outputs,
                                     weights_partial=recipe.weights_partial),
                         rt, channels_last=settings.channels_last, ddp=rt.distributed, compile=settings.compile)
    if rt.distributed and rt.rank:  # each process its own dropout draws; the first keeps the one-process stream
        torch.manual_seed(int(np.random.SeedSequence([recipe.seed, fold, rt.rank]).generate_state(1)[0]))
    optimizer, scheduler = build_optimizer(recipe, placed.model, steps_per_epoch, rt.device)
    kind = comp.kind
    return FoldModel(placed, BatchNormalizer(*normalization(placed.model), rt.device, placed.channels_last),
                     Amp(rt.device, rt.dtype), optimizer, scheduler, kind.mix(recipe), kind.task())


def train_fold(run: RunDir, fold: int, rt: Runtime, recipe: Recipe, settings: RunSettings, folds: pd.DataFrame,
               cache, shown: list[Callback] = (), tracker: Tracker | None = None) -> dict:
    """Train one fold to its best epoch (resuming from its last.pt), write its OOF predictions.

    With a distributed ``rt`` every process trains this fold together (DDP); otherwise this
    process trains it alone. ``shown``: the callbacks that show its progress (:mod:`pipeline.train.display`).
    Returns the fold's validation scores (from the best checkpoint).
    """
    comp = run_competition(run.config())
    data = fold_data(fold, rt, recipe, settings, folds, cache, comp, run.read_pseudo())
    m = fold_model(fold, rt, recipe, settings, len(data.train_loader), comp)
    model, normalize, amp = m.placed.model, m.normalize, m.amp
    state = FitState(fold=fold, epochs=recipe.epochs, model=model, net=m.placed.net, optimizer=m.optimizer,
                     scheduler=m.scheduler, amp=amp, runtime=rt, task=m.task, select=selection(comp))
    labels, kind = data.val_rows.label.to_numpy(), comp.kind

    def validate(weights: nn.Module) -> dict:
        rt.sync_buffers(weights)  # every process evaluates (and the main one saves) the same weights
        preds = evaluate(weights, data.val_loader, normalize, amp, rt, task=m.task)
        val = kind.score(labels[preds.rows], preds.probs)
        return {"val_loss": preds.loss, "val_acc": val.get("accuracy", float("nan")),
                "val_logloss": val.get("log_loss", float("nan")), "val_metric": metric_value(val, comp.metric)}

    callbacks = fold_callbacks(run, fold, rt, recipe, model, validate, shown, tracker)
    try:
        fit(state, data.train_loader, validate, normalize, callbacks, m.mix)
    except torch.cuda.OutOfMemoryError:  # torch.OutOfMemoryError from 2.5 on; this name works on every torch
        raise out_of_memory(recipe, recipe.batch_size // rt.world, rt.device, fold, state.epoch) from None
    rt.barrier()  # best.pt is complete before any process reads it
    return _out_of_fold(run, fold, rt, m, data, comp, tracker)


def time_fold(fold: int, rt: Runtime, recipe: Recipe, settings: RunSettings, folds: pd.DataFrame, cache,
              comp: Competition, batches: int = 5, pseudo: pd.DataFrame | None = None) -> tuple[float, float]:
    """Seconds one epoch of ``fold`` takes (training and validation) and the seconds per fold beyond its epochs
    (building the model, the out-of-fold predictions), from a few timed batches; nothing is kept."""
    t0 = time.perf_counter()
    data = fold_data(fold, rt, recipe, settings, folds, cache, comp, pseudo)
    m = fold_model(fold, rt, recipe, settings, len(data.train_loader), comp)
    build = time.perf_counter() - t0
    m.placed.net.train()

    def train_batch(batch) -> None:
        x, y, _ = batch
        y = y.to(rt.device, non_blocking=True)
        x, target = m.mix(m.normalize(x), y) if m.mix is not None else (m.normalize(x), y)
        train_step(m.placed.net, x, target, m.optimizer, m.scheduler, m.amp, m.task)

    @torch.inference_mode()
    def val_batch(batch) -> None:
        m.amp.logits(m.placed.model.eval(), m.normalize(batch[0]))

    train_s = time_batches(train_batch, data.train_loader, batches) * len(data.train_loader)
    val_s = time_batches(val_batch, data.val_loader, 2) * len(data.val_loader)
    passes = oof_passes(len(comp.oof_views()), recipe.average, recipe.average_epochs)
    return train_s + val_s * (2 if recipe.ema else 1), build + passes * val_s


def fold_callbacks(run: RunDir, fold: int, rt: Runtime, recipe: Recipe, model: nn.Module, validate,
                   shown: list[Callback], tracker: Tracker | None) -> list:
    """The callbacks of a fold, in the order they run."""
    extra, callbacks = {}, []
    if recipe.freeze_bn:
        callbacks.append(FreezeBatchNorm())
    if recipe.ema:
        extra["ema"] = Ema(model, recipe.ema_decay, validate)
        callbacks.append(extra["ema"])
    if recipe.average != "none":  # before the Checkpointer: last.pt saves the epochs it keeps
        extra["average"] = WeightAverage(recipe.average, recipe.average_epochs, validate)
        callbacks.append(extra["average"])
    callbacks += [MetricsLog(run), Checkpointer(run, fold, meta={"recipe": recipe.to_dict()}, extra=extra),
                  EarlyStopping(recipe.patience)]
    if rt.is_main:
        callbacks += list(shown)
    if tracker is not None:
        callbacks.append(tracker)
    return callbacks


def _out_of_fold(run: RunDir, fold: int, rt: Runtime, m: FoldModel, data: FoldData, comp: Competition,
                 tracker: Tracker | None) -> dict:
    """Predict the fold's validation photos with best.pt, as they are and as each TTA view shows them (what
    predict's TTA averages), into its oof.csv; its scores."""
    best = torch.load(run.best(fold), map_location="cpu", weights_only=False)
    model = m.placed.model
    model.load_state_dict(best["model"])
    preds = evaluate(model, data.val_loader, m.normalize, m.amp, rt, task=m.task)
    oof = data.val_rows.iloc[preds.rows][["path", "label", "fold"]].reset_index(drop=True)
    columns = dict(zip(comp.prob_columns(), _columns(preds.probs), strict=True))
    for view in comp.oof_views():
        viewed = evaluate(model, data.val_loader, m.normalize, m.amp, rt, task=m.task, view=view)
        columns |= dict(zip(comp.prob_columns(view), _columns(viewed.probs), strict=True))
    oof = oof.assign(**columns)
    if rt.is_main:
        write_csv(run.fold_oof(fold), oof.assign(path=run.photo_keys(oof.path)))  # keyed as folds.csv is
        if tracker is not None:
            tracker.fold_done(fold, oof)
    rt.barrier()
    return comp.kind.score(oof.label.to_numpy(), preds.probs) | {"best_epoch": int(best["epoch"]) + 1}  # from 1


def _columns(probs: np.ndarray) -> list[np.ndarray]:
    """The columns of a prediction: P(positive) alone, or one per class."""
    return [probs] if probs.ndim == 1 else list(probs.T)
