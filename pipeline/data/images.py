"""Decoding, augmentation pipelines (albumentations) and the Dataset the training and prediction use.

Every image goes through one function, :func:`decode_resized` (decode, fix orientation, convert to
RGB, resize to a square "base" size), whether it comes from the decoded-image cache or straight
from disk; so the cache changes speed, never pixels. Augmentation runs on uint8 in the loader
workers; the float conversion and normalisation run once per batch on the device
(:class:`BatchNormalizer`), which keeps worker-to-main transfers four times smaller.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from PIL import Image, ImageOps

from pipeline.choices import AUGMENT_PRESETS
from pipeline.errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def base_size_for(img_size: int) -> int:
    """The decoded ("base") size for a training size: 1/8 margin for random crops, a multiple of 8."""
    return int(math.ceil(img_size * 1.125 / 8) * 8)


def decode_resized(path: str | Path, size: int) -> np.ndarray:
    """Decode ``path`` to a ``size x size x 3`` uint8 RGB array.

    JPEG draft mode lets libjpeg decode at 1/2, 1/4 or 1/8 scale when the photo is much larger
    than ``size``; EXIF orientation is applied; grayscale, CMYK, palette and alpha images are
    converted to RGB.

    Args:
        path: image file.
        size: side of the square output.
    """
    try:
        with Image.open(path) as img:
            img.draft("RGB", (size, size))
            img = ImageOps.exif_transpose(img)
            if img.mode != "RGB":
                img = img.convert("RGBA").convert("RGB") if img.mode == "P" else img.convert("RGB")
            img = img.resize((size, size), Image.BILINEAR, reducing_gap=None)
            return np.asarray(img, dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"Cannot decode image {path} ({exc}); re-run `pipeline download` to rebuild "
                        "the catalogue without it.") from None


def thumbnail(path: str | Path, side: int) -> Image.Image | None:
    """The photo as RGB, shrunk to fit ``side x side`` (for galleries); None when it cannot be read."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            img.thumbnail((side, side))
            return img
    except OSError:
        return None


def build_train_transform(img_size: int, preset: str = "light", flips: tuple[bool, bool, bool] = (True, False, False)
                          ) -> A.Compose:
    """Training augmentation on a uint8 base image (no normalisation here; see BatchNormalizer).

    Args:
        img_size: output side.
        preset: ``none``; ``light`` (random resized crop of 60-100 % of the photo, flips, mild colour
            jitter); ``strong`` (for training from scratch: crops of 25-100 %, flips, small rotations, shear
            and scale, stronger colour jitter, occasional grey, and one or two erased patches, the cutout of
            DeVries & Taylor).
        flips: which views keep an image its class (the competition's): a mirror (photos; not digits), an
            upside-down view and a quarter turn (tiles seen from above).
    """
    if preset == "none":
        return build_eval_transform(img_size)
    if preset not in AUGMENT_PRESETS:
        raise ValueError(f"unknown augmentation preset {preset!r}; use one of {', '.join(AUGMENT_PRESETS)}")
    hflip, vflip, rot90 = flips
    views = [t for t, on in ((A.HorizontalFlip(p=0.5), hflip), (A.VerticalFlip(p=0.5), vflip),
                             (A.RandomRotate90(p=0.5), rot90)) if on]
    if preset == "light":
        return A.Compose([
            A.RandomResizedCrop(size=(img_size, img_size), scale=(0.6, 1.0)),
            *views,
            A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.0, p=0.5),
        ])
    return A.Compose([
        A.RandomResizedCrop(size=(img_size, img_size), scale=(0.25, 1.0)),
        *views,
        A.Affine(rotate=(-15, 15), shear=(-8, 8), scale=(0.9, 1.1), border_mode=cv2.BORDER_REFLECT_101, p=0.5),
        A.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.05, p=0.8),
        A.ToGray(p=0.05),
        A.CoarseDropout(num_holes_range=(1, 2), hole_height_range=(0.1, 0.3), hole_width_range=(0.1, 0.3), p=0.5),
    ])


class SizedTransforms:
    """One training transform per image size, built when first asked for (progressive resizing)."""

    def __init__(self, preset: str, flips: tuple[bool, bool, bool] = (True, False, False)):
        self.preset, self.flips, self._built = preset, flips, {}

    def __call__(self, size: int) -> A.Compose:
        if size not in self._built:
            self._built[size] = build_train_transform(size, self.preset, self.flips)
        return self._built[size]


def build_eval_transform(img_size: int) -> A.Compose:
    """Deterministic resize of the base image to ``img_size`` (validation, test)."""
    return A.Compose([A.Resize(img_size, img_size)])


def reseed(transform: A.Compose, seed: int) -> None:
    """Make the pipeline and each of its transforms draw from one stream seeded by ``seed``.

    Per-sample seeds (drawn in the main process, see :class:`SeededSampler`) make augmentation
    independent of worker count and of whether the cache is used. The transforms share one
    generator (sequential draws, so no two transforms see the same numbers); that is about 15x
    cheaper per sample than ``Compose.set_random_seed``, which builds a generator per transform.
    """
    rng, py_rng = np.random.Generator(np.random.PCG64(seed)), random.Random(seed)
    for t in (transform, *transform.transforms):
        t.random_generator, t.py_random = rng, py_rng


class ImageDataset(torch.utils.data.Dataset):
    """Images as uint8 CHW tensors, with labels (or -1) and their row index.

    Items are requested as ``(index, seed)`` pairs (see :class:`SeededSampler`), ``(index, seed, size)``
    triples when the training size changes over the epochs (then ``transform`` is a
    :class:`SizedTransforms`), or plain indices.

    Args:
        paths: image files.
        labels: the class index per image (two classes: P(positive), 0/1 or a soft label), (n, K) soft labels, or
            None for test images.
        base_size: the decoded square size (see :func:`base_size_for`).
        transform: an albumentations pipeline producing uint8 HWC output (or a SizedTransforms).
        cache: a :class:`pipeline.data.cache.DecodedCache` of this base size, or None to decode from disk.
    """

    def __init__(self, paths: Sequence[str], labels: Sequence[int] | None, base_size: int,
                 transform, cache=None):
        self.paths = [str(p) for p in paths]
        self.labels = None if labels is None else np.asarray(labels, dtype=np.float32)
        self.base_size = base_size
        self.transform = transform
        self.cache = cache
        if cache is not None and cache.size != base_size:
            raise ValueError(f"cache size {cache.size} != base size {base_size}")

    def __len__(self) -> int:
        return len(self.paths)

    def base_image(self, i: int) -> np.ndarray:
        if self.cache is not None:
            img = self.cache.get(self.paths[i])
            if img is not None:
                return img
        return decode_resized(self.paths[i], self.base_size)

    def __getitem__(self, item):
        i, seed, *size = item if isinstance(item, tuple) else (item, 0)
        transform = self.transform(size[0]) if size else self.transform
        reseed(transform, seed)
        img = transform(image=self.base_image(i))["image"]
        x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        if self.labels is not None and self.labels.ndim == 2:
            return x, torch.from_numpy(self.labels[i]), i
        y = -1.0 if self.labels is None else float(self.labels[i])
        return x, torch.tensor(y), i


class SeededSampler(torch.utils.data.Sampler):
    """Yields ``(index, seed)``: a shuffled (or sequential) order and one augmentation seed per sample.

    Both come from a generator seeded by ``(seed, epoch)``, so an epoch is reproducible. With
    ``sizes`` (a function of the epoch) it yields ``(index, seed, size)``: the epoch's training size. With
    ``world`` processes each takes every ``world``-th item of that one order (the order padded with
    its first items to a multiple of ``world``, as torch's DistributedSampler does), so every image
    gets the same augmentation seed whatever the number of processes.
    """

    def __init__(self, n: int, seed: int, shuffle: bool, rank: int = 0, world: int = 1, sizes=None):
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0
        self.rank, self.world = rank, world
        self.sizes = sizes  # epoch -> training size (progressive resizing), or None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.n // self.world)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.n, generator=g) if self.shuffle else torch.arange(self.n)
        seeds = torch.randint(0, 2**31 - 1, (self.n,), generator=g)
        if self.world > 1:
            take = (torch.arange(len(self) * self.world) % self.n)[self.rank::self.world]
            order, seeds = order[take], seeds[take]
        if self.sizes is not None:
            size = self.sizes(self.epoch)
            return iter((i, s, size) for i, s in zip(order.tolist(), seeds.tolist(), strict=True))
        return iter(zip(order.tolist(), seeds.tolist(), strict=True))


class BatchNormalizer:
    """uint8 NCHW batch -> normalised float batch on the device (channels_last for conv nets)."""

    def __init__(self, mean, std, device: torch.device, channels_last: bool):
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255
        self.device = device
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # one float allocation, then in place: a batch of 224 px images is ~40 MB, and fresh
        # temporaries of that size are returned to the kernel and page-faulted in again every batch
        x = x.to(self.device, non_blocking=True)
        out = torch.empty(x.shape, dtype=torch.float32, device=self.device, memory_format=self.memory_format)
        return out.copy_(x).sub_(self.mean).div_(self.std)


def drop_last_batch(items: int, batch_size: int, training: bool) -> bool:
    """Whether a loader drops its incomplete last batch: in training, as timm does, since it can be a single
    image (BatchNorm over one value raises in train mode) and a small batch gives a noisy step; never when
    that would leave no batch at all, and never for evaluation (every image is predicted).

    Args:
        items: the items one process's loader yields in an epoch.
        batch_size: its batch size.
        training: a training loader (shuffled).
    """
    return training and items > batch_size and items % batch_size != 0


def quiet_worker(_worker_id: int) -> None:
    """A loader worker's start: OpenCV (albumentations' resizes and warps) runs single-threaded, as timm and
    albumentations advise, so that N workers do not start N thread pools on the same cores (torch sets its own
    threads in a worker to 1)."""
    cv2.setNumThreads(0)


def make_loader(dataset: ImageDataset, batch_size: int, *, shuffle: bool, seed: int, workers: int,
                runtime, sizes=None, keep_workers: bool | None = None) -> torch.utils.data.DataLoader:
    """A DataLoader over ``(index, seed)`` items, sharded by ``runtime``'s rank: pinned memory on CUDA, OpenCV
    single-threaded in each worker (:func:`quiet_worker`); a shuffled (training) loader keeps its workers from
    epoch to epoch and drops an incomplete last batch (:func:`drop_last_batch`). An evaluation loader starts its
    workers for each pass and ends them after it: kept, they would sit beside the training workers for the whole
    epoch and double the processes on a few cores, for a start-up of a fraction of a second once an epoch.
    ``keep_workers``: keep them whatever the loader (prediction, which runs pass after pass and nothing beside)."""
    sampler = SeededSampler(len(dataset), seed, shuffle, rank=runtime.rank, world=runtime.world, sizes=sizes)
    keep = workers > 0 and (shuffle if keep_workers is None else keep_workers)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, worker_init_fn=quiet_worker,
        pin_memory=runtime.device.type == "cuda", persistent_workers=keep,
        prefetch_factor=4 if workers > 0 else None, drop_last=drop_last_batch(len(sampler), batch_size, shuffle),
        # its own generator: the loader's seed draw must not consume the global RNG (dropout's),
        # or runs with and without persistent workers would diverge after the first epoch
        generator=torch.Generator().manual_seed(seed))
