#!/usr/bin/env python
"""Speed benchmark: the project's data path and training loop against the hand-written notebook workflow.

One run, the same photos, model, image size, batch size, torch thread count and loader worker count
for both sides. It measures

1. ``data``:  images/s delivered by the data path alone (no model) at 224 px;
2. ``train``: images/s of full training epochs (forward + backward + optimizer step, fp32, CPU) for
   LeNet at its default 64 px and ResNet-34 at a small size;
3. ``e2e``:   seconds from ``train.zip`` to a validated submission CSV with the default settings
   (``pipeline.data.download`` -> ``pipeline.train.session.train`` -> ``pipeline.predict.predict``);

plus the time to build the decoded-image cache for every photo at 256 px (``base_size_for(224)``).

Epoch 1 of each side is a warm-up (worker start-up, first touches of the files and the memory map)
and is left out: the figures are the mean of epochs 2..n. After the warm-up the two sides run their
epochs alternately (project, hand-written, project, ...), so a burst of load from another process on
the machine hits both rather than one. See benchmarks/README.md for how to run it and what each
figure means.

    python benchmarks/bench_speed.py --json bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # runnable from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402

from pipeline.compute.evaluation import Amp  # noqa: E402
from pipeline.compute.runtime import Runtime, default_workers  # noqa: E402
from pipeline.data.cache import DecodedCache  # noqa: E402
from pipeline.data.images import (  # noqa: E402
    IMAGENET_MEAN,
    IMAGENET_STD,
    BatchNormalizer,
    ImageDataset,
    base_size_for,
    build_train_transform,
    make_loader,
)
from pipeline.models import build_model, normalization  # noqa: E402
from pipeline.recipe import Recipe  # noqa: E402
from pipeline.train.engine import train_step  # noqa: E402
from pipeline.train.optim import build_optimizer  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dogs-vs-cats-mini"
SAMPLE_DATA = REPO / "pipeline" / "sample"
CPU = torch.device("cpu")
TARGETS = {"data": 5.0, "lenet": 3.0, "resnet34": 1.0, "cache_2000_s": 60.0}


def log(msg: str = "") -> None:
    print(msg, flush=True)


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def load() -> float:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else float("nan")


# ---- the hand-written workflow, as in the course notebook ---------------------------------------
class NotebookDataset(torch.utils.data.Dataset):
    """What users write today: open and decode the JPEG with PIL on every access, torchvision transforms."""

    def __init__(self, paths, labels, transform):
        self.paths, self.labels, self.transform = list(paths), list(labels), transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        img = Image.open(self.paths[i]).convert("RGB")
        return self.transform(img), torch.tensor(float(self.labels[i]))


def notebook_transform(size: int):
    from torchvision import transforms

    return transforms.Compose([
        transforms.RandomResizedCrop(size),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def notebook_loader(paths, labels, size: int, batch_size: int, workers: int):
    # the notebook's DataLoader: shuffle, the given workers, every other option at its default
    return torch.utils.data.DataLoader(NotebookDataset(paths, labels, notebook_transform(size)),
                                       batch_size=batch_size, shuffle=True, num_workers=workers)


# ---- the project's path -------------------------------------------------------------------------
def project_loader(paths, labels, size: int, batch_size: int, workers: int, cache: DecodedCache):
    base = base_size_for(size)
    ds = ImageDataset(paths, labels, base, build_train_transform(size), cache)
    return make_loader(ds, batch_size, shuffle=True, seed=0, workers=workers, runtime=Runtime(CPU, torch.float32))


def build_cache(root: Path, size: int, paths) -> tuple[DecodedCache, float, int]:
    cache = DecodedCache(root, size)
    t0 = time.perf_counter()
    report = cache.build(paths)  # default workers (all cores), as pipeline.data.cache.open_cache does
    seconds = time.perf_counter() - t0
    if report.failed:
        raise SystemExit(f"cache build failed for {len(report.failed)} photos: {list(report.failed)[:3]}")
    return cache, seconds, report.decoded


# ---- timing helpers ------------------------------------------------------------------------------
def alternate(sides: dict, epochs: int) -> dict:
    """Run ``epochs`` epochs of every side: epoch 1 of each first (warm-up), then the sides take turns.

    ``sides`` maps a name to ``fn(epoch) -> images``. Returns, per side, each epoch's images and seconds.
    """
    out = {name: [] for name in sides}
    for epoch in range(epochs):
        for name, fn in sides.items():
            t0 = time.perf_counter()
            n = fn(epoch)
            dt = time.perf_counter() - t0
            out[name].append({"epoch": epoch + 1, "images": n, "seconds": round(dt, 4),
                              "images_per_s": round(n / dt, 2), "load": load()})
            log(f"    {name:<13} epoch {epoch + 1}: {n} images in {dt:6.2f} s = {n / dt:8.1f} img/s"
                f"{'  (warm-up, excluded)' if epoch == 0 and epochs > 1 else ''}  [load {load():.2f}]")
    return out


def summarize(epochs: list[dict]) -> dict:
    timed = epochs[1:] if len(epochs) > 1 else epochs  # epochs 2..n
    images, seconds = sum(e["images"] for e in timed), sum(e["seconds"] for e in timed)
    rates = [e["images_per_s"] for e in timed]
    return {"images_per_s": round(images / seconds, 2),
            "min_epoch_images_per_s": min(rates), "max_epoch_images_per_s": max(rates),
            "first_epoch_images_per_s": epochs[0]["images_per_s"], "epochs": epochs}


# ---- calibration: what one photo costs on one core ------------------------------------------------
def bench_per_photo(paths, size: int = 224, n: int = 200) -> dict:
    """Milliseconds per photo, in this process on one core: the notebook's PIL decode alone, the
    notebook's whole sample (decode + torchvision transforms), and the project's cache build decode."""
    from pipeline.data.images import decode_resized

    paths = paths[::max(1, len(paths) // n)][:n]  # spread over cats and dogs
    nb = notebook_transform(size)
    steps = {"pil_decode_ms": lambda p: Image.open(p).convert("RGB"),
             "notebook_sample_ms": lambda p: nb(Image.open(p).convert("RGB")),
             "decode_resized_ms": lambda p: decode_resized(p, base_size_for(size))}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {"photos": len(paths), "img_size": size}
    try:
        for name, fn in steps.items():
            fn(paths[0])
            t0 = time.perf_counter()
            for p in paths:
                fn(p)
            out[name] = round((time.perf_counter() - t0) / len(paths) * 1e3, 3)
    finally:
        torch.set_num_threads(threads)
    log(f"    one core, {len(paths)} photos: PIL decode {out['pil_decode_ms']:.2f} ms, notebook sample at {size} px "
        f"{out['notebook_sample_ms']:.2f} ms, decode_resized to {base_size_for(size)} px "
        f"{out['decode_resized_ms']:.2f} ms")
    return out


# ---- 1. data path --------------------------------------------------------------------------------
def bench_data(args, photos, cache256) -> dict:
    size = 224
    paths, labels = photos["train_paths"], photos["train_labels"]
    log(f"\n[data] data path alone at {size} px: {len(paths)} photos, batch {args.batch_size}, "
        f"{args.workers} worker(s), {args.epochs} epochs")
    proj = project_loader(paths, labels, size, args.batch_size, args.workers, cache256)
    normalize = BatchNormalizer(IMAGENET_MEAN, IMAGENET_STD, CPU, channels_last=True)
    hand = notebook_loader(paths, labels, size, args.batch_size, args.workers)

    def project_epoch(epoch):
        proj.sampler.set_epoch(epoch)
        n = 0
        for x, _y, _ in proj:
            x = normalize(x)  # the float batch the model would get
            n += len(x)
        return n

    def hand_epoch(epoch):
        n = 0
        for x, _y in hand:
            x = x.to(CPU)
            n += len(x)
        return n

    res = alternate({"project": project_epoch, "hand-written": hand_epoch}, args.epochs)
    out = {"img_size": size, "base_size": base_size_for(size), "images": len(paths),
           "project": summarize(res["project"]), "hand_written": summarize(res["hand-written"])}
    out["ratio"] = round(out["project"]["images_per_s"] / out["hand_written"]["images_per_s"], 2)
    proj = hand = None  # let the loaders (and their workers) go
    return out


# ---- 2. training ---------------------------------------------------------------------------------
def bench_train_one(args, arch: str, size: int, paths, labels, cache: DecodedCache) -> dict:
    log(f"\n[train] {arch} at {size} px: {len(paths)} photos per epoch, batch {args.batch_size}, "
        f"fp32 on the CPU, {torch.get_num_threads()} threads, {args.workers} worker(s), {args.epochs} epochs")
    # the project: train_one_epoch's inner loop (ImageDataset + cache, make_loader, BatchNormalizer, train_step)
    torch.manual_seed(0)
    p_model = build_model(arch, size)
    conv = any(isinstance(m, nn.Conv2d) for m in p_model.modules())  # cfg.channels_last is True by default
    p_model = p_model.to(CPU, memory_format=torch.channels_last if conv else torch.contiguous_format)
    p_loader = project_loader(paths, labels, size, args.batch_size, args.workers, cache)
    normalize = BatchNormalizer(*normalization(p_model), CPU, conv)
    amp = Amp(CPU, torch.float32)
    cfg = Recipe(arch=arch, img_size=size, batch_size=args.batch_size, epochs=args.epochs).resolved()
    p_opt, p_sched = build_optimizer(cfg, p_model, len(p_loader))

    # the notebook: the same model (same initial weights), AdamW with the same lr and weight decay
    torch.manual_seed(0)
    h_model = build_model(arch, size).to(CPU)
    h_loader = notebook_loader(paths, labels, size, args.batch_size, args.workers)
    h_opt = torch.optim.AdamW(h_model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    criterion = nn.BCEWithLogitsLoss()

    def project_epoch(epoch):
        p_model.train()
        p_loader.sampler.set_epoch(epoch)
        n = 0
        for x, y, _ in p_loader:
            y = y.to(CPU, non_blocking=True)
            train_step(p_model, normalize(x), y, p_opt, p_sched, amp)
            n += len(y)
        return n

    def hand_epoch(epoch):
        h_model.train()
        n, running_loss, correct = 0, 0.0, 0
        for x, y in h_loader:
            x, y = x.to(CPU), y.to(CPU)
            h_opt.zero_grad()
            out = h_model(x).view(-1)
            loss = criterion(out, y)
            loss.backward()
            h_opt.step()
            running_loss += loss.item() * len(y)
            correct += int(((out > 0).float() == y).sum().item())
            n += len(y)
        return n

    res = alternate({"project": project_epoch, "hand-written": hand_epoch}, args.epochs)
    out = {"arch": arch, "img_size": size, "images": len(paths), "channels_last_project": conv,
           "project": summarize(res["project"]), "hand_written": summarize(res["hand-written"])}
    out["ratio"] = round(out["project"]["images_per_s"] / out["hand_written"]["images_per_s"], 2)
    return out


def bench_train(args, photos, tmp: Path) -> dict:
    paths, labels = photos["train_paths"], photos["train_labels"]
    out = {}
    caches = {}
    for arch, size, n in (("lenet", 64, len(paths)), ("resnet34", args.resnet_size, args.resnet_images)):
        sub_paths, sub_labels = subsample(paths, labels, n)
        base = base_size_for(size)
        if base not in caches:
            cache, seconds, decoded = build_cache(tmp / "cache", base, paths)
            caches[base] = cache
            out[f"cache_build_{base}px"] = {"photos": decoded, "seconds": round(seconds, 3)}
            log(f"\n[train] cache at {base} px for {decoded} photos: {seconds:.2f} s (not part of the epochs)")
        out[arch] = bench_train_one(args, arch, size, sub_paths, sub_labels, caches[base])
    return out


# ---- loader workers: the settings before and after issue 26, side by side -----------------------------------
def old_loader(loader: torch.utils.data.DataLoader, quiet: bool = False) -> torch.utils.data.DataLoader:
    """``loader`` as make_loader built it before issue 26: workers kept between passes (evaluation ones too), and
    OpenCV's own thread pool (a thread a core) in every worker (``quiet``: single-threaded, as now)."""
    from pipeline.data.images import quiet_worker

    return torch.utils.data.DataLoader(
        loader.dataset, batch_size=loader.batch_size, sampler=loader.sampler, num_workers=loader.num_workers,
        persistent_workers=loader.num_workers > 0, prefetch_factor=loader.prefetch_factor,
        drop_last=loader.drop_last, generator=loader.generator, worker_init_fn=quiet_worker if quiet else None)


def bench_workers(args, photos, tmp: Path) -> dict:
    """LeNet epochs at 64 px (a training pass, then a validation pass over a fifth of the photos) with the loader
    settings of before and after issue 26, the two taking turns."""
    from pipeline.data.images import build_eval_transform

    size, rt = 64, Runtime(CPU, torch.float32)
    paths, labels = photos["train_paths"], photos["train_labels"]
    cut = len(paths) // 5
    cache, _, _ = build_cache(tmp / "cache", base_size_for(size), paths)
    log(f"\n[workers] lenet at {size} px: {len(paths) - cut} training + {cut} validation photos an epoch, "
        f"{args.workers} worker(s), {args.epochs} epochs; before: every loader's workers kept, OpenCV threads in "
        "each; kept: the same with OpenCV single-threaded; after: make_loader (OpenCV single-threaded, evaluation "
        "workers per pass)")

    def side(old: bool, quiet: bool = True):
        base = base_size_for(size)
        train_ds = ImageDataset(paths[cut:], labels[cut:], base, build_train_transform(size), cache)
        val_ds = ImageDataset(paths[:cut], labels[:cut], base, build_eval_transform(size), cache)
        loaders = [make_loader(train_ds, args.batch_size, shuffle=True, seed=0, workers=args.workers, runtime=rt),
                   make_loader(val_ds, args.batch_size * 2, shuffle=False, seed=0, workers=args.workers, runtime=rt)]
        train_loader, val_loader = [old_loader(lo, quiet) for lo in loaders] if old else loaders
        torch.manual_seed(0)
        model = build_model("lenet", size)
        normalize, amp = BatchNormalizer(*normalization(model), CPU, False), Amp(CPU, torch.float32)
        opt, sched = build_optimizer(Recipe(arch="lenet", img_size=size).resolved(), model, len(train_loader))

        def epoch(e):
            train_loader.sampler.set_epoch(e)
            model.train()
            n = 0
            for x, y, _ in train_loader:
                train_step(model, normalize(x), y, opt, sched, amp)
                n += len(y)
            model.eval()
            with torch.inference_mode():
                for x, y, _ in val_loader:
                    model(normalize(x))
                    n += len(y)
            return n
        return epoch

    # "kept": the workers of before (validation ones kept too) with OpenCV single-threaded, to part the two changes
    res = alternate({"before": side(True, quiet=False), "kept": side(True), "after": side(False)}, args.epochs)
    out = {"workers": args.workers, "images_per_epoch": len(paths),
           **{name: summarize(epochs) for name, epochs in res.items()}}
    for name in ("kept", "after"):
        out[f"{name}_ratio"] = round(out[name]["images_per_s"] / out["before"]["images_per_s"], 2)
    log(f"    before {out['before']['images_per_s']:.1f} img/s; OpenCV single-threaded, every worker kept "
        f"{out['kept']['images_per_s']:.1f} ({out['kept_ratio']}x); after (validation workers per pass too) "
        f"{out['after']['images_per_s']:.1f} ({out['after_ratio']}x)")
    return out


# ---- 3. end to end -------------------------------------------------------------------------------
def bench_e2e(args, zips: dict, tmp: Path) -> dict:
    from pipeline.data.download import download
    from pipeline.predict.predict import predict
    from pipeline.predict.validation import score_submission
    from pipeline.report import build_report
    from pipeline.train.request import TrainRequest
    from pipeline.train.session import train

    work = tmp / "e2e"
    data_dir, runs_dir, subs = work / "data", work / "runs", work / "submissions"
    cfg = Recipe(arch="lenet").resolved()
    if args.e2e_epochs is not None:
        cfg.epochs = args.e2e_epochs
    request = TrainRequest(overrides={"epochs": cfg.epochs},
                           settings={"data_dir": str(data_dir), "runs_dir": str(runs_dir), "run_name": "bench-lenet",
                                     "progress": False, "workers": args.workers_given})
    log(f"\n[e2e] train.zip -> submission: download, {cfg.arch} {cfg.epochs} epochs x 5 folds "
        f"(patience {cfg.patience}), predict with hflip TTA")
    t = {}
    t0 = time.perf_counter()
    summary = download(source=None, urls=[], from_paths=[zips["train"], zips["test"]], data_dir=data_dir,
                       progress=False)
    t["download"] = time.perf_counter() - t0
    log(f"    download (unzip, verify, catalogue, folds): {t['download']:.2f} s "
        f"({summary['train']} train, {summary['test']} test, {summary['problems']} problems)")
    t0 = time.perf_counter()
    cv = train(request, report=build_report)
    t["train"] = time.perf_counter() - t0
    run_dir = runs_dir / "bench-lenet"
    log(f"    train: {t['train']:.2f} s (of which folds {cv.get('seconds', float('nan')):.2f} s; the rest is the "
        f"{base_size_for(64)} px cache build and run set-up); CV accuracy {cv['overall']['accuracy']:.4f}")
    t0 = time.perf_counter()
    p = predict(runs=[run_dir], test_csv=data_dir / "test.csv", runs_dir=runs_dir, submissions_dir=subs)
    t["predict"] = time.perf_counter() - t0
    log(f"    predict (test cache, 5 folds x hflip TTA, validated CSV): {t['predict']:.2f} s -> {p['path']}")
    out = {"seconds": {k: round(v, 3) for k, v in t.items()}, "total_seconds": round(sum(t.values()), 3),
           "train_folds_seconds": round(cv.get("seconds", float("nan")), 3),
           "epochs_config": cfg.epochs, "train_photos": summary["train"], "test_photos": summary["test"],
           "cv_accuracy": cv["overall"]["accuracy"], "cv_log_loss": cv["overall"]["log_loss"],
           "submission_rows": p["rows"]}
    import pandas as pd

    metrics = pd.read_csv(run_dir / "metrics.csv")
    out["epochs_trained"] = len(metrics)
    out["train_images_per_s_median"] = round(float(metrics.images_per_s.median()), 1)
    solution = zips.get("solution")
    if solution is not None and solution.exists() and not args.max_images:
        try:
            out["test_accuracy"] = score_submission(p["path"], solution)["accuracy"]
        except Exception as exc:  # noqa: BLE001 - scoring is a bonus, never a failure of the benchmark
            log(f"    (not scored against {solution}: {exc})")
    return out


# ---- inputs --------------------------------------------------------------------------------------
def subsample(paths, labels, n):
    if not n or n >= len(paths):
        return list(paths), list(labels)
    idx = sorted(random.Random(0).sample(range(len(paths)), n))
    return [paths[i] for i in idx], [labels[i] for i in idx]


def prepare_inputs(args, tmp: Path) -> tuple[dict, dict]:
    """Unzip the photos; with --max-images, also write a smaller train.zip for the e2e stage."""
    data = Path(args.data)
    zips = {"train": data / "train.zip", "test": data / "test.zip", "solution": data / "solution.csv"}
    for k in ("train", "test"):
        if not zips[k].exists():
            raise SystemExit(f"{zips[k]} not found; pass --data FOLDER holding train.zip and test.zip")
    root = tmp / "photos"
    train, test = [], []
    for k in ("train", "test"):
        with zipfile.ZipFile(zips[k]) as z:
            z.extractall(root / k)
    for p in sorted((root / "train").rglob("*")):
        if p.suffix.lower() in (".jpg", ".jpeg", ".png") and p.name[:3].lower() in ("cat", "dog"):
            train.append(p)
    test = sorted(p for p in (root / "test").rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    labels = [int(p.name[:3].lower() == "dog") for p in train]
    paths, labels = subsample([str(p) for p in train], labels, args.max_images)
    if args.max_images and args.max_images < len(train):
        small = tmp / "subset" / "train.zip"
        small.parent.mkdir(parents=True)
        with zipfile.ZipFile(small, "w", zipfile.ZIP_STORED) as z:
            for p in paths:
                z.write(p, Path(p).relative_to(root / "train"))
        zips["train"] = small
    photos = {"train_paths": paths, "train_labels": labels, "test_paths": [str(p) for p in test]}
    return photos, zips


def parse_args(argv=None):
    default_data = SHARED_DATA if (SHARED_DATA / "train.zip").exists() else SAMPLE_DATA
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--data", default=str(default_data), help="folder with train.zip and test.zip")
    ap.add_argument("--threads", type=int, default=cores(), help="torch.set_num_threads for both sides")
    ap.add_argument("--workers", type=int, default=None,
                    help="DataLoader workers for both sides (default: the project's default for this device)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=3, help="data-path and training epochs; the first is a warm-up")
    ap.add_argument("--only", choices=["all", "data", "train", "e2e", "workers"], default="all",
                    help="workers: the loader settings before and after issue 26 (not part of all)")
    ap.add_argument("--max-images", type=int, default=None, help="use this many training photos (random subset)")
    ap.add_argument("--resnet-size", type=int, default=64, help="ResNet-34 input side")
    ap.add_argument("--resnet-images", type=int, default=640,
                    help="photos per ResNet-34 epoch (a subset keeps it to a couple of minutes)")
    ap.add_argument("--e2e-epochs", type=int, default=None, help="epochs per fold in e2e (default: the lenet recipe's)")
    ap.add_argument("--json", default=None, help="write every figure to this JSON file")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args(argv)
    args.workers_given = args.workers
    if args.workers is None:
        args.workers = default_workers(CPU)
    if args.epochs < 2:
        ap.error("--epochs must be at least 2 (the first epoch is a warm-up)")
    return args


# ---- report --------------------------------------------------------------------------------------
def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def table(res: dict) -> str:
    env, lines = res["environment"], []
    lines.append("=" * 100)
    lines.append(f"speed benchmark  {env['photos_train']} train photos from {env['data']}")
    lines.append(f"batch {env['batch_size']}, torch threads {env['threads']}, loader workers {env['workers']} (both "
                 f"sides), {env['epochs']} epochs per measurement, figures = mean of epochs 2..{env['epochs']}")
    lines.append(f"{env['cpu']} ({env['cores']} cores), torch {env['torch']}, load average at start "
                 f"{env['load_start']} / end {env.get('load_end', '?')}")
    lines.append("-" * 100)
    lines.append(f"{'measurement':<44}{'project':>12}{'hand-written':>14}{'ratio':>8}   target")
    lines.append("-" * 100)

    def row(label, r, key, unit="img/s"):
        t = TARGETS[key]
        target = f">= {t:g}x" if key != "resnet34" else "no slower (>= 1x)"
        lines.append(f"{label:<44}{r['project']['images_per_s']:>12.1f}{r['hand_written']['images_per_s']:>14.1f}"
                     f"{r['ratio']:>7.2f}x   {target:<18} {verdict(r['ratio'] >= t)}")

    if "data" in res:
        d = res["data"]
        row(f"data path {d['img_size']} px, no model ({d['images']} photos)", d, "data")
    if "train" in res:
        for arch in ("lenet", "resnet34"):
            if arch in res["train"]:
                r = res["train"][arch]
                row(f"training {'LeNet' if arch == 'lenet' else 'ResNet-34'} {r['img_size']} px fp32 "
                    f"({r['images']} photos)", r, arch)
    if "cache" in res:
        c = res["cache"]
        est = c["seconds"] * 2000 / c["photos"]
        lines.append("-" * 100)
        lines.append(f"cache build {c['size']} px: {c['photos']} photos in {c['seconds']:.2f} s = "
                     f"{c['photos'] / c['seconds']:.0f} photos/s ({est:.1f} s per 2,000 photos; "
                     f"target < 60 s: {verdict(est < TARGETS['cache_2000_s'])})")
    if "train" in res:
        for k, v in res["train"].items():
            if k.startswith("cache_build_"):
                lines.append(f"cache build {k.removeprefix('cache_build_')} (training benchmarks): "
                             f"{v['photos']} photos in {v['seconds']:.2f} s")
    if "per_photo" in res:
        c = res["per_photo"]
        lines.append(f"per photo on one core: PIL decode {c['pil_decode_ms']:.2f} ms, whole notebook sample at "
                     f"{c['img_size']} px {c['notebook_sample_ms']:.2f} ms, cache decode_resized "
                     f"{c['decode_resized_ms']:.2f} ms")
    if "e2e" in res:
        e = res["e2e"]
        s = e["seconds"]
        lines.append("-" * 100)
        lines.append(f"end to end, train.zip -> validated submission (LeNet 64 px, {e['epochs_config']} epochs x 5 "
                     f"folds, early stopping; {e['train_photos']} train / {e['test_photos']} test photos)")
        lines.append(f"  download (unzip, verify, catalogue, folds) {s['download']:>9.1f} s")
        lines.append(f"  train (64 px cache + 5 folds)              {s['train']:>9.1f} s   (folds alone "
                     f"{e['train_folds_seconds']:.1f} s, {e['epochs_trained']} epochs, median "
                     f"{e['train_images_per_s_median']:.0f} img/s)")
        lines.append(f"  predict (test cache, TTA, validated CSV)   {s['predict']:>9.1f} s")
        lines.append(f"  total                                      {e['total_seconds']:>9.1f} s")
        acc = f"CV accuracy {e['cv_accuracy']:.4f}, CV log-loss {e['cv_log_loss']:.4f}"
        if "test_accuracy" in e:
            acc += f", test accuracy {e['test_accuracy']:.4f} (solution.csv)"
        lines.append(f"  {acc}")
    lines.append("=" * 100)
    return "\n".join(lines)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench_speed_"))
    res = {"environment": {"data": str(args.data), "threads": torch.get_num_threads(), "workers": args.workers,
                           "batch_size": args.batch_size, "epochs": args.epochs, "cores": cores(),
                           "cpu": cpu_name(), "torch": torch.__version__, "python": platform.python_version(),
                           "load_start": load(), "only": args.only, "max_images": args.max_images,
                           "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
                           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}}
    try:
        t0 = time.perf_counter()
        photos, zips = prepare_inputs(args, tmp)
        res["environment"]["photos_train"] = len(photos["train_paths"])
        res["environment"]["photos_test"] = len(photos["test_paths"])
        log(f"inputs: {len(photos['train_paths'])} train + {len(photos['test_paths'])} test photos from {args.data} "
            f"unzipped in {time.perf_counter() - t0:.1f} s into {tmp}")
        log(f"threads {torch.get_num_threads()}, workers {args.workers}, batch {args.batch_size}, "
            f"epochs {args.epochs}, load {load():.2f}")
        if args.only in ("all", "data"):
            size = base_size_for(224)
            every = photos["train_paths"] + photos["test_paths"]
            log(f"\n[cache] building the {size} px cache for {len(every)} photos (train + test) ...")
            cache256, seconds, decoded = build_cache(tmp / "cache", size, every)
            res["cache"] = {"size": size, "photos": decoded, "seconds": round(seconds, 3),
                            "photos_per_s": round(decoded / seconds, 1)}
            log(f"    {decoded} photos in {seconds:.2f} s = {decoded / seconds:.0f} photos/s")
            log("\n[calibration] per-photo cost")
            res["per_photo"] = bench_per_photo(photos["train_paths"])
            res["data"] = bench_data(args, photos, cache256)
        if args.only in ("all", "train"):
            res["train"] = bench_train(args, photos, tmp)
        if args.only in ("all", "e2e"):
            res["e2e"] = bench_e2e(args, zips, tmp)
        if args.only == "workers":
            res["workers"] = bench_workers(args, photos, tmp)
        res["environment"]["load_end"] = load()
        res["environment"]["wall_seconds"] = round(time.perf_counter() - t0, 1)
    finally:
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    log("")
    log(table(res))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
        log(f"figures written to {args.json}")
    return res


if __name__ == "__main__":
    main()
