"""The command line: one thin function per command; the work happens in the stage modules."""

from __future__ import annotations

import functools
import logging
import math
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from pipeline.errors import PipelineError, storage_error

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Cats-vs-dogs competition pipeline: download -> train (k-fold) -> predict -> submit.")
console = Console(soft_wrap=True)  # no hard line breaks: paths and figures stay greppable
err_console = Console(stderr=True, soft_wrap=True)


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Precision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


class Tta(str, Enum):
    none = "none"
    hflip = "hflip"


class Fmt(str, Enum):
    course = "course"
    kaggle = "kaggle"
    redux = "redux"


class Calibrate(str, Enum):
    auto = "auto"
    none = "none"
    temperature = "temperature"


class EnsembleMethod(str, Enum):
    fit = "fit"
    mean = "mean"


DataDir = Annotated[Path, typer.Option(help="Where the catalogue, folds and cache live.")]
RunsDir = Annotated[Path, typer.Option(help="Where run folders live.")]


def friendly(fn):
    """Turn the errors a user can cause into one red line and a non-zero exit.

    A full disk or an unwritable folder (an OSError no stage turned into a PipelineError) gets the
    sentence of ``pipeline.errors.storage_error``; any other OSError keeps its traceback.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PipelineError as exc:
            if not getattr(exc, "from_main", False):  # under torchrun the main process says it once
                err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
            from pipeline.training import Interrupted

            raise typer.Exit(130 if isinstance(exc, Interrupted) else 1) from None
        except OSError as exc:
            error = storage_error(exc)
            if error is None:
                raise
            err_console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print("[bold red]interrupted[/]; files already written are complete.")
            raise typer.Exit(130) from None

    return wrapper


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log each stage's details.")] = False):
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=err_console, show_path=False)], force=True)


# ---- download / split ------------------------------------------------------------------------
@app.command()
@friendly
def download(
    source: Annotated[Optional[str], typer.Option(help="Named source: course (default, 猫狗大战), petimages, "
                                                  "kaggle, kaggle-redux.")] = None,
    url: Annotated[Optional[list[str]], typer.Option("--url", help="Archive URL to fetch (repeatable).")] = None,
    from_: Annotated[Optional[list[Path]], typer.Option("--from", exists=True,
                     help="Local zip or folder to use instead of downloading (repeatable).")] = None,
    data_dir: DataDir = Path("data"),
    folds: Annotated[int, typer.Option(help="Number of folds K.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the fold assignment.")] = 0,
    dup_threshold: Annotated[int, typer.Option(help="Perceptual-hash distance (bits of 64) under which two "
                                               "photos count as duplicates and share a fold; -1: off.")] = 4,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
):
    """Fetch, verify and unpack the data; write data/train.csv, data/test.csv and data/folds.csv."""
    from pipeline import stages

    summary = stages.download(source=source, urls=url or [], from_paths=from_ or [], data_dir=data_dir,
                              n_folds=folds, seed=seed, dup_threshold=dup_threshold, progress=progress)
    _print_catalog(summary)


@app.command()
@friendly
def split(
    data_dir: DataDir = Path("data"),
    folds: Annotated[int, typer.Option(help="Number of folds K.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the fold assignment.")] = 0,
    dup_threshold: Annotated[int, typer.Option(help="Perceptual-hash distance for duplicates; -1: off.")] = 4,
):
    """Rebuild data/folds.csv from data/train.csv without downloading."""
    from pipeline.folds import write_folds

    f = write_folds(data_dir, folds, seed, dup_threshold)
    console.print(f"{len(f)} images in {folds} folds ({', '.join(str(n) for n in f.fold.value_counts().sort_index())}); "
                  f"{int((f.group.value_counts() > 1).sum())} duplicate groups -> {data_dir / 'folds.csv'}")


def _print_catalog(s: dict) -> None:
    paths = {k: escape(str(s[k])) for k in ("train_csv", "test_csv", "problems_csv", "folds_csv")}
    console.print(f"train: {s['train']} images ({s['cats']} cats, {s['dogs']} dogs) -> {paths['train_csv']}")
    console.print(f"test:  {s['test']} images -> {paths['test_csv']}")
    unreadable = s.get("test_unreadable", 0)
    if unreadable:
        console.print(f"[yellow]test:  {unreadable} of them unreadable: kept (readable=False) so their ids are "
                      f"submitted with a neutral prediction, listed in {paths['problems_csv']}[/]")
    if s["problems"] - unreadable:
        console.print(f"[yellow]left out: {s['problems'] - unreadable} files (unreadable or unlabelled), listed in "
                      f"{paths['problems_csv']}[/]")
    console.print(f"folds: {s['folds']} folds, {s['dup_groups']} duplicate groups -> {paths['folds_csv']}")


# ---- train -----------------------------------------------------------------------------------
def _parse_ints(text: str, option: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        values = []
    if not values:
        raise typer.BadParameter(f"{option} takes comma-separated whole numbers like 96,128, got {text!r}")
    return values


def _parse_folds(text: str) -> list[int] | None:
    if text == "all":
        return None
    try:
        folds = [int(x) for x in text.split(",") if x.strip()]
        if not folds:
            raise ValueError
        return folds
    except ValueError:
        raise typer.BadParameter(f"expected 'all' or comma-separated fold numbers like 0,1,2, got {text!r}") from None


class Tracker(str, Enum):
    auto = "auto"
    none = "none"
    tensorboard = "tensorboard"
    mlflow = "mlflow"


class Parallel(str, Enum):
    auto = "auto"
    folds = "folds"
    ddp = "ddp"


def _given(**options) -> dict:
    """The options the user gave (typer leaves the others None), with enum values and paths as text."""
    return {k: (v.value if isinstance(v, Enum) else str(v) if isinstance(v, Path) else v)
            for k, v in options.items() if v is not None}


@app.command()
@friendly
def train(
    recipe: Annotated[Optional[str], typer.Option(help="A named recipe (see `pipeline recipes`) or a TOML file; "
                                                  "the options below override it.")] = None,
    arch: Annotated[Optional[str], typer.Option(help="lenet, resnet34, resnet50 or any timm model name "
                                                "\\[default: lenet].")] = None,
    folds: Annotated[Optional[str], typer.Option(help="Folds to train: 'all' or e.g. 0,1,2 \\[default: all].")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Epochs per fold; early stopping may end sooner "
                                                  "\\[default: 20].")] = None,
    img_size: Annotated[Optional[int], typer.Option(help="Input side in pixels \\[default: 64 for LeNet, the "
                                                    "model's own, usually 224, otherwise].")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Images per step, over all processes together; on a "
                                                      "GPU raise to 128-256 \\[default: 64].")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate \\[default: 1e-3, or 3e-4 from weights].")] = None,
    weight_decay: Annotated[Optional[float], typer.Option(help="AdamW/SGD weight decay (not on biases and "
                                                          "norms) \\[default: 0.05].")] = None,
    optimizer: Annotated[Optional[str], typer.Option(help="adamw or sgd (momentum 0.9, Nesterov) "
                                                     "\\[default: adamw].")] = None,
    schedule: Annotated[Optional[str], typer.Option(help="cosine (with warm-up) or onecycle \\[default: cosine].")] = None,
    warmup_epochs: Annotated[Optional[float], typer.Option(help="Linear warm-up before the cosine decay "
                                                           "\\[default: 1].")] = None,
    patience: Annotated[Optional[int], typer.Option(help="Stop a fold after this many epochs without a better "
                                                    "validation loss; 0: never \\[default: 5].")] = None,
    augment: Annotated[Optional[str], typer.Option(help="Augmentation preset: none, light or strong "
                                                   "\\[default: light].")] = None,
    drop_rate: Annotated[Optional[float], typer.Option(help="Dropout before the classifier of timm models "
                                                       "\\[default: 0].")] = None,
    pretrained: Annotated[Optional[bool], typer.Option("--pretrained/--no-pretrained",
                                                       help="Start from timm's ImageNet weights (needs the network).")] = None,
    weights: Annotated[Optional[Path], typer.Option(help="Start from a local weights file (offline route).",
                                                    exists=True, dir_okay=False)] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed for weights, order and augmentation \\[default: 0].")] = None,
    layer_decay: Annotated[Optional[float], typer.Option(help="Below 1: each earlier block of a timm model learns "
                                                         "at this fraction of the next one's rate \\[default: 1].")] = None,
    freeze_bn: Annotated[Optional[bool], typer.Option("--freeze-bn/--no-freeze-bn", help="Keep BatchNorm's pretrained "
                                                      "statistics (fine-tuning, small batches) \\[default: off].")] = None,
    mixup: Annotated[Optional[float], typer.Option(help="Mixup alpha; 0: off \\[default: 0].")] = None,
    cutmix: Annotated[Optional[float], typer.Option(help="CutMix alpha; 0: off \\[default: 0].")] = None,
    mix_prob: Annotated[Optional[float], typer.Option(help="Share of batches mixed \\[default: 1].")] = None,
    label_smoothing: Annotated[Optional[float], typer.Option(help="Targets eps/2 and 1-eps/2 \\[default: 0].")] = None,
    ema: Annotated[Optional[bool], typer.Option("--ema/--no-ema", help="Keep a moving average of the weights; it "
                                                "is used when it validates better \\[default: off].")] = None,
    ema_decay: Annotated[Optional[float], typer.Option(help="The EMA's decay after its warm-up \\[default: 0.998].")] = None,
    sizes: Annotated[Optional[str], typer.Option(help="Progressive resizing: training sizes in equal phases before "
                                                 "--img-size, e.g. 96,128 \\[default: none].")] = None,
    device: Annotated[Optional[Device], typer.Option(help="auto picks CUDA when present \\[default: auto].")] = None,
    precision: Annotated[Optional[Precision], typer.Option(help="auto: bf16 (or fp16 + loss scaling) on CUDA, "
                                                           "fp32 on CPU \\[default: auto].")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Loader processes per training process \\[default: 2 on "
                                                   "CPU, up to 8 on CUDA].")] = None,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads per training process \\[default: torch's; "
                                                   "with --nproc N, the cores / N].")] = None,
    cache: Annotated[Optional[bool], typer.Option("--cache/--no-cache", help="Read photos from the decoded-image "
                                                  "cache, built once per size \\[default: on].")] = None,
    channels_last: Annotated[Optional[bool], typer.Option("--channels-last/--no-channels-last",
                                                          help="channels_last memory for conv nets \\[default: on].")] = None,
    tracker: Annotated[Optional[Tracker], typer.Option(help="Live curves: tensorboard (runs/<run>/tensorboard), "
                                                       "mlflow (mlruns/ beside runs/, or MLFLOW_TRACKING_URI), none; "
                                                       "auto: TensorBoard when installed \\[default: auto].")] = None,
    compile: Annotated[Optional[bool], typer.Option("--compile/--no-compile", help="torch.compile the model "
                                                    "(slow start, faster steps on a GPU) \\[default: off].")] = None,
    nproc: Annotated[int, typer.Option(help="Training processes on this machine (one per GPU); started through "
                                       "torch's elastic launcher, as torchrun would.")] = 1,
    parallel: Annotated[Optional[Parallel], typer.Option(help="With several processes: folds (each process "
                                                         "trains its own folds) or ddp (all train each fold "
                                                         "together) \\[default: folds when there are at least as "
                                                         "many folds as processes, else ddp].")] = None,
    max_restarts: Annotated[int, typer.Option(help="With --nproc: start the workers again this often after a "
                                              "failure; the run continues from its last finished epochs.")] = 0,
    run_name: Annotated[Optional[str], typer.Option(help="Run folder name \\[default: <arch>-<time>].")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue --run-name (or the latest run): skip "
                                         "finished folds, continue the interrupted one.")] = False,
    data_dir: Annotated[Optional[Path], typer.Option(help="Where the catalogue, folds and cache live "
                                                     "\\[default: data].")] = None,
    runs_dir: Annotated[Optional[Path], typer.Option(help="Where run folders live \\[default: runs].")] = None,
    progress: Annotated[Optional[bool], typer.Option("--progress/--no-progress",
                                                     help="Show progress bars \\[default: on].")] = None,
):
    """k-fold cross-validation: one checkpoint per fold, out-of-fold predictions and the CV score.

    On a GPU: --arch resnet50 --pretrained --batch-size 128 --workers 8 (AMP and channels_last are on by
    default); several GPUs: --nproc N (or torchrun); raise --epochs to 20-30 from scratch.
    """
    from pipeline.launch import launch
    from pipeline.training import TrainRequest, run

    request = TrainRequest(
        recipe=recipe, resume=resume,
        overrides=_given(arch=arch, epochs=epochs, img_size=img_size, batch_size=batch_size, lr=lr,
                         weight_decay=weight_decay, optimizer=optimizer, schedule=schedule,
                         warmup_epochs=warmup_epochs, patience=patience, augment=augment, drop_rate=drop_rate,
                         pretrained=pretrained, weights=weights, seed=seed, layer_decay=layer_decay,
                         freeze_bn=freeze_bn, mixup=mixup, cutmix=cutmix, mix_prob=mix_prob,
                         label_smoothing=label_smoothing, ema=ema, ema_decay=ema_decay,
                         sizes=_parse_ints(sizes, "--sizes") if sizes is not None else None),
        settings=_given(device=device, precision=precision, workers=workers, threads=threads, cache=cache,
                        channels_last=channels_last, compile=compile, tracker=tracker, parallel=parallel,
                        folds=_parse_folds(folds) if folds is not None else None, data_dir=data_dir,
                        runs_dir=runs_dir, run_name=run_name, progress=progress))
    cv = launch(request, nproc, max_restarts) if nproc > 1 or max_restarts else run(request)
    if int(os.environ.get("RANK", "0")) != 0:
        return  # under torchrun the main process reports
    from pipeline.rundir import RunDir

    run = RunDir(Path(runs_dir or "runs") / cv["run"])
    _print_cv(cv, run.path)
    if (run.report_dir / "report.html").exists():
        console.print(f"report: {run.report_dir / 'report.html'}")
    if run.tensorboard_dir.exists():
        console.print(f"curves: tensorboard --logdir {run.tensorboard_dir}")


@app.command()
@friendly
def recipes():
    """List the named recipes (`pipeline train --recipe NAME`), one line each."""
    from pipeline.recipe import named_recipes, recipe_summary

    for name, path in named_recipes().items():
        console.print(f"[bold]{name:<10}[/] {recipe_summary(path)}", highlight=False)
    console.print("Show one with `cat` on its file: " + str(next(iter(named_recipes().values())).parent), highlight=False)


def _print_cv(cv: dict, run_dir: Path) -> None:
    table = Table(title=f"cross-validation of {cv['run']}")
    for col in ("fold", "n", "accuracy", "log-loss", "ROC-AUC", "best epoch"):
        table.add_column(col, justify="right")
    rows = [(k, v) for k, v in cv["folds"].items()] + [("all", cv["overall"])]
    for k, v in rows:
        auc = "-" if v.get("roc_auc") is None else f"{v['roc_auc']:.4f}"
        table.add_row(str(k), str(v["n"]), f"{v['accuracy']:.4f}", f"{v['log_loss']:.4f}", auc,
                      str(v.get("best_epoch", "")))
    console.print(table)
    if "seconds" in cv:
        console.print(f"took {cv['seconds']:.0f} s; run folder: {run_dir}")


# ---- predict / validate / score --------------------------------------------------------------
@app.command()
@friendly
def predict(
    run: Annotated[Optional[list[Path]], typer.Option("--run", help="Run folder or name (repeatable; "
                                                      "default: the latest run).")] = None,
    test: Annotated[Path, typer.Option(help="The test catalogue (id,path).")] = Path("data/test.csv"),
    tta: Annotated[Tta, typer.Option(help="Test-time augmentation, averaged in probability space.")] = Tta.hflip,
    ensemble: Annotated[EnsembleMethod, typer.Option(help="How to blend several runs: weights fitted on "
                                                     "out-of-fold log-loss, or a plain mean.")] = EnsembleMethod.fit,
    format: Annotated[Fmt, typer.Option("--format", help="course (猫狗大战: id,label 0/1), kaggle (Dogs vs. Cats: "
                                        "0/1), redux (probabilities, clipped).")] = Fmt.course,
    threshold: Annotated[float, typer.Option(help="P(dog) at or above which label is 1 (0/1 formats).")] = 0.5,
    eps: Annotated[float, typer.Option(help="Clip probabilities to \\[eps, 1-eps] (redux).")] = 0.005,
    calibrate: Annotated[Calibrate, typer.Option(help="temperature: fit one temperature on the blend's out-of-fold "
                                                 "predictions and apply it to the test's (log-loss); auto: for "
                                                 "redux only.")] = Calibrate.auto,
    out: Annotated[Optional[Path], typer.Option(help="Submission path (default: submissions/<runs>-<time>.csv).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
    partial: Annotated[bool, typer.Option("--partial", help="Predict with the finished folds of a run that has "
                                          "not finished every fold (a warning names the missing ones).")] = False,
    device: Annotated[Device, typer.Option(help="auto picks CUDA when present.")] = Device.auto,
    batch_size: Annotated[Optional[int], typer.Option(help="Images per batch.")] = None,
    runs_dir: RunsDir = Path("runs"),
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
):
    """Predict the test set with every fold of each run (and TTA), blend runs, write a validated CSV."""
    from pipeline import stages

    result = stages.predict(runs=run or [], test_csv=test, tta=tta.value, ensemble=ensemble.value,
                            fmt=format.value, threshold=threshold, eps=eps, calibrate=calibrate.value, out=out,
                            force=force, partial=partial, device=device.value, batch_size=batch_size,
                            runs_dir=runs_dir, progress=progress)
    blend = result["blend"]
    if blend is not None and len(blend.runs) > 1:
        table = Table(title=f"out-of-fold scores ({blend.method} blend)")
        for col in ("run", "weight", "accuracy", "log-loss"):
            table.add_column(col, justify="right")
        for name, w in zip(blend.runs, blend.weights):
            s = blend.run_scores[name]
            table.add_row(name, f"{w:.3f}", f"{s['accuracy']:.4f}", f"{s['log_loss']:.4f}")
        table.add_row("blend", "1.000", f"{blend.blend_score['accuracy']:.4f}", f"{blend.blend_score['log_loss']:.4f}")
        console.print(table)
    cal = result["calibration"]
    if cal is not None:
        console.print(f"calibrated: temperature {cal.temperature:.3f}; out-of-fold log-loss "
                      f"{cal.oof_log_loss_before:.4f} -> {cal.oof_log_loss_after:.4f}")
    console.print(f"wrote {result['path']} ({result['rows']} rows, format {format.value}); it passes "
                  f"`pipeline validate`. Upload it to the competition site. Notes: {result['note']}")


@app.command()
@friendly
def validate(
    submission: Annotated[Path, typer.Argument(help="The CSV to check.", exists=True, dir_okay=False)],
    test: Annotated[Path, typer.Option(help="The test catalogue (id,path) the ids must match.")] = Path("data/test.csv"),
    format: Annotated[Fmt, typer.Option("--format", help="Submission format.")] = Fmt.course,
):
    """Check a submission: header, every test id exactly once, integer ids, valid labels, row count.

    Defects the competition's checker tolerates (a byte-order mark on Kaggle, CRLF line ends) are
    printed as warnings and do not make the file invalid.
    """
    from pipeline.submission import check_submission, read_test_ids

    result = check_submission(submission, read_test_ids(test), format.value)
    for w in result.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(w)}", highlight=False)
    if result.problems:
        err_console.print(f"[bold red]invalid:[/] {escape(str(submission))}: {len(result.problems)} problem(s)",
                          highlight=False)
        for p in result.problems:
            err_console.print(f"  - {escape(p)}", highlight=False)
        raise typer.Exit(1)
    warned = f" with {len(result.warnings)} warning(s)" if result.warnings else ""
    console.print(f"valid: {escape(str(submission))} ({format.value} format){warned}")


@app.command("score")
@friendly
def score_cmd(
    submission: Annotated[Path, typer.Argument(help="The submission CSV.", exists=True, dir_okay=False)],
    solution: Annotated[Path, typer.Argument(help="id,label with the true labels.", exists=True, dir_okay=False)],
):
    """Accuracy (and log-loss for a probability file) against known labels."""
    from pipeline.submission import score_submission

    s = score_submission(submission, solution)
    ll = "" if s.get("log_loss") is None else f", log-loss {s['log_loss']:.4f}"
    console.print(f"{submission}: accuracy {s['accuracy']:.4f} on {s['n']} images{ll}")


class SubmitSource(str, Enum):
    kaggle = "kaggle"
    kaggle_redux = "kaggle-redux"
    course = "course"


@app.command()
@friendly
def submit(
    file: Annotated[Path, typer.Argument(help="The submission CSV (from `pipeline predict`).", dir_okay=False)],
    source: Annotated[SubmitSource, typer.Option(help="kaggle (Dogs vs. Cats, 0/1), kaggle-redux (probabilities) "
                                                 "or course (猫狗大战, uploaded in a browser); the file is "
                                                 "validated in that competition's format.")],
    message: Annotated[Optional[str], typer.Option("--message", "-m", help="Description on Kaggle \\[default: the "
                                                   "file's name and the runs from its JSON note].")] = None,
    test: Annotated[Path, typer.Option(help="The test catalogue (id,path) the ids must match.")] = Path("data/test.csv"),
    log: Annotated[Path, typer.Option(help="The log that gets one row per submission.")] = Path("submissions/log.csv"),
):
    """Validate a submission and send it with the official kaggle CLI (or, for the course, print what to upload); log it."""
    from pipeline.submit import submit as send

    done = send(file, source.value, test_csv=test, message=message, log_path=log)
    for w in done.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(w)}", highlight=False)
    facts = f"{done.rows} rows, {done.format} format, sha256 {done.sha256}"
    if done.status == "validated":
        console.print(f"valid: {escape(str(done.file.resolve()))} ({facts})", highlight=False)
        where = done.page or "the course competition's submission page (on the course site)"
        console.print(f"upload it by hand on {escape(where)}", highlight=False)
    else:
        console.print(f"sent: {escape(str(done.file))} ({facts}) to {escape(done.source)} with the message "
                      f"{escape(repr(done.message))}", highlight=False)
        if done.answer:
            console.print(escape(done.answer), highlight=False)
        if done.listing and done.latest is None:
            console.print(escape(done.listing), highlight=False)  # no table to read: show it all
        elif done.latest is not None:
            console.print("latest submission: " + escape(", ".join(f"{k} {v}" for k, v in done.latest.items() if v)),
                          highlight=False)
    console.print(f"logged in {escape(str(done.log))}", highlight=False)


# ---- reports ---------------------------------------------------------------------------------
@app.command()
@friendly
def report(
    run: Annotated[Optional[list[Path]], typer.Argument(help="Run folder or name (default: the latest run); with "
                                                        "--compare, two or more.")] = None,
    compare: Annotated[bool, typer.Option("--compare", help="One page comparing the runs: CV scores side by side, "
                                          "fold by fold, out-of-fold correlation and the fitted blend.")] = False,
    out: Annotated[Optional[Path], typer.Option(help="With --compare: the HTML file to write "
                                                "\\[default: <runs-dir>/compare-<names>.html].")] = None,
    runs_dir: RunsDir = Path("runs"),
):
    """Write PNG plots and one self-contained HTML page for a run, or (--compare) one page comparing runs."""
    from pipeline.report import build_comparison, build_report, comparison_path
    from pipeline.rundir import find_run

    names = [str(r) for r in run or []]
    if compare:
        runs = [find_run(runs_dir, name) for name in names]
        if len(runs) < 2:
            raise typer.BadParameter("--compare takes two or more runs, e.g. `pipeline report --compare A B`.")
        path = build_comparison([r.path for r in runs], out or comparison_path(runs_dir, [r.name for r in runs]))
        console.print(f"comparison: {escape(str(path))}")
        return
    if len(names) > 1 or out is not None:
        raise typer.BadParameter("One run at a time (its page goes to its report/ folder); to put several on one "
                                 "page, or to choose the file, add --compare.")
    console.print(f"report: {escape(str(build_report(find_run(runs_dir, names[0] if names else None).path)))}")


class RunSort(str, Enum):
    logloss = "logloss"
    accuracy = "accuracy"
    auc = "auc"
    time = "time"
    created = "created"
    name = "name"


RUN_HEADERS = {"img_size": "size", "log_loss": "log-loss", "roc_auc": "ROC-AUC", "seconds": "time",
               "test_probs": "test preds"}


@app.command()
@friendly
def runs(
    runs_dir: RunsDir = Path("runs"),
    sort: Annotated[RunSort, typer.Option(help="logloss (lowest first), accuracy, auc (highest first), time "
                                          "(shortest training first), created (newest first) or name; "
                                          "unfinished runs come last for the scores and time.")] = RunSort.logloss,
):
    """List runs: arch, recipe, size, folds finished, CV accuracy, log-loss, ROC-AUC, training time, test predictions."""
    from pipeline.report import list_runs

    df = list_runs(runs_dir, sort.value)
    if df.empty:
        console.print(f"no runs in {runs_dir}")
        return
    table = Table()
    for col in df.columns:
        table.add_column(RUN_HEADERS.get(col, col), justify="left" if col in ("run", "arch", "recipe") else "right")
    for row in df.itertuples(index=False):
        table.add_row(*[_run_cell(col, v) for col, v in zip(df.columns, row)])
    # piped (not a terminal): the table at its natural width, one line per run, for grep and files
    (console if console.is_terminal else Console(file=console.file, width=1000)).print(table)


def _duration(seconds: float) -> str:
    """``42 s``, ``12.5 min`` or ``3.2 h``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _run_cell(column: str, value) -> str:
    """One cell of the runs table: scores with four decimals, counts as integers, ``-`` where there is none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"  # an unfinished run has no scores; a run without config.json has no settings
    if column in ("accuracy", "log_loss", "roc_auc"):
        return f"{value:.4f}"
    if column == "seconds":
        return _duration(value)
    if column == "test_probs":
        return "yes" if value else "no"
    if column == "created":
        return escape(str(value).replace("T", " ")[:16])  # 2026-11-23 17:26
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # a column holding a missing value is float: 64.0 px is 64
    return escape(str(value))


@app.command()
@friendly
def demo(
    workdir: Annotated[Path, typer.Option(help="Folder for the demo's data, runs and submission.")] = Path("demo"),
    epochs: Annotated[int, typer.Option(help="Epochs per fold.")] = 20,
    folds: Annotated[int, typer.Option(help="Number of folds.")] = 3,
):
    """The whole workflow on the bundled real sample, offline, in a few minutes on a laptop CPU."""
    from pipeline import stages

    stages.demo(workdir, epochs=epochs, n_folds=folds, console=console)


@app.command()
@friendly
def doctor(data_dir: DataDir = Path("data"), runs_dir: RunsDir = Path("runs")):
    """Versions, CUDA and devices, bf16 support, free disk, where data and runs are: paste it into a bug report."""
    from pipeline import stages

    for key, value in stages.doctor(data_dir, runs_dir).items():
        console.print(f"{key:>16}: {value}", highlight=False)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
