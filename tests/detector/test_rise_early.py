"""The sustained-rise path's sequential test read call by call inside an open
window: the gate, the crossing at its edge, the alert before the window's
close, long calm traffic, and checkpoints taken in the middle of a window."""

from __future__ import annotations

import math
import pickle
from collections.abc import Sequence

import pytest

from detector.alerts import WARNING, Transition
from detector.engine import COST_SPIKE, SNAPSHOT_VERSION, DetectorConfig, Engine
from detector.rise import Rise, RiseFinding, RiseRun, RiseWindow
from ingest.events import Event
from tests.detector.streams import (
    CTX,
    T0,
    cheap,
    feed,
    make_engine,
    opened,
    regular,
    steady,
)
from tests.detector.test_rise import BASE_PER_S, WARM_S

WINDOW = 10.0


def window(start: float, count: float, rate: float = 5.0) -> RiseWindow:
    """A window against a usual ten calls at 1 USD/h, Poisson-spread."""
    return (start, rate, 1.0, 0.1, count, 10.0, math.sqrt(10.0), 1.0)


def two_windows_up() -> tuple[Rise, RiseRun]:
    """A run whose high-ratio statistic holds two capped windows (2/3 of the
    threshold) after two windows of fifty calls over a usual ten."""
    rise = Rise(DetectorConfig())
    run = rise.start(T0, usual=10.0, level=1.0, spread=math.sqrt(10.0))
    for i in range(2):
        rise.push(run, *window(T0 + WINDOW * i, 50.0))
    assert run.scores[1] == pytest.approx(2 * rise.threshold / 3)
    return rise, run


# The gate and the reading ahead, on the statistic itself


def test_the_gate_is_the_count_at_which_the_window_would_cross() -> None:
    rise, run = two_windows_up()
    # The third window needs a third of the threshold more at a ratio of 3:
    # n log 3 - 2 * 10 >= threshold / 3.
    needed = (rise.threshold / 3 + 20.0) / math.log(3.0)
    gate = rise.gate(run, [], T0 + 2 * WINDOW, 1.0, 0.1)
    assert gate == pytest.approx(needed)
    assert gate < needed


@pytest.mark.parametrize(("extra", "fires"), [(-1, False), (0, True)])
def test_a_window_read_early_crosses_at_the_edge_of_the_threshold(
    extra: int, fires: bool
) -> None:
    rise, run = two_windows_up()
    edge = math.ceil(rise.gate(run, [], T0 + 2 * WINDOW, 1.0, 0.1))
    calls = edge + extra
    found = rise.peek(run, [window(T0 + 2 * WINDOW, calls)])
    assert (found is not None) == fires
    # Reading ahead leaves the run as it was; its close with those calls
    # finds the same.
    assert run.filled == 2
    rise.push(run, *window(T0 + 2 * WINDOW, calls))
    closed = rise.fires(run, 0.0)
    assert (closed is not None) == fires
    if isinstance(found, RiseFinding) and closed is not None:
        assert found.score == pytest.approx(closed.score)
        assert found.score >= rise.threshold


def test_idle_windows_and_open_windows_ahead_move_the_gate() -> None:
    rise, run = two_windows_up()
    adjacent = rise.gate(run, [], T0 + 2 * WINDOW, 1.0, 0.1)
    # Two empty windows in between take the drift off twice: the cap keeps
    # the statistic short of the threshold whatever the window holds.
    assert rise.gate(run, [], T0 + 4 * WINDOW, 1.0, 0.1) == math.inf
    # A window still open ahead, at twice the usual count: what it adds
    # counts, and the low ratio needs fewer calls from the next one.
    ahead = rise.gate(run, [window(T0 + 2 * WINDOW, 20.0)], T0 + 3 * WINDOW, 1.0, 0.1)
    cap = rise.threshold / 3
    needed = min(
        (cap - 20.0 * math.log(ratio) + 20.0 * (ratio - 1.0)) / math.log(ratio)
        for ratio in (1.5, 3.0)
    )
    assert ahead == pytest.approx(needed)
    assert ahead < adjacent


def test_no_gate_for_a_fresh_run_nor_under_its_own_alert() -> None:
    rise, run = two_windows_up()
    # A window adds at most a third of the threshold: a fresh run cannot
    # cross in one, whatever it holds.
    fresh = rise.start(T0, usual=10.0, level=1.0, spread=math.sqrt(10.0))
    assert rise.gate(fresh, [], T0, 1.0, 0.1) == math.inf
    run.alerting = True
    assert rise.gate(run, [], T0 + 2 * WINDOW, 1.0, 0.1) == math.inf
    assert rise.peek(run, [window(T0 + 2 * WINDOW, 50.0)]) is None


# Through the engine


def tripling() -> list[Event]:
    """Twenty calls a window, then sixty, evenly spaced."""
    return [
        *regular(T0, WARM_S, BASE_PER_S, "warm"),
        *regular(T0 + WARM_S, 300.0, 3 * BASE_PER_S, "flood"),
    ]


def close_only() -> Engine:
    """An engine whose rise runs are judged at their windows' closes only."""
    engine = make_engine(cheap)
    assert engine._rise is not None
    engine._rise.gate = lambda *args, **kwargs: math.inf  # type: ignore[method-assign]
    return engine


def rise_warning(transitions: list[Transition]) -> Transition:
    (alert,) = opened(transitions, COST_SPIKE)
    assert alert.severity == WARNING
    assert alert.evidence["test"] == "sequential"
    return alert


def test_the_crossing_call_warns_before_its_window_closes() -> None:
    events = tripling()
    early = rise_warning(feed(make_engine(cheap), events))
    late = rise_warning(feed(close_only(), events))
    # The same window crosses; read call by call, at one of its calls.
    assert late.at % WINDOW == 0.0
    assert late.at - WINDOW < early.at < late.at
    assert early.evidence["early"] is True
    assert late.evidence["early"] is False
    on = early.evidence["early_on"]
    assert isinstance(on, dict)
    assert 0 < on["elapsed_s"] < WINDOW
    # The call that crossed is in the evidence: the window's calls so far.
    assert on["invocations_so_far"] == round((early.at - (late.at - WINDOW)) * 6 + 0.5)


def test_a_steady_poisson_stream_of_hours_crosses_nowhere() -> None:
    # Eight hours at two calls a second: 2,880 windows. Runs start on the
    # windows that chance puts above the usual count; none of them, read
    # at its closes or call by call, reaches the threshold.
    engine = make_engine(cheap)
    rise = engine._rise
    assert rise is not None
    tops: list[float] = []
    gates: list[float] = []
    found: list[RiseFinding] = []
    push, gate, peek = rise.push, rise.gate, rise.peek

    def pushing(run: RiseRun, *window: float) -> None:
        push(run, *window)
        tops.append(max(run.scores))

    def gating(run: RiseRun, *args: object) -> float:
        gates.append(gate(run, *args))  # type: ignore[arg-type]
        return gates[-1]

    def peeking(run: RiseRun, windows: Sequence[RiseWindow]) -> RiseFinding | None:
        result = peek(run, windows)
        if result is not None:
            found.append(result)
        return result

    rise.push = pushing  # type: ignore[method-assign, assignment]
    rise.gate = gating  # type: ignore[method-assign, assignment]
    rise.peek = peeking  # type: ignore[method-assign]
    events = list(steady(BASE_PER_S, T0, 8 * 3600.0, seed=7))
    assert opened(feed(engine, events), COST_SPIKE) == []
    # Runs were open hundreds of windows; few came near enough to
    # the threshold for their windows to be gated at all.
    assert len(tops) > 500 and max(tops) > 0.0
    assert len(gates) < len(tops) / 10
    assert max(tops) < rise.threshold
    assert found == []


@pytest.mark.parametrize("seconds_in", [2.0, 6.5])
def test_a_checkpoint_inside_the_crossing_window_resumes_the_same(
    seconds_in: float,
) -> None:
    events = tripling()
    whole = feed(make_engine(cheap), events)
    crossing = rise_warning(whole).at
    # Inside the window that crosses, before the call that does.
    cut_at = min(crossing - crossing % WINDOW + seconds_in, crossing - 0.01)
    cut = next(i for i, e in enumerate(events) if e.time > cut_at)
    first = make_engine(cheap)
    head = feed(first, events[:cut], flush=False)
    version, part = pickle.loads(first.snapshot(0))
    assert version == SNAPSHOT_VERSION
    second = make_engine(cheap)
    second.restore(0, first.snapshot(0))
    assert second._parts[0].contexts[CTX].rise_gate == (part.contexts[CTX].rise_gate)
    assert head + feed(second, events[cut:]) == whole


def test_a_checkpoint_from_before_the_reading_ahead_restores() -> None:
    events = tripling()
    whole = rise_warning(feed(make_engine(cheap), events))
    cut = next(i for i, e in enumerate(events) if e.time > T0 + WARM_S + 3.0)
    first = make_engine(cheap)
    head = feed(first, events[:cut], flush=False)
    _, part = pickle.loads(first.snapshot(0))
    # What a version 7 checkpoint lacks: the cached gate.
    del part.contexts[CTX].rise_gate
    second = make_engine(cheap)
    second.restore(0, pickle.dumps((7, part), protocol=5))
    resumed = rise_warning(head + feed(second, events[cut:]))
    # The next window that opens sets the gate again: the same call warns.
    assert resumed.at == whole.at
