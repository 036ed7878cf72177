"""The command line: one thin function per command, grouped by stage; the work happens in the stage packages.

``app`` (``pipeline.cli.app``) is the typer application; importing a stage's module registers its commands,
in the order --help lists them.
"""

import importlib

from pipeline.cli.app import app

for _stage in ("data", "train", "tune", "predict", "export", "runs"):
    importlib.import_module(f"pipeline.cli.{_stage}")

__all__ = ["app"]
