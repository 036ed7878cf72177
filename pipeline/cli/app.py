"""The typer app, its consoles, and what every command shares: the error handler, option choices built from the
modules' own tuples, and default texts read from the recipe and settings dataclasses."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
import typer.core
import typer.rich_utils
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from pipeline.errors import Interrupted, PipelineError, storage_error


def _argument_usage_name(self) -> str:
    """``SUBMISSION`` (required) or ``[RUN]...``, as click and most tools write arguments; typer writes ``{name}``."""
    name = self.display_name_raw.upper()
    name = name if self.required else f"[{name}]"
    return name + ("..." if self.nargs != 1 else "")


def _negatives_beside_the_name(print_options_panel):
    """A flag's ``--no-X`` shown in the column of the value types, not in a column of its own: one column less
    leaves the descriptions room to read at 80 columns."""
    def print_panel(*, params, **kwargs):
        saved = [(p, p.secondary_opts) for p in params if getattr(p, "secondary_opts", None)]
        for p, negatives in saved:
            p.secondary_opts, p.shown_negatives = [], negatives
        try:
            return print_options_panel(params=params, **kwargs)
        finally:
            for p, negatives in saved:
                p.secondary_opts = negatives
                del p.shown_negatives
    return print_panel


def _no_placeholder_for_flags(display_type_rich):
    def display(self, ctx):  # a flag takes no value; typer shows `<bool>` beside it
        if getattr(self, "is_flag", False):
            return ",".join(getattr(self, "shown_negatives", [])) or None
        return display_type_rich(self, ctx)
    return display


if hasattr(typer.core.TyperOption, "display_type_rich"):  # typer 0.2x's rich help; older ones lack both
    typer.core.TyperOption.display_type_rich = _no_placeholder_for_flags(typer.core.TyperOption.display_type_rich)
if hasattr(typer.core.TyperArgument, "_usage_display_name"):
    typer.core.TyperArgument._usage_display_name = _argument_usage_name
if hasattr(typer.rich_utils, "_print_options_panel"):
    typer.rich_utils._print_options_panel = _negatives_beside_the_name(typer.rich_utils._print_options_panel)

# The panels of --help, in one place: every command names its stage, and every option of a long command (train,
# predict) its panel. A new option picks the panel of its kind.
STAGE_DATA = "1. Data"
STAGE_TRAIN = "2. Train"
STAGE_PREDICT = "3. Predict and submit"
STAGE_TOOLS = "Runs and tools"
RECIPE = "Recipe: what is learned"
PREDICTION = "Prediction: what is blended"
SETTINGS = "Settings: where and how it runs"
OUTPUT = "Output: what is written and shown"
SEARCH = "Search: the study and its trials"

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Image-classification competitions, from the data to a checked submission.\n\n"
                       "download -> train (k-fold) -> predict -> submit. New here? `pipeline demo` runs every "
                       "stage on a bundled sample in a few minutes. The README says more about each option.")
console = Console(soft_wrap=True)  # no hard line breaks: paths and figures stay greppable
err_console = Console(stderr=True, soft_wrap=True)

DataDir = Annotated[Path, typer.Option(help="Where the catalogue, folds and cache live.")]
RunsDir = Annotated[Path, typer.Option(help="Where run folders live.")]


def command(panel: str, name: str | None = None):
    """Register a command in ``panel`` of ``pipeline --help``. Its docstring is reflowed: typer keeps the line
    breaks inside every paragraph after the first, which would break sentences where the source lines end."""
    def register(fn):
        return app.command(name, rich_help_panel=panel, help=reflow(fn.__doc__ or ""))(fn)
    return register


def reflow(doc: str) -> str:
    """Each paragraph of ``doc`` on one line (the terminal wraps it), paragraphs still apart."""
    return "\n\n".join(" ".join(p.split()) for p in inspect.cleandoc(doc).split("\n\n"))


def choice(name: str, values: tuple[str, ...]) -> type[Enum]:
    """A str Enum for typer, built from a module's own tuple of choices (one source for each set)."""
    return Enum(name, {v.replace("-", "_"): v for v in values}, type=str)


def default_text(obj, field: str) -> str:
    """``[default: X]`` for a dataclass field, X read from the dataclass itself (``obj``: the class): the style
    typer uses for the defaults it shows itself, at the end of the help text."""
    value = {f.name: f for f in dataclasses.fields(obj)}[field].default
    shown = {True: "on", False: "off", None: "none"}.get(value, value) if isinstance(value, (bool, type(None))) \
        else value
    return f"\\[default: {shown}]"


def given(**options) -> dict:
    """The options the user gave (typer leaves the others None), with enum values and paths as text."""
    return {k: (v.value if isinstance(v, Enum) else str(v) if isinstance(v, Path) else v)
            for k, v in options.items() if v is not None}


def friendly(fn):
    """Turn the errors a user can cause into one red line and a non-zero exit.

    A full disk or an unwritable folder (an OSError no stage turned into a PipelineError) gets the
    sentence of ``pipeline.errors.storage_error``; any other OSError keeps its traceback.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PipelineError as exc:
            if not getattr(exc, "secondary", False):  # an error another process of the job has said already
                err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
            raise typer.Exit(130 if isinstance(exc, Interrupted) else 1) from None
        except OSError as exc:
            error = storage_error(exc)
            if error is None:
                raise
            err_console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print("[bold red]interrupted[/]; files already written are complete.")
            raise typer.Exit(130) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        import importlib.metadata

        from pipeline import __version__

        versions = ", ".join(f"{p} {importlib.metadata.version(p)}" for p in ("torch", "timm"))
        console.print(f"pipeline {__version__} ({versions})", highlight=False)
        raise typer.Exit()


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log each stage's details.")] = False,
         version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                               help="Print the version (and torch's and timm's) and exit.")] = False):
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=err_console, show_path=False)], force=True)
