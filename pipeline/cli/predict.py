"""``pipeline predict``, ``validate``, ``score`` and ``submit``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table
from typer import Option

from pipeline.choices import CALIBRATIONS, DEVICES, ENSEMBLE_METHODS
from pipeline.cli.app import (
    OUTPUT,
    PREDICTION,
    SETTINGS,
    STAGE_PREDICT,
    choice,
    command,
    console,
    err_console,
    friendly,
)
from pipeline.data.sources import SOURCES
from pipeline.predict.formats import FORMATS

EnsembleMethod = choice("EnsembleMethod", ENSEMBLE_METHODS)
Fmt = choice("Fmt", tuple(FORMATS))
Calibrate = choice("Calibrate", CALIBRATIONS)
Device = choice("Device", DEVICES)
TestCsv = Annotated[Path, typer.Option(help="The test catalogue (id,path) the ids must match.")]
SubmitSource = choice("SubmitSource", tuple(name for name, s in SOURCES.items() if s.submission_format))


# Each option names its panel (pipeline.cli.app: PREDICTION, OUTPUT, SETTINGS); the README says more about each.
@command(STAGE_PREDICT)
@friendly
def predict(
    run: Annotated[list[Path] | None, Option("--run", metavar="RUN", help="Run folder or name (repeatable) "
                                             "\\[default: the newest finished run]",
                                             rich_help_panel=PREDICTION)] = None,
    tta: Annotated[str, Option(metavar="POLICY", help="Test-time augmentation: auto (the views that help on the "
                               "folds), none, hflip, flips, rot, or views joined by + (e.g. hflip+zoom).",
                               rich_help_panel=PREDICTION)] = "auto",
    ensemble: Annotated[EnsembleMethod, Option(help="Blend runs with weights fitted on out-of-fold log-loss, or a "
                                               "plain mean.", rich_help_panel=PREDICTION)] = EnsembleMethod.fit,
    calibrate: Annotated[Calibrate, Option(metavar="HOW", help="temperature (of the submitted fold mean), pooled "
                                           "or none; auto: temperature where a log-loss scores the probabilities.",
                                           rich_help_panel=PREDICTION)] = Calibrate.auto,
    partial: Annotated[bool, Option("--partial", help="Use the finished folds of an unfinished run.",
                                    rich_help_panel=PREDICTION)] = False,
    format: Annotated[Fmt | None, Option("--format", help="Cats versus dogs: course (猫狗大战, 0/1), kaggle "
                                         "(0/1) or redux (probabilities) \\[default: the competition's]",
                                         rich_help_panel=OUTPUT)] = None,
    threshold: Annotated[float, Option(help="P(dog) at or above which label is 1 (0/1 formats).",
                                       rich_help_panel=OUTPUT)] = 0.5,
    eps: Annotated[float, Option(help="Clip probabilities to \\[eps, 1-eps] (redux).",
                                 rich_help_panel=OUTPUT)] = 0.005,
    out: Annotated[Path | None, Option(help="Submission path \\[default: submissions/<runs>-<time>.csv]",
                                       rich_help_panel=OUTPUT)] = None,
    force: Annotated[bool, Option("--force", help="Overwrite --out if it exists.", rich_help_panel=OUTPUT)] = False,
    progress: Annotated[bool, Option(help="Show progress bars.", rich_help_panel=OUTPUT)] = True,
    test: Annotated[Path, Option(help="The test catalogue (id,path).", rich_help_panel=SETTINGS)
                    ] = Path("data/test.csv"),
    test_dir: Annotated[Path | None, Option(help="Instead of --test: a competition's folder (read, never written; "
                                            "/kaggle/input/<competition>), whose test images are catalogued into "
                                            "--work-dir; the runs are read, never written.",
                                            rich_help_panel=SETTINGS)] = None,
    competition: Annotated[str | None, Option(metavar="NAME|FILE", help="With --test-dir: the competition spec "
                                              "\\[default: the one the run recorded]", rich_help_panel=SETTINGS)
                           ] = None,
    work_dir: Annotated[Path, Option(help="With --test-dir: where the catalogue, the image cache and (without --out) "
                                     "the submission go.", rich_help_panel=SETTINGS)] = Path("work"),
    device: Annotated[Device, Option(help="auto picks CUDA when present.", rich_help_panel=SETTINGS)] = Device.auto,
    batch_size: Annotated[int | None, Option(help="Images per batch.", rich_help_panel=SETTINGS)] = None,
    runs_dir: Annotated[Path, Option(help="Where run folders live.", rich_help_panel=SETTINGS)] = Path("runs"),
):
    """Blend the runs' folds on the test set; write a checked CSV.

    Every fold of each run predicts the test set (with the TTA chosen on the folds); the runs are blended and
    the CSV is written in the competition's format and validated.
    """
    from pipeline.predict.predict import predict as run_predict

    if test_dir is not None:
        test, run = _catalogued(run or [], runs_dir, test_dir, work_dir, competition, tta, device.value, progress)
    result = run_predict(runs=run or [], test_csv=test, tta=tta, ensemble=ensemble.value,
                         fmt=format.value if format else None, threshold=threshold, eps=eps,
                         calibrate=calibrate.value, out=out, force=force, partial=partial, device=device.value,
                         batch_size=batch_size, runs_dir=runs_dir, progress=progress,
                         submissions_dir=work_dir if test_dir is not None else Path("submissions"),
                         save_runs=test_dir is None)
    tta_used = result["tta"]
    for u in result["used"]:
        console.print(f"run {escape(u['run'])} ({u['chosen']}): {_folds_used(u)}, {_tta_words(tta_used)}",
                      highlight=False)
    blend, metric = result["blend"], result["metric"]
    if blend is not None and not result["one_label"]:  # the competition's metric, then what was fitted on it
        rows = [(name, w, blend.run_scores[name]) for name, w in zip(blend.runs, blend.weights, strict=True)]
        shown = "; ".join(f"{name} (weight {w:.3f}) {_value(s, metric)}" for name, w, s in rows) + "; " \
            if len(rows) > 1 else ""
        console.print(f"out-of-fold {metric} ({_tta_words(tta_used)}, as the test set is predicted): {shown}"
                      f"{'blend ' if rows[1:] else ''}{_value(blend.blend_score, metric)}", highlight=False)
        fitted = result["fitted"]
        if fitted is not None:
            said = "fitted" if fitted.applied else "not kept (no better)"
            console.print(f"{fitted.method} {said} on the out-of-fold predictions: {metric} "
                          f"{fitted.oof_metric_before:.4f} -> {fitted.oof_metric_after:.4f}", highlight=False)
    elif blend is not None and len(blend.runs) > 1:
        table = Table(title=f"out-of-fold scores ({blend.method} blend; {_tta_words(tta_used)}, as the test set is "
                            "predicted)")
        for col in ("run", "weight", "accuracy", "log-loss"):
            table.add_column(col, justify="right")
        for name, w in zip(blend.runs, blend.weights, strict=True):
            s = blend.run_scores[name]
            table.add_row(name, f"{w:.3f}", f"{s['accuracy']:.4f}", f"{s['log_loss']:.4f}")
        table.add_row("blend", "1.000", f"{blend.blend_score['accuracy']:.4f}", f"{blend.blend_score['log_loss']:.4f}")
        console.print(table)
    elif blend is not None:
        s = blend.blend_score
        console.print(f"out-of-fold ({_tta_words(tta_used)}, as the test set is predicted; each photo scored by "
                      f"the fold model that did not train on it): accuracy {s['accuracy']:.4f}, log-loss "
                      f"{s['log_loss']:.4f}")
    choice = result["tta_choice"]
    if choice is not None:
        steps = " -> ".join(f"{s['views']} {s['metric']:.4f}" if s["metric"] is not None else s["views"]
                            for s in choice.steps)
        console.print(f"TTA chosen on the out-of-fold {choice.metric} among {', '.join(choice.candidates) or 'none'}"
                      f": {steps}", highlight=False)
    cal = result["calibration"]
    if cal is not None and hasattr(cal, "averaging"):
        what = (f"temperature {cal.temperature:.3f} (the out-of-fold models' {cal.oof_temperature:.3f} over the "
                f"fold mean's own softening {cal.averaging:.3f})")
        # two out-of-fold log-losses, each named: the blend's above (each photo scored by one fold model) and that
        # of the same predictions softened as the submitted fold mean is, which the temperature is judged on
        softened = f"{cal.oof_log_loss_before:.4f} once softened as the submitted fold mean is"
        if cal.applied:
            console.print(f"calibrated: {what}; out-of-fold log-loss {softened}, {cal.oof_log_loss_after:.4f} "
                          "after this temperature", highlight=False)
        else:
            console.print(f"not calibrated: {what} would not lower the out-of-fold log-loss ({softened})",
                          highlight=False)
    elif cal is not None:
        console.print(f"calibrated: one pooled temperature {cal.temperature:.3f}; out-of-fold log-loss "
                      f"{cal.oof_log_loss_before:.4f} -> {cal.oof_log_loss_after:.4f}")
    console.print(f"wrote {result['path']} ({result['rows']} rows, format {result['format']}); it passes "
                  f"`pipeline validate`. Upload it to the competition site. Notes: {result['note']}")


def _catalogued(runs: list[Path], runs_dir: Path, test_dir: Path, work_dir: Path, competition: str | None, tta: str,
                device: str, progress: bool) -> tuple[Path, list[Path]]:
    """``--test-dir``: the folder's test images catalogued into ``work_dir`` and the time the prediction will take,
    said before it starts; the catalogue and the run folders."""
    from pipeline.predict.estimate import estimate
    from pipeline.predict.testset import prepare_test
    from pipeline.progress import clock

    test, run_dirs = prepare_test(runs, runs_dir, test_dir, work_dir, competition, progress=progress)
    guess = estimate(run_dirs, test, tta, device)
    console.print(f"catalogued {guess.images} test photos of {escape(str(test_dir))} into {escape(str(test))}; "
                  f"predicting them will take about {clock(guess.seconds)} on the {guess.device.upper()} "
                  f"({guess.passes} model passes a photo)", highlight=False)
    return test, run_dirs


def _value(scores: dict, metric: str) -> str:
    from pipeline.metrics import metric_value

    value = metric_value(scores, metric)
    return "n/a" if value is None else f"{value:.4f}"


def _folds_used(u: dict) -> str:
    """``the models of folds 0-4 of 5``, with ``(a run of 2 of the split's 5 folds)`` or
    ``(partial: folds 2, 3 unfinished)`` where that is so."""
    folds, trained, n = u["folds"], u["trained"], u["n_folds"]
    shown = f"{folds[0]}-{folds[-1]}" if folds == list(range(folds[0], folds[-1] + 1)) and len(folds) > 2 else \
        ",".join(map(str, folds))
    text = f"the models of folds {shown} of {n}"
    if len(trained) < (n or 0):
        text += f" (a run of {len(trained)} of the split's {n} folds)"
    missing = [k for k in trained if k not in folds]
    if missing:
        text += f" (partial: folds {', '.join(map(str, missing))} unfinished)"
    return text


def _tta_words(tta: str) -> str:
    return "without TTA" if tta == "none" else f"with {tta} TTA"


@command(STAGE_PREDICT)
@friendly
def validate(
    submission: Annotated[Path, typer.Argument(help="The CSV to check.", exists=True, dir_okay=False)],
    test: TestCsv = Path("data/test.csv"),
    format: Annotated[Fmt | None, typer.Option("--format", help="Cats versus dogs: course, kaggle or redux "
                                               "\\[default: the competition's]")] = None,
):
    """Check a submission: header, every test id once, labels, rows.

    Defects the competition's checker tolerates (a byte-order mark on Kaggle, CRLF line ends) are
    printed as warnings and do not make the file invalid.
    """
    from pipeline.competitions.spec import data_competition
    from pipeline.predict.formats import read_test_ids
    from pipeline.predict.predict import submission_format
    from pipeline.predict.validation import check_submission

    spec = submission_format(data_competition(test.parent), format.value if format else None, test.parent)
    result = check_submission(submission, read_test_ids(test, numeric=spec.numeric_ids), spec)
    for w in result.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(w)}", highlight=False)
    if result.problems:
        err_console.print(f"[bold red]invalid:[/] {escape(str(submission))}: {len(result.problems)} problem(s)",
                          highlight=False)
        for p in result.problems:
            err_console.print(f"  - {escape(p)}", highlight=False)
        raise typer.Exit(1)
    warned = f" with {len(result.warnings)} warning(s)" if result.warnings else ""
    console.print(f"valid: {escape(str(submission))} ({spec.name} format){warned}")


@command(STAGE_PREDICT, "score")
@friendly
def score_cmd(
    submission: Annotated[Path, typer.Argument(help="The submission CSV.", exists=True, dir_okay=False)],
    solution: Annotated[Path, typer.Argument(help="The true labels: id,label, or the competition's own columns "
                                             "(a Kaggle solution file).", exists=True, dir_okay=False)],
    test: Annotated[Path, typer.Option(help="The test catalogue, beside which `pipeline download` recorded the "
                                       "competition.")] = Path("data/test.csv"),
):
    """Score a submission against known labels.

    Accuracy, and the competition's metric.

    Log-loss for a probability file, ROC-AUC or macro F1 where the competition scores by them.
    """
    from pipeline.competitions.spec import data_competition
    from pipeline.predict.formats import format_for
    from pipeline.predict.validation import score_submission

    comp = data_competition(test.parent)
    s = score_submission(submission, solution, None if comp.submission.format else format_for(comp, test.parent))
    if "accuracy" not in s:  # another target than one label: its metric alone
        console.print(f"{submission}: {comp.metric} {s[comp.metric]:.4f} on {s['n']} images")
        return
    more = "".join(f", {name} {s[key]:.4f}" for key, name in (("log_loss", "log-loss"), ("roc_auc", "ROC-AUC"),
                                                                 ("f1_macro", "macro F1")) if s.get(key) is not None)
    console.print(f"{submission}: accuracy {s['accuracy']:.4f} on {s['n']} images{more}")


@command(STAGE_PREDICT)
@friendly
def submit(
    file: Annotated[Path, typer.Argument(help="The submission CSV (from `pipeline predict`).", dir_okay=False)],
    source: Annotated[SubmitSource | None, typer.Option(metavar="SITE", help="Cats versus dogs: kaggle (Dogs vs. "
                                                        "Cats), kaggle-redux or course (猫狗大战, by hand) \\[default: "
                                                        "the competition `pipeline download` recorded]")] = None,
    message: Annotated[str | None, typer.Option("--message", "-m", help="Description on Kaggle \\[default: the "
                                                   "file's name and the runs from its JSON note]")] = None,
    test: TestCsv = Path("data/test.csv"),
    log: Annotated[Path, typer.Option(help="One row per submission.")] = Path("submissions/log.csv"),
):
    """Validate a submission, send it with the kaggle CLI, log it.

    For the course competition (uploaded in a browser) it says what to upload.
    """
    from pipeline.predict.upload import submit as send

    done = send(file, source.value if source else None, test_csv=test, message=message, log_path=log)
    for w in done.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(w)}", highlight=False)
    facts = f"{done.rows} rows, {done.format} format, sha256 {done.sha256}"
    if done.status == "validated":
        console.print(f"valid: {escape(str(done.file.resolve()))} ({facts})", highlight=False)
        console.print(escape(done.upload_hint), highlight=False)
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
