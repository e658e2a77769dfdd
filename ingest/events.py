"""Normalised events: the one shape every source format is turned into.

These classes sit on the hot path, so they are plain slotted dataclasses with
no validation in the constructor: parsers validate, the detector trusts.
Times are event times in seconds since the Unix epoch (UTC) as floats.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple, TypeAlias

import orjson

from dowguard.errors import ParseError


class Context(NamedTuple):
    """The identity that all state, baselines and alerts are kept per."""

    provider: str
    account: str
    region: str
    function: str
    qualifier: str = "$LATEST"

    def key(self) -> bytes:
        """The Kafka message key of this context."""
        return "/".join(self).encode()

    @classmethod
    def from_key(cls, key: bytes | str) -> Context:
        text = key.decode() if isinstance(key, bytes) else key
        parts = text.split("/")
        if len(parts) != 5:
            raise ValueError(f"context key needs 5 parts, got {len(parts)}: {text!r}")
        return cls(*parts)

    @classmethod
    def from_arn(cls, arn: str, qualifier: str = "$LATEST") -> Context:
        """Build from ``arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]``."""
        parts = arn.split(":")
        if len(parts) < 7 or parts[0] != "arn" or parts[5] != "function":
            raise ValueError(f"not a Lambda function ARN: {arn!r}")
        qual = parts[7] if len(parts) > 7 and parts[7] else qualifier
        return cls("aws", parts[4], parts[3], parts[6], qual)


@dataclass(slots=True)
class Invocation:
    """One function invocation as its platform reported it (one REPORT line).

    ``count`` is 1 for a log record; ``lineage`` is the highest invocation
    counter seen in an X-Ray ``Lineage`` field, 0 when there was none.
    """

    context: Context
    time: float
    request_id: str
    duration_ms: float
    billed_ms: float
    memory_mb: int
    max_memory_mb: int = 0
    init_ms: float = 0.0
    status: str = "success"
    architecture: str = "x86_64"
    trace_id: str = ""
    lineage: int = 0
    count: int = 1


@dataclass(slots=True)
class Metric:
    """One metric aggregate from a metric stream (usually one minute)."""

    context: Context
    time: float
    namespace: str
    name: str
    sum: float
    count: float
    max: float
    min: float
    unit: str = "None"
    period_s: float = 60.0


@dataclass(slots=True)
class Billing:
    """One billed charge over a period (a CUR or FOCUS row, or a charges gauge).

    ``usage_kind`` is one of ``requests``, ``gb_seconds``, ``provisioned``,
    ``storage``, ``estimated_charges`` (a month-to-date total) or ``other``.
    """

    context: Context
    time: float
    end: float
    cost_usd: float
    usage_amount: float
    usage_kind: str
    source: str
    architecture: str = "x86_64"


@dataclass(slots=True)
class Span:
    """One span of a trace, with the attributes that tell causality.

    ``links`` holds ``(trace_id, span_id)`` pairs; ids are lowercase hex.
    ``destination`` is the queue, topic, bucket or stream a messaging span
    reads from (consumer) or writes to (producer/client); ``resource_key``
    the item there that it wrote or that triggered it (an object key, a
    message id), where the span names it.
    """

    context: Context
    time: float
    end: float
    trace_id: str
    span_id: str
    parent_id: str = ""
    name: str = ""
    kind: int = 0
    links: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    trigger: str = ""
    invocation_id: str = ""
    messaging_system: str = ""
    destination: str = ""
    invoked: str = ""
    memory_mb: int = 0
    lineage: int = 0
    error: bool = False
    resource_key: str = ""


Event: TypeAlias = Invocation | Metric | Billing | Span

SPAN_KIND_SERVER = 2
SPAN_KIND_CLIENT = 3
SPAN_KIND_PRODUCER = 4
SPAN_KIND_CONSUMER = 5

EVENT_TYPES: dict[str, type[Invocation] | type[Metric] | type[Billing] | type[Span]]
EVENT_TYPES = {
    "invocation": Invocation,
    "metric": Metric,
    "billing": Billing,
    "span": Span,
}
_TYPE_NAMES = {cls: name for name, cls in EVENT_TYPES.items()}

#: The marker that tells dowguard's own event JSON from any other JSON.
EVENT_JSON_MARKER = "dowguard_event"


def stream_of(event: Event) -> str:
    """The topic role an event travels on: invocations, billing or traces."""
    if isinstance(event, Invocation):
        return "invocations"
    if isinstance(event, Span):
        return "traces"
    return "billing"


def kafka_key(event: Event) -> bytes:
    """The message key: the function context, or the trace id for spans."""
    if isinstance(event, Span):
        return event.trace_id.encode()
    return event.context.key()


def event_to_dict(event: Event) -> dict[str, Any]:
    data = asdict(event)
    # asdict keeps the Context named tuple, which orjson refuses to encode.
    data["context"] = list(event.context)
    data[EVENT_JSON_MARKER] = _TYPE_NAMES[type(event)]
    return data


def encode_event(event: Event) -> bytes:
    """Serialise to dowguard's own event JSON (one object, one event)."""
    return orjson.dumps(event_to_dict(event))


def event_from_dict(data: dict[str, Any], source: str, position: str) -> Event:
    """Rebuild an event from :func:`event_to_dict` output, checking its shape."""
    data = dict(data)
    name = data.pop(EVENT_JSON_MARKER, None)
    cls = EVENT_TYPES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ParseError(source, position, f"unknown event type {name!r}")
    try:
        ctx = data.pop("context")
        data["context"] = Context(*ctx)
        if cls is Span:
            data["links"] = tuple((str(t), str(s)) for t, s in data.get("links", ()))
        event = cls(**data)
    except (KeyError, TypeError, ValueError) as exc:
        raise ParseError(source, position, f"bad {name} event: {exc}") from exc
    _check_types(event, source, position)
    return event


def decode_event(raw: bytes, source: str, position: str = "offset 0") -> Event:
    """Parse one event JSON object, raising :class:`ParseError` if it is not."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ParseError(source, position, f"invalid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ParseError(source, position, "event JSON must be an object")
    return event_from_dict(data, source, position)


def _check_types(event: Event, source: str, position: str) -> None:
    ctx = event.context
    if len(ctx) != 5 or not all(isinstance(p, str) for p in ctx):
        raise ParseError(source, position, "context must be 5 strings")
    time = event.time
    if not isinstance(time, (int, float)) or isinstance(time, bool) or time != time:
        raise ParseError(source, position, f"time must be a number, got {time!r}")
    if isinstance(event, Invocation):
        for name in ("duration_ms", "billed_ms", "init_ms"):
            value = getattr(event, name)
            if (
                not isinstance(value, (int, float))
                or isinstance(value, bool)
                or not 0 <= value < 1e9
            ):
                raise ParseError(source, position, f"{name} out of range: {value!r}")
        if not isinstance(event.memory_mb, int) or not 0 < event.memory_mb <= 1 << 20:
            raise ParseError(
                source, position, f"memory_mb out of range: {event.memory_mb!r}"
            )
