"""What the evaluation sample supports: confidence bounds, pooling, background."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import pytest

from dowguard import evaluate, simulate
from dowguard.evaluate import (
    kind_rows,
    poisson_upper_bound,
    rate_upper_bound,
    recall_lower_bound,
    rows,
    scenarios_needed,
)
from dowguard.suite import attacks_config, background_config, suite

START = 1_000_000.0
OTHER = {"provider": "aws", "account": "1", "region": "r", "function": "bg"}


def flood(name: str, level: str = "10x", kind: str = "flood") -> dict[str, Any]:
    """An attack on a function of its own, from minute 10 to minute 20."""
    context = {**OTHER, "function": name, "qualifier": "$LATEST"}
    return {
        "name": name, "kind": kind, "level": level, "benign": False,
        "contexts": [context], "onset": START + 600, "end": START + 1200,
        "detected_by": ["cost_spike"],
        "excess": {"per_second": [[START + 600, 0.01]]},
    }  # fmt: skip


def recording(*scenarios: dict[str, Any], background: int = 10) -> dict[str, Any]:
    """One hour: the scenarios' functions and ``background`` others."""
    functions = [{"context": c} for s in scenarios for c in s["contexts"]]
    functions += [
        {"context": {**OTHER, "function": f"bg{i}", "qualifier": "$LATEST"}}
        for i in range(background)
    ]
    return {"start": START, "end": START + 3600, "scenarios": list(scenarios),
            "functions": functions}  # fmt: skip


def hit(name: str, at: float = 630.0) -> evaluate.Episode:
    return evaluate.Episode(
        "cost_spike", ("aws", "1", "r", name, "$LATEST"), START + at, "critical"
    )


# --- the bounds on known counts ---------------------------------------------


def test_recall_bound_of_no_scenarios_is_unknown_and_of_no_hits_is_zero() -> None:
    assert recall_lower_bound(0, 0) is None
    assert recall_lower_bound(0, 12) == 0.0


def test_recall_bound_with_every_scenario_detected_is_the_root_of_alpha() -> None:
    # P(all n detected) = p^n = 0.05 at the bound.
    assert recall_lower_bound(2, 2) == pytest.approx(math.sqrt(0.05))
    assert recall_lower_bound(2, 2) == pytest.approx(0.2236, abs=1e-4)
    assert recall_lower_bound(12, 12) == pytest.approx(0.7791, abs=1e-4)
    assert recall_lower_bound(1, 1) == pytest.approx(0.05)


def test_recall_bound_with_misses_solves_the_binomial_tail() -> None:
    # One of two: P(X >= 1) = 1 - (1 - p)^2 = 0.05.
    assert recall_lower_bound(1, 2) == pytest.approx(1 - math.sqrt(0.95), rel=1e-9)
    # Nine of ten: P(X >= 9) = 10 p^9 (1 - p) + p^10 = 0.05.
    p = recall_lower_bound(9, 10)
    assert p is not None and p == pytest.approx(0.6058, abs=1e-4)
    assert 10 * p**9 * (1 - p) + p**10 == pytest.approx(0.05, rel=1e-9)
    # A miss lowers the bound below that of all hits at the same n.
    assert p < (recall_lower_bound(10, 10) or 0.0)


def test_recall_bound_refuses_more_hits_than_scenarios() -> None:
    with pytest.raises(ValueError, match="3 hits out of 2"):
        recall_lower_bound(3, 2)


def test_poisson_bound_of_no_events_is_minus_log_alpha() -> None:
    assert poisson_upper_bound(0) == pytest.approx(-math.log(0.05))
    assert poisson_upper_bound(0) == pytest.approx(2.9957, abs=1e-4)


def test_poisson_bound_of_one_and_five_events() -> None:
    one = poisson_upper_bound(1)
    # P(X <= 1) = e^-m (1 + m) = 0.05 at the bound.
    assert math.exp(-one) * (1 + one) == pytest.approx(0.05, rel=1e-9)
    assert one == pytest.approx(4.7439, abs=1e-4)
    assert poisson_upper_bound(5) == pytest.approx(10.5130, abs=1e-4)
    with pytest.raises(ValueError, match="negative"):
        poisson_upper_bound(-1)


def test_rate_bound_is_per_thousand_function_hours() -> None:
    # 0 false alerts in the 400 function-hours of one seed: about 7.5.
    assert rate_upper_bound(0, 400.0) == pytest.approx(2.9957 / 400 * 1000, abs=1e-3)
    assert rate_upper_bound(0, 0.0) is None


def test_what_the_targets_take() -> None:
    assert scenarios_needed(0.99) == 299
    assert 0.99**299 < 0.05 < 0.99**298
    assert evaluate.function_hours_needed(0.5) == pytest.approx(5991.46, abs=0.01)
    enough, short = rate_upper_bound(0, 5992.0), rate_upper_bound(0, 5990.0)
    assert enough is not None and short is not None and enough < 0.5 < short


# --- rows and kinds -----------------------------------------------------------


def test_row_carries_the_recall_and_false_alert_bounds() -> None:
    labels = recording(flood("v1"), flood("v2"), background=10)
    stray = evaluate.Episode(
        "cost_spike", ("aws", "1", "r", "bg3", "$LATEST"), START + 100, "warning"
    )
    score = evaluate.score_recording(labels, [hit("v1"), stray], "r")
    (row,) = rows([score])
    assert (row.scenarios, row.detected) == (2, 1)
    assert row.recall_low == pytest.approx(1 - math.sqrt(0.95))
    # One false alert in 10 function-hours.
    assert (row.background_false, row.background_hours) == (1, 10.0)
    assert row.false_per_kfh == pytest.approx(100.0)
    assert row.false_high_per_kfh == pytest.approx(474.39, abs=0.01)
    text = evaluate.format_tables([row], evaluate.overall([score]))
    header = [c.strip() for c in text.splitlines()[0].split("|")]
    cells = [c.strip() for c in text.splitlines()[2].split("|")]
    assert cells[header.index("recall")] == "0.50"
    assert cells[header.index("recall low")] == "0.03"
    assert cells[header.index("false/kfh")] == "100.0"
    assert cells[header.index("false/kfh high")] == "474.4"
    assert row.to_json()["recall_low"] == row.recall_low


def test_summary_bounds_critical_false_alerts_apart() -> None:
    def stray(function: str, severity: str) -> evaluate.Episode:
        context = ("aws", "1", "r", function, "$LATEST")
        return evaluate.Episode("cost_spike", context, START + 100, severity)

    labels = recording(flood("v1"), background=10)
    alerts = [stray("bg1", "warning"), stray("bg2", "critical"), stray("bg2", "info")]
    score = evaluate.score_recording(labels, alerts, "r")
    summary = evaluate.overall([score])
    assert summary["background_false_alerts"] == 3
    assert summary["background_false_critical"] == 1
    assert summary["false_high_per_kfh"] == pytest.approx(775.37, abs=0.01)
    assert summary["critical_false_high_per_kfh"] == pytest.approx(474.39, abs=0.01)
    text = evaluate.format_tables(rows([score]), summary)
    assert "(300.0 per 1000, at most 775.37 at 95%; 1 critical, at most 474.39)" in text


def test_kinds_pool_the_intensities_of_3x_and_up_and_every_fan_out() -> None:
    labels = recording(
        flood("f1", "1x"),
        flood("f3", "3x"),
        flood("f10", "10x"),
        flood("l1", "fan-out 1", kind="sqs_loop"),
        flood("l2", "fan-out 2", kind="sqs_loop"),
        {**flood("sale", "5x", kind="flash_sale"), "benign": True},
    )
    score = evaluate.score_recording(labels, [hit("f3"), hit("l1"), hit("l2")], "r")
    by_kind = {k.kind: k for k in kind_rows([score])}
    assert sorted(by_kind) == ["flood", "sqs_loop"]
    floods = by_kind["flood"]
    assert floods.levels == ("3x", "10x")
    assert (floods.scenarios, floods.detected, floods.recall) == (2, 1, 0.5)
    loops = by_kind["sqs_loop"]
    assert (loops.scenarios, loops.detected) == (2, 2)
    assert loops.recall_low == pytest.approx(math.sqrt(0.05))
    assert loops.critical_low == loops.recall_low
    text = evaluate.format_tables(rows([score]), evaluate.overall([score]), [floods])
    assert "| flood | 3x, 10x | 2 | 0.50 | 0.03 | 0.50 | 0.03 |" in text


def test_nominal_multiplier() -> None:
    assert evaluate.nominal_multiplier("3x") == 3.0
    assert evaluate.nominal_multiplier("2.5x") == 2.5
    assert evaluate.nominal_multiplier("fan-out 2") is None
    assert evaluate.nominal_multiplier("x0.5 duration") is None


# --- pooling recordings --------------------------------------------------------


def test_rows_pool_recordings_of_the_same_name_by_identity() -> None:
    # The attacks/ of two seeds: the same name, contexts and scenario names.
    first = evaluate.score_recording(recording(flood("v"), background=10), [], "a")
    second = evaluate.score_recording(
        recording(flood("v"), background=10), [hit("v")], "a"
    )
    (row,) = rows([first, second])
    assert (row.scenarios, row.detected) == (2, 1)
    assert row.background_hours == 20.0
    assert row.false_high_per_kfh == pytest.approx(2.9957 / 20 * 1000, abs=0.01)
    summary = evaluate.overall([first, second])
    assert summary["background_function_hours"] == 20.0
    assert summary["false_high_per_kfh"] == pytest.approx(149.79, abs=0.01)


def test_recording_names_tell_the_seeds_apart(tmp_path: Path) -> None:
    dirs = [tmp_path / "s1" / "attacks", tmp_path / "s2" / "attacks"]
    assert evaluate.recording_names(dirs) == ["s1/attacks", "s2/attacks"]
    assert evaluate.recording_names([dirs[0], tmp_path / "s1" / "ramps"]) == [
        "attacks",
        "ramps",
    ]
    twice = evaluate.recording_names([dirs[0], dirs[0]])
    assert len(set(twice)) == 2 and twice[0].endswith("s1/attacks")


def write_labels(folder: Path, labels: dict[str, Any]) -> Path:
    folder.mkdir(parents=True)
    (folder / "labels.json").write_text(json.dumps(labels))
    return folder


def test_evaluate_pools_directories_of_several_seeds(
    tmp_path: Path, capsys: Any
) -> None:
    # Hand-made recordings with no traffic: labels alone, nothing detected.
    a = write_labels(tmp_path / "s1" / "attacks", recording(flood("v"), background=4))
    b = write_labels(tmp_path / "s2" / "attacks", recording(flood("v"), background=6))
    parser = argparse.ArgumentParser()
    evaluate.register(parser.add_subparsers())
    args = parser.parse_args(["evaluate", str(a), str(b), "--json"])
    assert args.func(args) == 0
    document = json.loads(capsys.readouterr().out)
    (row,) = document["rows"]
    assert (row["scenarios"], row["detected"], row["recall_low"]) == (2, 0, 0.0)
    assert row["background_hours"] == 10.0
    assert document["overall"]["background_function_hours"] == 10.0
    (kind,) = document["kinds"]
    assert (kind["kind"], kind["scenarios"]) == ("flood", 2)
    recordings = sorted(s["recording"] for s in document["scenarios"])
    assert recordings == ["s1/attacks", "s2/attacks"]
    per_recording = {r["recording"]: r for r in document["recordings"]}
    assert per_recording["s1/attacks"]["background_function_hours"] == 4.0
    assert per_recording["s2/attacks"]["background_false"] == []


# --- the background suite -------------------------------------------------------


def test_background_suite_is_the_attacks_background_alone() -> None:
    (only,) = suite("background", seed=7, functions=12, minutes=30.0)
    assert only.name == "background"
    config = only.config
    assert config.minutes == 30.0 and config.attacks == () and config.loops == ()
    assert config.loop is None and config.spike is None
    names = [f.name for f in config.functions]
    attacks = [f.name for f in attacks_config(seed=7, background=12).functions]
    assert names == attacks[:12]
    assert background_config(seed=8, functions=12).functions != config.functions


def test_suite_minutes_are_for_the_background_suite_only() -> None:
    from dowguard.errors import ConfigError

    with pytest.raises(ConfigError, match="background suite only"):
        suite("default", minutes=10.0)
    with pytest.raises(ConfigError, match="--minutes must be positive"):
        suite("background", minutes=0.0)


def test_background_recording_counts_every_function_as_background(
    tmp_path: Path, capsys: Any
) -> None:
    parser = argparse.ArgumentParser()
    simulate.register(parser.add_subparsers())
    args = parser.parse_args(
        ["simulate", str(tmp_path), "--suite", "background", "--functions", "6",
         "--minutes", "10", "--seed", "7"]
    )  # fmt: skip
    assert args.func(args) == 0
    assert "background: 0 scenarios, 6 functions" in capsys.readouterr().out
    folder = tmp_path / "background"
    labels = json.loads((folder / "labels.json").read_text())
    assert labels["scenarios"] == [] and labels["suite"] == "background"
    assert not any(f["expect_alert"] for f in labels["functions"])
    (score,) = evaluate.evaluate_dirs([folder])
    assert score.background_functions == 6
    assert score.background_hours == pytest.approx(1.0)
    assert score.outcomes == []
    summary = evaluate.overall([score])
    assert summary["background_function_hours"] == pytest.approx(1.0)
    high = summary["false_high_per_kfh"]
    assert high == pytest.approx(rate_upper_bound(len(score.background_false), 1.0))
    text = evaluate.format_tables(rows([score]), summary, kind_rows([score]))
    assert not text.startswith("| attack")
    assert "on 1 background function-hours" in text


# --- the attacks-heavy suite ----------------------------------------------------


def test_attacks_suite_has_victims_an_intensity_in_accounts_of_pairs() -> None:
    from dowguard.suite import HEAVY_BACKGROUND, VICTIM_ACCOUNT

    attacks, ramps = suite("attacks", seed=7, victims=4)
    floods = [a for a in attacks.config.attacks if a.name.startswith("flood-3x-")]
    assert [a.name for a in floods] == [f"flood-3x-{c}" for c in "abcd"]
    fns = {f.name: f for f in attacks.config.functions}
    accounts = [fns[a.functions[0]].account for a in floods]
    # The first pair where the default suite has it, the next in its own.
    assert accounts[:2] == [VICTIM_ACCOUNT] * 2
    assert accounts[2] == accounts[3] != VICTIM_ACCOUNT
    mutual = [x for x in attacks.config.loops if x.name.startswith("mutual-f2-")]
    assert len(mutual) == 4
    members = {fns[m].account for x in mutual[2:] for m in (x.function, *x.members)}
    assert members == {accounts[2]}
    assert sum(1 for n in fns if n.startswith("app")) == HEAVY_BACKGROUND
    assert len([r for r in ramps.config.attacks if r.name.startswith("ramp-30x-")]) == 4
    # Every scenario name is unique, as simulate requires.
    names = [x.name for x in (*attacks.config.loops, *attacks.config.attacks)]
    assert len(names) == len(set(names))


def test_victims_are_for_the_attacks_suite_only() -> None:
    from dowguard.errors import ConfigError

    with pytest.raises(ConfigError, match="attacks suite only"):
        suite("default", victims=4)
    with pytest.raises(ConfigError, match="--victims must be positive"):
        suite("attacks", victims=0)
    # Past 26 victims the tags take two letters and stay unique.
    (attacks, _) = suite("attacks", victims=28, functions=2)
    names = [f.name for f in attacks.config.functions]
    assert "flood-3x-ab" in names and len(names) == len(set(names))
