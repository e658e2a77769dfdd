"""Seasons: a nightly batch job and a morning rush are learned, odd hours are not."""

from __future__ import annotations

import copyreg
import io
import math
import pickle
import random
from collections.abc import Iterator

import pytest

from detector.alerts import Transition
from detector.baseline import DAY_S, HOUR_S, SeasonalBaseline, weekday
from detector.engine import COST_SPIKE
from ingest.events import Invocation
from tests.detector.streams import CTX, feed, make_engine, opened

DAY0 = 1_772_323_200.0  # 2026-03-01T00:00:00Z, a Sunday
WINDOW_S = 10.0
RUSH = (9.0, 11.0)  # the morning rush, in hours of the day
BATCH = (2.0, 2.0 + 20 / 60)  # the nightly batch job


def usual_count(t: float) -> float:
    hour = (t % DAY_S) / HOUR_S
    if BATCH[0] <= hour < BATCH[1]:
        return 400.0
    if RUSH[0] <= hour < RUSH[1]:
        return 60.0
    return 10.0


def traffic(
    start: float, days: float, spike_at: float | None = None, seed: int = 1
) -> Iterator[Invocation]:
    """One aggregated record per window, Poisson-like around the usual count.

    With ``spike_at``, five minutes from then carry 40 times the usual.
    """
    rng = random.Random(seed)
    for w in range(int(days * DAY_S / WINDOW_S)):
        t = start + w * WINDOW_S + 1.0
        mean = usual_count(t)
        if spike_at is not None and spike_at <= t < spike_at + 300:
            mean *= 40
        n = max(0, round(rng.gauss(mean, math.sqrt(mean))))
        if n:
            yield Invocation(CTX, t, f"r{w}", 100.0, 100.0, 128, count=n)


def opened_at(transitions: list[Transition], kind: str = COST_SPIKE) -> list[float]:
    """When the alerts of ``kind`` opened."""
    return [t.at for t in opened(transitions, kind)]


def replay(seasonal: bool, spike_at: float | None = None) -> list[Transition]:
    engine = make_engine(seasonal=seasonal, online_model=False)
    return feed(engine, traffic(DAY0, 3.0, spike_at))


def on_day(times: list[float], day: int) -> list[float]:
    return [t for t in times if DAY0 + day * DAY_S <= t < DAY0 + (day + 1) * DAY_S]


@pytest.fixture(scope="module")
def seasonal_run() -> list[Transition]:
    # An off-hour spike on the third day, at 15:30.
    return replay(True, spike_at=DAY0 + 2 * DAY_S + 15.5 * HOUR_S)


def test_batch_and_rush_alert_without_seasons() -> None:
    alerts = opened_at(replay(False))
    # Every day, the plain baseline takes the batch job and the rush for spikes.
    for day in (1, 2):
        assert len(on_day(alerts, day)) >= 2


def test_batch_and_rush_are_quiet_once_seen_for_a_day(
    seasonal_run: list[Transition],
) -> None:
    alerts = opened_at(seasonal_run)
    assert on_day(alerts, 0), "the first day's batch and rush are news"
    assert on_day(alerts, 1) == []
    spike = DAY0 + 2 * DAY_S + 15.5 * HOUR_S
    assert [t for t in on_day(alerts, 2) if not spike <= t < spike + 300] == []


def test_spike_at_an_unusual_hour_still_alerts(seasonal_run: list[Transition]) -> None:
    spike = DAY0 + 2 * DAY_S + 15.5 * HOUR_S
    hits = [t for t in on_day(opened_at(seasonal_run), 2) if spike <= t < spike + 60]
    assert hits, "a flood at 15:30 meets only the level of the afternoon"


def test_profile_learned_from_a_day_expects_the_batch_hour() -> None:
    b = SeasonalBaseline(window_s=WINDOW_S)
    for w in range(int(DAY_S / WINDOW_S)):
        t = DAY0 + w * WINDOW_S
        b.learn_one(usual_count(t), t)
    b.learn_one(10.0, DAY0 + DAY_S)  # closes the last hour of the day
    profile = b.profile()
    assert profile["hour_mean"][2] == pytest.approx((400 * 20 + 10 * 40) / 60, 0.01)
    assert profile["hour_mean"][15] == pytest.approx(10.0, 0.01)
    batch = DAY0 + DAY_S + 2.1 * HOUR_S
    assert b.score_one(400.0, batch) < 3.0
    assert b.score_one(400.0, batch + 13 * HOUR_S) > 20.0


def test_windows_under_alert_move_their_hour_only_a_little() -> None:
    b = SeasonalBaseline(window_s=600.0)
    hour_15 = DAY0 + 15 * HOUR_S
    for i in range(6 * 24 * 2):
        b.learn_one(1.0, DAY0 + i * 600.0)
    # A day later, a flood at 15:00 is under alert for its whole hour.
    for i in range(6):
        b.learn_paused(100.0, hour_15 + 2 * DAY_S + i * 600.0)
    b.learn_one(1.0, hour_15 + 2 * DAY_S + HOUR_S)
    moved = b.profile()["hour_mean"][15]
    # A quarter of the day's weight, of values clipped to ten times 1.0.
    assert moved == pytest.approx(1.0 + 0.5 * 0.25 * 9.0, 0.01)
    # The same flood the next day is still far above what 15:00 expects.
    mean, spread = b.expected(hour_15 + 3 * DAY_S)
    assert 2.5 * mean < 100.0
    assert mean + 6 * spread < 100.0


def test_weekly_profile_keeps_weekdays_apart_from_weekends() -> None:
    b = SeasonalBaseline(window_s=600.0)
    start = DAY0 + DAY_S  # a Monday
    assert weekday(start) == 0
    for i in range(6 * 24 * 21):
        t = start + i * 600.0
        b.learn_one(1.0 if weekday(t) < 5 else 0.02, t)
    monday = start + 21 * DAY_S + 10 * HOUR_S
    sunday = monday - DAY_S
    assert weekday(monday) == 0 and weekday(sunday) == 6
    factors = b.profile()["weekday_factor"]
    assert factors[6] is not None and factors[6] < 0.1
    assert factors[0] is not None and 0.7 < factors[0] < 1.5
    # Monday's usual traffic is expected on a Monday, not on a Sunday.
    assert b.expected(monday)[0] > 0.5
    assert b.score_one(1.0, sunday) > 10 * b.score_one(1.0, monday)


def test_idle_windows_are_learned_in_their_hours() -> None:
    b = SeasonalBaseline(window_s=600.0)
    b.learn_one(6.0, DAY0)
    # Idle from 00:10 to 03:00, then one window.
    b.learn_many_zeros(17, DAY0 + 600.0)
    b.learn_one(6.0, DAY0 + 3 * HOUR_S)
    hours = b.profile()["hour_mean"]
    assert hours[0] == pytest.approx(1.0, 0.01)
    assert hours[1] == 0.0 and hours[2] == 0.0
    assert hours[3] is None


def nightly_only(days: int) -> list[Invocation]:
    """A batch job at 02:00 for twenty minutes, and one call at noon."""
    out = []
    for day in range(days):
        base = DAY0 + day * DAY_S
        for w in range(120):
            t = base + 2 * HOUR_S + w * WINDOW_S + 1.0
            out.append(Invocation(CTX, t, f"b{day}-{w}", 100.0, 100.0, 128, count=400))
        noon = base + 12 * HOUR_S + 1.0
        out.append(Invocation(CTX, noon, f"n{day}", 100.0, 100.0, 128))
    return out


@pytest.mark.parametrize("seasonal", [True, False])
def test_batch_after_an_idle_night_meets_its_hour_not_stale_thresholds(
    seasonal: bool,
) -> None:
    engine = make_engine(seasonal=seasonal, online_model=False)
    alerts = opened_at(feed(engine, nightly_only(3), flush=False))
    if seasonal:
        # Day 0's batch made the context warm; later nights are expected.
        assert on_day(alerts, 1) == [] and on_day(alerts, 2) == []
    else:
        # The last window closed at noon, when nothing was going on.
        assert on_day(alerts, 1) and on_day(alerts, 2)


def _pickled_with_instance_dict(baseline: SeasonalBaseline) -> bytes:
    """The pickle a baseline had when it kept its state in an instance dict."""
    names = ("half_life", "warmup", "clip", "window_s", "cycle_weight")
    state = {name: getattr(baseline, name) for name in (*names, "alert_weight")}
    state["_alpha"] = 1.0 - 0.5 ** (1.0 / baseline.half_life)
    for name in ("_n", "_mean", "_mad", "_profile", "_acc"):
        state[name] = getattr(baseline, name)

    class Legacy(pickle.Pickler):
        def reducer_override(self, obj: object) -> object:
            if obj is baseline:
                return copyreg.__newobj__, (SeasonalBaseline,), state
            return NotImplemented

    out = io.BytesIO()
    Legacy(out, protocol=5).dump(baseline)
    return out.getvalue()


def test_a_baseline_pickled_before_it_had_slots_loads_and_goes_on() -> None:
    baseline = SeasonalBaseline(half_life=30, warmup=5, window_s=600.0)
    day = [50.0 if hour == 2 else 1.0 for hour in range(24) for _ in range(6)]
    for i, x in enumerate(day * 2):
        baseline.learn_one(x, i * 600.0)
    old = pickle.loads(_pickled_with_instance_dict(baseline))
    assert not hasattr(old, "__dict__")
    at_two = 2 * DAY_S + 2 * HOUR_S
    assert old.expected(at_two) == baseline.expected(at_two)
    for i, x in enumerate(day, start=len(day) * 2):
        baseline.learn_one(x, i * 600.0)
        old.learn_one(x, i * 600.0)
    assert pickle.dumps(old) == pickle.dumps(baseline)
    assert old.expected(at_two + DAY_S) == baseline.expected(at_two + DAY_S)


def test_baseline_figures_read_what_was_learnt_and_what_was_restored() -> None:
    # mean, n and bursts are read through the slots' own descriptors.
    baseline = SeasonalBaseline(half_life=10, warmup=3, window_s=10.0)
    for i, x in enumerate([1.0, 2.0, 3.0]):
        baseline.learn_one(x, i * 10.0)
    # A plain running mean over the warm-up.
    assert (baseline.n, baseline.mean, baseline.bursts) == (3, 2.0, None)
    restored = pickle.loads(pickle.dumps(baseline))
    assert (restored.n, restored.mean, restored.bursts) == (3, 2.0, None)
    restored.learn_many_zeros(2, 30.0)
    assert restored.n == 5 and restored.mean < baseline.mean
    assert baseline.n == 3
