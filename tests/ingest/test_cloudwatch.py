"""Tests of the CloudWatch Logs subscription payload parser."""

from __future__ import annotations

import base64
import copy
import gzip
import json
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dowguard.errors import ParseError
from ingest.events import Context, Invocation, InvocationStart
from ingest.formats.cloudwatch import looks_like_cloudwatch, parse_cloudwatch
from ingest.formats.common import MAX_DECOMPRESSED_BYTES, MAX_MESSAGE_BYTES
from tests.ingest.fuzz import check_events, json_values, parsed

SAMPLES = Path(__file__).parent / "samples"
SOURCE = "dowguard.logs/2@4711"


def sample(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SAMPLES / name).read_text())
    return data


def to_bytes(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


def to_gzip(payload: dict[str, Any]) -> bytes:
    return gzip.compress(to_bytes(payload))


def to_base64(payload: dict[str, Any]) -> bytes:
    return base64.b64encode(to_gzip(payload))


def to_wrapper(payload: dict[str, Any]) -> dict[str, Any]:
    return {"awslogs": {"data": to_base64(payload).decode()}}


def to_wrapper_bytes(payload: dict[str, Any]) -> bytes:
    return json.dumps(to_wrapper(payload)).encode()


ENCODINGS: list[Callable[[dict[str, Any]], Any]] = [
    lambda payload: payload,
    to_bytes,
    to_gzip,
    to_base64,
    to_wrapper,
    to_wrapper_bytes,
]
ENCODING_IDS = ["dict", "json", "gzip", "base64", "awslogs", "awslogs-bytes"]


def with_message(message: str, index: int = 3) -> dict[str, Any]:
    """The text sample with one log event's message replaced."""
    payload = sample("cloudwatch_text.json")
    payload["logEvents"][index]["message"] = message
    return payload


def assert_names_place(exc: pytest.ExceptionInfo[ParseError], position: str) -> None:
    assert exc.value.source == SOURCE and exc.value.position == position
    assert SOURCE in str(exc.value) and position in str(exc.value)


# --- valid payloads ---------------------------------------------------------


@pytest.mark.parametrize("encode", ENCODINGS, ids=ENCODING_IDS)
def test_text_payload_in_every_encoding(
    encode: Callable[[dict[str, Any]], Any],
) -> None:
    events = parse_cloudwatch(encode(sample("cloudwatch_text.json")), SOURCE)
    context = Context("aws", "111122223333", "eu-west-1", "resize", "7")
    assert events == [
        InvocationStart(context, 1772446500.24, "8c1d7e2a-0f3b-4c5d-9e6f-1a2b3c4d5e6f"),
        Invocation(
            context=context,
            time=1772446501.053,
            request_id="8c1d7e2a-0f3b-4c5d-9e6f-1a2b3c4d5e6f",
            duration_ms=812.40,
            billed_ms=1053.0,
            memory_mb=512,
            max_memory_mb=97,
            init_ms=240.11,
            trace_id="65e2f1a03b9c0d1e2f3a4b5c6d7e8f90",
        ),
        InvocationStart(context, 1772446502.0, "2b6a9f14-77c0-4e21-b3d8-5f9e0a1c2d3e"),
        Invocation(
            context=context,
            time=1772446502.133,
            request_id="2b6a9f14-77c0-4e21-b3d8-5f9e0a1c2d3e",
            duration_ms=131.07,
            billed_ms=132.0,
            memory_mb=512,
            max_memory_mb=98,
            # Logged as a log event of its own after the REPORT.
            trace_id="65e2f1a100112233445566778899aabb",
        ),
    ]


@pytest.mark.parametrize("encode", ENCODINGS, ids=ENCODING_IDS)
def test_json_log_format_payload(encode: Callable[[dict[str, Any]], Any]) -> None:
    events = parse_cloudwatch(encode(sample("cloudwatch_json.json")), SOURCE)
    context = Context("aws", "111122223333", "unknown", "thumbnail", "$LATEST")
    assert events == [
        # The log event's timestamp, as for the REPORT.
        InvocationStart(context, 1772446507.0, "9b2e4c1d-5a6f-4b7c-8d9e-0f1a2b3c4d5e"),
        Invocation(
            context=context,
            time=1772446507.12,
            request_id="9b2e4c1d-5a6f-4b7c-8d9e-0f1a2b3c4d5e",
            duration_ms=420.7,
            billed_ms=601.0,
            memory_mb=256,
            max_memory_mb=71,
            init_ms=180.2,
            status="timeout",
            trace_id="65e2f1ab0123456789abcdef01234567",
            lineage=5,
        ),
    ]


def test_json_report_takes_the_log_event_timestamp() -> None:
    payload = sample("cloudwatch_json.json")
    payload["logEvents"][0]["timestamp"] = 1772446599000
    payload["logEvents"][4]["timestamp"] = 1772446600000
    start, event = parse_cloudwatch(payload, SOURCE)
    assert (start.time, event.time) == (1772446599.0, 1772446600.0)


@pytest.mark.parametrize("encode", ENCODINGS, ids=ENCODING_IDS)
def test_control_message_gives_nothing(encode: Callable[[dict[str, Any]], Any]) -> None:
    assert parse_cloudwatch(encode(sample("cloudwatch_control.json")), SOURCE) == []


def test_base64_with_surrounding_whitespace() -> None:
    raw = b"\n " + to_base64(sample("cloudwatch_text.json")) + b"\r\n"
    assert len(parse_cloudwatch(raw, SOURCE)) == 4


@pytest.mark.parametrize(
    ("stream", "qualifier"),
    [
        ("2026/03/02/[$LATEST]abc", "$LATEST"),
        ("2026/03/02/[12]abc", "12"),
        ("2026/03/02/abc", "$LATEST"),
        ("2026/03/02/[]abc", "$LATEST"),
    ],
)
def test_qualifier_from_log_stream(stream: str, qualifier: str) -> None:
    payload = sample("cloudwatch_text.json")
    payload["logStream"] = stream
    events = parse_cloudwatch(payload, SOURCE)
    assert {e.context.qualifier for e in events} == {qualifier}


def test_missing_log_stream_means_latest_and_missing_region_unknown() -> None:
    payload = sample("cloudwatch_text.json")
    del payload["logStream"], payload["region"]
    events = parse_cloudwatch(payload, SOURCE)
    assert {e.context for e in events} == {
        Context("aws", "111122223333", "unknown", "resize", "$LATEST")
    }


def test_empty_data_message() -> None:
    payload = sample("cloudwatch_text.json")
    payload["logEvents"] = []
    assert parse_cloudwatch(payload, SOURCE) == []


def test_looks_like_cloudwatch() -> None:
    assert looks_like_cloudwatch(sample("cloudwatch_text.json"))
    assert looks_like_cloudwatch({"awslogs": {}})
    assert not looks_like_cloudwatch({"messageType": "DATA_MESSAGE"})
    assert not looks_like_cloudwatch([{"awslogs": {}}])
    assert not looks_like_cloudwatch(b'{"awslogs": {}}')


# --- broken payloads --------------------------------------------------------


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    """100 MB of zeros as gzip: small on the wire, above the inflate limit."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = bytes(1 << 20)
    parts = [packer.compress(chunk) for _ in range(100)]
    parts.append(packer.flush())
    return b"".join(parts)


def test_gzip_bomb_raises(gzip_bomb: bytes) -> None:
    assert len(gzip_bomb) < MAX_MESSAGE_BYTES < 100 << 20
    assert MAX_DECOMPRESSED_BYTES < 100 << 20
    with pytest.raises(ParseError, match="inflates beyond") as exc:
        parse_cloudwatch(gzip_bomb, SOURCE)
    assert exc.value.source == SOURCE


def test_gzip_bomb_in_the_awslogs_wrapper_raises(gzip_bomb: bytes) -> None:
    wrapper = {"awslogs": {"data": base64.b64encode(gzip_bomb).decode()}}
    with pytest.raises(ParseError, match="inflates beyond"):
        parse_cloudwatch(wrapper, SOURCE)


@pytest.mark.parametrize(
    ("raw", "position", "words"),
    [
        (to_gzip(sample("cloudwatch_text.json"))[:-20], None, "truncated"),
        (b"\x1f\x8b\x08\x00garbage-not-deflate", "offset 0", "bad gzip"),
        (b"H4sI!!!not-base64", "offset 0", "invalid base64"),
        (b"{not json", "offset 0", "invalid JSON"),
        (b"[1, 2, 3]", "offset 0", "invalid base64"),
        (base64.b64encode(b"plain text"), "offset 0", "invalid JSON"),
        (b"{" + b" " * MAX_MESSAGE_BYTES + b"}", "offset 0", "exceeds"),
        (b'"just a string"', "offset 0", "base64"),
        (b'{"awslogs": {"data": "%%%"}}', "awslogs.data", "invalid base64"),
        (b'{"awslogs": {"data": 5}}', "awslogs.data", "base64 data string"),
        (b'{"awslogs": "x"}', "awslogs.data", "base64 data string"),
        (b"[]", "offset 0", "invalid base64"),
        (b'{"messageType": "DATA_MESSAGE"}', "logGroup", "not a Lambda log group"),
        (b'{"messageType": "SURPRISE"}', "messageType", "unknown message type"),
        (b'{"logEvents": []}', "messageType", "unknown message type"),
    ],
)
def test_broken_encodings_raise(raw: bytes, position: str | None, words: str) -> None:
    with pytest.raises(ParseError, match=words) as exc:
        parse_cloudwatch(raw, SOURCE)
    assert exc.value.source == SOURCE and SOURCE in str(exc.value)
    if position is not None:
        assert exc.value.position == position


@pytest.mark.parametrize("raw", [None, 42, "text", ["list"]])
def test_wrong_input_types_raise(raw: Any) -> None:
    with pytest.raises(ParseError, match="expected bytes or a JSON object"):
        parse_cloudwatch(raw, SOURCE)


@pytest.mark.parametrize(
    ("change", "position", "words"),
    [
        ({"logGroup": "/aws/ecs/web"}, "logGroup", "not a Lambda log group"),
        ({"logGroup": "/aws/lambda/"}, "logGroup", "no usable context"),
        ({"logGroup": "/aws/lambda/a/b"}, "logGroup", "no usable context"),
        ({"owner": 111122223333}, "owner", "no usable context"),
        ({"owner": ""}, "owner", "no usable context"),
        ({"region": None}, "region", "no usable context"),
        ({"logStream": 7}, "logStream", "must be a string"),
        ({"logEvents": {"0": {}}}, "logEvents", "must be a list"),
    ],
)
def test_bad_payload_fields_raise(
    change: dict[str, Any], position: str, words: str
) -> None:
    payload = {**sample("cloudwatch_text.json"), **change}
    with pytest.raises(ParseError, match=words) as exc:
        parse_cloudwatch(to_gzip(payload), SOURCE)
    assert_names_place(exc, position)


REPORT = (
    "REPORT RequestId: 1a2b\tDuration: 5.00 ms\tBilled Duration: 5 ms\t"
    "Memory Size: 128 MB\tMax Memory Used: 50 MB\t"
)


@pytest.mark.parametrize(
    ("event", "words"),
    [
        ("not an object", "must be an object"),
        ({"timestamp": 1772446500000}, "message must be a string"),
        ({"timestamp": 1772446500000, "message": 5}, "message must be a string"),
        ({"message": REPORT}, "timestamp"),
        ({"timestamp": "1772446500000", "message": REPORT}, "timestamp"),
        ({"timestamp": True, "message": REPORT}, "timestamp"),
        ({"timestamp": -1, "message": REPORT}, "timestamp"),
        ({"timestamp": 10**30, "message": REPORT}, "timestamp"),
        ({"timestamp": 1, "message": REPORT.replace("5.00", "-5")}, "out of range"),
        ({"timestamp": 1, "message": REPORT.replace("5.00", "nan")}, "out of range"),
        ({"timestamp": 1, "message": REPORT.replace("5.00", "9e99")}, "out of range"),
        ({"timestamp": 1, "message": REPORT.replace("128", "1e9")}, "whole number"),
        ({"timestamp": 1, "message": '{"type": "platform.report", "rec'}, "JSON"),
        (
            {"timestamp": 1, "message": '{"type": "platform.report", "record": 1}'},
            "time",
        ),
        (
            {
                "timestamp": 1,
                "message": '{"time": "2026-03-02T10:15:07Z",'
                ' "type": "platform.report", "record": {"requestId": "r"}}',
            },
            "record.metrics",
        ),
    ],
)
def test_one_bad_log_event_fails_the_payload_naming_its_index(
    event: object, words: str
) -> None:
    payload = sample("cloudwatch_text.json")
    payload["logEvents"][3] = event
    with pytest.raises(ParseError, match=words) as exc:
        parse_cloudwatch(payload, SOURCE)
    assert_names_place(exc, "logEvents[3]")


def test_application_lines_are_not_checked() -> None:
    payload = with_message("{broken json from the app")
    payload["logEvents"].append({"timestamp": "no", "message": "hello"})
    payload["logEvents"].append({"timestamp": "no", "message": "STARTED the job"})
    assert len(parse_cloudwatch(payload, SOURCE)) == 4


def test_start_lines_give_starts_in_log_order() -> None:
    events = parse_cloudwatch(sample("cloudwatch_text.json"), SOURCE)
    starts = [e for e in events if isinstance(e, InvocationStart)]
    reports = [e for e in events if isinstance(e, Invocation)]
    assert [s.request_id for s in starts] == [r.request_id for r in reports]
    assert all(s.time < r.time for s, r in zip(starts, reports, strict=True))


@pytest.mark.parametrize(
    "message",
    ["START RequestId: \n", "START RequestId: abc Version:\n", "START RequestId: a b"],
)
def test_broken_start_line_fails_the_payload(message: str) -> None:
    with pytest.raises(ParseError, match="START line") as exc:
        parse_cloudwatch(with_message(message, 5), SOURCE)
    assert_names_place(exc, "logEvents[5]")


def test_start_line_with_a_bad_timestamp_fails_the_payload() -> None:
    payload = sample("cloudwatch_text.json")
    payload["logEvents"][1]["timestamp"] = "soon"
    with pytest.raises(ParseError) as exc:
        parse_cloudwatch(payload, SOURCE)
    assert_names_place(exc, "logEvents[1]")


def test_broken_platform_start_fails_the_payload() -> None:
    payload = sample("cloudwatch_json.json")
    payload["logEvents"][0]["message"] = (
        '{"time":"2026-03-02T10:15:07.000Z","type":"platform.start","record":{}}'
    )
    with pytest.raises(ParseError, match="requestId") as exc:
        parse_cloudwatch(payload, SOURCE)
    assert_names_place(exc, "logEvents[0]")


def test_orphan_xray_line_is_ignored() -> None:
    payload = with_message("XRAY TraceId: 1-65e2f1a1-00112233445566778899aabb", 0)
    events = parse_cloudwatch(payload, SOURCE)
    assert [e.trace_id for e in events if isinstance(e, Invocation)] == [
        "65e2f1a03b9c0d1e2f3a4b5c6d7e8f90",
        "65e2f1a100112233445566778899aabb",
    ]


# --- properties -------------------------------------------------------------

messages = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            REPORT,
            REPORT.replace("5.00", "x"),
            "XRAY TraceId: 1-65e2f1a1-00112233445566778899aabb",
            '{"time": "2026-03-02T10:15:07Z", "type": "platform.start", "record": {}}',
            '{"type": "platform.report"',
        ]
    ),
    json_values.map(lambda value: json.dumps({"type": "platform.report", "x": value})),
)
near_payloads = st.fixed_dictionaries(
    {
        "messageType": st.sampled_from(["DATA_MESSAGE", "CONTROL_MESSAGE"])
        | json_values,
        "owner": st.sampled_from(["111122223333", ""]) | json_values,
        "logGroup": st.sampled_from(["/aws/lambda/f", "/aws/x"]) | json_values,
        "logStream": st.text(max_size=20) | json_values,
        "logEvents": st.lists(
            st.fixed_dictionaries(
                {
                    "timestamp": st.integers(-10, 2 * 10**13) | json_values,
                    "message": messages | json_values,
                }
            )
            | json_values,
            max_size=5,
        )
        | json_values,
    }
)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_give_events_or_parse_error(raw: bytes) -> None:
    check_events(parsed(parse_cloudwatch, raw, SOURCE) or [], Invocation)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.dictionaries(st.text(max_size=12), json_values), near_payloads))
def test_any_json_dict_gives_events_or_parse_error(payload: dict[str, Any]) -> None:
    for raw in (payload, to_gzip(payload)):
        events = parsed(parse_cloudwatch, copy.deepcopy(raw), SOURCE)
        check_events(events or [], Invocation)
