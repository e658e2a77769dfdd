"""A daemon on Kafka counts the same distinct triggers and callers as a replay.

The spans of three callers travel on the traces topic, on the partitions
of their trace ids; their sketches go round the evidence topic to the
context's partition. Published a few seconds of event time at a time, as
live traffic comes, the daemon's window features are the replay's.
"""

from __future__ import annotations

import itertools
import threading
import uuid

import pytest
from prometheus_client import CollectorRegistry

from detector.daemon import Daemon
from detector.memory_sink import MemorySink
from detector.metrics import DowMetrics
from detector.replay import Replay
from ingest.events import Event
from tests.conftest import TopicFactory
from tests.detector.test_span_windows import READ, Tap, counts, engine, stream
from tests.integration.cli_daemon import ROLES, publish, wait_for
from tests.integration.daemon_child import FAST_GROUP
from tests.integration.test_kafka_daemon import settings_for

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

#: Event time published at once; far less than the sketches' wait.
CHUNK_S = 5.0


def chunks(events: list[Event]) -> list[list[Event]]:
    return [
        list(group)
        for _, group in itertools.groupby(events, key=lambda e: e.time // CHUNK_S)
    ]


@pytest.mark.timeout(300)
def test_a_daemon_reads_the_counts_a_replay_reads(
    kafka_bootstrap: str, unique_topics: TopicFactory
) -> None:
    events = [event for _, event in stream()]
    replayed: Tap = {}
    Replay(engine(replayed)).run(events)
    assert counts(replayed[READ]) == (2.0, 3.0)

    topics = unique_topics(*ROLES, partitions=3)
    settings = settings_for(kafka_bootstrap, topics, f"spans-{uuid.uuid4().hex[:8]}")
    live: Tap = {}
    detector = engine(live)
    daemon = Daemon(
        settings,
        detector,
        MemorySink(),
        metrics=DowMetrics(CollectorRegistry()),
        consumer_options=FAST_GROUP,
    )
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        sent = 0
        for chunk in chunks(events):
            publish(kafka_bootstrap, topics, chunk)
            sent += len(chunk)
            wait_for(
                lambda sent=sent: detector.events >= sent,
                f"the daemon taking {sent} events",
                detail=lambda: f"taken {detector.events}",
            )
    finally:
        daemon.stop()
        thread.join(timeout=60)
    assert not thread.is_alive()
    assert counts(live[READ]) == (2.0, 3.0)
    assert detector.late_span_windows == 0
    # Every window the daemon closed has the replay's features.
    assert live == {start: replayed[start] for start in live}
