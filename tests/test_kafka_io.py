"""Kafka helpers: topic setup, routing of events, dead letters, co-partitioning."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from kafka import (
    ConsumerRebalanceListener,
    KafkaAdminClient,
    KafkaConsumer,
    TopicPartition,
)
from kafka.consumer.fetcher import ConsumerRecord

from dowguard.errors import BrokerError, ParseError
from ingest.events import (
    Billing,
    Context,
    Event,
    Invocation,
    Span,
    decode_event,
    kafka_key,
)
from ingest.kafka_io import (
    DLQ_KIND,
    DLQ_ORIGIN_OFFSET,
    DLQ_ORIGIN_PARTITION,
    DLQ_ORIGIN_TOPIC,
    DLQ_POSITION,
    DLQ_REASON,
    DLQ_SOURCE,
    KIND_INTERNAL,
    dead_letter,
    dead_letter_headers,
    dead_letter_info,
    ensure_topics,
    make_consumer,
    make_producer,
    publish_events,
)
from ingest.partitioning import partition_for
from tests.conftest import TopicFactory

CTX = Context("aws", "111122223333", "eu-west-1", "thumbnail", "7")
T0 = 1_772_400_000.0


def test_dead_letter_headers_name_source_position_reason_and_origin() -> None:
    error = ParseError("kafka:in[2]@41", "line 3", "memory_mb out of range: 0")
    headers = dead_letter_headers(error, "in", 2, 41, KIND_INTERNAL)

    info = dead_letter_info([*headers, ("unrelated", b"x")])

    assert info == {
        DLQ_SOURCE: "kafka:in[2]@41",
        DLQ_POSITION: "line 3",
        DLQ_REASON: "memory_mb out of range: 0",
        DLQ_KIND: KIND_INTERNAL,
        DLQ_ORIGIN_TOPIC: "in",
        DLQ_ORIGIN_PARTITION: "2",
        DLQ_ORIGIN_OFFSET: "41",
    }


def test_dead_letter_info_of_a_message_without_headers_is_empty() -> None:
    assert dead_letter_info(None) == {}


def read(
    bootstrap: str, topic: str, partitions: int, count: int
) -> list[ConsumerRecord]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + 30
        while len(records) < count:
            assert time.monotonic() < deadline, f"read {len(records)}/{count}"
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


@pytest.mark.kafka
def test_ensure_topics_creates_the_missing_and_refuses_other_partition_counts(
    kafka_bootstrap: str, unique_topics: TopicFactory
) -> None:
    existing = unique_topics("old", partitions=2)["old"]
    fresh = f"{existing}.fresh"

    created = ensure_topics(kafka_bootstrap, [existing, fresh], 2)
    again = ensure_topics(kafka_bootstrap, [existing, fresh], 2)
    with pytest.raises(BrokerError, match=r"must have 3 partitions; .*has 2"):
        ensure_topics(kafka_bootstrap, [existing], 3)

    assert created == [fresh]
    assert again == []
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.delete_topics([fresh])
    finally:
        admin.close()


@pytest.mark.kafka
def test_publish_events_routes_by_stream_and_partitions_by_context(
    kafka_bootstrap: str, unique_topics: TopicFactory
) -> None:
    topics = unique_topics("invocations", "billing", "traces", partitions=3)
    events: list[Event] = [
        Invocation(CTX._replace(function=f"f{i}"), T0 + i, f"r{i}", 5.0, 6.0, 256)
        for i in range(9)
    ]
    events.append(Billing(CTX, T0, T0 + 3600, 0.2, 1e5, "requests", "cur"))
    events.append(Span(CTX, T0, T0 + 1, "ab" * 16, "cd" * 8, name="handler"))
    producer = make_producer(kafka_bootstrap)
    try:
        assert publish_events(producer, events, topics) == len(events)
    finally:
        producer.close()

    received = []
    for role, expected in (("invocations", 9), ("billing", 1), ("traces", 1)):
        for record in read(kafka_bootstrap, topics[role], 3, expected):
            # The producer's partitioner and replay's must agree on a key.
            assert record.partition == partition_for(record.key, 3)
            event = decode_event(record.value, role)
            assert record.key == kafka_key(event)
            received.append(event)
    assert sorted(map(repr, received)) == sorted(map(repr, events))


@pytest.mark.kafka
def test_publish_events_without_a_topic_for_a_stream_is_an_error(
    kafka_bootstrap: str,
) -> None:
    producer = make_producer(kafka_bootstrap)
    billing = Billing(CTX, T0, T0 + 3600, 0.2, 1e5, "requests", "cur")
    try:
        with pytest.raises(BrokerError, match="no topic configured for billing"):
            publish_events(producer, [billing], {"invocations": "x"})
    finally:
        producer.close()


@pytest.mark.kafka
def test_dead_letter_copies_the_raw_bytes_and_says_why(
    kafka_bootstrap: str, unique_topics: TopicFactory
) -> None:
    dlq = unique_topics("dlq", partitions=1)["dlq"]
    raw = b"\x1f\x8b\x00 truncated gzip"
    error = ParseError("kafka:logs[0]@7", "offset 10", "truncated gzip data")
    producer = make_producer(kafka_bootstrap)
    try:
        future = dead_letter(
            producer, dlq, raw, error, "logs", partition=0, offset=7, key=b"k"
        )
        producer.flush()
        assert future.succeeded()
    finally:
        producer.close()

    [record] = read(kafka_bootstrap, dlq, 1, 1)
    assert record.value == raw
    assert record.key == b"k"
    info = dead_letter_info(record.headers)
    assert info[DLQ_REASON] == "truncated gzip data"
    assert info[DLQ_POSITION] == "offset 10"
    assert (info[DLQ_ORIGIN_TOPIC], info[DLQ_ORIGIN_OFFSET]) == ("logs", "7")


class Recorder(ConsumerRebalanceListener):  # type: ignore[misc]
    """Keeps the latest assignment a member was given."""

    def __init__(self) -> None:
        self.assigned: set[TopicPartition] = set()

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.assigned = set()

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.assigned = set(assigned)


@pytest.mark.kafka
@pytest.mark.timeout(120)
def test_group_members_get_the_same_partition_numbers_of_every_topic(
    kafka_bootstrap: str, unique_topics: TopicFactory
) -> None:
    topics = list(unique_topics("a", "b", "c", partitions=5).values())
    group = f"test-{uuid.uuid4().hex[:8]}"
    recorders = [Recorder(), Recorder()]
    done = threading.Event()

    def member(recorder: Recorder) -> None:
        consumer = make_consumer(kafka_bootstrap, group, topics, listener=recorder)
        try:
            while not done.is_set():
                consumer.poll(timeout_ms=200)
        finally:
            consumer.close()

    threads = [threading.Thread(target=member, args=(r,)) for r in recorders]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 60
        while True:
            owned = [set(r.assigned) for r in recorders]
            if all(owned) and sum(map(len, owned)) == 5 * len(topics):
                break
            assert time.monotonic() < deadline, f"no stable assignment: {owned}"
            time.sleep(0.1)
    finally:
        done.set()
        for thread in threads:
            thread.join(timeout=30)

    numbers = []
    for assignment in owned:
        per_topic = {
            t: {tp.partition for tp in assignment if tp.topic == t} for t in topics
        }
        # One member holds the same numbers of every topic: p of "a" with p of "b".
        assert len({frozenset(s) for s in per_topic.values()}) == 1
        numbers.append(per_topic[topics[0]])
    assert numbers[0].isdisjoint(numbers[1])
    assert numbers[0] | numbers[1] == set(range(5))
