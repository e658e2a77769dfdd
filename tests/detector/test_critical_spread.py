"""Critical needs twice the warning's deviations above a context's baseline.

The context's windows alternate between 2 and 18 calls of a ten-thousandth
of a dollar: a mean of 0.36 USD/h and a deviation of about as much, as a
rare or bursty function's windows vary. Ten times its mean (3.6 USD/h) is
well inside twelve deviations (about 4.8 USD/h): a window there is a
warning, not a throttle.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from detector.alerts import CRITICAL, WARNING, Transition
from detector.engine import COST_SPIKE, DetectorConfig
from detector.sources import spike_thresholds
from ingest.events import Invocation
from tests.detector.streams import T0, flat_cost, make_engine, regular, run

ONSET = T0 + 1500.0


def stream(calls: int) -> list[Invocation]:
    """150 windows alternating 18 and 2 calls, one window of ``calls``,
    then one call a second."""
    events: list[Invocation] = []
    for w in range(150):
        n = 2 if w % 2 else 18
        events += regular(T0 + 10.0 * w, 10.0, per_s=n / 10.0, tag=f"w{w}")
    events += regular(ONSET, 10.0, per_s=calls / 10.0, tag="spike")
    events += regular(ONSET + 10.0, 300.0, tag="after")
    return events


def spike(calls: int, critical_z: float = 12.0) -> list[Transition]:
    """The transitions of the cost alert on the window of ``calls``."""
    engine = make_engine(
        flat_cost, online_model=False, burst_cold_windows=0, critical_z=critical_z
    )
    found = [t for t in run(engine, stream(calls)) if t.kind == COST_SPIKE]
    assert found and all(ONSET <= t.at <= ONSET + 60.0 for t in found)
    return found


def threshold(t: Transition) -> float:
    detail = t.evidence["early_on"]
    assert isinstance(detail, dict)
    value = detail["threshold_usd_per_hour"]
    assert isinstance(value, float)
    return value


def test_the_thresholds_are_six_and_twelve_deviations_above_a_wide_baseline() -> None:
    warn, crit = spike_thresholds(0.36, 0.36, DetectorConfig())
    assert warn == pytest.approx(0.36 + 6 * 0.36)
    assert crit == pytest.approx(0.36 + 12 * 0.36)
    # Without the deviations, ten times the baseline.
    plain = replace(DetectorConfig(), critical_z=0.0)
    assert spike_thresholds(0.36, 0.36, plain)[1] == pytest.approx(3.6)


def test_a_window_at_eleven_times_a_wide_baseline_is_a_warning() -> None:
    # 111 calls: 4 USD/h, past ten times the baseline, inside twelve deviations.
    assert {t.severity for t in spike(111)} == {WARNING}


def test_without_the_deviations_the_same_window_is_critical() -> None:
    assert CRITICAL in {t.severity for t in spike(111, critical_z=0.0)}


def test_a_window_beyond_twelve_deviations_is_critical() -> None:
    # 150 calls: 5.4 USD/h.
    found = spike(150)
    assert found[0].severity == WARNING
    escalated = [t for t in found if t.severity == CRITICAL]
    assert escalated
    warn, crit = threshold(found[0]), threshold(escalated[0])
    base = found[0].evidence["baseline_usd_per_hour"]
    assert isinstance(base, float)
    # The critical rate is twice the warning's excess: twelve deviations to six.
    assert crit - base == pytest.approx(2 * (warn - base), rel=1e-4)
    assert crit > 10 * base
