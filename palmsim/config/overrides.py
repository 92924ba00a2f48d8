"""``--set KEY=VALUE`` overrides, applied to a raw config dict before validation.

KEY is dotted and starts with a section prefix:

===============  ==============================  =========================
prefix           section it changes              path inside the section
===============  ==============================  =========================
``hw.``          the hardware file               rest of the key
``workload.``    the workload file               rest of the key
``model.``       the workload file               ``model.`` + rest
``training.``    the workload file               ``training.`` + rest
``inference.``   the workload file               ``inference.`` + rest
``mapping.``     the merged mapping sections     rest of the key
``run.``         the run settings                rest of the key
``serving.``     the serving file (palmsim serve) rest of the key
===============  ==============================  =========================

VALUE is parsed as YAML (:class:`YamlLoader`), so ``10`` is an int, ``1e-3`` a float, ``true``
a bool, ``[10, 8]`` a list and ``512 GB/s`` stays a string (the loader parses units later).
Overrides never mutate their input: :func:`apply_overrides` returns a deep copy.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from palmsim.errors import ConfigError, ConfigProblem


class YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading a number with an exponent as a number: ``1e-3``,
    ``2E5`` and ``1.5e3`` are floats, as in YAML 1.2 and JSON, where PyYAML's YAML 1.1 float
    needs a dot and a signed exponent (``1.0e-3``) and left them as text that every numeric
    key then refused."""


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"),
)

__all__ = [
    "OVERRIDE_WHERE",
    "SECTIONS",
    "Override",
    "YamlLoader",
    "apply_overrides",
    "blame_overrides",
    "mark_overrides",
    "outside_sections",
    "override_where",
    "parse_override",
    "split_overrides",
]

#: File name used in messages about the overrides themselves.
OVERRIDE_WHERE = "--set"


def override_where(text: str, applied_to: str | None = None) -> str:
    """The file a ConfigProblem names when override ``text`` (``hw.x=1``) caused it: ``--set
    TEXT``, or ``--set TEXT (applied to FILE)`` where it was applied to a config file (the
    problem's ``override`` holds TEXT itself)."""
    where = f"{OVERRIDE_WHERE} {text}"
    return where if applied_to is None else f"{where} (applied to {applied_to})"


def mark_overrides(problems: Sequence[ConfigProblem], texts: Sequence[str]) -> list[ConfigProblem]:
    """``problems``, each one whose file is :func:`override_where` of one of the override
    ``texts`` (a loader gave it that origin) carrying that text as its ``override``."""
    by_where = {override_where(text): text for text in texts}
    return [
        dataclasses.replace(p, override=by_where[p.file]) if p.file in by_where else p
        for p in problems
    ]


#: Key prefix -> (section, path prepended inside that section).
_PREFIXES: dict[str, tuple[str, tuple[str, ...]]] = {
    "hw": ("hw", ()),
    "workload": ("workload", ()),
    "model": ("workload", ("model",)),
    "training": ("workload", ("training",)),
    "inference": ("workload", ("inference",)),
    "mapping": ("mapping", ()),
    "run": ("run", ()),
    "serving": ("serving", ()),
}

#: The sections an override can change.
SECTIONS: tuple[str, ...] = ("hw", "workload", "mapping", "run", "serving")

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FORM = "KEY=VALUE with KEY starting with " + ", ".join(f"'{p}.'" for p in _PREFIXES)

#: The sections of a hardware file (:func:`palmsim.config.loader.hardware_schema`), which a
#: key copied from one (``system.node_link.latency``) starts with: its override is ``hw.``
#: and the key.
HARDWARE_SECTIONS = ("tile", "chip", "system", "dram", "energy", "cost")


def _prefix_hint(key: str) -> str:
    """A "did you mean" for an override key with no section prefix: ``hw.`` before a key that
    starts with a hardware file's section, else the closest prefix."""
    first, _, rest = key.partition(".")
    if first in HARDWARE_SECTIONS:
        return f"; did you mean 'hw.{key}'?"
    close = (
        ["hw"] if first == "hardware" else difflib.get_close_matches(first, list(_PREFIXES), n=1)
    )
    return f"; did you mean '{close[0]}.{rest}'?" if close and rest else ""


@dataclass(frozen=True, slots=True)
class Override:
    """One parsed ``--set`` override."""

    text: str  # the override as given, for messages
    section: str  # one of SECTIONS
    path: tuple[str, ...]  # key path inside the section
    value: Any  # the YAML-parsed value


def parse_override(text: str) -> Override:
    """Parse one ``KEY=VALUE`` override.

    Raises:
        ConfigError: no ``=``, an unknown prefix, an empty or non-identifier key component, or a
            value that is not valid YAML.
    """
    if not isinstance(text, str) or "=" not in text:
        raise ConfigError.single(OVERRIDE_WHERE, "", text, _FORM)
    key, _, value_text = text.partition("=")
    parts = key.strip().split(".")
    if parts[0] not in _PREFIXES or len(parts) < 2:
        raise ConfigError.single(
            OVERRIDE_WHERE, key.strip(), text, _FORM + _prefix_hint(key.strip())
        )
    bad = [p for p in parts[1:] if not _IDENTIFIER.match(p)]
    if bad:
        raise ConfigError.single(
            OVERRIDE_WHERE,
            key.strip(),
            text,
            f"a dotted key of identifiers, but {bad[0]!r} is not one (list items are set "
            "whole, e.g. 'hw.system.chips=[10, 8]')",
        )
    try:
        value = yaml.load(value_text, Loader=YamlLoader) if value_text.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError.single(
            OVERRIDE_WHERE, key.strip(), text, f"a VALUE that parses as YAML ({exc})"
        ) from None
    section, head = _PREFIXES[parts[0]]
    return Override(text=text, section=section, path=head + tuple(parts[1:]), value=value)


def split_overrides(overrides: Sequence[str]) -> dict[str, list[Override]]:
    """Parse every override and group them by section (``hw``, ``workload``, ``mapping``, ``run``).

    Every section is a key of the result, possibly with an empty list; order is preserved.

    Raises:
        ConfigError: listing every malformed override at once.
    """
    result: dict[str, list[Override]] = {s: [] for s in SECTIONS}
    problems: list[ConfigProblem] = []
    for text in overrides:
        try:
            ov = parse_override(text)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        result[ov.section].append(ov)
    if problems:
        raise ConfigError(problems)
    return result


def outside_sections(overrides: Sequence[str], sections: Sequence[str]) -> list[str]:
    """The overrides (as given) of a section not in ``sections``: those a caller that takes
    only ``sections`` must name rather than drop.

    Raises:
        ConfigError: listing every malformed override at once.
    """
    groups = split_overrides(overrides)
    return [ov.text for section, group in groups.items() if section not in sections for ov in group]


def apply_overrides(
    raw: dict[str, Any], overrides: Sequence[str], prefix: str, where: str
) -> dict[str, Any]:
    """Return a deep copy of ``raw`` with the overrides of section ``prefix`` applied.

    Args:
        raw: the raw config dict of one section (as read from a file); never mutated.
        overrides: every ``--set`` override of the run; all are syntax-checked, only those of
            section ``prefix`` are applied, in order (a later one wins).
        prefix: ``"hw"``, ``"workload"``, ``"mapping"`` or ``"run"`` (a trailing dot is allowed).
        where: the file ``raw`` came from, for messages.

    Missing intermediate mappings are created, so ``hw.tile.gemm.tile=[64,64]`` works even if the
    file has no ``gemm:`` section.

    Raises:
        ConfigError: a malformed override (any section), or an override that descends into a
            value that is not a mapping.
    """
    section = prefix.rstrip(".")
    if section not in SECTIONS:
        raise ValueError(f"unknown override section {prefix!r}; known: {', '.join(SECTIONS)}")
    result = copy.deepcopy(raw)
    problems: list[ConfigProblem] = []
    for ov in split_overrides(overrides)[section]:
        node = result
        for depth, part in enumerate(ov.path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                dotted = ".".join(ov.path[: depth + 1])
                problems.append(
                    ConfigProblem(where, dotted, child, f"a mapping, to apply override {ov.text!r}")
                )
                break
            node = child
        else:
            node[ov.path[-1]] = copy.deepcopy(ov.value)
    if problems:
        raise ConfigError(problems)
    return result


def _covers(path: str, key: str) -> bool:
    """Whether an override of dotted ``path`` set (part of) the value at problem ``key``."""
    return (
        key == path
        or key.startswith((path + ".", path + "["))
        or path.startswith((key + ".", key + "["))
    )


def blame_overrides(
    problems: Sequence[ConfigProblem],
    overrides: Sequence[str],
    prefix: str,
    where: str,
    shown: Sequence[str] | None = None,
) -> list[ConfigProblem]:
    """``problems`` with those of file ``where`` at a key an override set blamed on it.

    A problem at ``system.link.bandwith`` of the hardware file, when ``--set
    hw.system.link.bandwith=1`` put it there, names ``--set hw.system.link.bandwith=1 (applied to
    FILE)``: the user typed the mistake on the command line, not in the file. The last
    override of a key wins, as in :func:`apply_overrides`. ``shown``, parallel to
    ``overrides``, is how each was typed (e.g. before a model alias was made canonical).
    """
    section = prefix.rstrip(".")
    try:
        mine = split_overrides(overrides)[section]
    except ConfigError:
        return list(problems)
    typed = dict(zip(overrides, shown, strict=True)) if shown is not None else {}
    out = []
    for problem in problems:
        if problem.file == where:
            for ov in reversed(mine):
                if _covers(".".join(ov.path), problem.key):
                    text = typed.get(ov.text, ov.text)
                    blamed = override_where(text, where)
                    problem = dataclasses.replace(problem, file=blamed, override=text)
                    break
        out.append(problem)
    return out
