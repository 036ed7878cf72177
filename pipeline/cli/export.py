"""``pipeline export``: runs as a Kaggle dataset and an offline inference notebook (code competitions)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from rich.markup import escape
from typer import Option

from pipeline.cli.app import OUTPUT, PREDICTION, SETTINGS, STAGE_PREDICT, command, console, friendly
from pipeline.cli.predict import Calibrate, EnsembleMethod


@command(STAGE_PREDICT)
@friendly
def export(
    run: Annotated[list[Path], Option("--run", metavar="RUN", help="Run folder or name (repeatable).",
                                      rich_help_panel=PREDICTION)],
    tta: Annotated[str, Option(metavar="POLICY", help="The notebook's `pipeline predict --tta`.",
                               rich_help_panel=PREDICTION)] = "auto",
    ensemble: Annotated[EnsembleMethod, Option(help="The notebook's `pipeline predict --ensemble`.",
                                               rich_help_panel=PREDICTION)] = EnsembleMethod.fit,
    calibrate: Annotated[Calibrate, Option(metavar="HOW", help="The notebook's `pipeline predict --calibrate`.",
                                           rich_help_panel=PREDICTION)] = Calibrate.auto,
    out: Annotated[Path, Option(help="Gets dataset/ (the bundle) and kernel/ (the notebook).",
                                rich_help_panel=OUTPUT)] = Path("export"),
    force: Annotated[bool, Option("--force", help="Replace an earlier export in --out.",
                                  rich_help_panel=OUTPUT)] = False,
    owner: Annotated[str | None, Option(help="Kaggle user of the dataset and kernel \\[default: your credentials']",
                                        rich_help_panel=SETTINGS)] = None,
    name: Annotated[str | None, Option(help="The dataset's slug \\[default: pipeline-<runs>]",
                                       rich_help_panel=SETTINGS)] = None,
    gpu: Annotated[bool, Option("--gpu", help="Ask Kaggle for a GPU (the notebook uses one when there is one).",
                                rich_help_panel=SETTINGS)] = False,
    push: Annotated[bool, Option("--push", help="Send both with the kaggle CLI and show the kernel's status.",
                                 rich_help_panel=SETTINGS)] = False,
    runs_dir: Annotated[Path, Option(help="Where run folders live.", rich_help_panel=SETTINGS)] = Path("runs"),
):
    """Turn runs into a Kaggle dataset and an offline notebook.

    For code competitions: the dataset holds the runs and the wheels to install offline; the notebook predicts the
    competition's test images with them and writes submission.csv, the file `pipeline predict` writes here.
    """
    from pipeline.export.bundle import export as run_export

    if push:  # no CLI, token or user: one line, before anything is written
        from pipeline.export.push import kaggle_ready

        kaggle_ready(run, runs_dir, owner)
    done = run_export(runs=run, out=out, runs_dir=runs_dir, owner=owner, name=name, gpu=gpu, tta=tta,
                      ensemble=ensemble.value, calibrate=calibrate.value, force=force)
    from pipeline.fileio import human_size

    console.print(f"dataset {escape(done.dataset_id)}: {escape(str(done.dataset_dir))} ({human_size(done.size)}; "
                  f"wheels {escape(', '.join(done.wheels))})", highlight=False)
    console.print(f"notebook {escape(done.kernel_id)}: {escape(str(done.notebook))} (competition "
                  f"{escape(done.competition)}, internet off, {'GPU' if gpu else 'CPU'})", highlight=False)
    if not push:
        console.print(f"send them with `pipeline export ... --push`, or `kaggle datasets create -p "
                      f"{escape(str(done.dataset_dir))} --dir-mode zip` and `kaggle kernels push -p "
                      f"{escape(str(done.kernel_dir))}`", highlight=False)
        return
    from pipeline.export.push import push as send

    sent = send(done)
    console.print(f"dataset {'created' if sent.dataset_action == 'create' else 'versioned'}: "
                  f"{escape(sent.dataset_answer)}", highlight=False)
    console.print(f"kernel pushed: {escape(sent.kernel_answer)}", highlight=False)
    console.print(f"kernel status: {escape(sent.status)}", highlight=False)
