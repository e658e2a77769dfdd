"""A context whose usual was learnt from few calls: a cost spike on its rate
alone is critical only once its excursion so far averages the critical rate,
on hand-made streams (a batch job's first run, floods, the same excursion on
an established context)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from detector.alerts import CRITICAL, OPENED, UPDATED, WARNING
from detector.engine import COST_SPIKE, DetectorConfig, Engine
from dowguard.cli import detector_config
from dowguard.config import load_settings
from ingest.events import Event, Invocation
from tests.detector.streams import CTX, T0, feed, make_engine, regular

#: What a call of the batch-like function costs (a few seconds at 3 GB).
EACH_USD = 4e-4
#: Its history: one call in two minutes for 25 minutes (12 calls, 150
#: windows: warm and past burst_cold_windows, so only the calls are few).
HISTORY_S = 1500.0
ONSET = T0 + HISTORY_S


def priced(inv: Invocation) -> float:
    """EACH_USD a call; a tenth of it for the calls tagged ``many``, so that
    a history of ten times as many calls costs the same per hour."""
    each = EACH_USD / 10 if inv.request_id.startswith("many") else EACH_USD
    return each * inv.count


def few_calls() -> list[Invocation]:
    return regular(T0, HISTORY_S, 1 / 120.0, "few")


def many_calls() -> list[Invocation]:
    """The same spend per hour as few_calls in ten times the calls."""
    return regular(T0, HISTORY_S, 1 / 12.0, "many")


def batch(clump_at: float = 200.5, clump: int = 18) -> list[Invocation]:
    """A batch job's first run from ONSET: half a call a second for five
    minutes (0.72 USD/h, a warning's worth above the usual, under the
    critical rate), and ``clump`` calls within two seconds ``clump_at``
    seconds in, which lift their window over the critical rate."""
    run = regular(ONSET, 300.0, 0.5, "batch")
    start = ONSET + clump_at
    extra = regular(start, 2.0, clump / 2.0, "clump")
    return sorted([*run, *extra], key=lambda inv: inv.time)


def transitions(
    history: Sequence[Event], after: Sequence[Event], **overrides: object
) -> tuple[Engine, list[tuple[str, float]]]:
    """Feed ``history`` then ``after``; the engine and the cost alert's
    openings and escalations as (severity, seconds after ONSET)."""
    engine = make_engine(priced, **overrides)
    feed(engine, history, flush=False)
    found = [
        (t.severity, t.at - ONSET)
        for t in feed(engine, after)
        if t.kind == COST_SPIKE and t.event in (OPENED, UPDATED)
    ]
    return engine, found


def severities(found: list[tuple[str, float]]) -> set[str]:
    return {severity for severity, _ in found}


def calls_learnt(history: Sequence[Event], **overrides: object) -> float:
    engine = make_engine(priced, **overrides)
    feed(engine, history, flush=False)
    state = engine._find(CTX)
    assert state is not None
    return engine._calls_learnt(state)


def test_the_calls_learnt_are_those_of_the_history() -> None:
    assert 10.0 <= calls_learnt(few_calls()) <= len(few_calls())
    assert calls_learnt(many_calls()) >= DetectorConfig().established_calls


def test_a_batch_s_first_run_on_a_context_with_few_calls_stays_a_warning() -> None:
    _, found = transitions(few_calls(), batch())
    assert severities(found) == {WARNING}
    # Found all the same, before the clump.
    assert found[0][1] < 200.5


def test_the_same_run_on_an_established_context_is_critical() -> None:
    _, found = transitions(many_calls(), batch())
    assert CRITICAL in severities(found)
    # At the clump, which lifts its window over the critical rate.
    first = min(after for severity, after in found if severity == CRITICAL)
    assert 200.5 <= first <= 212.0


def test_without_the_rule_the_batch_turns_critical_at_the_clump() -> None:
    _, found = transitions(few_calls(), batch(), established_calls=0)
    first = min(after for severity, after in found if severity == CRITICAL)
    assert 200.5 <= first <= 212.0


def test_the_edge_of_established_calls() -> None:
    # What the context has learnt when the clump comes: the history and
    # the run's windows before its warning opened (clipped, as a count far
    # above the usual is), which is under the default by far.
    before = [inv for inv in batch() if inv.time < ONSET + 200.0]
    learnt = calls_learnt([*few_calls(), *before])
    assert len(few_calls()) < learnt < DetectorConfig().established_calls / 2
    # One call more than that: it is not established, the clump only warns.
    least = math.floor(learnt) + 1
    _, found = transitions(few_calls(), batch(), established_calls=least)
    assert severities(found) == {WARNING}
    # As many: it is, and the clump is critical.
    least = math.floor(learnt)
    _, found = transitions(few_calls(), batch(), established_calls=least)
    assert CRITICAL in severities(found)


def critical_rate(history: Sequence[Event]) -> float:
    """The critical cost rate of the context after ``history``, USD/h."""
    engine = make_engine(priced)
    feed(engine, history, flush=False)
    state = engine._find(CTX)
    assert state is not None
    reference = engine._reference(state, ONSET)
    assert reference is not None
    return engine._thresholds(reference)[1]


def test_a_run_turns_critical_once_its_mean_reaches_the_critical_rate() -> None:
    # Two minutes at half a call a second, then four a second (5.8 USD/h).
    slow, fast, lead = 0.5, 4.0, 120.0
    run = [
        *regular(ONSET, lead, slow, "slow"),
        *regular(ONSET + lead, 240.0, fast, "fast"),
    ]
    crit = critical_rate(few_calls()) / 3600.0 / EACH_USD  # calls a second
    # When the calls since the run's first window average the critical rate.
    crossing = (fast - slow) * lead / (fast - crit)
    _, found = transitions(few_calls(), run)
    first = min(after for severity, after in found if severity == CRITICAL)
    assert crossing <= first <= crossing + 10.0
    # A finding critical on its rate came before it, and only warned.
    assert found[0][0] == WARNING and found[0][1] < lead + 10.0
    # On the established context the fast part is critical at once.
    _, found = transitions(many_calls(), run)
    first = min(after for severity, after in found if severity == CRITICAL)
    assert lead <= first <= lead + 5.0


def test_a_flood_on_a_context_with_few_calls_is_critical_at_once() -> None:
    # Ten calls a second: 14 USD/h, seven times the critical rate.
    flood = regular(ONSET, 60.0, 10.0, "flood")
    _, found = transitions(few_calls(), flood)
    assert found and found[0][0] == CRITICAL
    assert found[0][1] <= 3.0


def test_a_flood_on_a_new_function_judged_against_peers_is_critical_at_once() -> None:
    # A function with no calls learnt at all floods from its first call,
    # judged against its warm peers (same account, architecture and size).
    peer = CTX._replace(function="peer")
    peers = [
        Invocation(peer, inv.time, inv.request_id, 100.0, 100.0, 128)
        for inv in regular(T0, HISTORY_S, 2.0, "many-peer")
    ]
    fresh = CTX._replace(function="fresh")
    flood = [
        Invocation(fresh, inv.time, inv.request_id, 100.0, 100.0, 128)
        for inv in regular(ONSET, 60.0, 10.0, "flood")
    ]
    engine = make_engine(priced)
    feed(engine, peers, flush=False)
    found = [
        (t.severity, t.at - ONSET)
        for t in feed(engine, flood)
        if t.kind == COST_SPIKE and t.context == fresh
    ]
    assert found and found[0][0] == CRITICAL and found[0][1] <= 3.0


def test_without_bursts_learnt_the_open_alert_is_the_excursion() -> None:
    # burst_margin 0: no excursion is read; the warning opened by the run
    # spans it, and its cost so far is under the critical rate at the clump.
    _, found = transitions(few_calls(), batch(), burst_margin=0.0)
    assert severities(found) == {WARNING}
    _, found = transitions(few_calls(), batch(), burst_margin=0.0, established_calls=0)
    assert CRITICAL in severities(found)


def test_established_calls_is_a_setting() -> None:
    assert detector_config(load_settings(established_calls=7)).established_calls == 7
    # The CLI's default is the detector's.
    default = detector_config(load_settings()).established_calls
    assert default == DetectorConfig().established_calls
