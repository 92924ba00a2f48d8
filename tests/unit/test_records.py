"""Records as typed columns (palmsim.engine.records): the same records back, column access."""

from __future__ import annotations

import numpy as np
import pytest

from palmsim.engine.records import (
    ROW_BYTES,
    FlowRecord,
    IntervalRecord,
    MemoryRecord,
    RecordBuilder,
    Records,
    RunTrace,
)

# 0.1 + 0.2 is not 0.3: a float that any lossy store would change
ODD_S = 0.1 + 0.2
INTERVALS = (
    IntervalRecord(
        3, "forward", 0.0, ODD_S, 1, 0, "L1.attn", 2.5e12, 4096.0, "forward", 1, "attn", "L.attn"
    ),
    IntervalRecord(
        4, "comm", ODD_S, 1.0, 1, 0, "comm.L1.attn", 0.0, 512.0, "forward", -1, "", "comm.L1.attn"
    ),
    IntervalRecord(
        3, "backward", 1.0, 2.0, 1, 5, "L1.attn", 5e12, 4096.0, "backward", 1, "attn", "L.attn"
    ),
)
FLOWS = (
    FlowRecord(7, "p2p", 3, 4, (0, 5, 9), 0.5, ODD_S, 1e6, 1, 0),
    FlowRecord(2, "dram", -1, 3, (12,), 0.0, 0.25, 3e6, 1, 0),
    FlowRecord(8, "p2p", 3, 4, (0, 5, 9), 1.5, 2.0, 1e6, 1, 1),
)


def test_records_give_back_the_same_named_tuples() -> None:
    """len, indexing (negative too), slices and iteration give the records written, every
    float bit for bit and every text and route equal."""
    records = Records.of(IntervalRecord, INTERVALS)
    assert len(records) == 3
    assert records[0] == INTERVALS[0] and type(records[0]) is IntervalRecord
    assert records[-1] == INTERVALS[2]
    assert records[1:] == INTERVALS[1:]
    assert records[::-1] == INTERVALS[::-1]
    assert tuple(records) == INTERVALS
    assert records[0].end_s.hex() == ODD_S.hex()
    with pytest.raises(IndexError):
        records[3]
    flows = Records.of(FlowRecord, FLOWS)
    assert list(flows) == list(FLOWS)
    assert flows[2].channels == (0, 5, 9)


def test_records_equal_a_tuple_of_the_same_records_only() -> None:
    records = Records.of(FlowRecord, FLOWS)
    assert records == FLOWS and records == list(FLOWS)
    assert records != FLOWS[:2]
    assert records != (*FLOWS[:2], FLOWS[2]._replace(end_s=2.0000000000000004))


def test_coded_columns_index_a_table_of_distinct_values() -> None:
    """Text and routes are codes into a table holding each distinct value once; numbers are
    typed columns (a coded int field's made from its codes)."""
    flows = Records.of(FlowRecord, FLOWS)
    assert flows.table("channels") == ((0, 5, 9), (12,))
    assert flows.codes("channels").tolist() == [0, 1, 0]
    assert flows.column("start_s").dtype == np.float64
    assert flows.column("flow_id").dtype == np.int64
    assert flows.column("src").tolist() == [3, -1, 3]
    assert flows.values("category") == ["p2p", "dram", "p2p"]
    assert flows.column("stage").dtype == np.int32  # coded, given as its values
    with pytest.raises(ValueError, match="not numeric"):
        flows.column("category")
    with pytest.raises(ValueError, match="read-only"):
        flows.column("size_bytes")[0] = 0.0


def test_isin_and_select_keep_the_records_asked_for() -> None:
    intervals = Records.of(IntervalRecord, INTERVALS)
    on_tile_3 = intervals.isin("tile", {3})
    assert on_tile_3.tolist() == [True, False, True]
    assert intervals.isin("category", ("comm", "optimizer")).tolist() == [False, True, False]
    assert intervals.isin("category", ("prefill",)).tolist() == [False, False, False]
    assert intervals.select(on_tile_3) == (INTERVALS[0], INTERVALS[2])
    assert intervals.select(np.array([2, 0])) == (INTERVALS[2], INTERVALS[0])


def test_a_builder_appended_field_by_field_holds_the_records() -> None:
    """The engine's way: each numeric field appended to its column in field order, then the
    code of the coded fields together; codes number the combinations in the order the
    records bring them, text arriving late included."""
    builder = RecordBuilder(IntervalRecord)
    for r in INTERVALS:
        code = builder.code((r.category, r.label, r.phase, r.layer, r.block, r.op))
        values = (r.tile, r.start_s, r.end_s, r.stage, r.microbatch, r.flop, r.bytes, code)
        for append, value in zip(builder.append, values, strict=True):
            append(value)
    records = builder.build()
    assert records == INTERVALS == Records.of(IntervalRecord, INTERVALS)
    assert list(records.table("category")) == ["forward", "comm", "backward"]


def test_an_int_out_of_its_column_range_is_refused() -> None:
    builder = RecordBuilder(IntervalRecord)
    with pytest.raises(OverflowError):
        builder.add((2**31, *INTERVALS[0][1:]))  # tiles are int32


def test_row_bytes_are_the_sum_of_the_field_widths() -> None:
    """An interval: start, end, FLOP, bytes as float64 (4 x 8), tile, stage, micro-batch as
    int32 and one int32 code for what ran (4 x 4): 48 B. A flow: id int64, start, end, size
    float64 (4 x 8), micro-batch and the transfer's code int32 (2 x 4): 40 B. A memory
    sample: time and bytes float64, the tile's code: 20 B."""
    assert {IntervalRecord: 48, FlowRecord: 40, MemoryRecord: 20} == ROW_BYTES
    assert Records.of(IntervalRecord, INTERVALS).nbytes == 3 * 48


def test_a_trace_keeps_tuples_of_records_as_columns() -> None:
    trace = RunTrace(INTERVALS, FLOWS, (), end_time_s=2.0, num_events=0, wall_time_s=0.0)
    assert isinstance(trace.intervals, Records) and trace.intervals == INTERVALS
    assert len(trace.memory) == 0 and list(trace.memory) == []
