"""A synthetic workload for the benchmarks, written in the real formats.

Many contexts at steady rates with a few traced SQS chains, so that every
stage of the detector does its ordinary work per event.
"""

from __future__ import annotations

import gzip
import random
from collections.abc import Iterator
from pathlib import Path

import orjson

from ingest.events import (
    SPAN_KIND_CONSUMER,
    SPAN_KIND_PRODUCER,
    Context,
    Event,
    Invocation,
    Span,
)

T0 = 1_772_400_000.0
ACCOUNT = "111122223333"
REGION = "us-east-1"


def contexts(count: int) -> list[Context]:
    return [Context("aws", ACCOUNT, REGION, f"fn-{i:05d}") for i in range(count)]


def invocations(total: int, n_contexts: int, seed: int = 7) -> list[Invocation]:
    """``total`` invocations over ``n_contexts`` contexts, in time order."""
    rng = random.Random(seed)
    ctxs = contexts(n_contexts)
    weights = [1.0 / (i + 1) for i in range(n_contexts)]
    picks = rng.choices(range(n_contexts), weights=weights, k=total)
    span_s = max(total / 200.0, 60.0)  # about 200 invocations per second
    times = sorted(T0 + rng.random() * span_s for _ in range(total))
    out = []
    for i, (t, c) in enumerate(zip(times, picks, strict=True)):
        duration = rng.lognormvariate(4.5, 0.8)
        out.append(
            Invocation(
                ctxs[c],
                round(t, 3),
                f"{i:08x}-0000-4000-8000-{c:012x}",
                round(duration, 2),
                float(int(duration) + 1),
                256,
                64,
            )
        )
    return out


def chains(count: int, hops: int, start: float) -> list[Span]:
    """SQS chains through one function, each ``hops`` re-entries long."""
    spans: list[Span] = []
    fn = Context("aws", ACCOUNT, REGION, "looper", "$LATEST")
    for c in range(count):
        trace = f"{c:032x}"
        parent = ""
        t = start + c
        for i in range(hops + 1):
            consumer, producer = f"{2 * i + 1:016x}", f"{2 * i + 2:016x}"
            links = ((trace, parent),) if parent else ()
            spans.append(
                Span(
                    fn,
                    t,
                    t + 0.2,
                    trace,
                    consumer,
                    parent,
                    "q process",
                    SPAN_KIND_CONSUMER,
                    links,
                    "pubsub",
                    f"{c}-{i}",
                    "aws_sqs",
                    "q",
                )
            )
            spans.append(
                Span(
                    fn,
                    t + 0.1,
                    t + 0.15,
                    trace,
                    producer,
                    consumer,
                    "q send",
                    SPAN_KIND_PRODUCER,
                    (),
                    "",
                    "",
                    "aws_sqs",
                    "q",
                )
            )
            parent = producer
            t += 0.5
    return spans


def workload(total: int, n_contexts: int) -> list[Event]:
    invs = invocations(total, n_contexts)
    spans = chains(max(total // 2000, 1), 5, invs[0].time)
    merged: list[Event] = [*invs, *spans]
    merged.sort(key=lambda e: e.time)
    return merged


def report_line(inv: Invocation) -> str:
    return (
        f"REPORT RequestId: {inv.request_id}\tDuration: {inv.duration_ms:.2f} ms\t"
        f"Billed Duration: {int(inv.billed_ms)} ms\tMemory Size: {inv.memory_mb} MB\t"
        f"Max Memory Used: {inv.max_memory_mb} MB\t"
    )


def cloudwatch_payloads(
    invs: list[Invocation], per_payload: int = 50
) -> Iterator[bytes]:
    """Decoded CloudWatch Logs subscription payloads, one function each."""
    by_fn: dict[Context, list[Invocation]] = {}
    for inv in invs:
        batch = by_fn.setdefault(inv.context, [])
        batch.append(inv)
        if len(batch) >= per_payload:
            yield _payload(inv.context, batch)
            by_fn[inv.context] = []
    for ctx, batch in by_fn.items():
        if batch:
            yield _payload(ctx, batch)


def _payload(ctx: Context, batch: list[Invocation]) -> bytes:
    return orjson.dumps(
        {
            "messageType": "DATA_MESSAGE",
            "owner": ctx.account,
            "logGroup": f"/aws/lambda/{ctx.function}",
            "logStream": f"2026/03/01/[{ctx.qualifier}]0123456789abcdef",
            "subscriptionFilters": ["dowguard"],
            "logEvents": [
                {
                    "id": f"{i:056d}",
                    "timestamp": int(inv.time * 1000),
                    "message": report_line(inv),
                }
                for i, inv in enumerate(batch)
            ],
        }
    )


def write_cloudwatch(path: Path, invs: list[Invocation]) -> int:
    count = 0
    with gzip.open(path, "wb", compresslevel=1) as fh:
        for payload in cloudwatch_payloads(invs):
            fh.write(payload + b"\n")
            count += 1
    return count
