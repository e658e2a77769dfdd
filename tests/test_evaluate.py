"""Scoring of alerts against labels: the arithmetic of ``dowguard evaluate``."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from dowguard import evaluate
from dowguard.evaluate import GRACE_S, Episode, leaked, percentile, rows

START = 1_000_000.0
VICTIM = {"provider": "aws", "account": "1", "region": "r", "function": "victim"}
LOOKALIKE = {"provider": "aws", "account": "1", "region": "r", "function": "sale"}
OTHER = {"provider": "aws", "account": "1", "region": "r", "function": "bystander"}


def ctx(data: dict[str, str]) -> tuple[str, ...]:
    return ("aws", data["account"], data["region"], data["function"], "$LATEST")


def labels(*scenarios: dict[str, Any], background: int = 9) -> dict[str, Any]:
    """Two hours; ``background`` functions besides the scenarios' own."""
    functions = [{"context": {**VICTIM, "qualifier": "$LATEST"}}]
    functions += [
        {"context": {**OTHER, "function": f"bg{i}", "qualifier": "$LATEST"}}
        for i in range(background)
    ]
    return {"start": START, "end": START + 7200, "scenarios": list(scenarios),
            "functions": functions}  # fmt: skip


def attack(
    onset: float = 600.0,
    end: float = 1200.0,
    usd_per_s: float = 0.01,
    context: dict[str, str] = VICTIM,
    name: str = "flood-a",
) -> dict[str, Any]:
    """A flood from START+onset to START+end leaking ``usd_per_s`` each second."""
    seconds = range(int(START + onset), int(START + end))
    return {
        "name": name, "kind": "flood", "level": "10x", "benign": False,
        "contexts": [{**context, "qualifier": "$LATEST"}],
        "onset": START + onset, "end": START + end,
        "detected_by": ["cost_spike", "anomaly"],
        "excess": {"per_second": [[s, usd_per_s] for s in seconds]},
    }  # fmt: skip


def benign(onset: float = 600.0, end: float = 1200.0) -> dict[str, Any]:
    return {
        "name": "flash-sale", "kind": "flash_sale", "level": "5x", "benign": True,
        "contexts": [{**LOOKALIKE, "qualifier": "$LATEST"}],
        "onset": START + onset, "end": START + end, "detected_by": [],
        "excess": {"per_second": []},
    }  # fmt: skip


def alert(
    at: float,
    kind: str = "cost_spike",
    context: dict[str, str] = VICTIM,
    severity: str = "critical",
) -> Episode:
    return Episode(kind, ctx(context), START + at, severity)


def test_one_alert_detects_the_attack_with_its_delay_and_leak() -> None:
    score = evaluate.score_recording(labels(attack()), [alert(630.0)], "r")
    (outcome,) = score.outcomes
    assert outcome.delay == pytest.approx(30.0)
    # 30 seconds at 0.01 USD leaked before the alert.
    assert outcome.leak == pytest.approx(0.30)
    assert score.false_alerts == []
    (row,) = rows([score])
    assert (row.recall, row.precision, row.detected) == (1.0, 1.0, 1)
    assert row.delay_p50_s == row.delay_p95_s == pytest.approx(30.0)
    assert row.excess_usd == pytest.approx(6.0)
    assert row.false_per_kfh == 0.0


def test_no_alerts_means_no_recall_and_everything_leaked() -> None:
    score = evaluate.score_recording(labels(attack()), [], "r")
    (row,) = rows([score])
    assert row.recall == 0.0 and row.detected == 0
    assert row.precision is None
    assert row.delay_p50_s is None and row.delay_p95_s is None
    assert row.leaked_usd == pytest.approx(6.0) == row.excess_usd


def test_alert_before_onset_is_false_and_detects_nothing() -> None:
    score = evaluate.score_recording(labels(attack()), [alert(590.0)], "r")
    (outcome,) = score.outcomes
    assert outcome.detected_at is None
    assert outcome.leak == pytest.approx(6.0)
    assert len(score.false_alerts) == 1
    # It is on the attack's context, not on the background.
    assert score.background_false == []
    (row,) = rows([score])
    assert row.precision == 0.0


def test_two_alerts_for_one_scenario_count_once_for_recall_twice_for_precision() -> (
    None
):
    alerts = [alert(700.0, severity="warning"), alert(640.0, kind="anomaly")]
    score = evaluate.score_recording(labels(attack()), alerts, "r")
    (outcome,) = score.outcomes
    assert outcome.delay == pytest.approx(40.0)  # the earlier of the two
    assert len(outcome.true_alerts) == 2
    # A false alert of a detecting kind elsewhere halves nothing but adds one.
    extra = [*alerts, alert(3000.0, context=OTHER)]
    (row,) = rows([evaluate.score_recording(labels(attack()), extra, "r")])
    assert row.recall == 1.0
    assert row.precision == pytest.approx(2 / 3)


def test_alert_of_a_kind_that_does_not_detect_is_neither_true_nor_false() -> None:
    score = evaluate.score_recording(
        labels(attack()), [alert(650.0, kind="billing_gap")], "r"
    )
    (outcome,) = score.outcomes
    assert outcome.detected_at is None and outcome.alerts
    assert score.false_alerts == []
    assert rows([score])[0].precision is None


def test_grace_after_the_end() -> None:
    inside = evaluate.score_recording(labels(attack()), [alert(1200.0 + GRACE_S)], "r")
    assert inside.outcomes[0].detected_at is not None
    outside = evaluate.score_recording(
        labels(attack()), [alert(1200.0 + GRACE_S + 1)], "r"
    )
    assert outside.outcomes[0].detected_at is None
    assert len(outside.false_alerts) == 1


def test_false_alert_rate_is_per_thousand_background_function_hours() -> None:
    # Nine background functions for two hours: 18 function-hours.
    alerts = [alert(100.0 * i, context={**OTHER, "function": "bg1"}) for i in (1, 2)]
    score = evaluate.score_recording(labels(attack()), alerts, "r")
    assert score.background_hours == pytest.approx(18.0)
    (row,) = rows([score])
    assert row.false_per_kfh == pytest.approx(2 / 18 * 1000)
    summary = evaluate.overall([score])
    assert summary["false_alerts"] == 2 and summary["precision"] == 0.0


def test_lookalike_alerts_are_counted_by_severity_and_are_false() -> None:
    alerts = [
        alert(650.0, context=LOOKALIKE, severity="warning"),
        alert(700.0, kind="anomaly", context=LOOKALIKE, severity="warning"),
        alert(800.0, context=LOOKALIKE, severity="critical"),
    ]
    score = evaluate.score_recording(labels(attack(), benign()), alerts, "r")
    assert len(score.false_alerts) == 3
    table = {r.kind: r for r in rows([score])}
    assert (table["flash_sale"].warnings, table["flash_sale"].criticals) == (2, 1)
    # The look-alike's cost_spike alerts count against the flood's precision.
    assert table["flood"].precision == 0.0
    text = evaluate.format_tables(rows([score]), evaluate.overall([score]))
    assert "| flash_sale | 5x | 1 | 2 | 1 | no |" in text


def test_recall_and_delays_over_several_scenarios() -> None:
    scenarios = [
        attack(name="a", context={**VICTIM, "function": "v1"}),
        attack(name="b", context={**VICTIM, "function": "v2"}),
        attack(name="c", context={**VICTIM, "function": "v3"}),
    ]
    alerts = [
        alert(610.0, context={**VICTIM, "function": "v1"}),
        alert(690.0, context={**VICTIM, "function": "v2"}),
    ]
    (row,) = rows([evaluate.score_recording(labels(*scenarios), alerts, "r")])
    assert row.scenarios == 3 and row.detected == 2
    assert row.recall == pytest.approx(2 / 3)
    assert (row.delay_p50_s, row.delay_p95_s) == (pytest.approx(10.0), 90.0)
    # Leaks 0.1, 0.9 and all 6.0 of the undetected one, averaged.
    assert row.leaked_usd == pytest.approx((0.1 + 0.9 + 6.0) / 3)


def test_leak_counts_the_second_that_holds_the_alert_in_proportion() -> None:
    series = [(10.0, 1.0), (11.0, 2.0), (12.0, 4.0)]
    assert leaked(series, 11.25) == pytest.approx(1.0 + 0.5)
    assert leaked(series, 10.0) == 0.0
    assert leaked(series, None) == 7.0


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 0.5) is None
    assert percentile([3.0], 0.95) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0
    assert percentile([float(i) for i in range(1, 21)], 0.95) == 19.0


def test_episodes_follow_a_fingerprint_from_opening_to_resolution() -> None:
    def t(event: str, at: float, severity: str = "warning") -> SimpleNamespace:
        return SimpleNamespace(
            event=event, fingerprint="f", kind="recursive_trigger",
            context=ctx(VICTIM), at=at, severity=severity,
        )  # fmt: skip

    found = evaluate.episodes(
        [
            t("opened", 1.0),
            t("updated", 2.0, "critical"),
            t("resolved", 3.0, "critical"),
            t("opened", 9.0),
        ]
    )
    assert [(e.opened_at, e.severity) for e in found] == [
        (1.0, "critical"),
        (9.0, "warning"),
    ]


def test_bad_scenario_label_is_a_parse_error() -> None:
    from dowguard.errors import ParseError

    with pytest.raises(ParseError, match="bad scenario label"):
        evaluate.Scenario.from_label({"kind": "flood", "contexts": [VICTIM]}, "x")


BUNDLED = Path(__file__).resolve().parent.parent / "data" / "recording"


def test_bundled_recording_both_scenarios_are_detected_early() -> None:
    (score,) = evaluate.evaluate_dirs([BUNDLED])
    assert score.skipped == 0
    found = {o.scenario.kind: o for o in score.outcomes}
    spike, loop = found["cost_spike"], found["recursive_loop"]
    # The README's figures: the spike 1.6 s after its onset (early firing on
    # its calls' starts, inside its first window), the loop 1 s.
    assert spike.delay == pytest.approx(1.6, abs=0.5)
    assert loop.delay is not None and 0 <= loop.delay < 3
    assert loop.leak < 0.05 * loop.scenario.total_excess
    assert score.false_alerts == []


@pytest.mark.slow
def test_cli_runs_the_quick_suite(tmp_path: Path, capsys: Any) -> None:
    parser = argparse.ArgumentParser()
    evaluate.register(parser.add_subparsers())
    args = parser.parse_args(["evaluate", "--quick", "--json", "--keep", str(tmp_path)])
    assert args.func(args) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["overall"]["records_skipped"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["attacks", "ramps"]
    kinds = {r["kind"] for r in document["rows"]}
    assert {"sqs_loop", "s3_loop", "mutual_loop", "flood", "slow_ramp"} <= kinds
    by_name = {s["name"]: s for s in document["scenarios"]}
    # The detector follows linked SQS chains today.
    assert by_name["sqsloop-f1-a"]["detected"]
    for scenario in document["scenarios"]:
        assert 0 <= scenario["leaked_usd"] <= scenario["excess_usd"] + 1e-9


def test_cli_refuses_directories_and_a_suite_together(tmp_path: Path) -> None:
    from dowguard.errors import ConfigError

    parser = argparse.ArgumentParser()
    evaluate.register(parser.add_subparsers())
    args = parser.parse_args(["evaluate", str(tmp_path), "--suite", "quick"])
    with pytest.raises(ConfigError, match="not both"):
        args.func(args)


def test_unknown_suite_and_empty_background_are_refused() -> None:
    from dowguard.errors import ConfigError
    from dowguard.suite import suite

    with pytest.raises(ConfigError, match="unknown suite 'huge'"):
        suite("huge")
    with pytest.raises(ConfigError, match="--functions must be positive"):
        suite("quick", functions=0)
    (attacks, ramps) = suite("quick", functions=12)
    for recording, count in ((attacks, 12), (ramps, 6)):
        names = [f.name for f in recording.config.functions]
        assert sum(1 for n in names if n.startswith("app")) == count


def test_rows_carry_the_measured_cost_multiplier() -> None:
    flood = attack()
    flood["intensity"] = {"cost_multiplier": 9.5}
    (row,) = rows([evaluate.score_recording(labels(flood), [], "r")])
    assert row.cost_multiplier == 9.5


def test_unknown_alert_kind_on_the_background_is_a_false_alert() -> None:
    stray = alert(3000.0, kind="budget_burn", context={**OTHER, "function": "bg3"})
    score = evaluate.score_recording(labels(attack()), [stray], "r")
    assert score.background_false == [stray]
    (row,) = rows([score])
    # Not a kind that detects a flood: the flood's precision is untouched...
    assert row.precision is None
    # ...but it is a false alert of the background all the same.
    assert row.false_per_kfh == pytest.approx(1 / 18 * 1000)
    assert evaluate.overall([score])["false_alerts"] == 1


# The least median delay possible: evidence against a false-alert budget


def flood_at(
    per_s: float, ratio: float, usd_per_call: float = 0.001, name: str = "flood-a"
) -> tuple[dict[str, Any], float]:
    """A flood of ``ratio`` times ``per_s`` calls from minute 10 to 20; the
    victim's invocations over the two hours, attack included."""
    extra = per_s * (ratio - 1.0)
    flood = attack(usd_per_s=extra * usd_per_call, name=name)
    flood["intensity"] = {"baseline_usd_per_hour": per_s * usd_per_call * 3600.0}
    return flood, per_s * 7200.0 + extra * 600.0


def bounded(flood: dict[str, Any], calls: float, **kw: Any) -> float | None:
    recording = labels(flood)
    recording["functions"][0]["invocations"] = calls
    (outcome,) = evaluate.score_recording(recording, [], "r", **kw).outcomes
    return outcome.bound


def test_the_usual_call_rate_is_recovered_from_the_invocations_and_excess() -> None:
    flood, calls = flood_at(0.4, 3.0)
    scenario = evaluate.Scenario.from_label(flood)
    assert evaluate.usual_call_rate(scenario, calls, 7200.0) == pytest.approx(0.4)


def test_a_steady_flood_takes_the_log_of_the_budget_over_its_information_rate() -> None:
    # 0.4 calls a second tripled: 0.4 (3 log 3 - 2) nats a second, against
    # the log of 2000 hours of 10 s windows.
    flood, calls = flood_at(0.4, 3.0)
    expected = math.log(2000 * 360) / (0.4 * (3 * math.log(3) - 2))
    assert bounded(flood, calls) == pytest.approx(expected)
    # Four times the budget adds log 4 nats; 20 s windows take half of them.
    assert bounded(flood, calls, budget_hours=8000.0) == pytest.approx(
        expected * math.log(8000 * 360) / math.log(2000 * 360)
    )
    assert bounded(flood, calls, window_s=20.0) == pytest.approx(
        expected * math.log(2000 * 180) / math.log(2000 * 360)
    )


def test_more_calls_or_a_steeper_flood_can_be_found_sooner() -> None:
    slow = bounded(*flood_at(0.25, 3.0))
    fast = bounded(*flood_at(0.4, 3.0))
    steep = bounded(*flood_at(0.4, 10.0))
    assert slow is not None and fast is not None and steep is not None
    assert steep < fast < slow
    # Delays scale with the inverse of the call rate.
    assert slow / fast == pytest.approx(0.4 / 0.25)


def test_a_flood_too_faint_for_the_budget_has_no_bound() -> None:
    # One extra call in a thousand seconds: not enough in ten minutes.
    assert bounded(*flood_at(0.001, 2.0)) is None


def test_the_bound_is_left_out_where_calls_are_not_the_evidence() -> None:
    flood, calls = flood_at(0.4, 3.0)
    flood["kind"] = "duration_inflation"
    assert bounded(flood, calls) is None
    # Without its victim's invocations, nor for a flood.
    assert bounded(*flood_at(0.4, 3.0)[:1], 0) is None


def test_a_ramp_is_bounded_later_than_a_flood_at_its_final_rate() -> None:
    # The excess grows linearly to twice the usual over the ten minutes.
    per_s, usd = 0.4, 0.001
    ramp = attack(name="ramp-a")
    ramp["kind"] = "slow_ramp"
    seconds = ramp["excess"]["per_second"]
    for i, entry in enumerate(seconds):
        entry[1] = per_s * 2.0 * (i / len(seconds)) * usd
    ramp["intensity"] = {"baseline_usd_per_hour": per_s * usd * 3600.0}
    calls = per_s * 7200.0 + sum(u for _, u in seconds) / usd
    ramped = bounded(ramp, calls)
    steady = bounded(*flood_at(per_s, 3.0))
    assert ramped is not None and steady is not None and ramped > 2 * steady


def test_the_row_gives_the_median_bound_beside_the_delays() -> None:
    a, calls_a = flood_at(0.4, 3.0, name="a")
    b, calls_b = flood_at(0.25, 3.0, name="b")
    b["contexts"] = [{**VICTIM, "function": "v2", "qualifier": "$LATEST"}]
    recording = labels(a, b)
    recording["functions"][0]["invocations"] = calls_a
    recording["functions"].append(
        {"context": {**VICTIM, "function": "v2", "qualifier": "$LATEST"},
         "invocations": calls_b}
    )  # fmt: skip
    score = evaluate.score_recording(recording, [alert(640.0)], "r")
    bounds = sorted(o.bound for o in score.outcomes if o.bound is not None)
    (row,) = rows([score])
    # Nearest rank of two: the lower one.
    assert len(bounds) == 2 and row.delay_bound_p50_s == bounds[0]
    text = evaluate.format_tables([row], evaluate.overall([score]))
    assert "| bound p50 s |" in text.splitlines()[0]
    assert f"| {bounds[0]:.1f} |" in text.splitlines()[2]
    assert row.to_json()["delay_bound_p50_s"] == bounds[0]
