"""When a suite's recordings begin: the --start of simulate and evaluate."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from dowguard import evaluate, simulate
from dowguard.errors import ConfigError
from dowguard.suite import SUITE_START, SUITES, suite

NOON = "2026-03-07T12:00:00+00:00"


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


@pytest.mark.parametrize("name", SUITES)
def test_every_recording_of_a_suite_begins_at_the_start(name: str) -> None:
    default = suite(name, seed=3, functions=6)
    moved = suite(name, seed=3, functions=6, start=NOON)
    assert [r.name for r in moved] == [r.name for r in default]
    for before, after in zip(default, moved, strict=True):
        assert before.config.start == _ts(SUITE_START)
        assert after.config.start == _ts(NOON)
        # Same functions and scenarios: only the clock moved.
        assert after.config.functions == before.config.functions
        assert after.config.attacks == before.config.attacks
        assert after.config.loops == before.config.loops


def test_the_suite_start_given_is_the_default_to_the_byte() -> None:
    (default,) = suite("background", seed=5, functions=8, minutes=5.0)
    (given,) = suite("background", seed=5, functions=8, minutes=5.0, start=SUITE_START)
    assert given.config == default.config
    one, other = simulate.simulate(default.config), simulate.simulate(given.config)
    assert one.log_lines == other.log_lines
    assert one.metric_lines == other.metric_lines


def test_a_start_without_a_zone_is_utc_and_a_zone_is_honoured() -> None:
    (plain,) = suite("background", functions=2, start="2026-03-07T12:00")
    (zoned,) = suite("background", functions=2, start="2026-03-07T13:00+01:00")
    (zulu,) = suite("background", functions=2, start="2026-03-07T12:00:00Z")
    assert plain.config.start == zoned.config.start == zulu.config.start == _ts(NOON)


def test_a_start_that_is_no_time_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"--start 'tea time' is not ISO 8601"):
        suite("quick", start="tea time")


def test_background_follows_the_day_of_its_accounts() -> None:
    """The suite's accounts peak in their afternoons: 15:00 UTC for the first.

    The same functions of that account, half an hour at their peak and half
    an hour at their trough twelve hours later, are called more at the peak.
    """
    counts = []
    for start in ("2026-03-04T14:45:00Z", "2026-03-04T02:45:00Z"):
        (only,) = suite("background", seed=2, functions=80, minutes=30.0, start=start)
        labels = simulate.simulate(only.config).labels
        first = [
            f["invocations"]
            for f in labels["functions"]
            if f["context"]["account"] == "210987654321" and f["trigger"] == "http"
        ]
        counts.append(sum(first))
    peak, trough = counts
    assert trough > 0
    assert peak > 1.3 * trough


def _simulate_cli(outdir: Path, *extra: str) -> int:
    parser = argparse.ArgumentParser()
    simulate.register(parser.add_subparsers())
    args = parser.parse_args(["simulate", str(outdir), *extra])
    result: int = args.func(args)
    return result


def test_simulate_suite_writes_the_start_into_the_labels(tmp_path: Path) -> None:
    flags = ("--suite", "background", "--functions", "4", "--minutes", "5")
    assert _simulate_cli(tmp_path / "late", *flags, "--start", NOON) == 0
    assert _simulate_cli(tmp_path / "usual", *flags) == 0
    late = json.loads((tmp_path / "late/background/labels.json").read_text())
    usual = json.loads((tmp_path / "usual/background/labels.json").read_text())
    assert late["start_iso"] == "2026-03-07T12:00:00.000Z"
    assert usual["start"] == _ts(SUITE_START)
    assert late["end"] - late["start"] == usual["end"] - usual["start"] == 300.0
    assert [f["context"] for f in late["functions"]] == [
        f["context"] for f in usual["functions"]
    ]


def test_single_recording_keeps_its_own_default_start(tmp_path: Path) -> None:
    assert _simulate_cli(tmp_path, "--minutes", "2", "--scenario", "none") == 0
    labels = json.loads((tmp_path / "labels.json").read_text())
    assert labels["start"] == _ts(simulate.DEFAULT_START.replace("Z", "+00:00"))


def test_evaluate_generates_the_suite_at_the_start(tmp_path: Path) -> None:
    (path,) = evaluate.generate_suite(
        "background", tmp_path, seed=4, functions=3, minutes=5.0, start=NOON
    )
    labels = json.loads((path / "labels.json").read_text())
    assert labels["start"] == _ts(NOON)


def test_evaluate_refuses_a_start_for_recordings_it_is_given(
    tmp_path: Path, capsys: Any
) -> None:
    parser = argparse.ArgumentParser()
    evaluate.register(parser.add_subparsers())
    args = parser.parse_args(["evaluate", str(tmp_path), "--start", NOON])
    with pytest.raises(ConfigError, match="--start is for a generated suite"):
        args.func(args)
    assert capsys.readouterr().out == ""


def test_evaluate_start_reaches_the_suite_it_generates(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    evaluate.register(parser.add_subparsers())
    args = parser.parse_args(
        ["evaluate", "--suite", "background", "--functions", "3", "--minutes", "5",
         "--start", "2026-03-07T12:00", "--keep", str(tmp_path), "--json"]
    )  # fmt: skip
    assert args.func(args) == 0
    labels = json.loads((tmp_path / "background/labels.json").read_text())
    assert labels["start"] == datetime(2026, 3, 7, 12, tzinfo=UTC).timestamp()
