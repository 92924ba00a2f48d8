"""Duck-typed chip and plan builders shared by the report tests."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class FakeChannel:
    """The duck type of hardware.chip.Channel the report relies on."""

    index: int
    kind: str
    src: str
    dst: str
    bandwidth_bytes_per_s: float
    latency_s: float = 0.0

    @property
    def name(self) -> str:
        return f"{self.src}->{self.dst}"


@dataclass(frozen=True)
class FakeChip:
    """The duck type of hardware.chip.Chip the report relies on."""

    channels: tuple[FakeChannel, ...]
    num_tiles: int


def build(cls: type, **given: Any) -> Any:
    """Instantiate a plan dataclass, filling fields the test does not care about with empties.

    Keeps these fixtures valid while the plan types grow fields the report does not read.
    """
    kwargs = {}
    for f in fields(cls):
        if f.name in given:
            kwargs[f.name] = given[f.name]
        elif f.default is not MISSING or f.default_factory is not MISSING:
            continue
        else:
            kind = str(f.type)
            kwargs[f.name] = (
                ()
                if kind.startswith("tuple")
                else ""
                if kind == "str"
                else 0
                if kind == "int"
                else 0.0
            )
    return cls(**kwargs)
