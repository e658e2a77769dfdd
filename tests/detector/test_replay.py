"""Replay: broker-equivalent partitioning, pacing that changes nothing."""

from __future__ import annotations

from detector.engine import COST_SPIKE, RECURSIVE_TRIGGER, DetectorConfig, Engine
from detector.replay import Partitioner, Replay
from ingest.events import Event, Invocation
from ingest.partitioning import partition_for
from tests.detector.streams import CTX, T0, flat_cost, no_span_cost, sqs_loop, steady


def _engine(partitions: int = 3) -> Engine:
    return Engine(
        DetectorConfig(partitions=partitions),
        invocation_cost=flat_cost,
        span_cost=no_span_cost,
    )


def _stream() -> list[Event]:
    loop = CTX._replace(function="order-processor")
    events: list[Event] = [
        *steady(10.0, T0, 900.0),
        *steady(200.0, T0 + 900.0, 60.0, seed=2),
        *steady(10.0, T0 + 960.0, 120.0, seed=3),
        *sqs_loop(loop, hops=8, start=T0 + 950.0, gap_s=2.0),
    ]
    events.sort(key=lambda e: e.time)
    return events


class FakeClock:
    """A clock that only moves when slept on."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds


def test_speed_paces_by_event_time_without_changing_results() -> None:
    events = _stream()
    fast = Replay(_engine()).run(events).transitions
    clock = FakeClock()
    paced = Replay(_engine(), speed=60.0, sleep=clock.sleep, clock=clock).run(events)
    assert {t.kind for t in fast} == {COST_SPIKE, RECURSIVE_TRIGGER}
    assert [t.to_json() for t in paced.transitions] == [t.to_json() for t in fast]
    span = events[-1].time - events[0].time
    assert abs(clock.slept - span / 60.0) < 1.0


def test_results_do_not_depend_on_partition_count() -> None:
    one = Replay(_engine(partitions=1)).run(_stream()).transitions
    many = Replay(_engine(partitions=7)).run(_stream()).transitions
    assert sorted(t.fingerprint for t in one) == sorted(t.fingerprint for t in many)


def test_partitioner_matches_the_broker_default() -> None:
    part = Partitioner(5)
    for key in (CTX.key(), b"ab" * 16, b"x"):
        assert part(key) == partition_for(key, 5)
        assert part(key) == part(key)


class _Counting(Engine):
    """An engine that changes what one event does: it counts invocations."""

    def __init__(self) -> None:
        super().__init__(
            DetectorConfig(), invocation_cost=flat_cost, span_cost=no_span_cost
        )
        self.invocations = 0

    def process(self, event: Event, partition: int) -> None:
        self.invocations += type(event) is Invocation
        super().process(event, partition)


def test_an_engine_that_overrides_process_sees_every_event() -> None:
    events = _stream()
    engine = _Counting()
    counted = Replay(engine).run(events).transitions
    plain = Replay(_engine()).run(events).transitions
    assert engine.invocations == sum(type(e) is Invocation for e in events)
    assert [t.to_json() for t in counted] == [t.to_json() for t in plain]
