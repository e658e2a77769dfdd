"""Lambda invocation records: plain-text START and REPORT lines, Telemetry events.

A Telemetry batch carries no function name. It comes either as a bare JSON
array of events, with the context given by the caller (the Kafka message
key), or wrapped in an envelope that names it::

    {"context": {"provider": "aws", "account": "111122223333",
                 "region": "us-east-1", "function": "resize",
                 "qualifier": "prod"},
     "events": [{"time": "...", "type": "platform.report", "record": {...}}]}

In the envelope ``provider`` defaults to ``aws`` and ``qualifier`` to
``$LATEST``; an envelope's context wins over the caller's.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any

from dowguard.errors import ParseError
from ingest.events import Context, Event, Invocation, InvocationStart
from ingest.formats.common import brief, check_size, load_json
from ingest.formats.xray import parse_trace_header, xray_to_otel_trace_id

logger = logging.getLogger(__name__)

#: The longest an invocation runs (15 minutes) plus a minute of slack, enough
#: for a 10 s INIT phase billed together with a full-length invocation.
MAX_DURATION_MS = 16 * 60 * 1000.0
#: Twice the largest configurable memory: a tolerant upper bound.
MAX_MEMORY_MB = 2 * 10240

# One "Label: value [unit]" pair. Labels start upper-case and may hold spaces
# ("Billed Duration"); the unit is consumed so that space-separated copies of
# a line ("512 MB Max Memory Used: 97 MB") do not glue it to the next label.
_PAIR = re.compile(r"([A-Z][A-Za-z ]*?): *(\S*)(?: +(?:ms|MB))?")

# The line as Lambda writes it, read in one match; anything else (extra
# labels, spaces for tabs, bad values) takes the tolerant pair-by-pair path.
_CANONICAL = re.compile(
    r"REPORT RequestId: (\S+)\tDuration: ([0-9]+(?:\.[0-9]+)?) ms"
    r"\tBilled Duration: ([0-9]+(?:\.[0-9]+)?) ms\tMemory Size: ([0-9]+) MB"
    r"\tMax Memory Used: ([0-9]+) MB\t(?:Init Duration: ([0-9]+(?:\.[0-9]+)?) ms\t)?"
    r"\s*(?:XRAY TraceId: (\S+)[^\n]*\s*)?",
)
#: Labels that tell a platform REPORT line from an application line that
#: merely starts with the same word.
_REPORT_LABELS = frozenset(
    {"RequestId", "Duration", "Billed Duration", "Memory Size", "Max Memory Used"}
)
_STATUSES = frozenset({"success", "failure", "error", "timeout"})
# A START line as Lambda writes it: the request id and the function version.
_START = re.compile(r"START RequestId: (\S+) Version: (\S+)\s*")
_START_PREFIX = "START RequestId:"

#: Telemetry types that are understood and deliberately give no event.
_SILENT_TYPES = frozenset(
    {
        "platform.runtimeDone",
        "platform.initStart",
        "platform.initRuntimeDone",
        "platform.initReport",
        "platform.restoreStart",
        "platform.restoreRuntimeDone",
        "platform.restoreReport",
        "platform.logsDropped",
        "platform.extension",
        "platform.telemetrySubscription",
        "platform.fault",
        "function",
        "extension",
    }
)


def parse_report_text(
    message: str, context: Context, time: float, source: str, position: str
) -> Invocation | None:
    """Read one plain-text ``REPORT`` line, with its optional ``XRAY`` line.

    Returns None for START, END and any line that is not a platform REPORT
    (one that starts with the word but carries none of its labels).
    """
    if not message.startswith("REPORT "):
        return None
    match = _CANONICAL.fullmatch(message)
    if match is not None:
        request_id, duration, billed, memory, max_memory, init, trace = match.groups()
        duration_ms = float(duration)
        billed_ms = float(billed)
        init_ms = 0.0 if init is None else float(init)
        memory_mb = int(memory)
        max_memory_mb = int(max_memory)
        if (
            duration_ms <= MAX_DURATION_MS
            and billed_ms <= MAX_DURATION_MS
            and init_ms <= MAX_DURATION_MS
            and 1 <= memory_mb <= MAX_MEMORY_MB
            and max_memory_mb <= MAX_MEMORY_MB
        ):
            return Invocation(
                context=context,
                time=time,
                request_id=request_id,
                duration_ms=duration_ms,
                billed_ms=billed_ms,
                memory_mb=memory_mb,
                max_memory_mb=max_memory_mb,
                init_ms=init_ms,
                trace_id="" if trace is None else xray_to_otel_trace_id(trace),
            )
        # Out of range: the tolerant reading below names the bad field.
    return _report_from_pairs(message, context, time, source, position)


def parse_start_text(
    message: str, context: Context, time: float, source: str, position: str
) -> InvocationStart | None:
    """Read one plain-text ``START RequestId: <id> Version: <v>`` line.

    Returns None for a line that does not open with ``START RequestId:``
    (an application line that starts with the word); a line that does but
    is not the platform's shape raises :class:`ParseError`.
    """
    if not message.startswith(_START_PREFIX):
        return None
    match = _START.fullmatch(message)
    if match is None:
        raise ParseError(
            source,
            position,
            f"START line is not 'START RequestId: <id> Version: <version>':"
            f" {brief(message)}",
        )
    return InvocationStart(context, time, match[1])


def parse_xray_line(message: str) -> str:
    """The trace id of an ``XRAY TraceId: ...`` line logged on its own, or ""."""
    return xray_to_otel_trace_id(dict(_PAIR.findall(message)).get("XRAY TraceId", ""))


def parse_platform_event(
    obj: dict[str, Any], context: Context, source: str, position: str
) -> Invocation | InvocationStart | None:
    """Read one ``{time, type, record}`` event: ``platform.report`` gives an
    invocation, ``platform.start`` the start of one, the others nothing.

    Unknown ``platform.*`` types are skipped so that new schema versions do
    not break ingestion; unknown types outside that family are errors.
    """
    if not isinstance(obj, dict):
        raise ParseError(source, position, f"event must be an object, got {brief(obj)}")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ParseError(source, position, f"type must be a string, got {brief(kind)}")
    is_platform = kind.startswith("platform.")
    if not is_platform and kind not in _SILENT_TYPES:
        raise ParseError(source, position, f"unknown event type {brief(kind)}")
    time = _iso_time(obj.get("time"), source, position)
    if not is_platform:
        return None
    record = obj.get("record")
    if not isinstance(record, dict):
        raise ParseError(
            source, position, f"record of {kind} must be an object, got {brief(record)}"
        )
    if kind == "platform.start":
        return _start_record(record, context, time, source, position)
    if kind != "platform.report":
        if kind not in _SILENT_TYPES:
            logger.debug(
                "skipped unknown platform event type=%s source=%s", kind, source
            )
        return None
    return _report_record(record, context, time, source, position)


def parse_telemetry_batch(
    raw: bytes | list[Any] | dict[str, Any], context: Context | None, source: str
) -> list[Event]:
    """Read a JSON array of Telemetry events, bare or in a context envelope."""
    data: Any = raw
    if isinstance(raw, bytes | bytearray):
        check_size(raw, source)
        data = load_json(raw, source)
    prefix = ""
    if isinstance(data, dict):
        if "context" in data:
            context = _envelope_context(data["context"], source)
        data = data.get("events")
        prefix = "events"
    if not isinstance(data, list):
        raise ParseError(
            source,
            prefix or "offset 0",
            f"expected a JSON array of events, got {type(data).__name__}",
        )
    if context is None:
        raise ParseError(
            source,
            "context",
            "no function context: the batch has no envelope context and the"
            " caller gave none",
        )
    out: list[Event] = []
    for index, obj in enumerate(data):
        event = parse_platform_event(obj, context, source, f"{prefix}[{index}]")
        if event is not None:
            out.append(event)
    return out


def _report_from_pairs(
    message: str, context: Context, time: float, source: str, position: str
) -> Invocation | None:
    fields = dict(_PAIR.findall(message, 7))
    request_id = fields.get("RequestId")
    if not request_id:
        if _REPORT_LABELS.isdisjoint(fields):
            return None
        raise ParseError(source, position, "REPORT line without a RequestId")
    init_ms = 0.0
    if "Init Duration" in fields:
        init_ms = _text_ms(fields, "Init Duration", source, position)
    elif "Restore Duration" in fields:
        # A SnapStart cold start restores a snapshot instead of running INIT.
        init_ms = _text_ms(fields, "Restore Duration", source, position)
    # Limitation: Billed Restore Duration is left out of billed_ms (SnapStart cost).
    status = fields.get("Status", "success")
    trace = fields.get("XRAY TraceId")
    return Invocation(
        context=context,
        time=time,
        request_id=request_id,
        duration_ms=_text_ms(fields, "Duration", source, position),
        billed_ms=_text_ms(fields, "Billed Duration", source, position),
        memory_mb=_text_mb(fields, "Memory Size", 1, source, position),
        max_memory_mb=_text_mb(fields, "Max Memory Used", 0, source, position),
        init_ms=init_ms,
        status=status if status in _STATUSES else "failure",
        trace_id="" if trace is None else xray_to_otel_trace_id(trace),
    )


def _report_record(
    record: dict[str, Any], context: Context, time: float, source: str, position: str
) -> Invocation:
    request_id = _request_id(record, "record", source, position)
    metrics = record.get("metrics")
    if not isinstance(metrics, dict):
        raise ParseError(
            source,
            position,
            f"record.metrics must be an object, got {brief(metrics)}",
        )
    init_ms = _json_ms(metrics, "initDurationMs", source, position, 0.0)
    if "initDurationMs" not in metrics:
        # A SnapStart cold start restores a snapshot instead of running INIT.
        init_ms = _json_ms(metrics, "restoreDurationMs", source, position, 0.0)
    status = record.get("status")
    trace_id, lineage = _record_tracing(record.get("tracing"), source, position)
    return Invocation(
        context=context,
        time=time,
        request_id=request_id,
        duration_ms=_json_ms(metrics, "durationMs", source, position),
        billed_ms=_json_ms(metrics, "billedDurationMs", source, position),
        memory_mb=_json_mb(metrics, "memorySizeMB", 1, source, position),
        max_memory_mb=_json_mb(metrics, "maxMemoryUsedMB", 0, source, position, 0),
        init_ms=init_ms,
        status=status if isinstance(status, str) and status in _STATUSES else "failure",
        trace_id=trace_id,
        lineage=lineage,
    )


def _start_record(
    record: dict[str, Any], context: Context, time: float, source: str, position: str
) -> InvocationStart:
    request_id = _request_id(record, "platform.start record", source, position)
    return InvocationStart(context, time, request_id)


def _request_id(record: dict[str, Any], what: str, source: str, position: str) -> str:
    """The record's ``requestId``; ``what`` names the record in the error."""
    request_id = record.get("requestId")
    if not isinstance(request_id, str) or not request_id:
        raise ParseError(
            source,
            position,
            f"{what}.requestId must be a non-empty string, got {brief(request_id)}",
        )
    return request_id


def _record_tracing(tracing: object, source: str, position: str) -> tuple[str, int]:
    # A malformed header only loses its trace id: it is evidence, not a reason
    # to drop the invocation. A tracing field of the wrong JSON type is not.
    if tracing is None:
        return "", 0
    if not isinstance(tracing, dict):
        raise ParseError(
            source, position, f"record.tracing must be an object, got {brief(tracing)}"
        )
    value = tracing.get("value")
    if value is None:
        return "", 0
    if not isinstance(value, str):
        raise ParseError(
            source,
            position,
            f"record.tracing.value must be a string, got {brief(value)}",
        )
    header = parse_trace_header(value)
    return header.root, header.lineage_max


def _text_ms(fields: dict[str, str], label: str, source: str, position: str) -> float:
    text = fields.get(label)
    if not text:
        raise ParseError(source, position, f"REPORT line without {label}")
    try:
        value = float(text)
    except ValueError as exc:
        raise ParseError(
            source, position, f"{label} is not a number: {brief(text)}"
        ) from exc
    # The chained comparison also rejects NaN and infinities.
    if not 0.0 <= value <= MAX_DURATION_MS:
        raise ParseError(source, position, f"{label} out of range: {brief(text)} ms")
    return value


def _text_mb(
    fields: dict[str, str], label: str, low: int, source: str, position: str
) -> int:
    text = fields.get(label)
    if text is None and low == 0:
        return 0
    if not text or not (text.isascii() and text.isdigit()):
        raise ParseError(
            source, position, f"{label} must be a whole number of MB, got {brief(text)}"
        )
    value = int(text)
    if not low <= value <= MAX_MEMORY_MB:
        raise ParseError(source, position, f"{label} out of range: {value} MB")
    return value


def _json_ms(
    metrics: dict[str, Any],
    name: str,
    source: str,
    position: str,
    default: float | None = None,
) -> float:
    value = metrics.get(name)
    if value is None and default is not None:
        return default
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not 0 <= value <= MAX_DURATION_MS
    ):
        raise ParseError(
            source,
            position,
            f"record.metrics.{name} must be a number of ms in 0..{MAX_DURATION_MS:.0f},"
            f" got {brief(value)}",
        )
    return float(value)


def _json_mb(
    metrics: dict[str, Any],
    name: str,
    low: int,
    source: str,
    position: str,
    default: int | None = None,
) -> int:
    value = metrics.get(name)
    if value is None and default is not None:
        return default
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or not low <= value <= MAX_MEMORY_MB
    ):
        raise ParseError(
            source,
            position,
            f"record.metrics.{name} must be a whole number of MB in"
            f" {low}..{MAX_MEMORY_MB}, got {brief(value)}",
        )
    return value


def _iso_time(value: object, source: str, position: str) -> float:
    if not isinstance(value, str):
        raise ParseError(
            source, position, f"time must be an ISO-8601 string, got {brief(value)}"
        )
    try:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    except (ValueError, OverflowError) as exc:
        raise ParseError(
            source, position, f"time is not ISO-8601: {brief(value)}"
        ) from exc


def _envelope_context(value: object, source: str) -> Context:
    if not isinstance(value, dict):
        raise ParseError(
            source, "context", f"context must be an object, got {brief(value)}"
        )
    defaults = {"provider": "aws", "qualifier": "$LATEST"}
    parts = []
    for name in Context._fields:
        part = value.get(name, defaults.get(name))
        if not isinstance(part, str) or not part or "/" in part:
            raise ParseError(
                source,
                f"context.{name}",
                f"{name} must be a non-empty string without '/', got {brief(part)}",
            )
        parts.append(part)
    return Context(*parts)
