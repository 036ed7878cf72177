"""k-fold training: one function per concern, a run folder per run, resumable fold by fold.

Run folder ``runs/<name>/``::

    config.json        the resolved TrainConfig, seed, versions and device
    metrics.csv        one row per fold and epoch
    fold<k>/last.pt    full state after the last finished epoch (model, optimizer, scheduler, scaler, ...)
    fold<k>/best.pt    weights with the lowest validation loss, with epoch, metrics and config
    fold<k>/oof.csv    that fold's validation predictions from best.pt; its presence marks the fold done
    oof.csv            path,label,fold,prob_dog for every training image of the trained folds
    cv.json            accuracy, log-loss and ROC-AUC per fold and overall
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from pipeline import __version__
from pipeline.errors import ConfigError, PipelineError
from pipeline.fileio import atomic_path, write_csv, write_json
from pipeline.folds import read_folds
from pipeline.images import (BatchNormalizer, ImageDataset, SeededSampler, base_size_for,
                             build_eval_transform, build_train_transform)
from pipeline.models import build_model, check_arch, default_img_size, normalization
from pipeline.progress import make_progress

_logger = logging.getLogger(__name__)

MIN_DELTA = 1e-4  # a validation loss must drop by more than this to count as better
METRIC_COLUMNS = ["fold", "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_logloss",
                  "lr", "images_per_s", "seconds"]


class Interrupted(PipelineError):
    """Ctrl-C during training; the state of the last finished epoch is on disk."""


@dataclass
class TrainConfig:
    """Everything a run needs; saved as ``config.json`` and reloaded by ``--resume``."""

    arch: str = "lenet"
    folds: list[int] | None = None  # None: every fold in folds.csv
    epochs: int = 20
    img_size: int | None = None  # None: 64 for LeNet, the model's pretrained size otherwise
    batch_size: int = 64
    lr: float | None = None  # None: 1e-3 from scratch, 3e-4 when starting from weights
    weight_decay: float = 0.05
    optimizer: str = "adamw"  # adamw | sgd
    schedule: str = "cosine"  # cosine (linear warm-up, cosine decay) | onecycle
    warmup_epochs: float = 1.0
    patience: int = 5  # epochs without a better validation loss before stopping; 0 = never stop early
    augment: str = "light"
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto | fp32 | fp16 | bf16
    channels_last: bool = True
    pretrained: bool = False
    weights: str | None = None
    drop_rate: float = 0.0
    workers: int | None = None  # None: chosen from the machine
    cache: bool = True
    seed: int = 0
    data_dir: str = "data"
    runs_dir: str = "runs"
    run_name: str | None = None
    progress: bool = True

    def resolved(self) -> "TrainConfig":
        """A copy with every ``None`` default filled in and every choice checked."""
        c = dataclasses.replace(self)
        check_arch(c.arch)
        c.img_size = c.img_size or default_img_size(c.arch)
        c.lr = c.lr or (3e-4 if (c.pretrained or c.weights) else 1e-3)
        c.run_name = c.run_name or f"{c.arch}-{datetime.now():%Y%m%d-%H%M%S}"
        for name, value, allowed in [("optimizer", c.optimizer, {"adamw", "sgd"}),
                                     ("schedule", c.schedule, {"cosine", "onecycle"}),
                                     ("device", c.device, {"auto", "cpu", "cuda"}),
                                     ("precision", c.precision, {"auto", "fp32", "fp16", "bf16"})]:
            if value not in allowed:
                raise ConfigError(f"--{name} must be one of {', '.join(sorted(allowed))}, got {value!r}.")
        if c.epochs < 1 or c.batch_size < 1:
            raise ConfigError(f"--epochs and --batch-size must be positive, got {c.epochs} and {c.batch_size}.")
        return c


# ---- device and precision ---------------------------------------------------------------------
def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; ``cuda`` without CUDA is a ConfigError, not a traceback."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but PyTorch sees no CUDA GPU; use --device cpu "
                          "(or auto), or install a CUDA build of PyTorch with a working driver.")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """``auto``: bf16 on a GPU that supports it, else fp16 on CUDA; fp32 on the CPU."""
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("This GPU does not support bf16; use --precision fp16 (or auto).")
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def default_workers(device: torch.device) -> int:
    """Loader processes: up to 8 on CUDA; on a CPU leave the cores to the model (the cache is cheap)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(8, cores) if device.type == "cuda" else min(2, max(0, cores - 1))


class Step:
    """Forward/backward under autocast, with a gradient scaler only for fp16 (no duplicated branches)."""

    def __init__(self, model: nn.Module, device: torch.device, dtype: torch.dtype):
        self.model, self.device, self.dtype = model, device, dtype
        self.autocast_enabled = dtype != torch.float32
        self.scaler = torch.amp.GradScaler(device.type, enabled=(dtype == torch.float16))
        self.loss_fn = nn.BCEWithLogitsLoss()

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.autocast_enabled)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            return self.model(x).float().view(-1)

    def train(self, x, y, optimizer, scheduler) -> tuple[float, int]:
        optimizer.zero_grad(set_to_none=True)
        logits = self.logits(x)
        loss = self.loss_fn(logits, y)
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()
        scheduler.step()
        return loss.item(), int(((logits > 0).float() == y).sum().item())


# ---- loaders ----------------------------------------------------------------------------------
def make_loader(dataset: ImageDataset, batch_size: int, *, shuffle: bool, seed: int, workers: int,
                device: torch.device) -> torch.utils.data.DataLoader:
    """A DataLoader over ``(index, seed)`` items: pinned memory on CUDA, persistent workers."""
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=SeededSampler(len(dataset), seed, shuffle),
        num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None, drop_last=False,
        # its own generator: the loader's seed draw must not consume the global RNG (dropout's),
        # or runs with and without persistent workers would diverge after the first epoch
        generator=torch.Generator().manual_seed(seed))


def open_cache(data_dir: str | Path, paths, base_size: int, *, enabled: bool = True, progress: bool = False):
    """The decoded-image cache ``data_dir/cache`` for ``paths`` at ``base_size`` (built as needed),
    or None when ``enabled`` is False."""
    if not enabled:
        return None
    from pipeline.cache import DecodedCache

    cache = DecodedCache(Path(data_dir) / "cache", base_size)
    report = cache.build(paths, progress=progress)
    if report.failed:
        _logger.warning("%d images could not be cached and will fail when read", len(report.failed))
    return cache


# ---- one fold ---------------------------------------------------------------------------------
def build_optimizer(cfg: TrainConfig, model: nn.Module, steps_per_epoch: int):
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)
    else:
        opt = torch.optim.AdamW(groups, lr=cfg.lr)
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total)
    else:
        warm = max(1, int(cfg.warmup_epochs * steps_per_epoch))

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    return opt, sched


@torch.inference_mode()
def evaluate(step: Step, loader, normalize: BatchNormalizer, hflip: bool = False):
    """Probabilities of dog, row indices and mean BCE loss (NaN without labels) over ``loader``.

    With ``hflip`` each batch is also predicted mirrored and the two probabilities averaged.
    """
    step.model.eval()
    probs, rows, loss_sum = [], [], 0.0
    for x, y, idx in loader:
        x = normalize(x)
        logits = step.logits(x)
        p = torch.sigmoid(logits)
        if hflip:
            p = (p + torch.sigmoid(step.logits(torch.flip(x, dims=[3])))) / 2
        loss_sum += nn.functional.binary_cross_entropy_with_logits(
            logits, y.to(logits.device), reduction="sum").item()
        probs.append(p.cpu().numpy())
        rows.append(idx.numpy())
    n = sum(len(r) for r in rows)
    has_labels = loader.dataset.labels is not None
    return np.concatenate(probs), np.concatenate(rows), (loss_sum / n if has_labels else float("nan"))


def score(labels: np.ndarray, probs: np.ndarray) -> dict:
    """Accuracy, log-loss and ROC-AUC (None when one class is absent)."""
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

    labels = np.asarray(labels).astype(int)
    probs = np.clip(np.asarray(probs, dtype=np.float64), 1e-7, 1 - 1e-7)
    return {"n": int(len(labels)),
            "accuracy": float(accuracy_score(labels, probs >= 0.5)),
            "log_loss": float(log_loss(labels, probs, labels=[0, 1])),
            "roc_auc": float(roc_auc_score(labels, probs)) if len(set(labels)) == 2 else None}


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state()}


def train_fold(cfg: TrainConfig, fold: int, folds: pd.DataFrame, run_dir: Path, device: torch.device,
               dtype: torch.dtype, cache, progress) -> dict:
    """Train one fold to its best epoch (resuming from ``fold<k>/last.pt``), write its OOF predictions.

    Returns the fold's validation scores (from the best checkpoint).
    """
    fold_dir = run_dir / f"fold{fold}"
    fold_dir.mkdir(parents=True, exist_ok=True)
    train_rows, val_rows = folds[folds.fold != fold], folds[folds.fold == fold]
    base = base_size_for(cfg.img_size)
    train_ds = ImageDataset(train_rows.path, train_rows.label, base, build_train_transform(cfg.img_size, cfg.augment), cache)
    val_ds = ImageDataset(val_rows.path, val_rows.label, base, build_eval_transform(cfg.img_size), cache)
    workers = cfg.workers if cfg.workers is not None else default_workers(device)
    train_loader = make_loader(train_ds, cfg.batch_size, shuffle=True, seed=cfg.seed * 31 + fold, workers=workers, device=device)
    val_loader = make_loader(val_ds, cfg.batch_size * 2, shuffle=False, seed=0, workers=workers, device=device)

    torch.manual_seed(cfg.seed * 1000 + fold)
    model = build_model(cfg.arch, cfg.img_size, pretrained=cfg.pretrained, weights=cfg.weights, drop_rate=cfg.drop_rate)
    conv = cfg.channels_last and any(isinstance(m, nn.Conv2d) for m in model.modules())
    model = model.to(device, memory_format=torch.channels_last if conv else torch.contiguous_format)
    normalize = BatchNormalizer(*normalization(model), device, conv)
    step = Step(model, device, dtype)
    optimizer, scheduler = build_optimizer(cfg, model, len(train_loader))

    start_epoch, best_loss, bad_epochs = 0, math.inf, 0
    last_path = fold_dir / "last.pt"
    if last_path.exists():
        state = torch.load(last_path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        start_epoch, best_loss, bad_epochs = state["epoch"] + 1, state["best_loss"], state["bad_epochs"]
        _logger.info("fold %d: resuming after epoch %d", fold, state["epoch"])

    epoch_task = progress.add_task(f"fold {fold}", total=cfg.epochs, completed=start_epoch, info="")
    batch_task = progress.add_task("  batches", total=len(train_loader), info="")
    stopped = cfg.patience > 0 and bad_epochs >= cfg.patience
    for epoch in range(start_epoch, cfg.epochs):
        if stopped:
            break
        model.train()
        train_loader.sampler.set_epoch(epoch)
        progress.reset(batch_task, total=len(train_loader))
        t0, seen, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
        for x, y, _ in train_loader:
            y = y.to(device, non_blocking=True)
            loss, right = step.train(normalize(x), y, optimizer, scheduler)
            seen += len(y)
            loss_sum += loss * len(y)
            correct += right
            rate = seen / (time.perf_counter() - t0)
            progress.update(batch_task, advance=1, info=f"loss {loss_sum / seen:.4f} acc {correct / seen:.3f} {rate:.0f} img/s")
        train_seconds = time.perf_counter() - t0
        probs, rows, val_loss = evaluate(step, val_loader, normalize)
        val = score(val_ds.labels[rows], probs)
        row = {"fold": fold, "epoch": epoch, "train_loss": loss_sum / seen, "train_acc": correct / seen,
               "val_loss": val_loss, "val_acc": val["accuracy"], "val_logloss": val["log_loss"],
               "lr": optimizer.param_groups[0]["lr"], "images_per_s": seen / train_seconds,
               "seconds": time.perf_counter() - t0}
        improved = val_loss < best_loss - MIN_DELTA
        if improved:
            best_loss, bad_epochs = val_loss, 0
            with atomic_path(fold_dir / "best.pt") as tmp:
                torch.save({"model": model.state_dict(), "epoch": epoch, "metrics": row,
                            "config": dataclasses.asdict(cfg)}, tmp)
        else:
            bad_epochs += 1
        _append_metrics(run_dir / "metrics.csv", row)
        with atomic_path(last_path) as tmp:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "scaler": step.scaler.state_dict(),
                        "epoch": epoch, "best_loss": best_loss, "bad_epochs": bad_epochs,
                        "rng": _rng_state(), "config": dataclasses.asdict(cfg)}, tmp)
        progress.update(epoch_task, advance=1, info=f"val loss {val_loss:.4f} acc {val['accuracy']:.3f}"
                        + (" *" if improved else ""))
        stopped = cfg.patience > 0 and bad_epochs >= cfg.patience
    progress.remove_task(batch_task)
    progress.remove_task(epoch_task)

    best = torch.load(fold_dir / "best.pt", map_location="cpu", weights_only=False)
    model.load_state_dict(best["model"])
    probs, rows, _ = evaluate(step, val_loader, normalize)
    oof = val_rows.iloc[rows][["path", "label", "fold"]].assign(prob_dog=probs)
    write_csv(fold_dir / "oof.csv", oof)
    result = score(oof.label.to_numpy(), oof.prob_dog.to_numpy()) | {"best_epoch": int(best["epoch"])}
    return result


def _append_metrics(csv: Path, row: dict) -> None:
    """Append one row; the file is rewritten atomically so an interrupt never truncates it."""
    old = pd.read_csv(csv) if csv.exists() else pd.DataFrame(columns=METRIC_COLUMNS)
    old = old[~((old.fold == row["fold"]) & (old.epoch >= row["epoch"]))]  # a resumed epoch replaces its row
    write_csv(csv, pd.concat([old, pd.DataFrame([row])], ignore_index=True)[METRIC_COLUMNS])


# ---- the run ----------------------------------------------------------------------------------
def environment(device: torch.device, dtype: torch.dtype) -> dict:
    import albumentations
    import timm

    env = {"pipeline": __version__, "python": platform.python_version(), "torch": torch.__version__,
           "timm": timm.__version__, "albumentations": albumentations.__version__,
           "device": str(device), "precision": str(dtype).removeprefix("torch."),
           "threads": torch.get_num_threads(), "host": platform.node()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def prepare_run(cfg: TrainConfig, resume: bool) -> tuple[TrainConfig, Path]:
    """Resolve the config and create (or, with ``resume``, reopen) the run folder."""
    if resume:
        run_dir = find_run(cfg.runs_dir, cfg.run_name)
        saved = json.loads((run_dir / "config.json").read_text())["config"]
        cfg = dataclasses.replace(TrainConfig(**saved), progress=cfg.progress, workers=cfg.workers)
        return cfg, run_dir
    cfg = cfg.resolved()
    run_dir = Path(cfg.runs_dir) / cfg.run_name
    if (run_dir / "config.json").exists():
        raise ConfigError(f"Run {run_dir} exists already; add --resume to continue it or pick another --run-name.")
    run_dir.mkdir(parents=True, exist_ok=True)
    return cfg, run_dir


def find_run(runs_dir: str | Path, name: str | None) -> Path:
    """The run folder ``name`` or, when None, the most recently modified one with a config."""
    runs_dir = Path(runs_dir)
    if name:
        run_dir = Path(name) if (Path(name) / "config.json").exists() else runs_dir / name
        if not (run_dir / "config.json").exists():
            raise ConfigError(f"No run {name!r} in {runs_dir} (no config.json there).")
        return run_dir
    runs = sorted(runs_dir.glob("*/config.json"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise ConfigError(f"No runs in {runs_dir}; train one with `pipeline train` first.")
    return runs[-1].parent


def run(cfg: TrainConfig, resume: bool = False) -> dict:
    """Train every selected fold; write oof.csv and cv.json. Returns the cv.json content.

    Args:
        cfg: the configuration (``None`` fields get their defaults).
        resume: reopen ``cfg.run_name`` (or the latest run), skip finished folds and continue an
            interrupted fold from its last finished epoch.
    """
    cfg, run_dir = prepare_run(cfg, resume)
    device = resolve_device(cfg.device)
    dtype = resolve_precision(cfg.precision, device)
    folds = read_folds(cfg.data_dir)
    n_folds = int(folds.fold.max()) + 1
    selected = cfg.folds if cfg.folds is not None else list(range(n_folds))
    bad = [k for k in selected if not 0 <= k < n_folds]
    if bad:
        raise ConfigError(f"--folds {bad} out of range: data/folds.csv has folds 0..{n_folds - 1}.")
    cfg.folds = selected
    torch.manual_seed(cfg.seed)
    if not resume:
        write_json(run_dir / "config.json", {"config": dataclasses.asdict(cfg), "n_folds": n_folds,
                                             "environment": environment(device, dtype),
                                             "folds_csv": str(Path(cfg.data_dir) / "folds.csv"),
                                             "created": datetime.now().isoformat(timespec="seconds")})
    write_csv(run_dir / "folds.csv", folds[["path", "label", "fold"]])
    cache = open_cache(cfg.data_dir, folds.path, base_size_for(cfg.img_size), enabled=cfg.cache,
                       progress=cfg.progress)
    t0 = time.perf_counter()
    with make_progress() if cfg.progress else _NoProgress() as progress:
        for k in selected:
            if (run_dir / f"fold{k}" / "oof.csv").exists():
                _logger.info("fold %d already finished; skipping", k)
                continue
            try:
                result = train_fold(cfg, k, folds, run_dir, device, dtype, cache, progress)
            except KeyboardInterrupt:
                raise Interrupted(f"Interrupted during fold {k}; finished epochs are saved. Continue with "
                                  f"`pipeline train --run-name {cfg.run_name} --resume`.") from None
            _logger.info("fold %d: %s", k, result)
    return write_cv(run_dir, selected, seconds=time.perf_counter() - t0)


def write_cv(run_dir: Path, selected: list[int], seconds: float | None = None) -> dict:
    """Merge the folds' OOF predictions into oof.csv and score them into cv.json."""
    parts = [pd.read_csv(run_dir / f"fold{k}" / "oof.csv") for k in selected]
    oof = pd.concat(parts, ignore_index=True)
    write_csv(run_dir / "oof.csv", oof)
    per_fold = {}
    for k, part in zip(selected, parts):
        # mmap: only the epoch is needed, not the weights
        best = torch.load(run_dir / f"fold{k}" / "best.pt", map_location="cpu", weights_only=False, mmap=True)
        per_fold[str(k)] = score(part.label, part.prob_dog) | {"best_epoch": int(best["epoch"])}
    cv = {"run": run_dir.name, "folds": per_fold, "overall": score(oof.label, oof.prob_dog)}
    if seconds is not None:
        cv["seconds"] = seconds  # this session's training time (a resumed run counts only its own part)
    write_json(run_dir / "cv.json", cv)
    return cv


class _NoProgress:
    """Stands in for rich's Progress when progress bars are off."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def add_task(self, *a, **k):
        return 0

    def update(self, *a, **k):
        pass

    reset = remove_task = update
