"""False alerts on warm contexts that burst, on hand-made streams: a rare
function's small bursts, a burst at a few times a busy function's count, the
few calls left around a burst on the fixed horizon, and the long calls a
burst reports last."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

import pytest

import detector.engine
from detector.alerts import WARNING
from detector.engine import COST_SPIKE, DetectorConfig
from detector.rise import Rise
from detector.rules import DURATION_INFLATION
from ingest.events import Event, Invocation
from tests.detector.streams import CTX, T0, feed, make_engine, opened

WARM_S = 1200.0  # 120 windows: the cost baseline is warm


def poisson(rate_per_s: float, start: float, seconds: float, seed: int) -> list[float]:
    """Arrival times at a Poisson rate."""
    rng = random.Random(seed)
    times: list[float] = []
    t = start
    while True:
        t += rng.expovariate(rate_per_s)
        if t >= start + seconds:
            return times
        times.append(t)


def calls(times: list[float], tag: str, duration_ms: float = 100.0) -> list[Invocation]:
    return [
        Invocation(CTX, t, f"{tag}-{i}", duration_ms, duration_ms, 128)
        for i, t in enumerate(times)
    ]


def by_time(events: list[Invocation]) -> list[Event]:
    return sorted(events, key=lambda e: e.time)


# A rare function's bursts of a few calls are learnt

#: A dear call: 8 in a window is 0.86 USD/h, a warning's excess; 3 are not.
DEAR = 3e-4


def rare(bursts: list[tuple[float, int]]) -> list[Event]:
    """One call every 100 s, and bursts of ``n`` calls a second apart from
    the offsets given, each inside one window."""
    events = calls([T0 + 55.0 + 100.0 * k for k in range(36)], "base")
    for k, (at, n) in enumerate(bursts):
        events.extend(calls([T0 + at + i for i in range(n)], f"burst{k}"))
    return by_time(events)


SMALL = [(1501.0, 3), (1801.0, 3), (2101.0, 3)]
BIG = (2701.0, 8)


def test_a_rare_function_that_burst_a_few_calls_at_a_time_holds_a_bigger_burst() -> (
    None
):
    engine = make_engine(lambda inv: DEAR * inv.count, online_model=False)
    assert opened(feed(engine, rare([*SMALL, BIG])), COST_SPIKE) == []


def test_bursts_under_the_spike_count_floor_were_not_learnt_before() -> None:
    # With the learning floor at the spike's own, the small bursts teach
    # nothing and the bigger one warns as on a context that never burst.
    engine = make_engine(
        lambda inv: DEAR * inv.count, online_model=False, burst_min_count=5.0
    )
    found = opened(feed(engine, rare([*SMALL, BIG])), COST_SPIKE)
    assert [t.severity for t in found] == [WARNING]
    assert T0 + BIG[0] <= found[0].at <= T0 + BIG[0] + 20.0


def test_small_bursts_before_the_usual_count_is_learnt_teach_nothing() -> None:
    # The same bursts in the first 600 s, while the count baseline is young:
    # its usual count is no measure of chance, so the spike's floor holds.
    young = [(101.0, 3), (251.0, 3), (401.0, 3)]
    engine = make_engine(lambda inv: DEAR * inv.count, online_model=False)
    found = opened(feed(engine, rare([*young, BIG])), COST_SPIKE)
    assert [t.severity for t in found] == [WARNING]


def test_a_rare_function_still_warns_on_its_first_burst() -> None:
    engine = make_engine(lambda inv: DEAR * inv.count, online_model=False)
    found = opened(feed(engine, rare([BIG])), COST_SPIKE)
    assert [t.severity for t in found] == [WARNING]


def test_a_single_extra_call_is_no_burst_to_learn() -> None:
    # Two calls in a window of a function of one call in 100 s are more
    # than chance; one is not, and teaches nothing.
    engine = make_engine(lambda inv: DEAR * inv.count, online_model=False)
    feed(engine, rare([(1501.0, 1), (1801.0, 1)]), flush=False)
    assert engine._parts[0].contexts[CTX].baseline.bursts is None


# A burst at a few times a busy function's count


def busy(
    bursts: list[float], seed: int = 1, extra: float = 0.0, shown_s: float = 15.0
) -> list[Event]:
    """Two calls a second; bursts of 8 more a second (5 times the usual
    count, under the test's steep cut): for ``shown_s`` seconds at the
    SHOWN offsets, then 30 s (four windows) at the others; ``extra`` more
    calls a second from 3000 s on."""
    events = calls(poisson(2.0, T0, 3600.0, seed), "base")
    for k, at in enumerate(bursts):
        length = shown_s if at in SHOWN else 30.0
        events.extend(calls(poisson(8.0, T0 + at, length, seed + k), f"b{k}"))
    if extra:
        events.extend(calls(poisson(extra, T0 + 3000.0, 600.0, seed), "rise"))
    return by_time(events)


#: Bursts of two windows that the sequential test cannot cross on (each
#: window adds a third of its threshold at most), learnt as bursts.
SHOWN = [1302.0, 1702.0]
LATER = [2102.0, 2502.0, 2902.0]


def sequential(engine_overrides: dict[str, object], events: list[Event]) -> list[str]:
    engine = make_engine(
        lambda inv: 2e-5 * inv.count,
        spike_min_excess=1e9,
        online_model=False,
        **engine_overrides,
    )
    found = opened(feed(engine, events), COST_SPIKE)
    return [str(t.evidence.get("test", "horizon")) for t in found]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_bursts_of_four_windows_at_five_times_the_count_do_not_alarm(
    seed: int,
) -> None:
    # The spike path is kept out of it (its dollar floor out of reach), so
    # what is judged is the rise path alone.
    assert sequential({}, busy(SHOWN + LATER, seed=seed)) == []


def test_such_bursts_alarm_the_sequential_test_when_none_was_learnt() -> None:
    # The same traffic with burst learning off: each later burst fills three
    # windows at the cap of a third of the threshold, and the test fires.
    found = sequential({"burst_margin": 0.0}, busy(SHOWN + LATER))
    assert found.count("sequential") >= 2


def test_a_sustained_rise_on_a_bursty_function_still_warns_sequentially() -> None:
    # 1.8 times the usual count from 3000 s on, after bursts were learnt.
    found = sequential({}, busy(SHOWN, extra=1.6))
    assert found[:1] == ["sequential"]


def test_a_bursty_context_resets_the_test_at_the_spike_ratio() -> None:
    rise = Rise(DetectorConfig())
    usual = 20.0
    steep = [rise.start(T0, usual, 1.0, math.sqrt(usual)) for _ in range(2)]
    # Four windows at 5 times the usual count: under the cut of 6 times it.
    for bursty, run in zip((False, True), steep, strict=True):
        for i in range(4):
            rise.push(run, T0 + 10 * i, 5.0, 1.0, 0.2, 100.0, usual, 4.5, 1.0, bursty)
    plain, known = steep
    assert max(plain.scores) >= rise.threshold
    assert max(known.scores) == 0.0


# The fixed horizon: what is left around a burst must be a level


def horizon(spread: float) -> Rise | None:
    """Whether the fixed horizon fires on four windows of a burst and five
    at 1.6 times their expected rate, each window's rate spreading by
    ``spread`` (the expected rate is 1)."""
    rise = Rise(DetectorConfig())
    run = rise.start(T0, 1.5, 1.0, 1.2)
    rows = [(1.6, 3.0)] * 5 + [(20.0, 60.0)] * 4
    for i, (rate, count) in enumerate(rows):
        rise.push(run, T0 + 10 * i, rate, 1.0, spread, count, 1.5, 1.2)
    return rise if rise.fires(run, 0.0) is not None else None


def test_a_noisy_remainder_around_a_burst_is_no_rise() -> None:
    # The five windows left are 1.6 times expected, but at a spread as large
    # as the expected rate that is 1.3 deviations: chance.
    assert horizon(1.0) is None


def test_a_remainder_well_above_its_spread_is_a_rise() -> None:
    assert horizon(0.3) is not None


def test_the_remainders_deviations_are_in_the_evidence() -> None:
    rise = Rise(DetectorConfig())
    run = rise.start(T0, 1.5, 1.0, 1.2)
    for i in range(9):
        rise.push(run, T0 + 10 * i, 3.0, 1.0, 0.5, 10.0, 1.5, 1.2)
    found = rise.fires(run, 0.0)
    assert found is not None
    # Five windows left, each 2 above expected at a deviation of 0.5.
    assert found.evidence()["z_without_costliest"] == pytest.approx(
        10.0 / math.sqrt(5 * 0.25), abs=0.01
    )


# Long calls that a burst reports last


def lognormal_calls(
    rate_per_s: float, start: float, seconds: float, median_ms: float, seed: int
) -> Iterator[Invocation]:
    """Calls that begin at a Poisson rate and are reported when they end."""
    rng = random.Random(seed)
    for i, begun in enumerate(poisson(rate_per_s, start, seconds, seed)):
        ms = median_ms * math.exp(rng.gauss(0.0, 0.9))
        yield Invocation(CTX, begun + ms / 1000.0, f"c{seed}-{i}", ms, ms, 1024)


def with_bursts(seed: int) -> list[Invocation]:
    events = list(lognormal_calls(0.7, T0, 3600.0, 1600.0, seed))
    for k, at in enumerate((1500.0, 2100.0, 2700.0, 3300.0)):
        events.extend(lognormal_calls(8.0, T0 + at, 30.0, 1600.0, 100 * seed + k))
    return events


def inflations(seed: int) -> int:
    engine = make_engine(lambda inv: 1e-6 * inv.billed_ms, online_model=False)
    events = by_time(with_bursts(seed))
    return len(opened(feed(engine, events), DURATION_INFLATION))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_long_calls_a_burst_reports_last_are_no_inflation(seed: int) -> None:
    assert inflations(seed) == 0


def test_judged_in_the_order_they_end_a_bursts_calls_read_as_inflation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every call judged as it is reported: after each burst the calls still
    # to end are its longest, and the duration test climbs on them.
    monkeypatch.setattr(detector.engine, "began_in_burst", lambda *_: False)
    assert sum(inflations(seed) for seed in (1, 2, 3)) >= 1


def test_inflated_calls_after_a_burst_still_alert() -> None:
    # Calls that began after the burst and take three times as long.
    events = with_bursts(1)
    events.extend(lognormal_calls(0.7, T0 + 3400.0, 200.0, 4800.0, 9))
    engine = make_engine(lambda inv: 1e-6 * inv.billed_ms, online_model=False)
    found = opened(feed(engine, by_time(events)), DURATION_INFLATION)
    assert found
    assert found[0].at >= T0 + 3400.0
