"""A hook that hangs does not stop the daemon from detecting and committing.

The daemon runs in a thread on the real broker with the real engine; its
sink is the hand-off wrapper around a memory sink, and the enforcer's hook
blocks until the test lets it go.
"""

from __future__ import annotations

import uuid

import pytest

from detector.alerts import CRITICAL
from detector.enforcement import Enforcer, MemoryActionLog, Policy
from detector.enforcement.audit import SUCCEEDED
from detector.enforcement.handoff import AfterStore
from detector.engine import DetectorConfig, Engine
from detector.memory_sink import MemorySink
from ingest.events import Context, Invocation
from tests.conftest import TopicFactory
from tests.detector.streams import T0, sqs_loop
from tests.enforcement.held_hook import HeldHook
from tests.integration.cli_daemon import ROLES, caught_up, publish, wait_for
from tests.integration.daemon_child import fast_daemon
from tests.integration.daemon_thread import DaemonThread, daemon_settings

pytestmark = pytest.mark.kafka

PARTITIONS = 3
HELD_S = 120.0


@pytest.mark.timeout(300)
def test_a_hanging_hook_holds_up_neither_detection_nor_offset_commits(
    kafka_bootstrap: str, unique_topics: TopicFactory
) -> None:
    topics = unique_topics(*ROLES, partitions=PARTITIONS)
    group = f"handoff-{uuid.uuid4().hex[:8]}"
    settings = daemon_settings(
        kafka_bootstrap,
        topics,
        group,
        partitions=PARTITIONS,
        commit_interval_s=0.3,
        checkpoint_interval_s=0.3,
    )
    loop = Context("aws", "111122223333", "us-east-1", "order-loop")
    busy = Context("aws", "111122223333", "us-east-1", "resize")

    hook = HeldHook(HELD_S)
    log = MemoryActionLog()
    inner = MemorySink()
    sink = AfterStore(inner, enforcer=Enforcer(hook, Policy(), log))
    sink.start()
    runner = DaemonThread(
        fast_daemon(settings, Engine(DetectorConfig(partitions=PARTITIONS)), sink)
    )
    daemon = runner.daemon
    inputs = [topics[r] for r in ("invocations", "billing", "traces", "evidence")]
    try:
        publish(kafka_bootstrap, topics, sqs_loop(loop, hops=8, start=T0))
        assert hook.entered.wait(HELD_S), "the loop never reached the hook"
        # The hook hangs; more traffic arrives and is all taken and committed.
        later = [
            Invocation(busy, T0 + 10 + i * 0.1, f"later-{i}", 20.0, 21.0, 128)
            for i in range(300)
        ]
        publish(kafka_bootstrap, topics, later)
        wait_for(
            lambda: (
                daemon.events_processed >= 18 + len(later)
                and caught_up(kafka_bootstrap, group, inputs, PARTITIONS)
            ),
            "every message taken and committed while the hook hangs",
            detail=lambda: f"processed={daemon.events_processed}",
        )
        assert not hook.go.is_set()
        assert any(t.severity == CRITICAL for t in inner.transitions())
        assert sink.handoffs["enforcement"].backlog >= 1
    finally:
        hook.go.set()
        try:
            runner.stop()
        finally:
            sink.close()
    assert [r.state for r in log.find()] == [SUCCEEDED]
