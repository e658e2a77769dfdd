"""Tests of the CloudWatch Metric Streams (JSON lines) parser."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dowguard.errors import ParseError
from ingest.events import Billing, Context, Metric
from ingest.formats.common import MAX_MESSAGE_BYTES
from ingest.formats.metric_stream import looks_like_metric_stream, parse_metric_stream
from tests.ingest.fuzz import check_events, json_values, parsed

SAMPLES = Path(__file__).parent / "samples"
SOURCE = "dowguard.metrics/1@99"
RECORD: dict[str, Any] = {
    "metric_stream_name": "dow",
    "account_id": "111122223333",
    "region": "us-east-1",
    "namespace": "AWS/Lambda",
    "metric_name": "Errors",
    "dimensions": {"FunctionName": "resize"},
    "timestamp": 1772446440000,
    "value": {"max": 1.0, "min": 0.0, "sum": 3.0, "count": 60.0},
    "unit": "Count",
}


def line(**changes: Any) -> bytes:
    record = {**RECORD, **changes}
    return json.dumps({k: v for k, v in record.items() if v is not ...}).encode()


def lines(*records: bytes) -> bytes:
    return b"\n".join(records) + b"\n"


def test_sample_stream() -> None:
    events = parse_metric_stream((SAMPLES / "metric_stream.jsonl").read_bytes(), SOURCE)
    resize = Context("aws", "111122223333", "us-east-1", "resize", "$LATEST")
    assert events == [
        Metric(
            context=resize,
            time=1772446440.0,
            namespace="AWS/Lambda",
            name="Invocations",
            sum=412.0,
            count=412.0,
            max=1.0,
            min=1.0,
            unit="Count",
        ),
        Metric(
            context=resize._replace(qualifier="prod"),
            time=1772446440.0,
            namespace="AWS/Lambda",
            name="Duration",
            sum=52110.0,
            count=400.0,
            max=901.5,
            min=12.25,
            unit="Milliseconds",
        ),
        Billing(
            context=Context("aws", "111122223333", "us-east-1", "", ""),
            time=1772445600.0,
            end=1772445660.0,
            cost_usd=1234.56,
            usage_amount=0.0,
            usage_kind="estimated_charges",
            source="metric_stream",
        ),
        Billing(
            context=Context(
                "aws", "444455556666", "us-east-1", "service:AWSLambda", ""
            ),
            time=1772445600.0,
            end=1772445660.0,
            cost_usd=98.7,
            usage_amount=0.0,
            usage_kind="estimated_charges",
            source="metric_stream",
        ),
    ]


def test_gzip_crlf_and_missing_trailing_newline() -> None:
    plain = lines(line(), line(metric_name="Throttles"))
    crlf = plain.replace(b"\n", b"\r\n").rstrip()
    for raw in (plain, crlf, gzip.compress(plain)):
        events = parse_metric_stream(raw, SOURCE)
        assert [e.name for e in events if isinstance(e, Metric)] == [
            "Errors",
            "Throttles",
        ]


@pytest.mark.parametrize(
    "record",
    [
        line(dimensions={}),
        line(dimensions=...),
        line(dimensions={"Resource": "resize:prod"}),
        line(dimensions={"FunctionName": "f", "ExecutedVersion": "3"}),
        line(namespace="AWS/SQS"),
        line(namespace="AWS/Billing", metric_name="Other"),
        line(
            namespace="AWS/Billing",
            metric_name="EstimatedCharges",
            dimensions={"Currency": "EUR"},
        ),
    ],
)
def test_records_that_give_no_event(record: bytes) -> None:
    assert parse_metric_stream(lines(line(), record), SOURCE) == [
        parse_metric_stream(line(), SOURCE)[0]
    ]


def test_resource_without_a_qualifier_means_latest() -> None:
    raw = line(dimensions={"FunctionName": "f", "Resource": "f"})
    (event,) = parse_metric_stream(raw, SOURCE)
    assert event.context.qualifier == "$LATEST"


def test_empty_and_blank_input() -> None:
    assert parse_metric_stream(b"", SOURCE) == []
    assert parse_metric_stream(b"\n \n\t\n", SOURCE) == []


@pytest.mark.parametrize(
    ("record", "words"),
    [
        (b"{not json", "invalid JSON"),
        (b"[1, 2]", "record must be a JSON object"),
        (line(namespace=...), "namespace must be a string"),
        (line(metric_name=7), "metric_name must be a string"),
        (line(account_id=...), "account_id must be a string"),
        (line(account_id=""), "account_id must be non-empty"),
        (line(region="us/east"), "region must be non-empty"),
        (line(dimensions=["FunctionName"]), "dimensions must be an object"),
        (line(dimensions={"FunctionName": 5}), "dimensions.FunctionName"),
        (line(dimensions={"FunctionName": "f", "Resource": 1}), "dimensions.Resource"),
        (line(dimensions={"FunctionName": "f", "Resource": "f:a/b"}), "Resource"),
        (line(timestamp="1772446440000"), "timestamp"),
        (line(timestamp=-5), "timestamp"),
        (line(timestamp=10**20), "timestamp"),
        (line(value=...), "value must be an object"),
        (line(value={"max": 1.0, "min": 0.0, "sum": "3", "count": 1.0}), "value.sum"),
        (line(value={"max": 1.0, "min": 0.0, "sum": 3.0}), "value.count"),
        (line(value={"max": 1.0, "min": 0.0, "sum": 3.0, "count": -1}), "negative"),
        (line(value={"max": True, "min": 0, "sum": 3, "count": 1}), "value.max"),
        (line(value={"max": 1e301, "min": 0, "sum": 3, "count": 1}), "value.max"),
        (line(unit=None), "unit must be a string"),
        (
            line(
                namespace="AWS/Billing",
                metric_name="EstimatedCharges",
                value={"max": None},
            ),
            "value.max",
        ),
        (
            line(
                namespace="AWS/Billing",
                metric_name="EstimatedCharges",
                dimensions={"ServiceName": ""},
            ),
            "dimensions.ServiceName",
        ),
    ],
)
def test_bad_records_raise_naming_line_and_field(record: bytes, words: str) -> None:
    raw = lines(line(), b"", record)
    with pytest.raises(ParseError, match=words) as exc:
        parse_metric_stream(raw, SOURCE)
    assert exc.value.source == SOURCE and exc.value.position == "line 3"
    assert str(exc.value).startswith(f"{SOURCE} at line 3: ")


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b" " * (MAX_MESSAGE_BYTES + 1), "exceeds"),
        (gzip.compress(lines(line()))[:-12], "truncated"),
        ("text", "expected bytes"),
    ],
)
def test_bad_input_raises(raw: Any, words: str) -> None:
    with pytest.raises(ParseError, match=words) as exc:
        parse_metric_stream(raw, SOURCE)
    assert exc.value.source == SOURCE


def test_looks_like_metric_stream() -> None:
    assert looks_like_metric_stream(RECORD)
    assert looks_like_metric_stream(lines(line(), line()))
    assert not looks_like_metric_stream({"namespace": "AWS/Lambda"})
    assert not looks_like_metric_stream(b'{"messageType": "DATA_MESSAGE"}')
    assert not looks_like_metric_stream([RECORD])


# --- properties -------------------------------------------------------------

near_records = st.fixed_dictionaries(
    {
        "account_id": st.sampled_from(["111122223333", ""]) | json_values,
        "region": st.just("us-east-1") | json_values,
        "namespace": st.sampled_from(["AWS/Lambda", "AWS/Billing"]) | json_values,
        "metric_name": st.sampled_from(["Invocations", "EstimatedCharges"])
        | json_values,
        "dimensions": st.dictionaries(
            st.sampled_from(["FunctionName", "Resource", "ServiceName", "Currency"]),
            st.sampled_from(["f", "f:prod", "USD", ""]) | json_values,
        )
        | json_values,
        "timestamp": st.integers(-10, 10**14) | json_values,
        "value": st.dictionaries(
            st.sampled_from(["max", "min", "sum", "count"]),
            st.floats() | json_values,
        )
        | json_values,
    }
)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_give_events_or_parse_error(raw: bytes) -> None:
    check_events(parsed(parse_metric_stream, raw, SOURCE) or [], Metric, Billing)


@settings(max_examples=200, deadline=None)
@given(st.lists(json_values | near_records, max_size=4))
def test_any_json_lines_give_events_or_parse_error(records: list[Any]) -> None:
    raw = b"\n".join(json.dumps(record).encode() for record in records)
    check_events(parsed(parse_metric_stream, raw, SOURCE) or [], Metric, Billing)
