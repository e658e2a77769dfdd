"""Daemon commits: only partitions read from since their last checkpoint are
snapshotted again (no broker: records are handed to the daemon directly)."""

from __future__ import annotations

from dataclasses import dataclass

from kafka.structs import TopicPartition

from detector.alerts import OPENED
from detector.daemon import Daemon
from detector.engine import DetectorConfig, Engine
from detector.memory_sink import MemorySink
from dowguard.config import Settings
from ingest.events import Invocation, encode_event, kafka_key
from tests.detector.streams import CTX, T0, flat_cost, no_span_cost


@dataclass
class _Record:
    key: bytes
    value: bytes
    offset: int
    partition: int


def _daemon(sink: MemorySink) -> Daemon:
    settings = Settings(kafka_bootstrap="127.0.0.1:1")
    engine = Engine(invocation_cost=flat_cost, span_cost=no_span_cost)
    return Daemon(settings, engine, sink)


def _batch(partition: int, first: int, count: int) -> list[_Record]:
    out = []
    for i in range(count):
        inv = Invocation(
            CTX, T0 + first + i, f"r{partition}-{first + i}", 10.0, 10.0, 128
        )
        out.append(_Record(kafka_key(inv), encode_event(inv), first + i, partition))
    return out


def _stored(
    sink: MemorySink, daemon: Daemon, number: int
) -> tuple[bytes, dict[str, int]]:
    cp = sink.load_checkpoint(daemon.settings.group_id, number)
    assert cp is not None
    return cp.state, dict(cp.offsets)


def test_a_commit_snapshots_only_the_partitions_read_since_the_last() -> None:
    sink = MemorySink()
    daemon = _daemon(sink)
    topic = daemon.settings.topic_invocations
    tps = [TopicPartition(topic, n) for n in range(3)]
    daemon._owned = set(tps)
    daemon._handle_batch(tps[0], _batch(0, 0, 5))
    daemon._handle_batch(tps[1], _batch(1, 0, 5))
    daemon._store(daemon._numbers())
    assert sink.load_checkpoint(daemon.settings.group_id, 2) is None
    first = _stored(sink, daemon, 1)
    assert first[1] == {topic: 5}

    daemon._handle_batch(tps[0], _batch(0, 5, 3))
    daemon._store(daemon._numbers())
    # Partition 1 was not read from: its checkpoint is the one stored before,
    # still what its state and offsets are.
    assert _stored(sink, daemon, 1) == first
    assert first[0] == daemon.engine.snapshot(1)
    assert _stored(sink, daemon, 0) == (daemon.engine.snapshot(0), {topic: 8})
    assert sink.load_checkpoint(daemon.settings.group_id, 2) is None


class _Seeks:
    """Stands in for the consumer a restore seeks to the checkpoint's offsets."""

    def __init__(self) -> None:
        self.seeks: dict[TopicPartition, int] = {}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks[tp] = offset


def _account_daemon(sink: MemorySink) -> Daemon:
    """A daemon whose engine budgets the account of CTX at 22 USD a day."""
    config = DetectorConfig(daily_budgets=(("/".join(CTX[:2]), 22.0),))
    engine = Engine(config, invocation_cost=_unit_cost, span_cost=no_span_cost)
    daemon = Daemon(Settings(kafka_bootstrap="127.0.0.1:1"), engine, sink)
    daemon._consumer = _Seeks()  # type: ignore[assignment]
    return daemon


def _unit_cost(inv: Invocation) -> float:
    return 2e-4 * inv.count


def _account_batches(seconds: int) -> list[tuple[int, list[_Record]]]:
    """One call a second of CTX on partition 1 and of another function of its
    account on partition 2, from a midnight on (0.72 USD/h each), in batches
    of a minute per partition."""
    midnight = T0 - T0 % 86_400 + 86_400
    other = CTX._replace(function="thumbnail")
    batches = []
    for first in range(0, seconds, 60):
        for number, context in ((1, CTX), (2, other)):
            batch = []
            for i in range(first, min(first + 60, seconds)):
                inv = Invocation(
                    context, midnight + i + 0.5, f"a{number}-{i}", 99.5, 100.0, 128
                )
                batch.append(_Record(kafka_key(inv), encode_event(inv), i, number))
            batches.append((number, batch))
    return batches


def _read(daemon: Daemon, batches: list[tuple[int, list[_Record]]]) -> None:
    topic = daemon.settings.topic_invocations
    for number, batch in batches:
        daemon._handle_batch(TopicPartition(topic, number), batch)
        daemon._store(daemon._numbers())


def test_a_restarted_daemon_keeps_the_account_alert_open_once() -> None:
    batches = _account_batches(3600)
    whole_sink = MemorySink()
    whole = _account_daemon(whole_sink)
    topic = whole.settings.topic_invocations
    owned = {TopicPartition(topic, n) for n in (1, 2)}
    whole._on_assigned(owned)
    _read(whole, batches)
    expected = [t.to_json() for t in whole_sink.transitions()]
    assert [t["event"] for t in expected] == [OPENED]

    sink = MemorySink()
    first = _account_daemon(sink)
    first._on_assigned(owned)
    cut = len(batches) // 3  # 20 minutes in: the account alert is open
    _read(first, batches[:cut])
    assert [t.event for t in sink.transitions()] == [OPENED]
    # The process stops; a new one is given both partitions and restores them.
    second = _account_daemon(sink)
    second._on_assigned(owned)
    seeks = second._consumer.seeks  # type: ignore[union-attr]
    assert seeks == {tp: 1200 for tp in owned}
    _read(second, batches[cut:])
    assert [t.to_json() for t in sink.transitions()] == expected
    assert sink.duplicates == 0
