"""Per-call sequential tests of durations and failures on hand-made streams."""

from __future__ import annotations

import math
import pickle
import random
from collections.abc import Callable, Iterator

import pytest

from detector.alerts import OPENED, RESOLVED, WARNING
from detector.engine import DetectorConfig, Engine
from detector.rules import DURATION_INFLATION, ERROR_STORM, RuleState
from ingest.events import Context, Event, Invocation
from tests.detector.streams import CTX, T0, duration_cost, feed, make_engine, opened

#: The sequential tests alone: the window-close rules never have enough calls.
SEQUENTIAL_ONLY = DetectorConfig(duration_min_count=1e12, error_min_count=1e12)
#: A spread of log durations of 0.2: calls alternate 100 ms times e^+-0.2.
SPREAD = 0.2
WARM_CALLS = 2000  # ten times the sequential warm-up


def calls(
    start: float,
    n: int,
    per_s: float,
    duration: Callable[[int], float],
    status: Callable[[int], str] = lambda i: "success",
    context: Context = CTX,
) -> Iterator[Invocation]:
    gap = 1.0 / per_s
    for i in range(n):
        ms = duration(i)
        yield Invocation(
            context,
            start + gap / 2 + i * gap,
            f"c-{start}-{i}",
            ms,
            math.ceil(ms),
            1024,
            status=status(i),
        )


def usual(i: int) -> float:
    return 100.0 * math.exp(SPREAD if i % 2 else -SPREAD)


def stretched(factor: float, n: int = 400, per_s: float = 10.0) -> list[Event]:
    """Usual calls, then ``n`` calls ``factor`` times as long, then usual ones."""
    onset = T0 + WARM_CALLS / per_s
    return [
        *calls(T0, WARM_CALLS, per_s, usual),
        *calls(onset, n, per_s, lambda i: factor * usual(i)),
        *calls(onset + n / per_s, 1000, per_s, usual),
    ]


def rules_of(engine: Engine) -> RuleState:
    state = engine._parts[0].contexts[CTX].rules
    assert state is not None
    return state


# Durations


def test_durations_just_under_the_ratio_never_alert() -> None:
    # 1.45 times the usual median: each call pulls the statistic down.
    assert feed(make_engine(duration_cost, SEQUENTIAL_ONLY), stretched(1.45)) == []


def test_durations_just_over_the_ratio_alert_and_resolve() -> None:
    engine = make_engine(duration_cost, SEQUENTIAL_ONLY)
    transitions = feed(engine, stretched(1.55))
    assert [(t.kind, t.event) for t in transitions] == [
        (DURATION_INFLATION, OPENED),
        (DURATION_INFLATION, RESOLVED),
    ]
    first = transitions[0]
    assert first.severity == WARNING
    evidence = first.evidence
    assert evidence["test"] == "sequential"
    assert evidence["statistic"] >= 13.0
    assert evidence["threshold_statistic"] == 13.0
    assert evidence["baseline"] == pytest.approx(100.0, rel=0.01)
    assert evidence["ratio"] == pytest.approx(1.55, rel=0.03)
    assert evidence["log_spread"] == pytest.approx(SPREAD, rel=0.02)
    # 0.0328 above ln 1.5 per call, times d / sigma^2 = 20.3: 0.67 a call,
    # so the statistic needs about twenty of them.
    assert 15 <= evidence["calls_judged"] <= 30
    onset = T0 + WARM_CALLS / 10.0
    assert onset < first.at < onset + 3.0
    assert rules_of(engine).dur_s == 0.0


def test_no_single_call_decides() -> None:
    # Tripled calls move the statistic by the cap, half the threshold, each.
    events = stretched(3.0, n=2)
    assert (
        feed(make_engine(duration_cost, SEQUENTIAL_ONLY), events[: WARM_CALLS + 1])
        == []
    )
    found = opened(
        feed(make_engine(duration_cost, SEQUENTIAL_ONLY), events), DURATION_INFLATION
    )
    assert len(found) == 1
    assert found[0].evidence["calls_judged"] == 2
    assert found[0].at == events[WARM_CALLS + 1].time


@pytest.mark.parametrize(("warmup", "alerts"), [(WARM_CALLS + 400, 0), (WARM_CALLS, 1)])
def test_durations_are_judged_once_the_warmup_is_learnt(
    warmup: int, alerts: int
) -> None:
    engine = make_engine(duration_cost, SEQUENTIAL_ONLY, sequential_warmup=warmup)
    assert len(opened(feed(engine, stretched(3.0)), DURATION_INFLATION)) == alerts


@pytest.mark.parametrize(("margin", "alerts"), [(1.02, 0), (0.98, 1)])
def test_durations_need_the_minimum_excess_cost(margin: float, alerts: int) -> None:
    # Recent cost rate: 10 calls a second of about 102 billed ms; twice as
    # long makes their extra cost the whole recent rate.
    per_hour = 10 * 3600 * duration_cost(Invocation(CTX, T0, "x", 102.0, 102.0, 1024))
    engine = make_engine(
        duration_cost, SEQUENTIAL_ONLY, duration_min_excess=per_hour * margin
    )
    found = opened(feed(engine, stretched(2.0, n=60)), DURATION_INFLATION)
    assert len(found) == alerts


def test_an_open_alert_keeps_the_baseline_it_had() -> None:
    engine = make_engine(duration_cost, SEQUENTIAL_ONLY)
    events = stretched(3.0, n=600)
    feed(engine, events[: WARM_CALLS + 5], flush=False)
    before = rules_of(engine).log_mu
    feed(engine, events[WARM_CALLS + 5 : WARM_CALLS + 600], flush=False)
    state = rules_of(engine)
    assert state.inflation is not None and state.inflation.open
    assert state.log_mu == before
    assert state.dur_s == 26.0  # held at twice the threshold, no higher


def test_a_slow_drift_is_learnt_per_call_and_still_caught_by_the_window_rule() -> None:
    # Three times longer over twenty minutes after half an hour: the per-call
    # baseline (half-life 200 s here) follows it, the window rule's slower
    # one does not, and alerts exactly as it does without the sequential test.
    per_s = 10.0
    warm, drift = int(30 * 60 * per_s), int(20 * 60 * per_s)

    def duration(i: int) -> float:
        return usual(i) * 3.0 ** min(1.0, max(0, i - warm) / drift)

    events: list[Event] = list(calls(T0, warm + drift + 3000, per_s, duration))
    alone = make_engine(
        duration_cost, SEQUENTIAL_ONLY, duration_min_count=20.0, sequential_h=math.inf
    )
    expected = opened(feed(alone, events), DURATION_INFLATION)
    found = opened(
        feed(
            make_engine(duration_cost, SEQUENTIAL_ONLY, duration_min_count=20.0), events
        ),
        DURATION_INFLATION,
    )
    assert len(found) == 1
    assert "test" not in found[0].evidence
    assert [t.to_json() for t in found] == [t.to_json() for t in expected]


# Failures


def failures_every(k: int, n: int = 2000, context: Context = CTX) -> list[Event]:
    """One failure in a hundred, then one in ``k``, then one in a hundred, at
    a call a second (the window rules' failure baseline learns once a minute
    here and is warm after twenty minutes)."""
    onset = T0 + WARM_CALLS

    def every(m: int) -> Callable[[int], str]:
        return lambda i: "error" if i % m == m - 1 else "success"

    return [
        *calls(T0, WARM_CALLS, 1.0, usual, every(100), context),
        *calls(onset, n, 1.0, usual, every(k), context),
        *calls(onset + n, 1000, 1.0, usual, every(100), context),
    ]


def test_a_failure_share_just_under_the_bar_never_alerts() -> None:
    # The bar is the usual share, 0.01, plus 0.2; one call in five is 0.2.
    assert feed(make_engine(duration_cost, SEQUENTIAL_ONLY), failures_every(5)) == []


def test_a_failure_share_just_over_the_bar_alerts_with_its_evidence() -> None:
    transitions = feed(make_engine(duration_cost, SEQUENTIAL_ONLY), failures_every(4))
    assert [(t.kind, t.event) for t in transitions] == [
        (ERROR_STORM, OPENED),
        (ERROR_STORM, RESOLVED),
    ]
    evidence = transitions[0].evidence
    assert evidence["test"] == "sequential"
    assert evidence["baseline"] == pytest.approx(0.01, abs=0.002)
    assert evidence["threshold_share"] == pytest.approx(0.21, abs=0.002)
    assert evidence["value"] == pytest.approx(0.25, abs=0.03)
    assert evidence["statistic"] >= 13.0
    calls_judged = evidence["calls_judged"]
    assert isinstance(calls_judged, int) and calls_judged > 8
    assert evidence["failures"] == pytest.approx(calls_judged / 4, abs=1)


def test_failures_in_a_row_alert_at_the_threshold() -> None:
    # At a usual share of 0.001 (the least assumed), a failure adds 6.7,
    # capped at 6.5: two in a row reach 13, and a threshold above 13.4
    # needs a third.
    def status(i: int) -> str:
        return "error" if i >= WARM_CALLS - 3 else "success"

    events: list[Event] = list(calls(T0, WARM_CALLS, 1.0, usual, status))
    at_13 = opened(
        feed(make_engine(duration_cost, SEQUENTIAL_ONLY), events), ERROR_STORM
    )
    assert [t.evidence["failures"] for t in at_13] == [2]
    assert at_13[0].at == events[-2].time
    at_13_5 = opened(
        feed(make_engine(duration_cost, SEQUENTIAL_ONLY, sequential_h=13.5), events),
        ERROR_STORM,
    )
    assert [t.evidence["failures"] for t in at_13_5] == [3]


def test_a_null_stream_of_many_calls_never_alerts() -> None:
    # Log-normal durations and one failure in a thousand, 60,000 calls:
    # about 0.09 false alarms expected by the arithmetic of Rules.on_call.
    rng = random.Random(7)
    events: list[Event] = []
    for i in range(60_000):
        ms = rng.lognormvariate(math.log(100.0), 0.5)
        failed = rng.random() < 0.001
        events.append(
            Invocation(
                CTX,
                T0 + i * 0.1,
                f"n-{i}",
                ms,
                math.ceil(ms),
                1024,
                status="error" if failed else "success",
            )
        )
    engine = make_engine(duration_cost, SEQUENTIAL_ONLY)
    assert feed(engine, events) == []
    state = rules_of(engine)
    assert state.log_mu == pytest.approx(math.log(100.0), abs=0.05)
    assert math.sqrt(state.log_var) == pytest.approx(0.5, rel=0.1)


# Checkpoints


OTHER = CTX._replace(function="thumbnail")


@pytest.mark.parametrize("since_onset", [1.0, 30.0, WARM_CALLS + 30.0, WARM_CALLS + 99])
def test_snapshot_and_restore_keep_the_sequential_state(since_onset: float) -> None:
    # Cut while a statistic climbs and while an alert is open, of each test.
    events = [*stretched(1.55), *failures_every(4, context=OTHER)]
    events.sort(key=lambda e: e.time)
    whole = feed(make_engine(duration_cost, SEQUENTIAL_ONLY), events)
    assert {DURATION_INFLATION, ERROR_STORM} <= {t.kind for t in whole}
    cut = next(
        i
        for i, e in enumerate(events)
        if e.time >= T0 + WARM_CALLS / 10.0 + since_onset
    )
    first = make_engine(duration_cost, SEQUENTIAL_ONLY)
    head = feed(first, events[:cut], flush=False)
    second = make_engine(duration_cost, SEQUENTIAL_ONLY)
    second.restore(0, first.snapshot(0))
    tail = feed(second, events[cut:])
    assert [t.to_json() for t in head + tail] == [t.to_json() for t in whole]


def test_a_version_4_checkpoint_restores_the_tests_afresh() -> None:
    events = stretched(3.0)
    first = make_engine(duration_cost, SEQUENTIAL_ONLY)
    feed(first, events[:1000], flush=False)
    _, part = pickle.loads(first.snapshot(0))
    state = part.contexts[CTX].rules
    for name in ("calls", "log_mu", "log_var", "dur_s", "dur_calls", "dur_sum"):
        delattr(state, name)  # the slots a version 4 checkpoint lacks
    second = make_engine(duration_cost, SEQUENTIAL_ONLY, sequential_warmup=100)
    second.restore(0, pickle.dumps((4, part), protocol=5))
    restored = rules_of(second)
    assert (restored.calls, restored.dur_s) == (0.0, 0.0)
    found = opened(feed(second, events[1000:]), DURATION_INFLATION)
    assert len(found) == 1
