"""The sustained-rise path of contexts seen only through metric streams, on
hand-made minute records fed through the engine."""

from __future__ import annotations

import math
import pickle
import random

from detector.alerts import OPENED, RESOLVED, WARNING, Transition
from detector.baseline import RobustBaseline
from detector.engine import COST_SPIKE, DetectorConfig, Engine
from detector.rise import Rise
from detector.sources import MetricTrack
from ingest.events import Context, Event, Invocation, Metric
from tests.detector.streams import CTX, T0, cheap, feed, no_span_cost, run
from tests.detector.test_rise import ramp_events
from tests.detector.test_sources import (
    METRIC_ONLY,
    counted,
    priced_engine,
    pricing_model,
    spikes,
)

HOUR = 3600.0
#: A thousand calls of a second a minute at 128 MB: about 0.14 USD/h, where
#: doubling adds far less than a spike's floor of 0.5 USD/h.
PER_MINUTE = 1000.0


def minutes(
    start: float,
    count: int,
    first: float,
    last: float | None = None,
    seed: int = 1,
    context: Context = METRIC_ONLY,
) -> list[Event]:
    """Minute records from ``first`` calls a minute going linearly to ``last``
    (Poisson-like counts), one second each."""
    rng = random.Random(seed)
    end = first if last is None else last
    out: list[Event] = []
    for k in range(count):
        mean = first + (end - first) * k / max(1, count - 1)
        n = max(0.0, round(rng.gauss(mean, math.sqrt(mean))))
        t = start + 60.0 * k
        out.append(Metric(context, t, "AWS/Lambda", "Invocations", n, n, 1.0, 1.0))
        out.append(Metric(context, t, "AWS/Lambda", "Duration", n * 1e3, n, 1, 1))
    return out


def doubling() -> list[Event]:
    """An hour at the base, an hour doubling it, then an hour at double."""
    return [
        *minutes(T0, 60, PER_MINUTE),
        *minutes(T0 + HOUR, 60, PER_MINUTE, 2 * PER_MINUTE, seed=2),
        *minutes(T0 + 2 * HOUR, 60, 2 * PER_MINUTE, seed=3),
    ]


def track_of(engine: Engine, context: Context = METRIC_ONLY) -> MetricTrack:
    src = engine._parts[0].contexts[context].sources
    assert src is not None and src.metric is not None
    return src.metric


def dear_engine(**memory: int) -> Engine:
    """Logs priced at a hundred-thousandth of a dollar a call, metric minutes
    at the memory (MB) given per function."""
    model = pricing_model(**memory)
    return Engine(DetectorConfig(), cheap, no_span_cost, cost_model=model)


def test_a_slow_doubling_seen_only_through_metrics_is_a_rise_warning() -> None:
    transitions = spikes(run(priced_engine(), doubling()))
    assert [t.event for t in transitions] == [OPENED]
    (alert,) = transitions
    assert alert.severity == WARNING
    evidence = alert.evidence
    assert evidence["source"] == "metrics"
    assert evidence["window_s"] == 60.0
    assert evidence["test"] == "sequential"
    assert evidence["fired"] == "invocations sustained above their baseline"
    assert evidence["score"] >= evidence["score_threshold"]  # type: ignore[operator]
    assert evidence["sources_agreeing"] == ["metrics"]
    # Found on the way up, under the spike rules' ratio and dollar floor.
    assert T0 + HOUR < alert.at < T0 + 2 * HOUR
    rate = evidence["rate_usd_per_hour"]
    base = evidence["baseline_usd_per_hour"]
    assert isinstance(rate, float) and isinstance(base, float)
    assert 1.2 * base < rate < 2.0 * base
    assert rate - base < 0.5


def test_without_the_rise_path_the_same_doubling_is_not_flagged() -> None:
    # The spike rules alone never see it: the warning above is the rise path's.
    engine = priced_engine(rise_windows=0)
    assert spikes(run(engine, doubling())) == []


def test_the_warning_resolves_once_the_minutes_are_back_to_their_usual() -> None:
    events = [
        *minutes(T0, 60, PER_MINUTE),
        *minutes(T0 + HOUR, 60, PER_MINUTE, 2 * PER_MINUTE, seed=2),
        *minutes(T0 + 2 * HOUR, 60, PER_MINUTE, seed=3),
    ]
    engine = priced_engine()
    transitions = spikes(run(engine, events))
    assert [t.event for t in transitions] == [OPENED, RESOLVED]
    opened, resolved = transitions
    assert resolved.at > T0 + 2 * HOUR
    assert resolved.evidence["source"] == "metrics"
    assert resolved.evidence["horizon_s"] == 9 * 60.0
    # The alert counted the cost of the minutes it was open.
    assert resolved.cost_usd > opened.cost_usd
    # The run is gone with its alert: state only while rising.
    assert track_of(engine).rise is None


def test_a_steady_metrics_only_context_stays_silent_for_many_hours() -> None:
    for seed in (1, 2, 3):
        events = minutes(T0, 12 * 60, PER_MINUTE, seed=seed)
        assert spikes(run(priced_engine(), events)) == []


def test_a_steady_context_keeps_no_run_between_its_rises() -> None:
    engine = priced_engine()
    held = 0
    for event in sorted(minutes(T0, 6 * 60, PER_MINUTE), key=lambda e: e.time):
        engine.process(event, 0)
        held += track_of(engine).rise is not None
    # A run needs a minute 1.23 times the usual count: at a thousand calls
    # a minute that is seven Poisson deviations, which steady traffic never
    # reaches, so no run is ever made for it.
    assert held == 0


def test_a_context_with_logs_is_judged_by_the_log_path_only() -> None:
    # Its own metric stream, priced dear enough (10 GB) that the same
    # minutes on a metrics-only context warn (the control below).
    logs = ramp_events()
    invocations = [e for e in logs if isinstance(e, Invocation)]
    metrics = counted(invocations)
    engine = dear_engine(resize=10240)
    held = 0
    out: list[Transition] = []
    for event in sorted([*logs, *metrics], key=lambda e: e.time):
        engine.process(event, 0)
        out.extend(engine.take_transitions())
        held += track_of(engine, CTX).rise is not None
    engine.flush()
    out.extend(engine.take_transitions())
    warned = [t for t in out if t.kind == COST_SPIKE and t.event == OPENED]
    assert len(warned) == 1
    assert warned[0].evidence["source"] == "invocations"
    assert held == 0
    alone = [
        Metric(METRIC_ONLY, m.time, m.namespace, m.name, m.sum, m.count, 1, 1)
        for m in metrics
        if isinstance(m, Metric)
    ]
    control = dear_engine(thumbnailer=10240)
    (other,) = [t for t in spikes(run(control, alone)) if t.event == OPENED]
    assert other.evidence["source"] == "metrics"


def test_snapshot_and_restore_keep_a_run() -> None:
    events = sorted(doubling(), key=lambda e: e.time)
    whole = feed(priced_engine(), events)
    first = priced_engine()
    head: list[Transition] = []
    rest = iter(events)
    held = None
    while held is None or max(held.scores) == 0.0:
        first.process(next(rest), 0)
        head.extend(first.take_transitions())
        held = track_of(first).rise
    second = priced_engine()
    second.restore(0, first.snapshot(0))
    restored = track_of(second).rise
    assert restored is not None and restored.scores == held.scores
    assert restored.reference == held.reference
    tail = feed(second, list(rest))
    assert spikes(whole)
    assert [t.to_json() for t in head + tail] == [t.to_json() for t in whole]


def test_a_metric_track_from_before_the_metric_rise_path_loads_without_a_run() -> None:
    track = MetricTrack(RobustBaseline(30.0, 10))
    track.rise = Rise(priced_engine().config).start(T0, 1.0, 1.0)
    _, slots = track.__getstate__()
    del slots["rise"]
    old = MetricTrack.__new__(MetricTrack)
    old.__setstate__((None, slots))
    assert old.rise is None
    assert pickle.loads(pickle.dumps(old)).rise is None
    assert list(old.nums) == list(track.nums)


def test_an_empty_minute_of_a_metrics_only_context_is_one_of_its_windows() -> None:
    # Under the warning, a minute that reports no invocation at all: the
    # rise path judges it as a window (as it does a minute the stream
    # skips), and its statistics fall below half their threshold at once.
    empty = T0 + 100 * 60.0
    events = [
        Metric(METRIC_ONLY, e.time, "AWS/Lambda", e.name, 0, 0, 0, 0)
        if isinstance(e, Metric) and e.time == empty
        else e
        for e in doubling()
    ]
    transitions = spikes(run(priced_engine(), events))
    assert [t.event for t in transitions] == [OPENED, RESOLVED]
    opened, resolved = transitions
    assert opened.at < empty
    assert resolved.at == empty + 60.0
    assert resolved.evidence["horizon_s"] == 9 * 60.0
