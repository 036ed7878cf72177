#!/usr/bin/env python
"""The GPU check: one command a lent GPU runs as is, in under 8 minutes on one GPU, printing one table.

    python benchmarks/gpu_check.py --weights FILE [--data FOLDER] [--json gpu_check.json] [--no-tests]

A lent GPU machine receives the checkout only (plus the paths its caller carries), never ``../shared``: pass the
ImageNet weights of tf_efficientnet_lite0 with ``--weights`` (copied inside the checkout) and the photos with
``--data`` (a folder inside the checkout; default: the bundled sample). The script never reads ``../shared``.

Rows (each one ``ok``, ``FAILED: why`` or ``skipped: why``, with its figures and seconds):

1. ``device``: the GPU, its compute capability and memory, and the precision ``--precision auto`` picks;
2. ``fp16 step``: three fp16 training steps with the loss scaler, losses finite;
3. ``bf16 step``: the same in bf16 (compute capability 8.0 and newer);
4. ``channels_last``: ResNet-50 at 224 px, one AMP step per batch, channels_last against the plain layout;
5. ``compile``: ``torch.compile`` of ResNet-18, compile time and finite losses;
6. ``finetune fold``: the ``finetune`` recipe, 2 epochs of fold 0 on ``--data``, with AMP, through the pipeline
   itself, from the ``--weights`` file (without it: from random weights, and the row says so): its CV figures;
7. ``resnet50 img/s``: ResNet-50 at 224 px: the loader alone (decoded-image cache, augmentation, loader workers;
   no model), the model alone (synthetic batches already on the GPU: the limit) and the two together (training
   on the pipeline's data path), each timed over a steady window after the batches the workers queued during
   the start-up (workers x prefetch) are drained, so that a loader slower than the model shows;
8. on two or more GPUs, ``--nproc 2`` in folds mode and in ddp mode (SyncBatchNorm over nccl).

Then the tests marked ``cuda`` (``pytest -m cuda``), unless ``--no-tests``. Where PyTorch sees no GPU it
says so in one line and exits 0. ``--device cpu --quick`` runs the same code on the CPU with tiny sizes and models
(to check the script itself on a machine without a GPU; its figures mean nothing).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # runnable from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

SAMPLE = REPO / "pipeline" / "sample"


class Skip(Exception):
    """A row that does not apply here (no bf16, one GPU, ...)."""


def log(msg: str) -> None:
    print(msg, flush=True)


def row(rows: list[dict], name: str, fn: Callable[[], dict]) -> None:
    """Run one check; record ok (with its figures), skipped or FAILED, and its seconds."""
    t0 = time.perf_counter()
    try:
        figures, status = fn(), "ok"
    except Skip as exc:
        figures, status = {}, f"skipped: {exc}"
    except Exception as exc:  # noqa: BLE001 - one failed check must not hide the others
        figures, status = {}, f"FAILED: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    rows.append({"check": name, "status": status, "seconds": round(time.perf_counter() - t0, 1), **figures})
    log(f"  {name:<16} {status:<8} {json.dumps(figures)} ({rows[-1]['seconds']} s)")


def small(quick: bool) -> str:
    """ResNet-18 on a GPU; LeNet in a --quick pass on the CPU (which checks the script, not the figures)."""
    return "lenet" if quick else "resnet18"


def large(quick: bool) -> str:
    """ResNet-50 on a GPU; ResNet-18 in a --quick pass on the CPU."""
    return "resnet18" if quick else "resnet50"


def synthetic(device: torch.device, n: int, size: int, channels_last: bool = True):
    x = torch.randn(n, 3, size, size, device=device)
    x = x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    return x, (torch.arange(n, device=device) % 2).float()


def steps(model, x, y, dtype, device, n: int, compile: bool = False) -> tuple[list[float], float]:
    """``n`` training steps of ``model`` on one batch; the losses and the seconds of all but the first."""
    from pipeline.compute.evaluation import Amp
    from pipeline.recipe import Recipe
    from pipeline.train.engine import train_step
    from pipeline.train.optim import build_optimizer

    opt, sched = build_optimizer(Recipe(arch="lenet", img_size=32).resolved(), model, max(n, 2), device)
    amp, net = Amp(device, dtype), (torch.compile(model) if compile else model)
    losses, t0 = [], None
    for i in range(n):
        if i == 1:
            sync(device)
            t0 = time.perf_counter()
        loss, _ = train_step(net, x, y, opt, sched, amp)
        losses.append(loss.item())
    sync(device)
    return losses, (time.perf_counter() - t0) if t0 is not None else 0.0


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_device(device: torch.device) -> dict:
    from pipeline.compute.runtime import Runtime

    rt = Runtime.from_env(device.type, "auto")
    out = {"precision_auto": str(rt.dtype).removeprefix("torch."), "channels_last": rt.channels_last}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        out |= {"gpu": p.name, "capability": f"{p.major}.{p.minor}", "memory_gib": round(p.total_memory / 2**30, 1),
                "gpus": torch.cuda.device_count(), "torch": torch.__version__, "cuda": torch.version.cuda}
    return out


def check_step(device: torch.device, dtype: torch.dtype, quick: bool) -> dict:
    from pipeline.compute.runtime import BF16_CAPABILITY
    from pipeline.models import build_model

    if device.type == "cuda" and dtype == torch.bfloat16 and \
            torch.cuda.get_device_capability(device) < BF16_CAPABILITY:
        raise Skip(f"compute capability {'.'.join(map(str, torch.cuda.get_device_capability(device)))} < 8.0")
    torch.manual_seed(0)
    size = 32 if quick else 64
    model = build_model(small(quick), size).to(device, memory_format=torch.channels_last)
    x, y = synthetic(device, 4 if quick else 32, size)
    losses, _ = steps(model, x, y, dtype, device, 3)
    if not all(math.isfinite(v) for v in losses):
        raise AssertionError(f"losses {losses}")
    return {"losses": [round(v, 4) for v in losses]}


def check_channels_last(device: torch.device, dtype: torch.dtype, quick: bool) -> dict:
    from pipeline.models import build_model

    size, n, batch = (32, 3, 4) if quick else (224, 12, 64)
    out = {}
    for layout in (True, False):
        torch.manual_seed(0)
        model = build_model(large(quick), size).to(device, memory_format=torch.channels_last if layout else
                                                 torch.contiguous_format)
        x, y = synthetic(device, batch, size, channels_last=layout)
        _, seconds = steps(model, x, y, dtype, device, n)
        out["channels_last_img_s" if layout else "contiguous_img_s"] = round(batch * (n - 1) / seconds, 1)
    out["speedup"] = round(out["channels_last_img_s"] / out["contiguous_img_s"], 2)
    return out


def check_compile(device: torch.device, dtype: torch.dtype, quick: bool) -> dict:
    from pipeline.compute.runtime import check_compile, gpu_capability
    from pipeline.errors import ConfigError
    from pipeline.models import build_model

    try:
        check_compile(device.type, gpu_capability(device), torch.cuda.get_device_name(device)
                      if device.type == "cuda" else "")
    except ConfigError as exc:  # what `pipeline train --compile` says on this GPU
        raise Skip(str(exc)) from None

    torch.manual_seed(0)
    size = 32 if quick else 64
    model = build_model(small(quick), size).to(device, memory_format=torch.channels_last)
    x, y = synthetic(device, 4 if quick else 64, size)
    t0 = time.perf_counter()
    losses, seconds = steps(model, x, y, dtype, device, 4, compile=True)
    if not all(math.isfinite(v) for v in losses):
        raise AssertionError(f"losses {losses}")
    return {"first_steps_s": round(time.perf_counter() - t0 - seconds, 1), "losses": [round(v, 4) for v in losses]}


def prepare_data(work: Path, data: Path, quick: bool) -> Path:
    """The mini set (or the bundled sample) catalogued and folded in ``work/data``."""
    from pipeline.data.download import download

    data_dir = work / "data"
    if not (data_dir / "folds.csv").exists():
        download(source=None, urls=[], from_paths=[data / "train.zip", data / "test.zip"], data_dir=data_dir,
                 n_folds=5, progress=False)
    return data_dir


def check_finetune(device: torch.device, work: Path, data: Path, quick: bool, weights: Path | None) -> dict:
    from pipeline.train.request import TrainRequest
    from pipeline.train.session import train

    data_dir = prepare_data(work, data, quick)
    overrides = {"epochs": 1 if quick else 2}
    overrides |= {"weights": str(weights)} if weights else {"pretrained": False}  # never the hub: it is offline
    if quick:
        overrides |= {"img_size": 32, "batch_size": 32}
    t0 = time.perf_counter()
    cv = train(TrainRequest(recipe="finetune", overrides=overrides,
                            settings={"data_dir": str(data_dir), "runs_dir": str(work / "runs"), "folds": [0],
                                      "device": device.type, "progress": False, "tracker": "none",
                                      "report": False, "run_name": f"finetune-{int(time.time())}"}))
    o = cv["overall"]
    return {"weights": weights.name if weights else "none: random weights (pass --weights FILE)",
            "photos": o["n"], "accuracy": round(o["accuracy"], 4), "log_loss": round(o["log_loss"], 4),
            "train_s": round(time.perf_counter() - t0, 1)}


def steady_rate(batches, n: int, drain: int, device: torch.device, step=None) -> float:
    """Images a second over ``n`` batches of the iterator ``batches``, after ``drain`` untimed ones: the batches the
    workers queued while the first one started (workers x prefetch), which would otherwise be timed as free.

    Args:
        batches: yields ``(x, y, rows)``.
        n: batches timed.
        drain: batches taken first, untimed.
        device: synchronised before each clock reading.
        step: ``step(x, y)`` per batch (None: the loader alone).
    """
    for _ in range(drain):
        x, y, _ = next(batches)
        if step is not None:
            step(x, y)
    sync(device)
    t0, seen = time.perf_counter(), 0
    for _ in range(n):
        x, y, _ = next(batches)
        if step is not None:
            step(x, y)
        seen += len(y)
    sync(device)
    return seen / (time.perf_counter() - t0)


def endless(loader):
    """The loader's batches epoch after epoch."""
    epoch = 0
    while True:
        loader.sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def check_throughput(device: torch.device, dtype: torch.dtype, work: Path, data: Path, quick: bool) -> dict:
    """ResNet-50 img/s: the loader alone, the model alone on synthetic batches already on the device (the limit),
    and the two together (the pipeline's data path), each over a steady window."""
    import pandas as pd

    from pipeline.compute.evaluation import Amp
    from pipeline.compute.runtime import Runtime, default_workers
    from pipeline.data.cache import open_cache
    from pipeline.data.images import BatchNormalizer, ImageDataset, base_size_for, build_train_transform, make_loader
    from pipeline.models import build_model, normalization
    from pipeline.recipe import Recipe
    from pipeline.train.engine import train_step
    from pipeline.train.optim import build_optimizer

    size, batch, n = (32, 8, 4) if quick else (224, 64, 40)
    folds = pd.read_csv(prepare_data(work, data, quick) / "folds.csv")
    rt, workers = Runtime(device, dtype), default_workers(device)
    cache = open_cache(work / "data", folds.path, base_size_for(size))
    ds = ImageDataset(folds.path, folds.label, base_size_for(size), build_train_transform(size, "light"), cache)
    loader = make_loader(ds, batch, shuffle=True, seed=0, workers=workers, runtime=rt)
    drain = 1 + workers * (loader.prefetch_factor or 0)  # the first batch, and what the workers queued meanwhile
    batches = endless(loader)
    loader_rate = steady_rate(batches, n, drain, device)
    batches.close()
    del batches, loader  # its workers end: the next loader starts with an empty queue
    recipe = Recipe(arch=large(quick), img_size=size, batch_size=batch).resolved()
    torch.manual_seed(0)
    model = build_model(large(quick), size).to(device, memory_format=torch.channels_last)
    normalize = BatchNormalizer(*normalization(model), device, True)
    opt, sched = build_optimizer(recipe, model, 10 * n, device)
    amp = Amp(device, dtype)
    x, y = synthetic(device, batch, size)
    _, seconds = steps(model, x, y, dtype, device, n)
    limit = batch * (n - 1) / seconds
    loader = make_loader(ds, batch, shuffle=True, seed=1, workers=workers, runtime=rt)
    rate = steady_rate(endless(loader), n, drain, device,
                       lambda x, y: train_step(model, normalize(x), y.to(device, non_blocking=True), opt, sched, amp))
    return {"loader_img_s": round(loader_rate, 1), "model_img_s": round(limit, 1), "together_img_s": round(rate, 1),
            "ratio": round(rate / limit, 2), "loader_workers": workers, "drained_batches": drain,
            "bound": "loader" if loader_rate < limit else "model"}


def check_nproc(mode: str, work: Path, data: Path, quick: bool) -> dict:
    if torch.cuda.device_count() < 2:
        raise Skip("one GPU")
    data_dir = prepare_data(work, data, quick)
    arch = ["--arch", "lenet", "--img-size", "64"] if mode == "folds" else \
        ["--arch", "tf_efficientnet_lite0", "--img-size", "128", "--folds", "0"]
    cmd = [sys.executable, "-m", "pipeline", "train", *arch, "--epochs", "2", "--nproc", "2", "--parallel", mode,
           "--no-progress", "--tracker", "none", "--data-dir", str(data_dir), "--runs-dir", str(work / "runs"),
           "--run-name", f"nproc-{mode}"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=400)
    if proc.returncode != 0:
        raise AssertionError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode)
    cv = json.loads((work / "runs" / f"nproc-{mode}" / "cv.json").read_text())
    return {"accuracy": round(cv["overall"]["accuracy"], 4), "log_loss": round(cv["overall"]["log_loss"], 4)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the table as JSON here")
    parser.add_argument("--data", type=Path, default=SAMPLE,
                        help="a folder with train.zip and test.zip, inside the checkout on a machine that receives "
                             "only the checkout (default: the bundled sample)")
    parser.add_argument("--weights", type=Path, metavar="FILE",
                        help="the ImageNet weights of tf_efficientnet_lite0 for the finetune row (e.g. "
                             "tf_efficientnet_lite0_in1k.pth); on a machine that receives only the checkout the file "
                             "must sit inside the checkout. Without it the row trains from random weights")
    parser.add_argument("--no-tests", action="store_true", help="skip `pytest -m cuda` after the table")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.weights is not None and not args.weights.is_file():
        parser.error(f"--weights {args.weights}: no such file (on a lent GPU machine only the checkout is there: "
                     "copy the file inside it)")
    if args.device == "cuda" and not torch.cuda.is_available():
        log("gpu_check: PyTorch sees no CUDA GPU on this machine (torch.cuda.is_available() is False); "
            "nothing to check here.")
        return 0
    device = torch.device(args.device, 0) if args.device == "cuda" else torch.device("cpu")
    from pipeline.compute.runtime import resolve_precision

    dtype = resolve_precision("auto", device) if device.type == "cuda" else torch.bfloat16
    rows: list[dict] = []
    t0 = time.perf_counter()
    log(f"gpu_check on {device} (data: {args.data})")
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        work = Path(tmp)
        row(rows, "device", lambda: check_device(device))
        row(rows, "fp16 step", lambda: check_step(device, torch.float16, args.quick))
        row(rows, "bf16 step", lambda: check_step(device, torch.bfloat16, args.quick))
        row(rows, "channels_last", lambda: check_channels_last(device, dtype, args.quick))
        row(rows, "compile", lambda: check_compile(device, dtype, args.quick))
        row(rows, "finetune fold", lambda: check_finetune(device, work, args.data, args.quick, args.weights))
        row(rows, "resnet50 img/s", lambda: check_throughput(device, dtype, work, args.data, args.quick))
        for mode in ("folds", "ddp"):
            row(rows, f"--nproc 2 {mode}", lambda mode=mode: check_nproc(mode, work, args.data, args.quick))
    log(f"\n{'check':<16} {'status':<10} {'s':>6}  figures")
    for r in rows:
        figures = {k: v for k, v in r.items() if k not in ("check", "status", "seconds")}
        log(f"{r['check']:<16} {r['status'][:60]:<10} {r['seconds']:>6}  {json.dumps(figures)}")
    log(f"table in {time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    failed = any(r["status"].startswith("FAILED") for r in rows)
    if not args.no_tests and device.type == "cuda":
        log("\npytest -m cuda")
        tests = subprocess.run([sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-rs"], cwd=REPO, check=False)
        failed = failed or tests.returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
