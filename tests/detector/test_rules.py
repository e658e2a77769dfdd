"""Window-close rules on hand-made streams: durations, errors, slow ramps."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from detector.alerts import CRITICAL, OPENED, RESOLVED, WARNING, Transition
from detector.engine import COST_SPIKE
from detector.rules import DURATION_INFLATION, ERROR_STORM, SLOW_RAMP
from dowguard.cli import detector_config
from dowguard.config import load_settings
from dowguard.errors import ConfigError
from ingest.events import Context, Event, Invocation
from tests.detector.streams import (
    CTX,
    T0,
    WINDOW_ONLY,
    duration_cost,
    make_engine,
    opened,
    regular,
    run,
    steady,
)

WARM_S = 900.0  # ninety windows: the per-invocation baselines are warm
HOUR = 3600.0
#: A UTC midnight, for streams whose daily projection must be exact.
MIDNIGHT = T0 - T0 % 86_400 + 86_400


def unit_cost(inv: Invocation) -> float:
    """Two ten-thousandths of a dollar per invocation, whatever it did."""
    return 2e-4 * inv.count


def doubling(start: float, hours: float, per_s: float) -> Iterator[Invocation]:
    """A rate that starts at ``per_s`` and doubles every hour, no jitter."""
    # The k-th event is where the integral of the rate reaches k.
    scale = per_s * HOUR / math.log(2)
    total = scale * (2.0**hours - 1.0)
    for k in range(1, int(total)):
        t = start + HOUR * math.log2(1.0 + k / scale)
        yield Invocation(CTX, t, f"ramp-{k}", 99.5, 100.0, 128)


def slower(factor: float, seconds: float = 120.0) -> list[Event]:
    """Ten invocations a second, whose durations grow ``factor`` times."""
    return [
        *regular(T0, WARM_S, 10.0),
        *regular(T0 + WARM_S, seconds, 10.0, billed_ms=lambda i: 100.0 * factor),
        *regular(T0 + WARM_S + seconds, 300.0, 10.0),
    ]


# Duration inflation


def test_durations_just_under_the_ratio_do_not_alert() -> None:
    assert run(make_engine(duration_cost, **WINDOW_ONLY), slower(1.45)) == []


def test_durations_just_over_the_ratio_alert_once_and_resolve() -> None:
    transitions = run(make_engine(duration_cost, **WINDOW_ONLY), slower(1.55))
    assert [(t.kind, t.event) for t in transitions] == [
        (DURATION_INFLATION, OPENED),
        (DURATION_INFLATION, RESOLVED),
    ]
    first = transitions[0]
    assert first.severity == WARNING
    assert T0 + WARM_S < first.at <= T0 + WARM_S + 10.0
    evidence = first.evidence
    assert evidence["value"] == pytest.approx(155.0)
    assert evidence["baseline"] == pytest.approx(100.0)
    # 55 extra billed ms on 10 invocations a second: about 1.98 USD/h.
    assert evidence["excess_usd_per_hour"] == pytest.approx(1.98, rel=0.01)
    for key in ("projected_usd_per_day", "projected_usd_per_month"):
        assert isinstance(evidence[key], float) and evidence[key] > 0
    # Twelve inflated windows and the three calm ones before it resolves.
    spent = 100 * (12 * duration_cost(slower(1.55)[-1]) * 1.552 / 1.002)
    spent += 100 * 3 * 1.002e-4
    assert transitions[1].cost_usd == pytest.approx(spent)


@pytest.mark.parametrize(("margin", "alerts"), [(1.05, 0), (0.95, 1)])
def test_inflation_needs_its_minimum_excess_cost(margin: float, alerts: int) -> None:
    excess = 100 * 1e-6 * 10 * 3600  # twice 100 ms at 10/s: 3.6 USD/h more
    engine = make_engine(
        duration_cost, duration_min_excess=excess * margin, **WINDOW_ONLY
    )
    assert len(opened(run(engine, slower(2.0)))) == alerts


@pytest.mark.parametrize(("least", "alerts"), [(121.0, 0), (120.0, 1)])
def test_inflation_needs_enough_invocations(least: float, alerts: int) -> None:
    # Quiet windows are pooled for up to a minute: at 2/s, 120 invocations.
    events: list[Event] = [
        *regular(T0, 2 * WARM_S, 2.0),
        *regular(T0 + 2 * WARM_S, 120.0, 2.0, billed_ms=lambda i: 250.0),
    ]
    engine = make_engine(duration_cost, duration_min_count=least, **WINDOW_ONLY)
    assert len(opened(run(engine, events), DURATION_INFLATION)) == alerts


@pytest.mark.parametrize(("factor", "severity"), [(2.9, WARNING), (3.1, CRITICAL)])
def test_inflation_is_critical_only_past_the_margin(
    factor: float, severity: str
) -> None:
    found = opened(
        run(make_engine(duration_cost, **WINDOW_ONLY), slower(factor)),
        DURATION_INFLATION,
    )
    assert [t.severity for t in found] == [severity]


def test_timeouts_count_strongly() -> None:
    # One in ten invocations now runs to a 400 ms limit: the mean is 1.3x.
    def billed(i: int) -> float:
        return 400.0 if i % 10 == 0 else 100.0

    def timeout(i: int) -> str:
        return "timeout" if i % 10 == 0 else "success"

    base = regular(T0, WARM_S, 10.0)
    later = T0 + WARM_S
    slow_ok = [*base, *regular(later, 120.0, 10.0, billed_ms=billed)]
    assert run(make_engine(duration_cost), slow_ok) == []
    timed_out = [*base, *regular(later, 120.0, 10.0, billed_ms=billed, status=timeout)]
    found = opened(run(make_engine(duration_cost), timed_out), DURATION_INFLATION)
    assert len(found) == 1
    assert found[0].evidence["timeouts"] == 10
    assert found[0].evidence["threshold_ratio"] == 1.2


def test_a_deploy_with_new_durations_is_a_new_context() -> None:
    new = CTX._replace(qualifier="2")
    events: list[Event] = [
        *regular(T0, WARM_S, 10.0, context=CTX._replace(qualifier="1")),
        *regular(T0 + WARM_S, 600.0, 10.0, billed_ms=lambda i: 300.0, context=new),
    ]
    engine = make_engine(duration_cost)
    assert run(engine, events) == []
    assert engine.tracked_contexts == 2


# Error and retry storms


def failing(share: float, seconds: float = 120.0) -> list[Event]:
    """One failure in a hundred, then ``share`` of the invocations fail."""
    per_window = round(share * 100)
    return [
        *regular(
            T0, WARM_S, 10.0, status=lambda i: "error" if i % 100 == 0 else "success"
        ),
        *regular(
            T0 + WARM_S,
            seconds,
            10.0,
            status=lambda i: "error" if i % 100 < per_window else "success",
        ),
        *regular(T0 + WARM_S + seconds, 300.0, 10.0),
    ]


def test_failure_share_just_under_the_threshold_does_not_alert() -> None:
    # The threshold is the usual share (0.01) plus 0.2.
    assert run(make_engine(unit_cost, **WINDOW_ONLY), failing(0.20)) == []


def test_failure_share_just_over_the_threshold_alerts_once() -> None:
    transitions = run(make_engine(unit_cost, **WINDOW_ONLY), failing(0.22))
    assert [(t.kind, t.event) for t in transitions] == [
        (ERROR_STORM, OPENED),
        (ERROR_STORM, RESOLVED),
    ]
    evidence = transitions[0].evidence
    assert evidence["value"] == pytest.approx(0.22)
    assert evidence["baseline"] == pytest.approx(0.01)
    assert evidence["failures"] == 22
    assert transitions[0].severity == WARNING
    # 22 failed invocations a window at 2e-4 USD: 0.0044 USD a window.
    assert transitions[1].cost_usd == pytest.approx(12 * 22 * 2e-4, rel=0.1)


def test_retry_storm_shows_as_more_failed_invocations() -> None:
    events: list[Event] = [
        *regular(T0, WARM_S + 300.0, 10.0),
        # Every failed request is retried: twenty failing invocations a second.
        *regular(T0 + WARM_S, 120.0, 20.0, status=lambda i: "error", tag="retry"),
    ]
    found = opened(run(make_engine(unit_cost, **WINDOW_ONLY), events), ERROR_STORM)
    assert len(found) == 1
    assert found[0].evidence["invocations_vs_usual"] == pytest.approx(3.0)


# Slow ramps


def test_a_doubling_every_hour_is_learnt_by_the_fast_baseline_not_the_anchor() -> None:
    events: list[Event] = [
        *regular(T0, HOUR, 1.0),
        *doubling(T0 + HOUR, 3.5, 1.0),
    ]
    # Without the rise path's sequential test, which judges the ramp against
    # the level from before it and warns (as a cost spike) first.
    engine = make_engine(unit_cost, rise_false_alert_hours=0.0)
    transitions = run(engine, events, flush=False)
    # The spike detector's baseline follows the ramp and never fires...
    assert opened(transitions, COST_SPIKE) == []
    assert engine._parts[0].contexts[CTX].baseline.mean > 3 * 0.72
    # ...but against the slow anchor the ramp is a slow_ramp, within hours:
    # a warning once the recent rate is 1.5 times the anchor in far more
    # invocations than chance, held for ten minutes (about 1.5 hours in).
    ramps = opened(transitions, SLOW_RAMP)
    assert len(ramps) == 1
    assert ramps[0].evidence["fired"] == ["anchor_significant"]
    assert ramps[0].severity == WARNING
    assert T0 + 2 * HOUR < ramps[0].at < T0 + HOUR + 2.0 * HOUR
    assert 1.5 <= ramps[0].evidence["ratio"] < 3.0  # type: ignore[operator]
    assert ramps[0].evidence["z"] >= 5.0  # type: ignore[operator]


def test_a_batch_each_hour_is_not_a_ramp() -> None:
    # Five minutes of 20 invocations a second at the top of every hour.
    events: list[Event] = []
    for hour in range(6):
        start = T0 + hour * HOUR
        events.extend(regular(start, 300.0, 20.0, tag=f"batch{hour}"))
    assert opened(run(make_engine(unit_cost), events), SLOW_RAMP) == []


def test_a_flood_is_a_spike_not_a_ramp() -> None:
    # Early in the day, where the recent rate of a flood, projected to
    # midnight, would blow three times the anchor's daily spend.
    flood = MIDNIGHT + 1.5 * HOUR
    events: list[Event] = [
        *regular(MIDNIGHT, 1.5 * HOUR, 1.0),
        *regular(flood, 1500.0, 10.0, tag="flood"),
        *regular(flood + 1500.0, HOUR, 1.0, tag="after"),
    ]
    transitions = run(make_engine(unit_cost), events)
    assert [t.kind for t in opened(transitions)] == [COST_SPIKE]


def test_a_steady_function_never_ramps() -> None:
    events = list(steady(1.0, T0, 5 * HOUR))
    assert run(make_engine(unit_cost), list(events)) == []


@pytest.mark.parametrize(("factor", "alerts"), [(2.25, 0), (2.15, 1)])
def test_a_step_against_the_anchor_at_the_factor(factor: float, alerts: int) -> None:
    # An anchor that does not move after its warm-up, and a step to 2.2x:
    # the recent rate creeps up to 2.2x and passes 2.15, never 2.25.
    events: list[Event] = [
        *regular(T0, HOUR, 1.0),
        *regular(T0 + HOUR, 2 * HOUR, 2.2),
    ]
    # A step held this long is also a sustained rise (tests/detector/test_rise.py);
    # without that path, only the ramp rule judges it.
    engine = make_engine(
        unit_cost,
        ramp_factor=factor,
        ramp_warn_factor=factor,
        ramp_anchor_half_life_s=1e12,
        rise_windows=0,
    )
    transitions = run(engine, events)
    assert opened(transitions, COST_SPIKE) == []
    assert len(opened(transitions, SLOW_RAMP)) == alerts


@pytest.mark.parametrize(("share", "alerts"), [(1.01, 0), (0.99, 1)])
def test_projected_day_against_a_budget(share: float, alerts: int) -> None:
    # 0.72 USD/h from midnight on: the day is projected at 17.28 USD.
    events = regular(MIDNIGHT, HOUR, 1.0)
    budget = 24 * 0.72 * share
    key = "/".join(CTX)
    engine = make_engine(unit_cost, daily_budgets=((key, budget),))
    found = opened(run(engine, events), SLOW_RAMP)
    assert len(found) == alerts
    if found:
        assert found[0].evidence["fired"] == ["daily_budget"]
        assert found[0].evidence["budget_usd_per_day"] == round(budget, 2)
        assert found[0].evidence["projected_usd_per_day"] == pytest.approx(17.28)


def test_a_budget_for_a_function_covers_each_qualifier() -> None:
    function = "/".join(CTX[:4])
    monthly = ((function, 100.0),)
    events = regular(MIDNIGHT, HOUR, 1.0, context=CTX._replace(qualifier="7"))
    found = opened(run(make_engine(unit_cost, monthly_budgets=monthly), events))
    assert [t.evidence["fired"] for t in found] == [["monthly_budget"]]


@pytest.mark.parametrize(("share", "alerts"), [(1.01, 0), (0.99, 1)])
def test_an_account_budget_sums_its_functions(share: float, alerts: int) -> None:
    # Two functions on two partitions, 0.72 USD/h each: 34.56 USD a day.
    other = CTX._replace(function="thumbnail")
    events = sorted(
        [
            *regular(MIDNIGHT, 1800.0, 1.0),
            *regular(MIDNIGHT, 1800.0, 1.0, context=other, tag="o"),
        ],
        key=lambda e: e.time,
    )
    budget = 2 * 24 * 0.72 * share
    engine = make_engine(unit_cost, daily_budgets=(("aws/111122223333", budget),))
    out: list[Transition] = []
    for event in events:
        engine.process(event, 0 if event.context == CTX else 1)
        out.extend(engine.take_transitions())
    engine.flush()
    out.extend(engine.take_transitions())
    found = opened(out)
    assert len(found) == alerts
    if found:
        account = found[0]
        assert account.kind == SLOW_RAMP and account.severity == WARNING
        assert account.context == Context("aws", "111122223333", "*", "*", "*")
        assert account.evidence["scope"] == "account"
        assert account.evidence["projected_usd_per_day"] == pytest.approx(34.56)


# Determinism and checkpoints


def mixed() -> list[Event]:
    other = CTX._replace(function="thumbnail")
    errors = [
        inv
        for inv in regular(T0, WARM_S + 600.0, 10.0, context=other, tag="o")
        if inv.time < T0 + WARM_S or int(inv.time * 10) % 4
    ]
    storm = regular(T0 + WARM_S, 200.0, 10.0, status=lambda i: "error", context=other)
    return [*slower(1.8, seconds=300.0), *errors, *storm]


def test_same_input_gives_the_same_rule_alerts() -> None:
    first = run(make_engine(unit_cost), mixed())
    second = run(make_engine(unit_cost), mixed())
    kinds = {t.kind for t in first}
    assert {ERROR_STORM} <= kinds
    assert [t.to_json() for t in first] == [t.to_json() for t in second]


@pytest.mark.parametrize("cut", [0.5, 0.7, 0.95])
def test_snapshot_and_restore_keep_the_rule_state(cut: float) -> None:
    events = sorted(mixed(), key=lambda e: e.time)
    whole = run(make_engine(duration_cost), events)
    assert {DURATION_INFLATION, ERROR_STORM} <= {t.kind for t in whole}
    split = int(len(events) * cut)
    first = make_engine(duration_cost)
    head = run(first, events[:split], flush=False)
    second = make_engine(duration_cost)
    second.restore(0, first.snapshot(0))
    assert second._parts[0].contexts[CTX].rules is not None
    tail = run(second, events[split:])
    assert [t.to_json() for t in head + tail] == [t.to_json() for t in whole]


def test_status_counts_the_open_rule_alerts() -> None:
    engine = make_engine(duration_cost)
    run(engine, slower(2.0, seconds=600.0)[: int(10 * (WARM_S + 300))], flush=False)
    rows = {row.context: row for row in engine.take_status()}
    assert rows[CTX].open_alerts == 1


# Settings


def test_budgets_come_from_the_environment_and_toml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    function = "/".join(CTX[:4])
    toml = tmp_path / "dowguard.toml"
    toml.write_text(f'[monthly_budgets]\n"{function}" = 300.0\n')
    monkeypatch.setenv("DOWGUARD_DAILY_BUDGETS", f'{{"{function}/$LATEST": 12.5}}')
    config = detector_config(load_settings(toml))
    assert config.daily_budgets == ((f"{function}/$LATEST", 12.5),)
    assert config.monthly_budgets == ((function, 300.0),)


@pytest.mark.parametrize("budgets", ['{"aws/1/r": 5}', '{"aws/1/r/f": -1}'])
def test_a_bad_budget_is_a_config_error(
    budgets: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOWGUARD_DAILY_BUDGETS", budgets)
    with pytest.raises(ConfigError, match="daily_budgets"):
        load_settings()


def test_a_checkpoint_from_before_the_rules_restores() -> None:
    events = sorted(slower(2.0), key=lambda e: e.time)
    first = make_engine(duration_cost)
    # Cut early enough that the rules, learning afresh, are warm by the onset.
    run(first, events[:2000], flush=False)
    state = first._parts[0].contexts[CTX]
    del state.rules  # the field a checkpoint written before the rules lacks
    second = make_engine(duration_cost)
    second.restore(0, first.snapshot(0))
    found = opened(run(second, events[2000:]), DURATION_INFLATION)
    assert len(found) == 1
    assert [row.open_alerts for row in second.take_status()] == [0]
