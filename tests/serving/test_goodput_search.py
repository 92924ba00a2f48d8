"""``palmsim search --objective goodput``: serving configurations ranked by goodput."""

from __future__ import annotations

from pathlib import Path

import pytest

from palmsim.api import serve
from palmsim.cli import main
from palmsim.errors import ConfigError, MappingError
from palmsim.explore.serving_search import (
    GOODPUT_COLUMNS,
    GoodputSpace,
    candidates,
    goodput_rows,
    search_goodput,
)

REPO = Path(__file__).resolve().parents[2]
NODE = str(REPO / "serving/llama3-8b-h100-node.yaml")
SMALL = ["serving.traffic.num_requests=30", "serving.traffic.rate_per_s=8"]


def test_default_candidates_keep_the_tiles_and_vary_tp():
    """On 8 tiles: tp 1, 2, 4, 8 with 8, 4, 2, 1 replicas; explicit replica counts that do
    not fit are dropped."""
    found = candidates(8, GoodputSpace(), 256, 8192)
    assert [(c.tp, c.pp, c.replicas) for c in found] == [(1, 1, 8), (2, 1, 4), (4, 1, 2), (8, 1, 1)]
    found = candidates(8, GoodputSpace(tp=(2,), replicas=(1, 4, 5)), 256, 8192)
    assert [c.replicas for c in found] == [1, 4]


def test_search_ranks_by_goodput_and_flags_infeasible_tp():
    """tp 3 does not divide Llama-3-8B's 32 heads: infeasible, with the mapper's reason. The
    simulated candidates are ranked by goodput, and each one's figures are those of
    ``palmsim serve`` with the same settings."""
    found = search_goodput(
        None, None, NODE, overrides=SMALL, space=GoodputSpace(tp=(1, 2, 3), replicas=(1,))
    )
    status = {c.tp: c.status for c in found}
    assert status == {1: "simulated", 2: "simulated", 3: "infeasible"}
    assert next(c for c in found if c.tp == 3).reason
    simulated = [c for c in found if c.status == "simulated"]
    goodputs = [c.summary["goodput_requests_per_s"] for c in simulated]
    assert goodputs == sorted(goodputs, reverse=True)
    best = simulated[0]
    alone = serve(None, None, NODE, overrides=[*SMALL, *best.overrides]).summary
    assert alone["goodput_requests_per_s"] == best.summary["goodput_requests_per_s"]
    (row,) = [r for r in goodput_rows(found) if r[0] == 1]
    energy = GOODPUT_COLUMNS.index("energy_per_output_token_j")
    assert row[energy] == alone["energy"]["energy_per_output_token_j"]


def test_cli_search_goodput_writes_results(tmp_path, capsys):
    code = main(
        ["search", "--objective", "goodput", "--serving", NODE, "--tp", "1", "--replicas", "1",
         "--out", str(tmp_path), "-q", *[a for s in SMALL for a in ("--set", s)]]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "objective: goodput" in out and "tp=1 pp=1 replicas=1" in out
    rows = (tmp_path / "results.csv").read_text().splitlines()
    assert rows[0].startswith("rank,tp,tp_2d,pp,replicas") and len(rows) == 2


def test_search_goodput_refuses_a_zero_count() -> None:
    """tp 0 divided the tile budget by zero; now a ConfigError naming the flag."""
    with pytest.raises(ConfigError, match="command line: --tp: got 0"):
        search_goodput(None, None, NODE, overrides=SMALL, space=GoodputSpace(tp=(0,)))


def test_a_space_that_fits_no_tiles_says_so(tmp_path, capsys):
    """A space of no configuration (tp 16 on the node file's 8 tiles, the default serving
    file's one; tp 64 with --replicas on dgx-h100's 32) was a table of 0 rows with exit 0; it
    is a MappingError naming the room."""
    with pytest.raises(MappingError, match="fits in 8 tiles, the serving file's replicas x tp"):
        search_goodput(None, None, NODE, overrides=SMALL, space=GoodputSpace(tp=(16,)))
    with pytest.raises(MappingError, match="fits in the hardware's 32 tiles"):
        search_goodput(
            None, None, NODE, overrides=SMALL, space=GoodputSpace(tp=(64,), replicas=(1,))
        )
    out = tmp_path / "out"
    assert main(["search", "--objective", "goodput", "--tp", "16", "--out", str(out), "-q"]) == 3
    err = capsys.readouterr().err
    assert err.startswith("palmsim: MappingError: nothing to search: ") and err.count("\n") == 1
    assert "fits in 1 tile, the serving file's" in err and not out.exists()


def test_a_serving_mapping_larger_than_the_hardware_names_the_serving_keys(capsys):
    """palmsim serve has no --pp/--tp/--dp: tp 4 on an n300's 2 chips is refused naming the
    serving file's keys and the replicas, not the run command's flags."""
    argv = ["serve", "--hw", "hw_configs/wormhole-n300.yaml", "--set", "serving.tp=4"]
    assert main([*argv, "--no-plots"]) == 3
    err = capsys.readouterr().err
    assert "mapping needs pp*tp*replicas = 1*4*1 = 4 tiles but the chip has 2 usable" in err
    assert "choose serving.pp, serving.tp and serving.replicas whose product" in err
    assert "--pp" not in err and err.count("\n") == 1


def test_2d_layouts_run_beside_the_1d_tp_of_their_product():
    """On 8 tiles with layouts 4x2 and 2x4 (tp 8) and 3x2 (tp 6, not a power of two): tp
    1, 2, 4, 6, 8, each 1-D first, tp 6's layout and tp 8's two after their 1-D one."""
    space = GoodputSpace(tp_2d=((4, 2), (2, 4), (3, 2)))
    found = candidates(8, space, 256, 8192)
    assert [(c.tp, c.tp_2d, c.replicas) for c in found] == [
        (1, None, 8),
        (2, None, 4),
        (4, None, 2),
        (6, None, 1),
        (6, (3, 2), 1),
        (8, None, 1),
        (8, (4, 2), 1),
        (8, (2, 4), 1),
    ]
    assert "serving.tp_2d=null" in found[0].overrides
    assert "serving.tp_2d=[3,2]" in found[4].overrides and found[4].name.startswith("tp=6 (3x2)")


def test_the_serving_files_layout_is_a_candidate_and_each_candidate_sets_its_own():
    """A ``--set serving.tp_2d=[4,2]`` held for every candidate, so every tp but 8 was
    infeasible ("a*b = 8 is not tp"); now it is one candidate beside tp 8's 1-D one, and
    each candidate's figures are those of ``palmsim serve`` with its settings."""
    small = ["serving.traffic.num_requests=6", "serving.weight_dtype=bfp8", "serving.tp=8"]
    found = search_goodput(
        "hw_configs/wormhole-t3000.yaml",
        "workloads/llama3-8b.yaml",
        None,
        overrides=[*small, "serving.tp_2d=[4,2]"],
        space=GoodputSpace(tp=(4, 8), replicas=(1,)),
    )
    assert sorted((c.tp, c.tp_2d or (), c.status) for c in found) == [
        (4, (), "simulated"),
        (8, (), "simulated"),
        (8, (4, 2), "simulated"),
    ]
    for cand in found:
        alone = serve(
            "hw_configs/wormhole-t3000.yaml",
            "workloads/llama3-8b.yaml",
            None,
            overrides=[*small, *cand.overrides],
        ).summary
        assert alone["ttft_p90_s"] == cand.summary["ttft_p90_s"]
