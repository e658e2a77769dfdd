"""What a window counts for the models, and the features made of it."""

from __future__ import annotations

import math
import pickle

import pytest

from detector.engine import SNAPSHOT_VERSION, DetectorConfig, Engine
from ingest.events import Event, Invocation
from models.features import (
    BY_NAME,
    FEATURE_NAMES,
    GB_SECONDS_FLOOR,
    Window,
    window_features,
)
from tests.detector.streams import CTX, T0, feed, flat_cost, no_span_cost

# Without the online model: these tests tap the features the engine makes.
CONFIG = DetectorConfig(online_model=False)


def engine() -> Engine:
    return Engine(CONFIG, invocation_cost=flat_cost, span_cost=no_span_cost)


def call(
    t: float,
    billed: float,
    memory: int = 512,
    init: float = 0.0,
    status: str = "success",
    count: int = 1,
) -> Invocation:
    return Invocation(
        CTX,
        t,
        f"r{t}",
        billed - 0.5,
        billed,
        memory,
        init_ms=init,
        status=status,
        count=count,
    )


def test_window_counts_errors_cold_starts_gb_seconds_and_concurrency() -> None:
    e = engine()
    calls = [
        call(T0 + 1.0, 100.0, init=250.0),
        call(T0 + 2.0, 200.0, status="error"),
        call(T0 + 3.0, 300.0, init=180.0, status="timeout"),
        call(T0 + 4.0, 1500.0),
        # An aggregate of four calls of 50 ms each: its mean is no peak.
        call(T0 + 5.0, 50.0, count=4),
    ]
    feed(e, calls, flush=False)
    state = e._parts[0].contexts[CTX]
    extra = e._window_extra(state, state.windows[T0])
    assert extra["errors"] == 2.0
    assert extra["cold_starts"] == 2.0
    assert extra["peak_billed_ms"] == 1500.0
    billed_s = (100 + 200 + 300 + 1500 + 4 * 50) / 1000.0
    assert extra["billed_s"] == pytest.approx(billed_s)
    assert extra["gb_seconds"] == pytest.approx(billed_s * 0.5)
    assert extra["concurrency"] == pytest.approx(billed_s / CONFIG.window_s)
    # The rules have learnt nothing of the context yet: no usual call.
    assert "usual_billed_ms" not in extra and "usual_error_share" not in extra


def warm_stream(
    minutes: float, start: float = T0, billed: float = 120.0
) -> list[Event]:
    """A call every half second; one in ten cold, one in twenty failing."""
    out: list[Event] = []
    for i in range(int(minutes * 120)):
        out.append(
            call(
                start + i * 0.5,
                billed + (i % 5) * 10.0,
                init=300.0 if i % 10 == 0 else 0.0,
                status="error" if i % 20 == 0 else "success",
            )
        )
    return out


def tapped(events: list[Event]) -> list[tuple[float, dict[str, float]]]:
    e = engine()
    rows: list[tuple[float, dict[str, float]]] = []
    e.on_window = lambda context, start, x: rows.append((start, x))
    feed(e, events)
    return rows


def test_features_of_warm_windows_are_present_and_in_range() -> None:
    rows = tapped(warm_stream(20.0))
    assert rows, "a context warm after ten minutes gives rows"
    new = (
        "error_share",
        "cold_start_share",
        "error_share_excess",
        "gb_seconds_ratio",
        "peak_duration_ratio",
    )
    for _, x in rows[:-1]:
        assert set(new) <= x.keys()
        # Invocation records name no trigger or caller.
        assert "distinct_triggers" not in x and "distinct_callers" not in x
        assert x["error_share"] == pytest.approx(0.05)
        assert x["cold_start_share"] == pytest.approx(0.1)
        assert abs(x["error_share_excess"]) < 0.01
        # As usual: the ratios sit near 0, the peak near 160 ms over 140 ms.
        assert abs(x["gb_seconds_ratio"]) < 0.05
        assert x["peak_duration_ratio"] == pytest.approx(math.log(160 / 140), abs=0.02)
        for name, value in x.items():
            unit = BY_NAME[name].unit(value)
            assert 0.0 <= unit <= 1.0


def test_longer_calls_raise_the_gb_seconds_and_peak_ratios() -> None:
    usual = warm_stream(20.0)
    slow = warm_stream(1.0, start=T0 + 1200.0, billed=360.0)
    rows = dict(tapped(usual + slow))
    x = rows[T0 + 1210.0]
    # 20 calls of 380 ms on average at 0.5 GB, where 140 ms are usual.
    floor = GB_SECONDS_FLOOR * CONFIG.window_s / 3600.0
    usual, now = 20 * 0.14 * 0.5, 20 * 0.38 * 0.5
    expected = math.log((now + floor) / (usual + floor))
    assert x["gb_seconds_ratio"] == pytest.approx(expected, abs=0.01)
    assert x["peak_duration_ratio"] == pytest.approx(math.log(400 / 140), abs=0.05)
    assert abs(x["invocations_ratio"]) < 0.05


def window(**extra: float) -> Window:
    return Window(10.0, 0.01, 100.0, 3.6, 0.3, 3.6, 100.0, extra)


def test_call_features_miss_without_what_they_need() -> None:
    x = window_features(window())
    assert set(x) == {
        "cost_rate_ratio",
        "cost_rate_z",
        "invocations_ratio",
        "invocations_z",
        "cost_per_invocation_ratio",
    }
    # Counts without the context's usual call give the shares only.
    counted = {"errors": 30.0, "cold_starts": 5.0, "gb_seconds": 2.0}
    x = window_features(window(**counted, billed_s=4.0, peak_billed_ms=90.0))
    assert x["error_share"] == pytest.approx(0.3)
    assert x["cold_start_share"] == pytest.approx(0.05)
    assert "gb_seconds_ratio" not in x and "peak_duration_ratio" not in x
    assert "error_share_excess" not in x


def test_call_features_against_the_usual_call() -> None:
    x = window_features(
        window(
            errors=30.0,
            gb_seconds=2.0,
            billed_s=4.0,
            peak_billed_ms=90.0,
            usual_billed_ms=20.0,
            usual_error_share=0.1,
        )
    )
    assert x["error_share_excess"] == pytest.approx(0.2)
    assert x["peak_duration_ratio"] == pytest.approx(math.log(90 / 20))
    # Usual: 100 calls of 20 ms at the window's 0.5 GB, 1 GB-s.
    floor = GB_SECONDS_FLOOR * 10.0 / 3600.0
    assert x["gb_seconds_ratio"] == pytest.approx(
        math.log((2.0 + floor) / (1.0 + floor))
    )


def test_old_snapshot_without_the_models_slots_restores() -> None:
    e = engine()
    events = warm_stream(12.0)
    feed(e, events[:-30], flush=False)
    version, part = pickle.loads(e.snapshot(0))
    assert version == SNAPSHOT_VERSION
    # What version 4 wrote: open windows without the three models' slots.
    for state in part.contexts.values():
        for acc in state.windows.values():
            del acc[-3:]
    old = pickle.dumps((4, part), protocol=5)
    restored = engine()
    restored.restore(0, old)
    rows: list[tuple[float, dict[str, float]]] = []
    restored.on_window = lambda context, start, x: rows.append((start, x))
    feed(restored, events[-30:])
    assert rows and all(math.isfinite(v) for _, x in rows for v in x.values())
    with pytest.raises(ValueError, match="snapshot version 3"):
        restored.restore(0, pickle.dumps((3, part), protocol=5))


def test_every_feature_has_a_neutral_inside_its_range() -> None:
    for name in FEATURE_NAMES:
        feature = BY_NAME[name]
        assert feature.unit(feature.neutral) == 0.5
