"""How long predicting a test set will take, said before the long part (``pipeline predict --test-dir``).

A rough figure from this machine: a few of the test photos decoded, and one batch through each run's model on the
device, scaled to every photo, fold and test-time view. It leaves out start-up and the image cache's first build,
so take it as a lower bound within a factor of two.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.competitions.spec import run_competition
from pipeline.compute.runtime import resolve_device
from pipeline.data.catalog import read_test
from pipeline.data.images import base_size_for, decode_resized
from pipeline.models import build_model
from pipeline.recipe import Recipe
from pipeline.rundir import RunDir

SAMPLE = 16  # photos decoded, and the batch timed
TIMED = 3  # passes of the batch timed


@dataclass
class Estimate:
    """``seconds`` for ``images`` photos through ``passes`` model passes each (folds x views, over the runs)."""

    seconds: float
    images: int
    passes: int
    device: str


def estimate(run_dirs: list[Path], test_csv: Path, tta: str | None, device: str = "auto") -> Estimate:
    """The time to predict ``test_csv`` with ``run_dirs`` (see the module's note).

    Args:
        run_dirs: the runs (their finished folds predict).
        test_csv: the test catalogue.
        tta: the TTA policy; ``auto`` or None: the one ``pipeline predict`` chooses on the out-of-fold predictions
            (with the competition's metric and a fitted blend).
        device: ``auto``, ``cpu`` or ``cuda``.
    """
    dev = resolve_device(device)
    test = read_test(test_csv)
    paths = test.path[test.readable].head(SAMPLE).tolist()
    seconds_per_image, passes = 0.0, 0
    for r in run_dirs:
        run = RunDir(r)
        recipe, comp = Recipe.of_run(run), run_competition(run.config())
        views = comp.tta_views(_policy(run_dirs, comp, tta))
        if paths:
            start = time.perf_counter()
            for p in paths:
                decode_resized(p, base_size_for(recipe.img_size))
            seconds_per_image += (time.perf_counter() - start) / len(paths)
        model = build_model(recipe.arch, recipe.img_size, num_classes=comp.outputs).to(dev).eval()
        batch = torch.rand(SAMPLE, 3, recipe.img_size, recipe.img_size, device=dev)  # zeros run slow on a CPU
        with torch.inference_mode():
            model(batch)  # the first pass sets up kernels
            took = []
            for _ in range(TIMED):
                start = time.perf_counter()
                model(batch)
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                took.append(time.perf_counter() - start)
        run_passes = len(run.finished_folds()) * (1 + len(views))
        seconds_per_image += min(took) / SAMPLE * run_passes  # the least: other work on the machine only adds
        passes += run_passes
    return Estimate(seconds=seconds_per_image * len(test), images=len(test), passes=passes, device=dev.type)


def _policy(run_dirs: list[Path], comp, tta: str | None) -> str:
    """The TTA policy predict will use: ``tta``, or for ``auto`` the one it chooses (the competition's own for runs
    without out-of-fold predictions)."""
    if tta not in (None, "auto"):
        return tta
    if not all(RunDir(r).oof_path.exists() for r in run_dirs):
        return comp.augment.tta
    from pipeline.predict.formats import format_for
    from pipeline.predict.tta import choose_tta

    return choose_tta(run_dirs, comp, format_for(comp).metric).policy
