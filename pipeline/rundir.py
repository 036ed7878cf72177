"""The run folder ``runs/<name>/``: the only code that knows its layout.

::

    config.json        the competition (its classes), the resolved recipe and run settings, the folds, versions,
                       device, resumes, and ``photo_root``: the data folder the photos are keyed in
    folds.csv          the folds this run trains on (its own copy: a later re-split does not touch it); photos keyed
                       by their place in the data folder (``extracted/train/cat.1.jpg``), so the run is portable
    pseudo.csv         with --pseudo: the pseudo-labelled test photos (keyed so too) and their soft labels
    metrics.csv        one row per fold and epoch
    fold<k>/last.pt    full state after the last finished epoch (model, optimizer, scheduler, ...)
    fold<k>/best.pt    the weights with the lowest validation loss (an epoch's, the EMA's or an average's), with
                       epoch, metrics and recipe
    fold<k>/oof.csv    that fold's validation predictions from best.pt; its presence marks the fold done
    oof.csv            path (the photo's key),label,fold and the probability columns (prob_dog, or prob_<class> per
                       class), plain and under each TTA view (prob_dog@hflip, ...), for every training image of the
                       trained folds
    cv.json            accuracy, log-loss and ROC-AUC (K classes: macro F1) per fold and overall
    test_probs.csv     after ``predict``: id, the probability columns and each fold's (+ test_probs.json)
    report/            the HTML report and its figures
    tensorboard/       TensorBoard event files, one folder per fold (with --tracker tensorboard)
    trial.json         a `pipeline tune` trial's study, number, state (complete, pruned, failed) and why
    failed.txt         the error a process of a multi-process job stopped on (removed when the run resumes)
    .lock              held by the process that trains the run (an advisory file lock)

Training, inference, the report and the CLI ask this module for paths and facts; none spells a
file name itself.

Runs made before photos were keyed hold the paths the catalogue held (absolute, or relative to where training ran);
they are read as they are, and keyed on reading where they lie in the run's data folder.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
from pathlib import Path

import pandas as pd
from filelock import FileLock, Timeout

from pipeline.errors import ConfigError, DataError
from pipeline.fileio import write_csv, write_json

SCHEMA = 1  # the layout of config.json; a later layout raises it and reads older ones by it
_logger = logging.getLogger(__name__)
METRIC_COLUMNS = ["fold", "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_logloss",
                  "val_metric", "lr", "images_per_s", "seconds"]  # val_metric: the competition's metric


class RunBusy(ConfigError):
    """Another process holds the run's lock."""


class RunUnreadable(DataError):
    """A run folder whose config.json (or cv.json) cannot be read: cut off by a crash, edited by hand, or from
    another version of the pipeline. ``reason`` says why in a few words (the listing of runs shows it)."""

    def __init__(self, run: RunDir, reason: str):
        super().__init__(f"Run {run.name} cannot be read: its {reason}; move {run.path} aside or delete it.")
        self.reason = reason


class RunDir:
    """One run folder.

    Args:
        path: the folder (it need not exist yet).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, RunDir) and self.path.resolve() == other.path.resolve()

    def __hash__(self) -> int:
        return hash(self.path.resolve())

    @property
    def name(self) -> str:
        return self.path.name

    # ---- file names ----------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def folds_path(self) -> Path:
        return self.path / "folds.csv"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def oof_path(self) -> Path:
        return self.path / "oof.csv"

    @property
    def cv_path(self) -> Path:
        return self.path / "cv.json"

    @property
    def test_probs_path(self) -> Path:
        return self.path / "test_probs.csv"

    @property
    def test_note_path(self) -> Path:
        return self.path / "test_probs.json"

    @property
    def pseudo_path(self) -> Path:
        """The pseudo-labelled test photos this run trains on (``pipeline train --pseudo``), fixed at its start."""
        return self.path / "pseudo.csv"

    def read_pseudo(self) -> pd.DataFrame | None:
        """The pseudo-labelled test photos, their ``path`` where the photos are now (see :meth:`photo_paths`)."""
        if not self.pseudo_path.exists():
            return None
        pseudo = pd.read_csv(self.pseudo_path)
        return pseudo.assign(path=self.photo_paths(pseudo.path))

    @property
    def report_dir(self) -> Path:
        return self.path / "report"

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / "tensorboard"

    def fold_dir(self, k: int) -> Path:
        return self.path / f"fold{k}"

    def best(self, k: int) -> Path:
        return self.fold_dir(k) / "best.pt"

    def last(self, k: int) -> Path:
        return self.fold_dir(k) / "last.pt"

    def fold_oof(self, k: int) -> Path:
        return self.fold_dir(k) / "oof.csv"

    @property
    def failed_path(self) -> Path:
        """Written by a process of a ``--parallel folds`` job that stopped on an error, so the others stop too."""
        return self.path / "failed.txt"

    @property
    def trial_path(self) -> Path:
        """Written by ``pipeline tune`` when the trial this run is ends: its study, number, state and value."""
        return self.path / "trial.json"

    def trial_state(self) -> str | None:
        """The state of the tune trial this run is (``complete``, ``pruned``, ``failed``); None for a plain run."""
        try:
            trial = self._json(self.trial_path) if self.trial_path.exists() else {}
        except RunUnreadable:  # cut off: the run's own files still say how far it got
            return None
        return trial.get("state") if isinstance(trial, dict) else None

    # ---- config --------------------------------------------------------------------------
    def exists(self) -> bool:
        """Whether the run has been created (it has a config.json)."""
        return self.config_path.exists()

    def config(self) -> dict:
        """config.json (``schema``, ``recipe``, ``settings``, ``folds``, ``n_folds``, ...).

        Raises:
            ConfigError: the folder has no config.json.
            RunUnreadable: config.json is not JSON, lacks what every run has, or has another schema.
        """
        if not self.exists():
            raise ConfigError(f"{self.path} is not a run folder (no config.json).")
        config = self._json(self.config_path)
        why = config_problem(config)
        if why:
            raise RunUnreadable(self, f"config.json {why}")
        return config

    def _json(self, path: Path):
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RunUnreadable(self, f"{path.name} is not valid JSON ({exc}: cut off, or edited by hand)") from None

    def readable(self) -> str | None:
        """None when config.json (and cv.json, if there is one) can be read; otherwise why not."""
        try:
            self.config()
            self.read_cv()
        except RunUnreadable as exc:
            return exc.reason
        return None

    def write_config(self, config: dict) -> None:
        write_json(self.config_path, config)

    # ---- folds and progress --------------------------------------------------------------
    def selected_folds(self) -> list[int]:
        """The folds the run trains (all of them unless ``--folds`` chose some)."""
        return list(self.config()["folds"])

    def finished_folds(self) -> list[int]:
        """Folds whose training is complete (their oof.csv exists), in order."""
        return [k for k in self.selected_folds() if self.fold_oof(k).exists()]

    def missing_folds(self) -> list[int]:
        return [k for k in self.selected_folds() if not self.fold_oof(k).exists()]

    def is_finished(self) -> bool:
        """Every selected fold is trained and the CV score is written (False for a run that cannot be read)."""
        if not (self.exists() and self.cv_path.exists()) or self.readable():
            return False
        return not self.missing_folds()

    def read_folds(self) -> pd.DataFrame:
        """The run's own folds (path,label,fold): the truth for this run, whatever data/folds.csv says now; ``path``
        where each photo is now (see :meth:`photo_paths`)."""
        if not self.folds_path.exists():
            raise DataError(f"Run {self.name} has no folds.csv; it was not created completely: delete "
                            f"{self.path} and train again.")
        folds = pd.read_csv(self.folds_path)
        return folds.assign(path=self.photo_paths(folds.path))

    # ---- photos: keyed by their place in the data folder -------------------------------------------------------
    def photo_root(self) -> str:
        """The data folder this run's photos are keyed in (``photo_root`` in config.json; a run made before photos
        were keyed: its ``data_dir`` setting)."""
        config = self.config()
        return config.get("photo_root") or config["settings"].get("data_dir", "data")

    def photo_keys(self, paths: pd.Series) -> pd.Series:
        """``paths`` as keys: relative to the run's data folder where they lie in it (a run trained in one place
        and one trained in another name a photo alike), else as they are."""
        return photo_keys(paths, self.photo_root())

    def photo_paths(self, keys: pd.Series) -> pd.Series:
        """Where keyed photos are now: in the data folder the run recorded while it exists, else in the run's
        ``data_dir`` setting (a resume may give another). A run made before photos were keyed: its paths."""
        config = self.config()
        if not config.get("photo_root"):
            return keys
        root = config["photo_root"] if Path(config["photo_root"]).is_dir() else config["settings"]["data_dir"]
        return keys.map(lambda k: k if os.path.isabs(k) else os.path.join(root, k))

    def read_metrics(self) -> pd.DataFrame:
        return pd.read_csv(self.metrics_path) if self.metrics_path.exists() else pd.DataFrame(columns=METRIC_COLUMNS)

    def read_oof(self) -> pd.DataFrame:
        if not self.oof_path.exists():
            raise ConfigError(f"Run {self.name} has no oof.csv; finish its training first "
                              f"(`pipeline train --run-name {self.name} --resume`).")
        oof = pd.read_csv(self.oof_path)
        # runs made before competitions named a view's column prob_dog_hflip
        oof = oof.rename(columns={"prob_dog_hflip": "prob_dog@hflip"})
        keys = self.photo_keys(oof.path)  # the same photo has one key in every run, wherever it was trained
        return oof.assign(path=self.photo_paths(keys), key=keys)

    def read_cv(self) -> dict | None:
        if not self.cv_path.exists():
            return None
        cv = self._json(self.cv_path)
        if not isinstance(cv, dict) or not isinstance(cv.get("overall"), dict) or not isinstance(cv.get("folds"), dict):
            raise RunUnreadable(self, "cv.json lacks its 'overall' and 'folds' scores")
        if cv.get("epochs_from") != 1:  # a run written before best_epoch counted from 1, as the epoch log does
            cv["folds"] = {k: v | ({"best_epoch": v["best_epoch"] + 1} if isinstance(v.get("best_epoch"), int) else {})
                           for k, v in cv["folds"].items()}
            cv["epochs_from"] = 1
        return cv

    def append_metrics(self, row: dict) -> None:
        """Add one epoch's row (a resumed epoch replaces its row and every later one of that fold).

        Several processes may train folds of one run at once: the read-and-rewrite is done under a
        lock, and the file is replaced atomically so an interrupt never truncates it.
        """
        with FileLock(self.path / ".metrics.lock"):
            old = self.read_metrics()
            old = old[~((old.fold == row["fold"]) & (old.epoch >= row["epoch"]))]
            rows = pd.concat([r for r in (old, pd.DataFrame([row])) if not r.empty], ignore_index=True)
            extra = [c for c in rows.columns if c not in METRIC_COLUMNS]  # e.g. the EMA's validation figures
            write_csv(self.metrics_path, rows[METRIC_COLUMNS + extra])

    def checkpoints(self) -> list[tuple[int, Path]]:
        """``(fold, best.pt)`` of every finished fold."""
        return [(k, self.best(k)) for k in self.finished_folds()]

    def discard_if_untrained(self) -> bool:
        """Remove a run that was refused before it trained anything (no epoch in metrics.csv), so that its name
        stays free and nothing half-made is left behind; True when it was removed."""
        if not self.path.exists() or self.metrics_path.exists():
            return False
        shutil.rmtree(self.path, ignore_errors=True)
        return True

    # ---- the lock ------------------------------------------------------------------------
    def lock(self, wait: float = 0) -> FileLock:
        """Take the run's lock (held while the run trains); RunBusy when another process holds it.

        Args:
            wait: seconds to wait for it (0: refuse at once).
        """
        self.path.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self.path / ".lock")
        try:
            lock.acquire(timeout=wait)
        except Timeout:
            owner = (self.path / ".lock.owner").read_text().strip() if (self.path / ".lock.owner").exists() else "?"
            raise RunBusy(f"Run {self.name} is being trained by another process ({owner}); wait for it to "
                          f"finish or stop it, or pick another --run-name.") from None
        (self.path / ".lock.owner").write_text(f"pid {os.getpid()} on {socket.gethostname()}\n")
        return lock


def photo_keys(paths: pd.Series, root: str | os.PathLike) -> pd.Series:
    """Photo paths as keys relative to the data folder ``root`` (POSIX, ``extracted/train/cat.1.jpg``) where they
    lie in it (as written, or both made absolute from here), else as they are.

    Args:
        paths: photo paths as the catalogue holds them.
        root: the data folder.
    """
    forms = {os.path.normpath(str(root)), os.path.abspath(str(root))}

    def key(path: str) -> str:
        for form in (os.path.normpath(path), os.path.abspath(path)):
            for base in forms:
                if os.path.isabs(form) == os.path.isabs(base) and form.startswith(base.rstrip(os.sep) + os.sep):
                    return Path(os.path.relpath(form, base)).as_posix()
        return path
    return paths.astype(str).map(key)


def config_problem(config) -> str | None:
    """What makes ``config`` (a parsed config.json) unusable, as the end of a sentence; None when it is fine."""
    if not isinstance(config, dict):
        return f"holds a {type(config).__name__}, not the object of a run"
    schema = config.get("schema")
    if schema is None:
        return "has no schema version (a run made by a development version of the pipeline); train it again"
    if schema != SCHEMA:
        return (f"has schema version {schema!r}, but this version of the pipeline reads version {SCHEMA}; use the "
                "pipeline version that made it")
    for key, kind in (("recipe", dict), ("settings", dict), ("folds", list)):
        if not isinstance(config.get(key), kind):
            return f"lacks its {key!r} entry (or it is not a {kind.__name__})"
    return None


# ---- finding runs --------------------------------------------------------------------------
def all_runs(runs_dir: str | os.PathLike) -> list[RunDir]:
    """Every run folder under ``runs_dir``, oldest first (by the modification time of config.json)."""
    found = [RunDir(p.parent) for p in Path(runs_dir).glob("*/config.json")]
    return sorted(found, key=lambda r: r.config_path.stat().st_mtime)


def find_run(runs_dir: str | os.PathLike, name: str | os.PathLike | None = None, *,
             finished: bool = True) -> RunDir:
    """The run ``name`` (a folder or a name under ``runs_dir``) or, when None, the newest one.

    Args:
        runs_dir: where run folders live.
        name: a run folder or a run name; None: the newest run.
        finished: with no name, pick the newest finished run (every fold trained), not a half-done one.
    """
    runs_dir = Path(runs_dir)
    if name:
        run = RunDir(name) if RunDir(name).exists() else RunDir(runs_dir / name)
        if not run.exists():
            raise ConfigError(f"No run {str(name)!r} in {runs_dir} (no config.json there).")
        return run
    runs = all_runs(runs_dir)
    if not runs:
        raise ConfigError(f"No runs in {runs_dir}; train one with `pipeline train` first.")
    if not finished:
        return runs[-1]
    unreadable = [r.name for r in runs if r.readable()]
    if unreadable:
        _logger.warning("left out: run(s) %s cannot be read (`pipeline runs` says why)", ", ".join(unreadable))
    done = [r for r in runs if r.is_finished()]
    if not done:
        newest = next((r for r in reversed(runs) if not r.readable()), runs[-1])
        lacks = ", ".join(map(str, newest.missing_folds())) if not newest.readable() else "-"
        raise ConfigError(f"No run in {runs_dir} has finished every fold (the newest, {newest.name}, lacks folds "
                          f"{lacks or '-'}); finish one with "
                          f"`pipeline train --run-name NAME --resume`, or name a run with --run and pass --partial.")
    return done[-1]
