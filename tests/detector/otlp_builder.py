"""OTLP/JSON exports built the way the AWS Lambda and SDK instrumentations
emit them, parsed into spans, for trace-stage tests."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import orjson

from ingest.events import Span
from ingest.formats.otlp import parse_otlp

ACCOUNT = "111122223333"
REGION = "us-east-1"
T0 = 1_772_400_000.0

SERVER, CLIENT, PRODUCER, CONSUMER = 2, 3, 4, 5

_ids = itertools.count(1)


def new_id(size: int = 16) -> str:
    """A fresh non-zero hex id of ``size`` hex digits."""
    return f"{next(_ids):0{size}x}"


def trace_id() -> str:
    return new_id(32)


def attr(key: str, value: object) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    if isinstance(value, list):
        items = [{"stringValue": v} for v in value]
        return {"key": key, "value": {"arrayValue": {"values": items}}}
    return {"key": key, "value": {"stringValue": str(value)}}


def arn(function: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function}"


def span(
    tid: str,
    sid: str,
    name: str,
    kind: int,
    start: float,
    duration: float,
    attrs: dict[str, object],
    parent: str = "",
    links: Iterable[tuple[str, str]] = (),
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "traceId": tid,
        "spanId": sid,
        "name": name,
        "kind": kind,
        "startTimeUnixNano": str(round(start * 1e6) * 1000),
        "endTimeUnixNano": str(round((start + duration) * 1e6) * 1000),
        "attributes": [attr(k, v) for k, v in attrs.items()],
    }
    if parent:
        out["parentSpanId"] = parent
    if links:
        out["links"] = [{"traceId": t, "spanId": s} for t, s in links]
    return out


def lambda_export(function: str, spans: list[dict[str, Any]]) -> dict[str, Any]:
    """One export from a function's own collector: its resource, its spans."""
    resource = [
        attr("cloud.provider", "aws"),
        attr("cloud.platform", "aws_lambda"),
        attr("cloud.region", REGION),
        attr("cloud.account.id", ACCOUNT),
        attr("faas.name", function),
        attr("faas.version", "$LATEST"),
        attr("faas.max_memory", 512 << 20),
        attr("service.name", function),
    ]
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": resource},
                "scopeSpans": [
                    {
                        "scope": {"name": "opentelemetry.instrumentation.aws_lambda"},
                        "spans": spans,
                    }
                ],
            }
        ]
    }


def service_export(
    service: str, spans: list[dict[str, Any]], provider: str = "aws"
) -> dict[str, Any]:
    """An export of a managed service (API Gateway, Step Functions)."""
    resource = [attr("service.name", service), attr("cloud.provider", provider)]
    return {
        "resourceSpans": [
            {"resource": {"attributes": resource}, "scopeSpans": [{"spans": spans}]}
        ]
    }


def invocation(
    function: str,
    tid: str,
    start: float,
    trigger: str,
    attrs: dict[str, object] | None = None,
    parent: str = "",
    links: Iterable[tuple[str, str]] = (),
    kind: int = SERVER,
    duration: float = 0.3,
    name: str = "",
) -> dict[str, Any]:
    base: dict[str, object] = {
        "faas.trigger": trigger,
        "faas.invocation_id": new_id(32),
        "cloud.resource_id": arn(function),
    }
    base.update(attrs or {})
    return span(
        tid, new_id(), name or function, kind, start, duration, base, parent, links
    )


def sdk_call(
    tid: str,
    parent: str,
    service: str,
    operation: str,
    start: float,
    attrs: dict[str, object],
    kind: int = CLIENT,
) -> dict[str, Any]:
    """A span of an AWS SDK call, named ``Service.Operation``."""
    base: dict[str, object] = {
        "rpc.system": "aws-api",
        "rpc.service": service,
        "rpc.method": operation,
    }
    base.update(attrs)
    name = f"{service}.{operation}"
    return span(tid, new_id(), name, kind, start, 0.02, base, parent)


def parse(exports: Iterable[dict[str, Any]]) -> list[Span]:
    """The spans of the exports, in start-time order (as a replay feeds them)."""
    spans: list[Span] = []
    for export in exports:
        spans.extend(parse_otlp(orjson.dumps(export), "test"))
    spans.sort(key=lambda s: s.time)
    return spans
