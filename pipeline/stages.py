"""Stages that chain modules for the CLI: download (fetch + catalogue + folds), predict (runs ->
submission), demo and doctor. Each returns values; only the CLI prints (the demo prints through
the console it is given)."""

from __future__ import annotations

import logging
import shutil
from datetime import datetime
from pathlib import Path

import pandas as pd

from pipeline.errors import ConfigError, DataError
from pipeline.fileio import write_json

_logger = logging.getLogger(__name__)
SAMPLE_DIR = Path(__file__).resolve().parent / "sample"


def download(*, source: str | None, urls: list[str], from_paths: list[Path], data_dir: Path, n_folds: int = 5,
             seed: int = 0, dup_threshold: int = 4, progress: bool = True, workers: int | None = None) -> dict:
    """Fetch and unpack the data, catalogue and verify every image, and assign folds.

    Returns counts and output paths for the CLI to print. When not one labelled training photo is
    found, only catalog_problems.csv is written (an earlier train.csv, test.csv and folds.csv stay
    as they were) and a DataError says why.
    """
    from pipeline.catalog import scan, write_catalog, write_problems
    from pipeline.download import acquire
    from pipeline.folds import write_folds

    data_dir = Path(data_dir)
    roots = acquire(source=source, urls=list(urls), from_paths=[Path(p) for p in from_paths],
                    raw_dir=data_dir / "raw", extract_dir=data_dir / "extracted", progress=progress)
    catalog = scan(roots, cache_csv=data_dir / ".verified.csv", workers=workers, progress=progress)
    if catalog.train.empty:
        raise _no_training_photo(catalog, write_problems(catalog, data_dir))
    paths = write_catalog(catalog, data_dir)
    summary = {"train": len(catalog.train), "cats": int((catalog.train.label == 0).sum()),
               "dogs": int((catalog.train.label == 1).sum()), "test": len(catalog.test),
               "test_unreadable": int((~catalog.test.readable.astype(bool)).sum()),
               "problems": len(catalog.problems), "skipped": catalog.skipped,
               "train_csv": paths["train"], "test_csv": paths["test"], "problems_csv": paths["problems"],
               "folds": n_folds}
    folds = write_folds(data_dir, n_folds, seed, dup_threshold)
    summary.update(dup_groups=int((folds.group.value_counts() > 1).sum()), folds_csv=data_dir / "folds.csv")
    return summary


def _no_training_photo(catalog, problems_csv: Path) -> DataError:
    """The error for a download in which not one image is a readable, labelled training photo."""
    reasons = catalog.problems.reason
    unreadable = int(reasons.str.startswith("unreadable image").sum())
    unlabelled = int(reasons.str.startswith("label unknown").sum())
    found = len(catalog.test) + unreadable + unlabelled
    return DataError(f"No labelled training photo among the {found} image files: {len(catalog.test)} test photos "
                     f"(numeric names), {unlabelled} unlabelled, {unreadable} unreadable; training photos must be "
                     "named cat.<n>.jpg / dog.<n>.jpg or sit in cats/ and dogs/ folders, so pass the training "
                     f"archive with --url or --from (each file left out is listed in {problems_csv}; train.csv, "
                     "test.csv and folds.csv were not written).")


def predict(*, runs: list[Path], test_csv: Path, tta: str = "hflip", ensemble: str = "fit", fmt: str = "course",
            threshold: float = 0.5, eps: float = 0.005, calibrate: str = "auto", out: Path | None = None,
            force: bool = False, partial: bool = False, device: str = "auto", batch_size: int | None = None,
            runs_dir: Path = Path("runs"), progress: bool = False, submissions_dir: Path = Path("submissions")) -> dict:
    """Predict with each run, blend them, calibrate, and write a validated submission with a note.

    ``calibrate``: ``temperature`` fits one temperature on the blend's out-of-fold predictions and
    applies it to the test probabilities (before the format's clipping); ``auto`` does so for
    probability formats (redux), where log-loss is scored, and not for 0/1 labels, which a
    temperature cannot change. The note ``<submission>.json`` records the runs, weights,
    calibration and out-of-fold scores.

    Returns ``{"path", "note", "rows", "blend", "calibration", "probs"}``; ``blend`` is None when
    no out-of-fold predictions exist (a partial run).
    """
    from pipeline.inference import (CALIBRATE_CHOICES, blend_predictions, blend_runs, fit_temperature,
                                    predict_run)
    from pipeline.rundir import RunDir, find_run
    from pipeline.submission import (default_submission_name, get_format, make_submission, note_path,
                                     read_test_ids, write_submission)

    if calibrate not in CALIBRATE_CHOICES:
        raise ConfigError(f"--calibrate must be one of {', '.join(CALIBRATE_CHOICES)}, got {calibrate!r}.")
    run_dirs = [find_run(runs_dir, str(r)).path for r in runs] if runs else [find_run(runs_dir, None).path]
    if len({r.resolve() for r in run_dirs}) != len(run_dirs):
        raise ConfigError("The same run was given twice with --run.")
    test_ids = read_test_ids(test_csv)
    preds = [predict_run(r, test_csv, tta=tta, device=device, batch_size=batch_size, progress=progress,
                         partial=partial) for r in run_dirs]
    has_oof = all(RunDir(r).oof_path.exists() for r in run_dirs)
    if len(run_dirs) > 1 and not has_oof:
        raise ConfigError("Blending needs every run's out-of-fold predictions (oof.csv); finish the runs first.")
    blend = blend_runs(run_dirs, ensemble, tta) if has_oof else None
    probs = blend_predictions(preds, blend.weights) if blend else preds[0][["id", "prob_dog"]]
    method = ("temperature" if get_format(fmt).probability else "none") if calibrate == "auto" else calibrate
    calibration = None
    if method == "temperature":
        if blend is None:
            raise ConfigError("--calibrate temperature is fitted on out-of-fold predictions, which a partial run "
                              "lacks; finish the run or pass --calibrate none.")
        calibration = fit_temperature(blend.labels, blend.oof)
        probs = probs.assign(prob_dog=calibration.apply(probs.prob_dog))
    sub = make_submission(probs, fmt, threshold=threshold, eps=eps)
    if out is None:
        out = Path(submissions_dir) / default_submission_name([r.name for r in run_dirs])
    path = write_submission(sub, out, test_ids, fmt, force=force)
    note = {"submission": path.name, "format": fmt, "runs": [str(r) for r in run_dirs], "tta": tta,
            "ensemble": blend.method if blend else None, "weights": blend.weights if blend else [1.0],
            "oof": blend.blend_score if blend else None, "calibration": vars(calibration) if calibration else None,
            "threshold": threshold, "eps": eps, "created": datetime.now().isoformat(timespec="seconds")}
    note_file = write_json(note_path(path), note)
    return {"path": path, "note": note_file, "rows": len(sub), "blend": blend, "calibration": calibration,
            "probs": probs}


def demo(workdir: Path, *, epochs: int = 20, n_folds: int = 3, console=None) -> dict:
    """Catalogue, fold, train, predict (TTA), validate, score and report on the bundled sample."""
    import time

    from pipeline.rundir import RunDir
    from pipeline.submission import score_submission
    from pipeline.training import TrainRequest, run

    say = console.print if console is not None else _logger.info
    workdir = Path(workdir)
    data_dir, runs_dir, subs = workdir / "data", workdir / "runs", workdir / "submissions"
    t0 = time.perf_counter()
    say(f"[bold]1/4 catalogue[/] the bundled sample ({SAMPLE_DIR})")
    s = download(source=None, urls=[], from_paths=[SAMPLE_DIR / "train.zip", SAMPLE_DIR / "test.zip"],
                 data_dir=data_dir, n_folds=n_folds, seed=0, progress=False)
    say(f"    {s['train']} training photos ({s['cats']} cats, {s['dogs']} dogs), {s['test']} test photos, "
        f"{n_folds} folds -> {data_dir}")
    say(f"[bold]2/4 train[/] LeNet, {n_folds}-fold cross-validation, {epochs} epochs per fold")
    name = f"demo-lenet-{datetime.now():%Y%m%d-%H%M%S}"
    cv = run(TrainRequest(recipe="lenet", overrides={"epochs": epochs},
                          settings={"data_dir": str(data_dir), "runs_dir": str(runs_dir), "run_name": name,
                                    "progress": console is not None}))
    o = cv["overall"]
    say(f"    CV accuracy {o['accuracy']:.3f}, log-loss {o['log_loss']:.3f} -> {runs_dir / name}")
    say("[bold]3/4 predict[/] average the folds with horizontal-flip TTA, write and validate the CSV")
    p = predict(runs=[runs_dir / name], test_csv=data_dir / "test.csv", tta="hflip", runs_dir=runs_dir,
                submissions_dir=subs)
    sc = score_submission(p["path"], SAMPLE_DIR / "solution.csv")
    say(f"    {p['path']} ({p['rows']} rows, valid); accuracy against the sample's solution.csv: {sc['accuracy']:.3f}")
    say("[bold]4/4 report[/]")
    html = RunDir(runs_dir / name).report_dir / "report.html"  # written when the training finished
    seconds = time.perf_counter() - t0
    say(f"    {html}\ndone in {seconds:.0f} s. Next: `pipeline download` for the real competition data.")
    return {"cv": cv, "submission": p["path"], "test_accuracy": sc["accuracy"], "report": html, "seconds": seconds}


def doctor(data_dir: Path, runs_dir: Path) -> dict:
    """Facts for a bug report: versions, CUDA, bf16, free disk, data and runs."""
    import platform

    import albumentations
    import timm
    import torch
    import torchvision

    from pipeline import __version__

    info = {"pipeline": __version__, "python": platform.python_version(), "platform": platform.platform(),
            "torch": torch.__version__, "torchvision": torchvision.__version__, "timm": timm.__version__,
            "albumentations": albumentations.__version__, "pandas": pd.__version__,
            "cpu threads": torch.get_num_threads(), "cuda available": torch.cuda.is_available(),
            "cuda build": torch.version.cuda or "none (CPU build)"}
    if torch.cuda.is_available():
        info["cudnn"] = torch.backends.cudnn.version()
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            info[f"gpu {i}"] = f"{p.name}, {p.total_memory / 2**30:.1f} GiB, capability {p.major}.{p.minor}"
        info["bf16 supported"] = torch.cuda.is_bf16_supported()
    else:
        info["bf16 supported"] = "CPU autocast only (--precision bf16)"
    for label, folder in (("data", Path(data_dir)), ("runs", Path(runs_dir))):
        probe = folder if folder.exists() else Path.cwd()
        free = shutil.disk_usage(probe).free / 2**30
        info[label] = f"{folder.resolve()} ({'exists' if folder.exists() else 'missing'}; {free:.1f} GiB free)"
    data_dir = Path(data_dir)
    for name in ("train.csv", "test.csv", "folds.csv"):
        f = data_dir / name
        info[name] = f"{sum(1 for _ in f.open()) - 1} rows" if f.exists() else "missing"
    info["runs found"] = len(list(Path(runs_dir).glob("*/config.json"))) if Path(runs_dir).exists() else 0
    return info
