"""Cold start: a new function is judged against its peers until it is warm."""

from __future__ import annotations

from dataclasses import replace

from detector.alerts import CRITICAL, OPENED, Transition
from detector.engine import COST_SPIKE
from ingest.events import Context, Event, Invocation
from tests.detector import streams
from tests.detector.streams import T0, make_engine, steady

WARM_S = 900.0
ACCOUNT = "111122223333"


def fn(name: str, account: str = ACCOUNT) -> Context:
    return Context("aws", account, "us-east-1", name, "$LATEST")


def with_memory(events: list[Invocation], memory_mb: int) -> list[Invocation]:
    return [replace(e, memory_mb=memory_mb) for e in events]


def peers(count: int = 4) -> list[Invocation]:
    """Warm neighbours: 128 MB functions at five invocations a second."""
    out: list[Invocation] = []
    for i in range(count):
        out += steady(5.0, T0, WARM_S + 600.0, context=fn(f"peer-{i}"), seed=10 + i)
    return out


def run(events: list[Event]) -> list[Transition]:
    """``events`` in time order, without the online model."""
    return streams.run(make_engine(online_model=False), events)


def spikes(transitions: list[Transition], name: str) -> list[Transition]:
    return [
        t
        for t in transitions
        if t.kind == COST_SPIKE and t.event == OPENED and t.context.function == name
    ]


def test_new_function_flooding_at_once_is_caught_against_its_peers() -> None:
    start = T0 + WARM_S
    flood = list(steady(200.0, start, 120.0, context=fn("brand-new"), seed=2))
    transitions = run([*peers(), *flood])
    opened = spikes(transitions, "brand-new")
    assert len(opened) == 1
    alert = opened[0]
    assert alert.severity == CRITICAL
    # Caught within its first window, long before it could be warm.
    assert alert.at < start + 10.0
    assert alert.evidence["judged_against"] == f"peers:aws/{ACCOUNT}/x86_64/128MB"
    assert alert.evidence["baseline_windows"] == 0


def test_new_function_with_ordinary_traffic_raises_nothing() -> None:
    start = T0 + WARM_S
    newcomer = list(steady(8.0, start, 600.0, context=fn("brand-new"), seed=2))
    assert spikes(run([*peers(), *newcomer]), "brand-new") == []


def test_other_memory_size_falls_back_on_the_account_pool() -> None:
    start = T0 + WARM_S
    flood = with_memory(
        list(steady(200.0, start, 120.0, context=fn("big-new"), seed=2)), 3008
    )
    opened = spikes(run([*peers(), *flood]), "big-new")
    assert len(opened) == 1
    assert opened[0].evidence["judged_against"] == f"peers:aws/{ACCOUNT}"


def test_flood_in_an_account_with_no_warm_function_is_not_judged() -> None:
    start = T0 + WARM_S
    flood = list(steady(200.0, start, 120.0, context=fn("new", "999988887777"), seed=2))
    # Its neighbours are in another account, so it has no peers to meet.
    assert spikes(run([*peers(), *flood]), "new") == []


def test_flood_does_not_teach_the_pool() -> None:
    engine = make_engine(online_model=False)
    start = T0 + WARM_S
    flood = list(steady(200.0, start, 300.0, context=fn("brand-new"), seed=2))
    for event in sorted([*peers(), *flood], key=lambda e: e.time):
        engine.process(event, 0)
    pool = engine._parts[0].pools[("aws", ACCOUNT, "x86_64", "128MB")]
    # The peers cost 1.8 USD/h; the flood's 72 USD/h never entered the pool.
    assert 1.5 < pool.baseline.mean < 2.2
