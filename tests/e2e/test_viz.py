"""Reading a run folder back and redrawing its figures without simulating (issue 7)."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pytest

from palmsim.api import load_experiment, load_result, resolved_config, simulate, summarize_result
from palmsim.cli import main
from palmsim.report.export import write_run

from .test_cli import HW, T18B

SMALL_OVERRIDES = ["model.num_hidden_layers=8", "training.global_batch_size=64"]
SMALL_FLAGS = {"pp": 4, "tp": 16, "micro_batch_size": 8}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """The small T-18B run, simulated once, written without plots."""
    experiment = load_experiment(HW, T18B, overrides=SMALL_OVERRIDES, mapping_flags=SMALL_FLAGS)
    result = simulate(experiment)
    out = tmp_path_factory.mktemp("viz") / "run"
    write_run(
        out,
        summary=summarize_result(result),
        resolved_config=resolved_config(experiment),
        trace=result.trace,
        chip=result.chip,
        plan=result.plan,
        make_plots=False,
        trace_kind="full",
    )
    return out, result


def _key(rec: object) -> tuple:
    return tuple(getattr(rec, f) for f in rec.__slots__)  # type: ignore[attr-defined]


def test_trace_round_trips_exactly(small) -> None:
    """Every interval, flow and memory record comes back bit-identical from records.npz."""
    out, result = small
    loaded = load_result(out)
    for part in ("intervals", "flows", "memory"):
        mine = sorted(map(_key, getattr(result.trace, part)))
        back = sorted(map(_key, getattr(loaded.trace, part)))
        assert mine == back, part
    assert loaded.trace.end_time_s == result.trace.end_time_s
    assert loaded.trace.num_events == result.trace.num_events
    assert loaded.plan.stage_tiles == result.plan.stage_tiles
    assert len(loaded.chip.channels) == len(result.chip.channels)


def test_missing_run_dir_is_one_line_exit_5(tmp_path: Path, capsys) -> None:
    assert main(["plot", "gantt", str(tmp_path / "nope")]) == 5
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a run folder" in err


def test_a_noc_category_the_run_has_no_flows_of_is_named(small, capsys) -> None:
    """--category p2pp drew an empty map (no flow has it); it is refused, listing the
    categories the run's flows have, with a did-you-mean."""
    out, result = small
    present = sorted({f.category for f in result.trace.flows})
    assert main(["plot", "noc", str(out), "--category", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"flows: {', '.join(present)}" in err
    assert "p2p" in present
    assert main(["plot", "noc", str(out), "--category", "p2pp"]) == 2
    assert "did you mean 'p2p'?" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (
            ["utilization", "--by", "bytes"],
            "--by: got 'bytes'; expected nothing for plot utilization: it applies to plot noc only",
        ),
        (
            ["memory", "--category", "p2p"],
            "--category: got 'p2p'; expected nothing for plot memory",
        ),
        (["placement", "--per-tile"], "--per-tile: got True; expected nothing for plot placement"),
        (
            ["noc", "--stage", "0"],
            "--stage: got 0; expected nothing for plot noc: it applies to plot gantt only",
        ),
        (["pareto", "--tiles", "0-3"], "--tiles: got (0, 3); expected nothing for plot pareto"),
    ],
)
def test_a_plot_flag_the_kind_does_not_read_is_refused(small, capsys, argv, says) -> None:
    """`plot utilization --by bytes` drew the utilisation as if --by had not been given: each
    option belongs to a kind (help: 'noc: colour by'), and any other kind refuses it."""
    out, _ = small
    kind, *flags = argv
    assert main(["plot", kind, str(out), *flags, "--out", str(out / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"palmsim: ConfigError: command line: {says}") and err.count("\n") == 1


def test_a_gantt_tile_range_with_no_simulated_tile_is_named(small, capsys) -> None:
    """--tiles past the chip was an internal ValueError from matplotlib (no rows to draw);
    it is refused naming the simulated tiles, and a range that holds one still draws."""
    out, result = small
    tiles = result.plan.simulated_tiles
    beyond = f"{max(tiles) + 1}-{max(tiles) + 100}"
    assert main(["plot", "gantt", str(out), "--tiles", beyond, "--out", str(out / "g.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"--tiles: got '{beyond}'; expected a range holding a tile the run simulated" in err
    assert f"({min(tiles)}..{max(tiles)})" in err
    ends = f"{max(tiles)}-{max(tiles) + 100}"
    assert main(["plot", "gantt", str(out), "--tiles", ends, "--out", str(out / "g.png")]) == 0


def test_noc_bytes_are_the_flows_bytes_on_each_channel(small) -> None:
    """Per channel, the heat-map's bytes are the sizes of the flows routed over it."""
    from palmsim.report.figdata import hottest_links, link_loads

    _, result = small
    trace, chip = result.trace, result.chip
    loads = link_loads(trace, chip)
    assert [x.channel for x in loads] == list(range(len(chip.channels)))
    expected = dict.fromkeys(range(len(chip.channels)), 0.0)
    for flow in trace.flows:
        for c in flow.channels:
            expected[c] += flow.size_bytes
    for load in loads:
        assert load.carried_bytes == pytest.approx(expected[load.channel], rel=1e-12)
        bw = chip.channels[load.channel].bandwidth_bytes_per_s
        assert load.utilization == pytest.approx(load.carried_bytes / (bw * trace.end_time_s))
    # Conservation: each flow's size counted once per hop.
    total = sum(f.size_bytes * len(f.channels) for f in trace.flows)
    assert sum(x.carried_bytes for x in loads) == pytest.approx(total, rel=1e-12)
    top = hottest_links(loads, 3)
    assert top[0].utilization == max(x.utilization for x in loads)
    assert top[0].utilization >= top[1].utilization >= top[2].utilization
    # One category (plot noc --category): only its flows count; the categories add up.
    categories = {f.category for f in trace.flows}
    assert len(categories) > 1
    by_category = [link_loads(trace, chip, c) for c in sorted(categories)]
    for load in loads:
        parts = sum(per[load.channel].carried_bytes for per in by_category)
        assert parts == pytest.approx(load.carried_bytes, rel=1e-12)


def test_placement_colours_each_tile_by_the_plans_stage(small) -> None:
    from palmsim.report.figdata import placement_cells

    _, result = small
    chip, plan = result.chip, result.plan
    cells = placement_cells(chip, plan)
    stage_of = plan.stage_of_tile()
    assert [c.tile for c in cells] == list(range(chip.num_tiles))
    for cell in cells:
        assert cell.stage == stage_of.get(cell.tile, -1)
        assert (cell.row, cell.col) == tuple(chip.tile_position(cell.tile))
    # pp=4 × tp=16 × dp=1 tiles in use; every DRAM port is marked once.
    assert sum(c.stage >= 0 for c in cells) == 4 * 16
    assert sorted(c.dram_port for c in cells if c.dram_port >= 0) == list(
        range(len(chip.dram_ports))
    )


def test_memory_bars_sum_to_the_plans_breakdown(small) -> None:
    from palmsim.report.figdata import memory_bars

    _, result = small
    plan = result.plan
    bars = memory_bars(result.chip, plan)
    breakdown = dict(plan.memory)
    port_of = dict(plan.dram_port_of_tile)
    assert [b.stage for b in bars] == list(range(4))
    for bar in bars:
        mem = breakdown[bar.tile]
        assert sum(bar.parts_bytes.values()) == pytest.approx(mem.total)
        assert bar.sram_bytes + bar.dram_bytes == pytest.approx(mem.total)
        assert bar.sram_capacity_bytes == 3 * 2**20
        # The shares of a port's used tiles add up to the port's capacity.
        port = port_of[bar.tile]
        sharing = sum(p == port for p in port_of.values())
        capacity = result.chip.dram_ports[port].capacity_bytes
        assert bar.dram_share_bytes * sharing == pytest.approx(capacity, rel=1e-12)


def test_gantt_boxes_cover_exactly_each_stages_intervals(small) -> None:
    """Every interval of a row's tile lies in one box; every box edge is an interval edge."""
    from palmsim.report.plots import gantt_boxes, gantt_rows

    _, result = small
    rows = gantt_rows(result.plan)
    assert [label for label, _ in rows] == [f"stage {s}" for s in range(4)]
    for _, tile in rows:
        own = [r for r in result.trace.intervals if r.tile == tile]
        boxes = gantt_boxes(own, tile)
        starts = {r.start_s for r in own}
        ends = {r.end_s for r in own}
        assert all(b[0] in starts and b[1] in ends for b in boxes)
        for rec in own:
            assert any(b[0] <= rec.start_s and rec.end_s <= b[1] for b in boxes), rec
        # Boxes do not overlap: the tile runs one thing at a time.
        for a, b in itertools.pairwise(boxes):
            assert a[1] <= b[0]
    per_tile = gantt_rows(result.plan, per_tile=True, stage=2)
    assert [t for _, t in per_tile] == list(result.plan.stage_tiles[0][2])


def test_plot_cli_redraws_every_kind(small, tmp_path: Path, capsys) -> None:
    out, _ = small
    for kind in ("gantt", "placement", "noc", "utilization", "memory"):
        target = tmp_path / f"{kind}.png"
        assert main(["plot", kind, str(out), "--out", str(target)]) == 0
        assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    tiles = ["--tiles", "0-3", "--out", str(tmp_path / "t.png")]
    assert main(["plot", "gantt", str(out), *tiles]) == 0
    assert main(["plot", "noc", str(out), "--by", "bytes", "--out", str(tmp_path / "b.png")]) == 0
    capsys.readouterr()
    assert main(["plot", "gant", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean 'gantt'" in err


CHROMIUM = Path("/usr/bin/chromium")


def test_report_is_self_contained_and_renders_every_figure(small, tmp_path: Path) -> None:
    """report.html references nothing external and headless Chromium decodes all 5 figures."""
    import re
    import shutil
    import subprocess

    out, _ = small
    folder = tmp_path / "run"
    shutil.copytree(out, folder)
    assert main(["report", str(folder)]) == 0
    page = (folder / "report.html").read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:)""", page)
    assert "http://" not in page and "https://" not in page
    assert page.count('src="data:image/png;base64,') == 6
    assert "exposed communication" in page and "pipeline bubble" in page
    # the report of any run shows the energy breakdown and the average power
    assert "Energy and cost" in page and "average power" in page and "static_tiles" in page
    if not CHROMIUM.exists():
        pytest.skip("chromium not installed (.ci/run installs it)")
    dom = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            (folder / "report.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert 'data-images-decoded="6"' in dom
    assert 'data-images-total="6"' in dom


def test_trace_json_events_are_valid_with_arrows_and_counters(small) -> None:
    """Every event of the real run's trace.json.gz is valid; one arrow per forward send."""
    import gzip
    import json

    from palmsim.report.export import COUNTER_BINS
    from tests.trace_format import check_trace_events

    out, result = small
    events = json.loads(gzip.decompress((out / "trace.json.gz").read_bytes()))["traceEvents"]
    phases = check_trace_events(events)
    # pp=4 stages, m = 64 samples / 8 per micro-batch = 8: (4 - 1) x 8 forward sends drawn
    # from each stage's first tile to the next stage.
    assert phases["s"] == phases["f"] == 3 * 8
    counters = [e for e in events if e["ph"] == "C"]
    links = {e["name"] for e in counters if e["name"].startswith("utilization ")}
    assert len(links) == 8
    for name in links:
        assert sum(e["name"] == name for e in counters) == COUNTER_BINS
    acts = [e for e in counters if e["name"].startswith("activations tile")]
    rows = {result.plan.stage_tiles[0][s][0] for s in range(4)}
    assert {e["tid"] for e in acts} == rows


def test_gpu_cluster_floorplan_uses_nodes_as_dies(tmp_path: Path) -> None:
    """On a GPU cluster each node is a 'die' row of GPUs; the figures draw without a trace."""
    from palmsim.engine.records import RunTrace
    from palmsim.hardware.chip import Chip
    from palmsim.mapping.mapper import map_workload
    from palmsim.report import plots
    from palmsim.report.figdata import placement_cells

    repo = Path(HW).parents[1]
    experiment = load_experiment(
        str(repo / "hw_configs" / "dgx-h100.yaml"),
        str(repo / "workloads" / "llama2-7b.yaml"),
        overrides=["model.num_hidden_layers=4", "training.global_batch_size=16"],
        mapping_flags={"pp": 2, "tp": 8, "dp": 2, "micro_batch_size": 1},
    )
    chip = Chip.from_spec(experiment.hardware)
    plan = map_workload(experiment, chip)
    cells = placement_cells(chip, plan)
    # pp=2 × tp=8 × dp=2 = 32 GPUs, each node (die) holds GPUs of one row.
    assert sum(c.stage >= 0 for c in cells) == 32
    for cell in cells:
        assert cell.die == chip.die_of(cell.tile) and cell.row == chip.tile_position(cell.tile)[0]
    empty = RunTrace((), (), (), 1.0, 0, 0.0)
    assert plots.placement(chip, plan, tmp_path / "p.png").stat().st_size > 0
    assert plots.noc(empty, chip, plan, tmp_path / "n.png").stat().st_size > 0
    assert plots.memory(chip, plan, tmp_path / "m.png").stat().st_size > 0


def test_a_cluster_of_many_nodes_draws_only_its_used_ones(tmp_path: Path) -> None:
    """16 GPUs used of 100 nodes x 8: the floorplans drew all 800 squares (a 32-GPU run on
    100,000 nodes spent minutes and gigabytes drawing them). Beyond 64 nodes the idle ones
    are left out and counted; the NIC and NVLink bars of idle GPUs were looked up in the
    drawn squares (KeyError) once they were."""
    from palmsim.engine.records import RunTrace
    from palmsim.hardware.chip import Chip
    from palmsim.mapping.mapper import map_workload
    from palmsim.report import plots
    from palmsim.report.figdata import placement_cells

    repo = Path(HW).parents[1]
    experiment = load_experiment(
        str(repo / "hw_configs" / "dgx-h100.yaml"),
        str(repo / "workloads" / "llama2-7b.yaml"),
        overrides=[
            "model.num_hidden_layers=2",
            "training.global_batch_size=16",
            "hw.system.chips=[100, 8]",
        ],
        mapping_flags={"pp": 1, "tp": 8, "dp": 2, "micro_batch_size": 1},
    )
    chip = Chip.from_spec(experiment.hardware)
    plan = map_workload(experiment, chip)
    cells, hidden = plots._drawn(placement_cells(chip, plan), chip)
    assert hidden == (100 - 2, 0) and len(cells) == 2 * 8
    assert {c.row for c in cells} == {0, 1} and all(c.stage >= 0 for c in cells)
    assert "98 idle nodes not drawn" in plots.placement_figure(chip, plan).axes[0].get_title(
        loc="left"
    )
    empty = RunTrace((), (), (), 1.0, 0, 0.0)  # every channel's load is 0, drawn or not
    title = plots.noc_figure(empty, chip, plan).axes[0].get_title(loc="left")
    assert "98 idle nodes not drawn" in title
    # all 100 nodes in use (DP 100): the first 64 are drawn
    busy = dataclasses.replace(
        experiment,
        mapping=dataclasses.replace(experiment.mapping, dp=100),
        workload=dataclasses.replace(
            experiment.workload,
            training=dataclasses.replace(experiment.workload.training, global_batch_size=100),
        ),
    )
    busy_plan = map_workload(busy, chip)
    cells, hidden = plots._drawn(placement_cells(chip, busy_plan), chip)
    assert hidden == (0, 100 - 64) and {c.row for c in cells} == set(range(64))
    assert plots._idle_note(hidden) == "; 36 nodes in use after the first 64 not drawn"
    # its legend: one entry a colour of tab20 (100 replicas were 100 entries), plus unused
    legend = plots.placement_figure(chip, busy_plan).axes[0].get_legend()
    labels = [t.get_text() for t in legend.get_texts()]
    assert len(labels) == 20 + 1 and labels[-1] == "unused"
    assert labels[0] == "DP replica 0, 20, ..." and labels[19] == "DP replica 19, 39, ..."


def test_bottlenecks_rank_links_and_tiles_and_convert_the_bubble(small) -> None:
    import json

    from palmsim.report.html import bottlenecks
    from palmsim.report.metrics import merge_intervals

    out, result = small
    summary = json.loads((out / "summary.json").read_text())
    found = bottlenecks(result.trace, result.chip, result.plan, summary)
    assert found.bubble_time_s == summary["pipeline_bubble_fraction"] * summary["iteration_time_s"]
    assert found.exposed_communication_s == summary["exposed_communication_s"]
    assert set(found.top_links) == {"network links", "inter-die links", "DRAM channels"}
    for group, rows in found.top_links.items():
        utils = [u for _, _, u, _ in rows]
        assert utils == sorted(utils, reverse=True) and 0 < len(utils) <= 10, group
    assert all(k == "inter_die" for _, k, _, _ in found.top_links["inter-die links"])
    assert all(k == "dram" for _, k, _, _ in found.top_links["DRAM channels"])
    # The busiest tile: its merged compute intervals over the makespan, recomputed here.
    tile, stage, util = found.top_tiles[0]
    spans = merge_intervals(
        (r.start_s, r.end_s)
        for r in result.trace.intervals
        if r.tile == tile and r.category in ("forward", "backward", "recompute", "optimizer")
    )
    busy_s = sum(e - s for s, e in spans)
    assert util == pytest.approx(busy_s / result.trace.end_time_s, rel=1e-12)
    assert stage == result.plan.stage_of_tile()[tile]


def test_compact_trace_shows_one_tile_per_stage_and_stays_valid(small, tmp_path: Path) -> None:
    """--trace=compact: valid events, tile rows only for each stage's first tile, arrows kept."""
    import gzip
    import json

    from tests.trace_format import check_trace_events

    out, result = small
    folder = tmp_path / "compact"
    write_run(
        folder,
        summary=summarize_result(result),
        resolved_config=resolved_config(result.experiment),
        trace=result.trace,
        chip=result.chip,
        plan=result.plan,
        make_plots=False,
        trace_kind="compact",
    )
    events = json.loads(gzip.decompress((folder / "trace.json.gz").read_bytes()))["traceEvents"]
    phases = check_trace_events(events)
    assert phases["s"] == phases["f"] == 3 * 8  # the same arrows as the full trace
    firsts = {result.plan.stage_tiles[0][s][0] for s in range(4)}
    assert {e["tid"] for e in events if e["ph"] == "X" and e["pid"] == 1} == firsts
    full = (out / "trace.json.gz").stat().st_size
    assert (folder / "trace.json.gz").stat().st_size < full / 4


def test_a_foreign_folder_is_one_line_exit_5_naming_the_file(tmp_path: Path, capsys) -> None:
    """A folder that is no command's output names the file it lacks; a search's results
    say what they are (test_cli: each command's folder)."""
    (tmp_path / "notes.txt").write_text("x")
    assert main(["report", str(tmp_path)]) == 5
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "summary.json" in err and "Traceback" not in err
    (tmp_path / "results.csv").write_text("pp,tp\n1,1\n")
    assert main(["report", str(tmp_path)]) == 5
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a search's folder, not a run" in err


def test_a_damaged_record_file_is_one_line_exit_5(small, tmp_path: Path, capsys) -> None:
    import shutil

    out, _ = small
    folder = tmp_path / "damaged"
    shutil.copytree(out, folder)
    data = (folder / "records.npz").read_bytes()
    (folder / "records.npz").write_bytes(data[: len(data) // 2])
    assert main(["plot", "gantt", str(folder)]) == 5
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "records.npz: damaged" in err
