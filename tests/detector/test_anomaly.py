"""The pooled online model: its score as evidence and its warning-only alert."""

from __future__ import annotations

from detector.alerts import OPENED, RESOLVED, WARNING, Transition
from detector.engine import ANOMALY, COST_SPIKE, DetectorConfig, Engine
from ingest.events import Context, Event
from tests.detector.streams import T0, flat_cost, no_span_cost, steady

WARM_S = 1200.0


def fn(i: int) -> Context:
    return Context("aws", "111122223333", "us-east-1", f"fn-{i}", "$LATEST")


def run(config: DetectorConfig, factor: float) -> list[Transition]:
    """Ten functions at 10/s; after WARM_S, fn-0 runs ``factor`` times faster."""
    events: list[Event] = []
    for i in range(10):
        events += steady(10.0, T0, WARM_S, context=fn(i), seed=i)
        rate = 10.0 * factor if i == 0 else 10.0
        events += steady(rate, T0 + WARM_S, 120.0, context=fn(i), seed=50 + i)
        events += steady(10.0, T0 + WARM_S + 120.0, 120.0, context=fn(i), seed=90 + i)
    engine = Engine(config, invocation_cost=flat_cost, span_cost=no_span_cost)
    out: list[Transition] = []
    for event in sorted(events, key=lambda e: e.time):
        engine.process(event, 0)
        out.extend(engine.take_transitions())
    engine.flush()
    return out + engine.take_transitions()


CONFIG = DetectorConfig(model_learn_every=1)


def test_doubling_below_the_spike_rule_raises_a_model_warning() -> None:
    transitions = run(CONFIG, 2.2)
    assert [t for t in transitions if t.kind == COST_SPIKE] == []
    anomalies = [t for t in transitions if t.kind == ANOMALY]
    assert [t.event for t in anomalies] == [OPENED, RESOLVED]
    opened = anomalies[0]
    assert opened.context == fn(0)
    assert opened.severity == WARNING
    assert opened.evidence["source"] == "model"
    assert opened.evidence["model_scores"]["online"] >= CONFIG.anomaly_score  # type: ignore[index]
    assert T0 + WARM_S < opened.at < T0 + WARM_S + 120.0


def test_steady_traffic_raises_no_model_alert() -> None:
    assert run(CONFIG, 1.0) == []


def test_spike_alert_carries_the_score_and_no_second_alert() -> None:
    transitions = run(CONFIG, 6.0)
    kinds = {t.kind for t in transitions}
    assert kinds == {COST_SPIKE}
    scored = [t for t in transitions if "model_scores" in t.evidence]
    assert scored, "a spike's windows are scored by the model"
