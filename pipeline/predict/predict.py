"""The predict stage: predict the test set with each run, blend the runs, calibrate, and write a validated
submission with a JSON note of what made it."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np

from pipeline.choices import CALIBRATIONS
from pipeline.competitions.spec import RECORD, data_competition, run_competition
from pipeline.errors import ConfigError
from pipeline.fileio import write_json
from pipeline.metrics import table_probs
from pipeline.predict.calibration import EnsembleCalibration, fit_ensemble_temperature, fit_temperature
from pipeline.predict.ensemble import blend_predictions, blend_runs
from pipeline.predict.formats import (
    FORMATS,
    SINGLE_LABELS,
    SubmissionFormat,
    default_submission_name,
    format_for,
    make_submission,
    note_path,
    read_test_ids,
)
from pipeline.predict.inference import fold_columns, predict_run
from pipeline.predict.tta import choose_tta
from pipeline.predict.validation import write_submission
from pipeline.rundir import RunDir, find_run


def predict(*, runs: list[Path], test_csv: Path, tta: str | None = None, ensemble: str = "fit",
            fmt: str | None = None,
            threshold: float = 0.5, eps: float = 0.005, calibrate: str = "auto", out: Path | None = None,
            force: bool = False, partial: bool = False, device: str = "auto", batch_size: int | None = None,
            runs_dir: Path = Path("runs"), progress: bool = False, submissions_dir: Path = Path("submissions"),
            save_runs: bool = True) -> dict:
    """Predict with each run, blend them, calibrate, and write a validated submission with a note.

    ``tta``: a policy, views joined by ``+``, or ``auto`` (the default): the views that lower the out-of-fold
    metric of the submitted blend (:func:`pipeline.predict.tta.choose_tta`; the competition's own policy for a
    run without out-of-fold predictions).

    ``calibrate``: ``temperature`` fits one temperature per fold model on its out-of-fold predictions and applies
    it to that model's test predictions before the fold mean and the blend (kept only when it lowers the
    out-of-fold log-loss of the submitted blend; :func:`pipeline.predict.calibration.fit_fold_temperatures});
    ``pooled`` fits one temperature on the blend's out-of-fold predictions and applies it to the blended test
    predictions (the earlier way, for comparison); ``auto`` is ``temperature`` for probability formats scored by
    log-loss, and ``none`` otherwise (labels, ROC-AUC: a temperature changes no rank; other target kinds). The note
    ``<submission>.json`` records the runs, weights, TTA choice, calibration and out-of-fold scores.

    Returns ``{"path", "note", "rows", "blend", "calibration", "probs", "used", "tta", "tta_choice", "format",
    "submitted_oof"}``; ``blend`` is None when no out-of-fold predictions exist (a partial run); ``used`` says,
    per run, which folds predicted and whether the run was named or picked as the newest finished one
    (:func:`runs_used`); ``submitted_oof`` scores the out-of-fold predictions made exactly as the submission is.
    ``save_runs`` False: nothing is written into the run folders (runs read from a Kaggle dataset).
    """
    if calibrate not in CALIBRATIONS:
        raise ConfigError(f"--calibrate must be one of {', '.join(CALIBRATIONS)}, got {calibrate!r}.")
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"--batch-size must be 1 or more images, got {batch_size} (leave it out for twice the "
                          "training batch).")
    run_dirs = [find_run(runs_dir, str(r)).path for r in runs] if runs else [find_run(runs_dir, None).path]
    if len({r.resolve() for r in run_dirs}) != len(run_dirs):
        raise ConfigError("The same run was given twice with --run.")
    comp = _one_competition(run_dirs, Path(test_csv))
    spec = submission_format(comp, fmt, Path(test_csv).parent)
    test_ids = read_test_ids(test_csv, numeric=spec.numeric_ids)
    has_oof = all(RunDir(r).oof_path.exists() for r in run_dirs)
    if len(run_dirs) > 1 and not has_oof:
        raise ConfigError("Blending needs every run's out-of-fold predictions (oof.csv); finish the runs first.")
    choice = None
    if (tta or "auto") == "auto":
        choice = choose_tta(run_dirs, comp, spec.metric, ensemble) if has_oof else None
        tta = choice.policy if choice else comp.augment.tta
    preds = [predict_run(r, test_csv, tta=tta, device=device, batch_size=batch_size, progress=progress,
                         partial=partial, save=save_runs) for r in run_dirs]
    blend = blend_runs(run_dirs, ensemble, tta) if has_oof else None
    columns, kind = comp.prob_columns(), comp.kind
    one_label = comp.target.kind == "single"
    # auto: a temperature where a log-loss scores the probabilities written (it cannot change a rank, a label or AUC)
    scored_by_log_loss = spec.probability and one_label and spec.metric == "log_loss"
    method = ("temperature" if scored_by_log_loss else "none") if calibrate == "auto" else calibrate
    if method != "none" and not one_label:
        raise ConfigError(f"--calibrate {method} is a temperature for the log-loss of one label per image; "
                          f"competition {comp.name}'s target is {comp.target.kind}: drop --calibrate.")
    if method != "none" and blend is None:
        raise ConfigError(f"--calibrate {method} is fitted on out-of-fold predictions, which a partial run lacks; "
                          "finish the run or pass --calibrate none.")
    probs = blend_predictions(preds, blend.weights) if blend else preds[0][["id", *columns]]
    calibration, submitted = None, blend.oof if blend else None
    if method == "temperature":
        calibration = fit_ensemble_temperature(blend.labels, blend.oof, fold_members(preds, blend.weights, comp))
        submitted = calibration.oof
    elif method == "pooled":
        calibration = fit_temperature(blend.labels, blend.oof)
        submitted = calibration.apply(blend.oof)
    if calibration is not None:
        calibrated = calibration.apply(table_probs(probs, [columns]))
        probs = probs.assign(**dict(zip(columns, [calibrated] if calibrated.ndim == 1 else calibrated.T,
                                        strict=True)))
    submitted_oof = kind.scores(blend.labels, submitted) if blend else None
    # thresholds, cut points, the new class's threshold: fitted on the out-of-fold predictions made as submitted
    fitted = kind.fit(blend.labels, submitted, spec.metric) if blend and spec.label not in SINGLE_LABELS else None
    sub = make_submission(probs, spec, threshold=threshold, eps=eps, fitted=fitted)
    if out is None:
        out = Path(submissions_dir) / default_submission_name([r.name for r in run_dirs])
    path = write_submission(sub, out, test_ids, spec, force=force)
    note = {"submission": path.name, "competition": comp.name, "format": spec.name,
            "runs": [str(r) for r in run_dirs], "tta": tta, "tta_choice": vars(choice) if choice else None,
            "ensemble": blend.method if blend else None, "weights": blend.weights if blend else [1.0],
            "oof": blend.blend_score if blend else None, "submitted_oof": submitted_oof,
            "calibration": _calibration_note(calibration), "fitted": fitted.to_dict() if fitted else None,
            "threshold": threshold, "eps": eps, "created": datetime.now().isoformat(timespec="seconds")}
    note_file = write_json(note_path(path), note)
    return {"path": path, "note": note_file, "rows": len(sub), "blend": blend, "calibration": calibration,
            "probs": probs, "used": runs_used(run_dirs, named=bool(runs)), "tta": tta, "tta_choice": choice,
            "format": spec.name, "submitted_oof": submitted_oof, "fitted": fitted, "metric": spec.metric,
            "one_label": one_label}


def _calibration_note(calibration) -> dict | None:
    if calibration is None:
        return None
    if isinstance(calibration, EnsembleCalibration):
        return calibration.to_dict()
    return {"method": "pooled temperature", **vars(calibration)}


def fold_members(preds, weights: list[float], comp) -> list:
    """The blend's test predictions fold by fold: for each fold k every run has, its runs' fold-k models blended
    with the blend's weights (in the rows of the blended predictions: ids sorted). Their mean is the blend."""
    columns = comp.prob_columns()
    ids = preds[0].id.sort_values().to_numpy()
    common = set.intersection(*({c.split("/")[0] for c in p.columns if c.startswith("fold")} for p in preds))
    members = []
    for fold in sorted(common, key=lambda name: int(name.removeprefix("fold"))):
        k = int(fold.removeprefix("fold"))
        names = fold_columns(k, columns)
        parts = [p.set_index("id").loc[ids, names].to_numpy(dtype=np.float64) for p in preds]
        mixed_fold = np.tensordot(np.asarray(weights), np.stack(parts), axes=1)
        members.append(mixed_fold[:, 0] if len(names) == 1 else mixed_fold)
    return members


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


def submission_format(comp, fmt: str | None, data_dir: Path | None = None) -> SubmissionFormat:
    """The format a submission for ``comp`` is written in: its own (its sample submission's header and row order
    when ``data_dir`` holds one), or (cats versus dogs) one of the three cats-versus-dogs formats named by
    --format."""
    own = format_for(comp, data_dir)
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
