"""Resources between functions: who wrote to each and whom each triggered,
the writes an invocation whose trace broke at its trigger is paired with,
and the pairing of a data source's items across trace partitions.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import NamedTuple

from detector.evidence import CHAIN, CHAIN_ENDED, ITEM_TRIGGERED, WROTE_ITEM, Evidence
from ingest.events import SPAN_KIND_CLIENT, SPAN_KIND_PRODUCER, Context, Span

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

#: Invocations remembered per function and data source for item pairing.
# Limitation: past MAX_ITEMS calls within idle_s, only the newest are paired.
MAX_ITEMS = 1024
#: Chain pieces (a trace partition's chains with a self-write) remembered.
MAX_PIECES = 1024
#: Generations walked up an item's writers before giving up.
MAX_ITEM_DEPTH = 64
#: Re-entries at which a self-trigger whose every generation at least doubled
#: is sent on, below the stage's ``hops``: two doublings in a row are
#: geometric growth, which no bounded retry (one write back per call) shows.
FAN_OUT_HOPS = 2
#: A projection above this many USD per hour is reported as this many.
PROJECTION_CAP_USD = 1e9
#: Chains the item pairing makes are named apart from the trace stage's own.
ITEM_CHAIN_PREFIX = "items:"

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


def projected_per_hour(cost: float, elapsed: float, hops: int, growth: float) -> float:
    """Cost of the next hour of a chain that goes on as it went.

    The chain has cost ``cost`` over ``elapsed`` seconds and ``hops``
    generations; each next generation is ``growth`` times the last, so an
    hour of generations of length ``elapsed / hops`` sums geometrically.
    """
    if elapsed <= 0.0 or cost <= 0.0:
        return 0.0
    rate = cost / elapsed
    if growth <= 1.0 + 1e-9:
        return min(rate * 3600.0, PROJECTION_CAP_USD)
    period = elapsed / max(hops, 1)
    generations = 3600.0 / period
    # rate * period * (g + g^2 + ... + g^N), kept in logs against overflow
    log_sum = generations * math.log(growth) + math.log(growth / (growth - 1.0))
    if log_sum + math.log(rate * period) > math.log(PROJECTION_CAP_USD):
        return PROJECTION_CAP_USD
    total = growth * (math.pow(growth, generations) - 1.0) / (growth - 1.0)
    return rate * period * total


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


@dataclass(slots=True)
class _Call:
    """One invocation a data source triggered, named by its item."""

    time: float
    # its chain in the trace partition it was seen in, "" until a fact says
    chain: str = ""
    cost: float = 0.0
    # items it wrote back into the data source
    writes: list[str] = field(default_factory=list)
    # its writer is known and it was counted in that writer's piece
    counted: bool = False


@dataclass(slots=True)
class _Items:
    """The invocations of one function by one data source."""

    last: float
    calls: OrderedDict[str, _Call] = field(default_factory=OrderedDict)
    # written item -> item of the invocation that wrote it
    writer: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class _Piece:
    """What item pairing made of one chain of a trace partition: the
    invocations its self-writes triggered, wherever they were seen."""

    first: float
    last: float
    cost: float = 0.0
    invocations: int = 0
    # best (hops, growth) sent on, and when the trace stage ended the chain
    sent: tuple[int, float] = (0, 0.0)
    earliest: float = math.inf
    ended: float = math.nan


class ItemPairing:
    """Self-writes into a data source met with the invocations they trigger.

    A data source's event carries no trace, so each invocation it triggers
    starts a new trace, which a daemon reads on any partition: a loop
    through a bucket is seen in pieces that no trace partition can join.
    Here, on the context side where every trace partition's facts about a
    function meet, a write and the invocation it triggered are paired by the
    item key both name, which is exact, whatever order the facts come in.

    An invocation re-entered ``hops`` times is sent on as chain evidence,
    and from ``FAN_OUT_HOPS`` on when every invocation on its path triggered
    two or more. Figures only grow as facts arrive, and a chain's evidence
    is sent again only when its figures grow, so the last evidence of each
    chain does not depend on the order the partitions were read in. A chain
    made here is named after the trace stage's chain of the writer it came
    from and ends when that one does.

    Parameters
    ----------
    hops
        Re-entries at which evidence is sent.
    idle_s
        Event time after which an invocation is no longer paired. Long, as
        the trace partitions of a daemon may be read that far apart.
    """

    def __init__(self, hops: int = 3, idle_s: float = 600.0) -> None:
        self.hops = hops
        self.idle_s = idle_s
        self._groups: OrderedDict[tuple[Context, str], _Items] = OrderedDict()
        self._pieces: OrderedDict[tuple[Context, str], _Piece] = OrderedDict()
        self.evicted = 0

    @property
    def tracked_items(self) -> int:
        return sum(len(g.calls) for g in self._groups.values())

    def take(self, evidence: Evidence) -> list[Evidence]:
        """Take an item fact, or a chain's end; the chain evidence it makes."""
        out: list[Evidence] = []
        if evidence.kind == CHAIN_ENDED:
            self._ended(evidence, out)
            return out
        if evidence.kind not in (WROTE_ITEM, ITEM_TRIGGERED) or not evidence.via:
            return out
        # Limitation: only self-writes pair here; f -> A -> g -> B -> f does not.
        key = (evidence.context, evidence.via)
        group = self._group(key, evidence.time)
        if evidence.kind == ITEM_TRIGGERED:
            item = evidence.item
            if not item:
                return out
        else:
            item, written = evidence.cause_item, evidence.item
            if not item or not written or written in group.writer:
                return out  # nothing to pair, or a redelivered fact
            group.writer[written] = item
            piece_key = (evidence.context, evidence.chain)
            if piece_key not in self._pieces:
                self._pieces[piece_key] = _Piece(evidence.time, evidence.time)
                if len(self._pieces) > MAX_PIECES:
                    self._pieces.popitem(last=False)
        call = self._call(group, item, evidence)
        if evidence.kind == WROTE_ITEM:
            call.writes.append(evidence.item)
        # A new invocation or write changes the branches of the invocation
        # above: judge its subtree again.
        self._visit(key, group, group.writer.get(item, item), out)
        return out

    def _ended(self, evidence: Evidence, out: list[Evidence]) -> None:
        piece = self._pieces.get((evidence.context, evidence.chain))
        if piece is None or not math.isnan(piece.ended):
            return
        piece.ended = evidence.time
        if piece.sent[0]:
            out.append(self._end(evidence.context, evidence.chain, piece))

    def _end(self, context: Context, chain: str, piece: _Piece) -> Evidence:
        return Evidence(
            CHAIN_ENDED,
            context,
            max(piece.ended, piece.last),
            ITEM_CHAIN_PREFIX + chain,
            hops=piece.sent[0],
        )

    def _group(self, key: tuple[Context, str], time: float) -> _Items:
        groups = self._groups
        group = groups.get(key)
        if group is None:
            group = groups[key] = _Items(time)
            if len(groups) > MAX_RESOURCES:
                groups.popitem(last=False)
                self.evicted += 1
        else:
            groups.move_to_end(key)
            group.last = max(group.last, time)
        # Limitation: partitions read over idle_s apart lose the pairings between them.
        horizon = group.last - self.idle_s
        calls = group.calls
        while calls:
            item, call = next(iter(calls.items()))
            if call.time >= horizon and len(calls) <= MAX_ITEMS:
                break
            del calls[item]
            for written in call.writes:
                group.writer.pop(written, None)
        while groups:
            old_key, old = next(iter(groups.items()))
            if old.last >= time - self.idle_s:
                break
            del groups[old_key]
        return group

    def _call(self, group: _Items, item: str, evidence: Evidence) -> _Call:
        call = group.calls.get(item)
        if call is None:
            call = group.calls[item] = _Call(evidence.time)
        call.time = min(call.time, evidence.time)
        call.cost = max(call.cost, evidence.cost_usd)
        if not call.chain:
            call.chain = evidence.chain
        return call

    def _visit(
        self, key: tuple[Context, str], group: _Items, start: str, out: list[Evidence]
    ) -> None:
        """Judge again the invocations from ``start`` down, whose figures a
        new fact may have raised."""
        calls = group.calls
        stack = [start]
        seen: set[str] = set()
        while stack and len(seen) < MAX_ITEMS:
            item = stack.pop()
            if item in seen:
                continue
            seen.add(item)
            call = calls.get(item)
            if call is None:
                continue
            self._judge(key, group, item, call, out)
            stack.extend(w for w in call.writes if w in calls)

    def _judge(
        self,
        key: tuple[Context, str],
        group: _Items,
        item: str,
        call: _Call,
        out: list[Evidence],
    ) -> None:
        parent = group.writer.get(item)
        if parent is None:
            return
        calls = group.calls
        writer = calls.get(parent)
        if writer is None:
            return
        context, resource = key
        piece_key = (context, writer.chain)
        piece = self._pieces.get(piece_key)
        if piece is None:
            return
        if not call.counted:
            call.counted = True
            piece.cost += call.cost
            piece.invocations += 1
            piece.first = min(piece.first, call.time)
            piece.last = max(piece.last, call.time)
        # Re-entries of this invocation and the branches of each one above it.
        hops, product, widest, narrowest = 0, 1.0, 0, MAX_ITEMS
        ancestor: str | None = parent
        while ancestor is not None and hops < MAX_ITEM_DEPTH:
            above = calls.get(ancestor)
            if above is None:
                break
            branches = sum(1 for w in above.writes if w in calls)
            hops += 1
            product *= branches
            widest = max(widest, branches)
            narrowest = min(narrowest, branches)
            ancestor = group.writer.get(ancestor)
        if hops < self.hops and not (hops >= FAN_OUT_HOPS and narrowest >= 2):
            return
        growth = round(product ** (1.0 / hops), 4)
        # Sent again when its figures grow, or when it is an earlier
        # invocation that shows the loop: the alert starts with the earliest.
        if (hops, growth) <= piece.sent and call.time >= piece.earliest:
            return
        piece.sent = max(piece.sent, (hops, growth))
        piece.earliest = min(piece.earliest, call.time)
        elapsed = piece.last - piece.first
        function = context.function
        out.append(
            Evidence(
                CHAIN,
                context,
                call.time,
                ITEM_CHAIN_PREFIX + writer.chain,
                hops=hops,
                cost_usd=piece.cost,
                via=resource,
                path=(function,) * min(hops + 1, 16),
                method="resource",
                resources=(resource,),
                fan_out=widest,
                growth=growth,
                invocations=piece.invocations,
                projected_usd_per_hour=projected_per_hour(
                    piece.cost, elapsed, hops, growth
                ),
            )
        )
        if not math.isnan(piece.ended):
            out.append(self._end(context, writer.chain, piece))
