#!/usr/bin/env python
"""Several training processes against one: is anything lost to the launch and the merge?

Side A is one process (``pipeline train``) with T threads; side B is ``pipeline train --nproc N
--parallel folds`` with T/N threads per process: the same folds, epochs (no early stopping) and
total threads. Both run as whole commands on the same prepared data folder, alternately (A, B, A,
B, ...), so drifting machine load hits both; the wall time of each command is printed with the
median and the B/A ratio, and the fold metrics of the two sides side by side.

On a 2-core CPU the two should take about as long (the same work, the same cores). On a GPU
machine, ``--arch resnet50 --img-size 224 --nproc <GPUs>`` compares one GPU with N, AMP on.

    python benchmarks/bench_parallel.py                      # LeNet 64 px, 5 folds, 2 processes
    python benchmarks/bench_parallel.py --arch resnet50 --img-size 224 --epochs 3 --nproc 4 --threads 16
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "dogs-vs-cats-mini"


def pipeline(*args, cwd: Path) -> float:
    """Run ``python -m pipeline ARGS``; return its wall time in seconds."""
    env = os.environ | {"PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pipeline", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"pipeline {' '.join(map(str, args))} failed:\n{proc.stderr[-3000:]}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--data", type=Path, default=SHARED_DATA if SHARED_DATA.is_dir() else REPO / "pipeline" / "sample",
                    help="folder with train.zip and test.zip")
    ap.add_argument("--arch", default="lenet")
    ap.add_argument("--img-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=5, help="epochs per fold (early stopping off)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--nproc", type=int, default=2, help="processes of side B")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="threads in all, per side")
    ap.add_argument("--repeats", type=int, default=2, help="runs of each side")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-parallel-"))
    print(f"data: {args.data}; work folder: {work}", flush=True)
    pipeline("download", "--from", args.data / "train.zip", "--from", args.data / "test.zip", "--no-progress", cwd=work)
    recipe = ["--arch", args.arch, "--img-size", args.img_size, "--epochs", args.epochs, "--batch-size",
              args.batch_size, "--patience", 0, "--no-progress"]
    pipeline("train", *recipe, "--epochs", 1, "--folds", 0, "--run-name", "warm-up", cwd=work)  # builds the cache
    sides = {"A: 1 process": ["--threads", args.threads],
             f"B: --nproc {args.nproc} --parallel folds": ["--nproc", args.nproc, "--parallel", "folds",
                                                          "--threads", max(1, args.threads // args.nproc)]}
    times = {side: [] for side in sides}
    for i in range(args.repeats):
        for j, (side, extra) in enumerate(sides.items()):
            seconds = pipeline("train", *recipe, *extra, "--run-name", f"{'ab'[j]}{i}", cwd=work)
            times[side].append(seconds)
            print(f"  {side:<32} run {i + 1}: {seconds:7.1f} s", flush=True)

    a, b = (times[s] for s in sides)
    ratios = [y / x for x, y in zip(a, b, strict=True)]
    print(f"\n{args.arch} {args.img_size} px, {args.epochs} epochs x every fold, batch {args.batch_size}, "
          f"{args.threads} threads per side, {os.cpu_count()} CPUs")
    print(f"{'side':<34}{'median wall s':>14}{'min':>8}{'max':>8}")
    for side in sides:
        t = times[side]
        print(f"{side:<34}{statistics.median(t):>14.1f}{min(t):>8.1f}{max(t):>8.1f}")
    print(f"{'B / A (pair by pair)':<34}{statistics.median(ratios):>14.3f}{min(ratios):>8.3f}{max(ratios):>8.3f}")

    cvs = {side: json.loads((work / "runs" / f"{'ab'[j]}0" / "cv.json").read_text()) for j, side in enumerate(sides)}
    print(f"\n{'fold':<6}" + "".join(f"{s[:1] + ' accuracy':>14}{s[:1] + ' log-loss':>14}" for s in sides))
    for k in cvs[next(iter(sides))]["folds"]:
        print(f"{k:<6}" + "".join(f"{cvs[s]['folds'][k]['accuracy']:>14.4f}{cvs[s]['folds'][k]['log_loss']:>14.4f}"
                                  for s in sides))
    print(f"{'all':<6}" + "".join(f"{cvs[s]['overall']['accuracy']:>14.4f}{cvs[s]['overall']['log_loss']:>14.4f}"
                                  for s in sides))
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "seconds": times,
                                         "ratio_b_over_a": ratios, "cv": cvs}, indent=2))


if __name__ == "__main__":
    main()
