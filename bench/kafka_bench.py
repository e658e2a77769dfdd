"""The daemon against a bare kafka-python consumer on the same topics.

Both read the same published events from the beginning, with the same
consumer settings, poll size and subscription (the input topics and an
evidence topic of their own); each rate is timed from the arrival of the
first record to the last, so group joins are left out of both. Over the
same span each also counts the CPU time of its process, which a busy host
moves far less than the clock: CPU microseconds per event are reported
beside the rates.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

from bench.cli import TARGET_DAEMON_RATIO
from bench.idle import IdleEngine, idle_figures
from detector.daemon import Daemon
from detector.engine import Engine
from detector.gcpolicy import streaming_gc
from detector.memory_sink import MemorySink
from dowguard.config import Settings
from ingest.events import Event
from ingest.kafka_io import ensure_topics, make_consumer, make_producer, publish_events
from ingest.parse import parse_message

logger = logging.getLogger(__name__)

#: Longest a run may take before the benchmark gives up.
DEADLINE_S = 600.0
#: Poll settings of both the bare consumer and the daemon.
POLL_TIMEOUT_S = 0.5
MAX_RECORDS = 500
#: Consumer settings beyond make_consumer's own, the same for both.
CONSUMER_OPTIONS: dict[str, Any] = {}


def _topics(prefix: str) -> dict[str, str]:
    return {
        "invocations": f"{prefix}.invocations",
        "billing": f"{prefix}.billing",
        "traces": f"{prefix}.traces",
        "evidence": f"{prefix}.evidence",
        "deadletter": f"{prefix}.deadletter",
    }


# Limitation: short runs let broker fetch latency swing the bare rate on a busy host.
def _bare(bootstrap: str, topics: Sequence[str], count: int) -> tuple[float, float]:
    """The bare consumer's rate, and its CPU seconds per event."""
    consumer = make_consumer(
        bootstrap, f"bench-bare-{uuid.uuid4().hex[:8]}", topics, **CONSUMER_OPTIONS
    )
    seen = 0
    first = last = cpu_first = cpu_last = 0.0
    deadline = time.monotonic() + DEADLINE_S
    # The daemon's collector policy, so that the two differ in their work only.
    try:
        with streaming_gc():
            while seen < count and time.monotonic() < deadline:
                batches = consumer.poll(
                    timeout_ms=int(POLL_TIMEOUT_S * 1000), max_records=MAX_RECORDS
                )
                for records in batches.values():
                    if records and not first:
                        first = time.perf_counter()
                        cpu_first = time.process_time()
                    seen += len(records)
                last = time.perf_counter()
                cpu_last = time.process_time()
    finally:
        consumer.close()
    if seen < count:
        raise RuntimeError(f"bare consumer saw {seen} of {count} records")
    return seen / (last - first), (cpu_last - cpu_first) / seen


class _TimedDaemon(Daemon):
    """The daemon, timing itself on its own thread from batch to batch.

    The clock reads happen where the bare consumer's do (a batch handed
    over by poll, the batch that completes the count), with no observer
    thread waking up to look at counters and taking the GIL from the loop.
    """

    def __init__(self, *args: Any, target: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.target = target
        self.inputs = 0
        self.first = self.last = self.cpu_first = self.cpu_last = 0.0
        # Checkpoints stored while the clock ran: a run shorter than the
        # checkpoint interval holds none, and its rate leaves their cost out.
        self.timed_checkpoints = 0
        self.done = threading.Event()

    def _handle_batch(self, tp: Any, batch: list[Any]) -> None:
        if not self.first:
            self.first = time.perf_counter()
            self.cpu_first = time.process_time()
            self.timed_checkpoints = -self.checkpoints
        super()._handle_batch(tp, batch)
        # The evidence the daemon reads back is its own output, not input
        # the bare consumer also reads: only the published events count.
        if tp.topic != self.settings.topic_evidence:
            self.inputs += len(batch)
        if self.inputs >= self.target and not self.done.is_set():
            self.last = time.perf_counter()
            self.cpu_last = time.process_time()
            self.timed_checkpoints += self.checkpoints
            self.done.set()


def _daemon(
    bootstrap: str, topics: dict[str, str], count: int, engine: Engine
) -> tuple[float, float, int]:
    """The daemon's rate on ``engine``, its CPU seconds per event, and how
    many checkpoints it stored while timed."""
    settings = Settings(
        kafka_bootstrap=bootstrap,
        group_id=f"bench-daemon-{uuid.uuid4().hex[:8]}",
        topic_invocations=topics["invocations"],
        topic_billing=topics["billing"],
        topic_traces=topics["traces"],
        topic_evidence=topics["evidence"],
        topic_deadletter=topics["deadletter"],
    )
    daemon = _TimedDaemon(
        settings,
        engine,
        MemorySink(),
        parse=parse_message,
        consumer_options=CONSUMER_OPTIONS,
        poll_timeout_s=POLL_TIMEOUT_S,
        max_records=MAX_RECORDS,
        target=count,
    )
    thread = threading.Thread(target=daemon.run, name="bench-daemon", daemon=True)
    thread.start()
    deadline = time.monotonic() + DEADLINE_S
    try:
        # Half-second waits: a daemon that died is noticed, yet the loop
        # is hardly ever interrupted.
        while not daemon.done.wait(0.5):
            if not thread.is_alive() or time.monotonic() > deadline:
                break
    finally:
        daemon.stop()
        thread.join(timeout=60)
    if daemon.inputs < count:
        raise RuntimeError(f"daemon took {daemon.inputs} of {count} events")
    cpu = (daemon.cpu_last - daemon.cpu_first) / count
    return count / (daemon.last - daemon.first), cpu, daemon.timed_checkpoints


def bench_daemon(bootstrap: str, events: list[Event], repeat: int) -> dict[str, Any]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    topics = _topics(prefix)
    # Each run has evidence and dead-letter topics of its own: a daemon would
    # otherwise also read the evidence an earlier run wrote, and finish early.
    runs = [
        {
            **topics,
            "evidence": f"{prefix}.evidence.{i}",
            "deadletter": f"{prefix}.dl.{i}",
        }
        for i in range(3 * repeat)
    ]
    names = {name for run in runs for name in run.values()}
    ensure_topics(bootstrap, names, 3)
    producer = make_producer(bootstrap)
    try:
        count = publish_events(producer, events, topics)
    finally:
        producer.close()
    inputs = [topics["invocations"], topics["billing"], topics["traces"]]
    bare = daemon = idle = 0.0
    bare_cpu = daemon_cpu = idle_cpu = float("inf")
    checkpoints = 0
    # Rounds alternate the three, so that load from elsewhere falls on all.
    for i in range(repeat):
        bare_run, daemon_run, idle_run = runs[3 * i : 3 * i + 3]
        rate, cpu = _bare(bootstrap, [*inputs, bare_run["evidence"]], count)
        bare, bare_cpu = max(bare, rate), min(bare_cpu, cpu)
        rate, cpu, timed = _daemon(bootstrap, daemon_run, count, Engine())
        if rate > daemon:
            daemon, checkpoints = rate, timed
        daemon_cpu = min(daemon_cpu, cpu)
        # The daemon with a detector that does nothing: its path's own cost.
        rate, cpu, _ = _daemon(bootstrap, idle_run, count, IdleEngine())
        idle, idle_cpu = max(idle, rate), min(idle_cpu, cpu)
    return {
        "events": count,
        "bare_consumer_events_per_s": round(bare),
        "daemon_events_per_s": round(daemon),
        "daemon_timed_checkpoints": checkpoints,
        "ratio": round(daemon / bare, 3),
        "bare_consumer_cpu_us_per_event": round(bare_cpu * 1e6, 2),
        "daemon_cpu_us_per_event": round(daemon_cpu * 1e6, 2),
        "cpu_ratio": round(bare_cpu / daemon_cpu, 3),
        **idle_figures(
            TARGET_DAEMON_RATIO, (bare, bare_cpu), daemon_cpu, (idle, idle_cpu)
        ),
    }
