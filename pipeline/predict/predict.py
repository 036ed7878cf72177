"""The predict stage: predict the test set with each run, blend the runs, calibrate, and write a validated
submission with a JSON note of what made it."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from pipeline.choices import CALIBRATIONS
from pipeline.competitions.spec import RECORD, data_competition, run_competition
from pipeline.errors import ConfigError
from pipeline.fileio import write_json
from pipeline.metrics import table_probs
from pipeline.predict.calibration import fit_temperature
from pipeline.predict.ensemble import blend_predictions, blend_runs
from pipeline.predict.formats import (
    FORMATS,
    SubmissionFormat,
    default_submission_name,
    format_for,
    make_submission,
    note_path,
    read_test_ids,
)
from pipeline.predict.inference import predict_run
from pipeline.predict.validation import write_submission
from pipeline.rundir import RunDir, find_run


def predict(*, runs: list[Path], test_csv: Path, tta: str | None = None, ensemble: str = "fit",
            fmt: str | None = None,
            threshold: float = 0.5, eps: float = 0.005, calibrate: str = "auto", out: Path | None = None,
            force: bool = False, partial: bool = False, device: str = "auto", batch_size: int | None = None,
            runs_dir: Path = Path("runs"), progress: bool = False, submissions_dir: Path = Path("submissions")) -> dict:
    """Predict with each run, blend them, calibrate, and write a validated submission with a note.

    ``calibrate``: ``temperature`` fits one temperature on the blend's out-of-fold predictions and
    applies it to the test probabilities (before the format's clipping); ``auto`` does so for
    probability formats (redux), where log-loss is scored, and not for 0/1 labels, which a
    temperature cannot change. The note ``<submission>.json`` records the runs, weights,
    calibration and out-of-fold scores.

    Returns ``{"path", "note", "rows", "blend", "calibration", "probs", "used"}``; ``blend`` is None when
    no out-of-fold predictions exist (a partial run); ``used`` says, per run, which folds predicted and
    whether the run was named or picked as the newest finished one (:func:`runs_used`).
    """
    if calibrate not in CALIBRATIONS:
        raise ConfigError(f"--calibrate must be one of {', '.join(CALIBRATIONS)}, got {calibrate!r}.")
    run_dirs = [find_run(runs_dir, str(r)).path for r in runs] if runs else [find_run(runs_dir, None).path]
    if len({r.resolve() for r in run_dirs}) != len(run_dirs):
        raise ConfigError("The same run was given twice with --run.")
    comp = _one_competition(run_dirs, Path(test_csv))
    spec, tta = submission_format(comp, fmt), tta or comp.augment.tta
    test_ids = read_test_ids(test_csv, numeric=spec.numeric_ids)
    preds = [predict_run(r, test_csv, tta=tta, device=device, batch_size=batch_size, progress=progress,
                         partial=partial) for r in run_dirs]
    has_oof = all(RunDir(r).oof_path.exists() for r in run_dirs)
    if len(run_dirs) > 1 and not has_oof:
        raise ConfigError("Blending needs every run's out-of-fold predictions (oof.csv); finish the runs first.")
    blend = blend_runs(run_dirs, ensemble, tta) if has_oof else None
    columns = comp.prob_columns()
    probs = blend_predictions(preds, blend.weights) if blend else preds[0][["id", *columns]]
    method = ("temperature" if spec.probability else "none") if calibrate == "auto" else calibrate
    calibration = None
    if method == "temperature":
        if blend is None:
            raise ConfigError("--calibrate temperature is fitted on out-of-fold predictions, which a partial run "
                              "lacks; finish the run or pass --calibrate none.")
        calibration = fit_temperature(blend.labels, blend.oof)
        calibrated = calibration.apply(table_probs(probs, [columns]))
        probs = probs.assign(**dict(zip(columns, [calibrated] if calibrated.ndim == 1 else calibrated.T,
                                        strict=True)))
    sub = make_submission(probs, spec, threshold=threshold, eps=eps)
    if out is None:
        out = Path(submissions_dir) / default_submission_name([r.name for r in run_dirs])
    path = write_submission(sub, out, test_ids, spec, force=force)
    note = {"submission": path.name, "competition": comp.name, "format": spec.name,
            "runs": [str(r) for r in run_dirs], "tta": tta,
            "ensemble": blend.method if blend else None, "weights": blend.weights if blend else [1.0],
            "oof": blend.blend_score if blend else None, "calibration": vars(calibration) if calibration else None,
            "threshold": threshold, "eps": eps, "created": datetime.now().isoformat(timespec="seconds")}
    note_file = write_json(note_path(path), note)
    return {"path": path, "note": note_file, "rows": len(sub), "blend": blend, "calibration": calibration,
            "probs": probs, "used": runs_used(run_dirs, named=bool(runs)), "tta": tta, "format": spec.name}


def _one_competition(run_dirs: list[Path], test_csv: Path):
    """The competition the submission is for: the one ``pipeline download`` recorded beside ``test_csv`` (else the
    runs'), once every run was trained for its classes; a ConfigError otherwise."""
    comps = [run_competition(RunDir(r).config()) for r in run_dirs]
    for r, c in zip(run_dirs[1:], comps[1:], strict=True):
        if c.classes != comps[0].classes:
            raise ConfigError(f"Run {r.name} was trained for {c.name} and run {run_dirs[0].name} for {comps[0].name}, "
                              "with other classes: blend runs of one competition.")
    if not (test_csv.parent / RECORD).exists():
        return comps[0]
    data = data_competition(test_csv.parent)
    if data.classes != comps[0].classes:
        raise ConfigError(f"Run {run_dirs[0].name} was trained for {comps[0].name} ({comps[0].n_classes} classes) but "
                          f"{test_csv} belongs to {data.name} ({len(data.classes or ())} classes): predict with a run "
                          "trained on that data.")
    return data


def submission_format(comp, fmt: str | None) -> SubmissionFormat:
    """The format a submission for ``comp`` is written in: its own, or (cats versus dogs) one of the three
    cats-versus-dogs formats named by --format."""
    own = format_for(comp)
    if fmt is None or fmt == own.name or fmt == comp.name:
        return own
    if fmt in FORMATS and comp.classes == ("cat", "dog"):
        return FORMATS[fmt]
    raise ConfigError(f"--format {fmt} does not fit competition {comp.name}, whose submissions are {own.name}: drop "
                      "--format (it defaults to the competition's).")


def runs_used(run_dirs: list[Path], *, named: bool) -> list[dict]:
    """Per run: its name, the folds whose models predicted, the folds it trained and the split's folds, and how
    it was chosen (``named`` with --run, or the newest finished run)."""
    used = []
    for r in run_dirs:
        run = RunDir(r)
        config = run.config()
        used.append({"run": run.name, "folds": run.finished_folds(), "trained": list(config["folds"]),
                     "n_folds": config.get("n_folds"), "chosen": "named" if named else "the newest finished run"})
    return used
