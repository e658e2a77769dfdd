"""Hand-made event streams for detector tests."""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator

from detector.alerts import Transition
from detector.engine import Engine
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


def flat_cost(inv: Invocation) -> float:
    """One ten-thousandth of a dollar per invocation, whatever it did."""
    return 1e-4 * inv.count


def no_span_cost(span: Span) -> float:
    return 0.0


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
