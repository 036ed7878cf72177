"""Checks before any work: does the decoded-image cache fit the disk, does one training step fit in memory."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from pipeline.data.cache import DecodedCache
from pipeline.data.images import base_size_for
from pipeline.errors import ConfigError
from pipeline.fileio import human_size
from pipeline.models import training_memory_bytes
from pipeline.train.recipe import Recipe
from pipeline.train.runtime import Runtime
from pipeline.train.settings import RunSettings


def check_fits(recipe: Recipe, settings: RunSettings, rt: Runtime, n_images: int) -> None:
    """Refuse an image size or batch that cannot fit: the decoded cache on the disk, one training
    step in memory (estimated on the meta device, so nothing is allocated)."""
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
