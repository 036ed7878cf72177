"""The test set of a competition's folder alone (``pipeline predict --test-dir``): what a Kaggle notebook sees.

On Kaggle a code competition's files are mounted read-only at ``/kaggle/input/<competition>/`` and the hidden test
set replaces the public one when the notebook is scored. Its test images are catalogued here as ``pipeline download``
catalogues them (the competition's test layout, every image decoded once, an unreadable one kept with
``readable`` False), with no training data and nothing written into the input: archives are unpacked, pixel CSVs
written out as PNGs, and the catalogue (``test.csv``, ``competition.json``) and the decoded-image cache kept in the
working folder.

Only the test part of the folder is read: the entries whose name says ``test`` (``test.zip``, ``test/``,
``test.csv``), or every entry when none does. Archives are unpacked as ``pipeline download`` unpacks them
(:func:`pipeline.data.archives.extract_archive`: every member checked first, once per unchanged archive); py7zr,
which the Kaggle image lacks, is imported only for a .7z.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

from pipeline.competitions.spec import Competition, TrainLayout, record_competition
from pipeline.data.archives import archive_stem, extract_archive, is_archive
from pipeline.data.catalog import scan
from pipeline.errors import DataError
from pipeline.fileio import write_csv

_logger = logging.getLogger(__name__)

NO_TRAINING_IMAGE = "\0"  # a glob no path matches: every image of the test part is a test image or none
UNPACKED = ".unpacked"  # marker of pixel images written: the pixel file's size and time


def catalogue_test(input_dir: str | Path, comp: Competition, work_dir: str | Path, *, workers: int | None = None,
                   progress: bool = False) -> Path:
    """Catalogue the test images of a competition folder into ``work_dir/test.csv``; return its path.

    Args:
        input_dir: the competition's folder (``/kaggle/input/<competition>``); read, never written.
        comp: the competition (its test layout and classes: the run's own, or a spec's).
        work_dir: where the catalogue, unpacked archives, written PNGs and the image cache go.
        workers: decoding processes (default: all cores).
        progress: show progress bars.

    Raises:
        DataError: no such folder, or not one test image in it.
    """
    input_dir, work = Path(input_dir), Path(work_dir)
    if not input_dir.is_dir():
        raise DataError(f"--test-dir {input_dir} is not a folder: give the competition's folder "
                        "(/kaggle/input/<competition> on Kaggle).")
    if work.resolve().is_relative_to(input_dir.resolve()):
        raise DataError(f"--work-dir {work} lies inside --test-dir {input_dir}, which is read, never written: give "
                        "a working folder outside it (/kaggle/working on Kaggle).")
    work.mkdir(parents=True, exist_ok=True)
    layout = dataclasses.replace(comp, train=TrainLayout(labels="folder", images=NO_TRAINING_IMAGE))
    if comp.train.labels == "pixels":
        roots, layout = _pixel_test(comp, input_dir, work / "test-images", progress), _pixel_layout(layout)
    else:
        entries = sorted(p for p in input_dir.iterdir() if not p.name.startswith("."))
        tests = [p for p in entries if "test" in p.name.lower()] or entries
        roots = [extract_archive(p, work / "unpacked" / archive_stem(p)) if p.is_file() and is_archive(p) else p
                 for p in tests]
        roots = [r for r in roots if r.is_dir()]
    if not roots:
        raise DataError(f"{input_dir} holds no folder or archive of test images (competition {comp.name}).")
    catalog = scan(roots, competition=layout, cache_csv=work / ".verified.csv", workers=workers, progress=progress)
    if catalog.test.empty:
        raise DataError(f"No test image of competition {comp.name} ({comp.test.images}, {comp.test.id} ids) in "
                        f"{input_dir}: give the competition's folder with --test-dir.")
    test_csv = write_csv(work / "test.csv", catalog.test)
    record_competition(work, comp)
    return test_csv


def _pixel_test(comp: Competition, input_dir: Path, out: Path, progress: bool) -> list[Path]:
    """The test rows of a pixel CSV (Digit Recognizer's test.csv) written as ``out/test/<row>.png``, once."""
    from pipeline.data.pixels import PixelImages, _write_part

    found = sorted(input_dir.rglob(comp.test.csv))
    if not found:
        raise DataError(f"Competition {comp.name} keeps its test images in {comp.test.csv}, which is not in "
                        f"{input_dir}.")
    stamp = f"{found[0].stat().st_size} {found[0].stat().st_mtime_ns}"
    if (out / UNPACKED).is_file() and (out / UNPACKED).read_text() == stamp:
        return [out]
    shutil.rmtree(out, ignore_errors=True)
    written = PixelImages([out])
    _write_part(comp, found[0], "test", out / "test", written, progress)
    for note in written.notes:
        _logger.warning(note)
    (out / UNPACKED).write_text(stamp)
    return [out]


def _pixel_layout(layout: Competition) -> Competition:
    from pipeline.data.pixels import resolve_pixels

    resolved = resolve_pixels(layout)
    return dataclasses.replace(resolved, train=TrainLayout(labels="folder", images=NO_TRAINING_IMAGE))


def catalogue_competition(run_dirs: list[Path], spec: str | Path | None = None) -> Competition:
    """The competition the test folder is catalogued as: the spec given (a built-in name or a TOML file; its classes
    filled in from the first run when it takes them from the data), else the one the first run recorded."""
    from pipeline.competitions.spec import load_competition, run_competition
    from pipeline.rundir import RunDir

    own = run_competition(RunDir(run_dirs[0]).config())
    if spec is None:
        return own
    comp = load_competition(spec)
    return comp if comp.classes else comp.with_classes(list(own.classes), check=False)


def prepare_test(runs: list, runs_dir: Path, test_dir: Path, work_dir: Path, competition: str | Path | None = None,
                 *, workers: int | None = None, progress: bool = False) -> tuple[Path, list[Path]]:
    """``(test.csv, run folders)`` for predicting a competition folder from run folders alone: the runs found (as
    ``pipeline predict --run`` finds them) and the folder's test images catalogued into ``work_dir``."""
    from pipeline.rundir import find_run

    run_dirs = [find_run(runs_dir, str(r)).path for r in runs] if runs else [find_run(runs_dir, None).path]
    comp = catalogue_competition(run_dirs, competition)
    return catalogue_test(test_dir, comp, work_dir, workers=workers, progress=progress), run_dirs
