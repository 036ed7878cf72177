"""Checks before any work: does the decoded-image cache fit the disk, does one training process fit in memory."""

from __future__ import annotations

import os

import torch

from pipeline.compute.settings import RunSettings
from pipeline.data.cache import cache_room
from pipeline.data.images import base_size_for
from pipeline.errors import ConfigError
from pipeline.fileio import human_size
from pipeline.models import memory_estimate, pretrained_problem
from pipeline.recipe import Recipe

# What the estimate does not see on a GPU: the CUDA context (0.3-0.5 GiB), cuDNN's workspace and kernels, and
# the caching allocator's fragmentation. A run that passes the check with less room than this fails at step 1.
GPU_RESERVED = 1 << 30
GPU_SLACK = 1.15


def memory_needed(recipe: Recipe, batch: int, device: torch.device, dtype: torch.dtype) -> int:
    """Bytes one training process needs: :class:`pipeline.models.MemoryEstimate`'s peak for ``batch`` images per
    step, and on a GPU the reserve and slack above."""
    peak = memory_estimate(recipe.arch, recipe.img_size, batch, half=dtype != torch.float32, ema=recipe.ema).peak
    return int(peak * GPU_SLACK) + GPU_RESERVED if device.type == "cuda" else peak


def check_fits(recipe: Recipe, settings: RunSettings, device: torch.device, dtype: torch.dtype, n_images: int,
               batch: int) -> None:
    """Refuse an image size or batch that cannot fit: the decoded cache on the disk, one training process in
    memory (estimated on the meta device, so nothing is allocated).

    Args:
        recipe: the resolved recipe.
        settings: the run settings (the cache and the data folder).
        device, dtype: where and in which precision each training process runs.
        n_images: photos the cache holds.
        batch: images one process puts through a step (:func:`pipeline.compute.runtime.batch_per_process`).
    """
    base = base_size_for(recipe.img_size)
    if settings.cache:
        need, free, probe = cache_room(settings.data_dir, base, n_images)
        if need > free:
            raise ConfigError(f"--img-size {recipe.img_size} needs a {human_size(need)} image cache for "
                              f"{n_images} photos but {probe} has {human_size(free)} free; lower --img-size, "
                              "free some space, or pass --no-cache.")
    need = memory_needed(recipe, batch, device, dtype)
    have, where = available_memory(device)
    if need > have:
        per = f" ({batch} per process)" if batch != recipe.batch_size else ""
        raise ConfigError(f"--img-size {recipe.img_size} with --batch-size {recipe.batch_size}{per} needs about "
                          f"{human_size(need)} for one training step of {recipe.arch} in each process, but {where} "
                          f"has {human_size(have)} available; lower --batch-size or --img-size.")



def available_memory(device: torch.device) -> tuple[int, str]:
    """Bytes a training process may use on ``device`` and a name for it."""
    if device.type == "cuda":  # the card's size: asking for free memory would open a CUDA context here
        return torch.cuda.get_device_properties(device).total_memory, f"GPU {device.index}"
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024, "this machine"
    except (OSError, KeyError, ValueError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"), "this machine"


def out_of_memory(recipe: Recipe, batch: int, device: torch.device, fold: int, epoch: int) -> ConfigError:
    """The one line for a process that ran out of memory although the estimate let it start.

    Args:
        recipe: the run's recipe.
        batch: images per step in this process.
        device: where it ran out.
        fold, epoch: where in the run (from 0).
    """
    where = f"GPU {device.index}" if device.type == "cuda" else "this machine"
    smaller = max(1, recipe.batch_size // 2)
    return ConfigError(f"Out of memory on {where} in fold {fold}, epoch {epoch + 1}: {batch} images of "
                       f"{recipe.img_size} px per step of {recipe.arch} do not fit. Train again with a smaller "
                       f"--batch-size (e.g. {smaller}) or --img-size (a new --run-name: they change the recipe); "
                       "finished folds are kept.")


def check_pretrained(recipe: Recipe) -> None:
    """With ``pretrained``, refuse at once (in seconds, before any work) when timm could not load the weights:
    not in the hub cache and no network."""
    if not recipe.pretrained:
        return
    why = pretrained_problem(recipe.arch)
    if why:
        raise ConfigError(f"--pretrained cannot load the ImageNet weights of {recipe.arch}: {why}. Offline, bring "
                          "the weights file and pass it with --weights FILE (the README's 'Pretrained weights "
                          "without a network' says where to get it).")


def recipe_warnings(recipe: Recipe) -> list[str]:
    """What in a recipe is allowed but likely not meant: frozen BatchNorm on a model without BatchNorm, a warm-up
    as long as the run."""
    from torch import nn

    from pipeline.models import build_model

    warnings = []
    if recipe.freeze_bn:
        with torch.device("meta"):
            model = build_model(recipe.arch, recipe.img_size)
        if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            warnings.append(f"--freeze-bn does nothing: {recipe.arch} has no BatchNorm layer.")
    if recipe.schedule == "cosine" and recipe.warmup_epochs > recipe.epochs:
        warnings.append(f"--warmup-epochs {recipe.warmup_epochs:g} is longer than the run (--epochs {recipe.epochs}): "
                        "the learning rate never reaches its peak and never decays; lower it.")
    return warnings
