"""The bundled recording gives its two alerts, and nothing else alerts."""

from __future__ import annotations

from detector.alerts import CRITICAL, OPENED, RESOLVED, UPDATED
from detector.engine import COST_SPIKE, RECURSIVE_TRIGGER, DetectorConfig, Engine
from detector.replay import replay_events
from dowguard.cli import BUNDLED_RECORDING
from dowguard.errors import ParseError
from ingest.parse import read_paths


def test_bundled_recording_gives_the_spike_the_loop_and_its_cost_only() -> None:
    errors: list[ParseError] = []
    events = read_paths([BUNDLED_RECORDING], errors.append)
    transitions = replay_events(Engine(DetectorConfig()), events)
    assert errors == []
    alerts = {(t.kind, t.context.function) for t in transitions}
    # The loop's own cost is a sustained rise too (a loop followed through
    # traces does not silence it: that would depend on the reading order),
    # but a small one: a warning, never what enforcement acts on.
    assert alerts == {
        (COST_SPIKE, "image-resize"),
        (RECURSIVE_TRIGGER, "order-processor"),
        (COST_SPIKE, "order-processor"),
    }
    loop_cost = [
        t
        for t in transitions
        if t.kind == COST_SPIKE and t.context.function == "order-processor"
    ]
    assert {t.severity for t in loop_cost} == {"warning"}
    assert loop_cost[0].evidence["fired"] == "cost rate sustained above its baseline"
    loop = [t for t in transitions if t.kind == RECURSIVE_TRIGGER]
    assert [t.event for t in loop] == [OPENED, UPDATED, UPDATED, RESOLVED]
    assert loop[0].evidence["hops"] == 3
    assert loop[0].evidence["method"] == "trace"
    assert loop[0].evidence["growth"] == 1.0
    assert loop[1].severity == CRITICAL and loop[1].evidence["hops"] == 6
    # The chain's cost grows with it, and covers more than its own path.
    costs = [t.cost_usd for t in loop]
    assert costs == sorted(costs) and costs[0] > 0
    assert loop[0].evidence["chain_invocations"] > loop[0].evidence["hops"] + 1
