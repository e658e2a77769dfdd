"""CloudWatch Metric Streams in JSON-lines form: Lambda metrics and charges.

Only per-function AWS/Lambda records and AWS/Billing ``EstimatedCharges``
give events; account-wide aggregates, other namespaces and finer dimension
sets (which repeat totals already counted) are skipped.
"""

from __future__ import annotations

import logging
from typing import Any

from dowguard.errors import ParseError
from ingest.events import Billing, Context, Event, Metric
from ingest.formats.common import (
    GZIP_MAGIC,
    brief,
    check_size,
    context_part,
    epoch_millis,
    gunzip,
    load_json,
)

logger = logging.getLogger(__name__)

#: Metric streams aggregate over one minute.
PERIOD_S = 60.0
#: Statistics beyond this magnitude are corrupt (and would overflow floats).
_MAX_STATISTIC = 1e300
_LAMBDA_DIMENSIONS = frozenset({"FunctionName", "Resource"})


def looks_like_metric_stream(obj: object) -> bool:
    """Whether a parsed record, or raw bytes by their first line, is a stream."""
    if isinstance(obj, bytes | bytearray):
        first = bytes(obj).lstrip().split(b"\n", 1)[0]
        return b'"metric_name"' in first and b'"namespace"' in first
    return isinstance(obj, dict) and "metric_name" in obj and "namespace" in obj


def parse_metric_stream(raw: bytes, source: str) -> list[Event]:
    """Events of a batch of Metric Streams records, one JSON object a line."""
    if not isinstance(raw, bytes | bytearray):
        raise ParseError(
            source, "offset 0", f"expected bytes, got {type(raw).__name__}"
        )
    data = bytes(raw)
    check_size(data, source)
    if data.startswith(GZIP_MAGIC):
        data = gunzip(data, source)
    out: list[Event] = []
    for number, line in enumerate(data.split(b"\n"), 1):
        if not line.strip():
            continue
        position = f"line {number}"
        event = _record_event(load_json(line, source, position), source, position)
        if event is not None:
            out.append(event)
    return out


def _record_event(record: object, source: str, position: str) -> Event | None:
    if not isinstance(record, dict):
        raise ParseError(source, position, "record must be a JSON object")
    namespace = _text(record, "namespace", source, position)
    name = _text(record, "metric_name", source, position)
    if namespace == "AWS/Lambda":
        return _lambda_metric(record, name, source, position)
    if namespace == "AWS/Billing" and name == "EstimatedCharges":
        return _charges(record, source, position)
    return None


def _lambda_metric(
    record: dict[str, Any], name: str, source: str, position: str
) -> Metric | None:
    dimensions = _dimensions(record, source, position)
    if "FunctionName" not in dimensions or not _LAMBDA_DIMENSIONS.issuperset(
        dimensions
    ):
        return None
    function = _part(dimensions, "FunctionName", source, position, "dimensions.")
    qualifier = "$LATEST"
    if "Resource" in dimensions:
        resource = _text(dimensions, "Resource", source, position, "dimensions.")
        qualifier = resource.partition(":")[2] or "$LATEST"
        if "/" in qualifier:
            raise ParseError(
                source,
                position,
                f"dimensions.Resource has a bad qualifier: {brief(resource)}",
            )
    # Limitation: a FunctionName-only total of all aliases lands on $LATEST too.
    context = Context(
        "aws",
        _part(record, "account_id", source, position),
        _part(record, "region", source, position),
        function,
        qualifier,
    )
    value = _value(record, source, position)
    count = _statistic(value, "count", source, position)
    if count < 0:
        raise ParseError(source, position, f"value.count is negative: {count}")
    unit = record.get("unit", "None")
    if not isinstance(unit, str):
        raise ParseError(source, position, f"unit must be a string, got {brief(unit)}")
    return Metric(
        context=context,
        time=epoch_millis(record, source, position),
        namespace="AWS/Lambda",
        name=name,
        sum=_statistic(value, "sum", source, position),
        count=count,
        max=_statistic(value, "max", source, position),
        min=_statistic(value, "min", source, position),
        unit=unit,
        period_s=PERIOD_S,
    )


def _charges(record: dict[str, Any], source: str, position: str) -> Billing | None:
    dimensions = _dimensions(record, source, position)
    currency = dimensions.get("Currency", "USD")
    if currency != "USD":
        logger.debug(
            "skipped charges currency=%s source=%s position=%s",
            brief(currency),
            source,
            position,
        )
        return None
    if "LinkedAccount" in dimensions:
        account = _part(dimensions, "LinkedAccount", source, position, "dimensions.")
    else:
        account = _part(record, "account_id", source, position)
    function = ""
    if "ServiceName" in dimensions:
        service = _part(dimensions, "ServiceName", source, position, "dimensions.")
        function = f"service:{service}"
    time = epoch_millis(record, source, position)
    return Billing(
        context=Context(
            "aws", account, _part(record, "region", source, position), function, ""
        ),
        time=time,
        end=time + PERIOD_S,
        # The gauge is a month-to-date total and Maximum is its documented
        # statistic; it reports money, no usage quantity.
        cost_usd=_statistic(_value(record, source, position), "max", source, position),
        usage_amount=0.0,
        usage_kind="estimated_charges",
        source="metric_stream",
    )


def _text(
    record: dict[str, Any], field: str, source: str, position: str, prefix: str = ""
) -> str:
    value = record.get(field)
    if not isinstance(value, str):
        raise ParseError(
            source, position, f"{prefix}{field} must be a string, got {brief(value)}"
        )
    return value


def _part(
    record: dict[str, Any], field: str, source: str, position: str, prefix: str = ""
) -> str:
    """A context part: non-empty, and free of the '/' that joins a Kafka key."""
    value = _text(record, field, source, position, prefix)
    return context_part(value, f"{prefix}{field}", source, position)


def _dimensions(record: dict[str, Any], source: str, position: str) -> dict[str, Any]:
    dimensions = record.get("dimensions", {})
    if not isinstance(dimensions, dict):
        raise ParseError(
            source, position, f"dimensions must be an object, got {brief(dimensions)}"
        )
    return dimensions


def _value(record: dict[str, Any], source: str, position: str) -> dict[str, Any]:
    value = record.get("value")
    if not isinstance(value, dict):
        raise ParseError(
            source, position, f"value must be an object, got {brief(value)}"
        )
    return value


def _statistic(value: dict[str, Any], name: str, source: str, position: str) -> float:
    number = value.get(name)
    if (
        not isinstance(number, int | float)
        or isinstance(number, bool)
        or not -_MAX_STATISTIC <= number <= _MAX_STATISTIC
    ):
        raise ParseError(
            source,
            position,
            f"value.{name} must be a finite number, got {brief(number)}",
        )
    return float(number)
