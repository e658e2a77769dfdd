"""One call from the far tail of a context's durations: the window rules judge
without it, while calls that are all slower or dearer still alert."""

from __future__ import annotations

import pickle

from detector.engine import COST_SPIKE, READABLE_SNAPSHOTS, SNAPSHOT_VERSION
from detector.rules import DURATION_INFLATION
from ingest.events import Event
from tests.detector.streams import (
    CTX,
    T0,
    WINDOW_ONLY,
    duration_cost,
    make_engine,
    opened,
    regular,
    run,
)

WARM_S = 1800.0  # a hundred and eighty windows: every baseline is warm


def with_tail(factor: float, others: float = 100.0, every: int = 20) -> list[Event]:
    """One call a second at 100 ms, then two minutes in which one call in
    ``every`` runs ``factor`` times as long and the others ``others`` ms."""

    def billed(i: int) -> float:
        return 100.0 * factor if i % every == 7 else others

    return [
        *regular(T0, WARM_S, 1.0),
        *regular(T0 + WARM_S, 120.0, 1.0, tag="t", billed_ms=billed),
        *regular(T0 + WARM_S + 120.0, 300.0, 1.0, tag="a"),
    ]


def test_one_call_twelve_times_the_median_is_no_inflation() -> None:
    # Each pool of twenty calls holds one: a mean 1.55 times the usual, in
    # windows 2.1 times their usual cost (no spike).
    transitions = run(make_engine(duration_cost, **WINDOW_ONLY), with_tail(12.0))
    assert opened(transitions) == []


def test_calls_all_slower_beside_a_long_one_still_inflate() -> None:
    engine = make_engine(duration_cost, **WINDOW_ONLY)
    found = opened(run(engine, with_tail(50.0, others=200.0)), DURATION_INFLATION)
    # At the first pool of twenty calls.
    assert found and found[0].at == T0 + WARM_S + 20.0
    evidence = found[0].evidence
    # The mean with the long call, and what was judged: the others, twice
    # the usual 100 ms.
    assert evidence["value"] == 440.0
    assert evidence["without_longest"] == 200.0
    assert evidence["ratio_without_longest"] == 2.0
    assert evidence["longest_billed_ms"] == 5000.0


def dear_window(longest_ms: float, others_ms: float = 100.0) -> list[Event]:
    """Two calls a second at 100 ms; then one window of twenty calls, one of
    them ``longest_ms`` long and the others ``others_ms``."""

    def billed(i: int) -> float:
        return longest_ms if i == 11 else others_ms

    return [
        *regular(T0, WARM_S, 2.0),
        *regular(T0 + WARM_S, 10.0, 2.0, tag="d", billed_ms=billed),
        *regular(T0 + WARM_S + 10.0, 300.0, 2.0, tag="a"),
    ]


def test_a_window_that_is_mostly_one_long_call_is_no_spike() -> None:
    # 1,900 ms of the others and 6,000 of one call: 3.9 times the usual cost
    # of the window, at its usual count, three quarters of it one call's.
    transitions = run(make_engine(duration_cost, **WINDOW_ONLY), dear_window(6000.0))
    assert opened(transitions, COST_SPIKE) == []


def test_dear_calls_all_through_a_window_still_spike() -> None:
    # The same window cost, made by every call at 390 ms, and by nineteen
    # calls at 280 ms beside one of 2,400 (less than the rest together).
    for longest, others in ((390.0, 390.0), (2400.0, 280.0)):
        events = dear_window(longest, others)
        found = opened(run(make_engine(duration_cost, **WINDOW_ONLY), events))
        assert [t.kind for t in found][:1] == [COST_SPIKE], (longest, others)


def test_a_checkpoint_of_version_11_restores_with_no_call_left_out() -> None:
    events = sorted(with_tail(50.0, others=200.0), key=lambda e: e.time)
    cut = next(i for i, e in enumerate(events) if e.time >= T0 + WARM_S + 22.0)
    first = make_engine(duration_cost, **WINDOW_ONLY)
    run(first, events[:cut], flush=False)
    version, part = pickle.loads(first.snapshot(0))
    assert version == SNAPSHOT_VERSION and 11 in READABLE_SNAPSHOTS
    # What version 11 held: a pool (the window of the first long call)
    # without its longest call.
    pool = part.contexts[CTX].rules.pool
    assert pool is not None and pool[-1] == 5000.0
    del pool[-1]
    second = make_engine(duration_cost, **WINDOW_ONLY)
    second.restore(0, pickle.dumps((11, part), protocol=5))
    restored = second._parts[0].contexts[CTX].rules.pool
    assert restored is not None and len(restored) == len(pool) + 1
    assert restored[-1] == 0.0
    # The pool does not know its long call, so the longest it leaves out is
    # one of 200 ms of the window after the cut (8,800 ms in 20 calls).
    found = opened(run(second, events[cut:]), DURATION_INFLATION)
    assert found and found[0].at == T0 + WARM_S + 20.0
    assert found[0].evidence["without_longest"] == round(8600.0 / 19, 3)
