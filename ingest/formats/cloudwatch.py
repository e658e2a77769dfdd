"""CloudWatch Logs subscription payloads of Lambda log groups, as invocations
and their starts.

A payload is one message and is taken whole: if any log event in it is
malformed the payload raises ParseError, and the dead-letter keeps its raw
bytes, so no invocation is half-counted and nothing is lost.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from dowguard.errors import ParseError
from ingest.events import Context, Event, Invocation, InvocationStart
from ingest.formats.common import (
    GZIP_MAGIC,
    b64decode,
    brief,
    check_size,
    context_part,
    epoch_millis,
    gunzip,
    load_json,
)
from ingest.formats.lambda_report import (
    parse_platform_event,
    parse_report_text,
    parse_start_text,
    parse_xray_line,
)

logger = logging.getLogger(__name__)

LAMBDA_LOG_GROUP_PREFIX = "/aws/lambda/"
#: Log groups carry no region; a producer may add a top-level "region" field.
UNKNOWN_REGION = "unknown"

_STREAM_VERSION = re.compile(r"\[([^\]/]+)\]")


def looks_like_cloudwatch(obj: object) -> bool:
    """Whether decoded JSON is a subscription payload or its ``awslogs`` wrapper."""
    return isinstance(obj, dict) and (
        "awslogs" in obj or ("messageType" in obj and "logEvents" in obj)
    )


def parse_cloudwatch(raw: bytes | dict[str, Any], source: str) -> list[Event]:
    """Invocations of one subscription payload, in any of its wrappings.

    Accepted: gzip bytes (Kinesis or Firehose record data), base64 text of
    them, the ``{"awslogs": {"data": ...}}`` wrapper and the decoded JSON,
    each as bytes or (for the JSON forms) as a dict. The context's region
    is the payload's top-level ``region`` field if present, else "unknown".
    """
    payload = _unwrap(_decode(raw, source), source)
    if not isinstance(payload, dict):
        raise ParseError(
            source,
            "offset 0",
            f"payload must be an object, got {type(payload).__name__}",
        )
    kind = payload.get("messageType")
    if kind == "CONTROL_MESSAGE":
        return []
    if kind != "DATA_MESSAGE":
        raise ParseError(source, "messageType", f"unknown message type {brief(kind)}")
    context = _context(payload, source)
    log_events = payload.get("logEvents")
    if not isinstance(log_events, list):
        raise ParseError(
            source, "logEvents", f"logEvents must be a list, got {brief(log_events)}"
        )
    return _invocations(log_events, context, source)


def _decode(raw: object, source: str) -> Any:
    if isinstance(raw, dict):
        return raw
    if not isinstance(raw, bytes | bytearray):
        raise ParseError(
            source,
            "offset 0",
            f"expected bytes or a JSON object, got {type(raw).__name__}",
        )
    data = bytes(raw)
    check_size(data, source)
    if data.startswith(GZIP_MAGIC):
        return load_json(gunzip(data, source), source)
    if data.lstrip().startswith(b"{"):
        return load_json(data, source)
    decoded = b64decode(data.strip(), source, "offset 0")
    if decoded.startswith(GZIP_MAGIC):
        decoded = gunzip(decoded, source)
    return load_json(decoded, source)


def _unwrap(data: Any, source: str) -> Any:
    if not isinstance(data, dict) or "awslogs" not in data:
        return data
    wrapper = data["awslogs"]
    encoded = wrapper.get("data") if isinstance(wrapper, dict) else None
    if not isinstance(encoded, str):
        raise ParseError(
            source, "awslogs.data", "awslogs wrapper without a base64 data string"
        )
    return load_json(gunzip(b64decode(encoded, source, "awslogs.data"), source), source)


def _context(payload: dict[str, Any], source: str) -> Context:
    group = payload.get("logGroup")
    if not isinstance(group, str) or not group.startswith(LAMBDA_LOG_GROUP_PREFIX):
        raise ParseError(source, "logGroup", f"not a Lambda log group: {brief(group)}")
    stream = payload.get("logStream", "")
    if not isinstance(stream, str):
        raise ParseError(
            source, "logStream", f"logStream must be a string, got {brief(stream)}"
        )
    match = _STREAM_VERSION.search(stream)
    function = group[len(LAMBDA_LOG_GROUP_PREFIX) :]
    region = payload.get("region", UNKNOWN_REGION)
    return Context(
        "aws",
        context_part(payload.get("owner"), "owner", source, "owner"),
        context_part(region, "region", source, "region"),
        context_part(function, "logGroup", source, "logGroup"),
        match[1] if match else "$LATEST",
    )


def _invocations(log_events: list[Any], context: Context, source: str) -> list[Event]:
    out: list[Event] = []
    last: Invocation | None = None
    for index, item in enumerate(log_events):
        if not isinstance(item, dict):
            raise ParseError(
                source, f"logEvents[{index}]", "log event must be an object"
            )
        message = item.get("message")
        if not isinstance(message, str):
            raise ParseError(
                source,
                f"logEvents[{index}]",
                f"message must be a string, got {brief(message)}",
            )
        # Dispatch on the first character: END and application lines are
        # the bulk of a payload and cost one comparison each.
        first = message[:1]
        event: Invocation | InvocationStart | None
        if first == "R":
            position = f"logEvents[{index}]"
            event = parse_report_text(
                message, context, epoch_millis(item, source, position), source, position
            )
        elif first == "S" and message.startswith("START RequestId:"):
            position = f"logEvents[{index}]"
            event = parse_start_text(
                message, context, epoch_millis(item, source, position), source, position
            )
        elif first == "{" and '"platform.' in message:
            event = _platform_event(message, item, context, source, index)
        elif first == "X" and message.startswith("XRAY TraceId:"):
            # Tracing may log the XRAY line as its own event after the REPORT.
            if last is not None and not last.trace_id:
                last.trace_id = parse_xray_line(message)
            continue
        else:
            continue
        if type(event) is Invocation:
            out.append(event)
            last = event
        elif event is not None:
            out.append(event)
    return out


def _platform_event(
    message: str, item: dict[str, Any], context: Context, source: str, index: int
) -> Invocation | InvocationStart | None:
    position = f"logEvents[{index}]"
    obj = load_json(message, source, position)
    kind = obj.get("type") if isinstance(obj, dict) else None
    if not isinstance(kind, str) or not kind.startswith("platform."):
        # A JSON application log line that mentions a platform type.
        return None
    event = parse_platform_event(obj, context, source, position)
    if event is not None:
        # The log event's timestamp, as for text REPORT lines, so that both
        # log formats put one invocation (and its start) at the same time.
        event.time = epoch_millis(item, source, position)
    return event
