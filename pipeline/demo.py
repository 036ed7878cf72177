"""``pipeline demo``: every stage on the bundled sample, offline, in minutes on a laptop CPU."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from pathlib import Path

from pipeline.data.download import download
from pipeline.predict.predict import predict
from pipeline.predict.validation import score_submission
from pipeline.report import build_report
from pipeline.rundir import RunDir
from pipeline.train.request import TrainRequest
from pipeline.train.session import train

_logger = logging.getLogger(__name__)
SAMPLE_DIR = Path(__file__).resolve().parent / "sample"


def demo(workdir: Path, *, epochs: int = 20, n_folds: int = 3, console=None) -> dict:
    """Catalogue, fold, train, predict (TTA chosen on the folds), validate, score and report on the bundled
    sample."""
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
    cv = train(TrainRequest(recipe="lenet", overrides={"epochs": epochs},
                            settings={"data_dir": str(data_dir), "runs_dir": str(runs_dir), "run_name": name,
                                      "progress": console is not None}), report=build_report)
    o = cv["overall"]
    say(f"    CV accuracy {o['accuracy']:.3f}, log-loss {o['log_loss']:.3f} -> {runs_dir / name}")
    say("[bold]3/4 predict[/] average the folds with the TTA chosen on the folds, write and validate the CSV")
    p = predict(runs=[runs_dir / name], test_csv=data_dir / "test.csv", tta="auto", runs_dir=runs_dir,
                submissions_dir=subs)
    say(f"    TTA: {p['tta']} (" + " -> ".join(f"{s['views']} {s['metric']:.3f}" for s in p["tta_choice"].steps)
        + f", out-of-fold {p['tta_choice'].metric})")
    sc = score_submission(p["path"], SAMPLE_DIR / "solution.csv")
    say(f"    {p['path']} ({p['rows']} rows, valid); accuracy against the sample's solution.csv: {sc['accuracy']:.3f}")
    say("[bold]4/4 report[/]")
    html = RunDir(runs_dir / name).report_dir / "report.html"  # written when the training finished
    seconds = time.perf_counter() - t0
    say(f"    {html}\ndone in {seconds:.0f} s. Next: `pipeline download` for the real competition data.")
    return {"cv": cv, "submission": p["path"], "test_accuracy": sc["accuracy"], "report": html, "seconds": seconds}
