"""The trace stage: causal chains of spans, and re-entries of a function.

Spans of one partition are kept per trace id until the trace has been quiet
for ``trace_ttl_s`` of event time. Every invocation span (a SERVER or
CONSUMER span of a function) is linked to the invocation that caused it,
through its parent span or, failing that, its span links (an SQS message's
trace header becomes a link). Each invocation carries how many times each
function occurs on its causal path; a function that occurs ``hops + 1``
times has been re-entered ``hops`` times, directly or through others
(A -> B -> A), and that is sent on as evidence keyed by its context.
Each linked invocation is also counted in its context's window sketch of
distinct triggers and callers (``detector.spanwindows``), sent on once the
window has settled.
"""

from __future__ import annotations

import heapq
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from detector.evidence import (
    CHAIN,
    CHAIN_ENDED,
    ITEM_TRIGGERED,
    WROTE_ITEM,
    Evidence,
)
from detector.resources import (
    FAN_OUT_HOPS,
    ItemPairing,
    ResourceGraph,
    edge_name,
    projected_per_hour,
    resource_name,
    written_resource,
)
from detector.spanwindows import SpanWindows
from ingest.events import SPAN_KIND_CONSUMER, SPAN_KIND_SERVER, Context, Span

logger = logging.getLogger(__name__)

#: The ``faas.trigger`` of an invocation a data source (a bucket, a table's
#: stream) triggered.
TRIGGER_DATASOURCE = "datasource"

#: Steps walked up a parent chain before giving up (a malformed trace).
MAX_WALK = 64
#: Spans kept per trace; beyond it new spans are counted and ignored.
MAX_SPANS_PER_TRACE = 20_000
#: Generations of one function counted per chain; deeper ones share the last.
MAX_GENERATIONS = 64
#: Resources named on one chain's path.
MAX_PATH_RESOURCES = 8
#: (context, resource) pairs of loops remembered as going on.
MAX_LOOPING = 1024

SpanRef = tuple[str, str]
_UNBOUNDED = 1 << 30
#: Invocations walked up a chain to tell whether each one fanned out.
MAX_FAN_OUT_DEPTH = 32


@dataclass(slots=True)
class _Node:
    span: Span
    is_invocation: bool
    resolved: bool = False
    counts: dict[str, int] | None = None
    root: str = ""
    path: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    children: int = 0


@dataclass(slots=True)
class _Trace:
    nodes: dict[str, _Node] = field(default_factory=dict)
    last_time: float = 0.0
    # chains with an invocation in this trace
    roots: set[str] = field(default_factory=set)


@dataclass(slots=True)
class _Chain:
    """One causal chain, which may run through many traces (resource links)."""

    first: float
    last: float
    invocations: int = 0
    cost: float = 0.0
    fan_out: int = 0
    # function -> invocations per generation of it (its count on the path)
    gens: dict[str, list[int]] = field(default_factory=dict)
    # context -> highest hops sent on as evidence
    emitted: dict[Context, int] = field(default_factory=dict)
    traces: int = 0
    # a write was paired with an invocation of it by guess
    guessed: bool = False


def _is_invocation(span: Span) -> bool:
    context = span.context
    if not context.function or span.kind not in (SPAN_KIND_SERVER, SPAN_KIND_CONSUMER):
        return False
    if span.trigger or span.invocation_id:
        return True
    # A managed service in front of a function (an API gateway, a state
    # machine) is no function: it has no qualifier.
    return context.provider == "aws" and bool(context.qualifier)


def _growth(gens: list[int]) -> float:
    """Growth per generation from complete generations (the last may not be)."""
    deepest = len(gens) - 2
    if deepest < 1 or gens[0] <= 0:
        return 1.0
    return max(1.0, math.pow(gens[deepest] / gens[0], 1.0 / deepest))


class TraceStage:
    """Causal-chain state of the traces of one partition.

    Parameters
    ----------
    hops
        Re-entries of one function in one chain at which evidence is sent.
    trace_ttl_s
        Event-time quiet period after which a trace is closed.
    pending_s
        How long an invocation waits for a parent span that has not arrived
        before it is treated as the start of a chain.
    resources
        The write and trigger edges of resources; a default one is made.
        Where the trace breaks at a resource, an invocation it triggered is
        paired with a pending write into it and the chain goes on.
    window_s
        The detector's window: invocations are sketched per context and
        window of this length.
    """

    def __init__(
        self,
        hops: int = 3,
        trace_ttl_s: float = 120.0,
        pending_s: float = 5.0,
        span_cost: Callable[[Span], float] | None = None,
        resources: ResourceGraph | None = None,
        window_s: float = 10.0,
    ) -> None:
        self.hops = hops
        self.trace_ttl_s = trace_ttl_s
        self.pending_s = pending_s
        self.span_cost = span_cost
        self.resources = resources or ResourceGraph()
        self._traces: dict[str, _Trace] = {}
        self._chains: dict[str, _Chain] = {}
        self._expiry: list[tuple[float, str]] = []
        self._waiting: dict[SpanRef, list[SpanRef]] = {}
        self._deadlines: list[tuple[float, str, str]] = []
        self._watermark = float("-inf")
        self._ready: list[SpanRef] = []
        # invocations held back while their trigger's trace is being learnt
        self._held: set[SpanRef] = set()
        # (context, resource) -> when its loop through the resource was last
        # sent on as evidence
        self._looping: dict[tuple[Context, str], float] = {}
        # the context side: item facts of every trace partition paired
        self.items = ItemPairing(hops=hops)
        self.dropped_spans = 0
        # Bounded by spanwindows.MAX_OPEN (context, window) pairs.
        self.windows = SpanWindows(window_s, pending_s)

    # Parameters only; the callable is re-attached after a restore.
    def __getstate__(self) -> dict[str, object]:
        state = {k: getattr(self, k) for k in _STATE_FIELDS}
        state["span_cost"] = None
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.resources = ResourceGraph()
        self._chains = {}
        self._held = set()
        self._looping = {}
        self.items = ItemPairing(hops=int(state.get("hops", 3)))  # type: ignore[call-overload]
        # From before windows were sketched: the engine sets the window length.
        pending = state.get("pending_s", 5.0)
        self.windows = SpanWindows(10.0, float(pending))  # type: ignore[arg-type]
        for key, value in state.items():
            setattr(self, key, value)

    @property
    def tracked_traces(self) -> int:
        return len(self._traces)

    @property
    def tracked_chains(self) -> int:
        return len(self._chains)

    def process(self, span: Span, out: list[Evidence]) -> None:
        """Take one span; append any evidence it produces to ``out``."""
        trace = self._traces.get(span.trace_id)
        if trace is None:
            trace = self._traces[span.trace_id] = _Trace()
        if span.span_id in trace.nodes:
            return  # a redelivered span changes nothing
        if len(trace.nodes) >= MAX_SPANS_PER_TRACE:
            self.dropped_spans += 1
            return
        node = _Node(span, _is_invocation(span))
        trace.nodes[span.span_id] = node
        if span.end > trace.last_time or span.time > trace.last_time:
            trace.last_time = max(span.time, span.end)
            heapq.heappush(
                self._expiry, (trace.last_time + self.trace_ttl_s, span.trace_id)
            )
        if node.is_invocation:
            if span.destination:
                self.resources.triggered(resource_name(span.destination), span)
            self._try_resolve(node, out, force=False)
        else:
            written = written_resource(span)
            if written:
                self.resources.wrote(written, span)
                if span.resource_key and span.parent_id:
                    cause, _ = self._walk_up((span.trace_id, span.parent_id))
                    if cause is not None:
                        self._wrote_item(cause, written, span, out)
        self._wake((span.trace_id, span.span_id), out)
        self._drain(out)
        if span.time > self._watermark:
            self._watermark = span.time
            self._advance(out)
        elif self._deadlines and self._deadlines[0][0] <= self._watermark:
            # A span that arrived late may be due already.
            self._advance(out)

    def pair_items(self, evidence: Evidence) -> list[Evidence]:
        """The context side of item pairing: take an item fact or a chain's
        end, sent on by any trace partition; the chain evidence it makes."""
        return self.items.take(evidence)

    def flush(self, out: list[Evidence]) -> None:
        """End every chain, as at the end of a finite replay."""
        self._watermark = float("inf")
        self._advance(out)

    # Resolution

    def _node(self, ref: SpanRef) -> _Node | None:
        trace = self._traces.get(ref[0])
        return trace.nodes.get(ref[1]) if trace is not None else None

    def _refs(self, span: Span) -> list[SpanRef]:
        starts: list[SpanRef] = []
        if span.parent_id:
            starts.append((span.trace_id, span.parent_id))
        starts.extend(span.links)
        return starts

    def _cause(self, node: _Node) -> tuple[_Node | None, SpanRef | None]:
        """The invocation that caused ``node``, or the span to wait for."""
        missing: SpanRef | None = None
        for ref in self._refs(node.span):
            found, wait = self._walk_up(ref)
            if found is not None:
                return found, None
            if wait is not None and missing is None:
                missing = wait
        return None, missing

    def _walk_up(self, ref: SpanRef) -> tuple[_Node | None, SpanRef | None]:
        for _ in range(MAX_WALK):
            current = self._node(ref)
            if current is None:
                return None, ref
            if current.is_invocation:
                if current.resolved:
                    return current, None
                return None, ref
            if not current.span.parent_id:
                return None, None
            ref = (current.span.trace_id, current.span.parent_id)
        return None, None

    def _try_resolve(self, node: _Node, out: list[Evidence], force: bool) -> None:
        cause, wait = self._cause(node)
        span = node.span
        ref = (span.trace_id, span.span_id)
        if cause is None and not force:
            if wait is not None:
                self._waiting.setdefault(wait, []).append(ref)
                self._defer(span)
                return
            due = self._hold(span)
            if due is not None:
                self._held.add(ref)
                heapq.heappush(self._deadlines, (due, span.trace_id, span.span_id))
                return
        resource = ""
        guessed = False
        if ref in self._held:
            self._held.discard(ref)
            self.resources.release(resource_name(span.destination))
        if span.destination:
            trigger = resource_name(span.destination)
            if cause is not None:
                self.resources.settle(trigger, self._refs(span), span.time)
            else:
                # The trace broke at the trigger: the write into it that
                # waited longest is taken as the cause.
                # Limitation: pairs within a partition but for keyed self-writes.
                taken = self.resources.take_write(trigger, span.time, span.resource_key)
                if taken is not None:
                    cause, _ = self._walk_up(taken.ref)
                    resource = trigger if cause is not None else ""
                    guessed = not taken.by_key
        self._resolve(node, cause, out, resource, guessed)

    def _hold(self, span: Span) -> float | None:
        """The event time until which an invocation without a traced cause
        waits before it is paired with a write into its trigger; None: now.

        A data source's events (an S3 notification, a stream record) never
        carry a trace; a message's may. Until a queue has shown which, its
        first fresh messages would take the writes of requeued messages whose
        trace does carry over, and a bounded retry would look unbounded.
        """
        if not span.destination or span.trigger == TRIGGER_DATASOURCE:
            return None
        resource = resource_name(span.destination)
        if not self.resources.learning(resource, span.time):
            return None
        return self.resources.hold(resource, span.time + self.pending_s)

    def _defer(self, span: Span) -> None:
        heapq.heappush(
            self._deadlines, (span.time + self.pending_s, span.trace_id, span.span_id)
        )

    def _resolve(
        self,
        node: _Node,
        cause: _Node | None,
        out: list[Evidence],
        resource: str = "",
        guessed: bool = False,
    ) -> None:
        span = node.span
        name = "/".join(span.context)
        counts = dict(cause.counts) if cause is not None and cause.counts else {}
        counts[name] = counts.get(name, 0) + 1
        # Limitation: rates bound only self-writes, not f -> R1 -> g -> R2 -> f.
        if guessed and cause is not None and edge_name(cause.span) == edge_name(span):
            counts[name] = min(counts[name], self._rate_bound(resource, span))
        node.counts = counts
        node.resolved = True
        own_cost = self.span_cost(span) if self.span_cost is not None else 0.0
        if cause is not None:
            node.root = cause.root
            node.path = (*cause.path[-15:], span.context.function)
            node.resources = cause.resources
            cause.children += 1
        else:
            node.root = f"{span.trace_id}:{span.span_id}"
            node.path = (span.context.function,)
        if resource and resource not in node.resources:
            node.resources = (*node.resources[-(MAX_PATH_RESOURCES - 1) :], resource)
        chain = self._account(node, cause, name, own_cost)
        if guessed and cause is not None:
            chain.guessed = True
        hops = max(counts[name] - 1, span.lineage)
        if (
            hops >= self.hops
            or (hops >= 1 and not guessed and self._goes_on(node, cause, resource))
            or (hops >= FAN_OUT_HOPS and not guessed and self._fans_out(cause, name))
        ):
            self._emit(node, chain, name, hops, resource, out)
        if span.trigger == TRIGGER_DATASOURCE and span.resource_key:
            self._item_triggered(node, own_cost, out)
        self.windows.add(span, cause.span.context if cause is not None else None)
        self._ready.append((span.trace_id, span.span_id))

    # Item facts

    def _item_triggered(self, node: _Node, cost: float, out: list[Evidence]) -> None:
        """Tell the context side which item triggered a data source's
        invocation, and which items it wrote back before it was resolved.

        The write of the item and this invocation are in different traces,
        which a daemon reads on any partition; the context side pairs them.
        """
        span = node.span
        resource = resource_name(span.destination)
        out.append(
            Evidence(
                ITEM_TRIGGERED,
                span.context,
                span.time,
                node.root,
                cost_usd=cost,
                via=resource,
                item=span.resource_key,
            )
        )
        # Tracers export children first: its writes may have come before it.
        trace = self._traces[span.trace_id]
        for other in list(trace.nodes.values()):
            write = other.span
            if other.is_invocation or not write.resource_key or not write.parent_id:
                continue
            if written_resource(write) != resource:
                continue
            cause, _ = self._walk_up((write.trace_id, write.parent_id))
            if cause is node:
                self._wrote_item(node, resource, write, out)

    def _wrote_item(
        self, cause: _Node, written: str, write: Span, out: list[Evidence]
    ) -> None:
        """Tell the context side that an invocation a data source triggered
        wrote an item back into it."""
        span = cause.span
        if span.trigger != TRIGGER_DATASOURCE or not span.resource_key:
            return
        if resource_name(span.destination) != written:
            return
        chain = self._chains.get(cause.root)
        if chain is not None:
            # Its end is sent on too: the context side ends its pieces with it.
            chain.emitted.setdefault(span.context, 0)
        cost = self.span_cost(span) if self.span_cost is not None else 0.0
        out.append(
            Evidence(
                WROTE_ITEM,
                span.context,
                span.time,
                cause.root,
                cost_usd=cost,
                via=written,
                item=write.resource_key,
                cause_item=span.resource_key,
            )
        )

    def _fans_out(self, cause: _Node | None, name: str) -> bool:
        """Whether every invocation from the first of function ``name`` down
        to ``cause`` (the one that caused its latest re-entry) caused two or
        more: geometric growth, which no bounded retry shows (a retry writes
        back once per call), so a loop is told at ``FAN_OUT_HOPS`` re-entries.
        """
        node = cause
        for _ in range(MAX_FAN_OUT_DEPTH):
            if node is None or node.children < 2:
                return False
            first = (node.counts or {}).get(name, 0) <= 1
            if first and "/".join(node.span.context) == name:
                return True
            node = self._cause(node)[0]
        return False

    def _goes_on(self, node: _Node, cause: _Node | None, resource: str) -> bool:
        """Whether a re-entry below the threshold goes on with a loop that
        was sent on as evidence, here, less than ``trace_ttl_s`` ago.

        Where the trace breaks at every hop, each hop's trace lands in any
        partition, so a partition sees a loop in pieces that reach the
        threshold only now and then. A function that its own write, matched
        by the item's key, triggered again through the resource of such a
        loop keeps the loop's evidence going, so that its alert does not
        resolve between two long pieces while the loop runs.
        """
        if not resource or cause is None:
            return False
        if edge_name(cause.span) != edge_name(node.span):
            return False
        last = self._looping.get((node.span.context, resource))
        return last is not None and node.span.time - last < self.trace_ttl_s

    def _remember_loop(self, context: Context, resource: str, time: float) -> None:
        looping = self._looping
        key = (context, resource)
        if key not in looping and len(looping) >= MAX_LOOPING:
            horizon = time - self.trace_ttl_s
            for old in [k for k, at in looping.items() if at <= horizon]:
                del looping[old]
            if len(looping) >= MAX_LOOPING:
                del looping[min(looping, key=looping.__getitem__)]
        looping[key] = max(time, looping.get(key, time))

    def _rate_bound(self, resource: str, span: Span) -> int:
        """The most invocations a chain of a self-writing function can have
        reached, judged from its write and invocation rates.

        Pairing writes with invocations cannot tell chains apart; a function
        that writes back ``g`` times per invocation it gets (g < 1) makes
        chains of ``1 / (1 - g)`` invocations on average, so a bounded retry
        does not add up to a loop when its chains interleave.
        """
        gain = self.resources.self_gain(resource, edge_name(span), span.time)
        if gain >= 1.0:
            return _UNBOUNDED
        return max(1, math.floor(gain / (1.0 - gain) + 1e-6) + 1)

    def _account(
        self, node: _Node, cause: _Node | None, name: str, own_cost: float
    ) -> _Chain:
        span = node.span
        chain = self._chains.get(node.root)
        if chain is None:
            chain = self._chains[node.root] = _Chain(span.time, span.time)
        trace = self._traces[span.trace_id]
        if node.root not in trace.roots:
            trace.roots.add(node.root)
            chain.traces += 1
        chain.invocations += 1
        chain.cost += own_cost
        time = span.time
        if time < chain.first:
            chain.first = time
        elif time > chain.last:
            chain.last = time
        if cause is not None and cause.children > chain.fan_out:
            chain.fan_out = cause.children
        gens = chain.gens.setdefault(name, [])
        generation = min((node.counts or {}).get(name, 1), MAX_GENERATIONS) - 1
        if len(gens) <= generation:
            gens.extend([0] * (generation + 1 - len(gens)))
        gens[generation] += 1
        return chain

    def _emit(
        self,
        node: _Node,
        chain: _Chain,
        name: str,
        hops: int,
        resource: str,
        out: list[Evidence],
    ) -> None:
        span = node.span
        if hops <= chain.emitted.get(span.context, 0):
            return
        chain.emitted[span.context] = hops
        via = resource or span.destination or span.trigger or "unknown"
        # Limitation: a chain split over trace partitions shows less growth than it has.
        growth = _growth(chain.gens.get(name, []))
        elapsed = chain.last - chain.first
        out.append(
            Evidence(
                CHAIN,
                span.context,
                span.time,
                node.root,
                hops=hops,
                cost_usd=chain.cost,
                via=via,
                path=node.path,
                method="resource" if node.resources else "trace",
                resources=node.resources,
                fan_out=chain.fan_out,
                growth=round(growth, 4),
                invocations=chain.invocations,
                projected_usd_per_hour=projected_per_hour(
                    chain.cost, elapsed, hops, growth
                ),
                guessed=chain.guessed,
            )
        )
        looped = resource or (node.resources[-1] if node.resources else "")
        if looped:
            self._remember_loop(span.context, looped, span.time)

    def _wake(self, ref: SpanRef, out: list[Evidence]) -> None:
        waiters = self._waiting.pop(ref, None)
        if not waiters:
            return
        for waiter in waiters:
            node = self._node(waiter)
            if node is not None and not node.resolved:
                self._try_resolve(node, out, force=False)

    def _drain(self, out: list[Evidence]) -> None:
        # Iterative, so that a long chain resolved at once cannot overflow
        # the stack.
        while self._ready:
            self._wake(self._ready.pop(), out)

    # Time

    def _advance(self, out: list[Evidence]) -> None:
        while self._deadlines and self._deadlines[0][0] <= self._watermark:
            _, trace_id, span_id = heapq.heappop(self._deadlines)
            node = self._node((trace_id, span_id))
            if node is not None and not node.resolved:
                # Limitation: a parent arriving after pending_s is not re-linked.
                self._try_resolve(node, out, force=True)
                self._drain(out)
        horizon = self._watermark
        while self._expiry and self._expiry[0][0] <= horizon:
            due, trace_id = heapq.heappop(self._expiry)
            trace = self._traces.get(trace_id)
            if trace is None or trace.last_time + self.trace_ttl_s > due:
                continue  # the trace went on after this entry was made
            self._close(trace_id, trace, out)
        self.resources.expire(horizon)
        self.windows.advance(horizon, out)

    def _close(self, trace_id: str, trace: _Trace, out: list[Evidence]) -> None:
        for node in list(trace.nodes.values()):
            if node.is_invocation and not node.resolved:
                ref = (node.span.trace_id, node.span.span_id)
                if ref in self._held:
                    self._held.discard(ref)
                    self.resources.release(resource_name(node.span.destination))
                self._resolve(node, None, out)
                self._drain(out)
        ended = trace.last_time + self.trace_ttl_s
        for root in sorted(trace.roots):
            chain = self._chains.get(root)
            if chain is None:
                continue
            chain.traces -= 1
            if chain.traces > 0:
                continue  # the chain goes on in another trace
            for context, hops in sorted(chain.emitted.items()):
                out.append(Evidence(CHAIN_ENDED, context, ended, root, hops=hops))
            del self._chains[root]
        del self._traces[trace_id]
        for ref in [r for r in self._waiting if r[0] == trace_id]:
            del self._waiting[ref]


_STATE_FIELDS = (
    "hops",
    "trace_ttl_s",
    "pending_s",
    "resources",
    "_traces",
    "_chains",
    "_expiry",
    "_waiting",
    "_deadlines",
    "_watermark",
    "_ready",
    "_held",
    "_looping",
    "items",
    "dropped_spans",
    "windows",
)
