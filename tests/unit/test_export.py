"""The run folder: every file written, the Chrome trace well-formed, output deterministic."""

from __future__ import annotations

import csv
import gzip
import json
import re
from pathlib import Path

import pytest
import yaml

from palmsim.config.specs import MappingSpec
from palmsim.engine.records import FlowRecord, IntervalRecord, MemoryRecord, RunTrace
from palmsim.errors import RunDirError
from palmsim.mapping.plan import ComputeStep, MappingPlan, MemoryBreakdown, StageProgram
from palmsim.report.export import (
    RECORD_COLUMNS,
    check_records,
    chrome_trace,
    compact_trace,
    parse_records_csv,
    parse_records_npz,
    read_run,
    record_arrays,
    records_csv,
    records_npz,
    run_id,
    write_run,
)
from palmsim.report.metrics import summarize
from palmsim.report.timeline import TIMELINE_COLUMNS
from tests.trace_format import check_trace_events
from tests.unit.report_fakes import FakeChannel, FakeChip, build

FILES = ("summary.json", "resolved_config.yaml", "records.npz", "timeline.csv")
#: Written on request: ``csv_records=True`` and ``trace_kind="full"``.
EXPORTS = ("records.csv", "trace.json.gz")


@pytest.fixture
def run():
    """Two stages (tiles 0 and 1), two micro-batches, a p2p flow, a DRAM flow, a gradient flow."""
    chip = FakeChip(
        (
            FakeChannel(0, "intra_die", "tile:0", "tile:1", 100.0),
            FakeChannel(1, "intra_die", "tile:1", "tile:0", 100.0),
            FakeChannel(2, "dram", "dram:0", "tile:0", 1000.0),
        ),
        num_tiles=4,
    )
    programs = tuple(
        build(
            StageProgram,
            stage=s,
            layers=(s, s + 1),
            optimizer=ComputeStep("optimizer", 0.0, 0.0, 0.0, 0.0, 0.0),
        )
        for s in range(2)
    )
    plan = build(
        MappingPlan,
        mapping=MappingSpec(pp=2, tp=1, dp=1, micro_batch_size=1, schedule="gpipe"),
        num_microbatches=2,
        stage_tiles=(((0,), (1,)),),
        programs=programs,
        dram_port_of_tile=((0, 0), (1, 0)),
        memory=tuple((t, MemoryBreakdown(1.0, 1.0, 2.0, 4.0, 8.0, 0.0)) for t in (0, 1)),
        model_flop_per_iteration=1e6,
        peak_flop_per_s=1e6,
        samples_per_iteration=2,
        tokens_per_iteration=16,
    )
    intervals = (
        IntervalRecord(0, "forward", 0.0, 1.0, 0, 0, "L0.fwd", 100.0, 10.0),
        IntervalRecord(0, "forward", 1.0, 2.0, 0, 1, "L0.fwd", 100.0, 10.0),
        IntervalRecord(1, "forward", 1.25, 2.25, 1, 0, "L1.fwd", 100.0, 10.0),
        IntervalRecord(1, "forward", 2.25, 3.25, 1, 1, "L1.fwd", 100.0, 10.0),
        IntervalRecord(1, "backward", 3.25, 5.25, 1, 0, "L1.bwd", 200.0, 20.0),
        IntervalRecord(0, "optimizer", 8.0, 8.5, 0, -1, "optimizer", 5.0, 1.0),
    )
    flows = (
        FlowRecord(0, "p2p", 0, 1, (0,), 1.0, 1.25, 25.0, 0, 0),
        FlowRecord(1, "p2p", 0, 1, (0,), 2.0, 2.25, 25.0, 0, 1),
        FlowRecord(2, "p2p", 1, 0, (1,), 5.25, 5.5, 25.0, 1, 0),
        FlowRecord(3, "dram", -1, 0, (2,), 0.0, 0.5, 500.0, 0, 0),
        FlowRecord(4, "dp_allreduce", 0, 1, (0,), 2.1, 2.3, 10.0, 0, -1),
    )
    memory = (MemoryRecord(0, 0.0, 0.0), MemoryRecord(0, 1.0, 3.0))
    trace = RunTrace(intervals, flows, memory, 9.0, 42, 0.0)
    summary = summarize(trace, chip, plan, workload_name="w", hardware_name="h", version="0.0")
    config = {
        "hardware": {"name": "h", "chip": {"noc": {"bandwidth": "100 B/s"}}},
        "workload": {"name": "w"},
        "mapping": {"pp": 2, "schedule": "gpipe"},
    }
    return {
        "summary": summary,
        "resolved_config": config,
        "trace": trace,
        "chip": chip,
        "plan": plan,
    }


def test_write_run_writes_every_file(tmp_path, run):
    out = write_run(
        tmp_path / "a" / "b", make_plots=False, csv_records=True, trace_kind="full", **run
    )
    assert out == tmp_path / "a" / "b"
    for name in (*FILES, *EXPORTS):
        assert (out / name).stat().st_size > 0, name
    assert not (out / "plots").exists()

    summary = json.loads((out / "summary.json").read_text())
    assert summary == json.loads(json.dumps(run["summary"]))
    text = (out / "summary.json").read_text()
    assert text == json.dumps(summary, sort_keys=True, indent=2) + "\n"

    config = yaml.safe_load((out / "resolved_config.yaml").read_text())
    assert config == run["resolved_config"]
    assert list(config) == ["hardware", "workload", "mapping"]  # order kept

    with (out / "records.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == RECORD_COLUMNS
    assert len(rows) == 6 + 5 + 2
    assert [r["record"] for r in rows] == ["interval"] * 6 + ["flow"] * 5 + ["memory"] * 2
    assert [(r["resource"], float(r["start_s"]), float(r["bytes"])) for r in rows[-2:]] == [
        ("tile 0", 0.0, 0.0),
        ("tile 0", 1.0, 3.0),
    ]
    first = rows[0]
    assert (first["resource"], first["category"], first["label"]) == ("tile 0", "forward", "L0.fwd")
    assert float(first["start_s"]) == 0.0
    assert float(first["end_s"]) == 1.0
    dram = next(r for r in rows if r["category"] == "dram")
    assert (dram["resource"], float(dram["bytes"]), dram["channels"]) == (
        "dram -> tile 0",
        500.0,
        "2",
    )

    with (out / "timeline.csv").open(newline="") as handle:
        timeline = list(csv.reader(handle))
    assert tuple(timeline[0]) == TIMELINE_COLUMNS
    assert len(timeline) == 1 + 200  # default: 200 bins
    assert float(timeline[-1][1]) == 9.0  # the last bin ends with the run


def test_default_run_folder_has_no_csv_records_and_no_trace(tmp_path, run):
    out = write_run(tmp_path, make_plots=False, **run)
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)


def test_write_run_is_byte_identical(tmp_path, run):
    kinds = ("gantt", "utilization")  # the floorplan kinds need a real chip (tests/e2e)
    extra = {"csv_records": True, "trace_kind": "full"}
    first = write_run(tmp_path / "one", make_plots=True, plot_kinds=kinds, **extra, **run)
    second = write_run(tmp_path / "two", make_plots=True, plot_kinds=kinds, **extra, **run)
    for name in (*FILES, *EXPORTS, "plots/gantt.png", "plots/utilization.png"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_trace_json_follows_the_trace_event_format(tmp_path, run):
    out = write_run(tmp_path, make_plots=False, trace_kind="full", **run)
    trace = json.loads(gzip.decompress((out / "trace.json.gz").read_bytes()))
    assert trace["displayTimeUnit"] == "ms"
    events = trace["traceEvents"]
    phases = check_trace_events(events)
    assert set(phases) <= {"M", "X", "C", "s", "f"}

    meta = {(e["pid"], e["tid"], e["name"]): e["args"] for e in events if e["ph"] == "M"}
    assert meta[1, 0, "process_name"] == {"name": "tiles"}
    assert meta[2, 0, "process_name"] == {"name": "links"}
    assert meta[3, 0, "process_name"] == {"name": "dram"}
    assert meta[1, 0, "thread_name"] == {"name": "tile 0 (stage 0)"}
    assert meta[1, 1, "thread_name"] == {"name": "tile 1 (stage 1)"}
    assert meta[2, 0, "thread_name"] == {"name": "tile:0->tile:1"}
    assert meta[3, 2, "thread_name"] == {"name": "dram:0->tile:0"}
    # Metadata first.
    phases = [e["ph"] for e in events]
    assert phases == sorted(phases, key=lambda p: p != "M")

    tiles = [e for e in events if e["ph"] == "X" and e["pid"] == 1]
    assert len(tiles) == 6
    bwd = next(e for e in tiles if e["cat"] == "backward")
    assert bwd["tid"] == 1
    assert bwd["name"] == "L1.bwd mb0"
    assert bwd["ts"] == pytest.approx(3.25e6)  # µs = s * 1e6
    assert bwd["dur"] == pytest.approx(2.0e6)
    assert bwd["args"] == {"microbatch": 0, "stage": 1, "flop": 200.0, "bytes": 20.0}
    optimizer = next(e for e in tiles if e["cat"] == "optimizer")
    assert optimizer["name"] == "optimizer"  # no micro-batch

    # Channel 0: flows [1, 1.25], [2, 2.25] and [2.1, 2.3] -> busy [1, 1.25] and [2, 2.3].
    link0 = [e for e in events if e["ph"] == "X" and e["pid"] == 2 and e["tid"] == 0]
    assert [(e["ts"], e["dur"]) for e in link0] == [
        (pytest.approx(1.0e6), pytest.approx(0.25e6)),
        (pytest.approx(2.0e6), pytest.approx(0.3e6)),
    ]
    assert [e["args"]["bytes"] for e in link0] == [25.0, 35.0]
    assert link0[1]["name"] == "dp_allreduce+p2p"
    dram = [e for e in events if e["ph"] == "X" and e["pid"] == 3]
    assert [(e["tid"], e["args"]["bytes"]) for e in dram] == [(2, 500.0)]

    # Within a thread, X events are in time order.
    for pid, tid in {(e["pid"], e["tid"]) for e in events if e["ph"] == "X"}:
        ts = [e["ts"] for e in events if e["ph"] == "X" and (e["pid"], e["tid"]) == (pid, tid)]
        assert ts == sorted(ts)


def test_chrome_trace_is_independent_of_record_order(run):
    trace = run["trace"]
    shuffled = RunTrace(
        tuple(reversed(trace.intervals)),
        tuple(reversed(trace.flows)),
        trace.memory,
        trace.end_time_s,
        trace.num_events,
        trace.wall_time_s,
    )
    assert chrome_trace(shuffled, run["chip"], run["plan"]) == chrome_trace(
        trace, run["chip"], run["plan"]
    )


def test_write_run_with_plots_writes_a_png(tmp_path, run):
    out = write_run(tmp_path, plot_kinds=("gantt",), **run)
    assert (out / "plots" / "gantt.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_id_is_stable_short_and_sensitive():
    config = {"hardware": {"name": "h", "bw": "1 GB/s"}, "mapping": {"pp": 2, "tp": (1, 2)}}
    same_reordered = {"mapping": {"tp": [1, 2], "pp": 2}, "hardware": {"bw": "1 GB/s", "name": "h"}}
    rid = run_id(config, "0.1.0")
    assert re.fullmatch(r"[0-9a-f]{12}", rid)
    assert run_id(config, "0.1.0") == rid
    assert run_id(same_reordered, "0.1.0") == rid
    assert run_id(config, "0.1.1") != rid
    changed = {"hardware": {"name": "h", "bw": "2 GB/s"}, "mapping": {"pp": 2, "tp": (1, 2)}}
    assert run_id(changed, "0.1.0") != rid


def test_summary_json_has_no_wall_clock_of_its_own(tmp_path, run):
    """Everything in summary.json comes from the given dict: change nothing, get the same."""
    out = write_run(tmp_path, make_plots=False, **run)
    written = json.loads(Path(out / "summary.json").read_text())
    assert written["simulation_wall_time_s"] == run["summary"]["simulation_wall_time_s"]


def _records(trace: RunTrace) -> list[list[tuple]]:
    return [sorted(map(tuple, getattr(trace, part))) for part in ("intervals", "flows", "memory")]


def test_records_npz_round_trips_every_record_bit_for_bit(run):
    trace = run["trace"]
    back = parse_records_npz(records_npz(trace), end_time_s=9.0, num_events=42)
    assert _records(back) == _records(trace)
    # rows come back in records.csv's order, whatever order the engine appended them in
    csv_back = parse_records_csv(records_csv(trace), end_time_s=9.0, num_events=42)
    assert (back.intervals, back.flows, back.memory) == (
        csv_back.intervals,
        csv_back.flows,
        csv_back.memory,
    )
    shuffled = RunTrace(
        tuple(reversed(trace.intervals)),
        tuple(reversed(trace.flows)),
        tuple(reversed(trace.memory)),
        9.0,
        42,
        0.0,
    )
    assert records_npz(shuffled) == records_npz(trace)


def test_records_npz_keeps_floats_that_decimal_text_would_round(run):
    """Awkward floats (subnormal, 0.1 + 0.2, huge) survive the byte shuffle exactly."""
    odd = (5e-324, 0.1 + 0.2, 1.7976931348623157e308, -0.0)
    intervals = tuple(
        IntervalRecord(i, "forward", x, x, 0, 0, "a", x, x) for i, x in enumerate(odd)
    )
    trace = RunTrace(intervals, (), (), 1.0, 1, 0.0)
    back = parse_records_npz(records_npz(trace), end_time_s=1.0, num_events=1)
    assert [r.start_s.hex() for r in sorted(back.intervals)] == [
        r.start_s.hex() for r in sorted(intervals)
    ]


def test_records_npz_is_columnar_with_routes_stored_once(run):
    arrays = record_arrays(run["trace"])
    assert arrays["flow_id"].tolist() == [3, 0, 1, 4, 2]  # by start time
    routes = arrays["route_offsets"].tolist()
    assert routes == [0, 1, 2, 3]  # three distinct one-channel routes for five flows
    assert arrays["categories"].tolist() == sorted(
        {"forward", "backward", "optimizer", "p2p", "dram", "dp_allreduce"}
    )


def test_compact_trace_keeps_one_tile_per_stage(tmp_path):
    """Stage-first tiles 0 and 2 are kept; tile 1 (TP rank 1 of stage 0) is left out."""
    plan = build(MappingPlan, stage_tiles=(((0, 1), (2, 3)),))
    trace = RunTrace(
        (
            IntervalRecord(0, "forward", 0.0, 1.0, 0, 0, "a", 1.0, 1.0),
            IntervalRecord(1, "forward", 0.0, 1.0, 0, 0, "a", 1.0, 1.0),
            IntervalRecord(2, "forward", 1.0, 2.0, 1, 0, "a", 1.0, 1.0),
        ),
        (
            FlowRecord(0, "p2p", 0, 2, (0,), 1.0, 1.1, 1.0, 0, 0),
            FlowRecord(1, "p2p", 1, 3, (1,), 1.0, 1.1, 1.0, 0, 0),
            FlowRecord(2, "dram", -1, 1, (2,), 0.0, 0.1, 1.0, 0, 0),
        ),
        (MemoryRecord(0, 0.0, 1.0), MemoryRecord(1, 0.0, 1.0)),
        2.0,
        7,
        0.0,
    )
    compact = compact_trace(trace, plan)
    assert [r.tile for r in compact.intervals] == [0, 2]
    assert [f.flow_id for f in compact.flows] == [0]
    assert [m.tile for m in compact.memory] == [0]
    assert (compact.end_time_s, compact.num_events) == (2.0, 7)


def _folder(tmp_path, run):
    return write_run(tmp_path / "run", make_plots=False, **run)


def _edit_summary(folder, **values):
    summary = json.loads((folder / "summary.json").read_text())
    (folder / "summary.json").write_text(json.dumps({**summary, **values}))


def test_read_run_reads_back_what_write_run_wrote(tmp_path, run):
    summary, config, trace = read_run(_folder(tmp_path, run))
    assert summary["simulated_events"] == run["summary"]["simulated_events"]
    assert config == run["resolved_config"]
    assert _records(trace) == _records(run["trace"])


def test_read_run_falls_back_to_an_older_folders_records_csv(tmp_path, run):
    out = write_run(tmp_path / "old", make_plots=False, csv_records=True, **run)
    (out / "records.npz").unlink()
    _, _, trace = read_run(out)
    assert _records(trace) == _records(run["trace"])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "records.npz").unlink(), r"records\.npz: cannot read it"),
        (lambda d: (d / "summary.json").unlink(), r"summary\.json: cannot read it"),
        (lambda d: (d / "records.npz").write_bytes(b"PK\x03\x04 cut"), r"records\.npz: damaged"),
        (
            lambda d: (d / "records.npz").write_bytes((d / "records.npz").read_bytes()[:500]),
            r"records\.npz: damaged",
        ),
        (lambda d: (d / "summary.json").write_text("{"), r"summary\.json: damaged, not JSON"),
        (
            lambda d: (d / "summary.json").write_text('{"iteration_time_s": "x"}'),
            r"summary\.json: iteration_time_s is 'x', expected int or float",
        ),
        (lambda d: (d / "summary.json").write_text("[]"), r"summary\.json: expected a JSON object"),
        (
            lambda d: (d / "resolved_config.yaml").write_text("hardware: {}\n"),
            r"resolved_config\.yaml: no section workload, mapping",
        ),
        (lambda d: (d / "resolved_config.yaml").write_text(": : :"), r"damaged, not YAML"),
        (
            lambda d: _edit_summary(d, simulated_events=-5),
            r"summary\.json: simulated_events is -5, expected a count",
        ),
        (
            lambda d: _edit_summary(d, simulated_events=10**30),
            r"summary\.json: simulated_events is 1000.*, expected a count",
        ),
    ],
)
def test_a_damaged_run_folder_is_a_run_dir_error_naming_the_file(tmp_path, run, damage, message):
    folder = _folder(tmp_path, run)
    damage(folder)
    with pytest.raises(RunDirError, match=message):
        read_run(folder)


def _npz(arrays) -> bytes:
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def test_a_foreign_or_inconsistent_record_file_is_named_with_what_is_wrong(run):
    import numpy as np

    with pytest.raises(RunDirError, match="not a palmsim record file"):
        parse_records_npz(_npz({"x": np.arange(3)}), end_time_s=1.0, num_events=1)
    arrays = record_arrays(run["trace"])
    with pytest.raises(RunDirError, match="version 99"):
        parse_records_npz(_npz({**arrays, "version": np.array(99)}), end_time_s=1.0, num_events=1)
    short = {**arrays, "flow_src": arrays["flow_src"][:2]}
    with pytest.raises(RunDirError, match="flow columns differ in length"):
        parse_records_npz(_npz(short), end_time_s=1.0, num_events=1)
    del arrays["labels"]
    with pytest.raises(RunDirError, match="missing arrays labels"):
        parse_records_npz(_npz(arrays), end_time_s=1.0, num_events=1)
    arrays = record_arrays(run["trace"])
    with pytest.raises(RunDirError, match="interval_label indexes past labels"):
        parse_records_npz(
            _npz({**arrays, "labels": arrays["labels"][:1]}), end_time_s=1.0, num_events=1
        )


@pytest.mark.parametrize(
    ("version", "message"),
    [("abc", "dtype <U3 and shape ()"), ([1, 2, 3], "and shape (3,)"), (2.7, "dtype float64")],
)
def test_a_record_format_version_that_is_no_scalar_int_is_named(run, version, message):
    """A string, an array or a fraction as the version tag was a ValueError or TypeError (a
    fraction was even read, cut to an int)."""
    import numpy as np

    arrays = {**record_arrays(run["trace"]), "version": np.array(version)}
    with pytest.raises(RunDirError, match="record format version of dtype") as raised:
        parse_records_npz(_npz(arrays), end_time_s=1.0, num_events=1)
    assert message in str(raised.value) and str(raised.value).endswith("expected an int")


def test_a_bare_npy_array_as_record_file_is_named(run):
    """``np.load`` gives an array, not an archive, for a ``.npy`` file: a TypeError before."""
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, np.arange(3))
    with pytest.raises(RunDirError, match=r"where: not a record file \(a bare \.npy array"):
        parse_records_npz(buffer.getvalue(), end_time_s=1.0, num_events=1, where="where")


def test_a_record_column_past_int32_is_named_not_wrapped(run):
    """An int64 tile of 2**40 + t wrapped to t when read into its int32 column."""
    import numpy as np

    arrays = record_arrays(run["trace"])
    arrays["interval_tile"] = arrays["interval_tile"].astype(np.int64) + 2**40
    with pytest.raises(RunDirError, match=r"array interval_tile holds 10995\d+, past the int32"):
        parse_records_npz(_npz(arrays), end_time_s=1.0, num_events=1)
    arrays = record_arrays(run["trace"])
    arrays["flow_microbatch"] = arrays["flow_microbatch"].astype(np.int64)
    arrays["flow_microbatch"][0] = -(2**31) - 1
    with pytest.raises(RunDirError, match="array flow_microbatch holds -2147483649"):
        parse_records_npz(_npz(arrays), end_time_s=1.0, num_events=1)


def test_a_records_csv_int_past_int32_is_named(tmp_path, run):
    """The CSV of an older folder raised an OverflowError (an internal error) instead."""
    out = write_run(tmp_path / "old", make_plots=False, csv_records=True, **run)
    (out / "records.npz").unlink()
    with open(out / "records.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    first = next(r for r in rows if r["record"] == "interval")
    first["microbatch"] = str(2**40)
    with open(out / "records.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(RunDirError, match=r"records\.csv: damaged \(OverflowError"):
        read_run(out)


def test_write_run_reports_progress_file_by_file(tmp_path, run):
    """Before each file: (files written so far, files in all, the file); then (n, n, "")."""
    reports: list[tuple[int, int, str]] = []
    write_run(
        tmp_path,
        plot_kinds=("gantt",),
        progress=lambda *report: reports.append(report),
        **run,
    )
    assert reports == [
        (0, 4, "summary.json"),
        (1, 4, "records.npz"),
        (2, 4, "timeline.csv"),
        (3, 4, "plots/gantt.png"),
        (4, 4, ""),
    ]


def test_check_records_names_the_first_bad_record_of_each_kind() -> None:
    """The checks run on the columns and name the first failing record, as a walk over the
    records would: a NaN FLOP count in interval 2 (after two good ones), then, with that
    fixed, a flow over channel 99 of a 16-channel chip."""
    good = IntervalRecord(0, "forward", 0.0, 1.0, 0, 0, "L0", 1.0, 1.0)
    flow = FlowRecord(0, "p2p", 0, 1, (3, 99), 0.0, 1.0, 8.0, 0, 0)
    memory = (MemoryRecord(0, 0.5, 4.0),)
    limits = {"num_tiles": 8, "num_channels": 16, "num_stages": 2, "where": "run"}
    nan_flop = good._replace(flop=float("nan"))
    trace = RunTrace((good, good, nan_flop), (flow,), memory, 1.0, 0, 0.0)
    with pytest.raises(RunDirError, match=r"run: interval record 2: flop: got nan"):
        check_records(trace, **limits)
    trace = RunTrace((good,), (flow,), memory, 1.0, 0, 0.0)
    with pytest.raises(RunDirError, match=r"run: flow record 0: channels: got 99"):
        check_records(trace, **limits)
    check_records(RunTrace((good,), (), memory, 1.0, 0, 0.0), **limits)
    # a hand-edited file's flow ids: record 2 repeats record 0's id 7
    flows = tuple(flow._replace(channels=(3,), flow_id=n) for n in (7, 8, 7, 8))
    with pytest.raises(RunDirError, match=r"flow record 2: flow_id: got 7; .*\(flow record 0\)"):
        check_records(RunTrace((good,), flows, memory, 1.0, 0, 0.0), **limits)
