"""Metric streams beside logs: minute windows, counted once, cross-checks, fusion."""

from __future__ import annotations

import math
import pickle
import random
from array import array
from collections import Counter

import pytest

from detector.alerts import CRITICAL, OPENED, RESOLVED, WARNING, Transition
from detector.baseline import RobustBaseline
from detector.cost import CostModel, Pricing
from detector.engine import COST_SPIKE, DetectorConfig, Engine
from detector.sources import MetricTrack, Ring, fused_severity
from ingest.events import Context, Event, Invocation, Metric
from tests.detector.streams import CTX, T0, feed, flat_cost, no_span_cost, run, steady

H0 = T0 + 2400.0  # 2026-03-01T22:00:00Z, an hour boundary
METRIC_ONLY = Context("aws", "111122223333", "us-east-1", "thumbnailer", "$LATEST")


def metric_minutes(
    context: Context,
    start: float,
    minutes: int,
    per_minute: float,
    duration_ms: float = 1000.0,
    seed: int = 1,
) -> list[Event]:
    """Invocations and Duration records of a metric stream, minute by minute."""
    rng = random.Random(seed)
    out: list[Event] = []
    for k in range(minutes):
        t = start + 60.0 * k
        n = max(0.0, round(rng.gauss(per_minute, math.sqrt(per_minute))))
        out.append(Metric(context, t, "AWS/Lambda", "Invocations", n, n, 1.0, 1.0))
        total = n * duration_ms
        out.append(Metric(context, t, "AWS/Lambda", "Duration", total, n, 1.0, 1.0))
    return out


def counted(invocations: list[Invocation], factor: float = 1.0) -> list[Event]:
    """The metric stream that matches a log stream (``factor`` times its counts)."""
    per_minute = Counter(inv.time - inv.time % 60.0 for inv in invocations)
    out: list[Event] = []
    for minute, n in sorted(per_minute.items()):
        total = n * factor
        out.append(
            Metric(CTX, minute, "AWS/Lambda", "Invocations", total, total, 1.0, 1.0)
        )
        out.append(
            Metric(CTX, minute, "AWS/Lambda", "Duration", total * 100.0, total, 1, 1)
        )
    return out


def pricing_model(**memory: int) -> CostModel:
    model = Pricing.load().model
    for function, mb in memory.items():
        model.configure(CTX._replace(function=function), memory_mb=mb)
    return model


def priced_engine(model: CostModel | None = None, **overrides: float) -> Engine:
    config = DetectorConfig(**overrides)  # type: ignore[arg-type]
    return Engine(config, flat_cost, no_span_cost, cost_model=model or pricing_model())


def spikes(transitions: list[Transition]) -> list[Transition]:
    return [t for t in transitions if t.kind == COST_SPIKE]


def test_metric_only_spike_is_detected_on_minute_windows() -> None:
    base = metric_minutes(METRIC_ONLY, T0, 40, 1000.0)
    onset = T0 + 40 * 60.0
    flood = metric_minutes(METRIC_ONLY, onset, 5, 10_000.0, seed=2)
    after = metric_minutes(METRIC_ONLY, onset + 300.0, 10, 1000.0, seed=3)
    transitions = spikes(run(priced_engine(), [*base, *flood, *after]))
    assert [t.event for t in transitions][:1] == [OPENED]
    opened = transitions[0]
    # Judged on the whole first minute of the flood, never on an instant.
    assert opened.at == onset + 60.0
    assert opened.evidence["source"] == "metrics"
    assert opened.evidence["window_s"] == 60.0
    assert opened.evidence["ratio"] > 5
    # 1,000 calls of 1 s at the default 128 MB: about 0.13 USD/h.
    assert 0.1 < opened.evidence["baseline_usd_per_hour"] < 0.2
    metrics = opened.evidence["sources"]["metrics"]
    assert metrics["memory_from"] == "default"
    assert "logs" not in opened.evidence["sources"]
    assert transitions[-1].event == RESOLVED
    assert transitions[-1].at > onset + 300.0


def test_metric_only_spike_below_the_critical_margin_stays_a_warning() -> None:
    # One source, 4x: a warning; critical would need the margin or a second source.
    model = pricing_model(thumbnailer=1024)
    base = metric_minutes(METRIC_ONLY, T0, 40, 1000.0)
    flood = metric_minutes(METRIC_ONLY, T0 + 2400.0, 3, 4000.0, seed=2)
    engine = priced_engine(model)
    transitions = spikes(run(engine, [*base, *flood]))
    assert transitions and transitions[0].severity == WARNING
    assert transitions[0].evidence["sources_agreeing"] == ["metrics"]
    assert transitions[0].evidence["sources"]["metrics"]["memory_from"] == "config"


def test_metric_memory_comes_from_the_last_invocation_record() -> None:
    model = pricing_model()
    inv = Invocation(METRIC_ONLY, T0, "r", 100.0, 100.0, 2048)
    model.invocation_cost(inv)
    cost, origin = model.metric_minute_cost(METRIC_ONLY, 60.0, 60_000.0)
    assert origin == "last_invocation"
    default, origin = pricing_model().metric_minute_cost(METRIC_ONLY, 60.0, 60_000.0)
    assert origin == "default"
    # 2048 MB against the default 128 MB: sixteen times the GB-s.
    assert 10 * default < cost < 16 * default


def test_context_with_logs_and_metrics_is_costed_once() -> None:
    logs = list(steady(10.0, H0, 3600.0))
    logs_only = priced_engine()
    run(logs_only, list(logs))
    both = priced_engine()
    run(both, [*logs, *counted(logs)])
    expected = len(logs) * 1e-4
    alone = logs_only.computed_cost(CTX, H0, H0 + 3600.0)
    fused = both.computed_cost(CTX, H0, H0 + 3600.0)
    assert alone == pytest.approx(expected, rel=1e-4)
    assert fused == pytest.approx(alone, rel=1e-6)
    assert both.source_counts["log_metric_disagreements"] == 0


def test_metrics_cost_the_minutes_logs_stopped_seeing() -> None:
    logs = list(steady(10.0, H0, 1800.0))
    engine = priced_engine()
    # The metric counts the whole hour; the logs stop at half time.
    hour = [*logs, *steady(10.0, H0 + 1800.0, 1800.0, seed=4)]
    run(engine, [*logs, *counted(hour)])
    total = engine.computed_cost(CTX, H0, H0 + 3600.0)
    # 30 minutes of 600 calls at 100 ms and 128 MB priced from the metric,
    # beside the logs' own cost of the first half.
    per_call = 2e-7 + 128 / 1024 * 0.1005 * 0.0000166667
    metric_part = total - len(logs) * 1e-4
    assert metric_part == pytest.approx(30 * 600 * per_call, rel=0.1)


def test_logs_short_of_the_metric_become_evidence() -> None:
    base = list(steady(10.0, T0, 900.0))
    flood = list(steady(200.0, T0 + 900.0, 60.0, seed=2))
    logs = [*base, *flood]
    # The metric counts four times what the logs show: logs are being dropped.
    metrics = [m for m in counted(base, factor=4.0) if m.time < T0 + 840.0]
    engine = priced_engine()
    transitions = spikes(run(engine, [*logs, *metrics]))
    assert engine.source_counts["log_metric_disagreements"] >= 10
    opened = transitions[0]
    entry = opened.evidence["sources"]["metrics"]
    last = entry["last_disagreement"]
    assert last["metric_invocations"] == pytest.approx(4 * last["log_invocations"])
    assert "dropping logs" in last["note"]


def test_logs_and_metrics_agreeing_confirm_a_warning_without_escalating_it() -> None:
    # Both count the same invocations: agreement is recorded, but a surge
    # that both see (a flash sale) stays a warning without a strong margin.
    model = pricing_model(resize=10240)
    base = list(steady(10.0, T0, 900.0))
    spike = list(steady(35.0, T0 + 900.0, 300.0, seed=2))
    after = list(steady(10.0, T0 + 1200.0, 300.0, seed=3))
    logs = [*base, *spike, *after]
    logs_alone = spikes(run(priced_engine(pricing_model(resize=10240)), logs))
    assert {t.severity for t in logs_alone} == {WARNING}
    fused = spikes(run(priced_engine(model), [*logs, *counted(logs)]))
    assert fused and {t.severity for t in fused} == {WARNING}
    agreed = [t for t in fused if t.evidence["sources_agreeing"] == ["logs", "metrics"]]
    assert agreed, [t.evidence for t in fused]
    assert agreed[0].evidence["source"] == "invocations"


def test_fused_severity_needs_a_margin_or_an_independent_source() -> None:
    assert fused_severity(True, ["logs"]) == CRITICAL
    assert fused_severity(False, ["logs"]) == WARNING
    assert fused_severity(False, ["logs", "metrics"]) == WARNING
    assert fused_severity(False, ["logs", "traces"]) == CRITICAL
    assert fused_severity(False, ["metrics", "billing"]) == CRITICAL


def test_bad_metric_values_are_ignored_and_counted() -> None:
    engine = priced_engine()
    bad = [
        Metric(CTX, T0, "AWS/Lambda", "Invocations", math.nan, 1.0, 1.0, 1.0),
        Metric(CTX, T0, "AWS/Lambda", "Duration", -5.0, 1.0, 1.0, 1.0),
        Metric(CTX, T0, "AWS/Lambda", "Invocations", 3.0, math.inf, 1.0, 1.0),
    ]
    assert run(engine, list(bad)) == []
    assert engine.source_counts["metric_rejected"] == 3
    assert engine.computed_cost(CTX, T0, T0 + 3600.0) == 0.0


def test_snapshot_and_restore_keep_the_metric_state() -> None:
    base = metric_minutes(METRIC_ONLY, T0, 40, 1000.0)
    flood = metric_minutes(METRIC_ONLY, T0 + 2400.0, 5, 10_000.0, seed=2)
    after = metric_minutes(METRIC_ONLY, T0 + 2700.0, 10, 1000.0, seed=3)
    events = sorted([*base, *flood, *after], key=lambda e: e.time)
    whole = run(priced_engine(), events)
    cut = len(base) + 3
    first = priced_engine()
    head = run(first, events[:cut], flush=False)
    second = priced_engine()
    second.restore(0, first.snapshot(0))
    tail = run(second, events[cut:])
    assert whole
    assert [t.to_json() for t in head + tail] == [t.to_json() for t in whole]


def test_ring_keeps_recent_buckets_and_refuses_older_ones() -> None:
    ring = Ring(3600.0, 3, "d")
    ring.add(0.0, 1.0)
    ring.add(3600.0, 2.0)
    ring.add_span(7200.0, 10800.0 + 1800.0, 3.0)  # 2 in hour 2, 1 in hour 3
    assert ring.total(3600.0, 7200.0) == pytest.approx(2.0)
    assert ring.total(7200.0, 10800.0) == pytest.approx(2.0)
    assert ring.total(3600.0, 14400.0) == pytest.approx(5.0)
    assert ring.total(0.0, 3600.0) is None  # hour 0 was overwritten
    assert ring.add(0.0, 1.0) is False
    # Half an hour counts half of its bucket.
    assert ring.total(3600.0, 5400.0) == pytest.approx(1.0)


def test_ring_holds_only_the_buckets_it_has_spanned() -> None:
    ring = Ring(3600.0, 48)
    ring.add(7200.0, 1.0)
    ring.add(3600.0, 2.0)
    ring.add(3.5 * 3600.0, 4.0)
    assert len(ring.values) == 3
    assert ring.total(3600.0, 4 * 3600.0) == pytest.approx(7.0)
    assert ring.total(0.0, 3600.0) == 0.0
    # Spanning all 48 hours it becomes circular, and older hours are evicted.
    ring.add(50 * 3600.0, 8.0)
    assert len(ring.values) == 48
    assert ring.total(3600.0, 4 * 3600.0) is None
    assert ring.total(3 * 3600.0, 51 * 3600.0) == pytest.approx(12.0)
    assert ring.add(2 * 3600.0, 1.0) is False


def test_ring_grown_or_not_gives_the_sums_of_a_full_circular_one() -> None:
    rng = random.Random(4)
    grown, full = Ring(60.0, 8, "d"), Ring(60.0, 8, "d")
    for _ in range(300):
        t = rng.uniform(0.0, 3000.0)
        assert grown.add(t, 1.0) == _add_circular(full, t, 1.0)
        start = rng.uniform(0.0, 3000.0)
        assert grown.total(start, start + 200.0) == full.total(start, start + 200.0)


def _add_circular(ring: Ring, time: float, value: float) -> bool:
    """Add as a ring at full size from its first bucket on would."""
    kept = ring.add(time, value)
    if len(ring.values) < ring.size:
        ring.values = ring._circular()
    return kept


def test_ring_of_a_checkpoint_from_before_rings_grew_loads() -> None:
    # Then a ring was circular at full size from the start and had no size.
    values = array("f", [0.0]) * 4
    values[5 % 4], values[6 % 4] = 1.5, 2.5
    state = {"bucket_s": 3600.0, "first": 5, "latest": 6, "values": values}
    ring = Ring.__new__(Ring)
    ring.__setstate__((None, state))
    assert ring.total(5 * 3600.0, 7 * 3600.0) == pytest.approx(4.0)
    ring.add(8 * 3600.0, 1.0)
    assert ring.total(5 * 3600.0, 9 * 3600.0) == pytest.approx(5.0)
    unused = Ring.__new__(Ring)
    unused.__setstate__((None, {**state, "first": -1, "latest": -1}))
    assert unused.total(0.0, 3600.0) == 0.0
    unused.add(3600.0, 1.0)
    assert len(unused.values) == 1


def test_metric_minutes_arriving_out_of_order_settle_in_order() -> None:
    base = metric_minutes(METRIC_ONLY, T0, 40, 1000.0)
    flood = metric_minutes(METRIC_ONLY, T0 + 2400.0, 5, 10_000.0, seed=2)
    after = metric_minutes(METRIC_ONLY, T0 + 2700.0, 10, 1000.0, seed=3)
    events = [*base, *flood, *after]
    # Each minute's two records after those of the minute that follows it.
    swapped: list[Event] = []
    for i in range(0, len(events) - 3, 4):
        swapped.extend([*events[i + 2 : i + 4], *events[i : i + 2]])
    swapped.extend(events[len(swapped) :])
    assert swapped != events
    # The same alerts; what a source reports beside them depends on how
    # many minutes had settled by then.
    in_order = [_alert_of(t) for t in feed(priced_engine(), events)]
    assert in_order
    assert [_alert_of(t) for t in feed(priced_engine(), swapped)] == in_order
    engine = priced_engine()
    feed(engine, swapped[:4], flush=False)
    track = engine._parts[0].contexts[METRIC_ONLY].sources.metric
    assert list(track.minutes[::4]) == [T0, T0 + 60.0]


def _alert_of(t: Transition) -> tuple[str, str, str, float, float]:
    return t.event, t.kind, t.severity, t.at, t.starts_at


def _old_track_slots(logs: Ring, minutes: object) -> dict[str, object]:
    """The slots of a metric track as checkpoints before its array wrote them."""
    return {
        "baseline": RobustBaseline(),
        "logs": logs,
        "minutes": minutes,
        "count_mean": 12.5,
        "settled_until": 180.0,
        "latest": 175.0,
        "last_rate": 0.25,
        "last_count": 14.0,
        "last_minute": 120.0,
        "last_memory": "configured",
        "spiked_at": -math.inf,
        "led_minutes": 2,
        "disagreements": 1,
        "last_disagreement": (60.0, 1.0, 30.0),
        "cost": 0.5,
    }


def test_metric_track_of_a_checkpoint_with_an_array_per_minute_loads() -> None:
    later, earlier = array("d", (120.0, 5.0, 0.0, 1.0)), array("d", (60.0, 3, 9, 3))
    old = MetricTrack.__new__(MetricTrack)
    old.__setstate__((None, _old_track_slots(Ring(60.0, 4, "d"), [later, earlier])))
    assert old.minutes == array("d", (60.0, 3.0, 9.0, 3.0, 120.0, 5.0, 0.0, 1.0))
    empty = MetricTrack.__new__(MetricTrack)
    empty.__setstate__((None, _old_track_slots(Ring(60.0, 4, "d"), [])))
    assert empty.minutes is None


@pytest.mark.parametrize("spanned", [2, 9])
def test_metric_track_of_a_checkpoint_with_its_own_ring_keeps_its_figures(
    spanned: int,
) -> None:
    # A ring that had grown to two minutes, and one that had gone circular.
    logs = Ring(60.0, 4, "d")
    for minute in range(spanned):
        logs.add(minute * 60.0 + 5.0, float(minute + 1))
    pending = array("d", (600.0, 3.0, 0.0, 1.0))
    old = MetricTrack.__new__(MetricTrack)
    old.__setstate__((None, _old_track_slots(logs, pending)))
    assert old.minutes == pending
    assert (old.count_mean, old.settled_until, old.latest) == (12.5, 180.0, 175.0)
    assert (old.last_rate, old.last_count, old.last_minute) == (0.25, 14.0, 120.0)
    assert (old.spiked_at, old.cost) == (-math.inf, 0.5)
    assert (old.last_memory, old.led_minutes, old.disagreements) == ("configured", 2, 1)
    assert old.last_disagreement == (60.0, 1.0, 30.0)
    for start in range(-1, spanned + 1):
        span = (start * 60.0, start * 60.0 + 90.0)
        assert old.log_total(*span) == logs.total(*span)


def test_metric_track_log_counts_sum_as_a_ring_of_four_minutes() -> None:
    rng = random.Random(9)
    track, ring = MetricTrack(RobustBaseline()), Ring(60.0, 4, "d")
    for _ in range(400):
        t = rng.uniform(0.0, 1200.0)
        count = float(rng.randint(1, 50))
        track.log_add(t, count)
        ring.add(t, count)
        start = rng.uniform(-60.0, 1260.0)
        assert track.log_total(start, start + 90.0) == ring.total(start, start + 90.0)


def test_metric_track_restores_from_its_own_pickle() -> None:
    track = MetricTrack(RobustBaseline())
    track.log_add(65.0, 7.0)
    track.count_mean = 3.5
    track.nums.extend((120.0, 1.0, 2.0, 3.0))
    back = pickle.loads(pickle.dumps(track))
    assert back.nums == track.nums
    assert back.count_mean == 3.5 and back.log_total(60.0, 120.0) == 7.0


def test_hourly_lanes_sum_as_rings_of_their_size_in_every_hour() -> None:
    # The computed lane's latest hour is added to on a path of its own; both
    # lanes, grown or circular, must sum as independent rings of hours do.
    from detector.sources import BILLED, COMPUTED, SourceState

    rng = random.Random(9)
    state = SourceState(6)
    rings = {COMPUTED: Ring(3600.0, 6, "f"), BILLED: Ring(3600.0, 6, "f")}
    t = 0.0
    for _ in range(400):
        # Mostly the latest hour, sometimes the next few, now and then older.
        t += rng.choice((0.0, 0.0, 0.0, 600.0, 3600.0, 9000.0))
        at = max(0.0, t - rng.choice((0.0, 0.0, 0.0, 3600.0, 30000.0)))
        lane = rng.choice((COMPUTED, COMPUTED, COMPUTED, BILLED))
        value = rng.uniform(0.0, 2.0)
        assert state.add(at, value, lane) == rings[lane].add(at, value)
        start = rng.uniform(max(0.0, t - 30000.0), t)
        for which, ring in rings.items():
            assert state.total(start, t + 3600.0, which) == ring.total(
                start, t + 3600.0
            )
