"""The streaming daemon: Kafka records through the detector into the sink.

Delivery is at-least-once. Every commit interval the daemon first delivers
what it produced (evidence, dead letters), then stores the alert
transitions. Once a checkpoint is due (by time or batches read) the same
sink commit also holds a checkpoint of each owned partition number read
from since its last one (detector state plus the offsets it covers), and
only then are those offsets committed to Kafka. After a crash or a
rebalance, the owner of a partition number restores the checkpoint and
seeks to its offsets, so the messages read again are those after the last
checkpoint; the sink skips transitions it already holds, so they raise no
duplicate alert.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError
from kafka.producer.future import FutureRecordMetadata
from kafka.structs import OffsetAndMetadata, TopicPartition

from detector.alerts import AlertSink, Checkpoint, Transition
from detector.engine import Engine
from detector.evidence import decode_evidence, encode_evidence
from detector.gcpolicy import streaming_gc
from detector.metrics import METRICS, DowMetrics
from dowguard.config import Settings
from dowguard.errors import BrokerError, ConfigError, ParseError
from ingest.events import Event
from ingest.kafka_io import (
    KIND_INTERNAL,
    KIND_PARSE,
    dead_letter_headers,
    ensure_topics,
    make_consumer,
    make_producer,
)
from ingest.parse import parse_message

logger = logging.getLogger(__name__)

#: A parser of one Kafka message: raw value, source label, key -> events.
Parser = Callable[[bytes, str, bytes | None], Sequence[Event]]

EVIDENCE = "evidence"

# Outcomes of one attempt to store effects.
_IDLE = "idle"
_STORED = "stored"
_FAILED = "failed"

# Snapshots cost in proportion to the state (tens of microseconds per
# context), not to the traffic: with many contexts a fixed interval could
# spend most of the loop pickling. The next checkpoint then waits until the
# last one is at most this share of the time between them.
CHECKPOINT_SHARE = 0.1


def checkpoint_gap(interval_s: float, took_s: float) -> float:
    """Seconds from one checkpoint to the next: ``interval_s``, stretched so
    that a checkpoint taking ``took_s`` is at most :data:`CHECKPOINT_SHARE`
    of the loop's time."""
    return max(interval_s, took_s * (1.0 - CHECKPOINT_SHARE) / CHECKPOINT_SHARE)


@dataclass(slots=True)
class _Outgoing:
    """A message produced in this commit interval, kept until acknowledged."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None
    future: FutureRecordMetadata | None = None


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.daemon._on_revoked(revoked)

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.daemon._on_assigned(assigned)

    def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        self.daemon._on_lost(lost)


class Daemon:
    """Consumes the input topics in one group and feeds one engine.

    ``on_transitions`` (settable attribute) is called with every batch of
    transitions once it is stored. The counters are plain attributes:
    ``events_in`` messages read, ``events_processed`` messages the engine
    took, ``dead_letters`` per stream, ``commits`` completed sink commits,
    ``checkpoints`` those of them that held checkpoints.
    """

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        sink: AlertSink,
        *,
        parse: Parser | None = None,
        metrics: DowMetrics | None = None,
        consumer_options: Mapping[str, Any] | None = None,
        producer_options: Mapping[str, Any] | None = None,
        poll_timeout_s: float = 0.5,
        max_records: int = 500,
        backoff_s: float = 1.0,
    ) -> None:
        if not settings.kafka_bootstrap:
            raise ConfigError("daemon: kafka_bootstrap is not set")
        if settings.commit_interval_s <= 0:
            raise ConfigError(
                f"daemon: commit_interval_s must be positive, "
                f"got {settings.commit_interval_s}"
            )
        self.settings = settings
        self.engine = engine
        self.sink = sink
        self.parse: Parser = parse or parse_message
        self.metrics = metrics or METRICS
        self.consumer_options = dict(consumer_options or {})
        self.producer_options = dict(producer_options or {})
        self.poll_timeout_s = poll_timeout_s
        self.max_records = max_records
        self.backoff_s = backoff_s
        self.on_transitions: Callable[[list[Transition]], None] | None = None

        self.events_in = 0
        self.events_processed = 0
        self.dead_letters: dict[str, int] = {}
        self.commits = 0
        self.checkpoints = 0
        self.errors = 0

        self._streams = {
            settings.topic_invocations: "invocations",
            settings.topic_billing: "billing",
            settings.topic_traces: "traces",
            settings.topic_evidence: EVIDENCE,
        }
        self._stopping = threading.Event()
        # Rebalance callbacks run on kafka-python's IO thread while the loop
        # waits in poll() or close(); the lock keeps engine, positions and
        # pending output consistent between the two. It is never held while
        # calling into the consumer, whose calls wait on that same IO thread.
        self._lock = threading.RLock()
        self._owned: set[TopicPartition] = set()
        self._positions: dict[TopicPartition, int] = {}
        self._unrestored: dict[int, list[TopicPartition]] = {}
        self._outgoing: list[_Outgoing] = []
        self._send_blocked = False
        self._unsaved: list[Transition] = []
        self._announce: list[Transition] = []
        # Partition numbers read from since their checkpoint was last stored:
        # only records of a partition change its state or its offsets.
        self._changed: set[int] = set()
        self._consumer: KafkaConsumer | None = None
        self._producer: KafkaProducer | None = None
        self._next_commit = 0.0
        self._next_shares_read = 0.0
        self._next_checkpoint = time.monotonic() + settings.checkpoint_interval_s
        # Batches read since the last checkpoint of the cadence.
        self._batches = 0

    # Control

    def run(self) -> None:
        """Run until :meth:`stop`; then commit, leave the group and close."""
        self._connect()
        try:
            now = time.monotonic()
            self._next_commit = now + self.settings.commit_interval_s
            self._next_checkpoint = now + self.settings.checkpoint_interval_s
            # The collector runs less often: see detector.gcpolicy.
            with streaming_gc():
                while not self._stopping.is_set():
                    self._step()
            self._commit(checkpoint=True)
        finally:
            self._close()
        logger.info(
            "daemon stopped events_in=%d processed=%d dead_letters=%d commits=%d",
            self.events_in,
            self.events_processed,
            sum(self.dead_letters.values()),
            self.commits,
        )

    def stop(self) -> None:
        """Ask the loop to finish its batch, commit and close (thread-safe)."""
        self._stopping.set()

    @property
    def consuming(self) -> bool:
        """Whether the consumer is connected and the loop not told to stop."""
        return self._consumer is not None and not self._stopping.is_set()

    def install_signal_handlers(self) -> None:
        """Stop on SIGTERM and SIGINT (call from the main thread)."""

        def handle(signum: int, frame: FrameType | None) -> None:
            logger.info("daemon signal signum=%d", signum)
            self.stop()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    def owned_partitions(self) -> set[int]:
        """The partition numbers this daemon currently owns."""
        with self._lock:
            return {tp.partition for tp in self._owned}

    # The loop

    def _connect(self) -> None:
        s = self.settings
        names = [*self._streams, s.topic_deadletter]
        while not self._stopping.is_set():
            try:
                ensure_topics(s.kafka_bootstrap, names, s.partitions)
                options = {"max_block_ms": 5_000, **self.producer_options}
                self._producer = make_producer(s.kafka_bootstrap, **options)
                self._consumer = make_consumer(
                    s.kafka_bootstrap,
                    s.group_id,
                    list(self._streams),
                    listener=_Listener(self),
                    **self.consumer_options,
                )
                logger.info(
                    "daemon started bootstrap=%s group=%s topics=%s",
                    s.kafka_bootstrap,
                    s.group_id,
                    ",".join(self._streams),
                )
                return
            except BrokerError as exc:
                self.errors += 1
                logger.warning("daemon connect failed error=%s; retrying", exc)
                self._close()
                self._stopping.wait(self.backoff_s)

    def _step(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        if self._unrestored:
            self._retry_restores()
        try:
            records = consumer.poll(
                timeout_ms=int(self.poll_timeout_s * 1000),
                max_records=self.max_records,
            )
        except (KafkaError, OSError) as exc:
            self.errors += 1
            logger.warning("daemon poll failed error=%r; backing off", exc)
            self._stopping.wait(self.backoff_s)
            records = {}
        if records:
            with self._lock:
                for tp, batch in records.items():
                    # A rebalance may have taken the partition after this
                    # batch was fetched; its new owner reads it again.
                    if tp not in self._owned or not batch:
                        continue
                    self._handle_batch(tp, batch)
        self._announce_stored()
        if time.monotonic() >= self._next_commit:
            self._commit()
            self._next_commit = time.monotonic() + self.settings.commit_interval_s
        self._read_account_shares()

    def _read_account_shares(self) -> None:
        """Every ``account_shares_read_s``, hand the engine the account shares
        the group's other members stored with their checkpoints."""
        now = time.monotonic()
        if now < self._next_shares_read or not self.engine.has_account_budgets:
            return
        self._next_shares_read = now + self.settings.account_shares_read_s
        try:
            shares = self.sink.load_shares(self.settings.group_id)
        except Exception as exc:
            # The shares taken before stay; the next read tries again.
            self.errors += 1
            logger.warning("daemon account shares read failed error=%r", exc)
            return
        with self._lock:
            self.engine.take_account_shares(shares)

    def _handle_batch(self, tp: TopicPartition, batch: list[Any]) -> None:
        """Feed one partition's records to the engine (lock held)."""
        stream = self._streams[tp.topic]
        prefix = f"kafka:{tp.topic}[{tp.partition}]@"
        # Counted as read before they are processed, so that a reader of the
        # counters sees the batch arrive, not only finish.
        self.events_in += len(batch)
        if stream == EVIDENCE:
            taken = processed = 0
            for record in batch:
                n = self._handle(record, stream, prefix + str(record.offset))
                taken += n
                processed += n
        else:
            taken, processed = self._handle_events(tp.partition, batch, stream, prefix)
        # Counted once per batch: a labelled counter costs a lookup per call.
        self.events_processed += processed
        if taken:
            self.metrics.record_event(stream, taken)
        self._positions[tp] = batch[-1].offset + 1
        self._changed.add(tp.partition)
        self._batches += 1

    def _handle_events(
        self, partition: int, batch: list[Any], stream: str, prefix: str
    ) -> tuple[int, int]:
        """Parse and process a batch of event records; (events, messages) taken.

        The per-record loop of the daemon: everything that does not change
        per record is bound once per batch.
        """
        parse = self.parse
        process = self.engine.intake(partition)
        taken = processed = 0
        for record in batch:
            value = record.value
            source = prefix + str(record.offset)
            try:
                if value is None:
                    raise ParseError(source, "offset 0", "message has no value")
                events = parse(value, source, record.key)
                for event in events:
                    process(event)
            except ParseError as exc:
                self.metrics.record_parse_error()
                self._dead_letter(record, stream, exc, KIND_PARSE)
                continue
            except Exception as exc:
                self._internal_failure(record, stream, source, exc)
                continue
            processed += 1
            taken += len(events)
        return taken, processed

    def _handle(self, record: Any, stream: str, source: str) -> int:
        """Process one evidence record; 1 if taken, 0 if set aside."""
        try:
            if record.value is None:
                raise ParseError(source, "offset 0", "message has no value")
            evidence = decode_evidence(record.value, source)
            self.engine.process_evidence(evidence, record.partition)
        except ParseError as exc:
            self.metrics.record_parse_error()
            self._dead_letter(record, stream, exc, KIND_PARSE)
            return 0
        except Exception as exc:
            self._internal_failure(record, stream, source, exc)
            return 0
        return 1

    def _internal_failure(
        self, record: Any, stream: str, source: str, exc: Exception
    ) -> None:
        # Only a parse error is expected per message. Anything else is a
        # bug, but one message must not stop the daemon: log it with the
        # traceback, set the message aside and go on.
        # Limitation: events of the message taken before the failure stay applied.
        logger.error("daemon message failed source=%s", source, exc_info=exc)
        error = ParseError(source, "offset 0", f"{type(exc).__name__}: {exc}")
        self._dead_letter(record, stream, error, KIND_INTERNAL)

    def _dead_letter(
        self, record: Any, stream: str, error: ParseError, kind: str
    ) -> None:
        self.dead_letters[stream] = self.dead_letters.get(stream, 0) + 1
        self.metrics.record_dead_letter(stream)
        logger.info(
            "daemon dead letter source=%s kind=%s reason=%s",
            error.source,
            kind,
            error.reason,
        )
        headers = dead_letter_headers(
            error, record.topic, record.partition, record.offset, kind
        )
        out = _Outgoing(
            self.settings.topic_deadletter, record.key, record.value, headers
        )
        self._outgoing.append(out)
        self._send(out)

    def _send(self, out: _Outgoing) -> None:
        assert self._producer is not None
        if self._send_blocked:
            return
        try:
            out.future = self._producer.send(
                out.topic, key=out.key, value=out.value, headers=out.headers
            )
        except KafkaError as exc:
            # A send blocks up to max_block_ms while the broker is away. After
            # one such failure the rest of the output only queues here, and
            # the next checkpoint sends it all again.
            logger.warning("daemon send failed topic=%s error=%r", out.topic, exc)
            out.future = None
            self._send_blocked = True

    # Commits

    def _commit(self, checkpoint: bool | None = None) -> bool:
        """Deliver output and store transitions; with a checkpoint (``None``:
        if one is due), store that too, then commit its offsets."""
        started = time.monotonic()
        if checkpoint is None:
            checkpoint = self._checkpoint_due(started)
        with self._lock:
            numbers = self._numbers() if checkpoint else set()
            outcome = self._store(numbers, checkpoint=checkpoint)
            if outcome != _STORED:
                return outcome == _IDLE
            # Kafka's offsets never run ahead of a checkpoint: a partition
            # never checkpointed would otherwise restart there with empty state.
            offsets = {
                tp: OffsetAndMetadata(pos, "", -1)
                for tp, pos in self._positions.items()
                if checkpoint and tp in self._owned
            }
        if checkpoint:
            took = time.monotonic() - started
            gap = checkpoint_gap(self.settings.checkpoint_interval_s, took)
            self._next_checkpoint = started + gap
            self._batches = 0
        consumer = self._consumer
        if consumer is not None and offsets:
            try:
                consumer.commit(offsets, timeout_ms=10_000)
            except KafkaError as exc:
                # The checkpoint just stored holds these offsets and wins on
                # the next assignment, so a failed offset commit loses nothing.
                self.errors += 1
                logger.warning("daemon offset commit failed error=%r", exc)
            self._report_lag(consumer, offsets)
        self.metrics.observe_commit(time.monotonic() - started)
        self._announce_stored()
        return True

    def _checkpoint_due(self, now: float) -> bool:
        every = self.settings.checkpoint_batches
        return now >= self._next_checkpoint or (every > 0 and self._batches >= every)

    def _store(self, numbers: set[int], checkpoint: bool = True) -> str:
        """Store transitions and, with ``checkpoint``, the checkpoints of
        ``numbers`` and the function status, if anything changed.

        Called with the lock held. Returns ``_IDLE`` (nothing to store),
        ``_STORED`` or ``_FAILED`` (kept for the next attempt).
        """
        for ev in self.engine.take_evidence():
            out = _Outgoing(
                self.settings.topic_evidence,
                ev.context.key(),
                encode_evidence(ev),
                None,
            )
            self._outgoing.append(out)
            self._send(out)
        self._unsaved.extend(self.engine.take_transitions())
        if not checkpoint:
            # Output was sent as it was made; only a checkpoint, which moves
            # the offsets past the input that made it, waits for its acks.
            # Limitation: a crash re-announces transitions stored after the checkpoint.
            if not self._unsaved:
                return _IDLE
        elif not (self._unsaved or self._outgoing or numbers & self._changed):
            return _IDLE
        elif not self._deliver():
            return _FAILED
        checkpoints = {
            number: Checkpoint(
                number,
                self.engine.snapshot(number),
                {
                    tp.topic: pos
                    for tp, pos in self._positions.items()
                    if tp.partition == number
                },
                self.engine.account_shares(number),
            )
            for number in sorted(numbers & self._changed)
        }
        transitions = list(self._unsaved)
        try:
            # A member evicted without noticing (paused longer than the
            # session timeout) still writes here until its next poll.
            # Limitation: checkpoints are not fenced by the group generation.
            if transitions or checkpoints:
                self.sink.commit(transitions, checkpoints, self.settings.group_id)
        except Exception as exc:
            # The sink may fail in ways of its driver; the effects stay here
            # and the next commit stores them with a fresher checkpoint.
            self.errors += 1
            logger.warning(
                "daemon store failed transitions=%d error=%r", len(transitions), exc
            )
            return _FAILED
        self._unsaved = []
        self.commits += 1
        self.metrics.record_transitions(transitions)
        self._announce.extend(transitions)
        if checkpoint:
            self._changed -= checkpoints.keys()
            self.checkpoints += 1
            # Status rows are for display: every checkpoint is often enough,
            # and building one per changed context every commit is not free.
            self._update_status()
        return _STORED

    def _deliver(self) -> bool:
        """Send what is unsent, wait for acknowledgements; True if all acked."""
        producer = self._producer
        if not self._outgoing:
            return True
        if producer is None:
            return False
        self._send_blocked = False
        for out in self._outgoing:
            if out.future is not None and out.future.failed():
                logger.warning(
                    "daemon resend topic=%s error=%r", out.topic, out.future.exception
                )
                out.future = None
            if out.future is None:
                self._send(out)
        try:
            producer.flush(timeout=10.0)
        except KafkaError as exc:
            logger.warning("daemon flush incomplete error=%r", exc)
        self._outgoing = [
            out
            for out in self._outgoing
            if out.future is None or not out.future.succeeded()
        ]
        if self._outgoing:
            self.errors += 1
            logger.warning("daemon commit deferred undelivered=%d", len(self._outgoing))
            return False
        return True

    def _update_status(self) -> None:
        try:
            rows = self.engine.take_status()
            if rows:
                self.sink.update_functions(rows)
            self.metrics.set_tracked_contexts(self.engine.tracked_contexts)
        except Exception as exc:
            # Function status is for display only; it is rebuilt as it changes.
            logger.warning("daemon status update failed error=%r", exc)

    def _report_lag(
        self, consumer: KafkaConsumer, offsets: Mapping[TopicPartition, Any]
    ) -> None:
        for tp, committed in offsets.items():
            try:
                high = consumer.highwater(tp)
            except KafkaError:
                continue
            if high is not None:
                self.metrics.set_consumer_lag(
                    tp.topic, tp.partition, high - committed.offset
                )

    def _announce_stored(self) -> None:
        with self._lock:
            batch, self._announce = self._announce, []
        if batch and self.on_transitions is not None:
            try:
                self.on_transitions(batch)
            except Exception:
                # A failing hook must not undo what is stored or stop the loop.
                logger.exception("daemon on_transitions failed count=%d", len(batch))

    def _numbers(self) -> set[int]:
        return {tp.partition for tp in self._owned} - set(self._unrestored)

    # Rebalances (called on kafka-python's IO thread)

    def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        # Limitation: eager rebalances restore all partitions, not just moved ones.
        with self._lock:
            numbers = {tp.partition for tp in revoked} - set(self._unrestored)
            if self._store(numbers) == _FAILED:
                logger.error(
                    "daemon handover checkpoint failed partitions=%s; "
                    "the next owner reads again from the previous checkpoint",
                    sorted(numbers),
                )
            self._forget(revoked)
        logger.info("daemon revoked partitions=%s", sorted(numbers))

    def _on_lost(self, lost: set[TopicPartition]) -> None:
        # Another member may own these already: writing a checkpoint now
        # could overwrite a newer one, so the state is dropped unsaved.
        with self._lock:
            self._forget(lost)
        logger.warning(
            "daemon lost partitions=%s", sorted({tp.partition for tp in lost})
        )

    def _forget(self, partitions: set[TopicPartition]) -> None:
        self._owned -= partitions
        kept = {tp.partition for tp in self._owned}
        for tp in partitions:
            self._positions.pop(tp, None)
            self.metrics.forget_partition(tp.topic, tp.partition)
        for number in {tp.partition for tp in partitions} - kept:
            self.engine.drop(number)
            self._unrestored.pop(number, None)
            self._changed.discard(number)

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        with self._lock:
            fresh = set(assigned) - self._owned
            self._owned |= fresh
            by_number: dict[int, list[TopicPartition]] = {}
            for tp in fresh:
                by_number.setdefault(tp.partition, []).append(tp)
            for number, tps in sorted(by_number.items()):
                if not self._restore(number, tps):
                    self._unrestored[number] = tps
                    self._pause(tps)
        logger.info("daemon assigned partitions=%s", sorted(by_number))

    def _restore(self, number: int, tps: list[TopicPartition]) -> bool:
        """Load and apply the checkpoint of ``number``; False to retry later."""
        group = self.settings.group_id
        try:
            checkpoint = self.sink.load_checkpoint(group, number)
        except Exception as exc:
            self.errors += 1
            logger.warning(
                "daemon checkpoint load failed partition=%d error=%r", number, exc
            )
            return False
        if checkpoint is None:
            # Nothing stored: start empty from the committed offsets, or
            # from the beginning of the topics.
            self.engine.drop(number)
            logger.info("daemon no checkpoint partition=%d", number)
            return True
        try:
            self.engine.restore(number, checkpoint.state)
        except Exception as exc:
            # A snapshot of another detector version fails in whatever way its
            # decoding does; the partition then goes on from the checkpoint's
            # offsets with empty state rather than stalling.
            # Limitation: state in an unreadable snapshot is lost, not migrated.
            logger.error(
                "daemon snapshot unreadable partition=%d error=%r", number, exc
            )
            self.engine.drop(number)
        assert self._consumer is not None
        for tp in tps:
            offset = checkpoint.offsets.get(tp.topic)
            if offset is not None:
                self._consumer.seek(tp, offset)
                self._positions[tp] = offset
        logger.info(
            "daemon restored partition=%d offsets=%s", number, checkpoint.offsets
        )
        return True

    def _pause(self, tps: list[TopicPartition]) -> None:
        assert self._consumer is not None
        self._consumer.pause(*tps)

    def _retry_restores(self) -> None:
        resumed: list[TopicPartition] = []
        with self._lock:
            for number, tps in sorted(self._unrestored.items()):
                if self._restore(number, tps):
                    del self._unrestored[number]
                    resumed.extend(tps)
        if resumed:
            assert self._consumer is not None
            self._consumer.resume(*resumed)
        elif self._unrestored:
            self._stopping.wait(self.backoff_s)

    # Shutdown

    def _close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                # Leaving the group revokes the partitions: the listener
                # stores a last checkpoint if anything changed since.
                consumer.close(autocommit=False, timeout_ms=10_000)
            except KafkaError as exc:
                logger.warning("daemon consumer close failed error=%r", exc)
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=10.0)
            except KafkaError as exc:
                logger.warning("daemon producer close failed error=%r", exc)
        self._announce_stored()
