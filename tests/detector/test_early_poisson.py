"""Early firing's count bar as a Poisson tail: the quantiles themselves,
checked against a plain sum, and a function of a few calls a span whose
busiest seconds passed the old square-root bar by chance."""

from __future__ import annotations

import math

import pytest

from detector.engine import COST_SPIKE
from detector.poisson import cached_quantile, normal_tail, upper_quantile
from ingest.events import Event
from tests.detector.streams import T0, opened, regular
from tests.detector.test_early import ONSET, SPAN_S, WARM_S, burst, call, run

TAIL = normal_tail(5.0)


def reaches(mean: float, k: int) -> float:
    """P(X >= k) for a Poisson X of ``mean``, as one minus the plain sum of
    the terms below ``k`` (exact rationals would be no better at 1e-7)."""
    below = sum(math.exp(-mean) * mean**i / math.factorial(i) for i in range(k))
    return 1.0 - below


@pytest.mark.parametrize("mean", [0.05, 0.5, 1.0, 2.0, 3.0, 7.5, 20.0, 60.0])
def test_the_quantile_is_the_fewest_calls_that_rare(mean: float) -> None:
    k = upper_quantile(mean, TAIL)
    assert reaches(mean, k) <= TAIL < reaches(mean, k - 1)


def test_the_quantile_is_above_the_square_root_bar_for_a_few_calls() -> None:
    # Three usual calls: five square-root deviations say 11.7, but a Poisson
    # count of three reaches 12 a hundred times more often than 5 sigma.
    assert reaches(3.0, 12) > 100 * TAIL
    assert upper_quantile(3.0, TAIL) > 3.0 + 5.0 * math.sqrt(3.0) + 1


def test_a_normal_tail_is_what_its_deviations_leave() -> None:
    assert normal_tail(0.0) == pytest.approx(0.5)
    assert normal_tail(5.0) == pytest.approx(2.8665e-7, rel=1e-4)


@pytest.mark.parametrize("mean", [0.3, 3.0, 3.01, 41.7, 1000.0, 12345.6])
def test_the_cached_quantile_is_never_below_the_exact_one(mean: float) -> None:
    exact = upper_quantile(mean, TAIL)
    cached = cached_quantile(mean, TAIL)
    assert exact <= cached <= upper_quantile(mean * (1 + 1 / 128), TAIL)


def test_a_mean_of_nothing_needs_one_call() -> None:
    assert upper_quantile(0.0, TAIL) == cached_quantile(0.0, TAIL) == 1


def test_a_tail_outside_zero_and_one_is_refused() -> None:
    with pytest.raises(ValueError, match="tail"):
        upper_quantile(3.0, 0.0)


# A context of a call and a half a second: three are usual in two seconds.

PER_S = 1.5


def busiest_seconds(calls: int) -> list[Event]:
    """The warm baseline, ``calls`` in the first two seconds of the window
    after it (the last at two seconds) and nothing else in that window, then
    the baseline again."""
    crowd = [*burst(ONSET, calls - 1, 1.0), call(ONSET + SPAN_S, 1)]
    return [
        *regular(T0, WARM_S, PER_S),
        *crowd,
        *regular(ONSET + 10.0, 300.0, PER_S),
    ]


def test_a_few_calls_over_the_old_bar_do_not_fire() -> None:
    # 3 + max(10, 5 * sqrt(3)) = 13 calls fired before; the window as a
    # whole holds fewer than usual, so its close sees nothing either.
    for calls in (13, 15):
        assert opened(run(busiest_seconds(calls)), COST_SPIKE) == []


def test_a_crowd_past_the_poisson_bar_still_fires_early() -> None:
    alerts = opened(run(busiest_seconds(18)), COST_SPIKE)
    assert [a.at for a in alerts] == [ONSET + SPAN_S]
    early = alerts[0].evidence["early_on"]
    assert isinstance(early, dict)
    usual = early["invocations_usual"]
    assert isinstance(usual, float) and usual == pytest.approx(3.0, abs=0.05)
    assert early["invocations_needed"] == cached_quantile(3.0, TAIL)
