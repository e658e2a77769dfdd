"""Replay: recorded events through the same detector path as the daemon.

Each event is given the partition number the broker would give it, and the
evidence of the trace stage is routed back by its context's partition, so a
replay keeps exactly the per-partition state and watermarks of a daemon.
``speed`` paces by event time; it only sleeps, so results are the same at
any speed. A recording's end is no end of traffic: what it reports after its
last call began is held back from the alerts (:class:`Drain`).
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import cast

from detector.alerts import AlertSink, Transition
from detector.engine import Engine
from detector.gcpolicy import streaming_gc
from ingest.events import Event, Invocation, InvocationStart, Span, kafka_key
from ingest.partitioning import partition_for, partitions_for

logger = logging.getLogger(__name__)

#: Transitions stored per database transaction during a replay.
COMMIT_EVERY = 500
#: Keys whose partition is remembered; beyond it the cache starts afresh.
KEY_CACHE = 200_000
#: Events read ahead at a time, so that the partitions of the keys first
#: seen among them are hashed in one vectorised call.
CHUNK = 4096


@dataclass(slots=True)
class ReplayResult:
    events: int = 0
    transitions: list[Transition] = field(default_factory=list)
    #: Transitions left out as judged on the drain after the last call began.
    drained: int = 0


def latest_start(events: Iterable[Event], latest: float) -> float:
    """The latest time a call of ``events`` began, or ``latest`` if later."""
    for event in events:
        kind = type(event)
        if kind is Invocation:
            began = cast("Invocation", event).began
        elif kind is InvocationStart:
            began = event.time
        else:
            continue
        if began > latest:
            latest = began
    return latest


class Drain:
    """Holds back the transitions of a replay that may come from its drain.

    A recording stops while calls are still running; the reports that come
    after its last call began are of the calls that were running then, the
    longer the likelier, and of no new call. A daemon never reads such a
    stretch, as traffic goes on and new calls mix with them, and judged on
    it a context's durations look inflated and its windows thin. So a
    transition later than a window after the latest start seen so far is
    held, with every later one of its alert; it is passed on once a later
    start shows the stream went on, and left out if the stream ends first.
    Resolutions of alerts opened before are passed on: an end is no alarm.
    """

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self.latest = -math.inf
        self.dropped = 0
        self._held: list[Transition] = []
        self._held_alerts: set[str] = set()

    def admit(self, fresh: list[Transition]) -> list[Transition]:
        """The transitions to pass on now, in order, of those held and ``fresh``."""
        if not self._held and not fresh:
            return []
        queue = self._held + fresh
        self._held = []
        self._held_alerts = set()
        out: list[Transition] = []
        bar = self.latest + self.window_s
        for transition in queue:
            # Limitation: a stream with no call records at all is never held back.
            late = self.latest > -math.inf and transition.at > bar
            if transition.fingerprint in self._held_alerts or (
                late and transition.event != "resolved"
            ):
                self._held.append(transition)
                self._held_alerts.add(transition.fingerprint)
            else:
                out.append(transition)
        return out

    def end(self) -> None:
        """The stream is over: what is still held was judged on its drain."""
        for transition in self._held:
            logger.info(
                "replay drain left out event=%s kind=%s context=%s at=%.3f"
                " latest_start=%.3f",
                transition.event,
                transition.kind,
                transition.context.function,
                transition.at,
                self.latest,
            )
        self.dropped += len(self._held)
        self._held = []
        self._held_alerts = set()


class Partitioner:
    """Kafka's default partition of a key, remembered per key."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self._cache: dict[bytes, int] = {}

    def __call__(self, key: bytes) -> int:
        number = self._cache.get(key)
        if number is None:
            if len(self._cache) >= KEY_CACHE:
                self._cache.clear()
            number = self._cache[key] = partition_for(key, self.partitions)
        return number

    def many(self, keys: Sequence[bytes]) -> list[int]:
        """The partitions of ``keys``, hashed together (not remembered)."""
        return partitions_for(keys, self.partitions)


class Replay:
    """Push events, in the order given, through an engine.

    Parameters
    ----------
    engine
        The detector.
    sink
        Where transitions are stored (none: only returned).
    speed
        Event-time seconds per wall-clock second; ``None`` is as fast as
        possible.
    on_transition
        Called with each transition as soon as it is passed on (see
        :class:`Drain`).
    """

    def __init__(
        self,
        engine: Engine,
        sink: AlertSink | None = None,
        speed: float | None = None,
        on_transition: Callable[[Transition], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if speed is not None and speed <= 0:
            raise ValueError(f"speed must be positive, got {speed!r}")
        self.engine = engine
        self.sink = sink
        self.speed = speed
        self.on_transition = on_transition
        self._sleep = sleep
        self._clock = clock
        self._partition = Partitioner(engine.config.partitions)
        self._pending: list[Transition] = []
        self._drain = Drain(engine.config.window_s)

    def run(self, events: Iterable[Event]) -> ReplayResult:
        # The collector runs less often: see detector.gcpolicy.
        with streaming_gc():
            return self._run(events)

    def _run(self, events: Iterable[Event]) -> ReplayResult:
        result = ReplayResult()
        engine = self.engine
        process = engine.process
        has_output = engine.has_output
        paced = self.speed is not None
        started: tuple[float, float] | None = None
        # Partitions remembered per context object and trace id: hashing a
        # context is cheaper than building and hashing its key.
        known: dict[object, int] = {}
        lookup = known.get
        # An engine that changes what one event does is fed one at a time.
        batched = not paced and type(engine).process is Engine.process

        def on_output() -> None:
            self._route_evidence()
            self._collect(result)

        source = iter(events)
        drain = self._drain
        while chunk := list(itertools.islice(source, CHUNK)):
            # The chunk's starts count before its transitions: it is read
            # ahead of them by no more than a chunk.
            drain.latest = latest_start(chunk, drain.latest)
            if batched:
                handles = [e.trace_id if type(e) is Span else e.context for e in chunk]
                numbers = [lookup(h) for h in handles]
                if None in numbers:
                    self._learn(chunk, known, chunk[numbers.index(None)])
                    numbers = [known[h] for h in handles]
                engine.process_many(chunk, cast("list[int]", numbers), on_output)
                result.events += len(chunk)
                continue
            for event in chunk:
                if paced:
                    started = self._pace(event.time, started)
                number = lookup(
                    event.trace_id if type(event) is Span else event.context
                )
                if number is None:
                    number = self._learn(chunk, known, event)
                process(event, number)
                if has_output():
                    on_output()
            result.events += len(chunk)
        engine.flush()
        self._route_evidence()
        self._collect(result)
        drain.end()
        result.drained = drain.dropped
        self._store(force=True)
        if self.sink is not None:
            self.sink.update_functions(engine.take_status())
        return result

    def _learn(self, chunk: list[Event], known: dict[object, int], event: Event) -> int:
        """Remember the partitions of every new key of ``chunk``; ``event``'s."""
        if len(known) + len(chunk) > KEY_CACHE:
            known.clear()
        fresh: dict[object, Event] = {}
        for other in chunk:
            handle = other.trace_id if type(other) is Span else other.context
            if handle not in known:
                fresh.setdefault(handle, other)
        numbers = self._partition.many([kafka_key(e) for e in fresh.values()])
        known.update(zip(fresh, numbers, strict=True))
        return known[event.trace_id if type(event) is Span else event.context]

    def _pace(
        self, event_time: float, started: tuple[float, float] | None
    ) -> tuple[float, float]:
        if started is None:
            return (event_time, self._clock())
        first_event, first_wall = started
        due = first_wall + (event_time - first_event) / (self.speed or 1.0)
        delay = due - self._clock()
        if delay > 0:
            self._sleep(delay)
        return started

    def _route_evidence(self) -> None:
        # Evidence never produces evidence, so one pass drains it.
        engine = self.engine
        for evidence in engine.take_evidence():
            engine.process_evidence(evidence, self._partition(evidence.context.key()))

    def _collect(self, result: ReplayResult) -> None:
        fresh = self._drain.admit(self.engine.take_transitions())
        result.transitions.extend(fresh)
        if self.on_transition is not None:
            for transition in fresh:
                self.on_transition(transition)
        self._pending.extend(fresh)
        self._store(force=False)

    def _store(self, force: bool) -> None:
        if self.sink is None or not self._pending:
            return
        if force or len(self._pending) >= COMMIT_EVERY:
            self.sink.commit(self._pending)
            self._pending = []


def replay_events(
    engine: Engine,
    events: Iterable[Event],
    sink: AlertSink | None = None,
) -> Sequence[Transition]:
    """Replay as fast as possible and return the transitions."""
    return Replay(engine, sink).run(events).transitions
