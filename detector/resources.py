"""Resources between functions: which function wrote to each, whom each
triggered, and the pending writes an invocation without a traced cause is
paired with when the trace breaks at its trigger (S3, streams, bare queues).
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import NamedTuple

from ingest.events import SPAN_KIND_CLIENT, SPAN_KIND_PRODUCER, Span

logger = logging.getLogger(__name__)

#: Operations, by service, whose writes fire a trigger on the resource.
WRITE_OPERATIONS: dict[str, frozenset[str]] = {
    "s3": frozenset({"PutObject", "CopyObject", "CompleteMultipartUpload"}),
    "sqs": frozenset({"SendMessage", "SendMessageBatch"}),
    "sns": frozenset({"Publish", "PublishBatch"}),
    "dynamodb": frozenset(
        {
            "PutItem",
            "UpdateItem",
            "DeleteItem",
            "BatchWriteItem",
            "TransactWriteItems",
        }
    ),
    "kinesis": frozenset({"PutRecord", "PutRecords"}),
    "events": frozenset({"PutEvents"}),
    "eventbridge": frozenset({"PutEvents"}),
    "sfn": frozenset({"StartExecution", "StartSyncExecution"}),
}
#: Resources remembered per partition; the longest idle is forgotten first.
MAX_RESOURCES = 4096
#: Writes waiting for the invocation they trigger, per resource.
MAX_PENDING_WRITES = 64
#: Writer and triggered functions remembered per resource.
MAX_EDGES_PER_RESOURCE = 32

#: Invocations a resource triggers before its share of traced ones is
#: trusted; it is their plain mean until then, and a moving mean over about
#: as many afterwards.
LEARN_INVOCATIONS = 16

SpanRef = tuple[str, str]


class Taken(NamedTuple):
    """A pending write paired with an invocation, and whether the item keys
    of both sides matched (else it was the oldest write, a guess)."""

    ref: SpanRef
    by_key: bool


_NAMES: dict[str, str] = {}


def resource_name(destination: str) -> str:
    """The bare name of a resource from its name, ARN or queue URL.

    A trigger names its resource one way (a queue ARN, a bucket name), a
    writer often another (a queue URL); both must meet under one key.
    """
    name = _NAMES.get(destination)
    if name is None:
        # A partition sees few destinations: remember them, within bounds.
        if len(_NAMES) >= MAX_RESOURCES:
            _NAMES.clear()
        name = _NAMES[destination] = _bare_name(destination)
    return name


def _bare_name(destination: str) -> str:
    # Limitation: same-named resources of two services or accounts are merged.
    text = destination.strip()
    if text.startswith("arn:"):
        parts = text.split(":", 5)
        tail = parts[5] if len(parts) == 6 else text
        if tail.startswith(("table/", "stream/", "event-bus/")):
            # A DynamoDB stream ARN names its table: table/NAME/stream/DATE.
            return tail.split("/")[1]
        if tail.startswith("stateMachine:"):
            return tail.split(":")[1]
        return tail
    if text.startswith(("https://", "http://")):
        return text.rstrip("/").rsplit("/", 1)[-1]
    return text


def edge_name(span: Span) -> str:
    """A function as the edges know it: its qualifier left out, as a writer's
    SDK span and its invocation span may name versions apart."""
    context = span.context
    return f"{context.provider}/{context.account}/{context.region}/{context.function}"


def written_resource(span: Span) -> str:
    """The resource a span writes to in a way that fires triggers, or ``""``.

    AWS SDK instrumentations name a call ``Service.Operation``; messaging
    instrumentations mark a send with the PRODUCER kind.
    """
    if not span.destination or span.kind not in (SPAN_KIND_CLIENT, SPAN_KIND_PRODUCER):
        return ""
    service, dot, operation = span.name.partition(".")
    if dot and operation in WRITE_OPERATIONS.get(service.lower(), ()):
        return resource_name(span.destination)
    if span.kind == SPAN_KIND_PRODUCER and span.messaging_system:
        return resource_name(span.destination)
    return ""


@dataclass(slots=True)
class _Rate:
    """An event count that halves every ``half_life`` seconds of event time."""

    value: float = 0.0
    time: float = -math.inf

    def add(self, time: float, half_life: float) -> None:
        if time >= self.time:
            self.value = self.value * math.exp2(-(time - self.time) / half_life) + 1.0
            self.time = time
        else:
            self.value += math.exp2(-(self.time - time) / half_life)

    def read(self, time: float, half_life: float) -> float:
        if time <= self.time:
            return self.value
        return self.value * math.exp2(-(time - self.time) / half_life)


@dataclass(slots=True)
class _Resource:
    last: float
    # writes not yet taken, oldest first: span -> (time, item key)
    pending: dict[SpanRef, tuple[float, str]] = field(default_factory=dict)
    writers: dict[str, _Rate] = field(default_factory=dict)
    targets: dict[str, _Rate] = field(default_factory=dict)
    # share of the invocations it triggered whose trace carried over, and
    # how many invocations that share is made of (up to LEARN_INVOCATIONS)
    linked: float = 0.0
    seen: int = 0
    # invocations it triggered that wait to be paired (see ResourceGraph.hold)
    # and when the last of them is due
    held: int = 0
    held_until: float = -math.inf

    def carries_trace(self) -> bool:
        return self.linked > 0.5

    def observe(self, linked: bool) -> None:
        if self.seen < LEARN_INVOCATIONS:
            self.seen += 1
        self.linked += (float(linked) - self.linked) / self.seen


class ResourceGraph:
    """Write and trigger edges of the resources one partition's spans show.

    Parameters
    ----------
    idle_s
        Event-time quiet period after which a resource and its edges are
        forgotten.
    latency_s
        Longest a write may wait for the invocation it triggers.
    half_life_s
        Memory of the write and invocation rates of an edge.
    """

    def __init__(
        self, idle_s: float = 300.0, latency_s: float = 30.0, half_life_s: float = 60.0
    ) -> None:
        self.idle_s = idle_s
        self.latency_s = latency_s
        self.half_life_s = half_life_s
        self._resources: OrderedDict[str, _Resource] = OrderedDict()
        self.dropped_edges = 0
        self.evicted = 0

    @property
    def tracked_resources(self) -> int:
        return len(self._resources)

    def edges(self) -> int:
        """Write and trigger edges held, for memory accounting."""
        return sum(len(r.writers) + len(r.targets) for r in self._resources.values())

    def wrote(self, resource: str, span: Span) -> None:
        """The function of ``span`` wrote to ``resource`` in it."""
        res = self._touch(resource, span.time)
        if res.carries_trace():
            return  # nothing to pair, nor to bound
        rate = self._edge(res.writers, edge_name(span), span.time)
        if rate is not None:
            rate.add(span.time, self.half_life_s)
        pending = res.pending
        pending[span.trace_id, span.span_id] = (span.time, span.resource_key)
        if len(pending) > MAX_PENDING_WRITES:
            del pending[next(iter(pending))]

    def triggered(self, resource: str, span: Span) -> None:
        """``resource`` triggered the invocation ``span``."""
        time = span.time
        res = self._touch(resource, time)
        if res.carries_trace():
            return
        rate = self._edge(res.targets, edge_name(span), time)
        if rate is not None:
            rate.add(time, self.half_life_s)

    def take_write(self, resource: str, time: float, key: str = "") -> Taken | None:
        """The pending write into ``resource`` that caused an invocation at
        ``time``, removed from the pending ones.

        With item keys on both sides (an object key, a message id), only the
        write of the very item that fired the trigger; else the oldest
        write. None where the trace usually carries over this trigger: there
        an invocation without a traced cause is one that nothing traced
        caused.
        """
        res = self._resources.get(resource)
        if res is None:
            return None
        res.observe(linked=False)
        if res.carries_trace():
            return None
        pending = res.pending
        horizon = time - self.latency_s
        for ref in [r for r, (at, _) in pending.items() if at < horizon]:
            del pending[ref]
        # Limitation: without item keys, writes a trigger filters out look looped.
        keyed = bool(key) and any(written for _, written in pending.values())
        for ref, (at, written) in pending.items():
            if at <= time and (not keyed or written == key):
                del pending[ref]
                return Taken(ref, keyed)
        return None

    def settle(self, resource: str, refs: list[SpanRef], time: float) -> None:
        """A traced invocation consumed one of ``refs``: it is no longer pending."""
        res = self._resources.get(resource)
        if res is None:
            return
        res.observe(linked=True)
        pending = res.pending
        if pending:
            for ref in refs:
                if pending.pop(ref, None) is not None:
                    return

    def learning(self, resource: str, time: float) -> bool:
        """Whether ``resource`` has a write pending that could have caused an
        invocation at ``time``, but has not triggered enough invocations yet
        to tell whether its trace carries over.

        While it is learning, an invocation it triggered without a traced
        cause is paired only after traced invocations have had time to claim
        their own writes: a queue's first fresh messages would otherwise take
        the writes of requeued messages, whose trace does carry over.
        """
        res = self._resources.get(resource)
        if res is None:
            return False
        if res.held:
            return True  # pairs in the order of the invocations
        if res.seen >= LEARN_INVOCATIONS:
            return False
        horizon = time - self.latency_s
        return any(horizon <= at <= time for at, _ in res.pending.values())

    def hold(self, resource: str, until: float) -> float:
        """An invocation ``resource`` triggered waits to be paired until
        ``until``; when it is due.

        Once the resource is learnt, an invocation waits only for those held
        before it, so that the holding ends instead of passing on from one
        invocation to the next.
        """
        res = self._resources.get(resource)
        if res is None:
            return until
        if res.held and res.seen >= LEARN_INVOCATIONS:
            until = res.held_until
        # Strictly later than the one before: pairing keeps their order.
        until = max(until, math.nextafter(res.held_until, math.inf))
        res.held += 1
        res.held_until = until
        return until

    def release(self, resource: str) -> None:
        """A held invocation is being paired now."""
        res = self._resources.get(resource)
        if res is not None and res.held:
            res.held -= 1

    def self_gain(self, resource: str, function: str, time: float) -> float:
        """Writes into ``resource`` by ``function`` per invocation of it that
        ``resource`` triggered, over the recent past."""
        res = self._resources.get(resource)
        if res is None:
            return 0.0
        wrote = res.writers.get(function)
        fired = res.targets.get(function)
        if wrote is None or fired is None:
            return 0.0
        invoked = fired.read(time, self.half_life_s)
        # The invocation being judged has not written yet: count its write,
        # or a steady loop would always look one write short.
        written = wrote.read(time, self.half_life_s) + 1.0
        return written / invoked if invoked > 0 else 0.0

    def expire(self, now: float) -> None:
        """Forget resources idle for ``idle_s`` of event time."""
        horizon = now - self.idle_s
        resources = self._resources
        while resources:
            name, res = next(iter(resources.items()))
            if res.last > horizon:
                break
            del resources[name]

    def _touch(self, resource: str, time: float) -> _Resource:
        res = self._resources.get(resource)
        if res is None:
            res = self._resources[resource] = _Resource(time)
            if len(self._resources) > MAX_RESOURCES:
                self._resources.popitem(last=False)
                self.evicted += 1
        else:
            self._resources.move_to_end(resource)
            res.last = max(res.last, time)
        return res

    def _edge(
        self, edges: dict[str, _Rate], function: str, time: float
    ) -> _Rate | None:
        rate = edges.get(function)
        if rate is not None:
            return rate
        if len(edges) >= MAX_EDGES_PER_RESOURCE:
            # Make room from edges gone quiet; with none, the new edge is
            # counted and left out.
            horizon = time - self.idle_s
            for key in [k for k, r in edges.items() if r.time <= horizon]:
                del edges[key]
            if len(edges) >= MAX_EDGES_PER_RESOURCE:
                self.dropped_edges += 1
                return None
        rate = edges[function] = _Rate()
        return rate
