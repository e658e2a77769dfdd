"""dowguard's own recording format (``.dgr``): normalised events for replay.

An Arrow IPC file (Feather v2, readable by any Arrow tool) holding one
table of every event type: a ``type`` column and the union of the types'
fields (a field a type lacks is null). Record batches follow each other in
event time; inside a batch rows are grouped by type, and ``order`` gives a
row's place in time order, so that each type decodes from one contiguous
slice. Contexts are stored once in the schema metadata, referenced by index
from ``context``; low-cardinality strings are dictionary-encoded. The
schema metadata also carries the format version.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from dowguard.errors import ParseError
from ingest.events import (
    Billing,
    Context,
    Event,
    Invocation,
    InvocationStart,
    Metric,
    Span,
)

logger = logging.getLogger(__name__)

EXTENSION = ".dgr"
VERSION = b"1"
_KEY_VERSION = b"dowguard.recording.version"
_KEY_CONTEXTS = b"dowguard.recording.contexts"
_BATCH_ROWS = 65536
# zstd: null-filled columns of the other types shrink to almost nothing, and
# decoding costs a few percent of building the Python events.
_WRITE_OPTIONS = pa.ipc.IpcWriteOptions(compression="zstd")

_DICT = pa.dictionary(pa.int32(), pa.string())
_COLUMN_TYPES: dict[str, pa.DataType] = {
    "type": pa.int8(),
    "order": pa.int32(),
    "time": pa.float64(),
    "context": pa.int32(),
    "request_id": pa.string(),
    "duration_ms": pa.float64(),
    "billed_ms": pa.float64(),
    "memory_mb": pa.int64(),
    "max_memory_mb": pa.int64(),
    "init_ms": pa.float64(),
    "status": _DICT,
    "architecture": _DICT,
    "trace_id": pa.string(),
    "lineage": pa.int64(),
    "count": pa.int64(),
    "namespace": _DICT,
    "name": _DICT,
    "sum": pa.float64(),
    "metric_count": pa.float64(),
    "max": pa.float64(),
    "min": pa.float64(),
    "unit": _DICT,
    "period_s": pa.float64(),
    "end": pa.float64(),
    "cost_usd": pa.float64(),
    "usage_amount": pa.float64(),
    "usage_kind": _DICT,
    "billing_source": _DICT,
    "span_id": pa.string(),
    "parent_id": pa.string(),
    "kind": pa.int8(),
    "links": pa.list_(pa.string()),
    "trigger": _DICT,
    "invocation_id": pa.string(),
    "messaging_system": _DICT,
    "destination": _DICT,
    "invoked": _DICT,
    "error": pa.bool_(),
    "resource_key": pa.string(),
}
SCHEMA = pa.schema([pa.field(name, kind) for name, kind in _COLUMN_TYPES.items()])

# Per type, its code and the columns of its fields in constructor order after
# ``context`` (a field name differs from its column where two types clash).
# A new type takes the next code, so recordings written before it still read.
_TYPES: list[tuple[type[Any], tuple[str, ...]]] = [
    (
        Invocation,
        (
            "time",
            "request_id",
            "duration_ms",
            "billed_ms",
            "memory_mb",
            "max_memory_mb",
            "init_ms",
            "status",
            "architecture",
            "trace_id",
            "lineage",
            "count",
        ),
    ),
    (
        Metric,
        (
            "time",
            "namespace",
            "name",
            "sum",
            "metric_count",
            "max",
            "min",
            "unit",
            "period_s",
        ),
    ),
    (
        Billing,
        (
            "time",
            "end",
            "cost_usd",
            "usage_amount",
            "usage_kind",
            "billing_source",
            "architecture",
        ),
    ),
    (
        Span,
        (
            "time",
            "end",
            "trace_id",
            "span_id",
            "parent_id",
            "name",
            "kind",
            "links",
            "trigger",
            "invocation_id",
            "messaging_system",
            "destination",
            "invoked",
            "memory_mb",
            "lineage",
            "error",
            "resource_key",
        ),
    ),
    (InvocationStart, ("time", "request_id")),
]
_CODES = {cls: code for code, (cls, _) in enumerate(_TYPES)}
_RENAMED = {"metric_count": "count", "billing_source": "source"}
_LINK_SEP = "/"


def _field_names(columns: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(_RENAMED.get(c, c) for c in columns)


_FIELDS = [_field_names(columns) for _, columns in _TYPES]


# ---- writing -----------------------------------------------------------------


def write_recording(path: str | Path, events: Iterable[Event]) -> int:
    """Write ``events`` sorted by time (stable) to ``path``; return the count.

    The file is written beside its target and renamed into place, so a
    reader never sees half a recording.
    """
    contexts: dict[Context, int] = {}
    by_type: list[list[tuple[int, Event]]] = [[] for _ in _TYPES]
    for seq, event in enumerate(events):
        code = _CODES.get(type(event))
        if code is None:
            raise TypeError(f"not a dowguard event: {type(event).__name__}")
        by_type[code].append((seq, event))
        contexts.setdefault(event.context, len(contexts))
    tables = [
        _type_table(code, rows, contexts) for code, rows in enumerate(by_type) if rows
    ]
    metadata = {
        _KEY_VERSION: VERSION,
        _KEY_CONTEXTS: orjson.dumps([list(c) for c in contexts]),
    }
    schema = SCHEMA.with_metadata(metadata)
    if tables:
        table = pa.concat_tables(tables, promote_options="default")
        order = pc.sort_indices(
            table, sort_keys=[("time", "ascending"), ("seq", "ascending")]
        )
        table = table.take(order)
        table = table.append_column("order", pa.nulls(table.num_rows, pa.int32()))
        table = pa.table(
            [_column(table, name) for name in _COLUMN_TYPES], schema=schema
        )
    else:
        table = schema.empty_table()
    target = Path(path)
    partial = target.with_name(f".{target.name}.partial")
    with (
        pa.OSFile(str(partial), "wb") as sink,
        pa.ipc.new_file(sink, schema, options=_WRITE_OPTIONS) as writer,
    ):
        for start in range(0, table.num_rows, _BATCH_ROWS):
            writer.write_batch(_grouped_batch(table.slice(start, _BATCH_ROWS)))
    os.replace(partial, target)
    logger.info("recording written path=%s events=%d", target, table.num_rows)
    return int(table.num_rows)


def _grouped_batch(chunk: pa.Table) -> pa.RecordBatch:
    """A time-ordered slice as one batch with its rows grouped by type."""
    by_type = pc.sort_indices(chunk, sort_keys=[("type", "ascending")])
    grouped = chunk.take(by_type).combine_chunks()
    at = grouped.schema.get_field_index("order")
    grouped = grouped.set_column(at, "order", by_type.cast(pa.int32()))
    (batch,) = grouped.to_batches()
    return batch


def _type_table(
    code: int, rows: list[tuple[int, Event]], contexts: dict[Context, int]
) -> pa.Table:
    columns = _TYPES[code][1]
    data: dict[str, Any] = {
        "seq": pa.array([seq for seq, _ in rows], pa.int64()),
        "type": pa.array([code] * len(rows), pa.int8()),
        "context": pa.array([contexts[e.context] for _, e in rows], pa.int32()),
    }
    for column, name in zip(columns, _FIELDS[code], strict=True):
        values = [getattr(e, name) for _, e in rows]
        if column == "links":
            values = [[_LINK_SEP.join(link) for link in v] or None for v in values]
        kind = _COLUMN_TYPES[column]
        data[column] = pa.array(values, pa.string() if kind == _DICT else kind)
    return pa.table(data)


def _column(table: pa.Table, name: str) -> pa.ChunkedArray:
    kind = _COLUMN_TYPES[name]
    if name not in table.column_names:
        return pa.chunked_array([pa.nulls(table.num_rows, kind)])
    column = table.column(name).combine_chunks()
    if kind == _DICT:
        return pa.chunked_array([pc.dictionary_encode(column)])
    return pa.chunked_array([column])


# ---- reading -----------------------------------------------------------------


def read_recording(
    path: str | Path,
    source: str | None = None,
    on_error: Callable[[ParseError], None] | None = None,
) -> Iterator[Event]:
    """The events of a recording, in event-time order.

    A file that is not a readable recording of this version raises
    :class:`ParseError` at once. Damage found later (a record batch that
    does not decode, or breaks the time order) raises it at that batch, or,
    with ``on_error``, is reported there and the batch is skipped.
    """
    source = source or str(path)
    try:
        reader = pa.ipc.open_file(pa.memory_map(str(path), "r"))
    except (pa.ArrowException, OSError) as exc:
        raise ParseError(source, "file", f"not a dowguard recording: {exc}") from exc
    contexts = _check_schema(reader.schema, source)
    # chain() hands out the events of a decoded batch without resuming a
    # generator per event: half the per-event cost of ``yield from``.
    batches = _batches(reader, contexts, source, on_error)
    return itertools.chain.from_iterable(batches)


def _check_schema(schema: pa.Schema, source: str) -> list[Context]:
    metadata = schema.metadata or {}
    version = metadata.get(_KEY_VERSION)
    if version is None:
        raise ParseError(source, "schema", "not a dowguard recording: no version")
    if version != VERSION:
        raise ParseError(
            source,
            "schema",
            f"recording version {version.decode(errors='replace')!r}, "
            f"this dowguard reads {VERSION.decode()!r}",
        )
    if not schema.remove_metadata().equals(SCHEMA):
        raise ParseError(source, "schema", "recording columns do not match")
    try:
        raw = orjson.loads(metadata.get(_KEY_CONTEXTS, b""))
        contexts = [Context(*(str(part) for part in c)) for c in raw]
    except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
        raise ParseError(source, "schema", f"bad context table: {exc}") from exc
    if any(len(c) != 5 for c in raw):
        raise ParseError(source, "schema", "bad context table: 5 parts per context")
    return contexts


def _batches(
    reader: pa.ipc.RecordBatchFileReader,
    contexts: list[Context],
    source: str,
    on_error: Callable[[ParseError], None] | None,
) -> Iterator[list[Event]]:
    last_time = -float("inf")
    for i in range(reader.num_record_batches):
        pos = f"batch {i}"
        try:
            try:
                batch = reader.get_batch(i)
                batch.validate(full=True)
            except (pa.ArrowException, OSError) as exc:
                raise ParseError(source, pos, f"damaged record batch: {exc}") from exc
            if batch.num_rows == 0:
                continue
            end_time = _check_batch(batch, len(contexts), last_time, source, pos)
            events = _batch_events(batch, contexts, source, pos)
        except ParseError as exc:
            if on_error is None:
                raise
            on_error(exc)
            continue
        last_time = end_time
        yield events


def _check_batch(
    batch: pa.RecordBatch, n_contexts: int, last_time: float, source: str, pos: str
) -> float:
    """Check what the decoder relies on; return the batch's last time."""
    n = batch.num_rows
    order = batch.column("order")
    times = batch.column("time")
    if order.null_count or times.null_count:
        raise ParseError(source, pos, "event time or order missing")
    places = order.to_numpy()
    if places.min() < 0 or places.max() >= n:
        raise ParseError(source, pos, "row order out of range")
    seen = np.zeros(n, dtype=bool)
    seen[places] = True
    if not seen.all():
        raise ParseError(source, pos, "row order is not a permutation")
    by_order = np.empty(n, dtype=np.int64)
    by_order[places] = np.arange(n)
    in_time = times.to_numpy()[by_order]
    if np.isnan(in_time).any():
        raise ParseError(source, pos, "event time is NaN")
    if in_time[0] < last_time or (np.diff(in_time) < 0).any():
        raise ParseError(source, pos, "events are not in time order")
    ctx = batch.column("context")
    bounds = pc.min_max(ctx)
    if (
        ctx.null_count
        or bounds["min"].as_py() < 0
        or bounds["max"].as_py() >= n_contexts
    ):
        raise ParseError(source, pos, "context index missing or out of range")
    return float(in_time[-1])


def _batch_events(
    batch: pa.RecordBatch, contexts: list[Context], source: str, pos: str
) -> list[Event]:
    """The events of a checked batch, in time order."""
    runs = pc.run_end_encode(batch.column("type"))
    ends = runs.run_ends.to_pylist()
    codes = runs.values.to_pylist()
    order = batch.column("order").to_pylist()
    if len(codes) == 1 and order == list(range(len(order))):
        return _build(codes[0], batch, contexts, source, pos)
    out: list[Any] = [None] * batch.num_rows
    start = 0
    for code, end in zip(codes, ends, strict=True):
        run = batch.slice(start, end - start)
        built = _build(code, run, contexts, source, pos)
        # map() runs the stores in C; deque(maxlen=0) only drains it.
        deque(map(out.__setitem__, order[start:end], built), maxlen=0)
        start = end
    return out


def _build(
    code: Any,
    batch: pa.RecordBatch,
    contexts: list[Context],
    source: str,
    pos: str,
) -> list[Event]:
    """The events of a batch whose rows are all of type ``code``."""
    if not isinstance(code, int) or not 0 <= code < len(_TYPES):
        raise ParseError(source, pos, f"unknown event type code {code!r}")
    cls, columns = _TYPES[code]
    arrays = [batch.column(c) for c in columns]
    ctx_array = batch.column("context")
    if any(a.null_count for c, a in zip(columns, arrays, strict=True) if c != "links"):
        raise ParseError(source, pos, f"{cls.__name__} row with a missing field")
    values: list[Sequence[Any]] = [_values(a) for a in arrays]
    if cls is Span:
        at = columns.index("links")
        values[at] = [_links(v) if v else () for v in values[at]]
    ctx = map(contexts.__getitem__, ctx_array.to_pylist())
    maker: Callable[..., Event] = cls
    return list(map(maker, ctx, *values))


def _values(array: pa.Array) -> list[Any]:
    if isinstance(array, pa.DictionaryArray):
        # One str object per distinct value, shared by every row that has it.
        words = array.dictionary.to_pylist()
        return list(map(words.__getitem__, array.indices.to_pylist()))
    return array.to_pylist()  # type: ignore[no-any-return]


def _links(items: list[str]) -> tuple[tuple[str, str], ...]:
    pairs = (item.partition(_LINK_SEP) for item in items)
    return tuple((trace, span) for trace, _, span in pairs)
