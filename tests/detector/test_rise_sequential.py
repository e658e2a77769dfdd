"""The sustained-rise path's sequential test (CUSUM of window counts), on
hand-made streams: its arithmetic, its threshold, bursty traffic that must
not alarm, rises at a high rate, ramps, and what happens after an alert."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

import pytest

from detector.alerts import OPENED, RESOLVED, WARNING, Transition
from detector.engine import COST_SPIKE, DetectorConfig
from detector.rise import Rise
from detector.rules import SLOW_RAMP
from dowguard.cli import detector_config
from dowguard.config import load_settings
from ingest.events import Event, Invocation
from tests.detector.streams import CTX, T0, cheap, feed, make_engine, opened, steady
from tests.detector.test_rise import BASE_PER_S, HORIZON, WARM_S, ramp_events

WINDOWS_PER_HOUR = 360.0


def sequential(transitions: list[Transition]) -> list[Transition]:
    """The cost warnings that the sequential test opened."""
    return [
        t
        for t in opened(transitions, COST_SPIKE)
        if t.evidence.get("test") == "sequential"
    ]


# The statistic itself, window by window


def test_the_threshold_is_the_log_of_the_budget_in_windows() -> None:
    rise = Rise(DetectorConfig())
    # Two statistics share the budget of one false alert per context in
    # 2000 hours: each keeps to half of it.
    assert rise.threshold == pytest.approx(math.log(2 * 2000 * WINDOWS_PER_HOUR))
    assert Rise(DetectorConfig(rise_false_alert_hours=0.0)).sequential is False


def test_the_scores_add_poisson_likelihood_ratios_and_never_go_below_zero() -> None:
    rise = Rise(DetectorConfig())
    # Ten calls a window usual, at a Poisson spread: no dispersion.
    run = rise.start(T0, usual=10.0, level=1.0, spread=math.sqrt(10.0))
    rise.push(run, T0, 1.5, 1.0, 0.1, 16.0, 10.0, 3.2)
    # 16 calls: more likely at 1.5 times the usual, less at 3 times it.
    assert list(run.scores) == pytest.approx([16 * math.log(1.5) - 5.0, 0.0])
    # Two empty windows, then an ordinary one: each empty window takes
    # the drift off, and the low statistic cannot go below zero.
    rise.push(run, T0 + 30.0, 1.0, 1.0, 0.1, 10.0, 10.0, 3.2)
    assert list(run.scores) == [0.0, 0.0]


def test_a_window_adds_at_most_a_third_of_the_threshold() -> None:
    rise = Rise(DetectorConfig())
    run = rise.start(T0, usual=10.0, level=1.0, spread=math.sqrt(10.0))
    # Five times the usual count: far more than the threshold in
    # likelihood, but it takes three such windows to alarm.
    for i in range(3):
        assert rise.fires(run, 0.0) is None
        rise.push(run, T0 + 10.0 * i, 5.0, 1.0, 0.1, 50.0, 10.0, 3.2)
        assert max(run.scores) == pytest.approx(rise.threshold * (i + 1) / 3)
    found = rise.fires(run, 0.0)
    assert found is not None and found.score == pytest.approx(rise.threshold)


@pytest.mark.parametrize(("margin", "fires"), [(1.001, False), (0.999, True)])
def test_it_fires_at_its_threshold_and_not_below(margin: float, fires: bool) -> None:
    # Three windows of 25 calls over a usual 10: the high-ratio statistic
    # gathers 3 * (25 log 3 - 20) = 22.4. A budget whose threshold is just
    # above or below that decides.
    gathered = 3 * (25 * math.log(3.0) - 20.0)
    hours = math.exp(gathered * margin) / 2 / WINDOWS_PER_HOUR
    rise = Rise(DetectorConfig(rise_false_alert_hours=hours))
    assert rise.threshold == pytest.approx(gathered * margin)
    run = rise.start(T0, usual=10.0, level=1.0, spread=math.sqrt(10.0))
    for i in range(3):
        rise.push(run, T0 + 10.0 * i, 2.5, 1.0, 0.1, 25.0, 10.0, 3.2)
    assert max(run.scores) == pytest.approx(min(gathered, rise.threshold))
    assert (rise.fires(run, 0.0) is not None) == fires


def test_counts_spread_beyond_poisson_weigh_less() -> None:
    rise = Rise(DetectorConfig())
    poisson = rise.start(T0, usual=10.0, level=1.0, spread=math.sqrt(10.0))
    # A learnt deviation of 6 on a mean of 10: 3.6 times Poisson's
    # variance, of which 1.5 is still taken for Poisson.
    spread = rise.start(T0, usual=10.0, level=1.0, spread=6.0)
    for run in (poisson, spread):
        rise.push(run, T0, 1.5, 1.0, 0.1, 18.0, 10.0, 3.2)
    assert spread.reference[2] == pytest.approx(3.6 / 1.5)
    assert spread.scores[0] == pytest.approx(poisson.scores[0] / 2.4)


def test_an_hour_that_spreads_far_beyond_poisson_is_not_judged() -> None:
    rise = Rise(DetectorConfig())
    runs = [
        rise.start(T0, usual=10.0, level=1.0, spread=math.sqrt(10.0)) for _ in "abc"
    ]
    # The same window against an hour expected at 1.0 USD/h with a spread
    # of 0.3 (Poisson's, at 10 calls), 0.6 and 1.5.
    for run, spread in zip(runs, (0.3, 0.6, 1.5), strict=True):
        rise.push(run, T0, 2.0, 1.0, spread, 20.0, 10.0, 3.2)
    poisson, wide, batchy = (run.scores[0] for run in runs)
    # 0.36 * 10 / 1.5 = 2.4 times Poisson's spread; 2.25 * 10 / 1.5 = 15 is
    # beyond six, and the window adds nothing.
    assert poisson == pytest.approx(20 * math.log(1.5) - 5.0)
    assert wide == pytest.approx(poisson / 2.4)
    assert batchy == 0.0


def test_a_steep_window_starts_the_test_afresh() -> None:
    rise = Rise(DetectorConfig())
    run = rise.start(T0, usual=10.0, level=1.0, spread=math.sqrt(10.0))
    rise.push(run, T0, 2.0, 1.0, 0.1, 20.0, 10.0, 3.2)
    assert max(run.scores) > 0.0
    # 80 calls over a usual 10: beyond six times it and four deviations.
    rise.push(run, T0 + 10.0, 8.0, 1.0, 0.1, 80.0, 10.0, 3.2)
    assert list(run.scores) == [0.0, 0.0]
    assert list(run.totals) == [0.0] * 5


# Through the engine


def test_a_sustained_tripling_at_a_high_rate_warns_within_three_windows() -> None:
    # Twenty calls a window, then sixty.
    events: list[Event] = [
        *steady(BASE_PER_S, T0, WARM_S, seed=1),
        *steady(BASE_PER_S * 3, T0 + WARM_S, 120.0, seed=2),
    ]
    transitions = feed(make_engine(cheap), events)
    (alert,) = opened(transitions, COST_SPIKE)
    assert alert.severity == WARNING
    assert alert.evidence["test"] == "sequential"
    assert alert.evidence["fired"] == "invocations sustained above their baseline"
    assert alert.at <= T0 + WARM_S + 30.0
    assert alert.evidence["score"] >= alert.evidence["score_threshold"]  # type: ignore[operator]
    # The fixed horizon alone takes its nine windows.
    (late,) = opened(feed(make_engine(cheap, **HORIZON), events), COST_SPIKE)
    assert late.at >= T0 + WARM_S + 90.0


def test_a_tripling_at_a_few_calls_a_window_takes_longer() -> None:
    # Two calls a second is twenty a window; a fifth of that is four, as
    # the slower flood victims have: a few windows, as the bound says.
    # At 0.072 USD/h, tripling is too little for early firing's floor.
    slow = make_engine(lambda inv: 5e-5 * inv.count)
    events: list[Event] = [
        *steady(0.4, T0, WARM_S, seed=3),
        *steady(1.2, T0 + WARM_S, 300.0, seed=4),
    ]
    (alert,) = sequential(feed(slow, events))
    assert T0 + WARM_S + 30.0 <= alert.at <= T0 + WARM_S + 90.0


def test_the_warning_resolves_and_the_test_starts_afresh() -> None:
    rate = BASE_PER_S
    events: list[Event] = [
        *steady(rate, T0, WARM_S, seed=1),
        *steady(3 * rate, T0 + WARM_S, 120.0, seed=2),
        *steady(rate, T0 + WARM_S + 120.0, 600.0, seed=3),
        *steady(3 * rate, T0 + WARM_S + 720.0, 120.0, seed=4),
        *steady(rate, T0 + WARM_S + 840.0, 600.0, seed=5),
    ]
    engine = make_engine(cheap)
    transitions = feed(engine, events, flush=False)
    spikes = [t for t in transitions if t.kind == COST_SPIKE]
    assert [t.event for t in spikes] == [OPENED, RESOLVED, OPENED, RESOLVED]
    first, ended, second, _ = spikes
    # It ends once the statistics have fallen to half the threshold, a
    # few ordinary windows after the rise.
    assert T0 + WARM_S + 120.0 < ended.at <= T0 + WARM_S + 240.0
    # The second rise is judged from zero again, as quickly as the first.
    assert second.at - (T0 + WARM_S + 720.0) <= 30.0
    assert first.evidence["test"] == second.evidence["test"] == "sequential"
    assert engine._parts[0].contexts[CTX].rise is None


def bursty(
    hours: float, base_per_s: float, burst_per_s: float, seed: int
) -> Iterator[Invocation]:
    """A base rate with bursts of 5 to 30 s every 2 to 20 minutes on top."""
    rng = random.Random(seed)
    end = T0 + hours * 3600.0
    yield from steady(base_per_s, T0, hours * 3600.0, seed=seed)
    t = T0 + WARM_S
    n = 0
    while t < end:
        t += rng.uniform(120.0, 1200.0)
        length = rng.uniform(5.0, 30.0)
        u = t
        while u < min(t + length, end):
            u += rng.expovariate(burst_per_s)
            n += 1
            yield Invocation(CTX, u, f"burst-{n}", 100.0, 100.0, 128)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_bursty_function_does_not_alarm(seed: int) -> None:
    # Half a call a second, bursting to eight for 5 to 30 s: 16 times the
    # usual count, at a cost that meets the excess floor. The spike path
    # is kept out of it (its own floor put out of reach).
    events = sorted(bursty(4.0, 0.5, 8.0, seed), key=lambda e: e.time)
    engine = make_engine(
        lambda inv: 2e-4 * inv.count, spike_min_excess=1e9, online_model=False
    )
    assert opened(feed(engine, events), COST_SPIKE) == []


def test_a_slow_ramp_is_found_sooner_than_by_the_ramp_rule() -> None:
    # The baseline goes on learning the ramp until an alert opens; the
    # run's reference is what it held when the rise began.
    events = ramp_events()
    (seen,) = sequential(feed(make_engine(cheap), events))
    (ramp,) = opened(feed(make_engine(cheap, **HORIZON), events), SLOW_RAMP)
    onset = T0 + 1.5 * 3600.0
    assert onset < seen.at < ramp.at
    assert seen.severity == WARNING


def test_a_run_and_its_scores_survive_a_checkpoint() -> None:
    rate = BASE_PER_S * 2
    events: list[Event] = [
        *steady(rate, T0, WARM_S, seed=1),
        *steady(3 * rate, T0 + WARM_S, 300.0, seed=2),
    ]
    cut = next(i for i, e in enumerate(events) if e.time > T0 + WARM_S + 26.0)
    whole = feed(make_engine(cheap), events)
    first = make_engine(cheap)
    before = feed(first, events[:cut], flush=False)
    run = first._parts[0].contexts[CTX].rise
    assert run is not None and max(run.scores) > 0.0
    second = make_engine(cheap)
    second.restore(0, first.snapshot(0))
    assert before + feed(second, events[cut:]) == whole
    assert len(sequential(whole)) == 1


def test_the_budget_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOWGUARD_RISE_FALSE_ALERT_HOURS", "500")
    assert detector_config(load_settings()).rise_false_alert_hours == 500.0
