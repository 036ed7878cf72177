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
from typer import Option

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
from pipeline.cli.app import (
    OUTPUT,
    RECIPE,
    SETTINGS,
    STAGE_TRAIN,
    choice,
    command,
    console,
    default_text,
    friendly,
    given,
)
from pipeline.compute.settings import RunSettings
from pipeline.recipe import Recipe

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


def _choices(values: tuple[str, ...]) -> str:
    """``a, b or c``: a choice list in a help text (the metavar then stays short)."""
    return ", ".join(values[:-1]) + f" or {values[-1]}" if len(values) > 1 else values[0]


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


# The command's signature is long because each option is one line of --help; its body only gathers them. Each
# option names its panel (pipeline.cli.app: RECIPE, SETTINGS, OUTPUT); the README says more about each.
@command(STAGE_TRAIN)
@friendly
def train(
    recipe: Annotated[str | None, Option(help="A named recipe (`pipeline recipes`) or a TOML file; the options "
                                         "below override it.", rich_help_panel=RECIPE)] = None,
    arch: Annotated[str | None, Option(help=f"lenet, resnet34, resnet50 or any timm model {_r('arch')}",
                                       rich_help_panel=RECIPE)] = None,
    epochs: Annotated[int | None, Option(help=f"Epochs per fold; early stopping may end sooner {_r('epochs')}",
                                         rich_help_panel=RECIPE)] = None,
    img_size: Annotated[int | None, Option(help="Input side in pixels \\[default: 64 for LeNet, else the model's "
                                           "own, usually 224]", rich_help_panel=RECIPE)] = None,
    batch_size: Annotated[int | None, Option(help=f"Images per step, all processes together; 128-256 on a GPU "
                                             f"{_r('batch_size')}", rich_help_panel=RECIPE)] = None,
    lr: Annotated[float | None, Option(help="Peak learning rate \\[default: 1e-3, or 3e-4 from weights]",
                                       rich_help_panel=RECIPE)] = None,
    weight_decay: Annotated[float | None, Option(help=f"Weight decay (not on biases and norms) "
                                                 f"{_r('weight_decay')}", rich_help_panel=RECIPE)] = None,
    optimizer: Annotated[Optimizer | None, Option(help=f"sgd: momentum 0.9, Nesterov {_r('optimizer')}",
                                                  rich_help_panel=RECIPE)] = None,
    schedule: Annotated[Schedule | None, Option(help=f"Learning-rate schedule after the warm-up {_r('schedule')}",
                                                rich_help_panel=RECIPE)] = None,
    warmup_epochs: Annotated[float | None, Option(help=f"Linear warm-up {_r('warmup_epochs')}",
                                                  rich_help_panel=RECIPE)] = None,
    patience: Annotated[int | None, Option(help=f"Stop a fold after this many epochs without a better validation "
                                           f"loss; 0: never {_r('patience')}", rich_help_panel=RECIPE)] = None,
    augment: Annotated[Augment | None, Option(metavar="PRESET", help=f"{_choices(AUGMENT_PRESETS)} "
                                              f"{_r('augment')}", rich_help_panel=RECIPE)] = None,
    sizes: Annotated[str | None, Option(help=f"Progressive resizing: sizes before --img-size, e.g. 96,128 "
                                        f"{_r('sizes')}", rich_help_panel=RECIPE)] = None,
    pretrained: Annotated[bool | None, Option("--pretrained/--no-pretrained", help="Start from timm's ImageNet "
                                              "weights (needs the network).", rich_help_panel=RECIPE)] = None,
    weights: Annotated[Path | None, Option(help="Start from a local weights file (offline).", exists=True,
                                           dir_okay=False, rich_help_panel=RECIPE)] = None,
    weights_partial: Annotated[bool | None, Option("--weights-partial", help="Load only the tensors of --weights "
                                                   "that fit (another variant's); the rest start fresh.",
                                                   rich_help_panel=RECIPE)] = None,
    layer_decay: Annotated[float | None, Option(help=f"Below 1: each earlier block learns at this fraction of "
                                                f"the next one's rate {_r('layer_decay')}",
                                                rich_help_panel=RECIPE)] = None,
    freeze_bn: Annotated[bool | None, Option("--freeze-bn/--no-freeze-bn", help=f"Keep BatchNorm's pretrained "
                                             f"statistics {_r('freeze_bn')}", rich_help_panel=RECIPE)] = None,
    drop_rate: Annotated[float | None, Option(help=f"Dropout before a timm model's classifier {_r('drop_rate')}",
                                              rich_help_panel=RECIPE)] = None,
    mixup: Annotated[float | None, Option(help=f"Mixup alpha; 0: off {_r('mixup')}", rich_help_panel=RECIPE)] = None,
    cutmix: Annotated[float | None, Option(help=f"CutMix alpha; 0: off {_r('cutmix')}",
                                           rich_help_panel=RECIPE)] = None,
    mix_prob: Annotated[float | None, Option(help=f"Share of batches mixed {_r('mix_prob')}",
                                             rich_help_panel=RECIPE)] = None,
    label_smoothing: Annotated[float | None, Option(help=f"Targets eps/2 and 1-eps/2 {_r('label_smoothing')}",
                                                    rich_help_panel=RECIPE)] = None,
    ema: Annotated[bool | None, Option("--ema/--no-ema", help=f"Keep a moving average of the weights; used when "
                                       f"it validates better {_r('ema')}", rich_help_panel=RECIPE)] = None,
    ema_decay: Annotated[float | None, Option(help=f"The EMA's decay {_r('ema_decay')}",
                                              rich_help_panel=RECIPE)] = None,
    average: Annotated[Average | None, Option(help=f"Weight averaging in each fold: swa (the last epochs) or soup "
                                              f"(the best ones) {_r('average')}", rich_help_panel=RECIPE)] = None,
    average_epochs: Annotated[int | None, Option(help=f"Epochs --average may take {_r('average_epochs')}",
                                                 rich_help_panel=RECIPE)] = None,
    seed: Annotated[int | None, Option(help=f"Seed of weights, order and augmentation {_r('seed')}",
                                       rich_help_panel=RECIPE)] = None,
    pseudo: Annotated[str | None, Option(metavar="FROM", help="Pseudo-labels: train again with the test photos a "
                                         "submission (its .json or .csv) or a run predicts confidently.",
                                         rich_help_panel=RECIPE)] = None,
    pseudo_threshold: Annotated[float, Option(help="The probability a test photo needs for --pseudo.",
                                              rich_help_panel=RECIPE)] = PSEUDO_THRESHOLD,
    folds: Annotated[str | None, Option(help="Folds to train: 'all' or e.g. 0,1,2 \\[default: all]",
                                        rich_help_panel=SETTINGS)] = None,
    time_limit: Annotated[str | None, Option(help="Budget for the whole run (90s, 30m, 2h, 1h30m); lowers "
                                             "--epochs to fit \\[default: none]", rich_help_panel=SETTINGS)] = None,
    device: Annotated[Device | None, Option(help=f"auto picks CUDA when present {_s('device')}",
                                            rich_help_panel=SETTINGS)] = None,
    precision: Annotated[Precision | None, Option(help=f"auto: bf16 or fp16 on CUDA, fp32 on CPU "
                                                  f"{_s('precision')}", rich_help_panel=SETTINGS)] = None,
    workers: Annotated[int | None, Option(help="Loader processes per training process \\[default: 2 on CPU; on "
                                          "CUDA the cores per process - 1, at most 8]",
                                     rich_help_panel=SETTINGS)] = None,
    threads: Annotated[int | None, Option(help="CPU threads per training process \\[default: torch's; with "
                                          "--nproc N, the cores / N]", rich_help_panel=SETTINGS)] = None,
    cache: Annotated[bool | None, Option("--cache/--no-cache", help=f"Read photos from the decoded-image cache "
                                         f"{_s('cache')}", rich_help_panel=SETTINGS)] = None,
    channels_last: Annotated[bool | None, Option("--channels-last/--no-channels-last", help=f"channels_last memory "
                                                 f"for conv nets {_s('channels_last')}",
                                                 rich_help_panel=SETTINGS)] = None,
    compile: Annotated[bool | None, Option("--compile/--no-compile", help=f"torch.compile the model (slow start) "
                                           f"{_s('compile')}", rich_help_panel=SETTINGS)] = None,
    deterministic: Annotated[bool | None, Option("--deterministic/--no-deterministic", help=f"On a GPU: "
                                                 f"deterministic kernels, no cuDNN autotuning (slower) "
                                                 f"{_s('deterministic')}", rich_help_panel=SETTINGS)] = None,
    nproc: Annotated[str, Option(metavar="N|auto", help="Training processes on this machine: auto (one per "
                                 "visible GPU, one on the CPU) or a number.", rich_help_panel=SETTINGS)] = "auto",
    parallel: Annotated[Parallel | None, Option(help="With several processes: each trains its own folds, or ddp: "
                                                "all train each fold \\[default: folds, else ddp when there are "
                                                "fewer folds than processes]", rich_help_panel=SETTINGS)] = None,
    max_restarts: Annotated[int, Option(help="With --nproc: restart failed workers this often; they continue "
                                        "from their last finished epochs.", rich_help_panel=SETTINGS)] = 0,
    data_dir: Annotated[Path | None, Option(help=f"Where the catalogue, folds and cache live {_s('data_dir')}",
                                            rich_help_panel=SETTINGS)] = None,
    run_name: Annotated[str | None, Option(help="Run folder name \\[default: <arch>-<time>]",
                                           rich_help_panel=OUTPUT)] = None,
    resume: Annotated[bool, Option("--resume", help="Continue --run-name (or the latest run) where it stopped.",
                                   rich_help_panel=OUTPUT)] = False,
    runs_dir: Annotated[Path | None, Option(help=f"Where run folders live {_s('runs_dir')}",
                                            rich_help_panel=OUTPUT)] = None,
    tracker: Annotated[Tracker | None, Option(metavar="NAME", help=f"Live curves: {_choices(TRACKERS)}; auto: "
                                              f"TensorBoard when installed {_s('tracker')}",
                                              rich_help_panel=OUTPUT)] = None,
    progress: Annotated[bool | None, Option("--progress/--no-progress", help=f"Show progress and the estimate "
                                            f"{_s('progress')}", rich_help_panel=OUTPUT)] = None,
):
    """k-fold cross-validation: a model per fold and the CV score.

    Writes a run folder: a checkpoint per fold, the out-of-fold predictions, cv.json and a report.

    The defaults shown are the built-in recipe's (lenet); --recipe NAME sets its own (`pipeline recipes NAME`), and
    the options given override it.

    On a GPU start from --recipe finetune --img-size 224 --batch-size 128 --workers 8 --epochs 8.
    """
    import time

    started = time.time()
    from pipeline.compute.runtime import resolve_nproc, visible_gpus
    from pipeline.report import build_report
    from pipeline.rundir import RunDir
    from pipeline.train.budget import parse_duration
    from pipeline.train.launch import launch
    from pipeline.train.request import TrainRequest, requested_settings
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


@command(STAGE_TRAIN)
@friendly
def recipes(name: Annotated[str | None, typer.Argument(help="A recipe to print whole (its TOML file).")] = None):
    """List the named recipes (train --recipe NAME), or print one."""
    from pipeline.recipe import named_recipes, recipe_file, recipe_summary

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
    usual = ("accuracy", "log_loss", "roc_auc", "f1_macro", "f1_micro")
    own = [metric] if metric and metric not in usual else []  # another kind's metric (qwk, rmse, ...) first
    for col in ("fold", "n", *own, "accuracy", "log-loss", "ROC-AUC", *(["macro F1"] if f1 else []), "best epoch"):
        table.add_column(col, justify="right")
    rows = [*cv["folds"].items(), ("all", cv["overall"])]
    for k, v in rows:
        cells = ["-" if v.get(key) is None else f"{v[key]:.4f}"
                 for key in (*own, "accuracy", "log_loss", "roc_auc", *(["f1_macro"] if f1 else []))]
        best = f"{v.get('best_epoch', '')}" + (f" ({v['weights']})" if "weights" in v else "")
        table.add_row(str(k), str(v["n"]), *cells, best)
    console.print(table)
    if "seconds" in cv:
        console.print(f"took {cv['seconds']:.0f} s; run folder: {run_dir}")
