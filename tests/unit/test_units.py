"""Units: parsing quantities written with units into SI, and formatting SI back for people.

Expected values are worked out by hand from the prefix definitions: decimal prefixes are
powers of 10^3, binary ones powers of 2^10, a lower-case ``b`` is a bit (1/8 byte).
"""

from __future__ import annotations

import pytest

from palmsim.errors import ConfigError
from palmsim.units import GB, MB, GiB, KiB, MiB, format_quantity, ms, ns, parse_quantity, us


@pytest.mark.parametrize(
    ("text", "dimension", "expected"),
    [
        ("1 KB", "bytes", 1_000.0),
        ("1 kB", "bytes", 1_000.0),
        ("1 KiB", "bytes", 1_024.0),
        ("3 MB", "bytes", 3_000_000.0),
        ("3 MiB", "bytes", 3 * 1_048_576.0),
        ("80 GB", "bytes", 80e9),
        ("1 GiB", "bytes", 1_073_741_824.0),
        ("1 TiB", "bytes", 1_099_511_627_776.0),
        ("8 bits", "bytes", 1.0),
        ("1 Mb", "bytes", 125_000.0),
        ("256 GB/s", "bandwidth", 256e9),
        ("200 Gb/s", "bandwidth", 25e9),  # an HDR NIC: 200 gigabit = 25 gigabyte per second
        ("400 Gbps", "bandwidth", 50e9),
        ("2 TB/s", "bandwidth", 2e12),
        ("1 ns", "time", 1e-9),
        ("2 us", "time", 2e-6),
        ("2 µs", "time", 2e-6),
        ("2 \u03bcs", "time", 2e-6),  # the Greek mu, as NFKC writes the micro sign
        ("3 \u03bcm", "length", 3e-6),
        ("1.5 ms", "time", 1.5e-3),
        ("10 s", "time", 10.0),
        ("16 TFLOP/s", "flop_rate", 16e12),
        ("32 TOP/s", "flop_rate", 32e12),
        ("2 TFLOP", "flop", 2e12),
        ("1 GHz", "frequency", 1e9),
        ("3MiB", "bytes", 3 * 1_048_576.0),  # no space
        ("  1.5e3 GB/s ", "bandwidth", 1.5e12),  # exponent, surrounding blanks
        ("0 B", "bytes", 0.0),
    ],
)
def test_parse_quantity_converts_to_si(text: str, dimension: str, expected: float) -> None:
    assert parse_quantity(text, dimension) == pytest.approx(expected, rel=1e-12)


def test_decimal_and_binary_prefixes_are_not_confused() -> None:
    """3 MiB is 4.9 % more than 3 MB; TFLOP/s is 10^12, never 2^40."""
    assert parse_quantity("3 MiB", "bytes") - parse_quantity("3 MB", "bytes") == 145_728.0
    assert parse_quantity("1 TFLOP/s", "flop_rate") == 1e12


def test_constants_are_multipliers() -> None:
    assert 3 * MiB == 3 * 2**20
    assert 2 * KiB == 2048
    assert GiB == 2**30
    assert 5 * MB == 5e6
    assert 80 * GB == 80e9
    assert 1 * ns == 1e-9
    assert 20 * us == pytest.approx(2e-5)
    assert 1 * ms == 1e-3


def test_wrong_dimension_is_rejected_with_location() -> None:
    """'256 GB' is a size, not a bandwidth."""
    with pytest.raises(ConfigError, match=r"hw\.yaml: noc\.bw: got '256 GB'.*bandwidth") as info:
        parse_quantity("256 GB", "bandwidth", where="hw.yaml", key="noc.bw")
    assert info.value.problems[0].key == "noc.bw"
    assert info.value.problems[0].value == "256 GB"


@pytest.mark.parametrize(
    ("value", "dimension"), [("1e300 GB/s", "bandwidth"), ("1e306 TB", "bytes")]
)
def test_a_quantity_beyond_a_double_is_rejected_where_it_is_read(
    value: str, dimension: str
) -> None:
    """1e300 GB/s is 1e309 B/s, infinity as a float: it was accepted and failed later, when
    the resolved config re-read its own 'inf PB/s', naming no file or key."""
    with pytest.raises(ConfigError, match=r"hw\.yaml: x: got .*; expected a finite"):
        parse_quantity(value, dimension, where="hw.yaml", key="x")


@pytest.mark.parametrize("value", [256, 256.0, "256"])
def test_bare_number_is_rejected_with_an_example(value: object) -> None:
    with pytest.raises(ConfigError, match=r"e\.g\. '256 GB/s'"):
        parse_quantity(value, "bandwidth", key="x")


@pytest.mark.parametrize(
    ("value", "dimension"),
    [
        ("-1 ns", "time"),
        ("-3 MiB", "bytes"),
        ("1 parsec", "time"),
        ("GB/s", "bandwidth"),
        ("1 mB", "bytes"),  # milli-bytes are not a thing
        (True, "time"),
        (None, "time"),
        ([1, "ns"], "time"),
    ],
)
def test_invalid_quantities_are_rejected(value: object, dimension: str) -> None:
    with pytest.raises(ConfigError):
        parse_quantity(value, dimension)


def test_negative_value_message_says_non_negative() -> None:
    with pytest.raises(ConfigError, match="non-negative time"):
        parse_quantity("-1 ns", "time", key="noc.latency")


@pytest.mark.parametrize(
    ("value", "dimension", "expected"),
    [
        (256e9, "bandwidth", "256 GB/s"),
        (25e9, "bandwidth", "25 GB/s"),
        (16e12, "flop_rate", "16 TFLOP/s"),
        (19.5e12, "flop_rate", "19.5 TFLOP/s"),
        (1e-9, "time", "1 ns"),
        (1.5e-3, "time", "1.5 ms"),
        (2.5, "time", "2.5 s"),
        (80e9, "bytes", "80 GB"),
        (0.0, "bytes", "0 B"),
    ],
)
def test_format_quantity(value: float, dimension: str, expected: str) -> None:
    assert format_quantity(value, dimension) == expected


@pytest.mark.parametrize(
    ("value", "dimension"),
    [
        (256e9, "bandwidth"),
        (2039e9, "bandwidth"),
        (3350e9, "bandwidth"),
        (312e12, "flop_rate"),
        (1e-9, "time"),
        (100e-9, "time"),
        (2e-6, "time"),
        (80e9, "bytes"),
        (1e9, "frequency"),
    ],
)
def test_format_then_parse_round_trips(value: float, dimension: str) -> None:
    assert parse_quantity(format_quantity(value, dimension), dimension) == pytest.approx(
        value, rel=1e-12
    )


def test_format_of_binary_sizes_is_decimal_and_close() -> None:
    """format_quantity writes decimal prefixes: 3 MiB comes back within 6 significant digits."""
    text = format_quantity(3 * MiB, "bytes")
    assert text == "3.14573 MB"
    assert parse_quantity(text, "bytes") == pytest.approx(3 * MiB, rel=1e-5)


def test_large_quantities_are_written_positionally() -> None:
    """A DGX A100 SuperPOD's price, 76,416,000 USD, reads as digits, not "7.6416e+07 USD";
    the text still parses back to the number."""
    from palmsim.units import format_quantity, parse_quantity, significant

    assert significant(76416000.0, 6) == "76416000"
    assert significant(1.5e-7, 6) == "1.5e-07"
    assert significant(123.456789, 6) == "123.457"
    text = format_quantity(76416000.0, "money")
    assert text == "76416000 USD" and parse_quantity(text, "money") == 76416000.0
    assert format_quantity(3.6e9, "time") == "3600000000 s"
