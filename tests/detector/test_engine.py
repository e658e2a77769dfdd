"""The detector on hand-made streams: spikes, recursion, checkpoints."""

from __future__ import annotations

import itertools
import pickle

import pytest

from detector.alerts import CRITICAL, OPENED, RESOLVED, UPDATED, WARNING, Transition
from detector.engine import COST_SPIKE, RECURSIVE_TRIGGER, Engine
from ingest.events import (
    SPAN_KIND_CONSUMER,
    SPAN_KIND_PRODUCER,
    Context,
    Event,
    Invocation,
    Span,
)
from tests.detector.streams import (
    CTX,
    T0,
    flat_cost,
    make_engine,
    opened,
    run,
    sqs_loop,
    steady,
)

WARM_S = 900.0  # fifteen minutes of baseline before anything happens


def spike_stream(factor: float, spike_s: float = 120.0) -> list[Event]:
    base = list(steady(10.0, T0, WARM_S))
    spike = list(steady(10.0 * factor, T0 + WARM_S, spike_s, seed=2))
    after = list(steady(10.0, T0 + WARM_S + spike_s, 300.0, seed=3))
    return [*base, *spike, *after]


def test_steady_traffic_raises_nothing() -> None:
    transitions = run(make_engine(), list(steady(10.0, T0, 3 * WARM_S)))
    assert transitions == []


def test_flood_fires_before_its_window_closes_and_resolves() -> None:
    # Ninety windows old, the context is young enough for the cold-start rule
    # of bursts to open the flood as a warning for a burst's length: left out.
    transitions = run(make_engine(burst_cold_windows=0), spike_stream(20.0))
    kinds = [(t.kind, t.event) for t in transitions]
    assert kinds[0] == (COST_SPIKE, OPENED)
    opened = transitions[0]
    assert opened.severity == CRITICAL
    assert opened.evidence["early"] is True
    onset = T0 + WARM_S
    # Early firing: the alert is raised inside the first window of the flood.
    assert onset <= opened.at < onset + 10.0
    assert kinds[-1] == (COST_SPIKE, RESOLVED)
    resolved = transitions[-1]
    assert resolved.at > onset + 120.0
    # 20x of 3.6 USD/h for two minutes: about 2.4 USD spent while open.
    assert 1.5 < resolved.cost_usd < 3.5


def test_three_times_baseline_warns_within_one_window() -> None:
    # Ninety windows old, the context is young enough for the cold-start rule
    # of bursts to hold the warning back for a burst's length: left out here.
    transitions = run(make_engine(burst_cold_windows=0), spike_stream(3.5))
    opened = [t for t in transitions if t.event == OPENED]
    assert len(opened) == 1
    assert opened[0].severity == WARNING
    assert opened[0].at <= T0 + WARM_S + 20.0


def test_rate_below_the_ratio_does_not_alert() -> None:
    # The spike rule's ratio: the rise path's sequential test, which warns
    # on 1.8 times as many calls for two minutes at this rate, is left out.
    assert run(make_engine(rise_false_alert_hours=0.0), spike_stream(1.8)) == []


def test_no_alert_before_the_baseline_is_warm() -> None:
    events = [*steady(10.0, T0, 60.0), *steady(200.0, T0 + 60.0, 60.0, seed=5)]
    assert run(make_engine(), events) == []


def test_learning_pauses_under_alert() -> None:
    engine = make_engine()
    run(engine, spike_stream(20.0, spike_s=600.0), flush=False)
    state = engine._parts[0].contexts[CTX]
    # Ten minutes of a 20x flood did not teach the baseline it is normal.
    assert state.baseline.mean < 2 * 3.6


def test_recursion_alerts_at_three_reentries_not_two() -> None:
    two = run(make_engine(), list(sqs_loop(CTX, hops=2, start=T0)))
    assert two == []
    three = run(make_engine(), list(sqs_loop(CTX, hops=3, start=T0)))
    opened = [t for t in three if t.event == OPENED]
    assert [t.kind for t in opened] == [RECURSIVE_TRIGGER]
    assert opened[0].evidence["hops"] == 3
    assert opened[0].evidence["via"] == "orders"
    assert opened[0].severity == WARNING
    assert three[-1].event == RESOLVED


def sqs_tree(fan: list[int], start: float = T0) -> list[Span]:
    """A function whose every invocation of generation g sends ``fan[g]``
    messages to its own queue, each consumed by a new invocation of it; the
    last generation sends nothing. One trace, linked as SQS links them."""
    trace = "cd" * 16
    spans: list[Span] = []
    parents = [""]
    ids = itertools.count(1)
    for g in range(len(fan) + 1):
        t = start + 0.5 * g
        sends = fan[g] if g < len(fan) else 0
        children: list[str] = []
        for parent in parents:
            consumer = f"{next(ids):016x}"
            links = ((trace, parent),) if parent else ()
            spans.append(
                Span(
                    CTX, t, t + 0.2, trace, consumer, parent, "orders process",
                    SPAN_KIND_CONSUMER, links, "pubsub", f"inv-{consumer}",
                    "aws_sqs", "orders",
                )
            )  # fmt: skip
            for k in range(sends):
                producer = f"{next(ids):016x}"
                spans.append(
                    Span(
                        CTX, t + 0.1 + 0.01 * k, t + 0.15, trace, producer,
                        consumer, "orders send", SPAN_KIND_PRODUCER, (), "", "",
                        "aws_sqs", "orders",
                    )
                )  # fmt: skip
                children.append(producer)
        parents = children
    return spans


def test_a_loop_that_doubles_twice_warns_at_two_reentries() -> None:
    doubled = [t for t in run(make_engine(), sqs_tree([2, 2])) if t.event == OPENED]
    assert [(t.kind, t.severity) for t in doubled] == [(RECURSIVE_TRIGGER, WARNING)]
    assert doubled[0].evidence["hops"] == 2
    assert doubled[0].evidence["fan_out"] == 2
    # One re-send per call (a bounded retry), or a fan-out at one hop only,
    # is no loop at two re-entries; a single doubling is not either.
    assert run(make_engine(), sqs_tree([1, 1])) == []
    assert run(make_engine(), sqs_tree([1, 2])) == []
    assert run(make_engine(), sqs_tree([2, 1])) == []
    assert run(make_engine(), sqs_tree([2])) == []


def test_long_loop_escalates_to_critical() -> None:
    transitions = run(make_engine(), list(sqs_loop(CTX, hops=12, start=T0)))
    severities = [t.severity for t in transitions if t.kind == RECURSIVE_TRIGGER]
    assert severities[0] == WARNING
    assert CRITICAL in severities


def test_a_loop_starts_with_its_earliest_chain_whatever_partition_is_read_first() -> (
    None
):
    # Two chains of one loop on two trace partitions; the later one is read
    # first, as a daemon may when one partition runs ahead of the other.
    early = sqs_loop(CTX, hops=4, start=T0, trace_id="01" * 16)
    late = sqs_loop(CTX, hops=4, start=T0 + 40.0, trace_id="02" * 16)
    engine = make_engine()
    out: list[Transition] = []
    for partition, spans in ((1, late), (0, early)):
        for span in spans:
            engine.process(span, partition)
            for evidence in engine.take_evidence():
                engine.process_evidence(evidence, 2)
            out.extend(engine.take_transitions())
    assert [(t.event, t.starts_at) for t in out[:2]] == [
        (OPENED, late[0].time + 1.5),
        (UPDATED, early[0].time + 1.5),
    ]
    in_order = run(make_engine(), [*early, *late], flush=False)
    assert out[-1].starts_at == in_order[0].starts_at


def test_a_loop_resolves_when_its_last_chain_ends_whatever_is_read_first() -> None:
    early = sqs_loop(CTX, hops=4, start=T0, trace_id="01" * 16)
    late = sqs_loop(CTX, hops=4, start=T0 + 40.0, trace_id="02" * 16)
    # A short unrelated trace moves partition 1 on, so that the end of the
    # late chain is read before the end of the early one.
    other = CTX._replace(function="thumbs")
    onward = sqs_loop(other, hops=1, start=T0 + 400.0, trace_id="03" * 16)
    engine = make_engine()
    out: list[Transition] = []
    for partition, spans in ((0, early), (1, [*late, *onward])):
        for span in spans:
            engine.process(span, partition)
            for evidence in engine.take_evidence():
                engine.process_evidence(evidence, 2)
            out.extend(engine.take_transitions())
    engine.flush()
    for evidence in engine.take_evidence():
        engine.process_evidence(evidence, 2)
    out.extend(engine.take_transitions())
    resolved = [t for t in out if t.event == RESOLVED and t.context == CTX]
    assert [t.at for t in resolved] == [max(s.end for s in late) + 120.0]


def test_mutual_recursion_counts_each_function() -> None:
    other = CTX._replace(function="notify")
    transitions = run(make_engine(), list(sqs_loop([CTX, other], hops=7, start=T0)))
    opened = {t.context.function for t in transitions if t.event == OPENED}
    assert opened == {"resize", "notify"}


def test_spans_out_of_order_still_link_the_chain() -> None:
    spans = sqs_loop(CTX, hops=5, start=T0)
    engine = make_engine()
    # The export order of real tracers: children end, and arrive, first.
    shuffled = sorted(spans, key=lambda s: (s.end, -s.time), reverse=True)
    out: list[Transition] = []
    for span in shuffled:
        engine.process(span, 0)
        for ev in engine.take_evidence():
            engine.process_evidence(ev, 0)
        out.extend(engine.take_transitions())
    assert any(t.kind == RECURSIVE_TRIGGER and t.event == OPENED for t in out)


def test_redelivered_spans_change_nothing() -> None:
    spans = sqs_loop(CTX, hops=4, start=T0)
    once = run(make_engine(), list(spans))
    twice = run(make_engine(), [s for s in spans for _ in range(2)])
    assert [t.to_json() for t in once] == [t.to_json() for t in twice]


def _mixed_stream() -> list[Event]:
    spans: list[Span] = sqs_loop(
        CTX._replace(function="order-processor"), hops=6, start=T0 + WARM_S + 30
    )
    return [*spike_stream(20.0), *spans]


def test_same_input_gives_same_alerts() -> None:
    first = run(make_engine(), _mixed_stream())
    second = run(make_engine(), _mixed_stream())
    assert first and [t.to_json() for t in first] == [t.to_json() for t in second]


@pytest.mark.parametrize("cut", [0.3, 0.62, 0.9])
def test_snapshot_and_restore_resume_with_the_same_state(cut: float) -> None:
    events = sorted(_mixed_stream(), key=lambda e: e.time)
    whole = run(make_engine(), events)
    split = int(len(events) * cut)
    first = make_engine()
    head = run(first, events[:split], flush=False)
    blob = first.snapshot(0)
    second = make_engine()
    second.restore(0, blob)
    tail = run(second, events[split:])
    assert [t.to_json() for t in head + tail] == [t.to_json() for t in whole]


def _legacy_blob(blob: bytes) -> bytes:
    """A snapshot as written before windows to close were kept by their end."""
    version, part = pickle.loads(blob)
    ticket = 0
    for end in sorted(part.ends):
        for state, start in part.closing[end]:
            ticket += 1
            part.due.append((end, ticket, state.context, start))
    part.ticket = ticket
    del part.closing, part.ends
    return pickle.dumps((version, part), protocol=5)


def test_a_checkpoint_with_the_old_heap_of_windows_resumes_the_same() -> None:
    events = sorted(_mixed_stream(), key=lambda e: e.time)
    whole = run(make_engine(), events)
    split = int(len(events) * 0.62)
    first = make_engine()
    head = run(first, events[:split], flush=False)
    legacy = _legacy_blob(first.snapshot(0))
    assert pickle.loads(legacy)[1].due, "the cut must leave windows open"
    second = make_engine()
    second.restore(0, legacy)
    tail = run(second, events[split:])
    assert [t.to_json() for t in head + tail] == [t.to_json() for t in whole]


def test_state_is_kept_per_partition() -> None:
    engine = make_engine()
    other = Context("aws", "1", "eu-west-1", "other")
    engine.process(next(steady(1.0, T0, 10.0)), 0)
    engine.process(next(steady(1.0, T0, 10.0, context=other)), 1)
    engine.drop(0)
    assert engine.tracked_contexts == 1
    restored = make_engine()
    restored.restore(1, engine.snapshot(1))
    assert restored.tracked_contexts == 1


def test_late_events_are_counted_not_lost() -> None:
    engine = make_engine()
    events = list(itertools.islice(steady(10.0, T0, 100.0), 500))
    run(engine, events, flush=False)
    late = events[0]
    engine.process(late, 0)
    assert engine.late_events == 1
    assert engine._parts[0].contexts[CTX].total_cost == pytest.approx(
        (len(events) + 1) * 1e-4
    )


def test_one_run_of_a_rare_costly_timer_is_not_a_spike() -> None:
    engine = make_engine(lambda inv: 0.01)
    timer = [
        inv
        for i in range(12)
        for inv in steady(1.0, T0 + 300.0 * i, 1.0, seed=i)  # one run every 5 min
    ]
    assert timer and run(engine, timer) == []


def test_inflated_durations_at_the_same_rate_are_a_spike() -> None:
    def cost(inv: Invocation) -> float:
        return 1e-3 if inv.time >= T0 + WARM_S else 1e-4

    engine = make_engine(cost)
    transitions = run(engine, list(steady(10.0, T0, WARM_S + 120.0)))
    assert [(t.kind, t.event) for t in transitions][:1] == [(COST_SPIKE, OPENED)]


def test_evidence_round_trips_through_its_wire_format() -> None:
    from detector.evidence import CHAIN, Evidence, decode_evidence, encode_evidence

    evidence = Evidence(CHAIN, CTX, T0, "t:s", 4, 0.5, "orders", ("a", "b"))
    assert decode_evidence(encode_evidence(evidence), "test") == evidence


def _intake_stream() -> list[Event]:
    loop = CTX._replace(function="order-processor")
    events = [
        *spike_stream(30.0),
        *sqs_loop(loop, hops=8, start=T0 + WARM_S + 30.0, gap_s=2.0),
    ]
    return sorted(events, key=lambda e: e.time)


def test_intake_takes_a_batch_as_process_takes_each_event() -> None:
    events = _intake_stream()
    by_process = run(make_engine(), events)
    engine = make_engine()
    take = engine.intake(0)
    by_intake: list[Transition] = []

    def settle() -> None:
        for evidence in engine.take_evidence():
            engine.process_evidence(evidence, 0)
        by_intake.extend(engine.take_transitions())

    for event in events:
        take(event)
        settle()
    engine.flush()
    settle()
    assert opened(by_process, COST_SPIKE) and opened(by_process, RECURSIVE_TRIGGER)
    assert [t.to_json() for t in by_intake] == [t.to_json() for t in by_process]
    assert engine.events == len(events)


def test_intake_of_an_engine_that_overrides_process_calls_it() -> None:
    class Marking(Engine):
        def __init__(self) -> None:
            super().__init__(make_engine().config, invocation_cost=flat_cost)
            self.seen: list[tuple[float, int]] = []

        def process(self, event: Event, partition: int) -> None:
            self.seen.append((event.time, partition))
            super().process(event, partition)

    engine = Marking()
    events = list(steady(10.0, T0, 60.0))
    take = engine.intake(2)
    for event in events:
        take(event)
    assert engine.seen == [(e.time, 2) for e in events]
    assert engine.events == len(events)
