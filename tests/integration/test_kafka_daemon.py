"""The daemon against a real broker: counts, dead letters, crashes, rebalances.

The engine is the real one wrapped by ``CountingEngine``, whose snapshots
list the events each partition's state took. The tests assert on that list
(nothing lost, nothing applied twice) and on the plumbing, not on alerts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from detector.memory_sink import MemorySink
from dowguard.config import Settings
from ingest.events import Billing, Context, Event, Invocation, Span, kafka_key
from ingest.kafka_io import (
    DLQ_KIND,
    DLQ_ORIGIN_OFFSET,
    DLQ_ORIGIN_PARTITION,
    DLQ_ORIGIN_TOPIC,
    DLQ_REASON,
    KIND_INTERNAL,
    KIND_PARSE,
    dead_letter_info,
    ensure_topics,
    make_producer,
)
from ingest.partitioning import partition_for
from tests.conftest import ROOT, TopicFactory, run_script, unavailable
from tests.integration.cli_daemon import ROLES, publish, wait_for
from tests.integration.daemon_child import (
    ALERT_PREFIX,
    BOOM_PREFIX,
    CountingEngine,
    fast_daemon,
    mark_of,
    seen_in,
)
from tests.integration.daemon_thread import DaemonThread, daemon_settings

pytestmark = pytest.mark.kafka

PARTITIONS = 3
T0 = 1_772_400_000.0
FUNCTIONS = [f"fn{i}" for i in range(12)]

#: Messages that no parser accepts, each for its own reason.
BAD = [
    b"\x00\xffnot json at all",
    b"{}",
    b'{"dowguard_event": "invocation"}',
    b"[1, 2, 3]",
]

Origin = tuple[str, int, int]


# Building the input


def context(i: int) -> Context:
    return Context("aws", "111122223333", "us-east-1", FUNCTIONS[i % len(FUNCTIONS)])


def invocations(prefix: str, count: int, start: int = 0) -> list[Event]:
    return [
        Invocation(context(i), T0 + i * 0.01, f"{prefix}-{i}", 12.0, 13.0, 128)
        for i in range(start, start + count)
    ]


def mixed(prefix: str) -> list[Event]:
    """Invocations (a few of which raise an alert), spans and billing rows."""
    events: list[Event] = invocations(prefix, 150)
    events += invocations(f"{ALERT_PREFIX}{prefix}", 4)
    events += [
        Span(context(i), T0 + i, T0 + i + 0.2, f"{i + 1:032x}", f"{prefix}s{i:014x}")
        for i in range(20)
    ]
    events += [
        Billing(context(i), T0 + i, T0 + i + 3600, 0.01, 100.0, "requests", "cur")
        for i in range(12)
    ]
    return events


def settings_for(bootstrap: str, topics: dict[str, str], group: str) -> Settings:
    return daemon_settings(
        bootstrap,
        topics,
        group,
        partitions=PARTITIONS,
        commit_interval_s=0.3,
        checkpoint_interval_s=0.3,
    )


def publish_bad(bootstrap: str, topics: dict[str, str]) -> dict[Origin, bytes]:
    """Send every bad message to every input topic; where each one landed."""
    producer = make_producer(bootstrap)
    sent = []
    try:
        for role in ("invocations", "billing", "traces", "evidence"):
            for n, raw in enumerate(BAD):
                future = producer.send(topics[role], key=b"bad-%d" % n, value=raw)
                sent.append((future, raw))
        producer.flush()
        origins = {}
        for future, raw in sent:
            meta = future.get(timeout=30)
            origins[(meta.topic, meta.partition, meta.offset)] = raw
        return origins
    finally:
        producer.close()


# Reading the output


def read_all(
    bootstrap: str, topic: str, timeout_s: float = 30.0
) -> list[ConsumerRecord]:
    """Every record of a topic, from the beginning to its current end."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in tps):
            assert time.monotonic() < deadline, f"reading {topic} timed out"
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def dead_letter_origins(records: list[ConsumerRecord]) -> dict[Origin, dict[str, str]]:
    origins = {}
    for record in records:
        info = dead_letter_info(record.headers)
        origin = (
            info[DLQ_ORIGIN_TOPIC],
            int(info[DLQ_ORIGIN_PARTITION]),
            int(info[DLQ_ORIGIN_OFFSET]),
        )
        origins[origin] = {**info, "value": record.value}
    return origins


def marks(events: list[Event]) -> list[str]:
    return sorted(mark_of(e) for e in events)


# Running daemons


class CountingThread(DaemonThread):
    """A daemon of the counting engine in a thread, listing what it announced."""

    def __init__(
        self,
        settings: Settings,
        sink: MemorySink,
        engine: CountingEngine | None = None,
    ) -> None:
        self.engine = engine or CountingEngine()
        daemon = fast_daemon(settings, self.engine, sink)
        self.announced: list[str] = []
        # Set before the thread starts, so no batch goes unlisted.
        daemon.on_transitions = lambda batch: self.announced.extend(
            t.summary for t in batch
        )
        super().__init__(daemon)


@pytest.fixture
def group() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


# Tests


@pytest.mark.timeout(180)
def test_daemon_counts_every_message_and_dead_letters_the_bad_ones(
    kafka_bootstrap: str, unique_topics: TopicFactory, group: str
) -> None:
    topics = unique_topics(*ROLES, partitions=PARTITIONS)
    settings = settings_for(kafka_bootstrap, topics, group)
    good = mixed("a")
    boom = invocations(BOOM_PREFIX, 3)
    publish(kafka_bootstrap, topics, good + boom)
    bad = publish_bad(kafka_bootstrap, topics)

    sink = MemorySink()
    runner = CountingThread(settings, sink)
    d = runner.daemon
    expected_dead = len(bad) + len(boom)
    wait_for(
        lambda: (
            seen_in(sink, group) == marks(good)
            and sum(d.dead_letters.values()) == expected_dead
            and d.commits > 0
        ),
        "every good event stored and every bad one dead-lettered",
        detail=lambda: (
            f"in={d.events_in} done={d.events_processed} "
            f"dead={d.dead_letters} seen={len(seen_in(sink, group))}/{len(good)}"
        ),
    )
    runner.stop()

    assert d.events_in == d.events_processed + sum(d.dead_letters.values())
    assert d.dead_letters == {
        "invocations": len(BAD) + len(boom),
        "billing": len(BAD),
        "traces": len(BAD),
        "evidence": len(BAD),
    }
    assert seen_in(sink, group) == marks(good)

    # Dead letters: raw bytes untouched, with where they came from and why.
    letters = dead_letter_origins(read_all(kafka_bootstrap, topics["deadletter"]))
    assert len(letters) == expected_dead
    for origin, raw in bad.items():
        assert letters[origin]["value"] == raw
        assert letters[origin][DLQ_KIND] == KIND_PARSE
        assert letters[origin][DLQ_REASON]
    internal = [v for v in letters.values() if v[DLQ_KIND] == KIND_INTERNAL]
    assert len(internal) == len(boom)
    assert all("RuntimeError" in v[DLQ_REASON] for v in internal)

    # Transitions were stored once and announced once, after being stored.
    alerts = sorted(m for m in marks(good) if m.startswith(ALERT_PREFIX))
    assert sorted(t.summary for t in sink.transitions()) == alerts
    assert sorted(runner.announced) == alerts

    # Kafka's committed offsets reached the end of every input topic.
    probe = KafkaConsumer(
        bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False
    )
    try:
        for role in ("invocations", "billing", "traces"):
            tps = [TopicPartition(topics[role], p) for p in range(PARTITIONS)]
            end = probe.end_offsets(tps)
            assert {tp: probe.committed(tp) or 0 for tp in tps} == end
    finally:
        probe.close()


def start_child(
    settings: Settings, sink_path: Path, log: Path
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DOWGUARD_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "DOWGUARD_GROUP_ID": settings.group_id,
        "DOWGUARD_TOPIC_INVOCATIONS": settings.topic_invocations,
        "DOWGUARD_TOPIC_BILLING": settings.topic_billing,
        "DOWGUARD_TOPIC_TRACES": settings.topic_traces,
        "DOWGUARD_TOPIC_EVIDENCE": settings.topic_evidence,
        "DOWGUARD_TOPIC_DEADLETTER": settings.topic_deadletter,
        "DOWGUARD_PARTITIONS": str(settings.partitions),
        "DOWGUARD_COMMIT_INTERVAL_S": str(settings.commit_interval_s),
        "DOWGUARD_CHECKPOINT_INTERVAL_S": str(settings.checkpoint_interval_s),
    }
    env.pop("DOWGUARD_CONFIG", None)
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.integration.daemon_child",
                "--sink",
                str(sink_path),
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stored_marks(path: Path, group: str) -> list[str]:
    return seen_in(MemorySink(path), group) if path.exists() else []


def log_tail(log: Path) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-30:])


@pytest.mark.timeout(240)
def test_daemon_killed_mid_stream_resumes_from_its_checkpoint(
    kafka_bootstrap: str, unique_topics: TopicFactory, group: str, tmp_path: Path
) -> None:
    topics = unique_topics(*ROLES, partitions=PARTITIONS)
    settings = settings_for(kafka_bootstrap, topics, group)
    sink_path = tmp_path / "sink.pickle"
    log = tmp_path / "daemon.log"
    first = invocations("a", 200) + invocations(f"{ALERT_PREFIX}a", 5)
    publish(kafka_bootstrap, topics, first)
    bad = publish_bad(kafka_bootstrap, topics)

    child = start_child(settings, sink_path, log)
    try:
        wait_for(
            lambda: stored_marks(sink_path, group) == marks(first),
            "the first batch stored",
            detail=lambda: log_tail(log),
        )
        # A large second batch, and a SIGKILL as soon as part of it is stored.
        second = invocations("b", 3000) + invocations(f"{ALERT_PREFIX}b", 5)
        publish(kafka_bootstrap, topics, second)
        wait_for(
            lambda: len(stored_marks(sink_path, group)) > len(first),
            "part of the second batch stored",
            detail=lambda: log_tail(log),
        )
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()

    third = invocations("c", 200)
    publish(kafka_bootstrap, topics, third)
    everything = marks(first + second + third)
    child = start_child(settings, sink_path, log)
    try:
        wait_for(
            lambda: stored_marks(sink_path, group) == everything,
            "every event stored after the restart",
            timeout_s=150,
            detail=lambda: (
                f"{len(stored_marks(sink_path, group))}/{len(everything)}"
                f"\n{log_tail(log)}"
            ),
        )
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=60) == 0, log_tail(log)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()

    sink = MemorySink(sink_path)
    # Exactly once in the state: nothing lost, nothing applied twice.
    assert seen_in(sink, group) == everything
    # Redelivered transitions were skipped, so each alert is stored once.
    summaries = [t.summary for t in sink.transitions()]
    assert sorted(summaries) == sorted(
        m for m in everything if m.startswith(ALERT_PREFIX)
    )
    # Every bad message reached the dead-letter topic (perhaps twice).
    letters = dead_letter_origins(read_all(kafka_bootstrap, topics["deadletter"]))
    assert set(letters) == set(bad)


@pytest.fixture(scope="module")
def restartable_kafka() -> Iterator[str]:
    """A broker of this module's own, which a test may stop and start."""
    port = os.environ.get("DOWGUARD_KAFKA_RESTART_PORT", "19092")
    result = run_script("kafka.sh", "start", "--port", port)
    if result.returncode != 0:
        unavailable("a restartable Kafka broker", result.stderr[-3000:])
    try:
        yield result.stdout.strip().splitlines()[-1]
    finally:
        run_script("kafka.sh", "stop", "--port", port)


class GatedEngine(CountingEngine):
    """Holds the daemon inside its ``hold_at``-th event until released."""

    def __init__(self, hold_at: int) -> None:
        super().__init__()
        self.hold_at = hold_at
        self.taken = 0
        self.reached = threading.Event()
        self.release = threading.Event()

    def process(self, event: Event, partition: int) -> None:
        self.taken += 1
        if self.taken == self.hold_at:
            self.reached.set()
            assert self.release.wait(timeout=120), "never released"
        super().process(event, partition)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_daemon_reconnects_after_broker_restart_and_loses_nothing(
    restartable_kafka: str, group: str
) -> None:
    bootstrap = restartable_kafka
    tag = uuid.uuid4().hex[:8]
    topics = {role: f"test.restart.{tag}.{role}" for role in ROLES}
    ensure_topics(bootstrap, topics.values(), PARTITIONS)
    settings = settings_for(bootstrap, topics, group)
    first = invocations("a", 2000)
    publish(bootstrap, topics, first)
    bad = publish_bad(bootstrap, topics)

    sink = MemorySink()
    runner = CountingThread(settings, sink, GatedEngine(hold_at=1000))
    engine = runner.engine
    assert isinstance(engine, GatedEngine)
    d = runner.daemon
    try:
        # Stop the broker while the daemon is in the middle of the batch, so
        # that it meets the outage with uncommitted work and dead letters.
        assert engine.reached.wait(timeout=90), "the daemon never got going"
        port = bootstrap.rsplit(":", 1)[1]
        assert run_script("kafka.sh", "stop", "--port", port).returncode == 0
        errors_before = d.errors
        engine.release.set()
        wait_for(
            lambda: d.errors > errors_before,
            "the daemon noticing the broker is gone",
            detail=lambda: f"in={d.events_in} commits={d.commits}",
        )
        started = run_script("kafka.sh", "start", "--port", port)
        assert started.returncode == 0, started.stderr
        second = invocations("b", 300)
        publish(bootstrap, topics, second)
        everything = marks(first + second)
        wait_for(
            lambda: seen_in(sink, group) == everything,
            "every event stored after the broker restart",
            timeout_s=180,
            detail=lambda: (
                f"{len(seen_in(sink, group))}/{len(everything)} errors={d.errors}"
            ),
        )
    finally:
        engine.release.set()
        runner.stop()
    assert seen_in(sink, group) == everything
    letters = dead_letter_origins(read_all(bootstrap, topics["deadletter"]))
    assert set(letters) == set(bad)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.delete_topics(list(topics.values()))
    finally:
        admin.close()


@pytest.mark.timeout(240)
def test_two_daemons_share_partitions_and_hand_over_state(
    kafka_bootstrap: str, unique_topics: TopicFactory, group: str
) -> None:
    topics = unique_topics(*ROLES, partitions=PARTITIONS)
    settings = settings_for(kafka_bootstrap, topics, group)
    sink = MemorySink()
    first, second, third = (
        invocations("a", 300),
        invocations("b", 300, start=300),
        invocations("c", 300, start=600),
    )
    # Every partition gets events of every batch, so every handover matters.
    for batch in (first, second, third):
        assert {partition_for(kafka_key(e), PARTITIONS) for e in batch} == {0, 1, 2}

    publish(kafka_bootstrap, topics, first)
    one = CountingThread(settings, sink)
    two: CountingThread | None = None
    try:
        wait_for(lambda: seen_in(sink, group) == marks(first), "the first batch")
        two = CountingThread(settings, sink)
        a, b = one.daemon, two.daemon
        wait_for(
            lambda: (
                bool(a.owned_partitions())
                and bool(b.owned_partitions())
                and a.owned_partitions() | b.owned_partitions() == {0, 1, 2}
                and not a.owned_partitions() & b.owned_partitions()
            ),
            "the partitions split between the two daemons",
            detail=lambda: f"one={a.owned_partitions()} two={b.owned_partitions()}",
        )
        publish(kafka_bootstrap, topics, second)
        wait_for(
            lambda: seen_in(sink, group) == marks(first + second), "the second batch"
        )
        one.stop()
        wait_for(
            lambda: b.owned_partitions() == {0, 1, 2},
            "the second daemon owning every partition",
            detail=lambda: f"two={b.owned_partitions()}",
        )
        publish(kafka_bootstrap, topics, third)
        everything = marks(first + second + third)
        wait_for(lambda: seen_in(sink, group) == everything, "the third batch")
    finally:
        one.stop()
        if two is not None:
            two.stop()
    assert seen_in(sink, group) == everything
    # The state moved with the partitions: each message was processed once,
    # by one daemon or the other, never again by the one that took over.
    assert a.events_processed + b.events_processed == len(everything)
    assert a.events_processed > 0 and b.events_processed > 0
