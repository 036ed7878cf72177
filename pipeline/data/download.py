"""The download stage: fetch and unpack a competition's data, catalogue and verify every image, assign the folds,
and record the competition in the data folder (``data/competition.json``)."""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

import pandas as pd

from pipeline import kaggle
from pipeline.competitions.spec import DEFAULT, RECORD, load_competition
from pipeline.data.archives import archive_stem, extract_archive, is_archive
from pipeline.data.catalog import scan, write_problems
from pipeline.data.fetch import fetch, url_filename
from pipeline.data.folds import assign_folds, duplicate_report
from pipeline.data.pixels import drop_other_images, pixel_images, resolve_pixels
from pipeline.data.sources import Source, get_source
from pipeline.errors import ConfigError, DataError, DownloadError, ExtractError
from pipeline.fileio import atomic_path

_logger = logging.getLogger(__name__)


def acquire(*, source: str | Source | None = None, urls: list[str] = (), from_paths: list[Path] = (),
            raw_dir: Path, extract_dir: Path, progress: bool = True) -> list[Path]:
    """Fetch and unpack the data; return the folders (and plain files) that hold it.

    Archives go to ``raw_dir`` and are unpacked into ``extract_dir/<archive stem>/``; a folder given in
    ``from_paths`` is returned as it is, and so is a plain file (a labels or pixel CSV).

    Args:
        source: a name from ``pipeline.data.sources.SOURCES``, or a competition's Source; "course" when nothing
            at all is given.
        urls: further archive URLs to fetch.
        from_paths: local archives or folders to use instead of downloading.
        raw_dir: folder for the downloaded archives.
        extract_dir: folder for the unpacked archives.
        progress: show progress bars.
    """
    if source is None and not urls and not from_paths:
        source = "course"
    src = get_source(source) if isinstance(source, str) else source
    downloads = [(u, src.sha256.get(url_filename(u))) for u in src.urls] if src else []
    downloads += [(u, None) for u in urls]
    from_paths = [Path(p) for p in from_paths]
    for p in from_paths:
        if not p.exists():
            raise ExtractError(f"{p} does not exist: pass an existing archive or folder with --from.")
        if not p.is_dir() and not is_archive(p) and p.suffix.lower() != ".csv":
            raise ExtractError(f"{p} is neither a folder nor a .zip/.tar/.tar.gz/.tgz/.7z archive (or a .csv of "
                               "labels or pixels): pass one of those with --from.")
    for u, _ in downloads:
        if not is_archive(url_filename(u)):
            raise DownloadError(f"{u} does not end in .zip, .tar, .tar.gz, .tgz or .7z: pass the URL of an archive, "
                                "or download the files by hand and pass their folder with --from.")
    names = ([f"{src.kaggle_competition}.zip"] if src and src.kaggle_competition else [])
    names += [url_filename(u) for u, _ in downloads] + [p.name for p in from_paths if not p.is_dir() and is_archive(p)]
    stems = [archive_stem(n) for n in names]
    clash = next((s for s in stems if stems.count(s) > 1), None)
    if clash is not None:
        raise ConfigError(f"Two archives would unpack into {Path(extract_dir) / clash} ("
                          f"{', '.join(n for n in names if archive_stem(n) == clash)}): rename one of them.")

    archives = [kaggle.download(src.kaggle_competition, raw_dir, progress=progress)] if src and \
        src.kaggle_competition else []
    archives += [fetch(u, raw_dir, sha256=sha, progress=progress) for u, sha in downloads]
    archives += [p for p in from_paths if not p.is_dir() and is_archive(p)]
    roots = [extract_archive(a, Path(extract_dir) / archive_stem(a.name)) for a in archives]
    return roots + [p for p in from_paths if p.is_dir() or not is_archive(p)]


def download(*, competition: str | Path | None = None, source: str | None = None, urls: list[str] = (),
             from_paths: list[Path] = (), data_dir: Path, n_folds: int = 5, seed: int = 0, dup_threshold: int = 4,
             progress: bool = True, workers: int | None = None) -> dict:
    """Fetch and unpack a competition's data, catalogue and verify every image, assign folds, and record the
    competition in the data folder.

    Args:
        competition: a built-in competition or a spec file; default: the one ``source`` belongs to, else the
            course competition.
        source: a named source (cats versus dogs: course, petimages, kaggle, kaggle-redux).
        urls, from_paths: archives to fetch, or local archives, folders and files, instead of the default ones.

    Returns counts and output paths for the CLI to print. The catalogue (train.csv, test.csv,
    catalog_problems.csv), the folds (folds.csv, duplicates.csv) and the competition record are written
    together, after every check has passed: a refused download (too few photos of a class for the folds)
    leaves the earlier ones as they were. When not one labelled training photo is found, only
    catalog_problems.csv is written and a DataError says why.
    """
    data_dir = Path(data_dir)
    src = get_source(source) if source else None
    comp = load_competition(competition or (src.competition if src else DEFAULT))
    if src is None and not urls and not from_paths:
        src = Source.of(comp)
        if not src.urls and not src.kaggle_competition:
            raise ConfigError(f"Competition {comp.name} names no URL and no Kaggle slug: pass its files with --from "
                              "or --url.")
    roots = acquire(source=src, urls=list(urls), from_paths=[Path(p) for p in from_paths],
                    raw_dir=data_dir / "raw", extract_dir=data_dir / "extracted", progress=progress)
    layout, pixels = comp, None
    if comp.train.labels == "pixels":
        images = data_dir / "extracted" / f"{comp.name}-images"
        if images.parent != data_dir / "extracted" or images.name.startswith("."):
            raise ConfigError(f"Competition name {comp.name!r} cannot name a folder in {data_dir / 'extracted'}: "
                              "give the spec a plain name (letters, digits, '-').")
        pixels = pixel_images(comp, roots, images, progress=progress)
        roots, layout = pixels.roots, resolve_pixels(comp)
        for note in pixels.notes:
            _logger.warning(note)
    catalog = scan(roots, competition=layout, cache_csv=data_dir / ".verified.csv", workers=workers,
                   progress=progress)
    if pixels is not None and pixels.problems:
        catalog.problems = pd.concat([catalog.problems, pd.DataFrame(pixels.problems, columns=["path", "reason"])],
                                     ignore_index=True)
    if catalog.train.empty:
        raise _no_training_photo(catalog, write_problems(catalog, data_dir), comp)
    comp = comp.with_classes(list(catalog.classes))
    folds = comp.kind.fold_folds(assign_folds, catalog.train, n_folds, seed, dup_threshold)
    paths = {name: data_dir / f"{name}.csv" for name in ("train", "test", "folds", "duplicates")}
    paths["problems"] = data_dir / "catalog_problems.csv"
    _write_together({paths["train"]: catalog.train, paths["test"]: catalog.test, paths["problems"]: catalog.problems,
                     paths["folds"]: folds, paths["duplicates"]: duplicate_report(folds),
                     data_dir / RECORD: json.dumps(comp.to_dict(), indent=2, default=str) + "\n"})
    if pixels is not None:
        drop_other_images(pixels)
    counts = catalog.train.label.value_counts()
    summary = {"competition": comp.name, "classes": list(comp.classes), "train": len(catalog.train),
               "per_class": {c: int(counts.get(i, 0)) for i, c in enumerate(comp.classes)},
               "cats": int(counts.get(0, 0)), "dogs": int(counts.get(1, 0)), "test": len(catalog.test),
               "test_unreadable": int((~catalog.test.readable.astype(bool)).sum()),
               "no_test": catalog.no_test if src is None or src.has_test else "",
               "problems": len(catalog.problems), "skipped": catalog.skipped,
               "train_csv": paths["train"], "test_csv": paths["test"], "problems_csv": paths["problems"],
               "folds": n_folds}
    summary.update(dup_groups=int((folds.group.value_counts() > 1).sum()), folds_csv=paths["folds"],
                   grouping=folds.attrs.get("grouping", ""))
    return summary


def _write_together(contents: dict[Path, pd.DataFrame | str]) -> None:
    """Write every file into a temporary one beside it, then rename them all: an error while writing leaves every
    earlier file as it was (and no temporary one behind)."""
    with contextlib.ExitStack() as stack:
        for path, content in contents.items():
            tmp = stack.enter_context(atomic_path(path))
            if isinstance(content, str):
                tmp.write_text(content, encoding="utf-8")
            else:
                content.to_csv(tmp, index=False)


def _no_training_photo(catalog, problems_csv: Path, comp) -> DataError:
    """The error for a download in which not one image is a readable, labelled training photo."""
    reasons = catalog.problems.reason
    unreadable = int(reasons.str.startswith("unreadable image").sum())
    unlabelled = len(reasons) - unreadable - int(reasons.str.startswith("unreadable test image").sum())
    found = len(catalog.test) + unreadable + unlabelled
    t = comp.train
    if t.labels == "name":
        a, b = comp.classes[:2]
        rule = f"training photos must be named {a}.<n>.jpg / {b}.<n>.jpg or sit in {a}s/ and {b}s/ folders"
    elif t.labels == "folder":
        rule = f"training images must sit in class folders matching {t.images}"
    else:
        rule = f"training images must match {t.images} and be listed in {t.csv}"
    return DataError(f"No labelled training photo among the {found} image files: {len(catalog.test)} test photos "
                     f"(numeric names), {unlabelled} unlabelled, {unreadable} unreadable; {rule}, so pass the "
                     f"training archive with --url or --from (each file left out is listed in {problems_csv}; "
                     "train.csv, test.csv and folds.csv were not written).")
