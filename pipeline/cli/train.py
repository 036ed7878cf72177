"""``pipeline train`` and ``pipeline recipes``.

Every choice comes from :mod:`pipeline.choices` (which the modules check against) and every default text from
the :class:`Recipe` and :class:`RunSettings` dataclasses, so the help cannot drift from what runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from pipeline.choices import (
    AUGMENT_PRESETS,
    AVERAGES,
    DEVICES,
    OPTIMIZERS,
    PARALLEL,
    PRECISIONS,
    PSEUDO_THRESHOLD,
    SCHEDULES,
    TRACKERS,
)
from pipeline.cli.app import app, choice, console, default_text, friendly, given
from pipeline.train.recipe import Recipe
from pipeline.train.settings import RunSettings

Optimizer = choice("Optimizer", OPTIMIZERS)
Schedule = choice("Schedule", SCHEDULES)
Augment = choice("Augment", AUGMENT_PRESETS)
Average = choice("Average", AVERAGES)
Device = choice("Device", DEVICES)
Precision = choice("Precision", PRECISIONS)
Tracker = choice("Tracker", TRACKERS)
Parallel = choice("Parallel", PARALLEL)


def _r(field: str) -> str:
    return default_text(Recipe, field)


def _s(field: str) -> str:
    return default_text(RunSettings, field)


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


# The command's signature is long because each option is one line of --help; its body only gathers them.
@app.command()
@friendly
def train(
    recipe: Annotated[str | None, typer.Option(help="A named recipe (see `pipeline recipes`) or a TOML file; "
                                                  "the options below override it.")] = None,
    arch: Annotated[str | None, typer.Option(help=f"lenet, resnet34, resnet50 or any timm model name "
                                                f"{_r('arch')}")] = None,
    folds: Annotated[str | None, typer.Option(help="Folds to train: 'all' or e.g. 0,1,2 \\[default: all]")] = None,
    epochs: Annotated[int | None, typer.Option(help=f"Epochs per fold; early stopping may end sooner "
                                                  f"{_r('epochs')}")] = None,
    img_size: Annotated[int | None, typer.Option(help="Input side in pixels \\[default: 64 for LeNet, the "
                                                    "model's own, usually 224, otherwise]")] = None,
    batch_size: Annotated[int | None, typer.Option(help=f"Images per step, over all processes together; on a "
                                                      f"GPU raise to 128-256 {_r('batch_size')}")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate \\[default: 1e-3, or 3e-4 from "
                                                  "weights]")] = None,
    weight_decay: Annotated[float | None, typer.Option(help=f"AdamW/SGD weight decay (not on biases and norms) "
                                                          f"{_r('weight_decay')}")] = None,
    optimizer: Annotated[Optimizer | None, typer.Option(help=f"sgd: momentum 0.9, Nesterov "
                                                           f"{_r('optimizer')}")] = None,
    schedule: Annotated[Schedule | None, typer.Option(help=f"cosine (with warm-up) or onecycle "
                                                         f"{_r('schedule')}")] = None,
    warmup_epochs: Annotated[float | None, typer.Option(help=f"Linear warm-up before the cosine decay "
                                                           f"{_r('warmup_epochs')}")] = None,
    patience: Annotated[int | None, typer.Option(help=f"Stop a fold after this many epochs without a better "
                                                    f"validation loss; 0: never {_r('patience')}")] = None,
    augment: Annotated[Augment | None, typer.Option(help=f"Augmentation preset {_r('augment')}")] = None,
    drop_rate: Annotated[float | None, typer.Option(help=f"Dropout before the classifier of timm models "
                                                       f"{_r('drop_rate')}")] = None,
    pretrained: Annotated[bool | None, typer.Option("--pretrained/--no-pretrained",
                                                       help="Start from timm's ImageNet weights (needs the "
                                                       "network).")] = None,
    weights: Annotated[Path | None, typer.Option(help="Start from a local weights file (offline route).",
                                                    exists=True, dir_okay=False)] = None,
    weights_partial: Annotated[bool | None, typer.Option("--weights-partial", help="Load only the tensors of "
                                                         "--weights that fit (another variant's); the rest start "
                                                         "fresh.")] = None,
    seed: Annotated[int | None, typer.Option(help=f"Seed for weights, order and augmentation "
                                                f"{_r('seed')}")] = None,
    layer_decay: Annotated[float | None, typer.Option(help=f"Below 1: each earlier block of a timm model learns "
                                                         f"at this fraction of the next one's rate "
                                                         f"{_r('layer_decay')}")] = None,
    freeze_bn: Annotated[bool | None, typer.Option("--freeze-bn/--no-freeze-bn", help=f"Keep BatchNorm's "
                                                      f"pretrained statistics (fine-tuning, small batches) "
                                                      f"{_r('freeze_bn')}")] = None,
    mixup: Annotated[float | None, typer.Option(help=f"Mixup alpha; 0: off {_r('mixup')}")] = None,
    cutmix: Annotated[float | None, typer.Option(help=f"CutMix alpha; 0: off {_r('cutmix')}")] = None,
    mix_prob: Annotated[float | None, typer.Option(help=f"Share of batches mixed {_r('mix_prob')}")] = None,
    label_smoothing: Annotated[float | None, typer.Option(help=f"Targets eps/2 and 1-eps/2 "
                                                             f"{_r('label_smoothing')}")] = None,
    ema: Annotated[bool | None, typer.Option("--ema/--no-ema", help=f"Keep a moving average of the weights; it "
                                                f"is used when it validates better {_r('ema')}")] = None,
    ema_decay: Annotated[float | None, typer.Option(help=f"The EMA's decay after its warm-up "
                                                       f"{_r('ema_decay')}")] = None,
    average: Annotated[Average | None, typer.Option(help=f"Weight averaging along each fold: swa (the last "
                                                        f"epochs), soup (the best epochs, added while it validates "
                                                        f"better); best.pt takes it only when it validates better "
                                                        f"{_r('average')}")] = None,
    average_epochs: Annotated[int | None, typer.Option(help=f"How many epochs' weights --average may take "
                                                            f"{_r('average_epochs')}")] = None,
    pseudo: Annotated[str | None, typer.Option(metavar="FROM", help="Pseudo-labels: the test photos that a "
                                               "submission's blend (its JSON note, or the CSV beside it) or a run "
                                               "predicts confidently join every training fold with soft labels "
                                               "(never a validation fold); a second training.")] = None,
    pseudo_threshold: Annotated[float, typer.Option(help="The probability of its predicted class a test photo "
                                                         "needs for --pseudo.")] = PSEUDO_THRESHOLD,
    sizes: Annotated[str | None, typer.Option(help=f"Progressive resizing: training sizes in equal phases before "
                                                 f"--img-size, e.g. 96,128 {_r('sizes')}")] = None,
    device: Annotated[Device | None, typer.Option(help=f"auto picks CUDA when present {_s('device')}")] = None,
    precision: Annotated[Precision | None, typer.Option(help=f"auto: bf16 (or fp16 + loss scaling) on CUDA, "
                                                           f"fp32 on CPU {_s('precision')}")] = None,
    workers: Annotated[int | None, typer.Option(help="Loader processes per training process \\[default: 2 on "
                                                   "CPU; on CUDA the cores per process - 1, at most 8]")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads per training process \\[default: torch's; "
                                                   "with --nproc N, the cores / N]")] = None,
    cache: Annotated[bool | None, typer.Option("--cache/--no-cache", help=f"Read photos from the decoded-image "
                                                  f"cache, built once per size {_s('cache')}")] = None,
    channels_last: Annotated[bool | None, typer.Option("--channels-last/--no-channels-last",
                                                          help=f"channels_last memory for conv nets "
                                                          f"{_s('channels_last')}")] = None,
    tracker: Annotated[Tracker | None, typer.Option(help=f"Live curves: tensorboard (runs/<run>/tensorboard), "
                                                       f"mlflow (mlruns/ beside runs/, or MLFLOW_TRACKING_URI), none; "
                                                       f"auto: TensorBoard when installed {_s('tracker')}")] = None,
    compile: Annotated[bool | None, typer.Option("--compile/--no-compile", help=f"torch.compile the model "
                                                    f"(slow start, faster steps on a GPU) {_s('compile')}")] = None,
    deterministic: Annotated[bool | None, typer.Option("--deterministic/--no-deterministic", help=f"On a GPU: "
                                                          f"deterministic kernels, no cuDNN autotuning, so a run "
                                                          f"repeats bit for bit on the same GPU (slower) "
                                                          f"{_s('deterministic')}")] = None,
    time_limit: Annotated[str | None, typer.Option(help="A budget for the whole run, every fold: 90s, 30m, 2h, "
                                                   "1h30m. Epochs are chosen up front from timed batches so that "
                                                   "each fold's schedule completes; it only lowers --epochs "
                                                   "\\[default: none]")] = None,
    nproc: Annotated[str, typer.Option(help="Training processes on this machine: auto (one per visible GPU, one "
                                       "on the CPU) or a number; started through torch's elastic launcher, as "
                                       "torchrun would.")] = "auto",
    parallel: Annotated[Parallel | None, typer.Option(help="With several processes: folds (each process "
                                                         "trains its own folds) or ddp (all train each fold "
                                                         "together) \\[default: folds when there are at least as "
                                                         "many folds as processes, else ddp]")] = None,
    max_restarts: Annotated[int, typer.Option(help="With --nproc: start the workers again this often after a "
                                              "failure; the run continues from its last finished epochs.")] = 0,
    run_name: Annotated[str | None, typer.Option(help="Run folder name \\[default: <arch>-<time>]")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue --run-name (or the latest run): skip "
                                         "finished folds, continue the interrupted one.")] = False,
    data_dir: Annotated[Path | None, typer.Option(help=f"Where the catalogue, folds and cache live "
                                                     f"{_s('data_dir')}")] = None,
    runs_dir: Annotated[Path | None, typer.Option(help=f"Where run folders live {_s('runs_dir')}")] = None,
    progress: Annotated[bool | None, typer.Option("--progress/--no-progress",
                                                     help=f"Show progress bars {_s('progress')}")] = None,
):
    """k-fold cross-validation: one checkpoint per fold, out-of-fold predictions and the CV score.

    The defaults shown are the built-in recipe's (lenet); --recipe NAME sets its own (see `pipeline recipes
    NAME`), and the options given override it.

    On a GPU start from --recipe finetune --img-size 224 --batch-size 128 --workers 8 --epochs 8 (mixed
    precision and channels_last are on by default); several GPUs: --nproc N (or torchrun). --time-limit 30m
    fits the run into a budget.
    """
    import time

    started = time.time()
    from pipeline.report import build_report
    from pipeline.rundir import RunDir
    from pipeline.train.budget import parse_duration
    from pipeline.train.launch import launch
    from pipeline.train.request import TrainRequest, requested_settings
    from pipeline.train.runtime import resolve_nproc, visible_gpus
    from pipeline.train.session import train as run_training

    request = TrainRequest(
        recipe=recipe, resume=resume, started=started, pseudo=pseudo, pseudo_threshold=pseudo_threshold,
        overrides=given(arch=arch, epochs=epochs, img_size=img_size, batch_size=batch_size, lr=lr,
                        weight_decay=weight_decay, optimizer=optimizer, schedule=schedule,
                        warmup_epochs=warmup_epochs, patience=patience, augment=augment, drop_rate=drop_rate,
                        pretrained=pretrained, weights=weights, weights_partial=weights_partial, seed=seed,
                        layer_decay=layer_decay,
                        freeze_bn=freeze_bn, mixup=mixup, cutmix=cutmix, mix_prob=mix_prob,
                        label_smoothing=label_smoothing, ema=ema, ema_decay=ema_decay, average=average,
                        average_epochs=average_epochs,
                        sizes=_parse_ints(sizes, "--sizes") if sizes is not None else None),
        settings=given(device=device, precision=precision, workers=workers, threads=threads, cache=cache,
                       channels_last=channels_last, compile=compile, deterministic=deterministic, tracker=tracker,
                       parallel=parallel,
                       folds=_parse_folds(folds) if folds is not None else None, data_dir=data_dir,
                       runs_dir=runs_dir, run_name=run_name, progress=progress,
                       time_limit=parse_duration(time_limit) if time_limit is not None else None))
    processes = resolve_nproc(nproc, requested_settings(request).device, visible_gpus())
    cv = launch(request, processes, max_restarts, report=build_report) if processes > 1 or max_restarts else \
        run_training(request, report=build_report)
    if int(os.environ.get("RANK", "0")) != 0:
        return  # under torchrun the main process reports
    run = RunDir(Path(runs_dir or RunSettings.runs_dir) / cv["run"])
    _print_cv(cv, run.path)
    if (run.report_dir / "report.html").exists():
        console.print(f"report: {run.report_dir / 'report.html'}")
    if run.tensorboard_dir.exists():
        console.print(f"curves: tensorboard --logdir {run.tensorboard_dir}")


@app.command()
@friendly
def recipes(name: Annotated[str | None, typer.Argument(help="A recipe to print whole (its TOML file).")] = None):
    """List the named recipes (`pipeline train --recipe NAME`), one line each; with NAME, print that recipe."""
    from pipeline.train.recipe import named_recipes, recipe_file, recipe_summary

    if name is not None:
        path = recipe_file(name)
        console.print(f"# {path}\n{path.read_text(encoding='utf-8').rstrip()}", highlight=False, markup=False)
        return
    for recipe_name, path in named_recipes().items():
        console.print(f"[bold]{recipe_name:<10}[/] {recipe_summary(path)}", highlight=False)
    console.print("Print one whole with `pipeline recipes NAME`; copy it to start your own (--recipe FILE).",
                  highlight=False)


def _print_cv(cv: dict, run_dir: Path) -> None:
    metric = cv.get("metric")
    title = f"cross-validation of {cv['run']} (out-of-fold, without TTA)"
    table = Table(title=title + (f"; the competition scores {metric}" if metric else ""))
    f1 = any(v.get("f1_macro") is not None for v in [cv["overall"], *cv["folds"].values()])
    for col in ("fold", "n", "accuracy", "log-loss", "ROC-AUC", *(["macro F1"] if f1 else []), "best epoch"):
        table.add_column(col, justify="right")
    rows = [*cv["folds"].items(), ("all", cv["overall"])]
    for k, v in rows:
        cells = ["-" if v.get(key) is None else f"{v[key]:.4f}"
                 for key in ("accuracy", "log_loss", "roc_auc", *(["f1_macro"] if f1 else []))]
        best = f"{v.get('best_epoch', '')}" + (f" ({v['weights']})" if "weights" in v else "")
        table.add_row(str(k), str(v["n"]), *cells, best)
    console.print(table)
    if "seconds" in cv:
        console.print(f"took {cv['seconds']:.0f} s; run folder: {run_dir}")
