"""Bounded fuzzing of every input kind (issue 18): seeded mutations, each through the CLI in a
forked child. Each must exit 0, 2, 3 or 5, print no traceback, finish inside the time limit
and stay under 2 GiB. ``python scripts/fuzz.py`` is the long form (1000 per kind)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from scripts.fuzz import fuzz_kind, kinds, summarize

#: Mutations per kind: 14 kinds x 22 = 308 in CI.
PER_KIND = 22
#: Budgets small enough that an accepted input simulates in well under a second.
BUDGETS = ("run.max_events=30000", "run.max_memory=256 MiB")
TIME_LIMIT_S = 30.0
MAX_RSS_BYTES = 2 * 2**30

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="forks and reads Linux ru_maxrss")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    work = tmp_path_factory.mktemp("fuzz")
    return work, kinds(work, BUDGETS)


@pytest.mark.parametrize(
    "kind",
    [
        "hardware",
        "workload",
        "mapping",
        "hf",
        "sweep",
        "validate",
        "calibrate",
        "serving",
        "tiles_calibrate",
        "tiles_sdpa",
        "tiles_validate",
        "run_folder",
        "set",
        "flags",
    ],
)
def test_mutations_end_cleanly(kind: str, corpus: tuple[Path, dict]) -> None:
    work, table = corpus
    outcomes = fuzz_kind(
        table[kind], PER_KIND, seed=2026, scratch_root=work / "scratch", timeout_s=TIME_LIMIT_S
    )
    bad = [
        o for o in outcomes if not o.ok or o.exit_code is None or o.max_rss_bytes > MAX_RSS_BYTES
    ]
    detail = "\n".join(
        f"#{o.index} exit {o.exit_code} after {o.seconds:.1f} s ({o.mutation}): "
        f"{(o.traceback or o.message).strip()[-400:]}"
        for o in bad
    )
    assert not bad, f"{summarize(outcomes)}\n{detail}"
    # the mutations exercise more than the loader's refusals
    assert len({o.exit_code for o in outcomes}) >= 2 or kind in {"calibrate", "run_folder"}
