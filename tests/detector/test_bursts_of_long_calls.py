"""Bursts of calls that run for a minute or more, learnt from their starts.

The context makes one call a second of half a second (0.036 USD/h at a
ten-thousandth of a dollar a call). Its bursts are 30 calls begun within
5 s that run 40 to 100 s: the window they began in holds their starts and
none of their REPORTs, which come a minute or more later, a few a window.
Judged on its REPORTs alone such a burst is never an excursion, so it
would never be learnt and every one would fire on its starts.
"""

from __future__ import annotations

import random

from detector.alerts import CRITICAL, WARNING, Transition
from detector.engine import COST_SPIKE
from detector.rules import DURATION_INFLATION
from ingest.events import Event, Invocation, InvocationStart
from tests.detector.streams import CTX, T0, flat_cost, make_engine, opened, run

BURSTS_AT = (1500.0, 2100.0, 2700.0)
LAST_AT = 3300.0
BURST_CALLS = 30
BURST_S = 5.0


def begun(
    start: float,
    calls: int,
    within_s: float,
    ms: tuple[float, float],
    tag: str,
    rng: random.Random,
    with_starts: bool = True,
) -> list[Event]:
    """``calls`` calls begun evenly within ``within_s`` from ``start``, each
    running between the two durations of ``ms``, with their starts."""
    out: list[Event] = []
    for i in range(calls):
        at = start + (i + 0.5) * within_s / calls
        took = rng.uniform(*ms)
        if with_starts:
            out.append(InvocationStart(CTX, at, f"{tag}-{i}"))
        out.append(Invocation(CTX, at + took / 1000.0, f"{tag}-{i}", took, took, 128))
    return out


def stream(
    last_calls: int = BURST_CALLS,
    last_s: float = BURST_S,
    with_starts: bool = True,
) -> list[Event]:
    """The base traffic for an hour, three like bursts, and a last one of
    ``last_calls`` calls begun within ``last_s``."""
    rng = random.Random(3)
    base = (500.0, 500.0)
    long = (40_000.0, 100_000.0)
    events = begun(T0, 3600, 3600.0, base, "base", rng, with_starts)
    for k, at in enumerate(BURSTS_AT):
        events += begun(T0 + at, BURST_CALLS, BURST_S, long, f"b{k}", rng, with_starts)
    events += begun(T0 + LAST_AT, last_calls, last_s, long, "last", rng, with_starts)
    return events


def transitions(events: list[Event]) -> list[Transition]:
    return run(make_engine(flat_cost, online_model=False), events)


def alerts(events: list[Event]) -> list[Transition]:
    return opened(transitions(events))


def since(found: list[Transition], at: float) -> list[Transition]:
    return [t for t in found if t.at >= T0 + at]


def test_only_the_first_of_like_bursts_of_long_calls_alerts() -> None:
    found = alerts(stream())
    # The first fires on its starts: nothing is known of the context's
    # bursts yet. It is learnt from the window its calls began in.
    assert [(t.kind, t.severity) for t in found] == [(COST_SPIKE, WARNING)]
    first = found[0]
    assert first.evidence["early_on"]["on"] == "starts, elapsed rate"
    assert T0 + BURSTS_AT[0] < first.at < T0 + BURSTS_AT[0] + BURST_S


def test_without_their_starts_long_calls_after_a_burst_look_inflated() -> None:
    # The control: no START records, so no window is known to have begun
    # them, and their REPORTs are judged as the usual calls running long.
    found = alerts(stream(with_starts=False))
    assert {t.kind for t in found} == {DURATION_INFLATION}
    assert len(found) == len(BURSTS_AT) + 1


def test_a_burst_of_four_times_the_starts_still_fires_on_them() -> None:
    # Beyond the margin over the bursts learnt: no burst of this context.
    found = since(transitions(stream(last_calls=4 * BURST_CALLS)), LAST_AT)
    assert found and found[0].kind == COST_SPIKE
    assert found[0].evidence["early_on"]["on"] == "starts, elapsed rate"
    # Critical before the burst's last start, a minute before its REPORTs.
    critical = [t for t in found if t.severity == CRITICAL]
    assert critical and critical[0].at < T0 + LAST_AT + BURST_S


def test_long_calls_begun_for_longer_than_a_burst_fire_once_past_its_length() -> None:
    # Six calls a second for a minute, as high as the bursts but not as
    # short: held while it may be one, four windows, then it fires.
    found = since(alerts(stream(last_calls=360, last_s=60.0)), LAST_AT)
    assert found and found[0].kind == COST_SPIKE
    assert found[0].evidence["early_on"]["on"] == "starts, elapsed rate"
    assert T0 + LAST_AT + 40.0 < found[0].at < T0 + LAST_AT + 60.0


# A burst that begins late in a window


def late_begun(with_starts: bool = True) -> list[Event]:
    """One call a second of 3 to 6 s, and four bursts of 200 such calls
    begun within 40 s from 7 s into a window: its first window holds their
    first starts and none of their ends, the next four their ends."""
    rng = random.Random(3)
    calls = (3000.0, 6000.0)
    events = begun(T0, 3600, 3600.0, calls, "base", rng, with_starts)
    for k, at in enumerate((*BURSTS_AT, LAST_AT)):
        events += begun(T0 + at + 7.0, 200, 40.0, calls, f"b{k}", rng, with_starts)
    return events


def test_a_burst_begun_late_in_a_window_is_no_longer_for_its_first_starts() -> None:
    # Judged on its starts, the window where the burst began is one of its
    # windows, and the next holds the same calls as they end: counted once,
    # the burst is four windows long, as on its reports alone, and learnt.
    found = alerts(late_begun())
    assert [(t.kind, t.severity) for t in found] == [(COST_SPIKE, WARNING)]
    assert T0 + BURSTS_AT[0] < found[0].at < T0 + BURSTS_AT[0] + 20.0


def test_without_their_starts_the_same_bursts_are_learnt_on_their_reports() -> None:
    found = alerts(late_begun(with_starts=False))
    assert [t.kind for t in found] == [COST_SPIKE]
