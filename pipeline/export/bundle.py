"""``pipeline export``: runs as a Kaggle dataset (the bundle) and an offline inference notebook (the kernel).

::

    OUT/dataset/  dataset-metadata.json, bundle.json (what it holds and the options predict runs with),
                  runs/<run>/ (every file of the run that predict reads), wheels/ (the project's, and what the
                  Kaggle image lacks)
    OUT/kernel/   <kernel>.ipynb, kernel-metadata.json

A run is carried whole but for what prediction never reads (``SKIPPED``: the training state ``last.pt``, the report,
TensorBoard files, the test predictions of another test set, locks): its checkpoints, config.json (competition,
classes, recipe), folds.csv and oof.csv (the blend weights, the TTA choice and the calibration are fitted on them at
prediction time, as a local ``pipeline predict`` fits them), cv.json, and whatever fitted post-processing a later
version keeps beside them. So the notebook's ``submission.csv`` is the file a local ``pipeline predict`` writes with
the same options.

Everything is written into a hidden folder beside OUT and renamed into place once every check has passed: a refused
export leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from pipeline.competitions.spec import run_competition
from pipeline.errors import ConfigError
from pipeline.export import ExportError
from pipeline.export.notebook import kernel_metadata, notebook, write_kernel
from pipeline.export.wheels import build_wheels, missing_on_kaggle
from pipeline.fileio import human_size
from pipeline.rundir import RunDir, find_run

# Kaggle's limit on one dataset: 100 GB, as kaggle.com/docs/datasets ("Technical specifications") gives it; the
# reference search here could not reach that page to check it again, so it is one constant to change
KAGGLE_DATASET_LIMIT = 100 * 1000**3
SKIPPED = ("last.pt", "report", "tensorboard", "test_probs.csv", "test_probs.json", ".lock", ".lock.owner",
           ".metrics.lock", "failed.txt")
OWNER_PLACEHOLDER = "your-kaggle-username"


@dataclass
class Exported:
    """What ``export`` wrote: the two folders, the notebook, the Kaggle ids, the bundle's size and its wheels."""

    dataset_dir: Path
    kernel_dir: Path
    notebook: Path
    dataset_id: str
    kernel_id: str
    competition: str
    size: int
    wheels: list[str]
    missing: list[str]


def export(*, runs: list, out: Path, runs_dir: Path = Path("runs"), owner: str | None = None,
           name: str | None = None, gpu: bool = False, tta: str = "auto", ensemble: str = "fit",
           calibrate: str = "auto", force: bool = False, limit: int = KAGGLE_DATASET_LIMIT) -> Exported:
    """Write the bundle and the kernel for ``runs`` into ``out`` (see the module's note).

    Args:
        runs: run folders or names (as ``pipeline predict --run`` takes them).
        out: the folder that gets ``dataset/`` and ``kernel/``.
        runs_dir: where run names are looked up.
        owner: the Kaggle user the dataset and kernel belong to (default: the one of the Kaggle credentials).
        name: the dataset's slug (default: ``pipeline-<runs>``); the kernel's is it with ``-infer``.
        gpu: ask Kaggle for a GPU (``enable_gpu``); the notebook uses one when it has one either way.
        tta, ensemble, calibrate: ``pipeline predict``'s options, passed on as they are.
        force: replace ``out``'s earlier export.
        limit: the largest bundle in bytes (Kaggle's dataset limit).

    Raises:
        ExportError: what cannot work offline (a fold's weights not in the run, a competition with no Kaggle slug,
            too big a bundle), a wheel that cannot be built, or ``out`` holding an earlier export without ``force``.
    """
    if not runs:
        raise ConfigError("Name the runs to export with --run (repeatable).")
    run_dirs = [find_run(runs_dir, str(r)) for r in runs]
    names = [r.name for r in run_dirs]
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice:
        raise ExportError(f"Two runs are named {twice}: the bundle keeps runs by name; rename one folder.")
    comp = _competition(run_dirs)
    files = {r.name: _run_files(r) for r in run_dirs}
    run_bytes = sum(p.stat().st_size for fs in files.values() for p in fs)
    if run_bytes > limit:
        raise ExportError(_too_big(run_bytes, limit))
    out = Path(out)
    dataset_dir, kernel_dir = out / "dataset", out / "kernel"
    if not force and any(p.exists() for p in (dataset_dir, kernel_dir)):
        raise ExportError(f"{out} holds an earlier export; pass --force to replace it, or another --out.")
    owner = owner or kaggle_username() or OWNER_PLACEHOLDER
    slug = slugify(name or "pipeline-" + "-".join(names))
    kernel_slug = slugify(f"{slug[:43]}-infer")
    staging = out / f".export-{os.getpid()}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        for run_name, paths in files.items():
            for p in paths:
                target = staging / "dataset" / "runs" / run_name / p.relative_to(run_dirs[names.index(run_name)].path)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(p, target)
        missing = missing_on_kaggle()
        wheels = build_wheels(staging / "dataset" / "wheels", missing)
        dataset_id, kernel_id = f"{owner}/{slug}", f"{owner}/{kernel_slug}"
        options = ["--tta", tta, "--ensemble", ensemble, "--calibrate", calibrate]
        _write_json(staging / "dataset" / "dataset-metadata.json",
                    {"title": slug, "id": dataset_id, "licenses": [{"name": "CC0-1.0"}]})
        _write_json(staging / "dataset" / "bundle.json",
                    {"competition": comp.kaggle, "runs": names, "predict_options": options,
                     "wheels": [w.name for w in wheels], "missing_on_kaggle": missing})
        size = sum(p.stat().st_size for p in (staging / "dataset").rglob("*") if p.is_file())
        if size > limit:
            raise ExportError(_too_big(size, limit))
        nb = notebook(competition=comp.kaggle, dataset=slug, runs=names, options=options, title=kernel_slug)
        meta = kernel_metadata(kernel_id=kernel_id, title=kernel_slug, code_file=f"{kernel_slug}.ipynb",
                               dataset_id=dataset_id, competition=comp.kaggle, gpu=gpu)
        write_kernel(staging / "kernel", nb, meta)
        for folder in (dataset_dir, kernel_dir):
            shutil.rmtree(folder, ignore_errors=True)
        (staging / "dataset").rename(dataset_dir)
        (staging / "kernel").rename(kernel_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Exported(dataset_dir=dataset_dir, kernel_dir=kernel_dir, notebook=kernel_dir / meta["code_file"],
                    dataset_id=dataset_id, kernel_id=kernel_id, competition=comp.kaggle, size=size,
                    wheels=[w.name for w in wheels], missing=missing)


def _competition(run_dirs: list[RunDir]):
    """The runs' one competition, which must name its Kaggle slug (the notebook reads /kaggle/input/<slug>)."""
    comps = []
    for r in run_dirs:
        config = r.config()
        if not config.get("competition"):
            raise ExportError(f"Run {r.name} records no competition (it was made before runs recorded one): the "
                              "notebook needs the competition's spec to read its test images; train it again.")
        comps.append(run_competition(config))
    other = next((c for c in comps[1:] if c.classes != comps[0].classes), None)
    if other is not None:
        raise ExportError(f"The runs were trained for {comps[0].name} and {other.name}: export runs of one "
                          "competition.")
    if not comps[0].kaggle:
        raise ExportError(f"Competition {comps[0].name} names no Kaggle competition in its spec ([data] kaggle): a "
                          "Kaggle notebook has no test images of it to read.")
    return comps[0]


def _run_files(run: RunDir) -> list[Path]:
    """Every file of ``run`` that prediction may read (all but ``SKIPPED``), once each finished fold's weights are
    known to be inside it."""
    from pipeline.predict.inference import usable_folds

    folds = usable_folds(run)
    gone = [k for k in folds if not run.best(k).is_file()]
    if gone:
        raise ExportError(f"Run {run.name} lacks the weights of fold(s) {', '.join(map(str, gone))} "
                          f"({run.best(gone[0])}): the notebook predicts with the fold models, so they must be in "
                          "the run; train it again.")
    kept = []
    for p in sorted(run.path.rglob("*")):
        parts = p.relative_to(run.path).parts
        if p.is_file() and not any(part in SKIPPED or part == "__pycache__" for part in parts):
            if p.is_symlink() and not p.resolve().is_relative_to(run.path.resolve()):
                raise ExportError(f"Run {run.name}'s {p.relative_to(run.path)} links outside the run ({p.resolve()}):"
                                  " the bundle carries the run's own files; copy it into the run.")
            kept.append(p)
    return kept


def _too_big(size: int, limit: int) -> str:
    return (f"The bundle would be {human_size(size)}, over Kaggle's dataset limit of {human_size(limit)}: export "
            "fewer runs (or runs of a smaller model).")


def kaggle_username() -> str | None:
    """The Kaggle user of the credentials (``KAGGLE_USERNAME``, or ``kaggle.json``'s ``username``); None without."""
    if os.environ.get("KAGGLE_USERNAME"):
        return os.environ["KAGGLE_USERNAME"]
    config = Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle") / "kaggle.json"
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("username") or None
    except (OSError, ValueError, AttributeError):
        return None


def slugify(text: str) -> str:
    """A Kaggle slug: lowercase letters, digits and dashes, 6 to 50 characters."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:50].strip("-")
    return slug if len(slug) >= 6 else f"{slug}-bundle".strip("-")


def _write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
