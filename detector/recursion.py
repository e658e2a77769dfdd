"""The trace stage: causal chains of spans, and re-entries of a function.

Spans of one partition are kept per trace id until the trace has been quiet
for ``trace_ttl_s`` of event time. Every invocation span (a SERVER or
CONSUMER span of a function) is linked to the invocation that caused it,
through its parent span or, failing that, its span links (an SQS message's
trace header becomes a link). Each invocation carries how many times each
function occurs on its causal path; a function that occurs ``hops + 1``
times has been re-entered ``hops`` times, directly or through others
(A -> B -> A), and that is sent on as evidence keyed by its context.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from detector.evidence import CHAIN, CHAIN_ENDED, Evidence
from ingest.events import SPAN_KIND_CONSUMER, SPAN_KIND_SERVER, Context, Span

logger = logging.getLogger(__name__)

#: Steps walked up a parent chain before giving up (a malformed trace).
MAX_WALK = 64
#: Spans kept per trace; beyond it new spans are counted and ignored.
MAX_SPANS_PER_TRACE = 20_000

SpanRef = tuple[str, str]


@dataclass(slots=True)
class _Node:
    span: Span
    is_invocation: bool
    resolved: bool = False
    counts: dict[str, int] | None = None
    root: str = ""
    cost: float = 0.0
    path: tuple[str, ...] = ()


@dataclass(slots=True)
class _Trace:
    nodes: dict[str, _Node] = field(default_factory=dict)
    last_time: float = 0.0
    # (context, chain) -> highest hops sent on as evidence
    emitted: dict[tuple[Context, str], int] = field(default_factory=dict)


def _is_invocation(span: Span) -> bool:
    if not span.context.function or span.kind not in (
        SPAN_KIND_SERVER,
        SPAN_KIND_CONSUMER,
    ):
        return False
    return bool(span.trigger or span.invocation_id or span.context.provider == "aws")


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
    """

    def __init__(
        self,
        hops: int = 3,
        trace_ttl_s: float = 120.0,
        pending_s: float = 5.0,
        span_cost: Callable[[Span], float] | None = None,
    ) -> None:
        self.hops = hops
        self.trace_ttl_s = trace_ttl_s
        self.pending_s = pending_s
        self.span_cost = span_cost
        self._traces: dict[str, _Trace] = {}
        self._expiry: list[tuple[float, str]] = []
        self._waiting: dict[SpanRef, list[SpanRef]] = {}
        self._deadlines: list[tuple[float, str, str]] = []
        self._watermark = float("-inf")
        self._ready: list[SpanRef] = []
        self.dropped_spans = 0

    # Parameters only; the callable is re-attached after a restore.
    def __getstate__(self) -> dict[str, object]:
        state = {k: getattr(self, k) for k in _STATE_FIELDS}
        state["span_cost"] = None
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        for key, value in state.items():
            setattr(self, key, value)

    @property
    def tracked_traces(self) -> int:
        return len(self._traces)

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
            self._try_resolve(node, out, force=False)
        self._wake((span.trace_id, span.span_id), out)
        self._drain(out)
        if span.time > self._watermark:
            self._watermark = span.time
            self._advance(out)

    def flush(self, out: list[Evidence]) -> None:
        """End every chain, as at the end of a finite replay."""
        self._watermark = float("inf")
        self._advance(out)

    # Resolution

    def _node(self, ref: SpanRef) -> _Node | None:
        trace = self._traces.get(ref[0])
        return trace.nodes.get(ref[1]) if trace is not None else None

    def _cause(self, node: _Node) -> tuple[_Node | None, SpanRef | None]:
        """The invocation that caused ``node``, or the span to wait for."""
        span = node.span
        starts: list[SpanRef] = []
        if span.parent_id:
            starts.append((span.trace_id, span.parent_id))
        starts.extend(span.links)
        missing: SpanRef | None = None
        for ref in starts:
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
        if cause is None and wait is not None and not force:
            span = node.span
            self._waiting.setdefault(wait, []).append((span.trace_id, span.span_id))
            heapq.heappush(
                self._deadlines,
                (span.time + self.pending_s, span.trace_id, span.span_id),
            )
            return
        self._resolve(node, cause, out)

    def _resolve(self, node: _Node, cause: _Node | None, out: list[Evidence]) -> None:
        span = node.span
        name = "/".join(span.context)
        counts = dict(cause.counts) if cause is not None and cause.counts else {}
        counts[name] = counts.get(name, 0) + 1
        node.counts = counts
        node.resolved = True
        own_cost = self.span_cost(span) if self.span_cost is not None else 0.0
        if cause is not None:
            node.root = cause.root
            node.cost = cause.cost + own_cost
            node.path = (*cause.path[-15:], span.context.function)
        else:
            node.root = f"{span.trace_id}:{span.span_id}"
            node.cost = own_cost
            node.path = (span.context.function,)
        hops = max(counts[name] - 1, span.lineage)
        if hops >= self.hops:
            self._emit(node, hops, out)
        self._ready.append((span.trace_id, span.span_id))

    def _emit(self, node: _Node, hops: int, out: list[Evidence]) -> None:
        span = node.span
        trace = self._traces[span.trace_id]
        key = (span.context, node.root)
        if hops <= trace.emitted.get(key, 0):
            return
        trace.emitted[key] = hops
        via = span.destination or span.trigger or "unknown"
        out.append(
            Evidence(
                CHAIN,
                span.context,
                span.time,
                node.root,
                hops=hops,
                cost_usd=node.cost,
                via=via,
                path=node.path,
            )
        )

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

    def _close(self, trace_id: str, trace: _Trace, out: list[Evidence]) -> None:
        for node in list(trace.nodes.values()):
            if node.is_invocation and not node.resolved:
                self._resolve(node, None, out)
                self._drain(out)
        ended = trace.last_time + self.trace_ttl_s
        for (context, chain), hops in sorted(trace.emitted.items()):
            out.append(Evidence(CHAIN_ENDED, context, ended, chain, hops=hops))
        del self._traces[trace_id]
        for ref in [r for r in self._waiting if r[0] == trace_id]:
            del self._waiting[ref]


_STATE_FIELDS = (
    "hops",
    "trace_ttl_s",
    "pending_s",
    "_traces",
    "_expiry",
    "_waiting",
    "_deadlines",
    "_watermark",
    "_ready",
    "dropped_spans",
)
