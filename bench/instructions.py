"""Workloads for counting instructions per event under valgrind's callgrind.

A count of instructions hardly moves with load from elsewhere, unlike a
rate: it compares two trees on a shared machine. Each workload runs once
to warm up (imports, pricing plans), then once inside ``math.fsum``, so
that ``--toggle-collect=math_fsum`` counts only the measured run (the
engine and the daemon are built before it, as ``dowguard bench`` builds
them before its clock starts)::

    PYTHONHASHSEED=0 valgrind --tool=callgrind --collect-atstart=no \\
        --toggle-collect=math_fsum python -m bench.instructions replay

and the instructions of the run over the events it prints are the figure.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from bench import workload
from detector.gcpolicy import streaming_gc

#: Records per batch handed to the daemon, as its poll takes them.
BATCH = 500
PARTITIONS = 3


class _Record(NamedTuple):
    """What the daemon reads of a consumer record."""

    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes


#: Builds what a run needs and returns the run, which returns its events.
Setup = Callable[[], Callable[[], int]]


def replay_run(events: int, contexts: int, folder: Path) -> Setup:
    """A replay of the bench workload from its own format; events replayed."""
    from detector.engine import Engine
    from detector.replay import Replay
    from ingest.formats.recording import write_recording
    from ingest.parse import read_paths

    path = folder / "bench.dgr"
    write_recording(path, workload.workload(events, contexts))

    def fail(error: Exception) -> None:
        raise error

    def setup() -> Callable[[], int]:
        replay = Replay(Engine())
        return lambda: replay.run(read_paths([path], fail)).events

    return setup


def daemon_run(events: int, contexts: int) -> Setup:
    """The daemon's handling of the bench workload's records, as published
    to Kafka, without a broker: parse, engine, bookkeeping; messages taken."""
    from kafka.structs import TopicPartition

    from detector.daemon import Daemon
    from detector.engine import Engine
    from detector.memory_sink import MemorySink
    from dowguard.config import Settings
    from ingest.events import encode_event_array, kafka_key, stream_of
    from ingest.partitioning import partition_for

    topics = {"invocations": "b.inv", "traces": "b.traces", "billing": "b.billing"}
    settings = Settings(
        kafka_bootstrap="127.0.0.1:9",
        topic_invocations=topics["invocations"],
        topic_traces=topics["traces"],
        topic_billing=topics["billing"],
        topic_evidence="b.evidence",
        topic_deadletter="b.deadletter",
    )
    logs: dict[tuple[str, int], list[_Record]] = {}
    for event in workload.workload(events, contexts):
        key = kafka_key(event)
        topic = topics[stream_of(event)]
        number = partition_for(key, PARTITIONS)
        log = logs.setdefault((topic, number), [])
        log.append(_Record(topic, number, len(log), key, encode_event_array(event)))
    # Batches in the order a consumer fetching every partition in turn sees.
    batches = sorted(
        (
            (start, TopicPartition(topic, number), log[start : start + BATCH])
            for (topic, number), log in logs.items()
            for start in range(0, len(log), BATCH)
        ),
        key=lambda batch: batch[0],
    )

    def setup() -> Callable[[], int]:
        daemon = Daemon(settings, Engine(), MemorySink())

        def run() -> int:
            for _, tp, batch in batches:
                daemon._handle_batch(tp, batch)
            return daemon.events_processed

        return run

    return setup


def measure(setup: Setup) -> int:
    """Warm up, then run once inside ``math.fsum``; the events of that run.

    Both under the collector policy of replay and the daemon.
    """
    with streaming_gc():
        setup()()
    run = setup()
    with streaming_gc():
        return int(math.fsum(map(lambda _: float(run()), [0])))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=("replay", "daemon"))
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--contexts", type=int, default=2_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dowguard-instructions-") as tmp:
        if args.workload == "replay":
            setup = replay_run(args.events, args.contexts, Path(tmp))
        else:
            setup = daemon_run(args.events, args.contexts)
        seen = measure(setup)
    print(f"{args.workload} events={seen}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
