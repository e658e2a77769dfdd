"""The suite's loop scenarios: every labelled loop is a loop, on any seed."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from detector.cost import Pricing
from dowguard import simulate
from dowguard.errors import ConfigError
from dowguard.simulate import (
    MIN_LOOP_REENTRIES,
    FunctionSpec,
    LoopScenario,
    SimConfig,
)
from dowguard.suite import FAN_OUT_LIVE_S, attacks_config, loops_config

LOOP_KINDS = {"sqs_loop", "s3_loop", "mutual_loop"}


def loop_labels(labels: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in labels["scenarios"] if s["kind"] in LOOP_KINDS]


@pytest.mark.parametrize("seed", range(1, 7))
def test_every_loop_of_the_default_suite_reenters_three_times(seed: int) -> None:
    labels = simulate.simulate(loops_config(seed)).labels
    loops = loop_labels(labels)
    assert len(loops) == 12
    for label in loops:
        intensity = label["intensity"]
        assert intensity["max_reentries"] >= MIN_LOOP_REENTRIES, label["name"]
        if intensity["fan_out"] == 2:
            live = label["bug_live"]
            assert live["end"] - live["onset"] == pytest.approx(FAN_OUT_LIVE_S)
            # The window opens with the chain that loops, not at the onset.
            assert live["onset"] < label["onset"] < live["end"]
            assert live["onset"] >= labels["start"] + 20 * 60.0


def test_every_loop_of_the_quick_geometry_reenters_three_times() -> None:
    for seed in (1, 2, 3):
        config = loops_config(seed, 40.0, 20 * 60.0, 30 * 60.0, 1)
        for label in loop_labels(simulate.simulate(config).labels):
            assert label["intensity"]["max_reentries"] >= MIN_LOOP_REENTRIES


def test_loops_alone_loop_as_they_do_in_the_attacks_recording() -> None:
    geometry = {"minutes": 16.0, "onset_s": 8 * 60.0, "end_s": 12 * 60.0}
    alone = simulate.simulate(loops_config(2, instances=1, **geometry)).labels
    full = attacks_config(2, background=20, instances=1, **geometry)
    among = simulate.simulate(full).labels
    mixed = {s["name"]: s for s in loop_labels(among)}
    for label in loop_labels(alone):
        other = mixed[label["name"]]
        for key in ("onset", "end", "bug_live", "excess"):
            assert label[key] == other[key], (label["name"], key)
        for key in ("chains", "max_reentries", "looped_invocations"):
            assert label["intensity"][key] == other["intensity"][key]


def one_loop(live_s: float, fan_out: int = 2, **kw: Any) -> SimConfig:
    fn = FunctionSpec(
        "loopy", "sqs", 2048, 300.0, sigma=0.3, rate_per_s=0.5, queue="loopy-q",
        traced=True,
    )  # fmt: skip
    loop = LoopScenario(
        fn.name, fn.queue, 60.0, 110.0, fan_out, name="loopy-loop", live_s=live_s,
        **kw,
    )  # fmt: skip
    return SimConfig(
        seed=4, minutes=2.0, functions=(fn,), loop=None, spike=None, loops=(loop,)
    )


def test_a_live_loop_starts_with_its_first_call_and_lasts_live_s() -> None:
    config = one_loop(5.0)
    sim = simulate._Sim(config, Pricing.load())
    fn, t0 = config.functions[0], config.start
    # Before the onset nothing loops, and nothing starts the window.
    assert not sim._bug_live(fn, t0 + 59.0)
    assert sim.live_window(config.loops[0]) == (t0 + 60.0, t0 + 60.0)
    # The first call after the onset starts it...
    assert sim._bug_live(fn, t0 + 63.0)
    assert sim.live_window(config.loops[0]) == (t0 + 63.0, t0 + 68.0)
    # ...a call whose handler began earlier does not loop...
    assert not sim._bug_live(fn, t0 + 62.0)
    # ...and the bug is live for live_s from the first call, not the onset.
    assert sim._bug_live(fn, t0 + 67.99)
    assert not sim._bug_live(fn, t0 + 68.0)
    assert not sim._bug_live(fn, t0 + 100.0)


def test_a_live_window_ends_with_the_loop() -> None:
    config = one_loop(30.0)
    sim = simulate._Sim(config, Pricing.load())
    fn, t0 = config.functions[0], config.start
    assert sim._bug_live(fn, t0 + 95.0)
    assert sim._bug_live(fn, t0 + 109.9)
    assert not sim._bug_live(fn, t0 + 110.0)
    assert sim.live_window(config.loops[0]) == (t0 + 95.0, t0 + 110.0)


def test_without_live_s_the_bug_is_live_from_onset_to_end() -> None:
    config = one_loop(0.0, fan_out=1)
    sim = simulate._Sim(config, Pricing.load())
    fn, t0 = config.functions[0], config.start
    assert not sim._bug_live(fn, t0 + 59.9)
    assert sim._bug_live(fn, t0 + 60.0) and sim._bug_live(fn, t0 + 109.9)
    assert not sim._bug_live(fn, t0 + 110.0)
    assert sim.live_window(config.loops[0]) == (t0 + 60.0, t0 + 110.0)


def test_the_looped_calls_come_from_calls_inside_the_window() -> None:
    labels = simulate.simulate(one_loop(5.0)).labels
    (label,) = labels["scenarios"]
    live = label["bug_live"]
    assert live["end"] - live["onset"] == pytest.approx(5.0)
    assert label["intensity"]["max_reentries"] >= MIN_LOOP_REENTRIES
    # A re-entry is at most a hop after the last live call, never later.
    assert live["onset"] < label["onset"] and label["end"] < live["end"] + 3.0


def test_a_loop_that_stops_too_soon_fails_the_recording() -> None:
    # Half a second of bug: one hop at most, never three re-entries.
    with pytest.raises(ConfigError, match=r"fewer than 3 times: loopy-loop \([01]\)"):
        simulate.simulate(one_loop(0.5))


def test_a_loop_whose_function_never_runs_fails_the_recording() -> None:
    config = one_loop(5.0)
    quiet = replace(config.functions[0], rate_per_s=0.0)
    with pytest.raises(ConfigError, match=r"loopy-loop \(0\)"):
        simulate.simulate(replace(config, functions=(quiet,)))


def test_bounded_retries_may_stop_early() -> None:
    config = one_loop(0.0, fan_out=1, max_hops=2, bounded=True)
    (label,) = simulate.simulate(config).labels["scenarios"]
    assert label["kind"] == "bounded_retry"
    assert label["intensity"]["max_reentries"] == 2


def test_short_loops_reads_every_loop_label() -> None:
    labels = {
        "scenarios": [
            {"name": "a", "kind": "sqs_loop", "intensity": {"max_reentries": 2}},
            {"name": "b", "kind": "mutual_loop", "intensity": {"max_reentries": 3}},
            {"name": "c", "kind": "bounded_retry", "intensity": {"max_reentries": 1}},
            {"kind": "recursive_loop", "intensity": {"chains": 0}},
            {"kind": "recursive_loop", "intensity": {"max_hops": 4}},
            {"name": "d", "kind": "flood", "intensity": {}},
        ]
    }
    assert simulate.short_loops(labels) == [("a", 2), ("recursive_loop", 0)]
