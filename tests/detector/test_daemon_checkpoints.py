"""Daemon commits: only partitions read from since their last checkpoint are
snapshotted again (no broker: records are handed to the daemon directly)."""

from __future__ import annotations

from dataclasses import dataclass

from kafka.structs import TopicPartition

from detector.daemon import Daemon
from detector.engine import Engine
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
