"""``pipeline download`` and ``pipeline split``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from pipeline.cli.app import STAGE_DATA, DataDir, command, console, friendly
from pipeline.data.sources import SOURCES

FoldsOption = Annotated[int, typer.Option(help="Number of folds K.")]
SeedOption = Annotated[int, typer.Option(help="Seed of the fold assignment.")]
DupOption = Annotated[int, typer.Option(help="Photos whose perceptual hashes differ in at most this many bits (of 64) "
                                        "share a fold; -1: off.")]


@command(STAGE_DATA)
@friendly
def download(
    competition: Annotated[str | None, typer.Option(metavar="NAME|FILE", help="A built-in competition (`pipeline "
                                                    "competitions`) or a spec file \\[default: the source's, else "
                                                    "course]")] = None,
    source: Annotated[str | None, typer.Option(metavar="NAME", help=f"Named source: {', '.join(SOURCES)} "
                                                  f"\\[default: {next(iter(SOURCES))} (猫狗大战)]")] = None,
    url: Annotated[list[str] | None, typer.Option("--url", metavar="URL",
                                                  help="Archive URL to fetch (repeatable).")] = None,
    from_: Annotated[list[Path] | None, typer.Option("--from", exists=True, metavar="PATH",
                     help="Local archive (.zip, .7z, .tar), CSV or folder (repeatable).")] = None,
    data_dir: DataDir = Path("data"),
    folds: FoldsOption = 5,
    seed: SeedOption = 0,
    dup_threshold: DupOption = 4,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
):
    """Fetch, verify and unpack the data; catalogue it; build folds.

    Writes data/train.csv, data/test.csv and data/folds.csv.
    """
    from pipeline.data.download import download as run_download

    summary = run_download(competition=competition, source=source, urls=url or [], from_paths=from_ or [],
                           data_dir=data_dir,
                           n_folds=folds, seed=seed, dup_threshold=dup_threshold, progress=progress)
    _print_catalog(summary)


@command(STAGE_DATA)
@friendly
def split(data_dir: DataDir = Path("data"), folds: FoldsOption = 5, seed: SeedOption = 0,
          dup_threshold: DupOption = 4):
    """Rebuild the folds (data/folds.csv) without downloading."""
    from pipeline.data.folds import write_folds

    f = write_folds(data_dir, folds, seed, dup_threshold)
    sizes = ", ".join(str(n) for n in f.fold.value_counts().sort_index())
    console.print(f"{len(f)} images in {folds} folds ({sizes}); "
                  f"{int((f.group.value_counts() > 1).sum())} duplicate groups -> {data_dir / 'folds.csv'}")


def _print_catalog(s: dict) -> None:
    paths = {k: escape(str(s[k])) for k in ("train_csv", "test_csv", "problems_csv", "folds_csv")}
    per_class = s["per_class"]
    plural = set(per_class) == {"cat", "dog"}  # "800 cats"; other class names are shown as the data spells them
    counts = ", ".join(f"{n} {c}s" if plural else f"{n} {c}" for c, n in list(per_class.items())[:12])
    more = f" and {len(per_class) - 12} more classes" if len(per_class) > 12 else ""
    console.print(f"competition: {s['competition']} ({len(per_class)} classes)", highlight=False)
    console.print(f"train: {s['train']} images ({counts}{more}) -> {paths['train_csv']}")
    console.print(f"test:  {s['test']} images -> {paths['test_csv']}")
    if s.get("no_test"):
        console.print(f"[yellow]test:  no test image, so nothing to predict: {escape(s['no_test'])}[/]")
    unreadable = s.get("test_unreadable", 0)
    if unreadable:
        console.print(f"[yellow]test:  {unreadable} of them unreadable: kept (readable=False) so their ids are "
                      f"submitted with a neutral prediction, listed in {paths['problems_csv']}[/]")
    if s["problems"] - unreadable:
        console.print(f"[yellow]left out: {s['problems'] - unreadable} files (unreadable or unlabelled), listed in "
                      f"{paths['problems_csv']}[/]")
    grouping = f" (near-duplicates: {s['grouping']})" if "lowered" in s.get("grouping", "") or \
        s.get("grouping", "").startswith("off:") else ""
    console.print(f"folds: {s['folds']} folds, {s['dup_groups']} duplicate groups{grouping} -> {paths['folds_csv']}")


@command(STAGE_DATA)
@friendly
def competitions():
    """List the built-in competitions (download --competition NAME)."""
    from pipeline.competitions.spec import builtin_competitions, load_competition, spec_summary

    for name, path in builtin_competitions().items():
        comp = load_competition(path)
        classes = f"{len(comp.classes)} classes" if comp.classes else f"classes from the {comp.classes_from}"
        console.print(f"[bold]{name}[/] ({comp.target.kind} target, {comp.metric}, {classes}): {spec_summary(path)}",
                      highlight=False)
    console.print("A spec of your own: copy one (pipeline/competitions/specs/) and pass the file with --competition.",
                  highlight=False)
