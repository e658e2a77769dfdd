"""Tests of the REPORT-line and Telemetry API parsers."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dowguard.errors import ParseError
from ingest.events import Context, Invocation, InvocationStart
from ingest.formats.common import MAX_MESSAGE_BYTES
from ingest.formats.lambda_report import (
    MAX_DURATION_MS,
    MAX_MEMORY_MB,
    brief,
    parse_platform_event,
    parse_report_text,
    parse_start_text,
    parse_telemetry_batch,
)
from tests.ingest.fuzz import check_events, json_values, parsed

SAMPLES = Path(__file__).parent / "samples"
CTX = Context("aws", "111122223333", "us-east-1", "resize", "prod")
SOURCE = "test-topic/0@17"
POS = "logEvents[4]"
REQUEST = "3f1c5d2e-8a7b-4c6d-9e0f-1a2b3c4d5e6f"
FULL = (
    f"REPORT RequestId: {REQUEST}\tDuration: 812.40 ms\tBilled Duration: 1053 ms\t"
    "Memory Size: 512 MB\tMax Memory Used: 97 MB\tInit Duration: 240.11 ms\t\n"
)
XRAY = "XRAY TraceId: 1-65E2F1A0-3b9c0d1e2f3a4b5c6d7e8f90\tSegmentId: 0a1b2c3d\t"
PLAIN = (
    f"REPORT RequestId: {REQUEST}\tDuration: 131.07 ms\tBilled Duration: 132 ms\t"
    "Memory Size: 256 MB\tMax Memory Used: 60 MB\t"
)


def report(text: str) -> Invocation | None:
    return parse_report_text(text, CTX, 1772446501.053, SOURCE, POS)


def platform(obj: Any) -> Invocation | InvocationStart | None:
    return parse_platform_event(obj, CTX, SOURCE, "events[2]")


def report_event(**changes: Any) -> dict[str, Any]:
    metrics = {
        "durationMs": 420.7,
        "billedDurationMs": 421,
        "memorySizeMB": 256,
        "maxMemoryUsedMB": 71,
    }
    record: dict[str, Any] = {
        "requestId": REQUEST,
        "status": "success",
        "metrics": metrics,
    }
    for key, value in changes.items():
        if key.endswith(("Ms", "MB")):
            metrics[key] = value
        else:
            record[key] = value
    return {
        "time": "2026-03-02T10:15:07.120Z",
        "type": "platform.report",
        "record": record,
    }


def assert_names_place(exc: pytest.ExceptionInfo[ParseError], position: str) -> None:
    assert exc.value.source == SOURCE
    assert exc.value.position == position
    assert SOURCE in str(exc.value) and position in str(exc.value)


# --- plain-text REPORT lines ------------------------------------------------


def test_report_with_init_duration_and_xray_line() -> None:
    inv = report(FULL + XRAY + "Sampled: true\t\n")
    assert inv == Invocation(
        context=CTX,
        time=1772446501.053,
        request_id=REQUEST,
        duration_ms=812.40,
        billed_ms=1053.0,
        memory_mb=512,
        max_memory_mb=97,
        init_ms=240.11,
        trace_id="65e2f1a03b9c0d1e2f3a4b5c6d7e8f90",
    )


def test_report_without_init_duration_or_xray_line() -> None:
    inv = report(PLAIN)
    assert inv is not None
    assert (inv.duration_ms, inv.billed_ms, inv.memory_mb) == (131.07, 132.0, 256)
    assert inv.init_ms == 0.0 and inv.trace_id == "" and inv.status == "success"
    assert inv.architecture == "x86_64"


def test_report_with_old_100ms_billing_rounding() -> None:
    inv = report(
        f"REPORT RequestId: {REQUEST}\tDuration: 3.21 ms\tBilled Duration: 100 ms\t"
        "Memory Size: 128 MB\tMax Memory Used: 40 MB\t"
    )
    assert inv is not None and inv.billed_ms == 100.0 and inv.duration_ms == 3.21


def test_report_restore_duration_counts_as_cold_start() -> None:
    inv = report(
        PLAIN + "Restore Duration: 301.5 ms\tBilled Restore Duration: 150 ms\t"
    )
    assert inv is not None and inv.init_ms == 301.5 and inv.billed_ms == 132.0


def test_report_copied_with_spaces_instead_of_tabs() -> None:
    inv = report(FULL.replace("\t", " "))
    assert inv is not None
    assert (inv.billed_ms, inv.memory_mb, inv.max_memory_mb) == (1053.0, 512, 97)
    assert inv.init_ms == 240.11


@pytest.mark.parametrize(
    ("status", "kept"),
    [("timeout", "timeout"), ("error", "error"), ("exploded", "failure")],
)
def test_report_status_label(status: str, kept: str) -> None:
    inv = report(PLAIN + f"Status: {status}\tError Type: Runtime.ExitError\t")
    assert inv is not None and inv.status == kept


def test_report_with_malformed_xray_trace_id_keeps_the_invocation() -> None:
    inv = report(PLAIN + "\nXRAY TraceId: 1-zz-12\tSampled: true")
    assert inv is not None and inv.trace_id == ""


@pytest.mark.parametrize(
    "line",
    [
        f"START RequestId: {REQUEST} Version: $LATEST\n",
        f"END RequestId: {REQUEST}\n",
        "INIT_START Runtime Version: python:3.12.v40\n",
        "REPORT generated for tenant 42\n",
        "REPORT",
        "",
    ],
)
def test_non_report_lines_give_none(line: str) -> None:
    assert report(line) is None


@pytest.mark.parametrize(
    ("line", "words"),
    [
        (PLAIN.replace(f"RequestId: {REQUEST}", "RequestId: "), "RequestId"),
        (PLAIN.replace(f"RequestId: {REQUEST}\t", ""), "RequestId"),
        (PLAIN.replace("Duration: 131.07 ms\tBilled ", "Billed "), "without Duration"),
        (PLAIN.replace("Billed Duration: 132 ms\t", ""), "Billed Duration"),
        (PLAIN.replace("Memory Size: 256 MB\t", ""), "Memory Size"),
        (PLAIN.replace("131.07", "fast"), "not a number"),
        (PLAIN.replace("131.07", "-1.5"), "out of range"),
        (PLAIN.replace("131.07", "NaN"), "out of range"),
        (PLAIN.replace("131.07", "inf"), "out of range"),
        (PLAIN.replace("131.07", "1e12"), "out of range"),
        (PLAIN.replace("132 ms", "99999999 ms"), "out of range"),
        (PLAIN.replace("256 MB", "0 MB"), "out of range"),
        (PLAIN.replace("256 MB", "99999 MB"), "out of range"),
        (PLAIN.replace("256 MB", "256.5 MB"), "whole number"),
        (PLAIN.replace("60 MB", "-3 MB"), "whole number"),
        (PLAIN + "Init Duration: lots ms\t", "Init Duration"),
    ],
)
def test_bad_report_lines_raise_naming_source_and_position(
    line: str, words: str
) -> None:
    with pytest.raises(ParseError, match=words) as exc:
        report(line)
    assert_names_place(exc, POS)


def test_duration_limit_allows_a_full_length_invocation() -> None:
    inv = report(PLAIN.replace("131.07", "900000.00").replace("132 ms", "910000 ms"))
    assert inv is not None and inv.billed_ms == 910000.0
    assert MAX_DURATION_MS >= 910000.0 and MAX_MEMORY_MB >= 10240


# --- Telemetry API events ---------------------------------------------------


def test_platform_report_with_tracing_and_lineage() -> None:
    tracing = {
        "type": "X-Amzn-Trace-Id",
        "value": "Root=1-65e2f1ab-0123456789ABCDEF01234567;Parent=54565fb41ac79632;"
        "Sampled=1;Lineage=a87bd80c:1|68fd508a:5|c512fbe3:2",
    }
    inv = platform(report_event(tracing=tracing, initDurationMs=180.2))
    assert inv == Invocation(
        context=CTX,
        time=1772446507.12,
        request_id=REQUEST,
        duration_ms=420.7,
        billed_ms=421.0,
        memory_mb=256,
        max_memory_mb=71,
        init_ms=180.2,
        trace_id="65e2f1ab0123456789abcdef01234567",
        lineage=5,
    )


@pytest.mark.parametrize(
    ("status", "kept"),
    [
        ("success", "success"),
        ("failure", "failure"),
        ("error", "error"),
        ("timeout", "timeout"),
        ("crashed", "failure"),
        (None, "failure"),
        (["success"], "failure"),
    ],
)
def test_platform_report_status(status: object, kept: str) -> None:
    inv = platform(report_event(status=status))
    assert inv is not None and inv.status == kept


def test_platform_report_optional_fields() -> None:
    event = report_event(restoreDurationMs=95.5)
    del event["record"]["metrics"]["maxMemoryUsedMB"]
    inv = platform(event)
    assert inv is not None
    assert inv.max_memory_mb == 0 and inv.init_ms == 95.5 and inv.lineage == 0


def test_platform_time_with_offset_and_without_zone() -> None:
    with_offset = report_event()
    with_offset["time"] = "2026-03-02T11:15:07.120+01:00"
    naive = report_event()
    naive["time"] = "2026-03-02T10:15:07.120"
    times = {inv.time for inv in (platform(with_offset), platform(naive)) if inv}
    assert times == {1772446507.12}


@pytest.mark.parametrize(
    "kind",
    [
        "platform.runtimeDone",
        "platform.initReport",
        "platform.initStart",
        "platform.logsDropped",
        "platform.somethingNew",
    ],
)
def test_other_platform_events_give_none(kind: str) -> None:
    assert (
        platform({"time": "2026-03-02T10:15:07Z", "type": kind, "record": {}}) is None
    )


@pytest.mark.parametrize(
    ("kind", "record"), [("function", "hello"), ("extension", {"message": "hi"})]
)
def test_function_and_extension_logs_give_none(kind: str, record: object) -> None:
    event = {"time": "2026-03-02T10:15:07Z", "type": kind, "record": record}
    assert platform(event) is None


@pytest.mark.parametrize(
    ("event", "words"),
    [
        ([1, 2], "event must be an object"),
        ({"time": "2026-03-02T10:15:07Z", "record": {}}, "type must be a string"),
        ({"time": "2026-03-02T10:15:07Z", "type": "gossip", "record": {}}, "unknown"),
        ({"type": "platform.start", "record": {}}, "time"),
        ({"time": "yesterday", "type": "platform.start", "record": {}}, "ISO-8601"),
        ({"time": 1772446507, "type": "function", "record": "x"}, "ISO-8601"),
        ({"time": "2026-03-02T10:15:07Z", "type": "platform.start"}, "record"),
        (
            {"time": "2026-03-02T10:15:07Z", "type": "platform.report", "record": []},
            "record of platform.report",
        ),
        (report_event(durationMs="420"), "durationMs"),
        (report_event(durationMs=True), "durationMs"),
        (report_event(durationMs=None), "durationMs"),
        (report_event(durationMs=-1), "durationMs"),
        (report_event(durationMs=math.nan), "durationMs"),
        (report_event(durationMs=10**400), "durationMs"),
        (report_event(billedDurationMs=1e10), "billedDurationMs"),
        (report_event(memorySizeMB=256.0), "memorySizeMB"),
        (report_event(memorySizeMB=0), "memorySizeMB"),
        (report_event(maxMemoryUsedMB="71"), "maxMemoryUsedMB"),
        (report_event(initDurationMs=[]), "initDurationMs"),
        (report_event(requestId=""), "requestId"),
        (report_event(metrics=None), "record.metrics"),
        (report_event(tracing="Root=1-65e2f1ab-0123456789abcdef01234567"), "tracing"),
        (report_event(tracing={"value": 7}), "tracing.value"),
    ],
)
def test_bad_platform_events_raise(event: object, words: str) -> None:
    with pytest.raises(ParseError, match=words) as exc:
        platform(event)
    assert_names_place(exc, "events[2]")


# --- Telemetry batches ------------------------------------------------------


def test_envelope_batch_from_sample() -> None:
    raw = (SAMPLES / "telemetry_envelope.json").read_bytes()
    events = parse_telemetry_batch(raw, None, SOURCE)
    assert len(events) == 2
    begun, inv = events
    context = Context("aws", "111122223333", "us-east-2", "resize", "prod")
    assert begun == InvocationStart(
        context, 1772446507.0, "6d68ca91-49c9-448d-89b8-7ca3e6dc66aa"
    )
    assert isinstance(inv, Invocation)
    assert inv.context == context
    assert (inv.status, inv.billed_ms, inv.memory_mb) == ("error", 13.0, 1024)


def test_envelope_context_defaults_and_wins_over_caller() -> None:
    envelope = {
        "context": {"account": "222", "region": "eu-north-1", "function": "f"},
        "events": [report_event()],
    }
    (inv,) = parse_telemetry_batch(orjson.dumps(envelope), CTX, SOURCE)
    assert inv.context == Context("aws", "222", "eu-north-1", "f", "$LATEST")


def test_bare_array_takes_the_callers_context() -> None:
    batch = [report_event(), report_event(requestId="other")]
    for raw in (orjson.dumps(batch), batch):
        events = parse_telemetry_batch(raw, CTX, SOURCE)
        assert [e.context for e in events] == [CTX, CTX]
        assert [e.request_id for e in events if isinstance(e, Invocation)] == [
            REQUEST,
            "other",
        ]


def test_batch_without_any_context_raises() -> None:
    with pytest.raises(ParseError, match="no function context") as exc:
        parse_telemetry_batch(b"[]", None, SOURCE)
    assert_names_place(exc, "context")


@pytest.mark.parametrize(
    ("context", "position"),
    [
        ({"account": "1", "region": "r"}, "context.function"),
        ({"account": "1", "region": "r", "function": "a/b"}, "context.function"),
        ({"account": 1, "region": "r", "function": "f"}, "context.account"),
        ("aws/1/r/f/q", "context"),
    ],
)
def test_bad_envelope_context_raises(context: object, position: str) -> None:
    raw = orjson.dumps({"context": context, "events": []})
    with pytest.raises(ParseError) as exc:
        parse_telemetry_batch(raw, CTX, SOURCE)
    assert_names_place(exc, position)


@pytest.mark.parametrize(
    ("raw", "position", "words"),
    [
        (b"[{", "offset 0", "invalid JSON"),
        (b'{"a": 1}', "events", "JSON array"),
        (b'"text"', "offset 0", "JSON array"),
        (b" " * (MAX_MESSAGE_BYTES + 1), "offset 0", "exceeds"),
        (json.dumps([report_event(), {"type": "x"}]).encode(), "[1]", "unknown"),
        (
            json.dumps({"events": [report_event(memorySizeMB="big")]}).encode(),
            "events[0]",
            "memorySizeMB",
        ),
    ],
)
def test_bad_batches_raise(raw: bytes, position: str, words: str) -> None:
    with pytest.raises(ParseError, match=words) as exc:
        parse_telemetry_batch(raw, CTX, SOURCE)
    assert_names_place(exc, position)


def test_brief_keeps_error_messages_short() -> None:
    assert brief("x" * 1000).endswith("...") and len(brief("x" * 1000)) < 60
    assert brief([[[]]]) == "a list" and brief(None) == "None"


# --- properties -------------------------------------------------------------

report_labels = st.sampled_from(
    [
        "RequestId",
        "Duration",
        "Billed Duration",
        "Memory Size",
        "Max Memory Used",
        "Init Duration",
        "Restore Duration",
        "Status",
        "XRAY TraceId",
    ]
)
report_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.integers(-(10**30), 10**30).map(str),
    st.text(max_size=12),
)
report_lines = st.lists(
    st.tuples(report_labels, report_values, st.sampled_from(["", " ms", " MB"])),
    max_size=9,
).map(lambda pairs: "REPORT " + "\t".join(f"{k}: {v}{u}" for k, v, u in pairs))


@settings(max_examples=200, deadline=None)
@given(st.one_of(report_lines, st.text().map(lambda t: "REPORT " + t)))
def test_report_text_gives_invocation_none_or_parse_error(line: str) -> None:
    inv = parsed(report, line)
    check_events([inv] if inv is not None else [], Invocation)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        json_values,
        st.fixed_dictionaries(
            {
                "time": st.sampled_from(
                    ["2026-03-02T10:15:07Z", "0001-01-01T00:00+01:00"]
                )
                | json_values,
                "type": st.sampled_from(["platform.report", "function", "platform.x"])
                | json_values,
                "record": st.fixed_dictionaries(
                    {
                        "requestId": st.text(max_size=4) | json_values,
                        "status": json_values,
                        "metrics": st.dictionaries(
                            st.sampled_from(
                                ["durationMs", "billedDurationMs", "memorySizeMB"]
                            ),
                            st.integers(-5, 2 * 10**6) | json_values,
                        ),
                        "tracing": json_values,
                    }
                )
                | json_values,
            }
        ),
    )
)
def test_platform_event_gives_invocation_none_or_parse_error(obj: Any) -> None:
    inv = parsed(platform, obj)
    check_events([inv] if inv is not None else [], Invocation)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode())
    )
)
def test_telemetry_batch_of_any_bytes_gives_list_or_parse_error(raw: bytes) -> None:
    check_events(parsed(parse_telemetry_batch, raw, CTX, SOURCE) or [], Invocation)


def outcome(line: str) -> Invocation | str | None:
    try:
        return report(line)
    except ParseError as exc:
        return str(exc)


@settings(max_examples=200, deadline=None)
@given(
    duration=st.integers(0, 2 * 10**8),
    billed=st.integers(0, 2 * 10**6),
    memory=st.integers(0, 3 * 10**4),
    used=st.integers(0, 3 * 10**4),
    init=st.none() | st.integers(0, 10**8),
    traced=st.booleans(),
)
def test_canonical_and_tolerant_readings_agree(
    duration: int, billed: int, memory: int, used: int, init: int | None, traced: bool
) -> None:
    line = (
        f"REPORT RequestId: {REQUEST}\tDuration: {duration / 100:.2f} ms\t"
        f"Billed Duration: {billed} ms\tMemory Size: {memory} MB\t"
        f"Max Memory Used: {used} MB\t"
    )
    if init is not None:
        line += f"Init Duration: {init / 100:.2f} ms\t"
    if traced:
        line += "\n" + XRAY + "Sampled: true\t\n"
    # Spaces for tabs take the tolerant path; the exact line the quick one.
    assert outcome(line) == outcome(line.replace("\t", " "))


# --- starts -----------------------------------------------------------------


def start(text: str) -> InvocationStart | None:
    return parse_start_text(text, CTX, 1772446500.24, SOURCE, POS)


@pytest.mark.parametrize(
    "text",
    [
        f"START RequestId: {REQUEST} Version: $LATEST\n",
        f"START RequestId: {REQUEST} Version: 7",
        f"START RequestId: {REQUEST} Version: 12\t\r\n",
    ],
)
def test_start_line(text: str) -> None:
    assert start(text) == InvocationStart(CTX, 1772446500.24, REQUEST)


@pytest.mark.parametrize(
    "text", ["STARTED batch 7", "START of the import", "START", "", "REPORT x"]
)
def test_lines_that_are_not_start_lines_give_none(text: str) -> None:
    assert start(text) is None


@pytest.mark.parametrize(
    "text",
    [
        "START RequestId: ",
        f"START RequestId: {REQUEST}",
        f"START RequestId: {REQUEST} Version:",
        f"START RequestId: {REQUEST} Version: 7 extra",
        "START RequestId:  Version: 7",
        f"START RequestId: {REQUEST}\tVersion: 7",
    ],
)
def test_broken_start_line_raises_naming_the_place(text: str) -> None:
    with pytest.raises(ParseError) as exc:
        start(text)
    assert (exc.value.source, exc.value.position) == (SOURCE, POS)
    assert "START line" in exc.value.reason


def test_platform_start() -> None:
    event = {
        "time": "2026-03-02T10:15:07.000Z",
        "type": "platform.start",
        "record": {"requestId": REQUEST, "version": "$LATEST"},
    }
    assert platform(event) == InvocationStart(CTX, 1772446507.0, REQUEST)


@pytest.mark.parametrize("request_id", [None, "", 17, ["x"]])
def test_platform_start_without_a_request_id_raises(request_id: object) -> None:
    record = {} if request_id is None else {"requestId": request_id}
    event = {"time": "2026-03-02T10:15:07Z", "type": "platform.start", "record": record}
    with pytest.raises(ParseError) as exc:
        platform(event)
    assert (exc.value.source, exc.value.position) == (SOURCE, "events[2]")
    assert "platform.start record.requestId" in exc.value.reason
