"""Early firing: a window judged on its elapsed part, before it closes.

The baseline here is exact: ten calls in every window, evenly spaced, at
1e-4 USD each unless a call's duration says otherwise (0.36 USD/h). Its
warning rate is 2.5 times that (0.9 USD/h), its critical rate 3.6 USD/h,
and the shortest span judged is two seconds, in which two calls are usual
and thirteen are the fewest that are more than chance (a Poisson count of
mean two reaches thirteen about as rarely as a normal one five deviations).
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from detector.alerts import CRITICAL, OPENED, UPDATED, WARNING, Transition, fingerprint
from detector.baseline import DAY_S, HOUR_S
from detector.engine import COST_SPIKE, DetectorConfig, Engine
from ingest.events import Event, Invocation
from tests.detector import streams
from tests.detector import test_seasonal as seasons
from tests.detector.streams import (
    CTX,
    T0,
    feed,
    make_engine,
    no_span_cost,
    opened,
    regular,
    steady,
)

WARM_S = 900.0
ONSET = T0 + WARM_S  # a window boundary
BASE_USD_H = 0.36
WARN_USD_H = 2.5 * BASE_USD_H
CRIT_USD_H = 10.0 * BASE_USD_H
SPAN_S = 2.0
LEAST_CALLS = 13  # the upper quantile of two usual calls in the shortest span


def by_duration(inv: Invocation) -> float:
    """1e-4 USD per 100 ms of billed duration, per call."""
    return 1e-4 * inv.billed_ms / 100.0 * inv.count


def call(t: float, n: int, duration_ms: float = 100.0, count: int = 1) -> Invocation:
    return Invocation(CTX, t, f"req-{n}", duration_ms, duration_ms, 128, count=count)


def burst(start: float, calls: int, within_s: float, ms: float = 100.0) -> list[Event]:
    step = within_s / calls
    return [call(start + 0.05 + i * step, 10_000 + i, ms) for i in range(calls)]


#: The context is 90 windows old when its flood comes: young enough for the
#: cold-start rule of bursts to hold a warning back, which is left out here.
AGED = {"burst_cold_windows": 0}


def run(events: list[Event], **overrides: float) -> list[Transition]:
    """``events`` in time order, priced by duration, without the online model
    and without the cold-start rule of bursts."""
    engine = make_engine(by_duration, online_model=False, **{**AGED, **overrides})
    return streams.run(engine, events)


def after_quiet(events: list[Event]) -> list[Event]:
    """The warm baseline, ``events`` in the first window after it, then quiet."""
    return [*regular(T0, WARM_S), *events, *regular(ONSET + 10.0, 300.0)]


def test_the_exact_baseline_raises_nothing() -> None:
    assert run(regular(T0, 2 * WARM_S)) == []


def test_the_fewest_calls_over_the_shortest_span_fire_a_warning() -> None:
    # Twelve calls in the first second, one more when two seconds have passed.
    events = [*burst(ONSET, LEAST_CALLS - 1, 1.0), call(ONSET + SPAN_S, 1)]
    alerts = opened(run(after_quiet(events)), COST_SPIKE)
    assert len(alerts) == 1
    alert = alerts[0]
    assert alert.at == ONSET + SPAN_S
    assert alert.severity == WARNING
    assert alert.evidence["early"] is True
    early = alert.evidence["early_on"]
    assert isinstance(early, dict)
    assert early["on"] == "elapsed rate"
    assert early["invocations_so_far"] == LEAST_CALLS
    assert early["elapsed_s"] == SPAN_S
    assert early["threshold_usd_per_hour"] == pytest.approx(WARN_USD_H)
    # Thirteen calls of 1e-4 USD over two seconds.
    assert alert.evidence["rate_usd_per_hour"] == pytest.approx(2.34)


def test_one_call_fewer_does_not_fire_and_the_close_sees_too_little() -> None:
    events = [*burst(ONSET, LEAST_CALLS - 2, 1.0), call(ONSET + SPAN_S, 1)]
    assert opened(run(after_quiet(events)), COST_SPIKE) == []


def test_a_sparse_function_needs_the_minimum_count_over_the_usual() -> None:
    # One call every four seconds: half a call is usual in two seconds, so
    # the minimum of ten more sets the bar (10.5), not the deviations.
    quiet = regular(T0, WARM_S, 0.25)
    after = regular(ONSET + 10.0, 300.0, 0.25)
    for calls, alerts in ((10, 0), (11, 1)):
        events = [*burst(ONSET, calls - 1, 1.0), call(ONSET + SPAN_S, 1)]
        assert len(opened(run([*quiet, *events, *after]), COST_SPIKE)) == alerts


def test_a_burst_waits_for_the_shortest_span_before_it_warns() -> None:
    # Twenty calls in the first second: plenty, but before two seconds the
    # rate is understated, so only a critical finding could fire.
    events = [*burst(ONSET, 20, 1.0), call(ONSET + SPAN_S, 1)]
    alerts = opened(run(after_quiet(events)), COST_SPIKE)
    assert [(a.at, a.severity) for a in alerts] == [(ONSET + SPAN_S, WARNING)]


def test_a_cost_rate_just_under_the_warning_rate_does_not_fire() -> None:
    # Enough calls, each so cheap that two seconds of them make the warning
    # rate: 10 % under it nothing fires, 10 % over it a warning.
    edge_ms = WARN_USD_H / 3600.0 * SPAN_S / LEAST_CALLS / 1e-4 * 100.0

    def calls(ms: float) -> list[Event]:
        return [*burst(ONSET, LEAST_CALLS - 1, 1.0, ms), call(ONSET + SPAN_S, 1, ms)]

    assert opened(run(after_quiet(calls(0.9 * edge_ms))), COST_SPIKE) == []
    alerts = opened(run(after_quiet(calls(1.1 * edge_ms))), COST_SPIKE)
    assert [a.severity for a in alerts] == [WARNING]
    assert alerts[0].evidence["rate_usd_per_hour"] == pytest.approx(1.1 * WARN_USD_H)


def test_critical_needs_more_calls_than_chance_at_the_critical_rate() -> None:
    # At two seconds, the critical rate brings 20 calls of 1e-4 USD; more
    # than chance above it is 20 + 2 * sqrt(20) = 28.9, so 29 calls.
    at_crit = CRIT_USD_H / 3600.0 * SPAN_S / 1e-4
    assert math.ceil(at_crit + 2.0 * math.sqrt(at_crit)) == 29
    events = [*burst(ONSET, 27, 1.0), call(ONSET + SPAN_S, 1)]
    assert [a.severity for a in opened(run(after_quiet(events)), COST_SPIKE)] == [
        WARNING
    ]
    events = [*burst(ONSET, 28, 1.0), call(ONSET + SPAN_S, 1)]
    alerts = opened(run(after_quiet(events)), COST_SPIKE)
    assert [(a.at, a.severity) for a in alerts] == [(ONSET + SPAN_S, CRITICAL)]
    early = alerts[0].evidence["early_on"]
    assert isinstance(early, dict)
    assert early["threshold_usd_per_hour"] == pytest.approx(CRIT_USD_H)


def test_a_critical_flood_fires_before_the_shortest_span_has_passed() -> None:
    events = burst(ONSET, 40, 1.0)
    alerts = opened(run(after_quiet(events)), COST_SPIKE)
    assert len(alerts) == 1
    assert alerts[0].severity == CRITICAL
    # The 29th call, whatever the span: it is judged over two seconds.
    assert alerts[0].at == events[28].time


def test_a_steady_flood_opens_one_alert_the_close_then_updates() -> None:
    # A 6x flood of evenly spread calls for a minute.
    flood = [call(ONSET + i / 6.0, 20_000 + i) for i in range(360)]
    events = [*regular(T0, WARM_S), *flood, *regular(ONSET + 60.0, 300.0)]
    out = [t for t in run(events) if t.kind == COST_SPIKE]
    first = out[0]
    assert first.event == OPENED and first.evidence["early"] is True
    # Warnings wait for two seconds: then 13 calls, 2.34 USD/h, a warning.
    assert first.at == ONSET + SPAN_S
    assert first.evidence["rate_usd_per_hour"] == pytest.approx(2.34)
    assert first.severity == WARNING
    # One alert, the one the window close would have opened: every
    # transition of the episode carries its fingerprint.
    assert [t.event for t in out].count(OPENED) == 1
    assert {t.fingerprint for t in out} == {fingerprint(CTX, COST_SPIKE)}


def test_an_open_warning_escalates_early_when_the_flood_grows() -> None:
    # 4x for thirty seconds (a warning), then 40x.
    four = [call(ONSET + i / 4.0, 20_000 + i) for i in range(120)]
    forty = [call(ONSET + 30.0 + i / 40.0, 30_000 + i) for i in range(400)]
    events = [*regular(T0, WARM_S), *four, *forty, *regular(ONSET + 40.0, 300.0)]
    out = [t for t in run(events) if t.kind == COST_SPIKE]
    assert (out[0].event, out[0].severity) == (OPENED, WARNING)
    escalated = [t for t in out if t.event == UPDATED and t.severity == CRITICAL]
    assert escalated, "the 40x flood escalates the open warning"
    first = escalated[0]
    assert first.evidence["early"] is True
    assert ONSET + 30.0 < first.at < ONSET + 40.0


def test_an_aggregated_record_is_left_to_the_window_close() -> None:
    # Thirty calls in one record at 2.5 s would be a critical elapsed rate
    # if they had been made in those 2.5 s; they may have been made anywhere.
    events = [call(ONSET + 2.5, 1, count=30)]
    alerts = opened(run(after_quiet(events)), COST_SPIKE)
    assert len(alerts) == 1
    assert alerts[0].evidence["early"] is False
    assert alerts[0].at == ONSET + 10.0


def test_early_firing_follows_the_hour_the_context_expects() -> None:
    day2 = seasons.DAY0 + 2 * DAY_S
    batch = day2 + seasons.BATCH[0] * HOUR_S
    afternoon = day2 + 15.5 * HOUR_S

    def replay(at: float) -> list[Transition]:
        # Two days and more of windows aggregated per record (the batch job
        # at 02:00 every day), then one minute of single calls at 40 a second.
        history = [e for e in seasons.traffic(seasons.DAY0, 2.5) if e.time < at]
        calls = [call(at + i / 40.0, i) for i in range(40 * 60)]
        engine = make_engine(by_duration, online_model=False)
        return feed(engine, [*history, *calls], flush=False)

    # At 02:00 on the third day, 400 calls a window is the batch job.
    assert [t for t in opened(replay(batch), COST_SPIKE) if t.at >= batch] == []
    # At 15:30 the same minute meets the level of ten calls a window.
    alerts = [t for t in opened(replay(afternoon), COST_SPIKE) if t.at >= afternoon]
    assert len(alerts) == 1
    assert alerts[0].evidence["early"] is True
    assert alerts[0].severity == CRITICAL
    assert alerts[0].at < afternoon + SPAN_S


class Ungated(Engine):
    """Judges the elapsed part of a window at every start and call, without
    the gates."""

    def _refresh_thresholds(self, state: Any, at: float) -> None:
        super()._refresh_thresholds(state, at)
        state.early_rate = state.early_count = 0.0

    def _judge_early(self, state: Any, acc: list[float], *args: Any) -> None:
        super()._judge_early(state, acc, *args)
        state.early_rate = state.early_count = 0.0


def fired_with_and_without_gates(events: list[Event]) -> list[Transition]:
    """What ``events``, put in time order, fire in an engine that judges every
    start and call; asserts that the engine with its cached gates fires the same."""
    config = DetectorConfig(online_model=False)
    gated = Engine(config, invocation_cost=by_duration, span_cost=no_span_cost)
    ungated = Ungated(config, invocation_cost=by_duration, span_cost=no_span_cost)
    ordered = sorted(events, key=lambda e: e.time)
    expected = feed(ungated, ordered)
    assert feed(gated, ordered) == expected
    return expected


def test_the_cached_gates_never_hide_a_firing() -> None:
    # Poisson traffic with floods of several sizes and short bursts: the
    # gated engine fires exactly as one that judges every call.
    events: list[Event] = list(steady(1.0, T0, WARM_S, seed=4))
    t = ONSET
    for i, factor in enumerate((1.5, 3.0, 6.0, 12.0, 40.0)):
        events += steady(factor, t, 45.0, seed=10 + i)
        events += burst(t + 60.0, 12, 0.5)
        events += steady(1.0, t + 45.0, 255.0, seed=20 + i)
        t += 300.0
    expected = fired_with_and_without_gates(events)
    assert [t for t in expected if t.evidence.get("early")], "the stream fires early"
