"""Normalised events: the one shape every source format is turned into.

These classes sit on the hot path, so they are plain slotted dataclasses with
no validation in the constructor: parsers validate, the detector trusts.
Times are event times in seconds since the Unix epoch (UTC) as floats.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from operator import attrgetter
from typing import Any, NamedTuple, TypeAlias

import orjson

from dowguard.errors import ParseError
from ingest.formats.common import LATEST_EVENT_TIME_S


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

    @property
    def began(self) -> float:
        """When the call began: its report's time less its duration (the
        billed one when no duration was reported)."""
        ms = self.duration_ms if self.duration_ms > 0.0 else self.billed_ms
        return self.time - ms * 0.001


@dataclass(slots=True)
class InvocationStart:
    """A call that has begun (a ``START`` line or ``platform.start`` event).

    It carries no cost: a call's cost is known from its REPORT at its end.
    It lets a flood of long calls be seen while they still run.
    """

    context: Context
    time: float
    request_id: str


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


Event: TypeAlias = Invocation | InvocationStart | Metric | Billing | Span

SPAN_KIND_SERVER = 2
SPAN_KIND_CLIENT = 3
SPAN_KIND_PRODUCER = 4
SPAN_KIND_CONSUMER = 5

EventType: TypeAlias = (
    type[Invocation] | type[InvocationStart] | type[Metric] | type[Billing] | type[Span]
)
EVENT_TYPES: dict[str, EventType] = {
    "invocation": Invocation,
    "start": InvocationStart,
    "metric": Metric,
    "billing": Billing,
    "span": Span,
}
_TYPE_NAMES = {cls: name for name, cls in EVENT_TYPES.items()}

#: The marker that tells dowguard's own event JSON from any other JSON.
EVENT_JSON_MARKER = "dowguard_event"


def stream_of(event: Event) -> str:
    """The topic role an event travels on: invocations, billing or traces."""
    if isinstance(event, Invocation | InvocationStart):
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
    """Parse one event (array or object form), raising :class:`ParseError`."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ParseError(source, position, f"invalid JSON: {exc}") from exc
    if isinstance(data, list):
        return event_from_array(data, source, position)
    if not isinstance(data, dict):
        raise ParseError(source, position, "event JSON must be an object")
    return event_from_dict(data, source, position)


# ---- the array form ------------------------------------------------------------
#
# On Kafka every message is one event, and decoding it is most of the per
# message work of the daemon, so events travel there as a JSON array:
# ``[version, type, [context], field, ...]`` with every field after the
# context in constructor order (a span's links as ``[[trace, span], ...]``).
# Positions instead of names make decoding one constructor call, and the
# version marker in front lets a reader tell the form from any other JSON
# and refuse a version it does not know.

#: What the first element of the array form starts with, in every version.
EVENT_ARRAY_FAMILY = "dowguard.event/"
#: First element of the array form; a new layout gets a new version.
EVENT_ARRAY_VERSION = EVENT_ARRAY_FAMILY + "2"
#: How an encoded array-form event starts, byte for byte.
EVENT_ARRAY_PREFIX = b'["dowguard.event/2",'

_ARRAY_FIELDS = {cls: len(fields(cls)) - 1 for cls in EVENT_TYPES.values()}
_ARRAY_VALUES = {
    cls: attrgetter(*(f.name for f in fields(cls)[1:])) for cls in EVENT_TYPES.values()
}
#: Contexts decoded so far, by their five parts: one shared object per
#: context keeps later lookups (state, partition, prices) on hashed strings.
_CONTEXTS: dict[tuple[str, ...], Context] = {}
_MAX_CONTEXTS = 65536
_NUMBER = (int, float)
_INVOCATION_ITEMS = 3 + _ARRAY_FIELDS[Invocation]


def encode_event_array(event: Event) -> bytes:
    """Serialise to the array form (see :data:`EVENT_ARRAY_VERSION`)."""
    cls = type(event)
    head = [EVENT_ARRAY_VERSION, _TYPE_NAMES[cls], list(event.context)]
    return orjson.dumps([*head, *_ARRAY_VALUES[cls](event)])


def invocation_from_array(data: Any) -> Invocation | None:
    """The invocation in ``data`` if it is a well-formed one, else ``None``.

    The one check a daemon makes of almost every message, in one expression
    over the unpacked array; anything it does not accept (another event
    type, a context seen for the first time, any doubtful field) is left to
    :func:`event_from_array`, which names what is wrong.
    """
    if type(data) is not list or len(data) != _INVOCATION_ITEMS:
        return None
    (version, name, parts, time, request_id, duration, billed, memory,
     max_memory, init, status, arch, trace_id, lineage, count) = data  # fmt: skip
    if (
        version == EVENT_ARRAY_VERSION
        and name == "invocation"
        and type(parts) is list
        and type(time) is float
        and 0.0 <= time <= LATEST_EVENT_TIME_S
        and type(request_id) is str
        and type(duration) is float
        and 0.0 <= duration < 1e9
        and type(billed) is float
        and 0.0 <= billed < 1e9
        and type(memory) is int
        and 0 < memory <= 1 << 20
        and type(max_memory) is int
        and type(init) is float
        and 0.0 <= init < 1e9
        and type(status) is str
        and type(arch) is str
        and type(trace_id) is str
        and type(lineage) is int
        and type(count) is int
    ):
        try:
            context = _CONTEXTS.get(tuple(parts))
        except TypeError:  # an unhashable part: the checked path says so
            return None
        if context is not None:
            return Invocation(
                context, time, request_id, duration, billed, memory, max_memory,
                init, status, arch, trace_id, lineage, count,
            )  # fmt: skip
    return None


def start_from_array(data: Any) -> InvocationStart | None:
    """The call start in ``data`` if it is a well-formed one, else ``None``.

    As :func:`invocation_from_array`, for the other common message of the
    invocations topic; anything doubtful is left to :func:`event_from_array`.
    """
    if type(data) is not list or len(data) != 5:
        return None
    version, name, parts, time, request_id = data
    if (
        version == EVENT_ARRAY_VERSION
        and name == "start"
        and type(parts) is list
        and type(time) is float
        and 0.0 <= time <= LATEST_EVENT_TIME_S
        and type(request_id) is str
    ):
        try:
            context = _CONTEXTS.get(tuple(parts))
        except TypeError:  # an unhashable part: the checked path says so
            return None
        if context is not None:
            return InvocationStart(context, time, request_id)
    return None


def event_from_array(data: list[Any], source: str, position: str) -> Event:
    """Rebuild an event from its array form, checking every field's type."""
    head = data[0] if data else None
    if head != EVENT_ARRAY_VERSION:
        if isinstance(head, str) and head.startswith(EVENT_ARRAY_FAMILY):
            raise ParseError(
                source,
                position,
                f"event array version {head!r}, this dowguard reads "
                f"{EVENT_ARRAY_VERSION!r}",
            )
        raise ParseError(source, position, f"not a dowguard event array: {head!r}")
    if len(data) < 3:
        raise ParseError(source, position, "event array without a context")
    name = data[1]
    cls = EVENT_TYPES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ParseError(source, position, f"unknown event type {name!r}")
    values = data[3:]
    if len(values) != _ARRAY_FIELDS[cls]:
        raise ParseError(
            source,
            position,
            f"bad {name} event: {len(values)} fields, expected {_ARRAY_FIELDS[cls]}",
        )
    context = _context(data[2], source, position)
    if cls is Span:
        values[7] = _links(values[7], source, position)
    event: Event = cls(context, *values)
    if cls is not Invocation or not (
        # The common case, checked inline: the generic loop costs as much
        # as decoding the rest of the message.
        type(values[1]) is str
        and type(values[4]) is int
        and type(values[5]) is int
        and type(values[7]) is str
        and type(values[8]) is str
        and type(values[9]) is str
        and type(values[10]) is int
        and type(values[11]) is int
    ):
        _check_fields(event, source, position)
    _check_values(event, source, position)
    return event


def _context(parts: Any, source: str, position: str) -> Context:
    if type(parts) is not list:
        raise ParseError(source, position, "context must be 5 strings")
    key = tuple(parts)
    try:
        context = _CONTEXTS.get(key)
    except TypeError:  # an unhashable part, so not a string
        context = None
    if context is None:
        if len(key) != 5 or not all(type(p) is str for p in key):
            raise ParseError(source, position, "context must be 5 strings")
        if len(_CONTEXTS) >= _MAX_CONTEXTS:
            _CONTEXTS.clear()
        context = _CONTEXTS[key] = Context(*key)
    return context


def _links(value: Any, source: str, position: str) -> tuple[tuple[str, str], ...]:
    if type(value) is not list:
        raise ParseError(source, position, "bad span event: links must be a list")
    links = []
    for item in value:
        if (
            type(item) is not list
            or len(item) != 2
            or type(item[0]) is not str
            or type(item[1]) is not str
        ):
            raise ParseError(
                source, position, "bad span event: a link is [trace_id, span_id]"
            )
        links.append((item[0], item[1]))
    return tuple(links)


# Field types of the array form, per event type, in constructor order.
_FIELD_TYPES: dict[type[Any], tuple[tuple[str, tuple[type, ...]], ...]] = {
    cls: tuple(
        (
            f.name,
            {"float": _NUMBER, "int": (int,), "str": (str,), "bool": (bool,)}.get(
                str(f.type), (object,)
            ),
        )
        for f in fields(cls)[1:]
    )
    for cls in EVENT_TYPES.values()
}


def _check_fields(event: Event, source: str, position: str) -> None:
    """Every field of an array-form event has its declared type."""
    for name, kinds in _FIELD_TYPES[type(event)]:
        value = getattr(event, name)
        if not isinstance(value, kinds) or (
            isinstance(value, bool) and bool not in kinds
        ):
            raise ParseError(
                source,
                position,
                f"bad {_TYPE_NAMES[type(event)]} event: {name} is "
                f"{type(value).__name__}, expected {kinds[0].__name__}",
            )


def _check_types(event: Event, source: str, position: str) -> None:
    ctx = event.context
    if len(ctx) != 5 or not all(isinstance(p, str) for p in ctx):
        raise ParseError(source, position, "context must be 5 strings")
    _check_values(event, source, position)


def _check_values(event: Event, source: str, position: str) -> None:
    """The time, and an invocation's durations and memory, are in range."""
    time = event.time
    if type(event) is Invocation and type(time) is float and time == time:
        # Every check of the loop below in one expression, for the usual
        # floats; anything else takes the loop, which names what is wrong.
        duration, billed, init = event.duration_ms, event.billed_ms, event.init_ms
        memory = event.memory_mb
        if (
            type(duration) is float
            and type(billed) is float
            and type(init) is float
            and type(memory) is int
            and 0.0 <= duration < 1e9
            and 0.0 <= billed < 1e9
            and 0.0 <= init < 1e9
            and 0 < memory <= 1 << 20
        ):
            return
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
