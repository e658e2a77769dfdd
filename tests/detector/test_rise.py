"""Rises too small in dollars for a spike: the sustained-rise path and the
rules' low-dollar warnings, on hand-made streams."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace

import pytest

from detector.alerts import OPENED, RESOLVED, WARNING
from detector.engine import COST_SPIKE
from detector.rules import DURATION_INFLATION, ERROR_STORM, SLOW_RAMP
from dowguard.cli import detector_config
from dowguard.config import load_settings
from dowguard.errors import ConfigError
from ingest.events import Event, Invocation
from tests.detector.streams import (
    CHEAP,
    CTX,
    T0,
    cheap,
    feed,
    make_engine,
    opened,
    regular,
    steady,
)

WARM_S = 1200.0  # 120 windows: the cost baseline is warm, its spread learnt
HOUR = 3600.0
#: Two invocations a second at a hundred-thousandth of a dollar each: a
#: baseline of 0.072 USD/h, where tripling adds far less than a spike's floor.
BASE_PER_S = 2.0
#: The fixed horizon alone, without the sequential test.
HORIZON = {"rise_false_alert_hours": 0.0}


def step(factor: float, seconds: float = 300.0, quiet_s: float = 300.0) -> list[Event]:
    """The base rate, then ``factor`` times it for ``seconds``, then the base."""
    return [
        *regular(T0, WARM_S, BASE_PER_S, "warm"),
        *regular(T0 + WARM_S, seconds, BASE_PER_S * factor, "step"),
        *regular(T0 + WARM_S + seconds, quiet_s, BASE_PER_S, "after"),
    ]


# The sustained-rise path


def test_a_tripled_cheap_function_is_a_cost_warning_with_its_evidence() -> None:
    events: list[Event] = [
        *steady(BASE_PER_S, T0, WARM_S, seed=1),
        *steady(3 * BASE_PER_S, T0 + WARM_S, 600.0, seed=2),
        *steady(BASE_PER_S, T0 + WARM_S + 600.0, 600.0, seed=3),
    ]
    transitions = feed(make_engine(cheap, **HORIZON), events)
    spikes = [t for t in transitions if t.kind == COST_SPIKE]
    assert [t.event for t in spikes] == [OPENED, RESOLVED]
    alert = spikes[0]
    assert alert.severity == WARNING
    # Nine windows must be in before it can judge; then it fires at once.
    assert T0 + WARM_S + 90.0 <= alert.at <= T0 + WARM_S + 150.0
    evidence = alert.evidence
    assert evidence["fired"] == "cost rate sustained above its baseline"
    assert evidence["horizon_s"] == 90.0
    assert evidence["baseline_usd_per_hour"] == pytest.approx(0.072, rel=0.15)
    assert evidence["rate_usd_per_hour"] == pytest.approx(0.216, rel=0.2)
    assert 2.0 <= evidence["ratio"] <= 4.0  # type: ignore[operator]
    assert evidence["z"] >= 5.0  # type: ignore[operator]
    assert evidence["sources_agreeing"] == ["logs"]
    assert evidence["cost_so_far_usd"] == evidence["horizon_cost_usd"]
    assert evidence["projected_usd_per_hour"] > 0.1  # type: ignore[operator]
    # It ends once the horizon is back near the baseline, not before.
    assert T0 + WARM_S + 600.0 < spikes[1].at <= T0 + WARM_S + 600.0 + 120.0
    assert spikes[1].cost_usd > evidence["cost_so_far_usd"]  # type: ignore[operator]


@pytest.mark.parametrize(("factor", "alerts"), [(1.95, 0), (2.05, 1)])
def test_the_rise_must_reach_its_ratio(factor: float, alerts: int) -> None:
    assert (
        len(opened(feed(make_engine(cheap, **HORIZON), step(factor)), COST_SPIKE))
        == alerts
    )


@pytest.mark.parametrize(("margin", "alerts"), [(1.05, 0), (0.95, 1)])
def test_the_rise_must_reach_its_excess(margin: float, alerts: int) -> None:
    excess = 2 * BASE_PER_S * CHEAP * 3600.0  # tripled: 0.144 USD/h more
    engine = make_engine(cheap, rise_min_excess=excess * margin)
    assert len(opened(feed(engine, step(3.0)), COST_SPIKE)) == alerts


def test_the_rise_must_be_more_invocations_than_chance() -> None:
    found = opened(feed(make_engine(cheap, **HORIZON), step(3.0)), COST_SPIKE)
    assert len(found) == 1
    # In a regular step the count is what binds: each invocation costs what
    # it used to, and the cost's own deviations are far larger.
    z = found[0].evidence["invocations_z"]
    assert isinstance(z, float) and z < found[0].evidence["z"]  # type: ignore[operator]
    # The first horizon of the step has the most deviations: just above
    # them, no later one fires.
    assert (
        opened(
            feed(make_engine(cheap, rise_z=z * 1.01, **HORIZON), step(3.0)), COST_SPIKE
        )
        == []
    )
    assert (
        len(
            opened(
                feed(make_engine(cheap, rise_z=z * 0.99, **HORIZON), step(3.0)),
                COST_SPIKE,
            )
        )
        == 1
    )


@pytest.mark.parametrize(("trim", "alerts"), [(4, 0), (3, 1)])
def test_a_burst_of_the_trimmed_windows_is_not_a_rise(trim: int, alerts: int) -> None:
    # Four windows at 30 times the rate, a tenth of the price: the spike
    # rule's dollar floor is not met, and only trimming tells it from a rise.
    events: list[Event] = [
        *regular(T0, WARM_S, BASE_PER_S, "warm"),
        *regular(T0 + WARM_S, 40.0, 30 * BASE_PER_S, "burst"),
        *regular(T0 + WARM_S + 40.0, 300.0, BASE_PER_S, "after"),
    ]
    engine = make_engine(lambda inv: CHEAP / 10 * inv.count, rise_trim=trim)
    assert len(opened(feed(engine, events), COST_SPIKE)) == alerts


def test_a_rise_of_too_few_invocations_is_not_judged() -> None:
    # A function called every 4 s that triples: 67 or 68 invocations a
    # horizon, fewer than asked for.
    events: list[Event] = [
        *regular(T0, WARM_S * 2, 0.25, "warm"),
        *regular(T0 + WARM_S * 2, 300.0, 0.75, "step"),
    ]
    dear = make_engine(lambda inv: 1e-3 * inv.count / 10, rise_min_count=75.0)
    assert opened(feed(dear, events), COST_SPIKE) == []
    dear = make_engine(lambda inv: 1e-3 * inv.count / 10, rise_min_count=60.0)
    assert len(opened(feed(dear, events), COST_SPIKE)) == 1


def test_dearer_invocations_at_the_same_count_are_a_rise() -> None:
    events: list[Event] = [
        *regular(T0, WARM_S, BASE_PER_S, "warm"),
        *regular(T0 + WARM_S, 300.0, BASE_PER_S, "slow", billed_ms=300.0),
    ]
    engine = make_engine(lambda inv: 1e-7 * inv.billed_ms * inv.count)
    found = opened(feed(engine, events), COST_SPIKE)
    assert len(found) == 1
    assert found[0].evidence["invocations_z"] == pytest.approx(0.0, abs=1.0)


def test_the_baseline_does_not_learn_a_long_rise() -> None:
    # Held for an hour, twice the baseline's half-life: one alert all along,
    # and the baseline after it is still the one from before.
    engine = make_engine(cheap)
    events = step(3.0, seconds=HOUR, quiet_s=0.0)
    transitions = feed(engine, events, flush=False)
    spikes = [t for t in transitions if t.kind == COST_SPIKE]
    assert [t.event for t in spikes] == [OPENED]
    baseline = engine._parts[0].contexts[CTX].baseline
    assert baseline.mean == pytest.approx(BASE_PER_S * CHEAP * 3600.0, rel=0.1)
    engine.flush()
    ends = [t for t in engine.take_transitions() if t.kind == COST_SPIKE]
    assert [t.event for t in ends] == [RESOLVED]
    # Its cost so far covers the hour, from the horizon that opened it on.
    tripled = 3 * BASE_PER_S * CHEAP * HOUR
    # (The horizon's sums are single precision: equal to a rounding.)
    assert 0.95 * tripled <= ends[0].cost_usd <= tripled * (1.0 + 1e-9)


def test_a_cold_context_is_left_to_the_spike_rule() -> None:
    events = regular(T0, 300.0, BASE_PER_S, "young")
    events += regular(T0 + 300.0, 300.0, 3 * BASE_PER_S, "step")
    assert feed(make_engine(cheap), events) == []


def test_a_run_survives_a_checkpoint() -> None:
    events = step(3.0)
    cut = next(i for i, e in enumerate(events) if e.time > T0 + WARM_S + 50.0)
    whole = feed(make_engine(cheap), events)
    first = make_engine(cheap)
    before = feed(first, events[:cut], flush=False)
    second = make_engine(cheap)
    second.restore(0, first.snapshot(0))
    assert before + feed(second, events[cut:]) == whole
    assert len(opened(whole, COST_SPIKE)) == 1


def test_rise_settings_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOWGUARD_RISE_WINDOWS", "12")
    monkeypatch.setenv("DOWGUARD_RAMP_WARN_FACTOR", "1.8")
    config = detector_config(load_settings())
    assert config.rise_windows == 12 and config.ramp_warn_factor == 1.8
    monkeypatch.setenv("DOWGUARD_RISE_TRIM", "12")
    with pytest.raises(ConfigError, match="rise_trim 12 must be below"):
        load_settings()


def test_the_path_can_be_turned_off() -> None:
    assert opened(feed(make_engine(cheap, rise_windows=0), step(3.0)), COST_SPIKE) == []


# Low-dollar warnings of the rules


def test_a_cheap_error_storm_is_a_warning() -> None:
    # 90 % of the calls fail from one window on: a share far above the
    # usual 1 %, on failures costing about 0.06 USD/h.
    def status(i: int) -> str:
        return "error" if i % 10 else "success"

    events: list[Event] = [
        *regular(T0, WARM_S, BASE_PER_S, "warm", status=lambda i: "success"),
        *regular(T0 + WARM_S, 120.0, BASE_PER_S, "storm", status=status),
        *regular(T0 + WARM_S + 120.0, 300.0, BASE_PER_S, "after"),
    ]
    transitions = feed(make_engine(cheap, rise_windows=0), events)
    storms = opened(transitions, ERROR_STORM)
    assert len(storms) == 1
    assert storms[0].severity == WARNING
    assert storms[0].at <= T0 + WARM_S + 20.0
    assert storms[0].evidence["excess_usd_per_hour"] < 0.5  # type: ignore[operator]
    # The floor still holds: a little higher, the same storm is not worth it.
    engine = make_engine(cheap, rise_windows=0, error_min_excess=0.1)
    assert opened(feed(engine, events), ERROR_STORM) == []


def test_a_cheap_duration_inflation_is_a_warning() -> None:
    events: list[Event] = [
        *regular(T0, WARM_S, BASE_PER_S * 10, "warm"),
        *regular(T0 + WARM_S, 120.0, BASE_PER_S * 10, "slow", billed_ms=200.0),
    ]
    engine = make_engine(lambda inv: 1e-8 * inv.billed_ms * inv.count)
    found = opened(feed(engine, events), DURATION_INFLATION)
    assert len(found) == 1 and found[0].severity == WARNING
    # Twice 100 ms at 20/s and a hundred-millionth of a dollar per ms.
    assert found[0].evidence["excess_usd_per_hour"] == pytest.approx(0.072, rel=0.02)


def ramp(start: float, seconds: float, per_s: float, to: float) -> Iterator[Invocation]:
    """A rate growing linearly from ``per_s`` to ``to`` times it, no jitter."""
    # The k-th event is where the integral of the rate reaches k.
    slope = per_s * (to - 1.0) / seconds
    total = per_s * seconds + slope * seconds * seconds / 2.0
    for k in range(1, int(total)):
        t = (-per_s + math.sqrt(per_s * per_s + 2.0 * slope * k)) / slope
        yield Invocation(CTX, start + t, f"ramp-{k}", 99.5, 100.0, 128)


def ramp_events() -> list[Event]:
    """An hour and a half at the base, then two hours to three times it."""
    return [
        *regular(T0, 1.5 * HOUR, BASE_PER_S, "warm"),
        *ramp(T0 + 1.5 * HOUR, 2 * HOUR, BASE_PER_S, 3.0),
    ]


def test_a_cheap_slow_ramp_is_a_warning_against_its_anchor() -> None:
    # The rise path's sequential test would see this ramp first (see below).
    engine = make_engine(cheap, **HORIZON)
    transitions = feed(engine, ramp_events(), flush=False)
    assert opened(transitions, COST_SPIKE) == []
    ramps = opened(transitions, SLOW_RAMP)
    assert len(ramps) == 1
    alert = ramps[0]
    assert alert.severity == WARNING
    assert alert.evidence["fired"] == ["anchor_significant"]
    ratio = alert.evidence["ratio"]
    assert isinstance(ratio, float) and 1.5 <= ratio < 3.0
    assert alert.evidence["z"] >= 5.0  # type: ignore[operator]
    # The anchor did not learn the ramp while the alert was open.
    anchor = alert.evidence["baseline"]
    rules = engine._parts[0].contexts[CTX].rules
    assert rules is not None and rules.anchor == pytest.approx(anchor, rel=0.01)


@pytest.mark.parametrize(("factor", "alerts"), [(3.1, 0), (2.0, 1)])
def test_the_cheap_ramp_must_reach_its_factor(factor: float, alerts: int) -> None:
    engine = make_engine(cheap, ramp_warn_factor=factor, **HORIZON)
    assert len(opened(feed(engine, ramp_events()), SLOW_RAMP)) == alerts


@pytest.mark.parametrize(("excess", "alerts"), [(0.2, 0), (0.05, 1)])
def test_the_cheap_ramp_must_reach_its_excess(excess: float, alerts: int) -> None:
    # The ramp ends 0.144 USD/h above its start; the anchor has moved a little.
    engine = make_engine(cheap, ramp_warn_min_excess=excess, **HORIZON)
    assert len(opened(feed(engine, ramp_events()), SLOW_RAMP)) == alerts


def test_a_ramp_of_a_rare_function_is_not_more_than_chance() -> None:
    # Called every five minutes at five cents a call: far fewer invocations
    # in the recent rate than five deviations could tell from chance.
    events: list[Event] = [
        *regular(T0, 1.5 * HOUR, 1 / 300, "warm"),
        *ramp(T0 + 1.5 * HOUR, 2 * HOUR, 1 / 300, 3.0),
    ]

    def dear(inv: Invocation) -> float:
        return 0.05 * inv.count

    engine = make_engine(dear, rise_windows=0)
    assert opened(feed(engine, events), SLOW_RAMP) == []
    engine = make_engine(dear, rise_windows=0, ramp_warn_z=1.0)
    assert len(opened(feed(engine, events), SLOW_RAMP)) == 1


def test_a_later_strong_window_escalates_the_rise_warning() -> None:
    # Three times the rate for three minutes (a warning), then forty times
    # it: over ten times the baseline and 2 USD/h above it, the same alert
    # turns critical, and the spike rule's single calm windows do not end it.
    events: list[Event] = [
        *regular(T0, WARM_S, BASE_PER_S, "warm"),
        *regular(T0 + WARM_S, 180.0, 3 * BASE_PER_S, "rise"),
        *regular(T0 + WARM_S + 180.0, 60.0, 40 * BASE_PER_S, "flood"),
        *regular(T0 + WARM_S + 240.0, 300.0, BASE_PER_S, "after"),
    ]
    spikes = [t for t in feed(make_engine(cheap), events) if t.kind == COST_SPIKE]
    assert len({t.fingerprint for t in spikes}) == 1
    assert spikes[0].event == OPENED and spikes[0].severity == WARNING
    assert spikes[0].at < T0 + WARM_S + 180.0
    escalated = [t for t in spikes if t.severity == "critical"]
    assert escalated and escalated[0].event == "updated"
    assert escalated[0].evidence["fired"] == "cost rate above its baseline"
    assert [t.event for t in spikes].count(OPENED) == 1
    assert spikes[-1].event == RESOLVED and spikes[-1].at > T0 + WARM_S + 240.0


def test_a_rise_during_an_open_loop_is_left_to_the_loop() -> None:
    # The rising invocations carry a Lineage count past the hop threshold:
    # the recursion alert explains them, and no cost warning is added.
    events = step(3.0)
    looped: list[Event] = [
        replace(e, lineage=4)
        if isinstance(e, Invocation) and e.request_id.startswith("step")
        else e
        for e in events
    ]
    transitions = feed(make_engine(cheap), looped)
    assert opened(transitions, "recursive_trigger")
    assert opened(transitions, COST_SPIKE) == []
    assert len(opened(feed(make_engine(cheap), events), COST_SPIKE)) == 1
