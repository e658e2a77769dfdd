"""A daemon in its own process, for the crash tests: ``python -m`` this module.

It runs the real engine wrapped by :class:`CountingEngine`, whose snapshots
also record which events each partition's state has taken, and stores into
a file-backed :class:`~detector.memory_sink.MemorySink`, so that a test can
kill the process with SIGKILL and read what survived.
"""

from __future__ import annotations

import argparse
import logging
import pickle
import sys
from collections.abc import Sequence

from prometheus_client import CollectorRegistry

from detector.alerts import OPENED, WARNING, AlertSink, Transition, fingerprint
from detector.daemon import Daemon
from detector.engine import DetectorConfig, Engine
from detector.memory_sink import MemorySink
from detector.metrics import DowMetrics
from dowguard.config import Settings, load_settings
from ingest.events import Event, Invocation, Span

#: Invocations whose request id starts so make the engine emit a transition.
ALERT_PREFIX = "alert-"
#: Invocations whose request id starts so make the engine raise.
BOOM_PREFIX = "boom-"

#: Short group timeouts, so a killed member leaves the group within seconds.
FAST_GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


def mark_of(event: Event) -> str:
    """The identity of an event in the tests' streams."""
    if isinstance(event, Invocation):
        return event.request_id
    if isinstance(event, Span):
        return event.span_id
    return f"{type(event).__name__}:{event.context.function}:{event.time}"


class CountingEngine(Engine):
    """The real engine, plus a list per partition of the events its state took.

    The list travels in the snapshot, so after a restore it tells exactly
    which events the restored state has seen: a lost event is missing from
    it, an event applied twice appears twice.
    """

    def __init__(self) -> None:
        super().__init__(
            DetectorConfig(partitions=3),
            invocation_cost=lambda inv: 1e-6,
            span_cost=lambda span: 0.0,
        )
        self.seen: dict[int, list[str]] = {}
        self._extra: list[Transition] = []

    def process(self, event: Event, partition: int) -> None:
        mark = mark_of(event)
        if mark.startswith(BOOM_PREFIX):
            raise RuntimeError(f"engine refuses {mark}")
        super().process(event, partition)
        self.seen.setdefault(partition, []).append(mark)
        if mark.startswith(ALERT_PREFIX):
            fp = fingerprint(event.context, f"test-{mark}")
            self._extra.append(
                Transition(
                    OPENED,
                    fp,
                    "test",
                    WARNING,
                    event.context,
                    event.time,
                    event.time,
                    1,
                    0.0,
                    summary=mark,
                )
            )

    def take_transitions(self) -> list[Transition]:
        out, self._extra = self._extra, []
        return super().take_transitions() + out

    def snapshot(self, partition: int) -> bytes:
        return pickle.dumps((super().snapshot(partition), self.seen.get(partition, [])))

    def restore(self, partition: int, blob: bytes) -> None:
        inner, seen = pickle.loads(blob)
        super().restore(partition, inner)
        self.seen[partition] = list(seen)

    def drop(self, partition: int) -> None:
        super().drop(partition)
        self.seen.pop(partition, None)


def seen_in(sink: MemorySink, group: str) -> list[str]:
    """Every event mark held by the latest checkpoints of ``group``, sorted."""
    marks: list[str] = []
    for checkpoint in sink.checkpoints(group).values():
        _inner, seen = pickle.loads(checkpoint.state)
        marks.extend(seen)
    return sorted(marks)


def fast_daemon(settings: Settings, engine: Engine, sink: AlertSink) -> Daemon:
    """A daemon with metrics of its own that leaves its group within seconds."""
    return Daemon(
        settings,
        engine,
        sink,
        metrics=DowMetrics(CollectorRegistry()),
        consumer_options=FAST_GROUP,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sink", required=True, help="memory sink file")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    settings = load_settings()
    daemon = fast_daemon(settings, CountingEngine(), MemorySink(args.sink))
    daemon.install_signal_handlers()
    daemon.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
