"""Hands what the daemon stored to enforcement and forwarding, without waiting.

The daemon's loop must never wait on a hook or on Alertmanager: each stored
batch goes into a bounded queue drained by a worker thread of its own, and a
full queue drops the batch, counts it and says so in the log.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from detector.alerts import (
    CRITICAL,
    RESOLVED,
    AlertSink,
    Checkpoint,
    FunctionStatus,
    StoredShare,
    Transition,
)
from detector.enforcement.service import Enforcer

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Batches a worker may have waiting before new ones are dropped.
DEFAULT_CAPACITY = 1024
#: How long closing waits for the workers to finish what is queued.
DEFAULT_DRAIN_S = 30.0


class AlertForwarder(Protocol):
    """What forwards alert transitions on (Alertmanager's forwarder)."""

    def send(self, transitions: Sequence[Transition]) -> int:
        """Post the latest state of each alert; never raises."""


class HandOff(Generic[T]):
    """A bounded queue of items and the one worker thread that consumes them.

    :meth:`offer` never blocks: when ``capacity`` items wait already, the
    item is dropped and counted in ``dropped``. ``consume`` runs on the
    worker; an exception it raises is logged and counted in ``failed``.
    """

    def __init__(
        self,
        name: str,
        consume: Callable[[T], None],
        capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"hand-off {name}: capacity must be >= 1, got {capacity}")
        self.name = name
        self.consume = consume
        self.capacity = capacity
        self.handled = 0
        self.dropped = 0
        self.failed = 0
        self._queue: queue.Queue[T] = queue.Queue(maxsize=capacity)
        # The daemon offers from its loop and from rebalance callbacks.
        self._count_lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def backlog(self) -> int:
        """Items queued or being consumed right now."""
        return self._queue.unfinished_tasks

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"handoff-{self.name}", daemon=True
        )
        self._thread.start()

    def offer(self, item: T) -> bool:
        """Queue ``item`` for the worker; False if it was dropped (queue full)."""
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            with self._count_lock:
                self.dropped += 1
            return False
        return True

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until nothing is queued or being consumed; False on timeout."""
        deadline = time.monotonic() + timeout_s
        done = self._queue.all_tasks_done
        with done:
            while self._queue.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                done.wait(left)
        return True

    def stop(self, drain_s: float = DEFAULT_DRAIN_S) -> None:
        """Consume what is queued (for up to ``drain_s``), then end the worker."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        drained = self.wait_idle(drain_s)
        self._stopping.set()
        thread.join(timeout=1.0)
        if not drained or thread.is_alive():
            # The worker is a daemon thread: a hook that hangs cannot keep
            # the process from exiting, and what it still held is reported.
            logger.error(
                "hand-off stop incomplete worker=%s backlog=%d", self.name, self.backlog
            )

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                item = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self.consume(item)
                self.handled += 1
            except Exception:
                self.failed += 1
                logger.exception("hand-off consumer failed worker=%s", self.name)
            finally:
                self._queue.task_done()


@dataclass(slots=True)
class _Work:
    """One stored batch for the enforcer: transitions or status rows."""

    transitions: list[Transition] = field(default_factory=list)
    status: list[FunctionStatus] = field(default_factory=list)
    stored_at: float = 0.0


class AfterStore:
    """An :class:`AlertSink` that passes on what its inner sink has stored.

    After ``sink.commit`` returns, the batch's transitions go to the
    enforcer and to the forwarder; after ``sink.update_functions``, the
    status rows go to the enforcer (recovery). Each has its own
    :class:`HandOff`, so a slow Alertmanager does not delay a throttle and a
    slow hook does not delay forwarding; neither delays the caller. With
    ``tick_interval_s`` the enforcer's :meth:`~Enforcer.tick` (TTL release,
    approvals, recovery) runs on a thread of its own. ``silenced`` tells
    which of some fingerprints people have silenced: those alerts are
    forwarded as usual but cause no throttle.

    Transitions stored once already (a redelivery) are passed on again:
    the enforcer keys actions by alert episode, so they cause none.
    """

    def __init__(
        self,
        sink: AlertSink,
        *,
        enforcer: Enforcer | None = None,
        forwarder: AlertForwarder | None = None,
        tick_interval_s: float = 30.0,
        silenced: Callable[[Sequence[str]], set[str]] | None = None,
        capacity: int = DEFAULT_CAPACITY,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if tick_interval_s <= 0:
            raise ValueError(
                f"after-store: tick_interval_s must be positive, got {tick_interval_s}"
            )
        self.sink = sink
        self.enforcer = enforcer
        self.forwarder = forwarder
        self.tick_interval_s = tick_interval_s
        self.silenced = silenced
        self.clock = clock
        self.registry = registry
        self.handoffs: dict[str, HandOff[_Work]] = {}
        if enforcer is not None:
            self.handoffs["enforcement"] = HandOff(
                "enforcement", self._enforce, capacity
            )
        if forwarder is not None:
            self.handoffs["forwarding"] = HandOff("forwarding", self._forward, capacity)
        self._ticks_stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._collector: _HandOffCollector | None = None

    # AlertSink

    def commit(
        self,
        transitions: Sequence[Transition],
        checkpoints: Mapping[int, Checkpoint] | None = None,
        group: str = "",
    ) -> None:
        self.sink.commit(transitions, checkpoints, group)
        if transitions:
            work = _Work(transitions=list(transitions), stored_at=self.clock())
            for handoff in self.handoffs.values():
                self._offer(handoff, work)

    def load_checkpoint(self, group: str, partition: int) -> Checkpoint | None:
        return self.sink.load_checkpoint(group, partition)

    def load_shares(self, group: str) -> list[StoredShare]:
        return self.sink.load_shares(group)

    def update_functions(self, rows: Sequence[FunctionStatus]) -> None:
        self.sink.update_functions(rows)
        handoff = self.handoffs.get("enforcement")
        if rows and handoff is not None:
            self._offer(handoff, _Work(status=list(rows), stored_at=self.clock()))

    def resume(self, transitions: Sequence[Transition]) -> None:
        """Hand stored transitions to the enforcer again (at start).

        A process that stopped after storing an alert and before acting on
        it acts now; what was acted on already is recognised by its episode.
        """
        handoff = self.handoffs.get("enforcement")
        if transitions and handoff is not None:
            self._offer(handoff, _Work(list(transitions), stored_at=self.clock()))

    # Control

    def start(self) -> None:
        """Start the workers and the tick thread; register the metrics."""
        for handoff in self.handoffs.values():
            handoff.start()
        if self.enforcer is not None and self._ticker is None:
            self._ticks_stop.clear()
            self._ticker = threading.Thread(
                target=self.enforcer.run_ticks,
                args=(self._ticks_stop, self.tick_interval_s),
                name="enforcement-ticks",
                daemon=True,
            )
            self._ticker.start()
        if self.registry is not None and self._collector is None:
            self._collector = _HandOffCollector(self.handoffs)
            self.registry.register(self._collector)

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until every queued batch is handled; False on timeout."""
        deadline = time.monotonic() + timeout_s
        return all(
            h.wait_idle(max(deadline - time.monotonic(), 0.0))
            for h in self.handoffs.values()
        )

    def close(self, drain_s: float = DEFAULT_DRAIN_S) -> None:
        """Stop ticking, finish the queued batches and stop the workers."""
        ticker, self._ticker = self._ticker, None
        self._ticks_stop.set()
        if ticker is not None:
            # A tick in progress may be inside a slow hook call.
            ticker.join(timeout=drain_s)
        for handoff in self.handoffs.values():
            handoff.stop(drain_s)
        if self._collector is not None and self.registry is not None:
            self.registry.unregister(self._collector)
            self._collector = None
        logger.info(
            "after-store closed %s",
            " ".join(
                f"{name}_handled={h.handled} {name}_dropped={h.dropped}"
                for name, h in self.handoffs.items()
            ),
        )

    # Workers

    def _offer(self, handoff: HandOff[_Work], work: _Work) -> None:
        if handoff.offer(work):
            return
        critical = sorted(
            {t.fingerprint for t in work.transitions if t.severity == CRITICAL}
        )
        # Limitation: a dropped batch is not retried; its alerts wait for a later one.
        logger.error(
            "hand-off full, batch dropped worker=%s transitions=%d status=%d "
            "critical=%s dropped_total=%d",
            handoff.name,
            len(work.transitions),
            len(work.status),
            ",".join(critical) or "-",
            handoff.dropped,
        )

    def _enforce(self, work: _Work) -> None:
        enforcer = self.enforcer
        assert enforcer is not None
        transitions = self._unsilenced(work.transitions)
        if transitions:
            enforcer.on_transitions(transitions)
            logger.debug(
                "enforcement handled transitions=%d waited_s=%.3f",
                len(work.transitions),
                self.clock() - work.stored_at,
            )
        if work.status:
            enforcer.on_status(work.status)

    def _unsilenced(self, transitions: list[Transition]) -> list[Transition]:
        firing = [t.fingerprint for t in transitions if t.event != RESOLVED]
        if self.silenced is None or not firing:
            return transitions
        muted = self.silenced(firing)
        if muted:
            logger.info("enforcement held back silenced=%s", ",".join(sorted(muted)))
        # A resolve still goes through: it may schedule a release.
        return [
            t for t in transitions if t.event == RESOLVED or t.fingerprint not in muted
        ]

    def _forward(self, work: _Work) -> None:
        forwarder = self.forwarder
        assert forwarder is not None
        forwarder.send(work.transitions)


class _HandOffCollector(Collector):
    """Backlog and drops of each hand-off, read at scrape time."""

    def __init__(self, handoffs: Mapping[str, HandOff[_Work]]) -> None:
        self.handoffs = handoffs

    def describe(self) -> Iterator[Metric]:
        # Nothing is described up front: a registry then accepts a second
        # instance (a second daemon in one test process) without a clash.
        return iter(())

    def collect(self) -> Iterator[Metric]:
        backlog = GaugeMetricFamily(
            "dowguard_handoff_backlog",
            "Stored batches waiting for enforcement or forwarding, by worker.",
            labels=("worker",),
        )
        dropped = CounterMetricFamily(
            "dowguard_handoff_dropped",
            "Stored batches dropped because the worker's queue was full.",
            labels=("worker",),
        )
        for name, handoff in sorted(self.handoffs.items()):
            backlog.add_metric((name,), handoff.backlog)
            dropped.add_metric((name,), handoff.dropped)
        yield backlog
        yield dropped
