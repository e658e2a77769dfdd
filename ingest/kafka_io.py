"""Kafka clients for dowguard on kafka-python: producers, consumers, topics.

Also the dead-letter convention: a message no parser accepts is copied
byte for byte to the dead-letter topic, with the reason in its headers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from kafka import (
    ConsumerRebalanceListener,
    KafkaAdminClient,
    KafkaConsumer,
    KafkaProducer,
)
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.errors import KafkaError
from kafka.producer.future import FutureRecordMetadata

from dowguard.errors import BrokerError, ParseError
from ingest.events import Event, encode_event_array, kafka_key, stream_of

logger = logging.getLogger(__name__)

#: Header names of a dead letter; values are UTF-8 text.
DLQ_SOURCE = "dowguard.source"
DLQ_POSITION = "dowguard.position"
DLQ_REASON = "dowguard.reason"
DLQ_KIND = "dowguard.kind"
DLQ_ORIGIN_TOPIC = "dowguard.origin.topic"
DLQ_ORIGIN_PARTITION = "dowguard.origin.partition"
DLQ_ORIGIN_OFFSET = "dowguard.origin.offset"

#: ``dowguard.kind`` of input that no parser accepts.
KIND_PARSE = "parse"
#: ``dowguard.kind`` of input that parsed but made the detector fail.
KIND_INTERNAL = "internal"

# kafka-python doubles its reconnect delay up to 30 s by default, so a broker
# back after a restart of a few seconds would wait that long to be noticed.
RECONNECT_BACKOFF_MAX_MS = 2000

# Kafka's error code for "the topic does not exist".
_UNKNOWN_TOPIC = 3
_TOPIC_EXISTS = 36


def make_producer(bootstrap: str, **overrides: Any) -> KafkaProducer:
    """A producer that waits for every in-sync replica and retries.

    ``overrides`` are kafka-python producer settings that win over these.
    """
    config: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "acks": "all",
        "enable_idempotence": True,
        # A few milliseconds of batching cost nothing next to a window of
        # seconds and cut the request count under load.
        "linger_ms": 5,
        "retries": 2**31 - 1,
        "retry_backoff_ms": 200,
        "delivery_timeout_ms": 120_000,
        "reconnect_backoff_max_ms": RECONNECT_BACKOFF_MAX_MS,
        "client_id": "dowguard-producer",
    }
    config.update(overrides)
    try:
        return KafkaProducer(**config)
    except KafkaError as exc:
        raise BrokerError(f"kafka producer for {bootstrap}: {exc}") from exc


def make_consumer(
    bootstrap: str,
    group: str,
    topics: Sequence[str],
    listener: ConsumerRebalanceListener | None = None,
    **overrides: Any,
) -> KafkaConsumer:
    """A group consumer of ``topics`` that never commits by itself.

    The range assignor gives one member the same partition numbers of every
    topic, which the detector relies on: its state is kept per partition
    number across the invocation, billing, trace and evidence topics (all
    created with one partition count).
    """
    config: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "group_id": group,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "partition_assignment_strategy": [RangePartitionAssignor],
        # Topics are created on purpose, with the right partition count.
        "allow_auto_create_topics": False,
        "reconnect_backoff_max_ms": RECONNECT_BACKOFF_MAX_MS,
        "client_id": f"dowguard-{group}",
    }
    config.update(overrides)
    try:
        consumer = KafkaConsumer(**config)
        consumer.subscribe(list(topics), listener=listener)
        # Load the topics' metadata before the first poll joins the group;
        # a join without it assigns nothing and costs a second rebalance.
        for topic in topics:
            consumer.partitions_for_topic(topic)
    except KafkaError as exc:
        raise BrokerError(
            f"kafka consumer of group {group} at {bootstrap}: {exc}"
        ) from exc
    return consumer


def ensure_topics(
    bootstrap: str, names: Iterable[str], partitions: int, timeout_s: float = 30.0
) -> list[str]:
    """Create the topics that are missing, each with ``partitions`` partitions.

    Returns the names created. An existing topic with another partition
    count is an error: the per-partition state of the detector needs every
    topic partitioned alike.
    """
    wanted = sorted(set(names))
    timeout_ms = int(timeout_s * 1000)
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            request_timeout_ms=timeout_ms,
            client_id="dowguard-admin",
        )
    except KafkaError as exc:
        raise BrokerError(f"kafka admin at {bootstrap}: {exc}") from exc
    try:
        counts = _partition_counts(admin, wanted)
        missing = [name for name in wanted if name not in counts]
        if missing:
            _create(admin, missing, partitions, timeout_ms)
        wrong = {n: c for n, c in counts.items() if c != partitions}
        if wrong:
            found = ", ".join(f"{n} has {c}" for n, c in sorted(wrong.items()))
            raise BrokerError(
                f"kafka at {bootstrap}: topics must have {partitions} partitions; "
                f"{found}"
            )
    except KafkaError as exc:
        raise BrokerError(f"kafka at {bootstrap}: topic setup failed: {exc}") from exc
    finally:
        admin.close()
    return missing


def _partition_counts(admin: KafkaAdminClient, names: list[str]) -> dict[str, int]:
    counts = {}
    for topic in admin.describe_topics(names):
        if topic["error_code"] == 0:
            counts[topic["name"]] = len(topic["partitions"])
        elif topic["error_code"] != _UNKNOWN_TOPIC:
            raise BrokerError(
                f"describing topic {topic['name']}: error code {topic['error_code']}"
            )
    return counts


def _create(
    admin: KafkaAdminClient, names: list[str], partitions: int, timeout_ms: int
) -> None:
    spec = {n: {"num_partitions": partitions, "replication_factor": 1} for n in names}
    result = admin.create_topics(
        spec, timeout_ms=timeout_ms, raise_errors=False, wait_for_metadata=True
    )
    for topic in result["topics"]:
        code = topic["error_code"]
        # Another process may create the same topic at the same moment.
        if code not in (0, _TOPIC_EXISTS):
            raise BrokerError(
                f"creating topic {topic['name']}: error code {code}: "
                f"{topic.get('error_message')}"
            )
    logger.info("topics created names=%s partitions=%d", ",".join(names), partitions)


def publish_events(
    producer: KafkaProducer, events: Iterable[Event], topics: Mapping[str, str]
) -> int:
    """Send events to the topic of their stream, keyed by their context.

    Each message is one event in dowguard's array form, the cheapest to
    decode for the daemon. ``topics`` maps a stream (``invocations``,
    ``billing``, ``traces``) to a topic name. Waits until every event is
    acknowledged and returns how many were sent; raises :class:`BrokerError`
    if any was refused.
    """
    failures: list[BaseException] = []
    count = 0
    for event in events:
        stream = stream_of(event)
        try:
            topic = topics[stream]
        except KeyError as exc:
            raise BrokerError(f"publish: no topic configured for {stream}") from exc
        value = encode_event_array(event)
        future = producer.send(topic, key=kafka_key(event), value=value)
        future.add_errback(failures.append)
        count += 1
    try:
        producer.flush()
    except KafkaError as exc:
        raise BrokerError(f"publish: flushing {count} events failed: {exc}") from exc
    if failures:
        raise BrokerError(
            f"publish: {len(failures)} of {count} events were refused: {failures[0]}"
        )
    return count


def dead_letter_headers(
    error: ParseError,
    origin: str,
    partition: int = -1,
    offset: int = -1,
    kind: str = KIND_PARSE,
) -> list[tuple[str, bytes]]:
    """The headers that say why and from where a message was set aside."""
    return [
        (DLQ_SOURCE, error.source.encode()),
        (DLQ_POSITION, error.position.encode()),
        (DLQ_REASON, error.reason.encode()),
        (DLQ_KIND, kind.encode()),
        (DLQ_ORIGIN_TOPIC, origin.encode()),
        (DLQ_ORIGIN_PARTITION, str(partition).encode()),
        (DLQ_ORIGIN_OFFSET, str(offset).encode()),
    ]


def dead_letter(
    producer: KafkaProducer,
    topic: str,
    raw: bytes | None,
    error: ParseError,
    origin: str,
    *,
    partition: int = -1,
    offset: int = -1,
    key: bytes | None = None,
    kind: str = KIND_PARSE,
) -> FutureRecordMetadata:
    """Copy a rejected message to ``topic``, untouched, with why in headers.

    ``origin`` is the topic the message was read from, ``partition`` and
    ``offset`` where in it (``-1`` when it did not come from Kafka). The
    caller flushes the producer and checks the returned future.
    """
    headers = dead_letter_headers(error, origin, partition, offset, kind)
    logger.info(
        "dead letter origin=%s partition=%d offset=%d reason=%s",
        origin,
        partition,
        offset,
        error.reason,
    )
    return producer.send(topic, key=key, value=raw, headers=headers)


def dead_letter_info(headers: Sequence[tuple[str, bytes]] | None) -> dict[str, str]:
    """The dowguard headers of a dead letter, decoded, by header name."""
    return {
        name: value.decode("utf-8", "replace")
        for name, value in headers or ()
        if name.startswith("dowguard.")
    }
