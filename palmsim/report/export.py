"""The only place palmsim writes files: one run's results folder.

:func:`write_run` writes ``summary.json``, ``resolved_config.yaml``, ``records.npz`` (the
records as compressed columns), ``timeline.csv``, optionally the default figures in
``plots/*.png`` and, on request, ``records.csv`` and ``trace.json.gz`` (Chrome Trace Event
format, the one output in µs); :func:`read_run` reads a run folder back and checks it.
Output is byte-identical for identical inputs: keys are sorted, rows and events are in a
defined order and nothing reads the clock. :func:`run_id` names run folders by a
hash of the resolved config, so reruns and sweep points land deterministically.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import math
import os
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import yaml

from palmsim.engine.records import (
    COLUMN_DTYPES,
    COLUMN_KINDS,
    FlowRecord,
    IntervalRecord,
    MemoryRecord,
    Records,
    RunTrace,
    gc_paused,
)
from palmsim.errors import RunDirError, value_repr
from palmsim.mapping.plan import MappingPlan
from palmsim.report.metrics import DRAM_KIND, ChipLike
from palmsim.report.timeline import TIMELINE_COLUMNS, binned_amount, utilization_timeline

__all__ = [
    "OP_TABLE_COLUMNS",
    "RECORD_COLUMNS",
    "TRACE_PIDS",
    "check_records",
    "checked_summary",
    "chrome_trace",
    "compact_trace",
    "make_folder",
    "parse_records_csv",
    "parse_records_npz",
    "read_csv_rows",
    "read_json",
    "read_run",
    "record_arrays",
    "records_csv",
    "records_npz",
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

#: Timeline bins when no bin width is given: the run is cut into this many bins. The same as
#: ``plots.utilization``'s, so ``write_run`` hands its timeline to that figure.
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
        missing = [name for name, value in row.items() if value is None]
        if missing or None in row:
            raise ValueError(
                f"line {reader.line_num}: "
                + (f"no {', '.join(missing)} (a truncated row)" if missing else "extra fields")
            )
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
        intervals=Records.of(IntervalRecord, intervals),
        flows=Records.of(FlowRecord, flows),
        memory=Records.of(MemoryRecord, memory),
        end_time_s=end_time_s,
        num_events=num_events,
        wall_time_s=0.0,
    )


# --------------------------------------------------------------------------- records.npz

#: Name of the columnar record file and the format tag and version it carries.
RECORDS_FILE = "records.npz"
RECORDS_FORMAT = "palmsim-records"
RECORDS_VERSION = 2  # 2: the intervals' typed identity (phase, layer, block, op)
#: The versions this palmsim reads: a version-1 file has no identity arrays (read as none).
_READABLE_VERSIONS = (1, 2)

#: The arrays of ``records.npz``: name -> numpy dtype ("U" = text). Rows are in the order of
#: :func:`records_csv`; ``*_category``/``interval_label`` index the vocabularies beside them,
#: ``flow_route`` indexes the distinct channel routes, stored flat (``route_channels``) with
#: offsets (``route_offsets``, one more than routes). The intervals' typed identity
#: (IntervalRecord.phase/layer/block/op) follows the arrays of version 1: ``interval_layer``
#: itself and ``interval_phase``/``_block``/``_op`` indexing ``phases``/``blocks``/``ops``, so
#: readers get structure without parsing labels.
RECORD_ARRAYS: dict[str, str] = {
    "format": "U",
    "version": "i8",
    "categories": "U",
    "labels": "U",
    "interval_tile": "i4",
    "interval_category": "i4",
    "interval_start_s": "f8",
    "interval_end_s": "f8",
    "interval_stage": "i4",
    "interval_microbatch": "i4",
    "interval_label": "i4",
    "interval_flop": "f8",
    "interval_bytes": "f8",
    "flow_id": "i8",
    "flow_category": "i4",
    "flow_src": "i4",
    "flow_dst": "i4",
    "flow_route": "i4",
    "flow_start_s": "f8",
    "flow_end_s": "f8",
    "flow_size_bytes": "f8",
    "flow_stage": "i4",
    "flow_microbatch": "i4",
    "route_channels": "i4",
    "route_offsets": "i8",
    "memory_tile": "i4",
    "memory_time_s": "f8",
    "memory_activation_bytes": "f8",
    "phases": "U",
    "blocks": "U",
    "ops": "U",
    "interval_phase": "i4",
    "interval_layer": "i4",
    "interval_block": "i4",
    "interval_op": "i4",
}
#: The identity arrays (version 2), absent from a version-1 file.
_IDENTITY_ARRAYS = (
    "phases",
    "blocks",
    "ops",
    "interval_phase",
    "interval_layer",
    "interval_block",
    "interval_op",
)
#: Interval fields stored as codes into a vocabulary: field -> vocabulary array.
_INTERVAL_VOCABULARIES = {
    "category": "categories",
    "label": "labels",
    "phase": "phases",
    "block": "blocks",
    "op": "ops",
}
#: Arrays of one table share its row count.
_TABLES = {
    "interval": [k for k in RECORD_ARRAYS if k.startswith("interval_")],
    "flow": [k for k in RECORD_ARRAYS if k.startswith("flow_")],
    "memory": [k for k in RECORD_ARRAYS if k.startswith("memory_")],
}


def _sorted_codes(
    columns: Sequence[Records[Any]], field: str
) -> tuple[list[np.ndarray], list[Any]]:
    """Field ``field`` of each of ``columns`` recoded into one vocabulary: the sorted distinct
    values the records hold (a value only in a table, not in a record, is left out)."""
    used: set[Any] = set()
    for records in columns:
        table = records.table(field)
        used.update(table[c] for c in np.unique(records.codes(field)).tolist())
    vocabulary = sorted(used)
    index = {v: i for i, v in enumerate(vocabulary)}
    recoded = []
    for records in columns:
        table = records.table(field)
        remap = np.fromiter((index.get(v, -1) for v in table), dtype=np.int32, count=len(table))
        recoded.append(remap[records.codes(field)])
    return recoded, vocabulary


def record_arrays(trace: RunTrace) -> dict[str, np.ndarray]:
    """The records as the columns of ``records.npz`` (see :data:`RECORD_ARRAYS`)."""
    with gc_paused():
        return dict(_record_columns(trace))


def _record_columns(trace: RunTrace) -> Iterator[tuple[str, np.ndarray]]:
    """The columns of :func:`record_arrays`, one at a time in :data:`RECORD_ARRAYS` order.

    Rows are sorted as in :func:`records_csv` (intervals by start, tile, end, category, label;
    flows by start and id; memory by time, tile, bytes), so the file does not depend on the
    engine's append order. Every float is the float64 the engine computed (exact round trip).
    The file's codes (into sorted vocabularies) and the sort orders are held throughout;
    each other column is the records' own, sorted when it is asked for, so a writer holds
    one sorted copy at a time.
    """
    intervals, flows, memory = trace.intervals, trace.flows, trace.memory
    # one vocabulary for both category columns, sorted, so codes order like the strings
    (interval_category, flow_category), categories = _sorted_codes((intervals, flows), "category")
    coded = {"interval_category": interval_category, "flow_category": flow_category}
    vocabularies = {"categories": categories}
    for name, vocabulary_name in _INTERVAL_VOCABULARIES.items():
        if name != "category":
            (coded[f"interval_{name}"],), vocabularies[vocabulary_name] = _sorted_codes(
                (intervals,), name
            )
    (coded["flow_route"],), routes = _sorted_codes((flows,), "channels")
    # each table's other columns: array name -> (records, field)
    sources: dict[str, tuple[Records[Any], str]] = {}
    for name in IntervalRecord._fields:
        if name not in _INTERVAL_VOCABULARIES:
            sources[f"interval_{name}"] = (intervals, name)
    for name in FlowRecord._fields:
        if name not in ("category", "channels"):
            sources[_FLOW_ARRAY.get(name, f"flow_{name}")] = (flows, name)
    for name in MemoryRecord._fields:
        sources[f"memory_{name}"] = (memory, name)

    def unsorted(name: str) -> np.ndarray:
        if name in coded:
            return coded[name]
        records, field = sources[name]
        return records.column(field).astype(RECORD_ARRAYS[name], copy=False)

    # np.lexsort sorts by its last key first and is stable, like sorted() with a tuple key
    orders = {
        "interval": np.lexsort(
            [unsorted(f"interval_{k}") for k in ("label", "category", "end_s", "tile", "start_s")]
        ),
        "flow": np.lexsort([unsorted("flow_id"), unsorted("flow_start_s")]),
        "memory": np.lexsort(
            [unsorted(f"memory_{k}") for k in ("activation_bytes", "tile", "time_s")]
        ),
    }
    table_of = {name: table for table, names in _TABLES.items() for name in names}
    for name in RECORD_ARRAYS:
        if name == "format":
            yield name, np.array(RECORDS_FORMAT)
        elif name == "version":
            yield name, np.array(RECORDS_VERSION, dtype=np.int64)
        elif name == "route_channels":
            flat = [c for route in routes for c in route]
            yield name, np.array(flat, dtype=np.int32).reshape(len(flat))
        elif name == "route_offsets":
            yield name, np.cumsum([0, *map(len, routes)], dtype=np.int64)
        elif name in vocabularies:
            vocabulary = vocabularies[name]
            yield name, np.array(vocabulary, dtype=str).reshape(len(vocabulary))
        else:
            yield name, unsorted(name)[orders[table_of[name]]]


def records_npz(trace: RunTrace) -> bytes:
    """``records.npz`` as bytes (see :func:`_write_records_npz`)."""
    buffer = io.BytesIO()
    _write_records_npz(buffer, trace)
    return buffer.getvalue()


#: zlib level of ``records.npz``'s members. W1's 42 MB of shuffled columns: level 6 (zlib's
#: default) 1.99 MB in 1.0 s, level 3 2.32 MB in 0.30 s, level 1 3.39 MB in 0.31 s (measured
#: 2026-12-04, load about 3).
NPZ_DEFLATE_LEVEL = 3


def _write_records_npz(handle: IO[bytes], trace: RunTrace) -> None:
    """Write ``records.npz``: the :func:`record_arrays` as ``.npy`` members of a deflated zip.

    Each float64 column is stored byte-shuffled (its 8 byte planes one after another, as
    HDF5's and Blosc's shuffle filters do) so deflate (at :data:`NPZ_DEFLATE_LEVEL`) finds
    the repeated exponent bytes; the reader unshuffles, so values are bit-identical. Members
    have a fixed timestamp, so equal records give equal bytes (``numpy.savez_compressed``
    stamps the clock). Columns are built and compressed straight into ``handle`` one at a
    time, so only one exists at once.
    """
    import zipfile

    with gc_paused(), zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, array in _record_columns(trace):
            if array.dtype == np.float64:
                array = _shuffle(array)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            # what ZipFile(compresslevel=...) sets on the members it names itself: the field
            # is ``compress_level`` from Python 3.13, ``_compresslevel`` before
            level_field = "compress_level" if hasattr(info, "compress_level") else "_compresslevel"
            setattr(info, level_field, NPZ_DEFLATE_LEVEL)
            with zf.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


def _shuffle(column: np.ndarray) -> np.ndarray:
    """float64 column -> uint8 array of its byte planes (plane k holds every value's byte k)."""
    return np.ascontiguousarray(column.astype("<f8").view(np.uint8).reshape(-1, 8).T).reshape(-1)


def _unshuffle(planes: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_shuffle`."""
    return np.ascontiguousarray(planes.reshape(8, -1).T).view("<f8").reshape(-1)


_INT32 = np.iinfo(np.int32)


def _check_arrays(arrays: Mapping[str, np.ndarray], where: str) -> None:
    """Raise :class:`RunDirError` unless ``arrays`` follow :data:`RECORD_ARRAYS`."""

    def bad(what: str) -> RunDirError:
        return RunDirError(f"{where}: {what}")

    if "format" not in arrays or str(arrays["format"]) != RECORDS_FORMAT:
        raise bad(f"not a palmsim record file (no format tag {RECORDS_FORMAT!r})")
    tag = arrays.get("version", np.array(-1))
    if tag.ndim != 0 or tag.dtype.kind not in "iu":
        raise bad(
            f"record format version of dtype {tag.dtype} and shape {tag.shape}, expected an int"
        )
    version = int(tag)
    if version not in _READABLE_VERSIONS:
        readable = " and ".join(map(str, _READABLE_VERSIONS))
        raise bad(f"record format version {version}, this palmsim reads {readable}")
    optional = _IDENTITY_ARRAYS if version == 1 else ()
    missing = [name for name in RECORD_ARRAYS if name not in arrays and name not in optional]
    if missing:
        raise bad(f"missing arrays {', '.join(missing)}")
    for name, kind in RECORD_ARRAYS.items():
        if name in ("format", "version") or name not in arrays:
            continue
        array = arrays[name]
        expected = "U" if kind == "U" else ("f" if kind == "f8" else "i")
        if array.ndim != 1 or array.dtype.kind != expected:
            raise bad(
                f"array {name} has dtype {array.dtype} and {array.ndim} dimensions, "
                f"expected a 1-d {kind} column"
            )
        if kind == "i4" and len(array):  # read into int32: a wider value would wrap
            for extreme in (int(array.min()), int(array.max())):
                if not _INT32.min <= extreme <= _INT32.max:
                    raise bad(f"array {name} holds {extreme}, past the int32 range of its column")
    for table, names in _TABLES.items():
        lengths = {name: len(arrays[name]) for name in names if name in arrays}
        if len(set(lengths.values())) > 1:
            raise bad(f"{table} columns differ in length: {lengths}")
    limits = (
        ("interval_category", "categories"),
        ("flow_category", "categories"),
        ("interval_label", "labels"),
        ("flow_route", "route_offsets"),
        ("interval_phase", "phases"),
        ("interval_block", "blocks"),
        ("interval_op", "ops"),
    )
    for codes, vocabulary in limits:
        if codes not in arrays:  # a version-1 file's identity
            continue
        size = len(arrays[vocabulary]) - (1 if vocabulary == "route_offsets" else 0)
        if len(arrays[codes]) and (arrays[codes].min() < 0 or arrays[codes].max() >= size):
            raise bad(f"{codes} indexes past {vocabulary}")
    offsets = arrays["route_offsets"]
    if (
        len(offsets) == 0
        or offsets[0] != 0
        or offsets[-1] != len(arrays["route_channels"])
        or np.any(np.diff(offsets) < 0)
    ):
        raise bad("route_offsets do not partition route_channels")


def parse_records_npz(
    data: bytes, *, end_time_s: float, num_events: int, where: str = RECORDS_FILE
) -> RunTrace:
    """The :class:`RunTrace` stored by :func:`records_npz` (values bit-identical).

    Raises:
        RunDirError: ``data`` is not a record file of this format, naming ``where`` and what
            is wrong (foreign file, other version, missing or inconsistent arrays, damage).
    """
    import zipfile
    import zlib

    try:
        loaded = np.load(io.BytesIO(data), allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # one .npy array, not an archive
            raise RunDirError(
                f"{where}: not a record file (a bare .npy array, not an .npz archive)"
            )
        with loaded as npz:
            arrays = {}
            for name in npz.files:
                array = npz[name]
                if (
                    name in RECORD_ARRAYS
                    and RECORD_ARRAYS[name] == "f8"
                    and array.dtype == np.uint8
                ):
                    array = _unshuffle(array)
                arrays[name] = array
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError, zlib.error) as error:
        raise RunDirError(f"{where}: damaged or not a record file ({error})") from None
    _check_arrays(arrays, where)
    with gc_paused():
        return _trace_of_arrays(arrays, end_time_s=end_time_s, num_events=num_events)


#: The arrays of the flow fields not named ``flow_<field>``.
_FLOW_ARRAY = {"flow_id": "flow_id", "channels": "flow_route"}


def _columns_of(
    record_type: type[Any], columns: Mapping[str, np.ndarray], tables: Mapping[str, list[Any]]
) -> Records[Any]:
    """:class:`Records` of checked file columns (coded fields: codes into ``tables``)."""
    kinds = COLUMN_KINDS[record_type]
    return Records.from_codes(
        record_type,
        {
            name: columns[name].astype(COLUMN_DTYPES[kind], copy=False)
            for name, kind in zip(record_type._fields, kinds, strict=True)
        },
        tables,
    )


def _trace_of_arrays(
    arrays: Mapping[str, np.ndarray], *, end_time_s: float, num_events: int
) -> RunTrace:
    """The :class:`RunTrace` of checked :data:`RECORD_ARRAYS` columns."""
    categories = arrays["categories"].tolist()
    offsets = arrays["route_offsets"].tolist()
    flat = arrays["route_channels"].tolist()
    routes = [tuple(flat[a:b]) for a, b in itertools.pairwise(offsets)]
    num_intervals = len(arrays["interval_tile"])
    interval_columns = {}
    interval_tables: dict[str, list[Any]] = {"category": categories}
    for name in IntervalRecord._fields:
        key = f"interval_{name}"
        if key in arrays:
            interval_columns[name] = arrays[key]
        else:  # a version-1 file's identity: none (code 0 of an empty name, layer -1)
            interval_columns[name] = np.full(num_intervals, -1 if name == "layer" else 0)
        if name in _INTERVAL_VOCABULARIES and name != "category":
            vocabulary = _INTERVAL_VOCABULARIES[name]
            interval_tables[name] = arrays[vocabulary].tolist() if key in arrays else [""]
    intervals = _columns_of(IntervalRecord, interval_columns, interval_tables)
    flows = _columns_of(
        FlowRecord,
        {name: arrays[_FLOW_ARRAY.get(name, f"flow_{name}")] for name in FlowRecord._fields},
        {"category": categories, "channels": routes},
    )
    memory = _columns_of(
        MemoryRecord, {name: arrays[f"memory_{name}"] for name in MemoryRecord._fields}, {}
    )
    return RunTrace(
        intervals=intervals,
        flows=flows,
        memory=memory,
        end_time_s=end_time_s,
        num_events=num_events,
        wall_time_s=0.0,
    )


def read_run(run_dir: str | Path) -> tuple[dict[str, Any], dict[str, Any], RunTrace]:
    """Read a run folder written by :func:`write_run`: summary, resolved config and trace.

    The records come from ``records.npz``, or from ``records.csv`` in a folder written before
    ``records.npz`` existed. Every file is checked against its schema before use.

    Raises:
        RunDirError: the folder is missing, foreign or damaged; the message names the file and
            what is wrong.
    """
    folder = Path(run_dir)
    if not folder.is_dir():
        raise RunDirError(f"{folder}: not a run folder (no such folder)")
    records_name = RECORDS_FILE if (folder / RECORDS_FILE).exists() else "records.csv"
    raw: dict[str, bytes] = {}
    for name in ("summary.json", "resolved_config.yaml", records_name):
        try:
            raw[name] = (folder / name).read_bytes()
        except OSError as error:
            what = "records.npz" if name == "records.csv" else name
            raise RunDirError(
                f"{folder / what}: cannot read it ({error.strerror}); "
                f"{folder} is not a run folder written by `palmsim run`"
            ) from None
    summary = _checked_summary(raw["summary.json"], folder / "summary.json")
    config = _checked_config(raw["resolved_config.yaml"], folder / "resolved_config.yaml")
    end_time_s = float(summary["iteration_time_s"])
    num_events = int(summary["simulated_events"])
    where = str(folder / records_name)
    if records_name == RECORDS_FILE:
        trace = parse_records_npz(
            raw[records_name], end_time_s=end_time_s, num_events=num_events, where=where
        )
    else:
        try:
            trace = parse_records_csv(
                raw[records_name].decode("utf-8"), end_time_s=end_time_s, num_events=num_events
            )
        except (
            ValueError,
            KeyError,
            TypeError,
            IndexError,
            UnicodeDecodeError,
            OverflowError,  # an int past its column's int32
        ) as error:
            raise RunDirError(f"{where}: damaged ({type(error).__name__}: {error})") from None
    return summary, config, trace


#: Keys of ``summary.json`` that :func:`read_run` needs, with their JSON types.
_SUMMARY_SCHEMA: dict[str, tuple[type, ...]] = {
    "iteration_time_s": (int, float),
    "simulated_events": (int,),
    "palmsim_version": (str,),
    "mapping": (dict,),
}
#: Sections of ``resolved_config.yaml`` that :func:`read_run` needs.
_CONFIG_SECTIONS = ("hardware", "workload", "mapping")
#: Sections of ``resolved_config.yaml`` that may be absent (an older folder) or null.
_OPTIONAL_SECTIONS = ("run",)


def _checked_summary(data: bytes, path: Path) -> dict[str, Any]:
    """``summary.json`` parsed and checked against :data:`_SUMMARY_SCHEMA`."""
    try:
        summary = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise RunDirError(f"{path}: damaged, not JSON ({error})") from None
    if not isinstance(summary, dict):
        raise RunDirError(f"{path}: expected a JSON object, found {type(summary).__name__}")
    for key, types in _SUMMARY_SCHEMA.items():
        if key not in summary:
            raise RunDirError(f"{path}: no key {key!r}: not a summary written by `palmsim run`")
        value = summary[key]
        if not isinstance(value, types) or isinstance(value, bool):
            raise RunDirError(
                f"{path}: {key} is {value!r}, expected {' or '.join(t.__name__ for t in types)}"
            )
    events = summary["simulated_events"]
    if not 0 <= events < 2**63:  # a count, as the engine keeps it (int64)
        raise RunDirError(
            f"{path}: simulated_events is {value_repr(events)}, expected a count 0..2**63-1"
        )
    return summary


def check_records(
    trace: RunTrace, *, num_tiles: int, num_channels: int, num_stages: int, where: str
) -> None:
    """Check a run folder's records against the chip and plan rebuilt from its config: tiles
    and channels that exist, stages of the plan (or -1), micro-batch and layer indices (or
    -1), finite non-negative quantities,
    times inside ``[0, iteration_time_s]`` (no record ends after the iteration) and flow ids
    that no two flow records share.

    Raises:
        RunDirError: naming ``where``, the record, the field and its value.
    """
    end_s = trace.end_time_s
    if not (math.isfinite(end_s) and end_s >= 0):
        raise RunDirError(f"{where}: iteration_time_s: got {end_s!r}; expected a time >= 0")
    limit_s = end_s * (1 + 1e-9)

    def bad(kind: str, index: int, field: str, value: Any, expected: str) -> RunDirError:
        return RunDirError(
            f"{where}: {kind} record {index}: {field}: got {value!r}; expected {expected}"
        )

    def time_ok(value: float) -> bool:
        return 0.0 <= value <= limit_s  # False for nan

    def amount_ok(value: float) -> bool:
        return 0.0 <= value < math.inf

    tiles = f"a tile 0..{num_tiles - 1}"
    stages = f"a stage -1..{num_stages - 1}"
    times = f"a time in [0, {end_s!r}] s (the iteration)"

    def check_interval(i: int, r: IntervalRecord) -> None:
        if not 0 <= r.tile < num_tiles:
            raise bad("interval", i, "tile", r.tile, tiles)
        if not -1 <= r.stage < num_stages:
            raise bad("interval", i, "stage", r.stage, stages)
        for field in ("microbatch", "layer"):
            if getattr(r, field) < -1:
                raise bad("interval", i, field, getattr(r, field), "an index >= 0, or -1 for none")
        for field in ("start_s", "end_s"):
            if not time_ok(getattr(r, field)):
                raise bad("interval", i, field, getattr(r, field), times)
        if r.end_s < r.start_s:
            raise bad("interval", i, "end_s", r.end_s, f"at least start_s {r.start_s!r}")
        for field in ("flop", "bytes"):
            if not amount_ok(getattr(r, field)):
                raise bad("interval", i, field, getattr(r, field), "a finite amount >= 0")

    def check_flow(i: int, f: FlowRecord) -> None:
        for channel in f.channels:
            if not 0 <= channel < num_channels:
                raise bad("flow", i, "channels", channel, f"a channel 0..{num_channels - 1}")
        if not -1 <= f.stage < num_stages:
            raise bad("flow", i, "stage", f.stage, stages)
        if f.microbatch < -1:
            raise bad("flow", i, "microbatch", f.microbatch, "an index >= 0, or -1 for none")
        for field in ("start_s", "end_s"):
            if not time_ok(getattr(f, field)):
                raise bad("flow", i, field, getattr(f, field), times)
        if f.end_s < f.start_s:
            raise bad("flow", i, "end_s", f.end_s, f"at least start_s {f.start_s!r}")
        if not amount_ok(f.size_bytes):
            raise bad("flow", i, "size_bytes", f.size_bytes, "a finite amount >= 0")

    def check_memory(i: int, m: MemoryRecord) -> None:
        if not 0 <= m.tile < num_tiles:
            raise bad("memory", i, "tile", m.tile, tiles)
        if not time_ok(m.time_s):
            raise bad("memory", i, "time_s", m.time_s, times)
        if not amount_ok(m.activation_bytes):
            raise bad("memory", i, "activation_bytes", m.activation_bytes, "a finite amount >= 0")

    # The same conditions on the columns find the records to check one by one (a NaN fails
    # every comparison, as above), so the first bad record of each kind is reported.
    def inside(values: np.ndarray, low: float, high: float) -> np.ndarray:
        return (values >= low) & (values < high)

    def timed(records: Records[Any], start: str, end: str) -> np.ndarray:
        start_s, end_s = records.column(start), records.column(end)
        return ((start_s >= 0.0) & (start_s <= limit_s) & (end_s >= 0.0) & (end_s <= limit_s)) & ~(
            end_s < start_s
        )

    intervals, flows, memory = trace.intervals, trace.flows, trace.memory
    interval_ok = inside(intervals.column("tile"), 0, num_tiles)
    interval_ok &= inside(intervals.column("stage"), -1, num_stages)
    for field in ("microbatch", "layer"):  # -1: none
        interval_ok &= intervals.column(field) >= -1
    interval_ok &= timed(intervals, "start_s", "end_s")
    for field in ("flop", "bytes"):
        interval_ok &= inside(intervals.column(field), 0.0, math.inf)
    route_ok = np.array(
        [all(0 <= c < num_channels for c in route) for route in flows.table("channels")], bool
    )
    flow_ok = route_ok.reshape(-1)[flows.codes("channels")]
    flow_ok &= inside(flows.column("stage"), -1, num_stages)
    flow_ok &= flows.column("microbatch") >= -1
    flow_ok &= timed(flows, "start_s", "end_s")
    flow_ok &= inside(flows.column("size_bytes"), 0.0, math.inf)
    memory_ok = inside(memory.column("tile"), 0, num_tiles)
    time_s = memory.column("time_s")
    memory_ok &= (time_s >= 0.0) & (time_s <= limit_s)
    memory_ok &= inside(memory.column("activation_bytes"), 0.0, math.inf)
    for i in np.flatnonzero(~interval_ok).tolist():
        check_interval(i, intervals[i])
    for i in np.flatnonzero(~flow_ok).tolist():
        check_flow(i, flows[i])
    for i in np.flatnonzero(~memory_ok).tolist():
        check_memory(i, memory[i])
    # A flow's id names it in the Chrome trace's arrows: no two records share one.
    ids = flows.column("flow_id")
    order = np.argsort(ids, kind="stable")
    repeats = order[1:][ids[order][1:] == ids[order][:-1]]
    if repeats.size:
        i = int(repeats.min())
        first = int(np.flatnonzero(ids == ids[i])[0])
        raise bad(
            "flow", i, "flow_id", int(ids[i]), f"an id no other record has (flow record {first})"
        )


#: The one ``summary.json`` figure the records cannot give back: the simulation's wall time.
_WALL_TIME_KEY = "simulation_wall_time_s"


def checked_summary(
    stored: Mapping[str, Any], derived: Mapping[str, Any], path: str | Path
) -> dict[str, Any]:
    """The summary a report of a run folder shows: ``derived`` (recomputed from the folder's
    records, chip and plan) with the stored wall time, once ``stored`` (its ``summary.json``)
    is found to agree with it.

    The summary is a pure function of the records, so ``derived`` is its schema: every key of
    ``derived`` must be in ``stored`` with a value of the same JSON type and, when the folder
    was written by this palmsim version, the same value (numbers to 1e-9 relative); keys
    ``stored`` has beyond it are ignored.

    Raises:
        RunDirError: naming the file, the key, the stored value and what the records give.
    """
    same_version = stored.get("palmsim_version") == derived.get("palmsim_version")

    def bad(key: str, value: Any, expected: str) -> RunDirError:
        shown = json.dumps(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        return RunDirError(
            f"{path}: {key}: got {shown}; expected {expected}: edited, or not this run's summary"
        )

    def check(old: Any, new: Any, key: str) -> None:
        if isinstance(new, dict):
            if not isinstance(old, dict):
                raise bad(key, old, "a JSON object")
            for name, value in new.items():
                if name in old:
                    check(old[name], value, f"{key}.{name}")
                elif same_version:
                    raise bad(f"{key}.{name}", None, f"{json.dumps(value)[:40]} from the records")
            return
        is_number = isinstance(new, (int, float)) and not isinstance(new, bool)
        if is_number:
            if not isinstance(old, (int, float)) or isinstance(old, bool):
                raise bad(key, old, "a number")
            if same_version and not (
                math.isclose(old, new, rel_tol=1e-9, abs_tol=1e-300)
                or (math.isnan(old) and math.isnan(new))
            ):
                raise bad(key, old, f"{new!r} from the records")
            return
        if new is None and old is not None:
            raise bad(key, old, "null")
        if new is not None and not isinstance(old, type(new)):
            raise bad(key, old, f"a {type(new).__name__}")
        if same_version and old != new:
            raise bad(key, old, f"{json.dumps(new)[:40]} from the records")

    for name, value in derived.items():
        if name == _WALL_TIME_KEY:
            continue
        if name in stored:
            check(stored[name], value, name)
        elif same_version:
            raise bad(name, None, f"{json.dumps(value)[:40]} from the records")
    wall = stored.get(_WALL_TIME_KEY, 0.0)
    if isinstance(wall, bool) or not isinstance(wall, (int, float)) or not wall >= 0:
        raise bad(_WALL_TIME_KEY, wall, "a number of seconds >= 0")
    return {**derived, _WALL_TIME_KEY: wall}


def _checked_config(data: bytes, path: Path) -> dict[str, Any]:
    """``resolved_config.yaml`` parsed, with its hardware, workload and mapping sections."""
    try:
        config = yaml.safe_load(data.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise RunDirError(f"{path}: damaged, not YAML ({type(error).__name__})") from None
    if not isinstance(config, dict):
        raise RunDirError(f"{path}: expected a mapping of sections, found {type(config).__name__}")
    missing = [s for s in _CONFIG_SECTIONS if not isinstance(config.get(s), dict)]
    if missing:
        raise RunDirError(f"{path}: no section {', '.join(missing)}: not written by `palmsim run`")
    for name in _OPTIONAL_SECTIONS:
        value = config.get(name)
        if value is not None and not isinstance(value, dict):
            raise RunDirError(f"{path}: {name}: got {repr(value)[:60]}; expected a mapping of keys")
    return config


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


def make_folder(path: str | Path) -> Path:
    """Create the folder ``path`` and its parents (none if it exists); return it.

    Raises:
        OSError: it cannot be made (a file of its name, no permission).
    """
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_csv(path: str | Path, header: tuple[str, ...], rows: list[list[Any]]) -> Path:
    """Write a CSV table (``\n`` line ends, floats as their shortest repr), atomically."""
    return _write_atomic(path, _csv_text(header, rows))


#: ``--trace`` kinds: every busy interval of every tile, link and DRAM channel, or
#: :func:`compact_trace`'s one tile per stage.
TRACE_KINDS = ("full", "compact")
#: The Chrome trace file: gzip-compressed JSON, which Perfetto and chrome://tracing open as is.
TRACE_FILE = "trace.json.gz"


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)


def _gzip(text: str) -> bytes:
    """gzip of UTF-8 ``text`` with no timestamp or name in the header (deterministic bytes)."""
    import gzip

    return gzip.compress(text.encode("utf-8"), compresslevel=6, mtime=0)


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
    csv_records: bool = False,
    trace_kind: str | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> Path:
    """Write one run's results into ``out_dir`` (created if missing) and return it.

    Files: ``summary.json`` (sorted keys, indent 2), ``resolved_config.yaml`` (the given dict,
    in its order), ``records.npz`` (:func:`records_npz`), ``timeline.csv`` and, if
    ``make_plots``, ``plots/{gantt,placement,noc,utilization,memory,energy}.png``; on request
    ``records.csv`` and ``trace.json.gz``. Existing files of these names are overwritten.

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
        csv_records: also write the records as ``records.csv`` (an export; nothing reads it).
        trace_kind: also write the Chrome trace ``trace.json.gz``: ``"full"`` or ``"compact"``
            (:data:`TRACE_KINDS`); ``None`` writes none.
        progress: called as ``progress(done, total, name)`` before each file is written:
            files written so far, files in all, and the one being written.
    """
    if trace_kind is not None and trace_kind not in TRACE_KINDS:
        raise ValueError(f"trace_kind {trace_kind!r}: expected one of {', '.join(TRACE_KINDS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kinds: tuple[str, ...] = ()
    if make_plots:
        from palmsim.report import plots  # matplotlib only when asked for

        kinds = tuple(plots.DEFAULT_KINDS if plot_kinds is None else plot_kinds)
    files = ["summary.json", RECORDS_FILE, *(["records.csv"] if csv_records else [])]
    files += ["timeline.csv", *([TRACE_FILE] if trace_kind is not None else [])]
    names = [*files, *(f"plots/{kind}.png" for kind in kinds)]

    def step(name: str) -> None:
        if progress is not None:
            progress(names.index(name), len(names), name)

    step("summary.json")

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
    step(RECORDS_FILE)
    with open(out / RECORDS_FILE, "wb") as handle:
        _write_records_npz(handle, trace)
    if csv_records:
        step("records.csv")
        _write_text(out / "records.csv", records_csv(trace))

    step("timeline.csv")
    default_bins = timeline_bin_s is None  # the bins of plots/utilization.png too
    if timeline_bin_s is None:
        end_s = float(trace.end_time_s)
        timeline_bin_s = end_s / DEFAULT_TIMELINE_BINS if end_s > 0 else 1.0
    timeline = utilization_timeline(
        trace, chip, timeline_bin_s, tiles=plan.simulated_tiles, replication=plan.replication
    )
    _write_text(out / "timeline.csv", timeline_csv(timeline))

    if trace_kind is not None:
        step(TRACE_FILE)
        shown = trace if trace_kind == "full" else compact_trace(trace, plan)
        _write_bytes(out / TRACE_FILE, _gzip(_chrome_trace_text(chrome_trace(shown, chip, plan))))

    if kinds:
        from types import SimpleNamespace

        folder = out / "plots"
        folder.mkdir(exist_ok=True)
        run = SimpleNamespace(
            trace=trace,
            chip=chip,
            plan=plan,
            summary=summary,
            timeline=timeline if default_bins else None,  # computed once for both
        )
        for kind in kinds:
            step(f"plots/{kind}.png")
            plots.PLOT_KINDS.get(kind)(run, folder / f"{kind}.png", {})
    if progress is not None:
        progress(len(names), len(names), "")
    return out


def compact_trace(trace: RunTrace, plan: MappingPlan) -> RunTrace:
    """The records a compact Chrome trace shows: one tile per stage and its flows.

    Keeps the compute intervals and memory samples of each stage's first tile (replica 0,
    TP rank 0, the tiles :func:`_flow_arrows` draws arrows between) and the flows that start
    or end there, so the pipeline and each stage's DRAM and link use stay visible at a
    fraction of the size; every other tile ran too and is in ``records.npz``.
    """
    shown = {stages[0] for stages in plan.stage_tiles[0]} if plan.stage_tiles else set()
    flows = trace.flows
    return RunTrace(
        intervals=trace.intervals.select(trace.intervals.isin("tile", shown)),
        flows=flows.select(flows.isin("src", shown) | flows.isin("dst", shown)),
        memory=trace.memory.select(trace.memory.isin("tile", shown)),
        end_time_s=trace.end_time_s,
        num_events=trace.num_events,
        wall_time_s=trace.wall_time_s,
        metadata=trace.metadata,
    )


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

    Raises:
        RunDirError: a file cannot be written into the folder, naming the path.
    """
    from palmsim.report import plots  # matplotlib only when asked for
    from palmsim.report.html import bottlenecks, report_html

    folder = Path(run_dir)
    figures: dict[str, bytes] = {}
    try:
        for kind in plots.DEFAULT_KINDS:
            path = write_plot(run, kind, folder / "plots" / f"{kind}.png", {})
            figures[kind] = path.read_bytes()
        analysis = bottlenecks(run.trace, run.chip, run.plan, run.summary)
        out = folder / "report.html"
        _write_text(out, report_html(run.summary, run.config, figures, analysis))
    except OSError as error:  # e.g. a file named plots, or a read-only folder
        raise RunDirError(
            f"{error.filename or folder}: cannot write the report's files "
            f"({error.strerror or error})"
        ) from None
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


# =========================================================================== serving (issue 16)
# The serving run folder (palmsim serve): requests.csv, iterations.csv, queue.csv,
# summary.json, resolved_config.yaml, plots/latency_cdf.png, plots/serving_timeseries.png,
# report.html. Kept apart from the training/inference writers above.

REQUESTS_COLUMNS = (
    "request_id",
    "replica",
    "status",
    "arrival_s",
    "prompt_tokens",
    "output_tokens",
    "first_scheduled_s",
    "first_token_s",
    "finish_s",
    "ttft_s",
    "tpot_s",
    "e2e_s",
    "num_preemptions",
    "decode_replica",
    "kv_transfer_s",
)
ITERATIONS_COLUMNS = (
    "replica",
    "start_s",
    "end_s",
    "num_seqs",
    "num_tokens",
    "num_prefill_tokens",
    "num_decode_seqs",
    "kv_blocks_used",
    "num_waiting",
    "num_preemptions",
    "num_sampled",
    "num_finished",
)
QUEUE_COLUMNS = ("time_s", "replica", "num_waiting", "num_in_system")


def requests_csv(requests: Sequence[Any]) -> str:
    """One row per request (:class:`palmsim.engine.serving.RequestRecord`), with its TTFT,
    TPOT and end-to-end latency (empty where they do not apply)."""
    rows: list[list[Any]] = []
    for r in requests:
        done = r.status == "finished"
        ttft = r.first_token_s - r.arrival_s if done else ""
        tpot = (
            (r.finish_s - r.first_token_s) / (r.output_tokens - 1)
            if done and r.output_tokens > 1
            else ""
        )
        e2e = r.finish_s - r.arrival_s if done else ""
        rows.append(
            [
                r.request_id,
                r.replica,
                r.status,
                r.arrival_s,
                r.prompt_tokens,
                r.output_tokens,
                r.first_scheduled_s if done else "",
                r.first_token_s if done else "",
                r.finish_s if done else "",
                ttft,
                tpot,
                e2e,
                r.num_preemptions,
                r.decode_replica,
                r.kv_transfer_s if r.kv_transfer_s >= 0 else "",
            ]
        )
    return _csv_text(REQUESTS_COLUMNS, rows)


def write_serving_run(
    out_dir: str | Path,
    *,
    summary: Mapping[str, Any],
    resolved_config: Mapping[str, Any],
    trace: Any,
    make_plots: bool = True,
) -> Path:
    """Write a serving run (a :class:`palmsim.engine.serving.ServingTrace`) into ``out_dir``.

    Files: ``summary.json``, ``resolved_config.yaml``, ``requests.csv``, ``iterations.csv``,
    ``queue.csv`` and, with ``make_plots``, ``plots/latency_cdf.png``,
    ``plots/serving_timeseries.png`` and ``report.html`` (summary and both figures).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_text(
        out / "summary.json",
        json.dumps(_json_ready(summary), sort_keys=True, indent=2, allow_nan=False) + "\n",
    )
    _write_text(
        out / "resolved_config.yaml",
        yaml.safe_dump(_json_ready(resolved_config), sort_keys=False, allow_unicode=True),
    )
    _write_text(out / "requests.csv", requests_csv(trace.requests))
    _write_text(
        out / "iterations.csv", _csv_text(ITERATIONS_COLUMNS, [list(i) for i in trace.iterations])
    )
    _write_text(out / "queue.csv", _csv_text(QUEUE_COLUMNS, [list(q) for q in trace.queue]))
    if make_plots:
        from palmsim.report import plots  # matplotlib only when asked for
        from palmsim.report.serving import latencies, serving_report_html

        folder = out / "plots"
        folder.mkdir(exist_ok=True)
        cdf = plots.latency_cdf(latencies(trace.requests), folder / "latency_cdf.png")
        series = plots.serving_timeseries(
            trace.iterations, trace.queue, trace.num_kv_blocks, folder / "serving_timeseries.png"
        )
        figures = {"latency_cdf": cdf.read_bytes(), "serving_timeseries": series.read_bytes()}
        _write_text(out / "report.html", serving_report_html(summary, resolved_config, figures))
    return out


def write_latency_load(
    out_dir: str | Path, curves: Mapping[str, Sequence[tuple[float, float, float]]]
) -> Path:
    """``latency_load.csv`` and ``latency_load.png`` of a rate sweep: per curve and rate, the
    p90 TTFT and TPOT [s]."""
    from palmsim.report import plots  # matplotlib only when asked for

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [[name, *point] for name, points in curves.items() for point in points]
    _write_text(
        out / "latency_load.csv",
        _csv_text(("curve", "rate_per_s", "ttft_p90_s", "tpot_p90_s"), rows),
    )
    return plots.latency_load(curves, out / "latency_load.png")
