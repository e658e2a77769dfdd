"""Daemon commits: only partitions read from since their last checkpoint are
snapshotted again, and only as often as the checkpoint cadence says (no
broker: records are handed to the daemon directly)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from kafka.structs import TopicPartition

from detector.alerts import OPENED
from detector.daemon import Daemon, checkpoint_gap
from detector.engine import DetectorConfig, Engine
from detector.memory_sink import MemorySink
from dowguard.config import Settings, load_settings
from dowguard.errors import ConfigError
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


class _Consumer(_Seeks):
    """Also takes offset commits, as the consumer of a daemon's commit does."""

    def __init__(self) -> None:
        super().__init__()
        self.committed: dict[TopicPartition, int] = {}

    def commit(self, offsets: dict[TopicPartition, Any], timeout_ms: int) -> None:
        self.committed.update({tp: meta.offset for tp, meta in offsets.items()})

    def highwater(self, tp: TopicPartition) -> None:
        return None


def _cadence_daemon(sink: MemorySink, every: int) -> Daemon:
    """An account daemon that checkpoints every ``every`` batches only."""
    daemon = _account_daemon(sink)
    daemon.settings = daemon.settings.model_copy(
        update={"checkpoint_batches": every, "checkpoint_interval_s": 1e9}
    )
    daemon._next_checkpoint = float("inf")
    daemon._consumer = _Consumer()  # type: ignore[assignment]
    return daemon


def _commit_each(daemon: Daemon, batches: list[tuple[int, list[_Record]]]) -> None:
    topic = daemon.settings.topic_invocations
    for number, batch in batches:
        daemon._handle_batch(TopicPartition(topic, number), batch)
        daemon._commit()


def test_commits_between_checkpoints_store_transitions_but_no_offsets() -> None:
    sink = MemorySink()
    daemon = _cadence_daemon(sink, every=8)
    topic = daemon.settings.topic_invocations
    owned = {TopicPartition(topic, n) for n in (1, 2)}
    daemon._on_assigned(owned)
    consumer = daemon._consumer
    assert isinstance(consumer, _Consumer)
    batches = _account_batches(3600)

    _commit_each(daemon, batches[:7])
    assert sink.checkpoints(daemon.settings.group_id) == {}
    assert consumer.committed == {}
    assert daemon.checkpoints == 0

    _commit_each(daemon, batches[7:8])
    assert daemon.checkpoints == 1
    assert {n: cp.offsets for n, cp in sink.checkpoints("dowguard").items()} == {
        1: {topic: 240},
        2: {topic: 240},
    }
    assert consumer.committed == {tp: 240 for tp in owned}

    # The account alert opens in the 21st batch: stored at once, between
    # checkpoints, while Kafka's offsets stay at the last checkpoint's.
    _commit_each(daemon, batches[8:21])
    assert [t.event for t in sink.transitions()] == [OPENED]
    assert daemon.checkpoints == 2
    assert consumer.committed == {tp: 480 for tp in owned}


def test_a_restart_rereads_at_most_the_cadence_and_ends_with_the_same_alerts() -> None:
    batches = _account_batches(3600)
    whole_sink = MemorySink()
    whole = _cadence_daemon(whole_sink, every=8)
    topic = whole.settings.topic_invocations
    owned = {TopicPartition(topic, n) for n in (1, 2)}
    whole._on_assigned(owned)
    _commit_each(whole, batches)
    whole._commit(checkpoint=True)
    expected = [t.to_json() for t in whole_sink.transitions()]
    assert [t["event"] for t in expected] == [OPENED]

    sink = MemorySink()
    first = _cadence_daemon(sink, every=8)
    first._on_assigned(owned)
    cut = 23  # checkpoints after 8 and 16 batches; the alert opens in the 21st
    _commit_each(first, batches[:cut])
    assert [t.event for t in sink.transitions()] == [OPENED]
    read = dict(first._positions)
    # The process dies without a last checkpoint; a new one restores both.
    second = _cadence_daemon(sink, every=8)
    second._on_assigned(owned)
    seeks = second._consumer.seeks  # type: ignore[union-attr]
    assert seeks == {tp: 480 for tp in owned}
    reread = sum(read[tp] - seeks[tp] for tp in owned)
    assert 0 < reread <= 8 * 60
    # What comes again is what follows each partition's checkpoint.
    again = [
        (number, [r for r in batch if r.offset >= seeks[TopicPartition(topic, number)]])
        for number, batch in batches
    ]
    _commit_each(second, [(n, b) for n, b in again if b])
    second._commit(checkpoint=True)
    assert [t.to_json() for t in sink.transitions()] == expected
    # The alert was stored before the crash and made again after it.
    assert sink.duplicates == 1


def test_a_slow_checkpoint_stretches_the_time_to_the_next() -> None:
    # A cheap checkpoint keeps the configured interval; one that takes 2 s
    # waits until it is a tenth of the loop's time.
    assert checkpoint_gap(10.0, 0.05) == 10.0
    assert checkpoint_gap(10.0, 2.0) == pytest.approx(18.0)


def test_a_commit_before_the_checkpoint_is_due_writes_nothing_without_alerts() -> None:
    sink = MemorySink()
    daemon = _cadence_daemon(sink, every=0)
    topic = daemon.settings.topic_invocations
    daemon._on_assigned({TopicPartition(topic, 1)})
    daemon._handle_batch(TopicPartition(topic, 1), _batch(1, 0, 5))
    daemon._commit()
    assert (sink.commits, daemon.commits, daemon.checkpoints) == (0, 0, 0)

    # Once the time of the cadence has come, the same commit checkpoints.
    daemon._next_checkpoint = 0.0
    daemon._commit()
    assert (sink.commits, daemon.checkpoints) == (1, 1)
    assert _stored(sink, daemon, 1)[1] == {topic: 5}
    assert daemon._next_checkpoint > 0.0


def test_the_checkpoint_cadence_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOWGUARD_CHECKPOINT_INTERVAL_S", "2.5")
    monkeypatch.setenv("DOWGUARD_CHECKPOINT_BATCHES", "40")
    settings = load_settings()
    assert (settings.checkpoint_interval_s, settings.checkpoint_batches) == (2.5, 40)
    monkeypatch.setenv("DOWGUARD_CHECKPOINT_INTERVAL_S", "0")
    with pytest.raises(ConfigError, match="checkpoint_interval_s"):
        load_settings()
