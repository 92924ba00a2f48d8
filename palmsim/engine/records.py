"""Record types the engine emits. Append-only; reports are pure functions of these.

All times in seconds, sizes in bytes, work in FLOP. A record is a named tuple
(:class:`IntervalRecord`, :class:`FlowRecord`, :class:`MemoryRecord`), but a run keeps its
records as typed columns (:class:`Records`): one numpy array per field, text and routes as
codes into a table of the distinct values. A named tuple with its boxed floats costs about 270
bytes and a column row 20-68 (:data:`ROW_BYTES`), and a large run keeps tens of millions of
records (issue 17: W3 4.6 GiB). The engine appends each record field by field into the
columns of a :class:`RecordBuilder`.
"""

from __future__ import annotations

import gc
import itertools
import math
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Generic, NamedTuple, TypeVar, overload

import numpy as np

__all__ = [
    "COLUMN_DTYPES",
    "COLUMN_KINDS",
    "COMPUTE_CATEGORIES",
    "DRAM_KIND",
    "ROW_BYTES",
    "WAIT_CATEGORIES",
    "FlowRecord",
    "IntervalRecord",
    "MemoryRecord",
    "RecordBuilder",
    "Records",
    "RunTrace",
    "Work",
    "gc_frozen",
    "gc_paused",
    "sum_in_order",
]


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while many records are built or read.

    Records are tuples of numbers and strings, which form no reference cycles, but each
    allocation counts towards a collection, and a collection scans every live container: with
    the collector on, a run spends 40 % of its time in it (W1: hundreds of thousands of
    records, and the chip and plan, scanned again and again), and building or reading W1's
    700 thousand records runs 2-3x slower. Whatever creates per-event garbage under a pause
    must free it by reference counting (no cycles), or memory grows until the pause ends. The
    previous state is restored on exit.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@contextmanager
def gc_frozen() -> Iterator[None]:
    """Keep the cyclic collector off every object alive at entry, for the block's duration.

    Enter it while the collector is paused, right after many objects were made (a run's
    records): they go to the permanent generation without being scanned. Resuming the
    collector instead makes it scan every one of them in each generation in turn, although
    records form no cycles (W1, 1.2 million objects: about 0.3 s for generation 0, 0.4 s for
    1 and 0.6 s for the full collection due soon after, on a loaded machine). What the block
    makes is collected as usual (a figure's reference cycles). On exit the frozen objects go
    back to the oldest generation. If objects are frozen already (the caller's
    ``gc.freeze()``), it does nothing, leaving theirs alone.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


#: Channel kind of a DRAM port, and the category of a DRAM flow; every other channel kind is
#: a network link.
DRAM_KIND = "dram"

#: Interval categories in which a tile computes.
COMPUTE_CATEGORIES: frozenset[str] = frozenset(
    {"forward", "backward", "recompute", "optimizer", "prefill", "decode"}
)

#: Interval categories in which a tile waits inside a pass (the record's ``phase``): ``comm``
#: in a collective or, under ``mapping.p2p_overlap`` false, for its pipeline send; ``host``
#: for the host to issue the op it has run (``ComputeStep.host_issued_s``).
WAIT_CATEGORIES: frozenset[str] = frozenset({"comm", "host"})


class IntervalRecord(NamedTuple):
    """A tile computed, or waited, from ``start_s`` to ``end_s``.

    ``category`` is one of ``forward``, ``backward``, ``recompute``, ``optimizer``,
    ``prefill``, ``decode``, or a wait: ``comm``, the tile waited in a collective (arrival
    to completion), or ``host``, it had finished a step before the host had issued the
    step's last op (``ComputeStep.host_issued_s``: an untraced pass on a chip whose host
    dispatches every op, ``tile.host_dispatch``).
    ``label`` names what ran, e.g. ``"L3.attn"``, for people: nothing parses it. The typed
    identity is in ``phase`` (a :class:`palmsim.mapping.plan.Phase` value: the pass, also of a
    wait), ``layer`` (transformer layer, -1 for none), ``block`` (``attn``, ``mlp``,
    ``embed``, ...; "" for none) and ``op`` (the label without layer and decode-step indices,
    e.g. ``L.attn``, what an op table groups by). ``microbatch`` is -1 where it does not apply.
    """

    tile: int
    category: str
    start_s: float
    end_s: float
    stage: int
    microbatch: int
    label: str
    flop: float
    bytes: float
    phase: str = ""
    layer: int = -1
    block: str = ""
    op: str = ""


class FlowRecord(NamedTuple):
    """One flow moved ``size_bytes`` over ``channels`` (chip channel indices).

    ``start_s`` is when it entered the network, ``end_s`` when its last byte arrived
    (drain plus path latency). ``category`` is one of ``tp_allreduce``, ``dp_allreduce``,
    ``p2p``, ``dram``. ``src``/``dst`` are tile indices, or -1 for a DRAM port end.
    """

    flow_id: int
    category: str
    src: int
    dst: int
    channels: tuple[int, ...]
    start_s: float
    end_s: float
    size_bytes: float
    stage: int
    microbatch: int


class MemoryRecord(NamedTuple):
    """Stored activation bytes (in inference: KV-cache bytes) on ``tile`` changed to
    ``activation_bytes`` at ``time_s``."""

    tile: int
    time_s: float
    activation_bytes: float


R = TypeVar("R", IntervalRecord, FlowRecord, MemoryRecord)

#: The column kind of each field, in field order: ``f`` float64, ``i`` int32, ``q`` int64,
#: ``c`` coded (text, a route), ``k`` coded int32. A record's coded fields are those that
#: take few distinct values together (an interval's category, label, phase, layer, block and
#: op: what ran; a flow's category, ends, route and stage: which transfer; a memory sample's
#: tile): they are stored as one int32 code per record into a table of the distinct
#: combinations, a few thousand per run. Floats stay the engine's float64 (bit-identical);
#: an int FLOP or byte count (some are) becomes its float, exact below 2**53, as any record
#: file already stored it.
COLUMN_KINDS: dict[type, str] = {
    IntervalRecord: "icffiicffckcc",
    FlowRecord: "qckkcfffki",
    MemoryRecord: "kff",
}
#: The numpy dtype of each numeric column kind, and of a coded field's codes.
COLUMN_DTYPES = {"f": np.float64, "i": np.int32, "q": np.int64, "c": np.int32, "k": np.int32}
_TYPECODES = {"f": "d", "i": "i", "q": "q"}
_CODED = "ck"

#: Bytes of one row of each record type's columns [B]: the sum of its numeric fields'
#: widths plus one int32 code for its coded fields together (the table of combinations is
#: not counted per record): an interval 4 float64 + 3 int32 + the code = 48 B, a flow one
#: int64 + 3 float64 + one int32 + the code = 40 B, a memory sample 2 float64 + the code =
#: 20 B.
ROW_BYTES: dict[type, int] = {
    kind: sum(np.dtype(COLUMN_DTYPES[c]).itemsize for c in kinds if c not in _CODED) + 4
    for kind, kinds in COLUMN_KINDS.items()
}

#: Rows decoded at once while iterating over records (bounds the lists held meanwhile).
_ITER_CHUNK = 1 << 16


def _coded_fields(record_type: Any) -> tuple[str, ...]:
    """The names of ``record_type``'s coded fields, in field order."""
    return tuple(
        name
        for name, kind in zip(record_type._fields, COLUMN_KINDS[record_type], strict=True)
        if kind in _CODED
    )


class Records(Sequence[R], Generic[R]):
    """A run's records of one type as read-only typed columns (:data:`COLUMN_KINDS`).

    A sequence of records like the tuple it replaces: ``len``, indexing and iteration give
    the named tuples (the same values: every float the engine's, every text the same
    string), and it equals a tuple or list of the same records. Reports read columns
    instead: :meth:`column` (numbers), :meth:`codes` and :meth:`table` (a coded field's
    codes, and its distinct values that they index), :meth:`isin` and :meth:`select`.

    Built from ``columns`` (each numeric field's array), ``key`` (each record's code) and
    ``keys`` (the combinations of coded-field values that codes index, in field order).
    """

    __slots__ = ("_columns", "_key", "_keys", "_length", "_parts", "_tables", "record_type")

    def __init__(
        self,
        record_type: type[R],
        columns: Mapping[str, np.ndarray],
        key: np.ndarray,
        keys: Sequence[tuple[Any, ...]],
    ) -> None:
        kinds = COLUMN_KINDS[record_type]
        self.record_type: type[R] = record_type
        self._columns: dict[str, np.ndarray] = {}
        for name, kind in zip(record_type._fields, kinds, strict=True):
            if kind not in _CODED:
                column = np.asarray(columns[name])
                assert column.dtype == COLUMN_DTYPES[kind], (name, column.dtype)
                column.flags.writeable = False
                self._columns[name] = column
        key = np.asarray(key, dtype=np.int32)
        key.flags.writeable = False
        self._key = key
        self._keys = tuple(keys)
        lengths = {len(column) for column in self._columns.values()} | {len(key)}
        assert len(lengths) == 1, f"{record_type.__name__} columns differ in length"
        self._length = lengths.pop()
        # per coded field: its distinct values (first seen first) and each key's code of it
        self._tables: dict[str, tuple[Any, ...]] = {}
        self._parts: dict[str, np.ndarray] = {}
        for j, name in enumerate(_coded_fields(record_type)):
            index: dict[Any, int] = {}
            codes = [index.setdefault(k[j], len(index)) for k in self._keys]
            self._tables[name] = tuple(index)
            self._parts[name] = np.array(codes, dtype=np.int32).reshape(len(codes))

    @classmethod
    def of(cls, record_type: type[R], records: Iterable[Any]) -> Records[R]:
        """The records (named or plain tuples in field order) as columns; a
        :class:`Records` of this type is returned as it is."""
        if isinstance(records, Records) and records.record_type is record_type:
            return records
        builder = RecordBuilder(record_type)
        for record in records:
            builder.add(tuple(record))
        return builder.build()

    @classmethod
    def from_codes(
        cls,
        record_type: type[R],
        columns: Mapping[str, np.ndarray],
        tables: Mapping[str, Sequence[Any]],
    ) -> Records[R]:
        """Records whose fields are given each as its own column, as a record file stores
        them: a text or route field (``c``) as codes into its table in ``tables``, every
        other field as its values."""
        coded = _coded_fields(record_type)
        n = len(columns[record_type._fields[0]])
        # each field's distinct values and dense codes, then each record's combination as
        # one mixed-radix number (a 1-d sort; np.unique over rows is several times slower)
        values, dense = zip(
            *(np.unique(np.asarray(columns[name]), return_inverse=True) for name in coded),
            strict=True,
        )
        sizes = [max(1, len(v)) for v in values]
        assert math.prod(sizes) < 2**63, "too many combinations for one int64 key"
        combined = np.zeros(n, dtype=np.int64)
        for size, codes in zip(sizes, dense, strict=True):
            combined *= size
            combined += codes.reshape(n)
        combos, key = np.unique(combined, return_inverse=True)
        digits = []
        for size in reversed(sizes):
            digits.append(combos % size)
            combos = combos // size
        # each field's distinct values as the records hold them (a code's table entry)
        held = [
            [tables[name][c] for c in v.tolist()] if name in tables else v.tolist()
            for name, v in zip(coded, values, strict=True)
        ]
        keys = [
            tuple(field[c] for field, c in zip(held, row, strict=True))
            for row in zip(*(d.tolist() for d in reversed(digits)), strict=True)
        ]
        return cls(record_type, columns, key.reshape(n).astype(np.int32), keys)

    def column(self, name: str) -> np.ndarray:
        """Numeric field ``name`` as a numpy column (read-only; a coded int field's is made
        on each call). Text and routes have :meth:`codes` instead."""
        if name in self._columns:
            return self._columns[name]
        kind = COLUMN_KINDS[self.record_type][self.record_type._fields.index(name)]
        if kind != "k":
            raise ValueError(f"{name} is not numeric: use codes({name!r}) and table({name!r})")
        values = np.array(self._tables[name], dtype=COLUMN_DTYPES[kind])
        return values.reshape(len(self._tables[name]))[self.codes(name)]

    def codes(self, name: str) -> np.ndarray:
        """Coded field ``name``'s column of codes into :meth:`table` (made on each call)."""
        return self._parts[name][self._key]

    def table(self, name: str) -> tuple[Any, ...]:
        """The distinct values of coded field ``name``, indexed by its codes."""
        return self._tables[name]

    def values(self, name: str) -> list[Any]:
        """Field ``name`` of every record, as the records hold it."""
        return self._decoded(name, 0, self._length)

    def isin(self, name: str, values: Iterable[Any]) -> np.ndarray:
        """Boolean mask of the records whose field ``name`` is one of ``values``."""
        wanted = set(values)
        if name in self._tables:
            j = _coded_fields(self.record_type).index(name)
            keys = self._keys
            hit = np.fromiter((k[j] in wanted for k in keys), dtype=bool, count=len(keys))
            return hit[self._key]
        return np.isin(self._columns[name], np.array(sorted(wanted), dtype=np.int64))

    def select(self, keep: np.ndarray) -> Records[R]:
        """The records where ``keep`` (a boolean mask, or indices in the order wanted)."""
        return Records(
            self.record_type,
            {name: column[keep] for name, column in self._columns.items()},
            self._key[keep],
            self._keys,
        )

    @property
    def nbytes(self) -> int:
        """Bytes the columns hold [B] (not the table of combinations)."""
        return self._key.nbytes + sum(column.nbytes for column in self._columns.values())

    def __len__(self) -> int:
        return self._length

    def _rows(self, start: int, stop: int) -> Iterator[R]:
        """Records ``start`` to ``stop``, decoded column by column."""
        fields = self.record_type._fields
        return map(
            self.record_type._make,
            zip(*[self._decoded(name, start, stop) for name in fields], strict=True),
        )

    def _decoded(self, name: str, start: int, stop: int) -> list[Any]:
        if name in self._tables:
            j = _coded_fields(self.record_type).index(name)
            keys = self._keys
            return [keys[c][j] for c in self._key[start:stop].tolist()]
        return self._columns[name][start:stop].tolist()  # type: ignore[no-any-return]

    @overload
    def __getitem__(self, index: int) -> R: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[R, ...]: ...

    def __getitem__(self, index: int | slice) -> R | tuple[R, ...]:
        if isinstance(index, slice):
            positions = range(*index.indices(self._length))
            if positions.step == 1:
                return tuple(self._rows(positions.start, max(positions.start, positions.stop)))
            return tuple(self[i] for i in positions)
        position = index + self._length if index < 0 else index
        if not 0 <= position < self._length:
            raise IndexError(f"record index {index} out of range ({self._length} records)")
        return next(self._rows(position, position + 1))

    def __iter__(self) -> Iterator[R]:
        return itertools.chain.from_iterable(
            self._rows(start, min(start + _ITER_CHUNK, self._length))
            for start in range(0, self._length, _ITER_CHUNK)
        )

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (Records, tuple, list)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Records[{self.record_type.__name__}]({self._length} records)"


class RecordBuilder(Generic[R]):
    """Growable typed columns of one record type; the engine's side of :class:`Records`.

    The engine appends a record field by field, straight into the columns: :attr:`append`
    holds one bound ``array.append`` per numeric field, in field order, then one for the
    record's code, the code of its coded fields' values together (:meth:`code`, the next
    code for a combination not seen before, so codes number the combinations in the order
    the records bring them). No row exists as a Python object (a tuple of boxed numbers kept
    until a batch is packed cost W1 a fifth of its simulation), and an int out of its
    column's range raises ``OverflowError`` where it is appended. :meth:`add` appends a
    whole record (a tuple in field order), for what is not a hot path. :meth:`build`
    returns the columns as numpy arrays over the same memory (no copy).
    """

    def __init__(self, record_type: type[R]) -> None:
        self.record_type: type[R] = record_type
        kinds = COLUMN_KINDS[record_type]
        self._numeric = [
            (name, kind, array(_TYPECODES[kind]))
            for name, kind in zip(record_type._fields, kinds, strict=True)
            if kind not in _CODED
        ]
        self._numeric_of: Callable[[tuple[Any, ...]], tuple[Any, ...]] = itemgetter(
            *(i for i, kind in enumerate(kinds) if kind not in _CODED)
        )
        coded = [i for i, kind in enumerate(kinds) if kind in _CODED]
        # the coded fields' values, as a tuple if there are several
        self._key_of: Callable[[tuple[Any, ...]], Any] = itemgetter(*coded)
        self._single = len(coded) == 1
        self._key = array("i")
        self._keys: dict[Any, int] = {}
        self.append: tuple[Callable[[Any], None], ...] = (
            *(column.append for _, _, column in self._numeric),
            self._key.append,
        )

    def code(self, values: Any) -> int:
        """The code of the coded fields' ``values`` (a tuple in field order; the value alone
        for a type with one coded field)."""
        code = self._keys.get(values)
        if code is None:
            code = self._keys[values] = len(self._keys)
        return code

    def add(self, record: tuple[Any, ...]) -> None:
        """Append one record given as a tuple in field order."""
        for append, value in zip(self.append, self._numeric_of(record), strict=False):
            append(value)
        self.append[-1](self.code(self._key_of(record)))

    def build(self) -> Records[R]:
        """Return the columns; the builder takes no more records."""
        columns = {
            name: np.frombuffer(column, dtype=COLUMN_DTYPES[kind])
            for name, kind, column in self._numeric
        }
        # itemgetter of one field gives its value, not a 1-tuple
        keys = [(k,) for k in self._keys] if self._single else list(self._keys)
        return Records(self.record_type, columns, np.frombuffer(self._key, dtype=np.int32), keys)


@dataclass(frozen=True, slots=True)
class RunTrace:
    """Everything one simulation run produced.

    ``intervals``, ``flows`` and ``memory`` may be given as any sequence of records (tests
    write tuples); they are kept as :class:`Records`.
    """

    intervals: Records[IntervalRecord]
    flows: Records[FlowRecord]
    memory: Records[MemoryRecord]
    end_time_s: float
    num_events: int
    wall_time_s: float
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, kind in (
            ("intervals", IntervalRecord),
            ("flows", FlowRecord),
            ("memory", MemoryRecord),
        ):
            object.__setattr__(self, name, Records.of(kind, getattr(self, name)))


def sum_in_order(values: np.ndarray) -> float:
    """``total = 0.0; for v in values: total += v``, at numpy speed: ``add.accumulate`` is
    a running sum, each prefix the previous one plus the next value (unlike ``np.sum``,
    which adds pairwise and so may round differently)."""
    return float(np.add.accumulate(np.concatenate(([0.0], values)))[-1])


@dataclass(frozen=True)
class Work:
    """What a simulated stretch of a run did, the inputs of its dynamic energy: its compute
    intervals' FLOP and operand bytes (:attr:`IntervalRecord.bytes`), its DRAM flows' bytes
    and, by channel kind, every flow's bytes times the channels of that kind it crossed. A
    serving run (palmsim.engine.serving) keeps this of its iterations in place of their
    records."""

    flop: float = 0.0
    operand_bytes: float = 0.0
    dram_flow_bytes: float = 0.0
    channel_bytes: Mapping[str, float] = field(default_factory=dict)  # kind -> B x channels

    def plus(self, other: Work, times: float = 1.0) -> Work:
        """This work and ``times`` that of ``other``."""
        kinds = {**self.channel_bytes}
        for kind, nbytes in other.channel_bytes.items():
            kinds[kind] = kinds.get(kind, 0.0) + times * nbytes
        return Work(
            self.flop + times * other.flop,
            self.operand_bytes + times * other.operand_bytes,
            self.dram_flow_bytes + times * other.dram_flow_bytes,
            dict(sorted(kinds.items())),
        )

    @classmethod
    def of_trace(cls, trace: RunTrace, channel_kinds: Sequence[str]) -> Work:
        """The work of a simulation's records; ``channel_kinds[c]`` is channel ``c``'s kind.
        Each sum adds its terms in record order (a route's bytes, then the routes in their
        table's order), as a loop over the records would."""
        intervals, flows = trace.intervals, trace.flows
        compute = intervals.isin("category", COMPUTE_CATEGORIES)
        sizes = flows.column("size_bytes")
        routes = flows.table("channels")
        by_route = np.bincount(flows.codes("channels"), weights=sizes, minlength=len(routes))
        kinds: dict[str, float] = {}
        for route, nbytes in zip(routes, by_route.tolist(), strict=True):
            for channel in route:
                kind = channel_kinds[channel]
                kinds[kind] = kinds.get(kind, 0.0) + nbytes
        return cls(
            sum_in_order(intervals.column("flop")[compute]),
            sum_in_order(intervals.column("bytes")[compute]),
            sum_in_order(sizes[flows.isin("category", (DRAM_KIND,))]),
            dict(sorted(kinds.items())),
        )
