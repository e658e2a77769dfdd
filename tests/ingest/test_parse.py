"""Tests of the format dispatcher: one message, one file, several files."""

from __future__ import annotations

import base64
import gzip
import io
import math
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dowguard.errors import ParseError
from ingest import parse
from ingest.events import (
    Billing,
    Context,
    Event,
    Invocation,
    InvocationStart,
    Metric,
    Span,
    encode_event,
)
from ingest.formats.recording import write_recording
from ingest.parse import parse_message, read_path, read_paths

SAMPLES = Path(__file__).parent / "samples"
SRC = "dowguard.invocations/0/42"
CTX = Context("aws", "111122223333", "us-east-1", "resize", "$LATEST")
TRACE = "5759e988bd862e3fe1be46a994272793"

REPORT = (
    "REPORT RequestId: 3f1c\tDuration: 812.40 ms\tBilled Duration: 813 ms\t"
    "Memory Size: 512 MB\tMax Memory Used: 97 MB\t"
)
CLOUDWATCH = {
    "messageType": "DATA_MESSAGE",
    "owner": "111122223333",
    "logGroup": "/aws/lambda/resize",
    "logStream": "2026/03/02/[$LATEST]ab12",
    "subscriptionFilters": ["dow-tap"],
    "logEvents": [{"id": "1", "timestamp": 1772446507120, "message": REPORT}],
}
TELEMETRY = [
    {
        "time": "2026-03-02T10:15:07.120Z",
        "type": "platform.report",
        "record": {
            "requestId": "9b2e",
            "status": "success",
            "metrics": {
                "durationMs": 420.7,
                "billedDurationMs": 421,
                "memorySizeMB": 256,
                "maxMemoryUsedMB": 71,
            },
        },
    }
]
METRIC_LINE = orjson.dumps(
    {
        "metric_stream_name": "dow",
        "account_id": "111122223333",
        "region": "us-east-1",
        "namespace": "AWS/Lambda",
        "metric_name": "Invocations",
        "dimensions": {"FunctionName": "resize"},
        "timestamp": 1772446440000,
        "value": {"max": 1.0, "min": 1.0, "sum": 412.0, "count": 412.0},
        "unit": "Count",
    }
)
OTLP = {
    "resourceSpans": [
        {
            "resource": {
                "attributes": [
                    {"key": "cloud.platform", "value": {"stringValue": "aws_lambda"}},
                    {"key": "faas.name", "value": {"stringValue": "resize"}},
                ]
            },
            "scopeSpans": [
                {
                    "spans": [
                        {
                            "traceId": TRACE,
                            "spanId": "53995c3f42cd8ad8",
                            "name": "resize",
                            "kind": 2,
                            "startTimeUnixNano": "1772446507120000000",
                            "endTimeUnixNano": "1772446507532000000",
                        }
                    ]
                }
            ],
        }
    ]
}
FOCUS_ROW = {
    "ChargePeriodStart": "2026-03-02T10:00:00Z",
    "ChargePeriodEnd": "2026-03-02T11:00:00Z",
    "ServiceName": "AWS Lambda",
    "ResourceId": "arn:aws:lambda:us-east-1:111122223333:function:resize",
    "ChargeCategory": "Usage",
    "ConsumedQuantity": 5821.4,
    "ConsumedUnit": "Lambda-GB-Second",
    "BilledCost": 0.0776,
    "BillingCurrency": "USD",
}
CUR_CSV = (
    b"lineItem/UsageAccountId,lineItem/LineItemType,lineItem/UsageStartDate,"
    b"lineItem/UsageEndDate,lineItem/ProductCode,lineItem/UsageType,"
    b"lineItem/ResourceId,lineItem/UsageAmount,lineItem/UnblendedCost,"
    b"product/region\r\n"
    b"111122223333,Usage,2026-03-02T10:00:00Z,2026-03-02T11:00:00Z,AWSLambda,"
    b"USE1-Request,arn:aws:lambda:us-east-1:111122223333:function:resize,"
    b"1000,0.0002,us-east-1\r\n"
)
FOCUS_CSV = (
    b"ChargePeriodStart,ChargePeriodEnd,ServiceName,ResourceId,BilledCost,"
    b"BillingCurrency,ConsumedQuantity,ConsumedUnit\n"
    b"2026-03-02T10:00:00Z,2026-03-02T11:00:00Z,AWS Lambda,"
    b"arn:aws:lambda:us-east-1:111122223333:function:resize,0.5,USD,3,Requests\n"
)


def invocation(time: float, request_id: str = "r") -> Invocation:
    return Invocation(CTX, time, request_id, 1.0, 1.0, 128)


# ---- parse_message -------------------------------------------------------------


def test_dowguard_event_json() -> None:
    event = Span(CTX, 1.0, 2.0, TRACE, "1" * 16, links=(("a" * 32, "b" * 16),))
    assert parse_message(encode_event(event), SRC) == [event]


def test_dowguard_event_json_lines_and_array() -> None:
    events = [invocation(1.0), invocation(2.0, "s")]
    lines = b"\n".join(encode_event(e) for e in events)
    assert parse_message(lines, SRC) == events
    array = b"[" + b",".join(encode_event(e) for e in events) + b"]"
    assert parse_message(array, SRC) == events


def test_dowguard_event_with_infinite_time_is_refused() -> None:
    raw = encode_event(invocation(1.0)).replace(b'"time":1.0', b'"time":1e999')
    with pytest.raises(ParseError):
        parse_message(raw, SRC)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda d: gzip.compress(orjson.dumps(d)),
        lambda d: base64.b64encode(gzip.compress(orjson.dumps(d))),
        lambda d: orjson.dumps(
            {
                "awslogs": {
                    "data": base64.b64encode(gzip.compress(orjson.dumps(d))).decode()
                }
            }
        ),
        lambda d: b"  " + orjson.dumps(d),
    ],
    ids=["gzip", "base64-gzip", "awslogs", "decoded"],
)
def test_cloudwatch_payload_in_every_wrapping(wrap: Any) -> None:
    (event,) = parse_message(wrap(CLOUDWATCH), SRC)
    assert isinstance(event, Invocation)
    assert event.context.function == "resize"
    assert event.request_id == "3f1c"
    assert event.billed_ms == 813


def test_cloudwatch_control_message_gives_nothing() -> None:
    raw = (SAMPLES / "cloudwatch_control.json").read_bytes()
    assert parse_message(gzip.compress(raw), SRC) == []


def test_telemetry_array_takes_its_context_from_the_key() -> None:
    key = Context("aws", "111122223333", "us-east-2", "resize", "prod").key()
    (event,) = parse_message(orjson.dumps(TELEMETRY), SRC, key=key)
    assert isinstance(event, Invocation)
    assert event.context == Context.from_key(key)


def test_telemetry_array_without_usable_key_names_the_missing_context() -> None:
    for key in (None, b"not-a-context", b"\xff\xfe/a/b/c/d"):
        with pytest.raises(ParseError, match="context"):
            parse_message(orjson.dumps(TELEMETRY), SRC, key=key)


def test_telemetry_envelope() -> None:
    events = parse_message((SAMPLES / "telemetry_envelope.json").read_bytes(), SRC)
    assert events
    assert all(e.context.qualifier == "prod" for e in events)


def test_otlp_export() -> None:
    (span,) = parse_message(orjson.dumps(OTLP), SRC)
    assert isinstance(span, Span)
    assert span.context == Context("aws", "", "", "resize", "$LATEST")


def test_metric_stream_lines() -> None:
    events = parse_message(METRIC_LINE + b"\n" + METRIC_LINE + b"\n", SRC)
    assert [type(e) for e in events] == [Metric, Metric]
    (single,) = parse_message(METRIC_LINE, SRC)
    assert single == events[0]


def test_focus_json_line() -> None:
    (event,) = parse_message(orjson.dumps(FOCUS_ROW), SRC)
    assert isinstance(event, Billing)
    assert (event.source, event.cost_usd) == ("focus", 0.0776)


@pytest.mark.parametrize(("raw", "source"), [(CUR_CSV, "cur"), (FOCUS_CSV, "focus")])
def test_billing_csv_text(raw: bytes, source: str) -> None:
    (event,) = parse_message(raw, SRC)
    assert isinstance(event, Billing)
    assert event.source == source
    assert event.usage_kind == "requests"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty message"),
        (b"   \n", "empty message"),
        (b"hello world", "unrecognised format (starts with b'hello world')"),
        (b"\x00\x01\x02", "unrecognised format"),
        (b"{}", "unrecognised JSON object"),
        (b'{"some": "thing"}', "unrecognised JSON object (keys: some)"),
        (b"null", "unrecognised format"),
        (b"[1, 2]", "array item must be an object"),
        (b"{not json", "invalid JSON"),
        (b"\x1f\x8b\x08\x00junk", "gzip"),
        (gzip.compress(orjson.dumps(CLOUDWATCH))[:-12], "truncated gzip"),
        (b"H4sI!!!not base64", "invalid base64"),
        (gzip.compress(gzip.compress(b"{}")), "unrecognised format"),
        (orjson.dumps({**CLOUDWATCH, "messageType": "PING"}), "unknown message type"),
        (orjson.dumps({"resourceSpans": [{"scopeSpans": 3}]}), "expected list"),
        (METRIC_LINE + b"\n{broken\n", "invalid JSON"),
    ],
)
def test_unusable_messages_raise_parse_error(raw: bytes, reason: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_message(raw, SRC)
    assert info.value.source == SRC
    assert reason in str(info.value)


def test_bad_line_of_a_message_names_the_line() -> None:
    with pytest.raises(ParseError) as info:
        parse_message(METRIC_LINE + b"\n\n" + b'{"oops": 1}', SRC)
    assert info.value.position == "line 3"


def test_gzip_bomb_and_oversized_message_are_refused() -> None:
    bomb = gzip.compress(b"\0" * (100 * 1024 * 1024))
    with pytest.raises(ParseError, match="inflates beyond"):
        parse_message(bomb, SRC)
    with pytest.raises(ParseError, match="exceeds"):
        parse_message(b"[" + b" " * (9 * 1024 * 1024) + b"]", SRC)


def test_parser_bug_becomes_parse_error_naming_the_parser(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(obj: object, source: str) -> list[Event]:
        raise KeyError("surprise")

    monkeypatch.setattr(parse, "parse_otlp", broken)
    with pytest.raises(ParseError, match="otlp parser failed: KeyError") as info:
        parse_message(orjson.dumps(OTLP), SRC)
    assert isinstance(info.value.__cause__, KeyError)


def test_non_bytes_message_is_refused() -> None:
    with pytest.raises(ParseError, match="expected bytes"):
        parse_message("text", SRC)  # type: ignore[arg-type]


_keys = st.sampled_from(
    [
        "awslogs",
        "data",
        "messageType",
        "logEvents",
        "logGroup",
        "resourceSpans",
        "scopeSpans",
        "spans",
        "metric_name",
        "namespace",
        "events",
        "context",
        "type",
        "record",
        "time",
        "dowguard_event",
        "ChargePeriodStart",
        "ChargePeriodEnd",
        "BilledCost",
        "ServiceName",
    ]
)
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(_keys | st.text(max_size=5), inner, max_size=5)
    ),
    max_leaves=25,
)


def _events_or_parse_error(raw: bytes, key: bytes | None = None) -> None:
    try:
        events = parse_message(raw, SRC, key)
    except ParseError:
        return
    for event in events:
        assert isinstance(event, (Invocation, Metric, Billing, Span))
        assert isinstance(event.context, Context)
        assert math.isfinite(event.time) and event.time >= 0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_give_events_or_parse_error(raw: bytes) -> None:
    _events_or_parse_error(raw)
    _events_or_parse_error(gzip.compress(raw))


@settings(max_examples=300, deadline=None)
@given(_json, st.sampled_from([None, CTX.key()]))
def test_arbitrary_json_gives_events_or_parse_error(
    doc: Any, key: bytes | None
) -> None:
    raw = orjson.dumps(doc)
    _events_or_parse_error(raw, key)
    _events_or_parse_error(raw + b"\n" + raw, key)


def _leaf_paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    items = (
        obj.items()
        if isinstance(obj, dict)
        else enumerate(obj)
        if isinstance(obj, list)
        else ()
    )
    for k, v in items:
        found.extend(_leaf_paths(v, (*prefix, k)))
    return found


_GOOD_DOCS = [CLOUDWATCH, OTLP, orjson.loads(METRIC_LINE), FOCUS_ROW, TELEMETRY]
_DOC_PATHS = [(i, p) for i, d in enumerate(_GOOD_DOCS) for p in _leaf_paths(d)]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_DOC_PATHS), _json, st.booleans())
def test_good_messages_with_one_field_changed_give_events_or_parse_error(
    where: tuple[int, tuple[Any, ...]], value: Any, delete: bool
) -> None:
    doc = orjson.loads(orjson.dumps(_GOOD_DOCS[where[0]]))
    *parents, last = where[1]
    target = doc
    for step in parents:
        target = target[step]
    if delete and isinstance(target, dict):
        del target[last]
    else:
        target[last] = value
    _events_or_parse_error(orjson.dumps(doc), CTX.key())


# ---- read_path -----------------------------------------------------------------


class Errors(list[ParseError]):
    def __call__(self, error: ParseError) -> None:
        self.append(error)


def test_recording_file(tmp_path: Path) -> None:
    events = [invocation(3.0), invocation(1.0, "s")]
    write_recording(tmp_path / "run.dgr", events)
    errors = Errors()
    assert list(read_path(tmp_path / "run.dgr", errors)) == sorted(
        events, key=lambda e: e.time
    )
    assert errors == []


def test_json_lines_file_with_a_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(
        b"\n".join(
            [
                encode_event(invocation(5.0)),
                orjson.dumps(CLOUDWATCH),
                b"{broken",
                METRIC_LINE,
                orjson.dumps(FOCUS_ROW),
                orjson.dumps(OTLP),
                orjson.dumps({**CLOUDWATCH, "logGroup": "/ecs/web"}),
                orjson.dumps(TELEMETRY),
            ]
        )
    )
    errors = Errors()
    events = list(read_path(path, errors))
    assert [type(e) for e in events] == [Invocation, Invocation, Metric, Billing, Span]
    assert [e.position for e in errors] == [
        "line 3",
        "line 7, logGroup",
        "line 8, context",
    ]
    assert all(e.source == str(path) for e in errors)


def test_ndjson_and_gzipped_json_lines(tmp_path: Path) -> None:
    lines = encode_event(invocation(1.0)) + b"\n" + encode_event(invocation(2.0))
    (tmp_path / "a.ndjson").write_bytes(lines)
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(lines))
    errors = Errors()
    assert len(list(read_path(tmp_path / "a.ndjson", errors))) == 2
    assert len(list(read_path(tmp_path / "b.jsonl.gz", errors))) == 2
    assert errors == []


def test_json_array_of_payloads_reports_the_bad_item(tmp_path: Path) -> None:
    path = tmp_path / "payloads.json"
    bad = {**CLOUDWATCH, "logEvents": "nope"}
    path.write_bytes(orjson.dumps([CLOUDWATCH, bad, OTLP]))
    errors = Errors()
    events = list(read_path(path, errors))
    assert [type(e) for e in events] == [Invocation, Span]
    assert [e.position for e in errors] == ["[1], logEvents"]


def test_single_json_document(tmp_path: Path) -> None:
    path = tmp_path / "cw.json"
    path.write_bytes((SAMPLES / "cloudwatch_text.json").read_bytes())
    errors = Errors()
    events = list(read_path(path, errors))
    assert [type(e) for e in events] == [InvocationStart, Invocation] * 2
    assert errors == []


@pytest.mark.parametrize(("raw", "source"), [(CUR_CSV, "cur"), (FOCUS_CSV, "focus")])
def test_csv_files(tmp_path: Path, raw: bytes, source: str) -> None:
    path = tmp_path / "bill.csv"
    path.write_bytes(raw)
    (event,) = list(read_path(path, Errors()))
    assert isinstance(event, Billing) and event.source == source


@pytest.mark.parametrize("kind", ["cur", "focus"])
def test_parquet_files_by_their_columns(tmp_path: Path, kind: str) -> None:
    if kind == "cur":
        header, values = CUR_CSV.decode().splitlines()[:2]
        names = [n.replace("lineItem/", "line_item_") for n in header.split(",")]
        row = dict(zip(header.split(","), values.split(","), strict=True))
    else:
        row = {k: str(v) for k, v in FOCUS_ROW.items()}
        names = list(row)
    table = pa.table({n: [v] for n, v in zip(names, row.values(), strict=True)})
    path = tmp_path / f"{kind}.parquet"
    pq.write_table(table, path)
    (event,) = list(read_path(path, Errors()))
    assert isinstance(event, Billing) and event.source == kind
    sink = io.BytesIO()
    pq.write_table(table, sink)
    gz = tmp_path / f"{kind}.parquet.gz"
    gz.write_bytes(gzip.compress(sink.getvalue()))
    assert list(read_path(gz, Errors())) == [event]


def test_file_without_extension_is_sniffed(tmp_path: Path) -> None:
    (tmp_path / "kinesis-record").write_bytes(gzip.compress(orjson.dumps(CLOUDWATCH)))
    write_recording(tmp_path / "recording", [invocation(1.0)])
    errors = Errors()
    assert len(list(read_path(tmp_path / "kinesis-record", errors))) == 1
    assert list(read_path(tmp_path / "recording", errors)) == [invocation(1.0)]
    assert errors == []


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("notes.txt", b"just some notes", "unrecognised format"),
        ("empty.json", b"", "invalid JSON"),
        ("other.csv", b"a,b\n1,2\n", "neither CUR nor FOCUS"),
        ("broken.dgr", b"ARROW1 but not really", "not a dowguard recording"),
        ("broken.parquet", b"PAR1....", "unreadable Parquet"),
        ("bad.jsonl.gz", b"\x1f\x8b\x08\x00 nonsense", "gzip"),
        ("run.dgr.gz", b"", "not gzip data"),
    ],
)
def test_unusable_file_gives_one_error_and_no_events(
    tmp_path: Path, name: str, content: bytes, reason: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    errors = Errors()
    assert list(read_path(path, errors)) == []
    assert len(errors) == 1
    assert reason in str(errors[0])
    assert errors[0].source == str(path)


def test_gzipped_recording_is_refused(tmp_path: Path) -> None:
    write_recording(tmp_path / "run.dgr", [invocation(1.0)])
    gz = tmp_path / "run.dgr.gz"
    gz.write_bytes(gzip.compress((tmp_path / "run.dgr").read_bytes()))
    errors = Errors()
    assert list(read_path(gz, errors)) == []
    assert "compressed recording" in str(errors[0])


def test_missing_and_oversized_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    errors = Errors()
    assert list(read_path(tmp_path / "absent.jsonl", errors)) == []
    assert "cannot read" in str(errors[0])
    big = tmp_path / "big.jsonl"
    big.write_bytes(encode_event(invocation(1.0)) * 10)
    monkeypatch.setattr(parse, "MAX_FILE_BYTES", 100)
    assert list(read_path(big, errors)) == []
    assert "exceeds" in str(errors[1])


def test_directory_reads_its_files_sorted_without_hidden_ones(tmp_path: Path) -> None:
    (tmp_path / "b.jsonl").write_bytes(encode_event(invocation(1.0, "b")))
    (tmp_path / "a.jsonl").write_bytes(encode_event(invocation(2.0, "a")))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.jsonl").write_bytes(encode_event(invocation(0.5, "c")))
    (tmp_path / ".hidden.jsonl").write_bytes(b"junk")
    errors = Errors()
    events = list(read_path(tmp_path, errors))
    assert [e.request_id for e in events if isinstance(e, Invocation)] == [
        "a",
        "b",
        "c",
    ]
    assert errors == []


def test_parser_bug_in_a_file_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> list[Event]:
        raise ZeroDivisionError("bug")

    monkeypatch.setattr(parse, "parse_cur_csv", broken)
    (tmp_path / "bill.csv").write_bytes(CUR_CSV)
    errors = Errors()
    assert list(read_path(tmp_path / "bill.csv", errors)) == []
    assert "cur parser failed: ZeroDivisionError" in str(errors[0])


# ---- read_paths ----------------------------------------------------------------


def test_read_paths_merges_files_in_time_order(tmp_path: Path) -> None:
    a = tmp_path / "a.jsonl"
    a.write_bytes(
        b"\n".join(encode_event(invocation(t, f"a{t}")) for t in (5.0, 1.0, 3.0))
    )
    b = tmp_path / "b.dgr"
    write_recording(b, [invocation(t, f"b{t}") for t in (4.0, 2.0, 3.0)])
    d = tmp_path / "more"
    d.mkdir()
    (d / "c.json").write_bytes(
        orjson.dumps([orjson.loads(encode_event(invocation(0.5, "c")))])
    )
    errors = Errors()
    events = list(read_paths([a, b, d], errors))
    assert [e.time for e in events] == sorted(e.time for e in events)
    assert [e.request_id for e in events if isinstance(e, Invocation)] == [
        "c",
        "a1.0",
        "b2.0",
        "a3.0",
        "b3.0",
        "b4.0",
        "a5.0",
    ]
    assert errors == []


def test_read_paths_of_one_recording_streams_it(tmp_path: Path) -> None:
    path = tmp_path / "run.dgr"
    write_recording(path, [invocation(float(t)) for t in range(10)])
    stream = read_paths([path], Errors())
    assert next(stream).time == 0.0
    assert len(list(stream)) == 9


def test_read_paths_goes_on_past_bad_files(tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_bytes(encode_event(invocation(1.0)))
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"x,y\n")
    errors = Errors()
    assert list(read_paths([bad, tmp_path / "absent.dgr", good], errors)) == [
        invocation(1.0)
    ]
    assert len(errors) == 2
