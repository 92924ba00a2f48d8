"""Exceptions a user can act on.

- :class:`ConfigError`: malformed input (CLI exit code 2). Carries every problem found in a file,
  each with file, dotted key path, offending value and what was expected.
- :class:`MappingError`: valid input, but the mapping is infeasible, e.g. the model does not fit
  in SRAM + DRAM (exit code 3). Sweeps treat it as a skipped point.
- :class:`SimulationError`: simulated work that never finished (deadlock, or ``until`` reached)
  (exit code 4). Names the stuck tasks.

Programmer errors are ``assert``\\ s, never these.
"""

from __future__ import annotations

import reprlib
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = [
    "ConfigError",
    "ConfigProblem",
    "MappingError",
    "PalmsimError",
    "RunDirError",
    "SimulationError",
    "tile_list",
]


class PalmsimError(Exception):
    """Base class of every error palmsim raises for bad input or infeasible experiments."""

    exit_code = 1


def tile_list(tiles: Iterable[int], *, most: int = 4) -> str:
    """``tiles`` for a message, consecutive ids as runs, at most ``most`` runs written, so
    that a wafer's thousand tiles stay one line: "tile 3", "tiles 0-511", "tiles 0-39, 56-79
    and 3 more runs (992 tiles)". Pure."""
    ids = sorted(set(tiles))
    if len(ids) == 1:
        return f"tile {ids[0]}"
    runs: list[list[int]] = []
    for t in ids:
        if runs and t == runs[-1][1] + 1:
            runs[-1][1] = t
        else:
            runs.append([t, t])
    text = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:most])
    if len(runs) > most:
        text += f" and {len(runs) - most} more runs"
    return f"tiles {text}" + (f" ({len(ids)} tiles)" if len(runs) > 1 and len(ids) > 2 else "")


def _bounded_repr() -> reprlib.Repr:
    """``repr`` cut to a line's worth: a value in an error message may be any YAML, and a
    file of nested aliases (a 'billion laughs') expands to gigabytes when printed whole."""
    r = reprlib.Repr()
    r.maxlevel = 2
    r.maxlist = r.maxtuple = r.maxdict = r.maxset = r.maxfrozenset = 8
    r.maxstring = r.maxother = 160
    r.maxlong = 40
    return r


_REPR = _bounded_repr()

#: The most characters of a value an error message shows.
MAX_VALUE_CHARS = 300


def value_repr(value: object) -> str:
    """``repr(value)`` bounded in depth, items and length (:func:`_bounded_repr`)."""
    text = _REPR.repr(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 3] + "..."


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong in one config file. ``override``: the ``--set`` text that put the value
    there, where one did ('' for a file's own data); ``file`` then names it for the reader."""

    file: str
    key: str
    value: object
    expected: str
    override: str = field(default="", compare=False)

    def __str__(self) -> str:
        where = f"{self.file}: " if self.file else ""
        key = self.key or "<top level>"
        if self.value is _MISSING:
            return f"{where}{key}: missing; expected {self.expected}"
        return f"{where}{key}: got {value_repr(self.value)}; expected {self.expected}"


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


#: Marker for a required key that is absent.
_MISSING = _Missing()


class ConfigError(PalmsimError):
    """Malformed configuration: one or more :class:`ConfigProblem`."""

    exit_code = 2
    MISSING = _MISSING

    def __init__(self, problems: list[ConfigProblem]) -> None:
        assert problems, "ConfigError needs at least one problem"
        # one problem a key: a later check of a key whose value was refused sees it as
        # missing, or as its default, and would only repeat the first problem less clearly
        first: dict[tuple[str, str], ConfigProblem] = {}
        for problem in problems:
            first.setdefault((problem.file, problem.key), problem)
        self.problems = list(first.values())
        super().__init__(self._message())

    def _message(self) -> str:
        if len(self.problems) == 1:
            return str(self.problems[0])
        lines = [f"{len(self.problems)} problems:"] + [f"  {p}" for p in self.problems]
        return "\n".join(lines)

    @classmethod
    def single(
        cls, file: str, key: str, value: object, expected: str, override: str = ""
    ) -> ConfigError:
        """Build an error with one problem (:class:`ConfigProblem`)."""
        return cls([ConfigProblem(file, key, value, expected, override)])


class MappingError(PalmsimError):
    """A valid configuration whose mapping is infeasible (memory, grid size, divisibility).

    ``does_not_fit``: infeasible because its memory overflows a DRAM port (or, without DRAM,
    the SRAM), which ``run.memory_check`` false lets through.
    """

    exit_code = 3

    def __init__(self, message: str, *, does_not_fit: bool = False) -> None:
        super().__init__(message)
        self.does_not_fit = does_not_fit


class SimulationError(PalmsimError):
    """Simulated work did not finish: a deadlock, or the ``until`` time was reached."""

    exit_code = 4


class RunDirError(PalmsimError):
    """A results folder to read (``palmsim plot``) is missing or not written by ``palmsim run``."""

    exit_code = 5
