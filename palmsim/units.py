"""SI unit multipliers and parsing of quantities written with units.

Inside palmsim every dimensional value is a Python ``float`` in SI base units: seconds, bytes,
FLOP, bytes/s, FLOP/s, Hz. Config files write units in the value (``256 GB/s``, ``3 MiB``,
``16 TFLOP/s``, ``1 ns``); :func:`parse_quantity` converts them once, at load time.

Constants here are *multipliers*: ``3 * MiB`` is a number of bytes and ``1 * ns`` a number of
seconds. Converting out of SI is always a division (``t_s / us``), done in ``report/``.

Prefix conventions: ``KB/MB/GB/TB/PB`` are decimal (10^3n); ``KiB/MiB/GiB/TiB`` are binary
(2^10n). ``TFLOP/s`` is 10^12 FLOP/s, never 2^40. A lower-case ``b`` means bits (``200 Gb/s`` is
25 GB/s), as network vendors quote NIC line rates.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

from palmsim.errors import ConfigError

__all__ = [
    "DIMENSIONS",
    "DISPLAY_UNITS",
    "GB",
    "KB",
    "MB",
    "PB",
    "TB",
    "GHz",
    "GiB",
    "KiB",
    "MiB",
    "TiB",
    "format_quantity",
    "ms",
    "ns",
    "parse_quantity",
    "significant",
    "us",
]

# Time (seconds).
ns = 1e-9
us = 1e-6
ms = 1e-3
# Data (bytes), decimal and binary.
KB = 1e3
MB = 1e6
GB = 1e9
TB = 1e12
PB = 1e15
KiB = float(2**10)
MiB = float(2**20)
GiB = float(2**30)
TiB = float(2**40)
# Frequency (Hz).
GHz = 1e9

_DECIMAL = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
_BINARY = {"Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50}
_TIME = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9, "ps": 1e-12, "h": 3600.0}
#: Sub-unit prefixes, accepted only by the energy, power and money dimensions (``pJ/FLOP``,
#: ``mW``); a byte or a FLOP has no fractions worth writing.
_SMALL = {"m": 1e-3, "u": 1e-6, "µ": 1e-6, "n": 1e-9, "p": 1e-12, "f": 1e-15}
#: Areas (m²) and areal densities (1/m²), written without prefixes arithmetic: ``mm2`` is
#: (1e-3 m)², not milli-(m²).
_LENGTH = {"m": 1.0, "cm": 1e-2, "mm": 1e-3, "um": 1e-6, "µm": 1e-6}
_AREA = {"m2": 1.0, "cm2": 1e-4, "mm2": 1e-6, "um2": 1e-12, "µm2": 1e-12}
#: Joules in one watt-hour.
_WATT_HOUR_J = 3600.0

#: Dimension name -> (SI unit shown to users, an accepted example).
DIMENSIONS: dict[str, tuple[str, str]] = {
    "time": ("s", "1 ns"),
    "bytes": ("B", "3 MiB"),
    "bandwidth": ("B/s", "256 GB/s"),
    "flop": ("FLOP", "2 TFLOP"),
    "flop_rate": ("FLOP/s", "16 TFLOP/s"),
    "frequency": ("Hz", "1 GHz"),
    "energy": ("J", "1.5 kWh"),
    "power": ("W", "700 W"),
    "energy_per_flop": ("J/FLOP", "0.5 pJ/FLOP"),
    "energy_per_byte": ("J/B", "4 pJ/bit"),
    "length": ("m", "300 mm"),
    "area": ("m2", "826 mm2"),
    "areal_density": ("/m2", "0.1 /cm2"),
    "money": ("USD", "25000 USD"),
    "money_per_energy": ("USD/J", "0.1 USD/kWh"),
}

#: How each dimension is named in messages.
_NOUN = {
    "time": "time",
    "bytes": "size in bytes",
    "bandwidth": "bandwidth",
    "flop": "FLOP count",
    "flop_rate": "FLOP rate",
    "frequency": "frequency",
    "energy": "energy",
    "power": "power",
    "energy_per_flop": "energy per FLOP",
    "energy_per_byte": "energy per byte",
    "length": "length",
    "area": "area",
    "areal_density": "count per area",
    "money": "amount of money",
    "money_per_energy": "price of energy",
}

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_QUANTITY_RE = re.compile(rf"^\s*({_NUMBER})\s*([^\s\d].*?)?\s*$")


def _split_prefix(unit: str, base: str) -> float | None:
    """Return the multiplier of ``unit`` = <prefix><base>, or None if it does not match."""
    if not unit.endswith(base):
        return None
    prefix = unit[: -len(base)]
    if prefix in _BINARY:
        return _BINARY[prefix]
    if prefix in _DECIMAL:
        return _DECIMAL[prefix]
    return None


def _split_any_prefix(unit: str, base: str) -> float | None:
    """Like :func:`_split_prefix`, also accepting the sub-unit prefixes (``p``, ``n``, ``m``...)."""
    if unit.endswith(base) and unit[: -len(base)] in _SMALL:
        return _SMALL[unit[: -len(base)]]
    return _split_prefix(unit, base)


def _physical_unit_to_si(u: str) -> tuple[str, float] | None:
    """Energy, power, area and money units (spaces removed) -> (dimension, multiplier)."""
    u = u.replace("^2", "2").replace("²", "2").replace("per", "/")
    if u in _LENGTH:
        return "length", _LENGTH[u]
    if u in _AREA:
        return "area", _AREA[u]
    if u.startswith("/") and u[1:] in _AREA:
        return "areal_density", 1.0 / _AREA[u[1:]]
    for dimension, bases, scale in (
        ("energy_per_flop", ("J/FLOP", "J/flop", "J/OP", "J/op"), 1.0),
        ("energy_per_byte", ("J/B", "J/byte"), 1.0),
        ("energy_per_byte", ("J/b", "J/bit"), 8.0),
        ("money_per_energy", ("USD/J",), 1.0),
        ("money_per_energy", ("USD/Wh",), 1.0 / _WATT_HOUR_J),
        ("energy", ("Wh",), _WATT_HOUR_J),
        ("energy", ("J",), 1.0),
        ("power", ("W",), 1.0),
        ("money", ("USD", "$"), 1.0),
    ):
        for base in bases:
            if dimension == "money_per_energy":
                # the prefix belongs to the energy: USD/kWh is dollars per 3.6 MJ
                head, _, tail = base.partition("/")
                if u.startswith(head + "/"):
                    mult = _split_prefix(u[len(head) + 1 :], tail)
                    if mult is not None:
                        return dimension, scale / mult
                continue
            if dimension in ("energy_per_flop", "energy_per_byte"):
                # the prefix belongs to the joule: pJ/bit
                joule, _, per = base.partition("/")
                if u.endswith("/" + per):
                    mult = _split_any_prefix(u[: -len(per) - 1], joule)
                    if mult is not None:
                        return dimension, mult * scale
                continue
            mult = _split_any_prefix(u, base)
            if mult is not None:
                return dimension, mult * scale
    return None


def _unit_to_si(unit: str) -> tuple[str, float] | None:
    """Map a unit string to (dimension, multiplier to SI), or None if unknown. The micro
    prefix may be written u, the micro sign µ (U+00B5) or the Greek letter μ (U+03BC, which
    Unicode's compatibility normalization makes of the micro sign)."""
    u = unit.replace(" ", "").replace("\u03bc", "µ")
    if u in _TIME:
        return "time", _TIME[u]
    physical = _physical_unit_to_si(u)
    if physical is not None:
        return physical
    for dimension, bases, scale in (
        ("bandwidth", ("B/s", "Bps"), 1.0),
        ("bandwidth", ("b/s", "bps", "bit/s"), 1.0 / 8.0),
        ("flop_rate", ("FLOP/s", "FLOPS", "flop/s", "OP/s", "OPS", "op/s"), 1.0),
        ("frequency", ("Hz",), 1.0),
        ("flop", ("FLOP", "flop", "OP"), 1.0),
        ("bytes", ("B", "byte", "bytes"), 1.0),
        ("bytes", ("b", "bit", "bits"), 1.0 / 8.0),
    ):
        for base in bases:
            mult = _split_prefix(u, base)
            if mult is not None:
                return dimension, mult * scale
    return None


def parse_quantity(value: object, expect: str, *, where: str = "", key: str = "") -> float:
    """Parse ``value`` such as ``"256 GB/s"`` into SI units of dimension ``expect``.

    Args:
        value: the raw config value, a string with a unit.
        expect: one of :data:`DIMENSIONS` (``"time"``, ``"bytes"``, ``"bandwidth"``, ...).
        where: file the value came from, for the error message.
        key: dotted key path of the value, for the error message.

    Returns:
        The value in SI base units (seconds, bytes, bytes/s, FLOP, FLOP/s, Hz).

    Raises:
        ConfigError: a bare number, an unknown unit, a unit of the wrong dimension, or a
            negative value.
    """
    unit_si, example = DIMENSIONS[expect]
    noun = _NOUN[expect]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ConfigError.single(where, key, value, f"a {noun} with a unit, e.g. '{example}'")
    if isinstance(value, (int, float)):
        raise ConfigError.single(
            where, key, value, f"a unit in the value: a bare number is ambiguous, e.g. '{example}'"
        )
    match = _QUANTITY_RE.match(value)
    if match is None or match.group(2) is None:
        raise ConfigError.single(where, key, value, f"a {noun} with a unit, e.g. '{example}'")
    number = float(match.group(1))
    parsed = _unit_to_si(match.group(2))
    if parsed is None:
        raise ConfigError.single(
            where, key, value, f"a known {noun} unit ({unit_si} with a prefix), e.g. '{example}'"
        )
    dimension, multiplier = parsed
    if dimension != expect:
        raise ConfigError.single(
            where, key, value, f"a {noun} (e.g. '{example}'), but this is a {_NOUN[dimension]}"
        )
    if number < 0:
        raise ConfigError.single(where, key, value, f"a non-negative {noun}")
    si = number * multiplier
    if not math.isfinite(si):  # 1e300 GB/s: a float beyond the largest double
        raise ConfigError.single(where, key, value, f"a finite {noun} (this overflows a double)")
    return si


#: How :func:`format_quantity` writes the dimensions whose SI unit reads badly with a decimal
#: prefix (``0.108 pJ/FLOP`` rather than ``1.08e-13 J/FLOP``); the first unit is preferred.
DISPLAY_UNITS: dict[str, tuple[str, ...]] = {
    "energy_per_flop": ("pJ/FLOP", "fJ/FLOP", "nJ/FLOP"),
    "energy_per_byte": ("pJ/B", "fJ/B", "nJ/B"),
    "length": ("mm", "cm", "m"),
    "area": ("mm2", "cm2", "m2", "um2"),
    "areal_density": ("/cm2", "/mm2", "/m2"),
    "money": ("USD",),
    "money_per_energy": ("USD/kWh", "USD/MWh", "USD/J"),
}

_FORMAT_PREFIXES = (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3), ("", 1.0))


def significant(x: float, digits: int) -> str:
    """``x`` to ``digits`` significant digits as ``:g`` writes it, but positional where that
    would write a large number with an exponent ("76416000", not "7.6416e+07"). Pure."""
    text = f"{x:.{digits}g}"
    return f"{Decimal(text):f}" if "e+" in text and abs(x) < 1e16 else text


def format_quantity(value: float, dimension: str) -> str:
    """Format an SI value for people, e.g. ``format_quantity(2.56e11, "bandwidth") == "256 GB/s"``.

    Times use s/ms/us/ns; other dimensions use decimal prefixes, so the text parses back with
    :func:`parse_quantity` to the same number (to 6 significant digits).
    """
    unit = DIMENSIONS[dimension][0]
    if dimension in DISPLAY_UNITS:
        name = DISPLAY_UNITS[dimension][0]
        return f"{significant(value / parse_quantity(f'1 {name}', dimension), 6)} {name}"
    if dimension == "time":
        for name, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
            if abs(value) >= scale or name == "ns":
                return f"{significant(value / scale, 6)} {name}"
    for prefix, scale in _FORMAT_PREFIXES:
        if abs(value) >= scale or prefix == "":
            return f"{significant(value / scale, 6)} {prefix}{unit}"
    raise AssertionError("unreachable")
