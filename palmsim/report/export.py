"""The only place palmsim writes files: one run's results folder.

:func:`write_run` writes ``summary.json``, ``resolved_config.yaml``, ``records.csv``,
``timeline.csv``, ``trace.json`` (Chrome Trace Event format, the one output in µs) and,
optionally, the default figures in ``plots/*.png``; :func:`read_run` reads a run folder back.
Output is byte-identical for identical inputs: keys are sorted, rows and events are in a
defined order and nothing reads the clock. :func:`run_id` names run folders by a
hash of the resolved config, so reruns and sweep points land deterministically.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from palmsim.engine.records import FlowRecord, IntervalRecord, MemoryRecord, RunTrace
from palmsim.errors import RunDirError
from palmsim.mapping.plan import MappingPlan
from palmsim.report.metrics import DRAM_KIND, ChipLike
from palmsim.report.timeline import TIMELINE_COLUMNS, binned_amount, utilization_timeline

__all__ = [
    "OP_TABLE_COLUMNS",
    "RECORD_COLUMNS",
    "TRACE_PIDS",
    "chrome_trace",
    "parse_records_csv",
    "read_csv_rows",
    "read_json",
    "read_run",
    "records_csv",
    "run_id",
    "timeline_csv",
    "write_csv",
    "write_json",
    "write_op_table",
    "write_plot",
    "write_report",
    "write_run",
]

#: Columns of ``records.csv``, in order.
RECORD_COLUMNS: tuple[str, ...] = (
    "record",
    "resource",
    "category",
    "start_s",
    "end_s",
    "stage",
    "microbatch",
    "label",
    "flop",
    "bytes",
    "flow_id",
    "src",
    "dst",
    "channels",
    # The typed identity of an interval (IntervalRecord.phase/layer/block/op), appended so
    # that the columns before them keep their meaning and readers never parse ``label``.
    "phase",
    "layer",
    "block",
    "op",
)

#: Chrome-trace process ids: compute tiles, network links, DRAM ports.
TRACE_PIDS: dict[str, int] = {"tiles": 1, "links": 2, "dram": 3}

#: Timeline bins when no bin width is given: the run is cut into this many bins.
DEFAULT_TIMELINE_BINS = 200

_US_PER_S = 1e6


def _json_ready(value: Any) -> Any:
    """A JSON/YAML-safe copy: tuples to lists, numpy to Python, non-finite floats to None."""
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_json_ready(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def run_id(resolved_config: Mapping[str, Any], version: str) -> str:
    """A 12-hex-digit id: sha256 of the canonical JSON of ``resolved_config`` plus ``version``.

    Canonical JSON has sorted keys, no whitespace and tuples as lists, so equal configs give
    equal ids regardless of key order.
    """
    canonical = json.dumps(
        {"config": _json_ready(resolved_config), "palmsim_version": str(version)},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]


# --------------------------------------------------------------------------- CSV


def _csv_text(header: tuple[str, ...], rows: list[list[Any]]) -> str:
    """CSV with ``\\n`` line ends; floats as their shortest round-trip repr."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _flow_resource(flow: FlowRecord) -> str:
    """``tile 3 -> tile 7``; ``dram`` stands for a DRAM port end (index -1)."""

    def end(tile: int) -> str:
        return "dram" if tile < 0 else f"tile {tile}"

    return f"{end(flow.src)} -> {end(flow.dst)}"


def records_csv(trace: RunTrace) -> str:
    """``records.csv`` text: compute intervals, then flows, each sorted by start time.

    Interval rows leave ``flow_id/src/dst/channels`` empty; flow rows leave ``label`` and
    ``flop`` empty and put the flow size in ``bytes`` and its route as space-separated channel
    indices in ``channels``. Times in seconds, sizes in bytes, work in FLOP.
    """
    rows: list[list[Any]] = []
    for rec in sorted(
        trace.intervals, key=lambda r: (r.start_s, r.tile, r.end_s, r.category, r.label)
    ):
        rows.append(
            [
                "interval",
                f"tile {rec.tile}",
                rec.category,
                float(rec.start_s),
                float(rec.end_s),
                rec.stage,
                rec.microbatch,
                rec.label,
                float(rec.flop),
                float(rec.bytes),
                "",
                "",
                "",
                "",
                rec.phase,
                rec.layer,
                rec.block,
                rec.op,
            ]
        )
    for flow in sorted(trace.flows, key=lambda f: (f.start_s, f.flow_id)):
        rows.append(
            [
                "flow",
                _flow_resource(flow),
                flow.category,
                float(flow.start_s),
                float(flow.end_s),
                flow.stage,
                flow.microbatch,
                "",
                "",
                float(flow.size_bytes),
                flow.flow_id,
                flow.src,
                flow.dst,
                " ".join(str(c) for c in flow.channels),
                "",
                "",
                "",
                "",
            ]
        )
    for mem in sorted(trace.memory, key=lambda m: (m.time_s, m.tile, m.activation_bytes)):
        rows.append(
            [
                "memory",
                f"tile {mem.tile}",
                "activation",
                float(mem.time_s),
                float(mem.time_s),
                "",
                "",
                "",
                "",
                float(mem.activation_bytes),
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
            ]
        )
    return _csv_text(RECORD_COLUMNS, rows)


def _tile_of(resource: str) -> int:
    """``tile 3`` -> 3."""
    return int(resource.split()[1])


def parse_records_csv(text: str, *, end_time_s: float, num_events: int) -> RunTrace:
    """The :class:`RunTrace` written by :func:`records_csv` (floats round-trip exactly).

    ``end_time_s`` and ``num_events`` are not in the CSV; they come from ``summary.json``.
    The host's wall time is not kept (0) and ``metadata`` is empty.
    """
    intervals: list[IntervalRecord] = []
    flows: list[FlowRecord] = []
    memory: list[MemoryRecord] = []
    reader = csv.DictReader(io.StringIO(text))
    for row in reader:
        kind = row["record"]
        if kind == "interval":
            intervals.append(
                IntervalRecord(
                    tile=_tile_of(row["resource"]),
                    category=row["category"],
                    start_s=float(row["start_s"]),
                    end_s=float(row["end_s"]),
                    stage=int(row["stage"]),
                    microbatch=int(row["microbatch"]),
                    label=row["label"],
                    flop=float(row["flop"]),
                    bytes=float(row["bytes"]),
                    phase=row.get("phase") or "",
                    layer=int(row.get("layer") or -1),
                    block=row.get("block") or "",
                    op=row.get("op") or "",
                )
            )
        elif kind == "flow":
            flows.append(
                FlowRecord(
                    flow_id=int(row["flow_id"]),
                    category=row["category"],
                    src=int(row["src"]),
                    dst=int(row["dst"]),
                    channels=tuple(int(c) for c in row["channels"].split()),
                    start_s=float(row["start_s"]),
                    end_s=float(row["end_s"]),
                    size_bytes=float(row["bytes"]),
                    stage=int(row["stage"]),
                    microbatch=int(row["microbatch"]),
                )
            )
        elif kind == "memory":
            memory.append(
                MemoryRecord(
                    tile=_tile_of(row["resource"]),
                    time_s=float(row["start_s"]),
                    activation_bytes=float(row["bytes"]),
                )
            )
        else:
            raise ValueError(f"records.csv: unknown record kind {kind!r}")
    return RunTrace(
        intervals=tuple(intervals),
        flows=tuple(flows),
        memory=tuple(memory),
        end_time_s=end_time_s,
        num_events=num_events,
        wall_time_s=0.0,
    )


def read_run(run_dir: str | Path) -> tuple[dict[str, Any], dict[str, Any], RunTrace]:
    """Read a run folder written by :func:`write_run`: summary, resolved config and trace.

    Raises:
        RunDirError: the folder or one of its files is missing or unreadable.
    """
    folder = Path(run_dir)
    texts: dict[str, str] = {}
    for name in ("summary.json", "resolved_config.yaml", "records.csv"):
        try:
            texts[name] = (folder / name).read_text(encoding="utf-8")
        except OSError as error:
            raise RunDirError(
                f"{folder}: not a run folder written by `palmsim run` "
                f"(cannot read {name}: {error.strerror})"
            ) from None
    try:
        summary = json.loads(texts["summary.json"])
        config = yaml.safe_load(texts["resolved_config.yaml"])
        trace = parse_records_csv(
            texts["records.csv"],
            end_time_s=float(summary["iteration_time_s"]),
            num_events=int(summary["simulated_events"]),
        )
    except (ValueError, KeyError, TypeError, yaml.YAMLError) as error:
        raise RunDirError(
            f"{folder}: unreadable run folder ({type(error).__name__}: {error})"
        ) from None
    return summary, config, trace


def timeline_csv(timeline: Mapping[str, np.ndarray]) -> str:
    """``timeline.csv`` text: one row per bin, columns :data:`TIMELINE_COLUMNS`."""
    columns = [np.asarray(timeline[name], dtype=np.float64) for name in TIMELINE_COLUMNS]
    rows = [[float(col[i]) for col in columns] for i in range(len(columns[0]))]
    return _csv_text(TIMELINE_COLUMNS, rows)


# --------------------------------------------------------------------------- Chrome trace


def _metadata(pid: int, tid: int, name: str, args: dict[str, Any]) -> dict[str, Any]:
    """A Trace Event Format metadata event (``ph: "M"``)."""
    return {"ph": "M", "pid": pid, "tid": tid, "ts": 0, "name": name, "args": args}


def _channel_busy_events(flows: list[FlowRecord], pid: int, tid: int) -> list[dict[str, Any]]:
    """X events of the merged busy intervals of one channel, with the bytes of their flows.

    Every flow lies inside exactly one merged interval, so each interval's ``bytes`` is the sum
    of the sizes of the flows that formed it.
    """
    events: list[dict[str, Any]] = []
    group: list[FlowRecord] = []
    group_end_s = -math.inf

    def close() -> None:
        if not group:
            return
        start_s = group[0].start_s
        categories = "+".join(sorted({f.category for f in group}))
        events.append(
            {
                "ph": "X",
                "pid": pid,
                "tid": tid,
                "ts": start_s * _US_PER_S,
                "dur": (group_end_s - start_s) * _US_PER_S,
                "name": categories,
                "cat": categories,
                "args": {
                    "bytes": float(sum(f.size_bytes for f in group)),
                    "num_flows": len(group),
                },
            }
        )

    for flow in sorted(flows, key=lambda f: (f.start_s, f.end_s, f.flow_id)):
        if group and flow.start_s <= group_end_s:
            group.append(flow)
            group_end_s = max(group_end_s, flow.end_s)
        else:
            close()
            group = [flow]
            group_end_s = flow.end_s
    close()
    return events


def chrome_trace(trace: RunTrace, chip: ChipLike, plan: MappingPlan) -> dict[str, Any]:
    """The run as a Chrome Trace Event Format object (times in µs).

    Process ``tiles`` (pid 1) has a thread per busy tile with one complete (``X``) event per
    compute interval; processes ``links`` (pid 2) and ``dram`` (pid 3) have a thread per busy
    channel with one ``X`` event per merged busy interval. Metadata (``M``) events name
    processes and threads. Flow arrows (``s``/``f``) join forward pipeline sends to their
    receivers; counter (``C``) tracks show activation occupancy, hot-link utilisation and DRAM
    bandwidth (see :func:`_flow_arrows`, :func:`_counter_events`). Events are sorted: metadata
    first, then by (pid, tid, ts, dur, name).
    """
    stage_of = plan.stage_of_tile()
    meta: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []

    for label, pid in TRACE_PIDS.items():
        meta.append(_metadata(pid, 0, "process_name", {"name": label}))
        meta.append(_metadata(pid, 0, "process_sort_index", {"sort_index": pid}))

    tiles_pid = TRACE_PIDS["tiles"]
    busy_tiles: set[int] = set()
    for rec in trace.intervals:
        busy_tiles.add(rec.tile)
        name = rec.label if rec.microbatch < 0 else f"{rec.label} mb{rec.microbatch}"
        events.append(
            {
                "ph": "X",
                "pid": tiles_pid,
                "tid": rec.tile,
                "ts": rec.start_s * _US_PER_S,
                "dur": (rec.end_s - rec.start_s) * _US_PER_S,
                "name": name,
                "cat": rec.category,
                "args": {
                    "microbatch": rec.microbatch,
                    "stage": rec.stage,
                    "flop": float(rec.flop),
                    "bytes": float(rec.bytes),
                },
            }
        )
    for tile in sorted(busy_tiles):
        stage = stage_of.get(tile)
        name = f"tile {tile}" if stage is None else f"tile {tile} (stage {stage})"
        meta.append(_metadata(tiles_pid, tile, "thread_name", {"name": name}))
        meta.append(_metadata(tiles_pid, tile, "thread_sort_index", {"sort_index": tile}))

    by_channel: dict[int, list[FlowRecord]] = defaultdict(list)
    for flow in trace.flows:
        for channel in flow.channels:
            by_channel[channel].append(flow)
    channels = {c.index: c for c in chip.channels}
    for index in sorted(by_channel):
        channel = channels[index]
        pid = TRACE_PIDS["dram"] if channel.kind == DRAM_KIND else TRACE_PIDS["links"]
        meta.append(_metadata(pid, index, "thread_name", {"name": str(channel.name)}))
        meta.append(_metadata(pid, index, "thread_sort_index", {"sort_index": index}))
        events.extend(_channel_busy_events(by_channel[index], pid, index))

    events.extend(_flow_arrows(trace, plan))
    events.extend(_counter_events(trace, chip, plan))

    meta.sort(key=lambda e: (e["pid"], e["tid"], e["name"]))
    events.sort(
        key=lambda e: (
            e["pid"],
            e["tid"],
            e["ts"],
            e.get("dur", 0.0),
            e["name"],
            e.get("cat", ""),
            e["ph"],
        )
    )
    return {"traceEvents": meta + events, "displayTimeUnit": "ms"}


#: Counter tracks per link/port are sampled in this many bins over the run (trace size cap).
COUNTER_BINS = 100
#: Per-link utilisation counters are drawn for this many hottest network links.
COUNTER_LINKS = 8


def _flow_arrows(trace: RunTrace, plan: MappingPlan) -> list[dict[str, Any]]:
    """Flow arrows (``s``/``f`` pairs, one ``id`` each) from each forward pipeline send of a
    stage's first tile (replica 0, TP rank 0) at its send time to the receiver tile at arrival.
    """
    stage_of = plan.stage_of_tile()
    senders = {stages[0] for stages in plan.stage_tiles[0]} if plan.stage_tiles else set()
    pid = TRACE_PIDS["tiles"]
    events: list[dict[str, Any]] = []
    for flow in trace.flows:
        if flow.src not in senders or flow.dst < 0 or flow.category != "p2p":
            continue
        if stage_of.get(flow.dst) != stage_of[flow.src] + 1:
            continue  # a backward (gradient) send
        name = f"fwd mb{flow.microbatch}"
        common = {"pid": pid, "name": name, "cat": "pipeline", "id": flow.flow_id}
        events.append({**common, "ph": "s", "tid": flow.src, "ts": flow.start_s * _US_PER_S})
        events.append(
            {**common, "ph": "f", "bp": "e", "tid": flow.dst, "ts": flow.end_s * _US_PER_S}
        )
    return events


def _counter_events(trace: RunTrace, chip: ChipLike, plan: MappingPlan) -> list[dict[str, Any]]:
    """Counter (``C``) tracks: stored activations of each stage's first tile (from the memory
    records), utilisation of the :data:`COUNTER_LINKS` busiest network links and the bandwidth
    of every DRAM channel, the last two in :data:`COUNTER_BINS` bins (``binned_amount``)."""
    events: list[dict[str, Any]] = []
    rows = {stages[0] for stages in plan.stage_tiles[0]} if plan.stage_tiles else set()
    for mem in trace.memory:
        if mem.tile in rows:
            events.append(
                {
                    "ph": "C",
                    "pid": TRACE_PIDS["tiles"],
                    "tid": mem.tile,
                    "ts": mem.time_s * _US_PER_S,
                    "name": f"activations tile {mem.tile}",
                    "args": {"bytes": float(mem.activation_bytes)},
                }
            )
    end_s = float(trace.end_time_s)
    if end_s <= 0:
        return events
    edges = np.linspace(0.0, end_s, COUNTER_BINS + 1)
    width_s = np.diff(edges)
    items: dict[int, list[tuple[float, float, float]]] = defaultdict(list)
    for flow in trace.flows:
        for channel in flow.channels:
            items[channel].append((flow.start_s, flow.end_s, flow.size_bytes))
    channels = {c.index: c for c in chip.channels}
    totals = {i: sum(x[2] for x in v) for i, v in items.items()}
    noc = sorted(
        (i for i in items if channels[i].kind != DRAM_KIND),
        key=lambda i: (-totals[i] / channels[i].bandwidth_bytes_per_s, i),
    )[:COUNTER_LINKS]
    dram = sorted(i for i in items if channels[i].kind == DRAM_KIND)
    for index in [*noc, *dram]:
        channel = channels[index]
        arr = np.array(items[index], dtype=np.float64)
        rate = binned_amount(edges, arr[:, 0], arr[:, 1], arr[:, 2]) / width_s
        is_dram = channel.kind == DRAM_KIND
        for start_s, value in zip(edges[:-1], rate, strict=True):
            events.append(
                {
                    "ph": "C",
                    "pid": TRACE_PIDS["dram" if is_dram else "links"],
                    "tid": index,
                    "ts": float(start_s) * _US_PER_S,
                    "name": f"{'bandwidth' if is_dram else 'utilization'} {channel.name}",
                    "args": (
                        {"bytes_per_s": float(value)}
                        if is_dram
                        else {"utilization": float(value / channel.bandwidth_bytes_per_s)}
                    ),
                }
            )
    return events


def _chrome_trace_text(trace_object: dict[str, Any]) -> str:
    """Serialise a trace object as valid JSON with one event per line (diff-friendly)."""
    encoder = json.JSONEncoder(sort_keys=True, allow_nan=False)  # one instance: ~30 % faster
    lines = [encoder.encode(e) for e in trace_object["traceEvents"]]
    head = f'{{"displayTimeUnit": {json.dumps(trace_object["displayTimeUnit"])}, "traceEvents": ['
    return head + "\n" + ",\n".join(lines) + "\n]}\n"


# --------------------------------------------------------------------------- the run folder


def _write_text(path: Path, text: str) -> None:
    """Write UTF-8 text with ``\\n`` line ends on every platform."""
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        handle.write(text)


def _write_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``.

    A reader (or a rerun after ``kill -9``) sees the old file or the new one, never half.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    _write_text(temporary, text)
    os.replace(temporary, out)
    return out


def write_json(path: str | Path, data: Mapping[str, Any]) -> Path:
    """Write ``data`` as JSON (sorted keys, indent 2, non-finite floats as null), atomically."""
    return _write_atomic(
        path, json.dumps(_json_ready(data), sort_keys=True, indent=2, allow_nan=False) + "\n"
    )


def read_json(path: str | Path) -> Any:
    """The JSON value in ``path`` (written by :func:`write_json`)."""
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def read_csv_rows(path: str | Path) -> list[dict[str, str]]:
    """The rows of a CSV table with a header line (e.g. a sweep's ``results.csv``)."""
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def write_csv(path: str | Path, header: tuple[str, ...], rows: list[list[Any]]) -> Path:
    """Write a CSV table (``\n`` line ends, floats as their shortest repr), atomically."""
    return _write_atomic(path, _csv_text(header, rows))


def write_run(
    out_dir: str | Path,
    *,
    summary: Mapping[str, Any],
    resolved_config: Mapping[str, Any],
    trace: RunTrace,
    chip: ChipLike,
    plan: MappingPlan,
    make_plots: bool = True,
    timeline_bin_s: float | None = None,
    plot_kinds: tuple[str, ...] | None = None,
) -> Path:
    """Write one run's results into ``out_dir`` (created if missing) and return it.

    Files: ``summary.json`` (sorted keys, indent 2), ``resolved_config.yaml`` (the given dict,
    in its order), ``records.csv``, ``timeline.csv``, ``trace.json`` and, if ``make_plots``,
    ``plots/{gantt,placement,noc,utilization,memory}.png``. Existing files of these names are
    overwritten.

    Args:
        out_dir: the run folder, e.g. ``results/<run_id>``.
        summary: the dict from :func:`palmsim.report.metrics.summarize`.
        resolved_config: the specs after defaults and overrides, as plain data.
        trace: the run's records.
        chip: the chip (duck-typed, see :class:`palmsim.report.metrics.ChipLike`).
        plan: the mapping the run executed.
        make_plots: also render the default figures into ``plots/`` (imports matplotlib).
        timeline_bin_s: timeline bin width [s]; by default the run is cut into
            :data:`DEFAULT_TIMELINE_BINS` bins.
        plot_kinds: the figures to draw (default :data:`palmsim.report.plots.DEFAULT_KINDS`;
            the floorplan kinds need a real :class:`~palmsim.hardware.chip.Chip`).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    _write_text(
        out / "summary.json",
        json.dumps(_json_ready(summary), sort_keys=True, indent=2, allow_nan=False) + "\n",
    )
    _write_text(
        out / "resolved_config.yaml",
        yaml.safe_dump(
            _json_ready(resolved_config),
            sort_keys=False,
            default_flow_style=False,
            allow_unicode=True,
        ),
    )
    _write_text(out / "records.csv", records_csv(trace))

    if timeline_bin_s is None:
        end_s = float(trace.end_time_s)
        timeline_bin_s = end_s / DEFAULT_TIMELINE_BINS if end_s > 0 else 1.0
    timeline = utilization_timeline(
        trace, chip, timeline_bin_s, tiles=plan.simulated_tiles, replication=plan.replication
    )
    _write_text(out / "timeline.csv", timeline_csv(timeline))

    _write_text(out / "trace.json", _chrome_trace_text(chrome_trace(trace, chip, plan)))

    if make_plots:
        from types import SimpleNamespace

        from palmsim.report import plots  # matplotlib only when asked for

        folder = out / "plots"
        folder.mkdir(exist_ok=True)
        run = SimpleNamespace(trace=trace, chip=chip, plan=plan)
        for kind in plots.DEFAULT_KINDS if plot_kinds is None else plot_kinds:
            plots.PLOT_KINDS.get(kind)(run, folder / f"{kind}.png", {})
    return out


def write_plot(run: Any, kind: str, path: str | Path, options: Mapping[str, Any]) -> Path:
    """Draw one figure ``kind`` of a loaded run into ``path`` (its folder is created).

    Raises:
        KeyError: unknown kind, with the known kinds and a "did you mean".
    """
    from palmsim.report import plots  # matplotlib only when asked for

    draw = plots.PLOT_KINDS.get(kind)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return draw(run, path, options)


def write_report(run: Any, run_dir: str | Path) -> Path:
    """Draw the default figures into ``RUN_DIR/plots/`` and write ``RUN_DIR/report.html``.

    ``run`` is a loaded run (:func:`palmsim.api.load_result`: ``trace``, ``chip``, ``plan``,
    ``summary``, ``config``). Returns the report's path.
    """
    from palmsim.report import plots  # matplotlib only when asked for
    from palmsim.report.html import bottlenecks, report_html

    folder = Path(run_dir)
    figures: dict[str, bytes] = {}
    for kind in plots.DEFAULT_KINDS:
        path = write_plot(run, kind, folder / "plots" / f"{kind}.png", {})
        figures[kind] = path.read_bytes()
    analysis = bottlenecks(run.trace, run.chip, run.plan, run.summary)
    out = folder / "report.html"
    _write_text(out, report_html(run.summary, run.config, figures, analysis))
    return out


#: Columns of ``op_table.csv`` (see :func:`palmsim.report.metrics.op_table_rows`).
OP_TABLE_COLUMNS = (
    "phase",
    "op",
    "count",
    "flop",
    "bytes",
    "intensity_flop_per_byte",
    "memory",
    "ridge_flop_per_byte",
    "time_s",
    "bound",
)


def write_op_table(out_dir: str | Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write ``op_table.csv`` (rows of :func:`palmsim.report.metrics.op_table_rows`) into
    ``out_dir`` (created if missing) and return its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "op_table.csv"
    _write_text(path, _csv_text(OP_TABLE_COLUMNS, [[r[c] for c in OP_TABLE_COLUMNS] for r in rows]))
    return path
