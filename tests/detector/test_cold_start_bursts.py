"""The cold-start rule of bursts: a context too young to have shown its
bursts holds a warning on a short excursion back as a learnt burst would,
and raises a critical one as a warning until it outlasts a burst, while
floods on new functions are still found at once, on hand-made streams."""

from __future__ import annotations

from collections.abc import Sequence

from detector.alerts import CRITICAL, OPENED, UPDATED, WARNING
from detector.engine import COST_SPIKE, Engine
from dowguard.cli import detector_config
from dowguard.config import load_settings
from ingest.events import Context, Event, Invocation
from tests.detector.streams import (
    BASE_PER_S,
    BURST_PER_S,
    BURST_S,
    CHEAP,
    CTX,
    T0,
    bursty_stream,
    cheap,
    duration_cost,
    feed,
    make_engine,
    opened,
    regular,
    run,
    steady,
)

#: 80 windows in: warm (60), and younger than burst_cold_windows (120).
YOUNG_S = 802.0


def spikes(engine: Engine, events: Sequence[Event]) -> list[tuple[str, float]]:
    """The cost alerts opened, as (severity, when)."""
    return [(t.severity, t.at) for t in opened(feed(engine, events), COST_SPIKE)]


# A young context's bursts


def test_a_young_context_s_first_burst_waits_and_is_learnt() -> None:
    engine = make_engine(cheap)
    # Its first burst while young, then a like one once it is no longer.
    assert spikes(engine, bursty_stream([YOUNG_S, 1502.0])) == []
    state = engine._find(CTX)
    assert state is not None and state.baseline.bursts is not None
    # What it learnt of the young burst is what holds the later one back.
    assert state.baseline.bursts.level > 0.5


def test_without_the_rule_the_young_context_s_first_burst_warns() -> None:
    found = spikes(make_engine(cheap, burst_cold_windows=0), bursty_stream([YOUNG_S]))
    assert [severity for severity, _ in found] == [WARNING]
    assert T0 + YOUNG_S <= found[0][1] <= T0 + YOUNG_S + 18.0


def test_the_rule_ends_at_burst_cold_windows() -> None:
    # 130 windows in: past the default, so the first burst warns...
    late = 1302.0
    assert len(spikes(make_engine(cheap), bursty_stream([late]))) == 1
    # ...and a longer cold start holds it back too.
    assert (
        spikes(make_engine(cheap, burst_cold_windows=200), bursty_stream([late])) == []
    )


def test_a_context_whose_level_is_unknown_is_not_held() -> None:
    # Fewer windows than a level needs (BURST_MIN_WINDOWS): nothing waits,
    # even with a cold start far longer than the context's life.
    engine = make_engine(cheap, burst_cold_windows=10_000, baseline_warmup=3)
    found = spikes(engine, bursty_stream([32.0], until=300.0))
    assert [severity for severity, _ in found] == [WARNING]


# Floods on young contexts are found


def test_a_warning_flood_on_a_young_context_opens_as_of_its_first_window() -> None:
    flood = regular(T0 + YOUNG_S, 300.0, BURST_PER_S, "flood")
    found = opened(feed(make_engine(cheap), bursty_stream(extra=flood)), COST_SPIKE)
    assert [t.severity for t in found] == [WARNING]
    alert = found[0]
    # Held for burst_windows (4) windows, opened in the fifth, as of the
    # flood's first window and with the cost of all of it so far.
    assert T0 + YOUNG_S + 38.0 <= alert.at <= T0 + YOUNG_S + 55.0
    assert alert.starts_at == T0 + 800.0
    assert alert.evidence["held_as_burst"]["windows"] == 5
    assert alert.cost_usd > 4 * 10 * BURST_PER_S * CHEAP


def severities(engine: Engine, events: Sequence[Event]) -> list[tuple[str, float]]:
    """The cost alert's openings and escalations, as (severity, seconds
    after the young context's excursion began)."""
    return [
        (t.severity, t.at - (T0 + YOUNG_S))
        for t in feed(engine, events)
        if t.kind == COST_SPIKE and t.event in (OPENED, UPDATED)
    ]


def first_critical(found: list[tuple[str, float]]) -> float:
    return min(after for severity, after in found if severity == CRITICAL)


#: The critical rate of the young context: its base and 2 USD/h more.
CRIT_USD_H = BASE_PER_S * 3600 * CHEAP + 2.0
#: How young the context is at YOUNG_S: two thirds of the way from
#: burst_cold_windows (120) back to warm (60).
SHARE = (120 - 80) / (120 - 60)
#: The most a young context's burst is taken to cost: burst_windows (4)
#: windows at the critical rate, times how young it is.
BURST_MOST_USD = SHARE * CRIT_USD_H * 40.0 / 3600.0


def test_a_critical_flood_on_a_young_context_warns_at_once() -> None:
    # Four times the burst rate: 4.3 USD/h, twice the critical rate.
    per_s = 4 * BURST_PER_S
    flood = regular(T0 + YOUNG_S, 120.0, per_s, "flood")
    found = severities(make_engine(cheap), bursty_stream(extra=flood))
    # Beyond what the young context's bursts are taken to reach: it opens in
    # the flood's first seconds, a warning while it may be a burst...
    assert found[0][0] == WARNING and found[0][1] <= 2.0
    # ...and critical once it has cost more than a burst may (the base's
    # calls are a few per cent of the flood's).
    spent_s = BURST_MOST_USD / (per_s * CHEAP)
    assert spent_s - 2.0 <= first_critical(found) <= spent_s + 1.0
    # On an older context it is critical in the flood's first seconds.
    old = severities(
        make_engine(cheap, burst_cold_windows=0), bursty_stream(extra=flood)
    )
    assert first_critical(old) <= 3.0


def test_the_stronger_a_flood_on_a_young_context_the_sooner_it_is_critical() -> None:
    # Ten times the burst rate: its cost is past a burst's in 5 s.
    flood = regular(T0 + YOUNG_S, 120.0, 10 * BURST_PER_S, "flood")
    found = severities(make_engine(cheap), bursty_stream(extra=flood))
    assert found[0][0] == WARNING and found[0][1] <= 1.0
    assert first_critical(found) <= BURST_MOST_USD / (10 * BURST_PER_S * CHEAP) + 1


def test_a_flood_just_over_the_critical_rate_is_critical_at_a_burst_s_cost() -> None:
    # 1.1 times the critical rate: it has cost what a burst of the young
    # context may after 24 s, in its third window, and turns critical then.
    per_s = 1.1 * CRIT_USD_H / 3600.0 / CHEAP
    flood = regular(T0 + YOUNG_S, 120.0, per_s, "flood")
    found = severities(make_engine(cheap), bursty_stream(extra=flood))
    assert found and found[0][0] == WARNING and found[0][1] < 10.0
    spent_s = BURST_MOST_USD / (per_s * CHEAP)
    assert spent_s - 2.0 <= first_critical(found) <= spent_s + 1.0


def test_a_young_context_s_first_burst_at_a_critical_rate_only_warns() -> None:
    # Ten seconds at three times the burst rate: a critical rate, on the
    # first burst the context shows, costing less than a burst may; no
    # enforcement should throttle it.
    burst = regular(T0 + YOUNG_S, 10.0, 3 * BURST_PER_S, "burst")
    found = severities(make_engine(cheap), bursty_stream(extra=burst))
    assert found and {severity for severity, _ in found} == {WARNING}
    assert found[0][1] <= 2.0
    without = make_engine(cheap, burst_cold_windows=0)
    assert CRITICAL in {
        severity for severity, _ in severities(without, bursty_stream(extra=burst))
    }


def test_what_a_young_context_s_burst_may_cost_shrinks_as_it_ages() -> None:
    # The same burst at 110 windows: a sixth of the way back to warm, its
    # bursts may cost a sixth of four windows at the critical rate, and this
    # one costs more: critical in its first window.
    burst = regular(T0 + 1102.0, 10.0, 3 * BURST_PER_S, "burst")
    found = [
        (severity, after - 300.0)
        for severity, after in severities(
            make_engine(cheap), bursty_stream(extra=burst)
        )
    ]
    assert found[0][0] == WARNING
    assert first_critical(found) <= 10.0


def test_a_young_context_s_bursts_are_taken_to_reach_less_as_it_ages() -> None:
    # One and a half times the burst rate: 1.6 USD/h while it lasts.
    burst = regular(T0 + 902.0, BURST_S, 1.5 * BURST_PER_S, "burst")
    events = bursty_stream(extra=burst)
    # 90 windows in, half-way from warm to burst_cold_windows: its bursts are
    # taken to reach half-way from the warning rate (0.5 USD/h) to the
    # critical one (2 USD/h), so this one warns as on an older context...
    found = spikes(make_engine(cheap), events)
    assert [severity for severity, _ in found] == [WARNING]
    # ...and with a longer cold start, younger, it waits.
    assert spikes(make_engine(cheap, burst_cold_windows=600), events) == []


def test_a_short_rise_of_a_young_context_waits_as_its_spikes_do() -> None:
    # Six times the base rate for 25 s: under the spike thresholds, over the
    # rise path's sequential test, which an older context's warns on within
    # three windows.
    rise = regular(T0 + YOUNG_S, 25.0, 3.0, "rise")
    assert spikes(make_engine(cheap), bursty_stream(extra=rise)) == []
    later = regular(T0 + 1302.0, 25.0, 3.0, "rise")
    found = opened(feed(make_engine(cheap), bursty_stream(extra=later)), COST_SPIKE)
    assert [t.evidence["test"] for t in found] == ["sequential"]
    assert found[0].evidence["horizon_s"] <= 40.0


def _first_burst(seconds: float) -> list[Event]:
    """A busier young context (2 calls a second) with an excursion of 8
    calls a second more from YOUNG_S for ``seconds``: five times its level,
    under the spike thresholds and under the cut that restarts the
    sequential test, so each of its windows adds to the test's score."""
    base = steady(2.0, T0, 1500.0)
    excursion = regular(T0 + YOUNG_S, seconds, 8.0, "burst")
    return sorted([*base, *excursion], key=lambda e: e.time)


def test_a_young_context_s_first_burst_waits_on_a_longer_horizon_too() -> None:
    # Three windows of burst put the sequential test over its threshold on
    # a horizon of five windows, the burst's and a calm one after it: read
    # early, in that calm window, it is left to the window's close, where
    # the burst is known and the rest of the horizon is no level.
    assert spikes(make_engine(cheap), _first_burst(30.0)) == []
    # An older context, or one without the rule, warns on the same burst.
    found = opened(
        feed(make_engine(cheap, burst_cold_windows=0), _first_burst(30.0)),
        COST_SPIKE,
    )
    assert [t.evidence["test"] for t in found] == ["sequential"]


def test_a_young_context_s_longer_excursion_warns_once_past_a_burst() -> None:
    found = opened(feed(make_engine(cheap), _first_burst(90.0)), COST_SPIKE)
    assert [t.severity for t in found] == [WARNING]
    # Past the burst_windows (4) windows a burst is taken to last, by the
    # close of the fifth.
    assert T0 + YOUNG_S + 38.0 <= found[0].at <= T0 + YOUNG_S + 50.0


# Floods on cold functions, judged against their peers

ACCOUNT = "111122223333"
PEERS_WARM_S = 900.0


def fn(name: str) -> Context:
    return Context("aws", ACCOUNT, "us-east-1", name, "$LATEST")


def peers() -> list[Invocation]:
    """Warm neighbours: four 128 MB functions at five calls a second."""
    out: list[Invocation] = []
    for i in range(4):
        out += steady(5.0, T0, PEERS_WARM_S + 900.0, context=fn(f"peer-{i}"), seed=i)
    return out


def cold_spikes(
    events: list[Event], name: str, escalated: bool = False
) -> list[tuple[str, float, float]]:
    """The cost alerts opened on function ``name`` (with ``escalated``, and
    updated): (severity, when, since)."""
    engine = make_engine(online_model=False)
    wanted = (OPENED, UPDATED) if escalated else (OPENED,)
    return [
        (t.severity, t.at, t.starts_at)
        for t in run(engine, events)
        if t.kind == COST_SPIKE and t.event in wanted and t.context.function == name
    ]


def test_a_new_function_at_four_times_its_peers_from_its_first_call_warns() -> None:
    # Its own level is its traffic, not an excursion: nothing waits.
    start = T0 + PEERS_WARM_S
    newcomer = list(steady(20.0, start, 300.0, context=fn("busy-new"), seed=7))
    found = cold_spikes([*peers(), *newcomer], "busy-new")
    assert [severity for severity, _, _ in found] == [WARNING]
    assert found[0][1] < start + 10.0


def test_a_flood_on_a_cold_function_is_found() -> None:
    # Ordinary traffic for two minutes, then four times as much (a warning
    # against its peers) and, on another function, forty times (critical).
    start = T0 + PEERS_WARM_S
    flood_at = start + 120.0
    events: list[Event] = [*peers()]
    for name, factor in (("warned", 4.0), ("critical", 40.0)):
        events += steady(5.0, start, 600.0, context=fn(name), seed=3)
        events += steady(5.0 * factor, flood_at, 300.0, context=fn(name), seed=4)
    warned = cold_spikes(events, "warned")
    assert [severity for severity, _, _ in warned] == [WARNING]
    # Held as a young context's burst for four windows, then open as of the
    # flood's first window.
    assert flood_at + 38.0 <= warned[0][1] <= flood_at + 55.0
    assert warned[0][2] == flood_at
    # Forty times: at once, a warning while it may be a young context's
    # burst, and critical once it has cost more than one may.
    critical = cold_spikes(events, "critical", escalated=True)
    assert critical[0][0] == WARNING and critical[0][1] < flood_at + 10.0
    escalation = [at for severity, at, _ in critical if severity == CRITICAL]
    assert escalation and critical[0][1] < escalation[0] <= flood_at + 40.0


def _burst_calls(at: float, seconds: float = 30.0) -> list[Invocation]:
    """A burst of a function called only in bursts: 0.7 calls a second of
    2 s for ``seconds``, and one call that ends 3 s after it."""
    rare = fn("rare")
    calls = regular(at, seconds, 0.7, f"b{at}", billed_ms=2000.0, context=rare)
    late = regular(at + seconds + 3.0, 1.0, 1.0, f"l{at}", 2000.0, context=rare)
    return calls + late


def rare_spikes(events: list[Event]) -> list[tuple[str, float]]:
    engine = make_engine(duration_cost, online_model=False)
    return [
        (t.severity, t.at)
        for t in run(engine, events)
        if t.kind == COST_SPIKE and t.event == OPENED and t.context.function == "rare"
    ]


def test_a_function_called_only_in_bursts_learns_its_first_one() -> None:
    # It shows up with a burst whose last call ends after it, before its
    # level is known, then is silent for six minutes: the burst is learnt
    # through that late call, and the next like it raises nothing.
    start = T0 + PEERS_WARM_S + 3.0
    events = [*peers(), *_burst_calls(start), *_burst_calls(start + 360.0)]
    assert rare_spikes(events) == []
    # The same second burst going on for five minutes is found once it has
    # outlasted a burst (four windows), though its own level's deviation,
    # learnt from the first, puts it under what is far above that level:
    # above what its peers make a warning, it counts in an excursion.
    events = [*peers(), *_burst_calls(start), *_burst_calls(start + 360.0, 300.0)]
    found = rare_spikes(events)
    assert [severity for severity, _ in found] == [WARNING]
    assert start + 360.0 + 38.0 <= found[0][1] <= start + 360.0 + 60.0


def test_a_new_function_flooding_from_its_first_call_is_critical_at_once() -> None:
    # Forty times its peers from the first call: no level of its own to be
    # an excursion of, so nothing makes it a warning.
    start = T0 + PEERS_WARM_S
    newcomer = list(steady(200.0, start, 120.0, context=fn("flood-new"), seed=7))
    found = cold_spikes([*peers(), *newcomer], "flood-new", escalated=True)
    escalation = [at for severity, at, _ in found if severity == CRITICAL]
    assert escalation and escalation[0] < start + 10.0


# Settings


def test_burst_cold_windows_reaches_the_detector() -> None:
    config = detector_config(load_settings(burst_cold_windows=30))
    assert config.burst_cold_windows == 30
    assert detector_config(load_settings()).burst_cold_windows == 120
