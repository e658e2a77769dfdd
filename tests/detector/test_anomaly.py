"""The pooled online model: its score as evidence and its warning-only alert."""

from __future__ import annotations

import math
import random

from detector.alerts import OPENED, RESOLVED, WARNING, Transition
from detector.engine import ANOMALY, COST_SPIKE, DetectorConfig
from ingest.events import Context, Event, Invocation
from tests.detector.streams import T0, feed, make_engine

WARM_S = 1200.0


def fn(i: int) -> Context:
    return Context("aws", "111122223333", "us-east-1", f"fn-{i}", "$LATEST")


def traffic(
    start: float, seconds: float, counts: list[float], seed: int
) -> list[Event]:
    """One aggregated record per window and function, Poisson-like counts."""
    rng = random.Random(seed)
    out: list[Event] = []
    for w in range(int(seconds / 10.0)):
        for i, usual in enumerate(counts):
            n = max(0, round(rng.gauss(usual, math.sqrt(usual))))
            t = start + w * 10.0 + 1.0 + i * 0.01
            out.append(Invocation(fn(i), t, f"r{w}-{i}", 100.0, 100.0, 128, count=n))
    return out


def run(config: DetectorConfig, factor: float) -> list[Transition]:
    """Ten functions at 400 a window; after WARM_S, fn-0 runs ``factor`` times."""
    usual = [400.0] * 10
    events = traffic(T0, WARM_S, usual, seed=1)
    events += traffic(T0 + WARM_S, 120.0, [400.0 * factor, *usual[1:]], seed=2)
    events += traffic(T0 + WARM_S + 120.0, 120.0, usual, seed=3)
    return feed(make_engine(config=config), events)


# Without the sustained-rise path, which makes a 2.2x rise held for 90 s a
# cost warning of its own (tests/detector/test_rise.py): here the model is
# the only judge of a rise below the spike rule.
CONFIG = DetectorConfig(model_learn_every=1, rise_windows=0)


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


def test_checkpoint_keeps_the_model_pools_and_seasons() -> None:
    usual = [400.0] * 10
    first = traffic(T0, WARM_S, usual, seed=1)
    rest = traffic(T0 + WARM_S, 120.0, [880.0, *usual[1:]], seed=2)
    rest += traffic(T0 + WARM_S + 120.0, 120.0, usual, seed=3)
    engine = make_engine(config=CONFIG)
    for event in first:
        engine.process(event, 0)
    engine.take_transitions()
    restored = make_engine(config=CONFIG)
    restored.restore(0, engine.snapshot(0))
    assert restored._parts[0].model is not None
    assert restored._parts[0].pools.keys() == engine._parts[0].pools.keys()
    outputs = []
    for e in (engine, restored):
        for event in rest:
            e.process(event, 0)
        e.flush()
        seen = e.take_transitions()
        outputs.append([(t.kind, t.event, t.at, t.evidence) for t in seen])
    assert outputs[0] == outputs[1]
    assert any(kind == ANOMALY for kind, *_ in outputs[0])


def test_no_model_alert_while_a_rule_alert_of_the_context_is_open() -> None:
    """A rise whose calls all fail is an error storm; the model adds no alert."""
    usual = [400.0] * 10
    events = traffic(T0, WARM_S, usual, seed=1)
    rise = traffic(T0 + WARM_S, 120.0, [880.0, *usual[1:]], seed=2)
    events += [
        Invocation(e.context, e.time, e.request_id, 100.0, 100.0, 128,
                   count=e.count, status="error")
        if isinstance(e, Invocation) and e.context == fn(0) else e
        for e in rise
    ]  # fmt: skip
    events += traffic(T0 + WARM_S + 120.0, 120.0, usual, seed=3)
    transitions = feed(make_engine(config=CONFIG), events)
    storms = [t for t in transitions if t.kind == "error_storm"]
    assert storms and storms[0].event == OPENED
    assert [t for t in transitions if t.kind == ANOMALY] == []
