"""Distinct triggers and callers of a context's windows, from its spans."""

from __future__ import annotations

import copyreg
import io
import math
import pickle
from collections.abc import Iterable
from dataclasses import fields
from typing import Any

import pytest

from detector.engine import SNAPSHOT_VERSION, DetectorConfig, Engine, _Context
from detector.evidence import SPAN_WINDOW, Evidence, decode_evidence, encode_evidence
from detector.recursion import TraceStage
from detector.spanwindows import (
    SKETCH_BITS,
    SKETCH_WAIT_S,
    caller_key,
    distinct,
    sketch_bit,
)
from dowguard.errors import ParseError
from ingest.events import (
    SPAN_KIND_CLIENT,
    SPAN_KIND_CONSUMER,
    SPAN_KIND_PRODUCER,
    SPAN_KIND_SERVER,
    Context,
    Event,
    Invocation,
    Span,
)
from tests.detector.streams import CTX, T0, flat_cost, no_span_cost

WINDOW = 10.0
#: The window whose spans are counted, after 20 warm-up windows.
W = T0 + 200.0
#: The window that reads W's sketches, SKETCH_WAIT_S later.
READ = W + SKETCH_WAIT_S
CONFIG = DetectorConfig(online_model=False, baseline_warmup=10)
#: The context partition; traces go to partitions 0 to 2.
HOME = 9
CALLERS = [
    Context("aws", "111122223333", "us-east-1", name, "$LATEST")
    for name in ("checkout", "refunds", "billing")
]
TICKER = Context("aws", "111122223333", "us-east-1", "ticker", "$LATEST")

Tap = dict[float, dict[str, float]]


def engine(tap: Tap) -> Engine:
    e = Engine(CONFIG, invocation_cost=flat_cost, span_cost=no_span_cost)
    e.on_window = lambda context, start, x: tap.__setitem__(start, x)
    return e


def calls(start: float, seconds: float) -> list[Invocation]:
    """Two calls a second of the context watched, each 100 ms."""
    return [
        Invocation(CTX, start + i / 2 + 0.25, f"r{start}-{i}", 99.0, 100.0, 128)
        for i in range(int(seconds * 2))
    ]


def _call(caller: Context, at: float, n: int, queued: bool) -> list[Span]:
    """One caller's invocation calling the watched function: through a
    direct call (the callee's parent is the caller's client span) or a
    queue (the callee links to the caller's producer span)."""
    tid = f"{n:032x}"
    root, out = f"{1:016x}", f"{2:016x}"
    callee = f"{3:016x}"
    spans = [
        Span(
            caller,
            at,
            at + 0.5,
            tid,
            root,
            "",
            "POST /",
            SPAN_KIND_SERVER,
            trigger="http",
            invocation_id=f"c{n}",
        ),
    ]
    if queued:
        spans.append(
            Span(
                caller,
                at + 0.1,
                at + 0.12,
                tid,
                out,
                root,
                "send",
                SPAN_KIND_PRODUCER,
                messaging_system="aws_sqs",
                destination="orders",
            )
        )
        spans.append(
            Span(
                CTX,
                at + 0.3,
                at + 0.4,
                tid,
                callee,
                "",
                "process",
                SPAN_KIND_CONSUMER,
                links=((tid, out),),
                trigger="pubsub",
                invocation_id=f"q{n}",
                messaging_system="aws_sqs",
                destination="orders",
            )
        )
    else:
        spans.append(
            Span(caller, at + 0.1, at + 0.3, tid, out, root, "call", SPAN_KIND_CLIENT)
        )
        spans.append(
            Span(
                CTX,
                at + 0.15,
                at + 0.25,
                tid,
                callee,
                out,
                "GET /",
                SPAN_KIND_SERVER,
                trigger="http",
                invocation_id=f"h{n}",
            )
        )
    return spans


def traced() -> list[tuple[int, Span]]:
    """Three callers in window W, two by call and one by queue (two
    triggers), each trace on its own partition; and a timer's invocation
    every second on every partition, so that each partition's watermark
    moves on as a busy daemon's would."""
    out: list[tuple[int, Span]] = []
    for n, caller in enumerate(CALLERS):
        out += [(n, s) for s in _call(caller, W + 2.0 + n, n + 1, queued=n == 2)]
    for i in range(80):
        at = W - 10.0 + i * 0.5
        tid = f"{1000 + i:032x}"
        out.append(
            (
                i % 3,
                Span(
                    TICKER,
                    at,
                    at + 0.1,
                    tid,
                    f"{1:016x}",
                    "",
                    "tick",
                    SPAN_KIND_SERVER,
                    trigger="timer",
                    invocation_id=f"t{i}",
                ),
            )
        )
    return out


def stream() -> list[tuple[int, Event]]:
    """The watched context's calls on its partition, the spans on theirs,
    in event-time order."""
    events: list[tuple[int, Event]] = [(HOME, c) for c in calls(T0, 300.0)]
    events += traced()
    return sorted(events, key=lambda pe: pe[1].time)


def feed(
    e: Engine,
    events: Iterable[tuple[int, Event]],
    delay_s: float = 0.0,
    home: int = HOME,
) -> None:
    """Feed events at their partitions; evidence reaches the context's
    partition ``home`` ``delay_s`` of event time after it was sent, as on
    the evidence topic of a daemon that lags."""
    queued: list[tuple[float, Evidence]] = []
    now = -math.inf
    for partition, event in events:
        now = max(now, event.time)
        e.process(event, partition)
        queued += [(now, ev) for ev in e.take_evidence()]
        while queued and queued[0][0] + delay_s <= now:
            e.process_evidence(queued.pop(0)[1], home)


def counts(x: dict[str, float]) -> tuple[float, float]:
    return (
        round(math.expm1(x["distinct_triggers"]), 6),
        round(math.expm1(x["distinct_callers"]), 6),
    )


def run_all(
    events: list[tuple[int, Event]], delay_s: float = 0.0, home: int = HOME
) -> tuple[Engine, Tap]:
    tap: Tap = {}
    e = engine(tap)
    feed(e, events, delay_s, home)
    return e, tap


def test_three_callers_and_two_triggers_count_in_a_later_windows_features() -> None:
    # No two of the callers or triggers share a bit: the counts are exact.
    callers = {sketch_bit(caller_key(c)) for c in CALLERS}
    triggers = {sketch_bit("http\x1f"), sketch_bit("pubsub\x1forders")}
    assert len(callers) == 3 and len(triggers) == 2
    # Everything on one partition, as a single-partition daemon reads it.
    _, tap = run_all([(0, event) for _, event in stream()], home=0)
    # The window SKETCH_WAIT_S on reads W's sketch; W itself and the ones
    # around the reading window read windows without spans of the context.
    assert counts(tap[READ]) == (2.0, 3.0)
    for start in (W, W + WINDOW, READ - WINDOW, READ + WINDOW):
        assert "distinct_callers" not in tap[start]
    # Windows of the context without spans have the rest of their features.
    assert "cost_rate_ratio" in tap[W]


def test_the_counts_arrive_across_partitions_whatever_the_evidence_delay() -> None:
    events = stream()
    assert {p for p, e in events if isinstance(e, Span)} == {0, 1, 2}
    first, tap = run_all(events)
    assert counts(tap[READ]) == (2.0, 3.0)
    assert first.late_span_windows == 0
    # The callers' and the timer's spans have no invocation records here.
    assert first.unmatched_span_windows > 0
    for delay in (5.0, 15.0, 30.0):
        _, later = run_all(events, delay)
        assert later == tap


def test_callers_of_one_function_and_of_the_same_caller_are_counted_once() -> None:
    # The same caller twice, and a second call from another: two callers.
    events = [(HOME, c) for c in calls(T0, 300.0)]
    for n, at in enumerate((W + 1.0, W + 4.0)):
        events += [(0, s) for s in _call(CALLERS[0], at, 10 + n, queued=False)]
    events += [(1, s) for s in _call(CALLERS[1], W + 6.0, 20, queued=False)]
    events += [p for p in traced() if p[1].context == TICKER]
    _, tap = run_all(sorted(events, key=lambda pe: pe[1].time))
    assert counts(tap[READ]) == (1.0, 2.0)


def _snapshots(e: Engine) -> dict[int, bytes]:
    return {p: e.snapshot(p) for p in (0, 1, 2, HOME)}


@pytest.mark.parametrize("cut", [W + 3.0, W + 18.0])
def test_a_snapshot_and_restore_in_the_middle_keeps_the_counts(cut: float) -> None:
    events = stream()
    _, whole = run_all(events)
    at = next(i for i, (_, e) in enumerate(events) if e.time >= cut)
    head: Tap = {}
    first = engine(head)
    feed(first, events[:at])
    if cut < W + 10.0:
        # The trace partitions still hold the window's sketches.
        assert sum(first._parts[p].traces.windows.open_sketches for p in (0, 1, 2))
    else:
        # The context holds them, for its next window to read.
        assert first._parts[HOME].contexts[CTX].spans
    tail: Tap = {}
    second = engine(tail)
    for partition, blob in _snapshots(first).items():
        second.restore(partition, blob)
    feed(second, events[at:])
    assert counts({**head, **tail}[READ]) == (2.0, 3.0)
    assert {**head, **tail} == whole


class _Before9(pickle.Pickler):
    """Pickles a partition as version 8 did: contexts without span sketches
    and a trace stage without its window sketches."""

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is _Context:
            slots = {f.name: getattr(obj, f.name) for f in fields(obj)}
            del slots["spans"]
            return copyreg.__newobj__, (_Context,), (None, slots)  # type: ignore[attr-defined]
        if type(obj) is TraceStage:
            state = obj.__getstate__()
            del state["windows"]
            return copyreg.__newobj__, (TraceStage,), state  # type: ignore[attr-defined]
        return NotImplemented


def _version_8(e: Engine, partition: int) -> bytes:
    out = io.BytesIO()
    _Before9(out, protocol=5).dump((8, e._parts[partition]))
    return out.getvalue()


def test_a_version_8_snapshot_restores_without_sketches() -> None:
    events = stream()
    at = next(i for i, (_, e) in enumerate(events) if e.time >= W + 18.0)
    first = engine({})
    feed(first, events[:at])
    version, _ = pickle.loads(first.snapshot(HOME))
    assert version == SNAPSHOT_VERSION > 8
    tap: Tap = {}
    second = engine(tap)
    for partition in (0, 1, 2, HOME):
        second.restore(partition, _version_8(first, partition))
    state = second._parts[HOME].contexts[CTX]
    assert state.spans is None
    assert second._parts[0].traces.windows.window_s == WINDOW
    feed(second, events[at:])
    # The sketches were not in the old checkpoint: the window misses them,
    # and has every other feature.
    assert "distinct_triggers" not in tap[READ]
    assert "cost_rate_ratio" in tap[READ]


def test_a_sketch_after_the_window_that_reads_it_closed_is_counted_late() -> None:
    tap: Tap = {}
    e = engine(tap)
    feed(e, [(HOME, c) for c in calls(T0, 300.0)])
    late = Evidence(SPAN_WINDOW, CTX, W, "", triggers=1, callers=2)
    e.process_evidence(late, HOME)
    assert e.late_span_windows == 1
    assert e._parts[HOME].contexts[CTX].spans is None


def test_a_context_keeps_a_few_windows_of_sketches() -> None:
    e = engine({})
    feed(e, [(HOME, c) for c in calls(T0, 30.0)])
    assert e._span_lag == 4
    for i in range(10):
        sketch = Evidence(SPAN_WINDOW, CTX, T0 + 30.0 + i * WINDOW, "", triggers=1)
        e.process_evidence(sketch, HOME)
    # The four windows of the read lag and two more.
    spans = e._parts[HOME].contexts[CTX].spans
    assert spans is not None and sorted(spans) == [
        T0 + 30.0 + i * WINDOW for i in range(4, 10)
    ]


def test_span_window_evidence_round_trips_with_every_bit() -> None:
    ev = Evidence(SPAN_WINDOW, CTX, W, "", triggers=(1 << 64) - 1, callers=1 << 63)
    back = decode_evidence(encode_evidence(ev), "evidence")
    assert back == ev


@pytest.mark.parametrize("bits", [b"-1", b"18446744073709551616", b"1.5", b'"3"'])
def test_span_window_evidence_with_bits_of_no_sketch_is_refused(bits: bytes) -> None:
    good = encode_evidence(Evidence(SPAN_WINDOW, CTX, W, "", callers=3))
    bad = good.replace(b'"callers":3', b'"callers":' + bits)
    assert bad != good
    with pytest.raises(ParseError, match="callers"):
        decode_evidence(bad, "evidence")


def test_linear_counting_is_exact_for_a_few_keys_and_bounded_when_full() -> None:
    keys = [f"key-{i}" for i in range(200)]
    mask = 0
    seen: set[int] = set()
    for key in keys:
        bit = sketch_bit(key)
        if bit in seen:
            continue
        seen.add(bit)
        mask |= bit
        if len(seen) <= 5:
            assert distinct(mask) == len(seen)
    assert distinct(0) == 0.0
    assert distinct((1 << SKETCH_BITS) - 1) == round(SKETCH_BITS * math.log(64))
    # Many keys: within a third of the truth while bits are left.
    some = 0
    for key in keys[:40]:
        some |= sketch_bit(key)
    assert 40 * 2 / 3 <= distinct(some) <= 40 * 4 / 3


def test_a_trace_partition_bounds_its_open_sketches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import detector.spanwindows as spanwindows

    monkeypatch.setattr(spanwindows, "MAX_OPEN", 2)
    stage = TraceStage(window_s=WINDOW)
    out: list[Evidence] = []
    for n, caller in enumerate(CALLERS):
        for span in _call(caller, W + 1.0 + n, n + 1, queued=False):
            stage.process(span, out)
    assert stage.windows.open_sketches == 2
    # Three callers and the watched function: two pairs left out.
    assert stage.windows.overflow == 2
    stage.flush(out)
    sent = [ev for ev in out if ev.kind == SPAN_WINDOW]
    assert len(sent) == 2 and stage.windows.open_sketches == 0
