"""The daemon against a bare kafka-python consumer on the same topics.

Both read the same published events from the beginning; each rate is timed
from its first record to its last, so group joins are left out of both.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

from detector.daemon import Daemon
from detector.engine import Engine
from detector.memory_sink import MemorySink
from dowguard.config import Settings
from ingest.events import Event
from ingest.kafka_io import ensure_topics, make_consumer, make_producer, publish_events
from ingest.parse import parse_message

logger = logging.getLogger(__name__)

#: Longest a run may take before the benchmark gives up.
DEADLINE_S = 600.0


def _topics(prefix: str) -> dict[str, str]:
    return {
        "invocations": f"{prefix}.invocations",
        "billing": f"{prefix}.billing",
        "traces": f"{prefix}.traces",
        "evidence": f"{prefix}.evidence",
        "deadletter": f"{prefix}.deadletter",
    }


def _bare(bootstrap: str, topics: Sequence[str], count: int) -> float:
    consumer = make_consumer(bootstrap, f"bench-bare-{uuid.uuid4().hex[:8]}", topics)
    seen = 0
    first = last = 0.0
    deadline = time.monotonic() + DEADLINE_S
    try:
        while seen < count and time.monotonic() < deadline:
            batches = consumer.poll(timeout_ms=500, max_records=500)
            for records in batches.values():
                if records and not first:
                    first = time.perf_counter()
                seen += len(records)
            last = time.perf_counter()
    finally:
        consumer.close()
    if seen < count:
        raise RuntimeError(f"bare consumer saw {seen} of {count} records")
    return seen / (last - first)


def _daemon(bootstrap: str, topics: dict[str, str], count: int) -> float:
    settings = Settings(
        kafka_bootstrap=bootstrap,
        group_id=f"bench-daemon-{uuid.uuid4().hex[:8]}",
        topic_invocations=topics["invocations"],
        topic_billing=topics["billing"],
        topic_traces=topics["traces"],
        topic_evidence=topics["evidence"],
        topic_deadletter=topics["deadletter"],
    )
    daemon = Daemon(settings, Engine(), MemorySink(), parse=parse_message)
    thread = threading.Thread(target=daemon.run, name="bench-daemon", daemon=True)
    thread.start()
    first = 0.0
    deadline = time.monotonic() + DEADLINE_S
    try:
        while time.monotonic() < deadline:
            if not first and daemon.events_in:
                first = time.perf_counter()
            if daemon.events_processed >= count:
                break
            time.sleep(0.005)
        last = time.perf_counter()
    finally:
        daemon.stop()
        thread.join(timeout=60)
    if daemon.events_processed < count:
        raise RuntimeError(f"daemon took {daemon.events_processed} of {count} events")
    return count / (last - first)


def bench_daemon(bootstrap: str, events: list[Event], repeat: int) -> dict[str, Any]:
    topics = _topics(f"bench-{uuid.uuid4().hex[:8]}")
    ensure_topics(bootstrap, topics.values(), 3)
    producer = make_producer(bootstrap)
    try:
        count = publish_events(producer, events, topics)
    finally:
        producer.close()
    inputs = [topics["invocations"], topics["billing"], topics["traces"]]
    bare = max(_bare(bootstrap, inputs, count) for _ in range(repeat))
    daemon = max(_daemon(bootstrap, topics, count) for _ in range(repeat))
    return {
        "events": count,
        "bare_consumer_events_per_s": round(bare),
        "daemon_events_per_s": round(daemon),
        "ratio": round(daemon / bare, 3),
    }
