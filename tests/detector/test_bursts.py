"""Bursty contexts: their short bursts are learnt, not flagged, while
sustained rises and critical floods still are, on hand-made streams."""

from __future__ import annotations

import doctest
import pickle
from collections.abc import Sequence

import pytest

import detector.baseline
from detector.alerts import CRITICAL, WARNING
from detector.baseline import BURST_MIN_WINDOWS, Bursts, RobustBaseline
from detector.engine import COST_SPIKE, SNAPSHOT_VERSION, Engine
from dowguard.cli import detector_config
from dowguard.config import load_settings
from dowguard.evaluate import episodes
from ingest.events import Event, Invocation
from tests.detector.streams import (
    BURST_PER_S,
    BURST_S,
    CHEAP,
    CTX,
    T0,
    bursty_stream,
    cheap,
    feed,
    make_engine,
    opened,
    regular,
    steady,
)

WARM_S = 1200.0  # 120 windows: the cost baseline is warm


# Bursts are learnt


def test_a_steady_context_still_warns_on_its_first_burst() -> None:
    found = opened(feed(make_engine(cheap), bursty_stream([1202.0])), COST_SPIKE)
    assert [t.severity for t in found] == [WARNING]
    assert T0 + 1202.0 <= found[0].at <= T0 + 1220.0
    assert found[0].evidence["rate_usd_per_hour"] > 0.5


def test_bursts_seen_before_it_was_warm_are_not_flagged_later() -> None:
    # Two bursts while the context is too young to be judged at all.
    shown = [202.0, 402.0]
    later = [1502.0, 1802.0, 2102.0]
    assert (
        opened(feed(make_engine(cheap), bursty_stream(shown + later)), COST_SPIKE) == []
    )
    # The same later bursts on a context that has not shown any do warn.
    assert len(opened(feed(make_engine(cheap), bursty_stream(later)), COST_SPIKE)) >= 1


def test_a_bursty_context_warns_once_then_knows_its_bursts() -> None:
    found = opened(
        feed(make_engine(cheap), bursty_stream([1202.0, 1502.0, 1802.0, 2102.0])),
        COST_SPIKE,
    )
    assert len(found) == 1
    assert found[0].at < T0 + 1502.0


def test_bursts_are_not_learnt_when_learning_is_off() -> None:
    engine = make_engine(cheap, burst_margin=0.0)
    found = opened(
        feed(engine, bursty_stream([202.0, 402.0, 1502.0, 1802.0, 2102.0])), COST_SPIKE
    )
    assert len(found) == 3


def test_a_burst_far_beyond_the_known_ones_still_warns() -> None:
    # Small bursts, far above the level but worth no warning, are learnt...
    small = [
        *regular(T0 + 202.0, BURST_S, 5.0, "s1"),
        *regular(T0 + 402.0, 10.0, 5.0, "s2"),
    ]
    engine = make_engine(cheap)
    found = opened(feed(engine, bursty_stream([1802.0], extra=small)), COST_SPIKE)
    # ...and a burst six times their size warns all the same.
    assert [t.severity for t in found] == [WARNING]
    assert T0 + 1802.0 <= found[0].at <= T0 + 1820.0
    assert _burst_fields(engine)[0] > 0.1


# What bursts cannot teach


def test_a_sustained_attack_at_burst_level_on_a_bursty_context_is_caught() -> None:
    # An attacker shows short bursts first, then keeps up the same rate: held
    # back as a burst for four windows, it warns in the fifth, as of its start.
    attack = regular(T0 + 1502.0, 300.0, BURST_PER_S, "attack")
    found = opened(
        feed(make_engine(cheap), bursty_stream([202.0, 402.0], extra=attack)),
        COST_SPIKE,
    )
    assert [t.severity for t in found] == [WARNING]
    assert T0 + 1540.0 < found[0].at <= T0 + 1555.0
    assert found[0].starts_at == T0 + 1500.0
    assert found[0].evidence["held_as_burst"]["windows"] == 5
    # The cost of all its windows so far, not of the last one alone.
    assert found[0].cost_usd > 4 * 10 * BURST_PER_S * CHEAP


def test_a_flood_at_the_critical_rate_is_critical_at_once_after_bursts() -> None:
    flood = regular(T0 + 1802.0, 120.0, 10 * BURST_PER_S, "flood")
    found = opened(
        feed(make_engine(cheap), bursty_stream([202.0, 402.0], extra=flood)), COST_SPIKE
    )
    assert [t.severity for t in found] == [CRITICAL]
    assert found[0].at - (T0 + 1802.0) <= 3.0
    assert found[0].evidence["early"] is True


def test_a_sustained_rise_teaches_nothing() -> None:
    # Five minutes at the burst rate (a warning), then a burst like one
    # window of it: it is still news.
    rise = regular(T0 + 1202.0, 300.0, BURST_PER_S, "rise")
    found = opened(
        feed(make_engine(cheap), bursty_stream([2102.0], extra=rise)), COST_SPIKE
    )
    assert len(found) == 2
    assert found[1].at >= T0 + 2102.0


def test_a_long_critical_flood_teaches_nothing() -> None:
    # Two minutes at the critical rate: far longer than a burst, so a burst
    # like one window of it afterwards is critical all the same.
    flood = regular(T0 + 1202.0, 120.0, CRIT_PER_S, "flood")
    found = episodes(
        feed(
            make_engine(cheap),
            bursty_stream(
                until=2400.0,
                extra=[*flood, *regular(T0 + 1802.0, BURST_S, CRIT_PER_S, "like")],
            ),
        )
    )
    assert [(a.kind, a.severity) for a in found] == [
        (COST_SPIKE, CRITICAL),
        (COST_SPIKE, CRITICAL),
    ]
    assert found[1].opened_at >= T0 + 1802.0


def test_a_burst_under_an_alert_of_something_before_it_teaches_nothing() -> None:
    # A rise too low to be an excursion opens an alert; a short burst past
    # the critical rate comes while it is open. It is not a burst to learn:
    # a like one after the rise has ended is critical again.
    events = [
        *regular(T0, 2700.0, 2.0, "base"),
        *regular(T0 + 1202.0, 600.0, 2.4, "rise"),
        *regular(T0 + 1502.0, BURST_S, CRIT_PER_S, "under"),
        *regular(T0 + 2402.0, BURST_S, CRIT_PER_S, "after"),
    ]
    engine = make_engine(cheap)
    found = episodes(feed(engine, sorted(events, key=lambda e: e.time)))
    assert [a.severity for a in found] == [CRITICAL, CRITICAL]
    assert found[0].opened_at < T0 + 1502.0
    assert T0 + 2402.0 <= found[1].opened_at <= T0 + 2420.0
    # The later one, with no alert before it, is the only burst learnt.
    assert _burst_fields(engine)[1] >= T0 + 2400.0


# Bursts past the critical rate

#: A hundred and twenty calls a second: about 4.3 USD/h over a whole window,
#: past the critical rate of the base rate (2 USD/h above it).
CRIT_PER_S = 120.0


def critical_bursts(
    at: Sequence[float] = (1202.0,), per_s: float = CRIT_PER_S
) -> list[Invocation]:
    """Bursts of BURST_S seconds at ``per_s``, starting at the offsets given."""
    out: list[Invocation] = []
    for n, offset in enumerate(at):
        out.extend(regular(T0 + offset, BURST_S, per_s, f"crit{n}"))
    return out


def test_a_first_burst_past_the_critical_rate_is_critical() -> None:
    # 130 windows old: a younger context's first burst only warns.
    shown = critical_bursts([1302.0])
    found = episodes(feed(make_engine(cheap), bursty_stream(extra=shown)))
    assert [t.severity for t in found] == [CRITICAL]
    assert T0 + 1302.0 <= found[0].opened_at <= T0 + 1320.0


def test_bursts_past_the_critical_rate_are_learnt_and_not_alerted_again() -> None:
    engine = make_engine(cheap)
    shown = critical_bursts([1302.0, 1502.0, 1802.0, 2102.0])
    found = episodes(feed(engine, bursty_stream(extra=shown)))
    # The first one, nothing yet being known, is critical; like ones are not.
    assert [t.severity for t in found] == [CRITICAL]
    assert found[0].opened_at < T0 + 1502.0
    level, _ = _burst_fields(engine)
    assert level > 2.0


def test_bursts_learnt_while_cold_hold_back_a_like_critical_burst() -> None:
    # Shown while the context is too young to be judged at all.
    shown = critical_bursts([202.0, 402.0])
    later = critical_bursts([1502.0, 2102.0])
    assert opened(feed(make_engine(cheap), bursty_stream(extra=shown + later))) == []
    # Without them, the same later bursts are critical.
    found = episodes(feed(make_engine(cheap), bursty_stream(extra=later)))
    assert CRITICAL in [t.severity for t in found]


def test_a_flood_at_the_height_of_the_bursts_that_lasts_is_critical() -> None:
    flood = regular(T0 + 1802.0, 120.0, CRIT_PER_S, "flood")
    engine = make_engine(cheap)
    found = opened(feed(engine, bursty_stream(extra=critical_bursts([202.0]) + flood)))
    assert [t.severity for t in found] == [CRITICAL]
    alert = found[0]
    # Held back for burst_windows (4) windows, critical in the fifth, as of
    # the flood's first window and with the cost of all of it so far.
    assert T0 + 1840.0 < alert.at <= T0 + 1855.0
    assert alert.starts_at == T0 + 1800.0
    assert alert.evidence["held_as_burst"]["windows"] == 5
    assert alert.cost_usd > 38.0 * CRIT_PER_S * CHEAP
    # A flood that is not one teaches nothing: the level is the burst's.
    assert _burst_fields(engine)[1] < T0 + 1800.0


def test_a_flood_beyond_the_bursts_is_critical_early_as_before() -> None:
    # Twenty times the height of the bursts shown, so past burst_margin (3)
    # times their excess in a fraction of a window.
    flood = regular(T0 + 1802.0, 20.0, 20 * CRIT_PER_S, "flood")
    shown = critical_bursts([202.0, 402.0])
    found = opened(feed(make_engine(cheap), bursty_stream(extra=shown + flood)))
    assert [t.severity for t in found] == [CRITICAL]
    assert found[0].evidence["early"] is True
    assert found[0].at - (T0 + 1802.0) <= 2.0
    assert found[0].starts_at == found[0].at


def test_bursts_of_a_history_hold_back_nothing_beyond_their_margin() -> None:
    # Four times the height of the bursts shown: past burst_margin (3) times
    # their excess over a whole window, so it is critical in its first one.
    burst = regular(T0 + 1802.0, BURST_S, 4 * CRIT_PER_S, "burst")
    shown = critical_bursts([202.0, 402.0])
    found = opened(feed(make_engine(cheap), bursty_stream(extra=shown + burst)))
    assert [t.severity for t in found] == [CRITICAL]
    assert T0 + 1802.0 < found[0].at <= T0 + 1815.0


# Checkpoints


@pytest.mark.parametrize("cut", [0.2, 0.4, 0.55, 0.8])
def test_snapshot_and_restore_keep_what_was_learnt_of_bursts(cut: float) -> None:
    events = bursty_stream([202.0, 402.0, 1502.0, 1802.0, 2102.0])
    whole_engine = make_engine(cheap)
    whole = feed(whole_engine, events)
    split = int(len(events) * cut)
    first = make_engine(cheap)
    head = feed(first, events[:split], flush=False)
    blob = first.snapshot(0)
    second = make_engine(cheap)
    second.restore(0, blob)
    assert _burst_fields(second) == _burst_fields(first)
    tail = feed(second, events[split:])
    assert [t.to_json() for t in head + tail] == [t.to_json() for t in whole]
    # What the bursts taught survives the round trip to the end.
    assert _burst_fields(second) == _burst_fields(whole_engine)
    assert _burst_fields(second)[0] > 0.5


def _burst_fields(engine: Engine) -> tuple[float, float]:
    state = engine._find(CTX)
    assert state is not None
    bursts = state.baseline.bursts
    return (0.0, 0.0) if bursts is None else (bursts.level, bursts.at)


@pytest.mark.parametrize("cut", [0.1, 0.3, 0.5, 0.7])
def test_snapshot_and_restore_keep_bursts_past_the_critical_rate(cut: float) -> None:
    # Cuts before the bursts are learnt, between them, and inside the flood
    # that outlasts them (with its run of windows in progress).
    flood = regular(T0 + 1802.0, 120.0, CRIT_PER_S, "flood")
    events = bursty_stream(extra=critical_bursts([202.0, 1202.0, 1502.0]) + flood)
    whole_engine = make_engine(cheap)
    whole = feed(whole_engine, events)
    split = int(len(events) * cut)
    first = make_engine(cheap)
    head = feed(first, events[:split], flush=False)
    second = make_engine(cheap)
    second.restore(0, first.snapshot(0))
    tail = feed(second, events[split:])
    assert [t.to_json() for t in head + tail] == [t.to_json() for t in whole]
    assert _burst_fields(second) == _burst_fields(whole_engine)
    # The cold bursts were learnt, so only the flood is flagged, from its start.
    found = opened(whole)
    assert [(t.severity, t.starts_at) for t in found] == [(CRITICAL, T0 + 1800.0)]


def test_a_version_5_checkpoint_inside_a_run_resumes_from_its_latest_window() -> None:
    flood = regular(T0 + 1802.0, 120.0, CRIT_PER_S, "flood")
    events = bursty_stream(extra=critical_bursts([202.0]) + flood)
    split = next(i for i, e in enumerate(events) if e.time >= T0 + 1828.0)
    first = make_engine(cheap)
    head = feed(first, events[:split], flush=False)
    version, part = pickle.loads(first.snapshot(0))
    assert version == SNAPSHOT_VERSION
    running = part.contexts[CTX].baseline.bursts
    assert running is not None and running.run_windows >= 2
    # What a version 5 checkpoint lacks: the run's first window and its cost.
    del running.run_first, running.run_cost
    legacy = pickle.dumps((5, part), protocol=5)
    second = make_engine(cheap)
    second.restore(0, legacy)
    found = opened(head + feed(second, events[split:]))
    # Still critical after the fifth window, as of the run's latest window
    # at the cut, the earliest the old state knows of.
    assert [t.severity for t in found] == [CRITICAL]
    assert T0 + 1810.0 <= found[0].starts_at <= T0 + 1820.0
    assert T0 + 1840.0 < found[0].at <= T0 + 1855.0


def test_a_checkpoint_from_before_bursts_were_learnt_resumes() -> None:
    events = bursty_stream([1502.0, 1802.0])
    whole = feed(make_engine(cheap), events)
    split = int(len(events) * 0.3)
    first = make_engine(cheap)
    head = feed(first, events[:split], flush=False)
    version, part = pickle.loads(first.snapshot(0))
    for state in part.contexts.values():
        # What an older checkpoint lacks: the field and the baseline's slot.
        del state.burst_rate
        state.baseline._bursts = None
    legacy = pickle.dumps((version, part), protocol=5)
    second = make_engine(cheap)
    second.restore(0, legacy)
    tail = feed(second, events[split:])
    assert [t.to_json() for t in head + tail] == [t.to_json() for t in whole]


def test_a_baseline_pickled_before_bursts_existed_loads_without_any() -> None:
    old = RobustBaseline(half_life=20.0, warmup=5)
    for x in [1.0, 2.0, 1.5]:
        old.learn_one(x)
    state = old.__getstate__()
    del state["_bursts"]
    loaded = RobustBaseline.__new__(RobustBaseline)
    loaded.__setstate__(state)
    assert loaded.bursts is None
    assert (loaded.n, loaded.mean) == (old.n, old.mean)


# The rule itself


def _grown(n: int = BURST_MIN_WINDOWS) -> RobustBaseline:
    baseline = RobustBaseline(warmup=5)
    for _ in range(n):
        baseline.learn_one(0.01)
    return baseline


BURSTS = Bursts(max_windows=2, half_life_s=3600.0, window_s=10.0)


def test_a_short_excursion_is_learnt_once_it_is_over() -> None:
    b = _grown()
    BURSTS.observe(b, 0.0, 0.4, excursion=True, learnable=True)
    BURSTS.observe(b, 10.0, 0.6, excursion=True, learnable=True)
    assert BURSTS.envelope(b, 10.0) == 0.0
    BURSTS.observe(b, 20.0, 0.01, excursion=False, learnable=True)
    assert BURSTS.envelope(b, 10.0) == pytest.approx(0.6)
    assert BURSTS.envelope(b, 3610.0) == pytest.approx(0.3)
    # A smaller one later keeps the larger, faded, level.
    BURSTS.observe(b, 3610.0, 0.2, excursion=True, learnable=True)
    BURSTS.observe(b, 3620.0, 0.0, excursion=False, learnable=True)
    assert BURSTS.envelope(b, 3610.0) == pytest.approx(0.3)


def test_an_excursion_keeps_its_first_window_its_length_and_its_cost() -> None:
    b = _grown()
    BURSTS.observe(b, 0.0, 0.4, excursion=True, learnable=True, cost=0.25)
    BURSTS.observe(b, 10.0, 0.6, excursion=True, learnable=True, cost=0.5)
    # The next window would go on with it, one after a gap would not.
    assert (BURSTS.run_start(b, 20.0), BURSTS.run_length(b, 20.0)) == (0.0, 3)
    assert (BURSTS.run_start(b, 40.0), BURSTS.run_length(b, 40.0)) == (40.0, 1)
    assert not BURSTS.outlasted(b)
    BURSTS.observe(b, 20.0, 0.6, excursion=True, learnable=True, cost=0.5)
    # Three windows: longer than a burst of two, and nothing is learnt of it.
    assert BURSTS.outlasted(b)
    state = b.bursts
    assert state is not None
    assert (state.run_first, state.run_cost) == (0.0, 1.25)
    BURSTS.observe(b, 30.0, 0.0, excursion=False, learnable=True)
    assert BURSTS.envelope(b, 30.0) == 0.0
    assert not BURSTS.outlasted(b)


def test_a_burst_state_pickled_before_runs_kept_their_start_loads() -> None:
    b = _grown()
    BURSTS.observe(b, 0.0, 0.4, excursion=True, learnable=True, cost=0.25)
    BURSTS.observe(b, 10.0, 0.6, excursion=True, learnable=True, cost=0.5)
    state = b.bursts
    assert state is not None
    del state.run_first, state.run_cost
    loaded = pickle.loads(pickle.dumps(state))
    assert (loaded.run_first, loaded.run_cost) == (10.0, 0.0)
    assert (loaded.run_windows, loaded.run_peak) == (2, 0.6)


def test_an_excursion_that_does_not_calm_down_is_not_a_burst() -> None:
    b = _grown()
    BURSTS.observe(b, 0.0, 0.6, excursion=True, learnable=True)
    # Below the caller's bar but not back near the level: it goes on.
    BURSTS.observe(b, 10.0, 0.3, excursion=False, learnable=True)
    BURSTS.observe(b, 20.0, 0.3, excursion=False, learnable=True)
    BURSTS.observe(b, 30.0, 0.0, excursion=False, learnable=True)
    assert BURSTS.envelope(b, 30.0) == 0.0
    assert b.bursts is None


def test_an_excursion_held_open_by_its_alert_counts_its_calm_windows_out() -> None:
    b = _grown()
    BURSTS.observe(b, 0.0, 0.6, excursion=True, learnable=True)
    for i in range(1, 4):
        # Calm, but its alert is still open: not over yet.
        BURSTS.observe(b, 10.0 * i, 0.0, excursion=False, learnable=True, held=True)
    assert BURSTS.running(b)
    BURSTS.observe(b, 40.0, 0.0, excursion=False, learnable=True)
    # As of its last window held open.
    assert BURSTS.envelope(b, 30.0) == pytest.approx(0.6)


def test_an_excursion_with_a_critical_window_is_not_learnt() -> None:
    b = _grown()
    BURSTS.observe(b, 0.0, 0.6, excursion=True, learnable=True)
    BURSTS.observe(b, 10.0, 3.0, excursion=True, learnable=False)
    BURSTS.observe(b, 20.0, 0.0, excursion=False, learnable=True)
    assert BURSTS.envelope(b, 20.0) == 0.0


def test_an_idle_gap_ends_an_excursion() -> None:
    b = _grown()
    BURSTS.observe(b, 0.0, 0.6, excursion=True, learnable=True)
    # The next window observed is a minute later: the ones between were empty.
    BURSTS.observe(b, 60.0, 0.5, excursion=True, learnable=True)
    assert BURSTS.envelope(b, 0.0) == pytest.approx(0.6)
    assert BURSTS.running(b)


def test_before_its_level_is_known_only_a_burst_followed_by_silence_is_learnt() -> None:
    young = _grown(1)
    # A new function's first busy windows, then its usual traffic, as dear:
    # its level, calm only against what the baseline learnt of it.
    BURSTS.observe(young, 0.0, 0.6, excursion=True, learnable=True, cost=1.0)
    BURSTS.observe(young, 10.0, 0.05, excursion=False, learnable=True, cost=0.9)
    BURSTS.observe(young, 20.0, 0.0, excursion=False, learnable=True, cost=0.9)
    assert not BURSTS.running(young)
    BURSTS.observe(young, 300.0, 0.0, excursion=False, learnable=True)
    assert BURSTS.envelope(young, 300.0) == 0.0
    # A burst and then nothing for a while: a burst.
    BURSTS.observe(young, 400.0, 0.6, excursion=True, learnable=True, cost=1.0)
    BURSTS.observe(young, 700.0, 0.0, excursion=False, learnable=True)
    assert BURSTS.envelope(young, 400.0) == pytest.approx(0.6)


def _young_windows(windows: Sequence[tuple[float, float, float]]) -> RobustBaseline:
    """A baseline too young to know its level, shown ``windows`` as (start,
    excess, cost): an excursion when the excess is 0.3 or more."""
    young = _grown(1)
    for start, excess, cost in windows:
        BURSTS.observe(young, start, excess, excess >= 0.3, True, cost=cost)
    return young


def test_a_young_burst_s_calls_that_end_late_do_not_keep_it_from_silence() -> None:
    # Two windows of burst, then one quiet window that still holds a few of
    # its calls (a quarter of its windows' cost at most): not yet as long
    # as the burst.
    young = _young_windows([(0.0, 0.6, 1.0), (10.0, 0.3, 1.2), (20.0, 0.05, 0.2)])
    assert BURSTS.running(young) and BURSTS.envelope(young, 20.0) == 0.0
    # A second makes the quiet as long as the burst: learnt.
    BURSTS.observe(young, 30.0, 0.02, excursion=False, learnable=True, cost=0.1)
    assert BURSTS.envelope(young, 20.0) == pytest.approx(0.6)
    assert not BURSTS.running(young)


def test_a_young_run_busy_again_after_a_short_quiet_teaches_no_burst() -> None:
    # As dear as the run again after one quiet window: no silence followed.
    young = _young_windows([(0.0, 0.6, 1.0), (10.0, 0.05, 0.1), (20.0, 0.1, 0.8)])
    BURSTS.observe(young, 300.0, 0.0, excursion=False, learnable=True)
    assert BURSTS.envelope(young, 300.0) == 0.0


def test_one_quiet_window_after_a_young_window_is_not_yet_silence() -> None:
    # A new function at a few calls a window has a quiet one now and then:
    # two quiet windows at least make silence, even after a one-window run.
    young = _young_windows([(0.0, 0.6, 1.0), (10.0, 0.0, 0.2), (20.0, 0.0, 1.0)])
    BURSTS.observe(young, 300.0, 0.0, excursion=False, learnable=True)
    assert BURSTS.envelope(young, 300.0) == 0.0


def test_a_version_10_checkpoint_in_a_young_run_s_quiet_restores() -> None:
    young = _young_windows([(0.0, 0.6, 1.0), (10.0, 0.6, 1.0), (20.0, 0.05, 0.2)])
    state = young.bursts
    assert state is not None and state.run_calm == 20.0
    # What a version 10 checkpoint lacks: its quiet is taken to begin after
    # its latest window, and a silence after it still makes it a burst.
    del state.run_calm
    restored = RobustBaseline(warmup=5)
    restored._bursts = pickle.loads(pickle.dumps(state))
    assert restored.bursts is not None and restored.bursts.run_calm == 0.0
    BURSTS.observe(restored, 300.0, 0.0, excursion=False, learnable=True)
    assert BURSTS.envelope(restored, 10.0) == pytest.approx(0.6)


def test_bursts_refuse_settings_that_make_no_sense() -> None:
    with pytest.raises(ValueError, match="max_windows"):
        Bursts(0, 3600.0, 10.0)
    with pytest.raises(ValueError, match="half_life_s"):
        Bursts(4, 0.0, 10.0)
    with pytest.raises(ValueError, match="window_s"):
        Bursts(4, 3600.0, -1.0)


def test_the_baseline_examples_hold() -> None:
    result = doctest.testmod(detector.baseline)
    assert result.attempted >= 3 and result.failed == 0


def test_burst_settings_reach_the_detector() -> None:
    settings = load_settings(
        burst_margin=2.0, burst_windows=3, burst_half_life_s=7200.0
    )
    config = detector_config(settings)
    assert (config.burst_margin, config.burst_windows) == (2.0, 3)
    assert config.burst_half_life_s == 7200.0
    assert Engine(detector_config(load_settings(burst_margin=0.0)))._bursts is None


# The sustained-rise path and learnt bursts

#: Three times the usual count of a Poisson stream of 2 calls a second, at
#: a hundred-thousandth of a dollar: under the spike path's dollar floor,
#: over the sustained-rise path's bars, and far within the bursts' excess.
RISE_PER_S = 6.0
#: Bursts of 60 calls a second, four of them (two while still cold).
LEARNT = (400.0, 800.0, 1202.0, 1600.0)


def _risen(seconds: float, bursts: Sequence[float]) -> list[Event]:
    events: list[Event] = [*steady(2.0, T0, 2600.0, seed=1)]
    for n, at in enumerate(bursts):
        events.extend(regular(T0 + at, BURST_S, 60.0, f"burst{n}"))
    events.extend(regular(T0 + 2000.0, seconds, RISE_PER_S, "rise"))
    return sorted(events, key=lambda e: e.time)


def test_a_short_rise_on_a_context_without_bursts_warns() -> None:
    found = opened(feed(make_engine(cheap), _risen(30.0, ())), COST_SPIKE)
    assert [t.severity for t in found] == [WARNING]
    assert T0 + 2000.0 <= found[0].at <= T0 + 2040.0
    assert found[0].evidence["horizon_s"] == 30.0


def test_a_short_rise_within_the_learnt_bursts_waits_like_a_burst() -> None:
    assert opened(feed(make_engine(cheap), _risen(30.0, LEARNT)), COST_SPIKE) == []


def test_a_rise_that_outlasts_the_learnt_bursts_warns() -> None:
    found = opened(feed(make_engine(cheap), _risen(300.0, LEARNT)), COST_SPIKE)
    assert [t.severity for t in found] == [WARNING]
    # Past the four windows a burst lasts at most, and not much later: its
    # windows are as steep as a burst's, so the sequential test starts
    # afresh on each until the fifth, and needs three more from there.
    assert T0 + 2040.0 <= found[0].at <= T0 + 2070.0
