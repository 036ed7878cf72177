"""--help as a newcomer reads it in an 80-column terminal or a notebook cell: commands by stage, the long commands'
options in panels, descriptions with room to read and sentences that do not break where the source lines end."""

import re

import pytest
import typer
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.cli.app import OUTPUT, PREDICTION, RECIPE, SETTINGS, STAGE_DATA, STAGE_PREDICT, STAGE_TOOLS, STAGE_TRAIN

runner = CliRunner()
COMMANDS = [c.name or c.callback.__name__ for c in app.registered_commands]


def help_text(*command: str) -> str:
    r = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"})
    assert r.exit_code == 0, r.output
    return r.output


def panels(text: str) -> dict[str, list[str]]:
    """Each box of the help, by title: its lines between the borders."""
    boxes, title = {}, None
    for line in text.splitlines():
        top = re.match(r"╭─ (.+?) ─+╮", line)
        if top:
            title = top.group(1)
            boxes[title] = []
        elif line.startswith("╰"):
            title = None
        elif title is not None:
            boxes[title].append(line)
    return boxes


def description_width(lines: list[str]) -> int | None:
    """The width of a box's description column, read where a description wraps (a line that starts blank);
    None when every row fits on its first line."""
    starts = [len(inner) - len(inner.lstrip(" ")) for inner in (line[2:-1] for line in lines) if inner.startswith(" ")]
    return None if not starts else len(lines[0][2:-1]) - max(starts)


def test_the_tool_says_what_it_is_for_and_lists_commands_by_stage():
    text = help_text()
    first = next(line.strip() for line in text.splitlines() if line.strip() and "Usage:" not in line)
    assert first == "Image-classification competitions, from the data to a checked submission."
    boxes = panels(text)
    assert [t for t in boxes if t != "Options"] == [STAGE_DATA, STAGE_TRAIN, STAGE_PREDICT, STAGE_TOOLS]
    listed = [line[2:].split()[0] for t in boxes if t != "Options" for line in boxes[t] if line[2] != " "]
    assert sorted(listed) == sorted(COMMANDS)
    assert all(len([line for line in boxes[t] if line[2] != " "]) == len(boxes[t]) for t in boxes if t != "Options")


@pytest.mark.parametrize(("command", "titles"), [("train", [RECIPE, SETTINGS, OUTPUT]),
                                                 ("predict", [PREDICTION, OUTPUT, SETTINGS])])
def test_the_long_commands_put_every_option_in_a_panel(command, titles):
    boxes = panels(help_text(command))
    assert [t for t in boxes if t != "Options"] == titles
    assert [line.split()[1] for line in boxes["Options"]] == ["--help"]  # a new option must name its panel


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_reads_at_80_columns(command):
    text = help_text(*([command] if command else []))
    assert max(len(line) for line in text.splitlines()) <= 80
    for title, lines in panels(text).items():
        width = description_width(lines)
        assert width is None or width >= 30, f"{command} --help, panel {title!r}: descriptions {width} wide"


def test_train_help_is_half_as_long_as_it_was():
    assert len(help_text("train").splitlines()) < 160  # 281 lines before the panels and the shorter texts


def test_no_paragraph_of_a_command_breaks_where_its_source_line_ended():
    group = typer.main.get_group(app)
    for name, cmd in group.commands.items():
        assert all("\n" not in paragraph for paragraph in cmd.help.split("\n\n")), name
    assert "(`pipeline recipes NAME`), and the options given override it." in help_text("train")
