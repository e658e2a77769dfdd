"""A context's own burst length, on hand-made streams: the bursts of a slow
function whose calls end after them, the hold that length makes on the spike
and rise paths, its bound, the durations of a burst in progress, a loop's
waves, and what a replay makes of a recording's end."""

from __future__ import annotations

import pickle
import random

import pytest

from detector.alerts import CRITICAL, OPENED, RESOLVED, WARNING, Transition
from detector.baseline import Bursts, BurstState, RobustBaseline
from detector.engine import COST_SPIKE, SNAPSHOT_VERSION, Engine
from detector.replay import Drain, Replay
from detector.rules import DURATION_INFLATION, began_in_burst
from ingest.events import Event, Invocation, InvocationStart
from tests.detector.streams import (
    CTX,
    T0,
    bursty_stream,
    cheap,
    feed,
    make_engine,
    opened,
    regular,
    sqs_loop,
)
from tests.detector.test_false_alerts_warm import by_time, lognormal_calls

#: USD per billed millisecond: the base of one 2 s call a second is 0.33 USD/h.
PER_MS = 4.6e-8


def price(inv: Invocation) -> float:
    return PER_MS * inv.billed_ms * inv.count


def spread(start: float, n: int, billed_ms: float, tag: str) -> list[Invocation]:
    """``n`` calls reported evenly over the window from ``start``."""
    return [
        Invocation(
            CTX,
            start + (i + 0.5) * 10.0 / n,
            f"{tag}-{start}-{i}",
            billed_ms,
            billed_ms,
            128,
        )
        for i in range(n)
    ]


def slow_burst(
    start: float, tag: str, high: int = 0, tail: int = 5
) -> list[Invocation]:
    """A burst of a slow function: three windows of 60 calls of 3 s (3 USD/h
    above the base), then ``high`` windows of 20 such calls (still well
    above calm against that peak), then ``tail`` windows of two 14 s calls,
    the long ones ending late: 2.4 times the level, calm against the peak
    but raised above the level."""
    out: list[Invocation] = []
    for w in range(3):
        out += spread(start + 10 * w, 60, 3000.0, f"{tag}p")
    for w in range(high):
        out += spread(start + 10 * (3 + w), 20, 3000.0, f"{tag}h")
    for w in range(tail):
        out += spread(start + 10 * (3 + high + w), 2, 14000.0, f"{tag}t")
    return out


#: Bursts while the context is young, from which it learns its bursts.
YOUNG = (300.0, 600.0, 900.0)
#: Their length: three windows and a tail of five.
LENGTH = 8


def stream(
    bursts: tuple[float, ...] = YOUNG,
    long: tuple[float, ...] = (),
    extra: list[Invocation] | None = None,
    until: float = 3000.0,
) -> list[Event]:
    """One 2 s call a second from T0, the bursts at the offsets given, and
    ``long`` ones with two more windows above calm and two fewer in their
    tail: as long in all."""
    events: list[Invocation] = regular(T0, until, 1.0, "base", billed_ms=2000.0)
    for k, at in enumerate(bursts):
        events += slow_burst(T0 + at, f"b{k}")
    for k, at in enumerate(long):
        events += slow_burst(T0 + at, f"l{k}", high=2, tail=3)
    events += extra or []
    return sorted(events, key=lambda e: e.time)


def engine(**overrides: object) -> Engine:
    return make_engine(price, online_model=False, **overrides)


def after(transitions: list[Transition], offset: float) -> list[Transition]:
    return [t for t in opened(transitions, COST_SPIKE) if t.at >= T0 + offset]


# The length is learnt with the tail


def test_a_burst_and_its_tail_teach_the_context_its_length() -> None:
    detector = engine()
    feed(detector, stream(), flush=False)
    known = detector._parts[0].contexts[CTX].baseline.bursts
    assert known is not None and known.span == LENGTH
    bursts = detector._bursts
    assert bursts is not None
    assert bursts.hold_windows(detector._parts[0].contexts[CTX].baseline) == LENGTH


def test_bursts_without_a_tail_keep_the_fixed_length() -> None:
    b = RobustBaseline(warmup=5)
    for _ in range(10):
        b.learn_one(0.0)
    bursts = Bursts(
        max_windows=4, half_life_s=3600.0, window_s=10.0, longest_windows=12
    )
    for i in range(3):
        bursts.observe(b, 10.0 * i, 5.0, excursion=True, learnable=True)
    bursts.observe(b, 30.0, 0.0, excursion=False, learnable=True)
    assert bursts.hold_windows(b) == 4


def test_the_bound_may_not_be_below_the_fixed_length() -> None:
    with pytest.raises(ValueError, match="longest_windows"):
        Bursts(max_windows=4, half_life_s=3600.0, window_s=10.0, longest_windows=3)


# Calls that end late, told apart by their starts


def _slow_bursts(with_starts: bool) -> list[Event]:
    """One call a second of 0.5 s, and two bursts 600 s apart of 6 calls a
    second for 20 s whose calls run 5 to 35 s: two windows of starts, and
    their reports over six; with each call's START when ``with_starts``."""
    rng = random.Random(3)
    began = [(T0 + i + 0.5, 500.0, f"base-{i}") for i in range(3000)]
    for at in (1500.0, 2100.0):
        began += [
            (T0 + at + (i + 0.5) / 6.0, rng.uniform(5000.0, 35000.0), f"b{at}-{i}")
            for i in range(120)
        ]
    out: list[Event] = []
    for start, ms, rid in began:
        out.append(Invocation(CTX, start + ms / 1000.0, rid, ms, ms, 128))
        if with_starts:
            out.append(InvocationStart(CTX, start, rid))
    return by_time(out)


def cost_alerts(events: list[Event]) -> list[float]:
    """When the cost alerts opened, in seconds from T0."""
    engine = make_engine(price, online_model=False)
    return [t.at - T0 for t in opened(feed(engine, events), COST_SPIKE)]


def test_a_burst_s_calls_that_end_late_are_learnt_with_it_from_its_starts() -> None:
    # Its reports fill more windows than a burst may have, but only two
    # windows of calls began: the rest end late. The first burst is learnt
    # with them, and the second like it raises nothing.
    found = cost_alerts(_slow_bursts(with_starts=True))
    assert len(found) == 1 and 1500.0 < found[0] < 1540.0


def test_without_starts_the_same_bursts_are_too_long_to_learn() -> None:
    found = cost_alerts(_slow_bursts(with_starts=False))
    assert len(found) == 2 and 2100.0 < found[1] < 2140.0


# The spike path holds a like surge for that length


def test_a_surge_as_long_as_its_bursts_is_not_alerted() -> None:
    # Five windows above calm, more than the fixed four, within its length.
    found = after(feed(engine(), stream(long=(1500.0, 2100.0))), 1200.0)
    assert found == []


@pytest.mark.parametrize(("longest", "alerts"), [(LENGTH - 1, 2), (LENGTH, 0)])
def test_a_length_past_the_bound_is_not_learnt(longest: int, alerts: int) -> None:
    # One window short of the bursts' length, none is learnt: the surges of
    # five windows above calm outlast the fixed four and warn.
    detector = engine(burst_longest_windows=longest)
    found = after(feed(detector, stream(long=(1500.0, 2100.0))), 1200.0)
    assert [t.severity for t in found] == [WARNING] * alerts
    for t, start in zip(found, (1500.0, 2100.0), strict=False):
        # As of the surge's first window, at the close of its fifth.
        assert t.starts_at == T0 + start
        assert T0 + start + 40.0 < t.at <= T0 + start + 60.0


def test_a_flood_on_it_is_found_within_its_length() -> None:
    flood: list[Invocation] = []
    for w in range(30):
        flood += spread(T0 + 2000.0 + 10 * w, 60, 3000.0, f"f{w}")
    found = after(feed(engine(), stream(extra=flood)), 1200.0)
    assert len(found) == 1
    alert = found[0]
    assert alert.starts_at == T0 + 2000.0
    # Held while it may be a burst of its own length, eight windows; the
    # fixed length would have let it through after four.
    assert T0 + 2000.0 + 40.0 < alert.at <= T0 + 2000.0 + (LENGTH + 1) * 10.0


def test_a_critical_flood_on_it_is_not_held() -> None:
    # Ten times the bursts' excess: beyond what they hold back at all.
    flood: list[Invocation] = []
    for w in range(30):
        flood += spread(T0 + 2000.0 + 10 * w, 600, 3000.0, f"f{w}")
    found = after(feed(engine(), stream(extra=flood)), 1200.0)
    assert [t.severity for t in found] == [CRITICAL]
    assert found[0].at <= T0 + 2000.0 + 20.0


# The rise path: a burst's tail is no level


def rises(events: list[Event], **overrides: object) -> list[Transition]:
    # The spike path's dollar floor out of reach: the rise path alone judges.
    return after(feed(engine(spike_min_excess=1e9, **overrides), events), 1200.0)


def test_like_bursts_with_their_tail_raise_no_sustained_rise() -> None:
    assert rises(stream((*YOUNG, 1500.0, 1800.0, 2100.0, 2400.0))) == []


def test_the_rise_path_finds_such_bursts_when_none_are_learnt() -> None:
    found = rises(stream((*YOUNG, 1500.0, 1800.0)), burst_margin=0.0)
    assert [
        t.starts_at < T0 + start + 40.0
        for t, start in zip(found, (1500, 1800), strict=True)
    ] == [True, True]
    assert all("sustained above" in str(t.evidence["fired"]) for t in found)


def test_a_sustained_rise_on_the_bursty_function_still_warns() -> None:
    # Twice the level from 2000 s on, for ten minutes, between bursts.
    rise = regular(T0 + 2000.0, 600.0, 1.0, "rise", billed_ms=2000.0)
    found = rises(stream((*YOUNG, 1500.0), extra=rise))
    assert [t.severity for t in found] == [WARNING]
    assert T0 + 2000.0 < found[0].at <= T0 + 2000.0 + 300.0


# Checkpoints


def test_a_version_9_checkpoint_restores_without_a_length() -> None:
    events = stream(long=(2100.0,))
    split = next(i for i, e in enumerate(events) if e.time >= T0 + 1200.0)
    first = engine()
    head = feed(first, events[:split], flush=False)
    version, part = pickle.loads(first.snapshot(0))
    assert version == SNAPSHOT_VERSION == 12
    known = part.contexts[CTX].baseline.bursts
    assert known is not None and known.span == LENGTH
    # What a version 9 checkpoint lacks.
    del known.span, known.tail_last, known.tail_open, known.run_known
    second = engine()
    second.restore(0, pickle.dumps((9, part), protocol=5))
    restored = second._parts[0].contexts[CTX].baseline.bursts
    assert restored is not None and restored.span == 0
    tail = feed(second, events[split:])
    # Without the length the longer surge warns, as before lengths were learnt.
    assert [t.severity for t in after(head + tail, 1200.0)] == [WARNING]


# The end of a replay


def ending(seed: int) -> list[Event]:
    """Two calls a second of about 6 s for an hour; the recording stops
    while the latest ones still run, so it ends with their reports."""
    return by_time(list(lognormal_calls(2.0, T0, 3600.0, 6000.0, seed)))


def duration_cost(inv: Invocation) -> float:
    return 1e-6 * inv.billed_ms


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_the_long_calls_reported_after_the_last_start_raise_nothing(seed: int) -> None:
    events = ending(seed)
    # Fed to the engine as they are, the drain reads as inflated durations.
    direct = opened(feed(make_engine(duration_cost, online_model=False), events))
    assert [t.kind for t in direct] == [DURATION_INFLATION]
    assert direct[0].at > T0 + 3600.0
    result = Replay(make_engine(duration_cost, online_model=False)).run(events)
    assert opened(result.transitions) == []
    # Its opening and its end were left out, and said so.
    assert result.drained == 2


def test_an_alert_before_the_end_is_replayed_as_the_engine_raised_it() -> None:
    # Durations tripled for ten minutes from 1800 s.
    calls = list(lognormal_calls(2.0, T0, 3600.0, 6000.0, 3))
    calls = [e for e in calls if not T0 + 1800.0 <= e.time < T0 + 2400.0]
    calls += lognormal_calls(2.0, T0 + 1800.0, 600.0, 18000.0, 7)
    events = by_time(calls)
    direct = feed(make_engine(duration_cost, online_model=False), events)
    replayed = Replay(make_engine(duration_cost, online_model=False)).run(events)
    inside = [t.to_json() for t in direct if t.at <= T0 + 3600.0]
    assert DURATION_INFLATION in {t.kind for t in opened(direct)}
    assert [t.to_json() for t in replayed.transitions] == inside
    assert replayed.drained == len(direct) - len(inside)


def transition(event: str, at: float, fingerprint: str = "f1") -> Transition:
    return Transition(event, fingerprint, COST_SPIKE, WARNING, CTX, at, at, 1, 0.0)


def test_the_drain_passes_on_what_a_later_start_shows_was_no_end() -> None:
    drain = Drain(10.0)
    drain.latest = T0
    early, late = transition(OPENED, T0 + 5.0), transition(OPENED, T0 + 30.0, "f2")
    follows = transition(RESOLVED, T0 + 40.0, "f2")
    assert drain.admit([early, late]) == [early]
    # Its resolution waits with it, whatever it is.
    assert drain.admit([follows]) == []
    drain.latest = T0 + 35.0
    assert drain.admit([]) == [late, follows]
    drain.end()
    assert drain.dropped == 0


def test_the_drain_leaves_out_what_the_end_still_holds() -> None:
    drain = Drain(10.0)
    drain.latest = T0
    resolved = transition(RESOLVED, T0 + 30.0, "older")
    assert drain.admit([transition(OPENED, T0 + 30.0), resolved]) == [resolved]
    drain.end()
    assert drain.dropped == 1


def test_the_latest_start_is_read_from_reports_and_starts() -> None:
    from detector.replay import latest_start

    events: list[Event] = [
        Invocation(CTX, T0 + 10.0, "a", 4000.0, 4000.0, 128),
        InvocationStart(CTX, T0 + 7.0, "b"),
    ]
    assert latest_start(events, -1.0) == T0 + 7.0
    assert latest_start(events[:1], -1.0) == T0 + 6.0


# Durations of a burst in progress


def running(windows: int, last: float) -> BurstState:
    state = BurstState()
    state.run_first = T0
    state.run_last = last
    state.run_windows = windows
    return state


def test_a_call_that_began_in_a_window_still_open_of_a_burst_is_its_own() -> None:
    # The burst's latest closed window is its first, from T0; the call began
    # in the next one, still open, and ends late in the one after.
    call = Invocation(CTX, T0 + 22.0, "long", 7000.0, 7000.0, 128)
    assert began_in_burst(call, running(1, T0), 10.0, 4)
    # Once the burst is over, only calls that began in it are.
    over = running(0, T0)
    assert not began_in_burst(call, over, 10.0, 4)
    assert began_in_burst(
        Invocation(CTX, T0 + 22.0, "x", 13000.0, 13000.0, 128), over, 10.0, 4
    )


def test_the_calls_of_an_excursion_longer_than_a_burst_are_judged() -> None:
    call = Invocation(CTX, T0 + 52.0, "long", 7000.0, 7000.0, 128)
    assert not began_in_burst(call, running(5, T0 + 40.0), 10.0, 4)
    # A context whose bursts last longer holds them for its own length.
    assert began_in_burst(call, running(5, T0 + 40.0), 10.0, 8)


# A loop's waves


@pytest.mark.parametrize("looping", [False, True])
def test_no_burst_is_learnt_while_the_context_loops(looping: bool) -> None:
    # Two bursts 300 s apart; with a loop of the function through its own
    # queue alerting from the first on, the first teaches nothing and the
    # second warns again.
    events = bursty_stream([1502.0, 1802.0], until=2400.0)
    if looping:
        loop = sqs_loop(CTX, 8, T0 + 1490.0, gap_s=5.0)
        events = sorted([*events, *loop], key=lambda e: e.time)
    detector = make_engine(cheap, online_model=False)
    found = opened(feed(detector, events, flush=False), COST_SPIKE)
    state = detector._parts[0].contexts[CTX]
    assert (state.recursion is not None and state.recursion.open) is looping
    assert (state.baseline.bursts is None) is looping
    assert [round(t.at - T0, -1) for t in found] == [1500.0, 1800.0][: 1 + looping]


def test_burst_longest_windows_reaches_the_detector() -> None:
    from dowguard.cli import detector_config
    from dowguard.config import load_settings
    from dowguard.errors import ConfigError

    assert (
        detector_config(load_settings(burst_longest_windows=7)).burst_longest_windows
        == 7
    )
    assert detector_config(load_settings()).burst_longest_windows == 12
    with pytest.raises(ConfigError, match="burst_longest_windows"):
        load_settings(burst_longest_windows=0)
