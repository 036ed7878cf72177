"""Named TOML files: a built-in name picks a file shipped with the package, anything else is a path.

Competition specs (``pipeline/competitions/specs``), recipes (``pipeline/recipes``) and search spaces
(``pipeline/recipes/spaces``) are all found and read here: one line for an unknown name (with the closest
built-in one) and for a file that is not valid TOML.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import tomllib

from pipeline.errors import ConfigError


@dataclass(frozen=True)
class NamedFiles:
    """A folder of built-in TOML files and how to speak of one of them.

    Args:
        folder: where the built-in files are (``<name>.toml``).
        what: the word for one, in "No recipe 'x'".
        title: the word at the start of a sentence about a file, in "Recipe x.toml is not valid TOML".
        a_file: what else the user may give, in "give a file or one of ...".
        listing: the command that lists the built-in ones.
    """

    folder: Path
    what: str
    title: str
    a_file: str = "a file"
    listing: str = ""

    def builtin(self) -> dict[str, Path]:
        """The built-in files, by name."""
        return {p.stem: p for p in sorted(self.folder.glob("*.toml"))}

    def path(self, name_or_path: str | Path) -> Path:
        """The built-in file ``name``, or the file given; ConfigError naming the closest built-in one otherwise."""
        named = self.builtin()
        if str(name_or_path) in named:
            return named[str(name_or_path)]
        path = Path(name_or_path)
        if path.is_file():
            return path
        close = difflib.get_close_matches(str(name_or_path), named, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        listing = f" (`{self.listing}` lists them)" if self.listing else ""
        raise ConfigError(f"No {self.what} {str(name_or_path)!r}{hint}: give {self.a_file} or one of "
                          f"{', '.join(named) or 'none'}{listing}.")

    def load(self, name_or_path: str | Path) -> tuple[Path, dict]:
        """The file ``name_or_path`` resolves to, and its TOML content."""
        path = self.path(name_or_path)
        return path, read_toml(path, self.title)


def read_toml(path: str | Path, title: str = "File") -> dict:
    """The TOML content of ``path``; ConfigError (one line, with the parser's position) when it is not TOML."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{title} {path} is not valid TOML ({exc}).") from None
    except OSError as exc:
        raise ConfigError(f"{title} {path} cannot be read ({exc.strerror or exc}).") from None
