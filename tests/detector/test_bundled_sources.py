"""The bundled recording through every source: still the same two alerts."""

from __future__ import annotations

from pathlib import Path

from detector.alerts import OPENED
from detector.engine import Engine
from detector.replay import replay_events
from dowguard.errors import ParseError
from ingest.parse import read_paths

RECORDING = Path(__file__).resolve().parents[2] / "data" / "recording"


def test_metrics_and_billing_of_the_same_contexts_add_no_alert() -> None:
    errors: list[ParseError] = []
    engine = Engine()
    transitions = replay_events(engine, read_paths([RECORDING], errors.append))
    assert errors == []
    opened = {(t.kind, t.context.function) for t in transitions if t.event == OPENED}
    assert opened == {
        ("cost_spike", "image-resize"),
        ("recursive_trigger", "order-processor"),
        ("cost_spike", "order-processor"),
    }
    counts = engine.source_counts
    # EstimatedCharges were compared with the computed cost and agreed; the
    # CUR hours began before the recording or end after it, so none is judged.
    assert counts["billing_compared"] >= 3
    assert counts["log_metric_disagreements"] == 0
    spike = next(t for t in transitions if t.kind == "cost_spike")
    last = [t for t in transitions if t.fingerprint == spike.fingerprint][-1]
    # The metric stream saw the same spike, a minute window at a time.
    assert "metrics" in last.evidence["sources_agreeing"]
    assert last.evidence["sources"]["metrics"]["memory_from"] == "last_invocation"
