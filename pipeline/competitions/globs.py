"""A spec's image globs (``**/train/*.jpg``) matched against relative posix paths in linear time.

``**/`` is any folders (or none), ``**`` any characters, ``*`` any characters but ``/``, ``?`` one of them. A
regular expression of such a glob backtracks: ``"**/" * 16 + "*.jpgx"`` took minutes per path with Python's
``re``. Here the glob is run as a set of states over the path's characters (Thompson's construction), so a path
costs at most (glob length x path length) steps, whatever the glob; the sets met are remembered (a lazily built
DFA, as RE2 does), so a catalogue of 300,000 paths costs one dictionary look-up per character. A glob with at most
two stars (``**/train/*.jpg``, every built-in spec's) backtracks at most quadratically, so it runs as a regular
expression, about twenty times faster in Python than the states.

Hand-written: ``fnmatch``, ``pathlib`` and ``glob.translate`` all compile to backtracking regular expressions; a
linear-time engine (RE2) would be a compiled dependency for twenty lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_FOLDERS, _ANY, _STAR, _ONE = "**/", "**", "*", "?"
_MAX_REMEMBERED = 100_000
_REGEX = {_FOLDERS: "(?:.*/)?", _ANY: ".*", _STAR: "[^/]*", _ONE: "[^/]"}


def _tokens(pattern: str) -> tuple[str, ...]:
    out, i = [], 0
    while i < len(pattern):
        token = next(t for t in (_FOLDERS, _ANY, _STAR, _ONE, pattern[i]) if pattern.startswith(t, i))
        if not (token in (_FOLDERS, _ANY) and out and out[-1] == token):  # '**/**/' is '**/'
            out.append(token)
        i += len(token)
    return tuple(out)


@dataclass(frozen=True)
class Glob:
    """A compiled glob: ``Glob.of("**/train/*.jpg").match("x/train/1.jpg")`` is True."""

    pattern: str
    tokens: tuple[str, ...]
    regex: re.Pattern | None = None  # the same glob as a regular expression, when it has at most two stars
    _steps: dict = field(default_factory=dict, compare=False, repr=False)  # (states, character) -> states

    @classmethod
    def of(cls, pattern: str) -> Glob:
        tokens = _tokens(pattern)
        stars = sum(t in (_FOLDERS, _ANY, _STAR) for t in tokens)
        return cls(pattern, tokens, re.compile("".join(_REGEX.get(t) or re.escape(t) for t in tokens) + r"\Z")
                   if stars <= 2 else None)

    def _closure(self, states: set) -> set:
        """The states reachable without reading a character: a wildcard (or a ``**/`` not yet entered) may match
        nothing. A state is (token index, inside a ``**/``)."""
        todo, seen = list(states), set(states)
        while todo:
            i, inside = todo.pop()
            if i < len(self.tokens) and not inside and self.tokens[i] in (_FOLDERS, _ANY, _STAR) \
                    and (i + 1, False) not in seen:
                seen.add((i + 1, False))
                todo.append((i + 1, False))
        return seen

    def _step(self, states: frozenset, ch: str) -> frozenset:
        step = set()
        for i, _inside in states:
            if i == len(self.tokens):
                continue
            token = self.tokens[i]
            if token == _FOLDERS:  # folders and their '/': stay inside, or leave after a '/'
                step.add((i, True))
                if ch == "/":
                    step.add((i + 1, False))
            elif token == _ANY or (token == _STAR and ch != "/"):
                step.add((i, False))
            elif token == ch or (token == _ONE and ch != "/"):
                step.add((i + 1, False))
        return frozenset(self._closure(step))

    def match(self, path: str) -> bool:
        """Whether the whole of ``path`` (relative, with ``/``) matches the glob."""
        return bool(self.regex.match(path)) if self.regex is not None else self.match_states(path)

    def match_states(self, path: str) -> bool:
        """:meth:`match` run as a set of states (linear in the path's length, whatever the glob)."""
        if len(self._steps) > _MAX_REMEMBERED:
            self._steps.clear()
        states = frozenset(self._closure({(0, False)}))
        for ch in path:
            key = (states, ch)
            if key not in self._steps:
                self._steps[key] = self._step(states, ch)
            states = self._steps[key]
            if not states:
                return False
        return (len(self.tokens), False) in states
