"""Tests of dowguard's own recording format (.dgr)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest

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
from ingest.formats import recording
from ingest.formats.recording import SCHEMA, read_recording, write_recording

CTX = Context("aws", "111122223333", "us-east-1", "resize", "$LATEST")
OTHER = Context("azure", "sub-1", "westeurope", "thumbs", "")
TRACE = "5759e988bd862e3fe1be46a994272793"


def sample() -> list[Event]:
    return [
        Span(
            CTX,
            30.0,
            30.5,
            TRACE,
            "53995c3f42cd8ad8",
            "0102030405060708",
            "jobs process",
            5,
            links=(("a" * 32, "b" * 16), ("c" * 32, "d" * 16)),
            trigger="pubsub",
            invocation_id="9b2e",
            messaging_system="aws_sqs",
            destination="jobs",
            memory_mb=512,
            lineage=4,
            error=True,
        ),
        Invocation(CTX, 10.0, "req-1", 812.4, 813.0, 512, 97, 240.1, trace_id=TRACE),
        Metric(OTHER, 20.0, "AWS/Lambda", "Invocations", 412.0, 412.0, 1.0, 1.0),
        Billing(OTHER, 20.0, 3620.0, 0.0776, 5821.4, "gb_seconds", "focus", "arm64"),
        Invocation(OTHER, 10.0, "réq-2 ✓", 1.0, 1.0, 128, 0, status="timeout", count=3),
        Span(CTX, 5.0, 5.0, TRACE, "1" * 16),
    ]


def by_time(events: list[Event]) -> list[Event]:
    return sorted(events, key=lambda e: e.time)


def test_round_trip_of_every_event_type(tmp_path: Path) -> None:
    path = tmp_path / "run.dgr"
    events = sample()
    assert write_recording(path, events) == len(events)
    back = list(read_recording(path))
    assert back == by_time(events)
    assert [type(e) for e in back] == [type(e) for e in by_time(events)]
    assert isinstance(back[-1], Span)
    assert back[-1].links == (("a" * 32, "b" * 16), ("c" * 32, "d" * 16))


def test_round_trip_of_starts_among_other_events(tmp_path: Path) -> None:
    path = tmp_path / "starts.dgr"
    events = [
        *sample(),
        InvocationStart(CTX, 9.2, "req-1"),
        InvocationStart(OTHER, 9.0, "réq-2 ✓"),
        InvocationStart(CTX, 10.0, "req-3"),
    ]
    write_recording(path, events)
    back = list(read_recording(path))
    assert back == by_time(events)
    starts = [e for e in back if type(e) is InvocationStart]
    assert [s.request_id for s in starts] == ["réq-2 ✓", "req-1", "req-3"]
    # A start written at the time of an invocation keeps its written place.
    at_ten = [type(e) for e in back if e.time == 10.0]
    assert at_ten == [Invocation, Invocation, InvocationStart]


def test_type_codes_of_older_recordings_are_kept() -> None:
    # Recordings written before starts were recorded use codes 0 to 3.
    codes = [cls for cls, _ in recording._TYPES]
    assert codes == [Invocation, Metric, Billing, Span, InvocationStart]


def test_equal_times_keep_their_written_order(tmp_path: Path) -> None:
    path = tmp_path / "ties.dgr"
    events: list[Event] = [
        Invocation(CTX, 1.0, f"r{i}", 1.0, 1.0, 128) for i in range(5)
    ]
    events.insert(2, Metric(CTX, 1.0, "AWS/Lambda", "Errors", 0.0, 1.0, 0.0, 0.0))
    write_recording(path, events)
    assert list(read_recording(path)) == events


def test_many_batches_of_mixed_types(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recording, "_BATCH_ROWS", 7)
    events: list[Event] = []
    for i in range(60):
        ctx = CTX._replace(function=f"f{i % 4}")
        if i % 3:
            events.append(Invocation(ctx, float(i), f"r{i}", 1.0, 1.0, 128))
        else:
            events.append(Span(ctx, float(i), float(i) + 1, TRACE, f"{i + 1:016x}"))
    path = tmp_path / "many.dgr"
    write_recording(path, reversed(events))
    reader = pa.ipc.open_file(str(path))
    assert reader.num_record_batches > 5
    assert list(read_recording(path)) == events


def test_empty_recording(tmp_path: Path) -> None:
    path = tmp_path / "empty.dgr"
    assert write_recording(path, []) == 0
    assert list(read_recording(path)) == []


def test_file_is_plain_arrow_with_version_metadata(tmp_path: Path) -> None:
    path = tmp_path / "run.dgr"
    write_recording(path, sample())
    table = pa.ipc.open_file(str(path)).read_all()
    assert table.schema.metadata[b"dowguard.recording.version"] == recording.VERSION
    assert table.column("type").to_pylist() == [0, 0, 1, 2, 3, 3]
    assert table.column("request_id").to_pylist()[:2] == ["req-1", "réq-2 ✓"]
    assert table.column("order").to_pylist() == [1, 2, 3, 4, 0, 5]
    assert pa.types.is_dictionary(table.schema.field("destination").type)


def test_columns_follow_the_event_fields() -> None:
    for (cls, columns), names in zip(recording._TYPES, recording._FIELDS, strict=True):
        fields = [f.name for f in dataclasses.fields(cls)]
        assert fields == ["context", *names]
        assert all(c in SCHEMA.names for c in columns)


def test_write_refuses_non_events(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        write_recording(tmp_path / "x.dgr", [object()])  # type: ignore[list-item]
    assert not (tmp_path / "x.dgr").exists()


# ---- broken files -------------------------------------------------------------


def _raw_column(field: pa.Field, values: list[Any] | None, n: int) -> pa.Array:
    if pa.types.is_dictionary(field.type):
        return pa.array(values or [None] * n, pa.string()).dictionary_encode()
    if values is None:
        return pa.nulls(n, field.type)
    return pa.array(values, field.type)


def write_raw(
    path: Path,
    columns: dict[str, Any],
    metadata: dict[bytes, bytes],
    batch_rows: int | None = None,
) -> None:
    """A file with the recording schema and whatever rows a test needs."""
    n = len(columns["time"])
    if "order" not in columns:
        # Rows in time order: each one is at its own place in its batch.
        columns = {**columns, "order": [i % (batch_rows or n) for i in range(n)]}
    arrays = [_raw_column(f, columns.get(f.name), n) for f in SCHEMA]
    schema = SCHEMA.with_metadata(metadata)
    table = pa.Table.from_arrays(arrays, schema=schema)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, schema) as w:
        w.write_table(table, max_chunksize=batch_rows)


GOOD_META = {
    b"dowguard.recording.version": b"1",
    b"dowguard.recording.contexts": orjson.dumps([list(CTX)]),
}
BILLING_ROW: dict[str, list[Any]] = {
    "type": [2],
    "time": [1.0],
    "context": [0],
    "end": [2.0],
    "cost_usd": [1.0],
    "usage_amount": [1.0],
    "usage_kind": ["requests"],
    "billing_source": ["cur"],
    "architecture": ["x86_64"],
}


def test_raw_writer_makes_a_readable_file(tmp_path: Path) -> None:
    path = tmp_path / "raw.dgr"
    write_raw(path, BILLING_ROW, GOOD_META)
    assert list(read_recording(path)) == [
        Billing(CTX, 1.0, 2.0, 1.0, 1.0, "requests", "cur")
    ]


@pytest.mark.parametrize(
    ("columns", "metadata", "message"),
    [
        (BILLING_ROW, {**GOOD_META, b"dowguard.recording.version": b"9"}, "version"),
        (BILLING_ROW, {b"dowguard.recording.contexts": b"[]"}, "no version"),
        (BILLING_ROW, {**GOOD_META, b"dowguard.recording.contexts": b"{"}, "context"),
        (
            BILLING_ROW,
            {**GOOD_META, b"dowguard.recording.contexts": b"[[1, 2]]"},
            "context",
        ),
        ({**BILLING_ROW, "context": [3]}, GOOD_META, "context index"),
        ({**BILLING_ROW, "type": [9]}, GOOD_META, "unknown event type"),
        ({**BILLING_ROW, "cost_usd": [None]}, GOOD_META, "missing field"),
        ({**BILLING_ROW, "time": [float("nan")]}, GOOD_META, "NaN"),
        ({**BILLING_ROW, "order": [None]}, GOOD_META, "order missing"),
        ({**BILLING_ROW, "order": [1]}, GOOD_META, "order out of range"),
        (
            {k: v * 2 for k, v in BILLING_ROW.items()} | {"order": [0, 0]},
            GOOD_META,
            "not a permutation",
        ),
        (
            {k: v * 2 for k, v in BILLING_ROW.items()} | {"time": [2.0, 1.0]},
            GOOD_META,
            "time order",
        ),
    ],
)
def test_damaged_recordings_raise_parse_error(
    tmp_path: Path, columns: dict[str, Any], metadata: dict[bytes, bytes], message: str
) -> None:
    path = tmp_path / "bad.dgr"
    write_raw(path, columns, metadata)
    with pytest.raises(ParseError, match=message) as info:
        list(read_recording(path, source="replay/bad"))
    assert info.value.source == "replay/bad"


def test_truncated_recording_raises_parse_error(tmp_path: Path) -> None:
    path = tmp_path / "run.dgr"
    write_recording(path, sample())
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 10, 8, 0):
        path.write_bytes(data[:cut])
        with pytest.raises(ParseError) as info:
            list(read_recording(path))
        assert info.value.source == str(path)


def test_other_arrow_file_and_non_arrow_file(tmp_path: Path) -> None:
    path = tmp_path / "other.arrow"
    table = pa.table({"time": [1.0]}).replace_schema_metadata(GOOD_META)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    with pytest.raises(ParseError, match="columns do not match"):
        read_recording(path)
    text = tmp_path / "notes.dgr"
    text.write_text("hello")
    with pytest.raises(ParseError, match="not a dowguard recording"):
        read_recording(text)
    with pytest.raises(ParseError, match="not a dowguard recording"):
        read_recording(tmp_path / "missing.dgr")


def test_damaged_batch_is_reported_and_skipped_with_on_error(tmp_path: Path) -> None:
    path = tmp_path / "partly.dgr"
    rows = {k: v * 3 for k, v in BILLING_ROW.items()}
    rows["time"] = [1.0, 2.0, 3.0]
    rows["type"] = [2, 9, 2]
    write_raw(path, rows, GOOD_META, batch_rows=1)
    errors: list[ParseError] = []
    events = list(read_recording(path, on_error=errors.append))
    assert [e.time for e in events] == [1.0, 3.0]
    assert [e.position for e in errors] == ["batch 1"]
