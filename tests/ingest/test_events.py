"""The array form of events (dowguard's Kafka encoding) and Kafka partitioning."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka.partitioner.default import murmur2 as kafka_murmur2

from dowguard.errors import ParseError
from ingest.events import (
    EVENT_ARRAY_PREFIX,
    EVENT_ARRAY_VERSION,
    Billing,
    Context,
    Event,
    Invocation,
    InvocationStart,
    Metric,
    Span,
    decode_event,
    encode_event,
    encode_event_array,
    invocation_from_array,
    kafka_key,
    start_from_array,
    stream_of,
)
from ingest.parse import parse_message, read_path
from ingest.partitioning import murmur2, partition_for, partitions_for

CTX = Context("aws", "111122223333", "us-east-1", "orders", "live")
SRC = "kafka:t[0]@7"

EVENTS: list[Event] = [
    Invocation(CTX, 1.5, "r-1", 12.25, 13.0, 256, 80, 120.5, "error", "arm64", "t", 4),
    Metric(CTX, 60.0, "AWS/Lambda", "Invocations", 12.0, 3.0, 5.0, 1.0, "Count"),
    Billing(CTX, 0.0, 3600.0, 0.25, 1e5, "requests", "cur", "arm64"),
    Span(
        CTX,
        2.0,
        2.5,
        "ab" * 16,
        "cd" * 8,
        "ef" * 8,
        "q process",
        5,
        (("12" * 16, "34" * 8), ("56" * 16, "78" * 8)),
        "pubsub",
        "inv-1",
        "aws_sqs",
        "orders-q",
        "other",
        512,
        2,
        True,
    ),
    InvocationStart(CTX, 1.25, "r-1"),
]


def fields_of(event: Event) -> list[Any]:
    raw: list[Any] = orjson.loads(encode_event_array(event))
    return raw


def encoded(values: list[Any]) -> bytes:
    return orjson.dumps(values)


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_array_form_round_trips_every_event_type(event: Event) -> None:
    raw = encode_event_array(event)
    assert raw.startswith(EVENT_ARRAY_PREFIX)
    assert decode_event(raw, SRC) == event
    assert parse_message(raw, SRC) == [event]
    # The object form still decodes to the same event.
    assert decode_event(encode_event(event), SRC) == event


def test_array_form_is_smaller_than_the_object_form() -> None:
    for event in EVENTS:
        assert len(encode_event_array(event)) < len(encode_event(event))


def test_decoded_contexts_are_shared_objects() -> None:
    a = decode_event(encode_event_array(EVENTS[0]), SRC)
    b = decode_event(encode_event_array(EVENTS[1]), SRC)
    assert a.context == CTX and a.context is b.context


def test_array_form_lines_in_a_file(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(encode_event_array(e) for e in EVENTS))
    errors: list[ParseError] = []
    assert list(read_path(path, errors.append)) == EVENTS
    assert errors == []


def replace(event: Event, index: int, value: Any) -> bytes:
    values = fields_of(event)
    values[index] = value
    return encoded(values)


BAD: list[tuple[str, bytes, str]] = [
    (
        "version",
        replace(EVENTS[0], 0, "dowguard.event/1"),
        "version 'dowguard.event/1'",
    ),
    ("no context", encoded([EVENT_ARRAY_VERSION, "invocation"]), "without a context"),
    ("type", replace(EVENTS[0], 1, "trace"), "unknown event type"),
    ("type not text", replace(EVENTS[0], 1, 3), "unknown event type"),
    ("short", encoded(fields_of(EVENTS[0])[:-1]), "11 fields, expected 12"),
    ("long", encoded([*fields_of(EVENTS[0]), 1]), "13 fields, expected 12"),
    ("context parts", replace(EVENTS[0], 2, ["aws", "1", "r", "f"]), "5 strings"),
    ("context types", replace(EVENTS[0], 2, ["aws", "1", "r", "f", 1]), "5 strings"),
    ("context object", replace(EVENTS[0], 2, {"a": 1}), "5 strings"),
    ("context nested", replace(EVENTS[0], 2, [["a"], "1", "r", "f", "q"]), "5 strings"),
    ("request id", replace(EVENTS[0], 4, 17), "request_id is int"),
    ("memory text", replace(EVENTS[0], 7, "256"), "memory_mb"),
    ("memory bool", replace(EVENTS[0], 7, True), "memory_mb"),
    ("memory zero", replace(EVENTS[0], 7, 0), "memory_mb out of range"),
    ("count float", replace(EVENTS[0], 14, 1.0), "count is float"),
    ("lineage bool", replace(EVENTS[0], 13, False), "lineage is bool"),
    ("duration", replace(EVENTS[0], 5, -1.0), "duration_ms out of range"),
    ("duration text", replace(EVENTS[0], 5, "1"), "duration_ms"),
    ("time text", replace(EVENTS[0], 3, "1.5"), "time"),
    ("time range", replace(EVENTS[0], 3, 1e12), "event time out of range"),
    ("metric sum", replace(EVENTS[1], 6, None), "sum is NoneType"),
    ("billing kind", replace(EVENTS[2], 7, 1), "usage_kind is int"),
    ("span links", replace(EVENTS[3], 10, [["a"]]), "a link is"),
    ("span links type", replace(EVENTS[3], 10, "a/b"), "links must be a list"),
    ("span error", replace(EVENTS[3], 18, 1), "error is int"),
    ("truncated", encode_event_array(EVENTS[0])[:-5], "invalid JSON"),
    ("start short", encoded(fields_of(EVENTS[4])[:-1]), "1 fields, expected 2"),
    ("start long", encoded([*fields_of(EVENTS[4]), 0]), "3 fields, expected 2"),
    ("start request id", replace(EVENTS[4], 4, 17), "request_id is int"),
    ("start time", replace(EVENTS[4], 3, "1.25"), "time"),
    ("start time null", replace(EVENTS[4], 3, None), "time"),
    ("start time range", replace(EVENTS[4], 3, 1e12), "event time out of range"),
    ("start type", replace(EVENTS[4], 1, "begin"), "unknown event type"),
]


@pytest.mark.parametrize("raw,reason", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_array_events_raise_parse_error(raw: bytes, reason: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_message(raw, SRC)
    assert caught.value.source == SRC
    assert caught.value.position == "offset 0"
    assert reason in caught.value.reason


def test_infinite_time_in_the_array_form_is_refused() -> None:
    raw = encode_event_array(EVENTS[0]).replace(b",1.5,", b",1e999,", 1)
    with pytest.raises(ParseError, match="infinity"):
        parse_message(raw, SRC)


def test_nan_time_is_refused_by_decode() -> None:
    values = fields_of(EVENTS[0])
    values[3] = math.nan  # orjson writes null for NaN
    with pytest.raises(ParseError, match="time"):
        decode_event(encoded(values), SRC)


def test_start_travels_with_the_invocations_of_its_context() -> None:
    start, invocation = EVENTS[4], EVENTS[0]
    assert fields_of(start) == [EVENT_ARRAY_VERSION, "start", list(CTX), 1.25, "r-1"]
    assert stream_of(start) == stream_of(invocation) == "invocations"
    assert kafka_key(start) == kafka_key(invocation) == CTX.key()


def test_fast_start_decoder_takes_only_well_formed_starts() -> None:
    start = EVENTS[4]
    decode_event(encode_event_array(start), SRC)  # the context is known now
    values = fields_of(start)
    assert start_from_array(values) == start
    for at, doubtful in ((3, 1), (3, -1.0), (4, 7), (1, "invocation"), (0, "x")):
        changed = list(values)
        changed[at] = doubtful
        assert start_from_array(changed) is None
    assert start_from_array([*values, 0]) is None
    unknown = [*values[:2], ["aws", "9", "r", "f", "q"], *values[3:]]
    assert start_from_array(unknown) is None


def test_version_marker_is_the_first_element() -> None:
    assert fields_of(EVENTS[0])[:2] == [EVENT_ARRAY_VERSION, "invocation"]


# Partitioning


def keys() -> list[bytes]:
    rng = random.Random(5)
    out = [rng.randbytes(rng.randrange(0, 70)) for _ in range(3000)]
    out += [f"aws/1/us-east-1/fn-{i:05d}/$LATEST".encode() for i in range(500)]
    return out


def test_murmur2_matches_kafka_pythons_reference() -> None:
    # kafka-python gives the same 32 bits unsigned, Kafka's Java client signed.
    for key in keys():
        assert murmur2(key) & 0xFFFFFFFF == kafka_murmur2(key)


@pytest.mark.parametrize("partitions", [1, 3, 7, 12])
def test_partitions_for_many_keys_match_one_at_a_time(partitions: int) -> None:
    many = keys()
    assert partitions_for(many, partitions) == [
        partition_for(key, partitions) for key in many
    ]
    assert partitions_for([], partitions) == []


def test_fast_invocation_path_declines_what_it_cannot_vouch_for() -> None:
    fresh = Invocation(CTX._replace(function="never-seen"), 1.0, "r", 1.0, 1.0, 128)
    values = fields_of(fresh)
    # A context seen for the first time goes through the checked path once.
    assert invocation_from_array(values) is None
    assert decode_event(encoded(values), SRC) == fresh
    assert invocation_from_array(fields_of(fresh)) == fresh
    for index, value in ((3, 1), (7, True), (5, -1.0), (14, 1.0), (0, "x")):
        doubtful = fields_of(fresh)
        doubtful[index] = value
        assert invocation_from_array(doubtful) is None
    assert invocation_from_array(fields_of(EVENTS[1])) is None
