"""Hand-made event streams for detector tests, and the helpers that build an
engine, feed it and pick its alerts."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace

from detector.alerts import OPENED, Transition
from detector.engine import DetectorConfig, Engine
from detector.evidence import Evidence
from ingest.events import (
    SPAN_KIND_CONSUMER,
    SPAN_KIND_PRODUCER,
    Context,
    Event,
    Invocation,
    Span,
)

CTX = Context("aws", "111122223333", "us-east-1", "resize", "$LATEST")
T0 = 1_772_400_000.0  # 2026-03-01T21:20:00Z, a window boundary
CHEAP = 1e-5
#: Settings of the window-close rules alone, without the per-call sequential
#: tests.
WINDOW_ONLY: dict[str, object] = {"sequential_h": math.inf}


def flat_cost(inv: Invocation) -> float:
    """One ten-thousandth of a dollar per invocation, whatever it did."""
    return 1e-4 * inv.count


def cheap(inv: Invocation) -> float:
    """A hundred-thousandth of a dollar per invocation, whatever it did."""
    return CHEAP * inv.count


def duration_cost(inv: Invocation) -> float:
    """A request fee plus a price per billed millisecond, like the platforms."""
    return (2e-7 + 1e-6 * inv.billed_ms) * inv.count


def no_span_cost(span: Span) -> float:
    return 0.0


def make_engine(
    cost: Callable[[Invocation], float] = flat_cost,
    config: DetectorConfig | None = None,
    *,
    span_cost: Callable[[Span], float] = no_span_cost,
    **overrides: object,
) -> Engine:
    """An engine that prices invocations with ``cost`` and spans with
    ``span_cost``; ``overrides`` set fields of ``config`` (the defaults if none)."""
    if config is None:
        config = DetectorConfig(**overrides)  # type: ignore[arg-type]
    elif overrides:
        config = replace(config, **overrides)  # type: ignore[arg-type]
    return Engine(config, invocation_cost=cost, span_cost=span_cost)


def opened(transitions: list[Transition], kind: str | None = None) -> list[Transition]:
    """The alerts opened, of ``kind`` only when one is given."""
    return [t for t in transitions if t.event == OPENED and kind in (None, t.kind)]


def run(
    engine: Engine, events: Iterable[Event], flush: bool = True
) -> list[Transition]:
    """Like ``feed``, but in time order whatever order the events come in."""
    return feed(engine, sorted(events, key=lambda e: e.time), flush)


def feed(
    engine: Engine, events: Iterable[Event], flush: bool = True
) -> list[Transition]:
    """Feed events in the order given on one partition; the transitions.

    The evidence the engine passes on is routed back to it, as the daemon
    does when there is a single partition.
    """
    out: list[Transition] = []
    for event in events:
        engine.process(event, 0)
        out.extend(_settle(engine))
    if flush:
        engine.flush()
        out.extend(_settle(engine))
    return out


def _everything(evidence: Evidence) -> bool:
    return True


def feed_partitions(
    engine: Engine,
    read: Iterable[tuple[int, Event]],
    evidence_partition: int = 9,
    keep: Callable[[Evidence], bool] = _everything,
) -> list[Transition]:
    """Feed (partition, event) pairs in the order given, then flush; the
    transitions.

    The evidence the trace partitions pass on goes to one context
    partition, as the daemon routes it by context; ``keep`` drops some.
    """
    out: list[Transition] = []

    def route() -> None:
        for evidence in engine.take_evidence():
            if keep(evidence):
                engine.process_evidence(evidence, evidence_partition)
        out.extend(engine.take_transitions())

    for partition, event in read:
        engine.process(event, partition)
        route()
    engine.flush()
    route()
    return out


def _settle(engine: Engine) -> list[Transition]:
    for evidence in engine.take_evidence():
        engine.process_evidence(evidence, 0)
    return engine.take_transitions()


def steady(
    rate_per_s: float,
    start: float,
    seconds: float,
    context: Context = CTX,
    seed: int = 1,
) -> Iterator[Invocation]:
    """Invocations at a steady average rate, with Poisson-like jitter."""
    rng = random.Random(seed)
    t = start
    end = start + seconds
    n = 0
    while True:
        t += rng.expovariate(rate_per_s)
        if t >= end:
            return
        n += 1
        yield Invocation(context, t, f"req-{seed}-{n}", 100.0, 100.0, 128)


def _success(i: int) -> str:
    return "success"


def regular(
    start: float,
    seconds: float,
    per_s: float = 1.0,
    tag: str = "r",
    billed_ms: float | Callable[[int], float] = 100.0,
    status: Callable[[int], str] = _success,
    context: Context = CTX,
) -> list[Invocation]:
    """Evenly spaced invocations, half a gap off ``start`` (so off the window
    boundaries), the i-th billed ``billed_ms`` (or ``billed_ms(i)``) and
    running half a millisecond less, its status ``status(i)``."""
    gap = 1.0 / per_s
    out: list[Invocation] = []
    for i in range(round(seconds * per_s)):
        billed = billed_ms(i) if callable(billed_ms) else billed_ms
        out.append(
            Invocation(
                context,
                start + gap / 2 + i * gap,
                # The start is in the id so that two runs of one tag differ.
                f"{tag}-{start}-{i}",
                billed - 0.5,
                billed,
                128,
                status=status(i),
            )
        )
    return out


#: The bursty context of the burst tests: half a call a second at CHEAP
#: (0.018 USD/h), with bursts of BURST_S seconds at BURST_PER_S (about 1
#: USD/h over a whole window, a warning's worth above the base rate and
#: under a critical one).
BASE_PER_S = 0.5
BURST_PER_S = 30.0
BURST_S = 15.0


def bursty_stream(
    bursts: Sequence[float] = (),
    until: float = 2400.0,
    extra: Sequence[Invocation] = (),
) -> list[Event]:
    """The base rate from T0 to ``until`` seconds, bursts of BURST_S seconds
    at BURST_PER_S starting at the offsets given, and ``extra`` calls."""
    events: list[Invocation] = regular(T0, until, BASE_PER_S, "base")
    for n, at in enumerate(bursts):
        events.extend(regular(T0 + at, BURST_S, BURST_PER_S, f"burst{n}"))
    events.extend(extra)
    return sorted(events, key=lambda e: e.time)


def sqs_loop(
    function: Context | list[Context],
    hops: int,
    start: float,
    trace_id: str = "ab" * 16,
    gap_s: float = 0.5,
    queue: str = "orders",
) -> list[Span]:
    """A function that re-sends to its own queue: hops+1 invocations.

    Given several functions, the chain cycles through them (A -> B -> A).
    """
    cycle = function if isinstance(function, list) else [function]
    spans: list[Span] = []
    parent = ""
    t = start
    for i in range(hops + 1):
        function = cycle[i % len(cycle)]
        consumer = f"{2 * i + 1:016x}"
        producer = f"{2 * i + 2:016x}"
        links = ((trace_id, parent),) if parent else ()
        spans.append(
            Span(
                function,
                t,
                t + 0.2,
                trace_id,
                consumer,
                parent,
                f"{queue} process",
                SPAN_KIND_CONSUMER,
                links,
                "pubsub",
                f"inv-{i}",
                "aws_sqs",
                queue,
            )
        )
        spans.append(
            Span(
                function,
                t + 0.1,
                t + 0.15,
                trace_id,
                producer,
                consumer,
                f"{queue} send",
                SPAN_KIND_PRODUCER,
                (),
                "",
                "",
                "aws_sqs",
                queue,
            )
        )
        parent = producer
        t += gap_s
    return spans
