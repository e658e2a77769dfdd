"""OTLP/JSON trace exports (``{"resourceSpans": [...]}``) into :class:`Span`.

One export is one unit: a single malformed span rejects the whole export,
whose raw bytes the dead-letter keeps. Attributes that dowguard does not read
are checked for shape only. A span whose end lies before its start keeps its
start and gets ``end = start``: that is clock skew, and causality does not
depend on durations.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import re
from typing import Any

from dowguard.errors import ParseError
from ingest.events import Context, Span
from ingest.formats.common import LATEST_EVENT_TIME_S, check_size, load_json
from ingest.formats.xray import parse_trace_header

logger = logging.getLogger(__name__)

_HEX32 = re.compile(r"[0-9a-fA-F]{32}")
_HEX16 = re.compile(r"[0-9a-fA-F]{16}")
_INT_TEXT = re.compile(r"-?[0-9]{1,20}")
_NANOS_TEXT = re.compile(r"[0-9]{1,20}")
_MAX_VALUE_DEPTH = 16
_INT64 = 1 << 63

_KIND_NAMES = {
    "SPAN_KIND_UNSPECIFIED": 0,
    "SPAN_KIND_INTERNAL": 1,
    "SPAN_KIND_SERVER": 2,
    "SPAN_KIND_CLIENT": 3,
    "SPAN_KIND_PRODUCER": 4,
    "SPAN_KIND_CONSUMER": 5,
}
_STATUS_NAMES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}
_STATUS_ERROR = 2

_PLATFORM_PROVIDERS = {
    "aws_lambda": "aws",
    "azure_functions": "azure",
    "gcp_cloud_functions": "gcp",
    "gcp_cloud_run": "gcp",
}

#: Where a span names what it reads from or writes to, in order of trust.
_DESTINATION_KEYS = (
    "messaging.destination.name",
    "messaging.destination",
    "aws.sns.topic.arn",
    "aws.s3.bucket",
    "aws.kinesis.stream_name",
    "aws.sqs.queue.url",
    "aws.sqs.queue_url",
    "aws.sqs.queue_name",
    "aws.step_functions.state_machine.arn",
    # The names the Java AWS SDK instrumentation gives them.
    "aws.bucket.name",
    "aws.queue.url",
    "aws.queue.name",
    "aws.stream.name",
    "aws.table.name",
    # The bucket or table whose change triggered a datasource invocation.
    "faas.document.collection",
)
#: Where a span names the item it wrote, or the one that triggered it.
_RESOURCE_KEY_KEYS = ("faas.document.name", "aws.s3.key", "messaging.message.id")
#: Attributes that carry a whole X-Ray trace header (with its Lineage).
_TRACE_HEADER_KEYS = ("aws.xray.trace_header", "AWSTraceHeader", "_X_AMZN_TRACE_ID")


def looks_like_otlp(obj: object) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("resourceSpans"), list)


def parse_otlp(raw: bytes | dict[str, Any], source: str) -> list[Span]:
    """Every span of one OTLP/JSON export, in export order."""
    if isinstance(raw, (bytes, bytearray)):
        check_size(bytes(raw), source)
        raw = load_json(raw, source)
    if not isinstance(raw, dict) or not isinstance(raw.get("resourceSpans"), list):
        raise ParseError(source, "offset 0", "not an OTLP export: no resourceSpans")
    spans: list[Span] = []
    for i, resource_spans in enumerate(raw["resourceSpans"]):
        _parse_resource_spans(resource_spans, source, f"resourceSpans[{i}]", spans)
    return spans


def _parse_resource_spans(obj: Any, source: str, pos: str, out: list[Span]) -> None:
    obj = _expect(obj, dict, source, pos)
    resource = _expect(obj.get("resource", {}), dict, source, f"{pos}.resource")
    res_attrs = _attributes(resource.get("attributes"), source, f"{pos}.resource")
    res_pos = f"{pos}.resource.attributes"
    context = _context(res_attrs, {}, source, res_pos)
    memory_mb = _memory_mb(res_attrs, source, res_pos)
    scopes = obj.get("scopeSpans", obj.get("instrumentationLibrarySpans", []))
    scopes = _expect(scopes, list, source, f"{pos}.scopeSpans")
    for j, scope_spans in enumerate(scopes):
        scope_pos = f"{pos}.scopeSpans[{j}]"
        scope_spans = _expect(scope_spans, dict, source, scope_pos)
        items = _expect(scope_spans.get("spans", []), list, source, scope_pos)
        for k, item in enumerate(items):
            span_pos = f"{scope_pos}.spans[{k}]"
            out.append(
                _parse_span(item, res_attrs, context, memory_mb, source, span_pos)
            )


def _parse_span(
    obj: Any,
    res_attrs: dict[str, Any],
    res_context: Context,
    res_memory_mb: int,
    source: str,
    pos: str,
) -> Span:
    obj = _expect(obj, dict, source, pos)
    attrs = _attributes(obj.get("attributes"), source, pos)
    attr_pos = f"{pos}.attributes"
    trace_id = _span_id(obj.get("traceId"), 16, source, f"{pos}.traceId")
    span_id = _span_id(obj.get("spanId"), 8, source, f"{pos}.spanId")
    parent = obj.get("parentSpanId")
    parent_id = _span_id(parent, 8, source, f"{pos}.parentSpanId") if parent else ""
    start = _nanos(obj.get("startTimeUnixNano"), source, f"{pos}.startTimeUnixNano")
    end = _nanos(obj.get("endTimeUnixNano"), source, f"{pos}.endTimeUnixNano")
    if end < start:
        logger.debug("span end before start source=%s position=%s", source, pos)
        end = start
    name = obj.get("name", "")
    if not isinstance(name, str):
        raise ParseError(source, f"{pos}.name", "span name must be a string")
    if "cloud.resource_id" in attrs or "aws.lambda.invoked_arn" in attrs:
        context = _context(res_attrs, attrs, source, attr_pos)
    else:
        context = res_context
    memory_mb = _memory_mb(attrs, source, attr_pos) or res_memory_mb
    links, link_lineage = _links(obj.get("links"), source, pos)
    lineage = max(_lineage(attrs, source, attr_pos), link_lineage)
    return Span(
        context=context,
        time=start,
        end=end,
        trace_id=trace_id,
        span_id=span_id,
        parent_id=parent_id,
        name=name,
        kind=_enum(obj.get("kind", 0), _KIND_NAMES, 5, source, f"{pos}.kind"),
        links=links,
        trigger=_str_attr(attrs, "faas.trigger", source, attr_pos),
        invocation_id=_str_attr(attrs, "faas.invocation_id", source, attr_pos),
        messaging_system=_str_attr(attrs, "messaging.system", source, attr_pos),
        destination=_destination(attrs, source, attr_pos),
        invoked=_str_attr(attrs, "faas.invoked_name", source, attr_pos),
        memory_mb=memory_mb,
        lineage=lineage,
        error=_status_code(obj.get("status"), source, f"{pos}.status") == _STATUS_ERROR,
        resource_key=_first_str(attrs, _RESOURCE_KEY_KEYS, source, attr_pos),
    )


# ---- context -----------------------------------------------------------------


def _context(
    res_attrs: dict[str, Any], span_attrs: dict[str, Any], source: str, pos: str
) -> Context:
    """The function context of a span: from its ARN, or from resource names.

    FaaS resources on AWS default to qualifier ``$LATEST`` as CloudWatch
    logs do; other resources have no qualifier, and a service that is no
    function is named by ``service.name``.
    """

    def text(key: str) -> str:
        if key in span_attrs:
            return _str_attr(span_attrs, key, source, pos)
        return _str_attr(res_attrs, key, source, pos)

    version = text("faas.version")
    resource_id = text("cloud.resource_id")
    invoked_arn = text("aws.lambda.invoked_arn")
    for arn, fallback in ((resource_id, version), (invoked_arn, version)):
        if arn.startswith("arn:"):
            try:
                return Context.from_arn(arn, fallback or "$LATEST")
            except ValueError:
                logger.debug("span arn not a function arn=%s source=%s", arn, source)
    platform = text("cloud.platform")
    provider = text("cloud.provider") or _PLATFORM_PROVIDERS.get(platform, "")
    function = text("faas.name")
    if function or platform in _PLATFORM_PROVIDERS:
        function = function or text("service.name")
        qualifier = version or ("$LATEST" if provider == "aws" else "")
    else:
        function = text("service.name") or "unknown_service"
        qualifier = ""
    return Context(
        provider or "otel",
        text("cloud.account.id"),
        text("cloud.region"),
        function,
        qualifier,
    )


def _memory_mb(attrs: dict[str, Any], source: str, pos: str) -> int:
    if "faas.max_memory" not in attrs:
        return 0
    value = decode_value(attrs["faas.max_memory"], source, f"{pos}[faas.max_memory]")
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not 0 <= value < 1 << 40
    ):
        raise ParseError(
            source, f"{pos}[faas.max_memory]", f"memory in bytes expected: {value!r}"
        )
    return int(value) >> 20


def _destination(attrs: dict[str, Any], source: str, pos: str) -> str:
    for key in _DESTINATION_KEYS:
        if key in attrs:
            return _str_attr(attrs, key, source, pos)
    if "aws.dynamodb.table_names" in attrs:
        tables = decode_value(
            attrs["aws.dynamodb.table_names"], source, f"{pos}[aws.dynamodb]"
        )
        # Limitation: only the first table of a multi-table DynamoDB call is kept.
        if isinstance(tables, list) and tables and isinstance(tables[0], str):
            return tables[0]
        if isinstance(tables, str):
            return tables
    return ""


def _first_str(
    attrs: dict[str, Any], keys: tuple[str, ...], source: str, pos: str
) -> str:
    for key in keys:
        if key in attrs:
            return _str_attr(attrs, key, source, pos)
    return ""


def _lineage(attrs: dict[str, Any], source: str, pos: str) -> int:
    best = 0
    for key in _TRACE_HEADER_KEYS:
        if key in attrs:
            header = _str_attr(attrs, key, source, pos)
            best = max(best, parse_trace_header(header).lineage_max)
    return best


def _links(obj: Any, source: str, pos: str) -> tuple[tuple[tuple[str, str], ...], int]:
    if obj is None:
        return (), 0
    items = _expect(obj, list, source, f"{pos}.links")
    links: list[tuple[str, str]] = []
    lineage = 0
    for i, link in enumerate(items):
        link_pos = f"{pos}.links[{i}]"
        link = _expect(link, dict, source, link_pos)
        trace_id = _span_id(link.get("traceId"), 16, source, f"{link_pos}.traceId")
        span_id = _span_id(link.get("spanId"), 8, source, f"{link_pos}.spanId")
        links.append((trace_id, span_id))
        attrs = _attributes(link.get("attributes"), source, link_pos)
        lineage = max(lineage, _lineage(attrs, source, f"{link_pos}.attributes"))
    return tuple(links), lineage


# ---- field decoding ------------------------------------------------------------


def _expect(value: Any, kind: type, source: str, pos: str) -> Any:
    if not isinstance(value, kind):
        raise ParseError(
            source, pos, f"expected {kind.__name__}, got {type(value).__name__}"
        )
    return value


def _span_id(value: Any, size: int, source: str, pos: str) -> str:
    """A trace id (16 bytes) or span id (8 bytes) as lowercase hex.

    Hex is what OTLP/JSON prescribes; protobuf-JSON exporters send base64,
    standard or URL-safe, with or without padding.
    """
    if not isinstance(value, str):
        raise ParseError(source, pos, f"id must be a string, got {value!r:.40}")
    pattern = _HEX32 if size == 16 else _HEX16
    if pattern.fullmatch(value):
        hex_id = value.lower()
    else:
        text = value.replace("-", "+").replace("_", "/")
        text += "=" * (-len(text) % 4)
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ParseError(
                source, pos, f"id is neither hex nor base64: {value!r:.60}"
            ) from exc
        if len(data) != size:
            raise ParseError(
                source, pos, f"id must be {size} bytes, got {len(data)}: {value!r:.60}"
            )
        hex_id = data.hex()
    if hex_id.count("0") == len(hex_id):
        raise ParseError(source, pos, "id is all zeros, which means no id")
    return hex_id


def _nanos(value: Any, source: str, pos: str) -> float:
    if isinstance(value, str) and _NANOS_TEXT.fullmatch(value):
        nanos: int | float = int(value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        nanos = value
    else:
        raise ParseError(source, pos, f"time in nanoseconds expected: {value!r:.60}")
    seconds = nanos / 1e9
    if not 0 <= seconds <= LATEST_EVENT_TIME_S:
        raise ParseError(source, pos, f"time out of range: {value!r:.60}")
    return seconds


def _enum(value: Any, names: dict[str, int], top: int, source: str, pos: str) -> int:
    if isinstance(value, str) and value in names:
        return names[value]
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= top:
        return value
    raise ParseError(source, pos, f"unknown value {value!r:.60}")


def _status_code(value: Any, source: str, pos: str) -> int:
    if value is None:
        return 0
    status = _expect(value, dict, source, pos)
    return _enum(status.get("code", 0), _STATUS_NAMES, 2, source, f"{pos}.code")


def _attributes(value: Any, source: str, pos: str) -> dict[str, Any]:
    """Attribute key -> undecoded AnyValue; values are decoded when read."""
    if value is None:
        return {}
    items = _expect(value, list, source, f"{pos}.attributes")
    attrs: dict[str, Any] = {}
    for i, item in enumerate(items):
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("key"), str)
            or not isinstance(item.get("value", {}), dict)
        ):
            raise ParseError(
                source, f"{pos}.attributes[{i}]", "attribute must be {key, value}"
            )
        attrs[item["key"]] = item.get("value", {})
    return attrs


def _str_attr(attrs: dict[str, Any], key: str, source: str, pos: str) -> str:
    if key not in attrs:
        return ""
    value = decode_value(attrs[key], source, f"{pos}[{key}]")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ParseError(source, f"{pos}[{key}]", f"string expected: {value!r:.60}")
    return value


def decode_value(value: Any, source: str, pos: str, depth: int = 0) -> Any:
    """Decode an OTLP AnyValue into str, bool, int, float, bytes, list or dict."""
    if not isinstance(value, dict):
        raise ParseError(source, pos, "attribute value must be an object")
    if depth > _MAX_VALUE_DEPTH:
        raise ParseError(source, pos, "attribute value nested too deeply")
    if not value:
        return None
    if "stringValue" in value:
        text = value["stringValue"]
        if isinstance(text, str):
            return text
    elif "boolValue" in value:
        flag = value["boolValue"]
        if isinstance(flag, bool):
            return flag
    elif "intValue" in value:
        return _int_value(value["intValue"], source, pos)
    elif "doubleValue" in value:
        return _double_value(value["doubleValue"], source, pos)
    elif "bytesValue" in value:
        data = value["bytesValue"]
        if isinstance(data, str):
            try:
                return base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ParseError(source, pos, f"bad bytesValue: {exc}") from exc
    elif "arrayValue" in value:
        values = _value_list(value["arrayValue"], source, pos)
        return [
            decode_value(v, source, f"{pos}[{i}]", depth + 1)
            for i, v in enumerate(values)
        ]
    elif "kvlistValue" in value:
        values = _value_list(value["kvlistValue"], source, pos)
        inner = _attributes(values, source, pos)
        return {
            k: decode_value(v, source, f"{pos}.{k}", depth + 1)
            for k, v in inner.items()
        }
    else:
        raise ParseError(source, pos, f"unknown value kind {sorted(value)[:3]}")
    raise ParseError(source, pos, f"wrong type in attribute value {value!r:.60}")


def _value_list(obj: Any, source: str, pos: str) -> list[Any]:
    if not isinstance(obj, dict):
        raise ParseError(source, pos, "array or kvlist value must be an object")
    values = obj.get("values", [])
    if not isinstance(values, list):
        raise ParseError(source, pos, "values of an array or kvlist must be a list")
    return values


def _int_value(value: Any, source: str, pos: str) -> int:
    if isinstance(value, str) and _INT_TEXT.fullmatch(value):
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        raise ParseError(source, pos, f"intValue must be an integer: {value!r:.60}")
    if not -_INT64 <= number < _INT64:
        raise ParseError(source, pos, f"intValue beyond 64 bits: {value!r:.60}")
    return number


def _double_value(value: Any, source: str, pos: str) -> float:
    specials = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
    if isinstance(value, str) and value in specials:
        return specials[value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise ParseError(source, pos, f"doubleValue must be a number: {value!r:.60}")
