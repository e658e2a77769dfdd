"""Loops through resources, fan-out, every trigger kind, chain cost, retries."""

from __future__ import annotations

import math
import pickle

import pytest

from detector.alerts import CRITICAL, OPENED, RESOLVED, UPDATED, WARNING, Transition
from detector.engine import RECURSIVE_TRIGGER
from detector.evidence import (
    CHAIN,
    ITEM_FACTS,
    ITEM_TRIGGERED,
    SPAN_WINDOW,
    WROTE_ITEM,
    Evidence,
    decode_evidence,
    encode_evidence,
)
from detector.recursion import TraceStage, projected_per_hour
from detector.replay import replay_events
from detector.resources import (
    MAX_EDGES_PER_RESOURCE,
    MAX_RESOURCES,
    ItemPairing,
    ResourceGraph,
    resource_name,
)
from ingest.events import Span
from tests.detector.loops import JOBS_MESSAGE, JOBS_QUEUE, TRIGGERS, loop
from tests.detector.otlp_builder import (
    CONSUMER,
    PRODUCER,
    T0,
    invocation,
    lambda_export,
    parse,
    sdk_call,
    trace_id,
)
from tests.detector.streams import (
    feed,
    feed_partitions,
    make_engine,
    no_span_cost,
    opened,
)


def bucket_export(
    function: str,
    at: float,
    trigger: dict[str, object],
    operation: str,
    call_at: float,
    call: dict[str, object],
) -> dict[str, object]:
    """An invocation triggered by a bucket event, with one S3 call, exported."""
    inv = invocation(function, trace_id(), at, "datasource", trigger)
    put = sdk_call(inv["traceId"], inv["spanId"], "S3", operation, call_at, call)
    return lambda_export(function, [inv, put])


# Resource loops with broken traces


def test_s3_loop_with_broken_traces_alerts_at_the_third_reentry() -> None:
    spans = parse(loop("s3", generations=4))
    assert len({s.trace_id for s in spans}) == 4  # no trace carries over
    transitions = feed(make_engine(), spans, flush=False)
    (alert,) = opened(transitions)
    assert alert.kind == RECURSIVE_TRIGGER
    assert alert.context.function == "worker"
    assert alert.evidence["hops"] == 3
    assert alert.evidence["method"] == "resource"
    assert alert.evidence["resources"] == ["photos"]
    assert alert.evidence["via"] == "photos"
    assert alert.severity == WARNING
    assert alert.summary == (
        "worker: its writes to photos trigger it again; re-entered 3 times"
    )
    # It opened on the fourth invocation itself, not later.
    assert alert.at == max(s.time for s in spans if s.invocation_id)


def test_s3_loop_in_export_order_is_followed() -> None:
    # Tracers export an invocation's spans when it ends, children first.
    spans = parse(loop("s3", generations=5))
    by_export = sorted(spans, key=lambda s: (s.end, -s.time))
    transitions = feed(make_engine(), by_export)
    (alert,) = opened(transitions)
    assert alert.evidence["method"] == "resource"
    assert alert.evidence["hops"] >= 3


def test_s3_loop_two_reentries_do_not_alert() -> None:
    assert feed(make_engine(), parse(loop("s3", generations=3))) == []


def test_long_s3_loop_turns_critical_and_resolves_when_it_stops() -> None:
    # The writes name no key: each pairing is a guess, critical only beyond
    # the most re-entries a bounded retry is allowed (9).
    transitions = feed(make_engine(), parse(loop("s3", generations=12)))
    kinds = [(t.event, t.severity) for t in transitions]
    assert kinds[0] == (OPENED, WARNING)
    assert ("updated", CRITICAL) in kinds
    assert kinds[-1][0] == RESOLVED


def test_broken_s3_loop_spread_over_trace_partitions_is_flagged_in_time() -> None:
    # Each generation is a new trace, so a replay (like the daemon) puts the
    # generations on different partitions; each sees part of the loop.
    spans = parse(loop("s3", generations=16))
    transitions = replay_events(make_engine(), spans)
    first = opened(list(transitions))
    assert first and first[0].evidence["method"] == "resource"
    sixteenth = sorted(s.time for s in spans if s.invocation_id)[-1]
    assert first[0].at < sixteenth  # before the platform's own loop breaker


def test_write_to_a_bucket_that_triggers_another_function_does_not_alert() -> None:
    exports = []
    for i in range(30):
        at = T0 + i * 1.5
        tid = trace_id()
        upload = invocation("uploader", tid, at, "http")
        put = sdk_call(
            tid,
            upload["spanId"],
            "S3",
            "PutObject",
            at + 0.1,
            {"aws.s3.bucket": "photos"},
        )
        exports.append(lambda_export("uploader", [upload, put]))
        # The resizer writes too, to another bucket: no cycle either way.
        resized = bucket_export(
            "resizer",
            at + 1.0,
            {"faas.document.collection": "photos"},
            "PutObject",
            at + 1.1,
            {"aws.s3.bucket": "thumbnails"},
        )
        exports.append(resized)
    assert feed(make_engine(), parse(exports)) == []


def test_java_sdk_attribute_names_name_the_resource_too() -> None:
    exports = []
    for i in range(4):
        at = T0 + i * 1.5
        put = bucket_export(
            "worker",
            at,
            {"faas.document.collection": "photos"},
            "PutObject",
            at + 0.1,
            {"aws.bucket.name": "photos", "aws.agent": "java-aws-sdk"},
        )
        exports.append(put)
    (alert,) = opened(feed(make_engine(), parse(exports)))
    assert alert.evidence["resources"] == ["photos"]


def _keyed_bucket(
    uploads: int, writes_key: str, loops: bool
) -> list[dict[str, object]]:
    """A function triggered by uploads to "photos" that writes there too.

    loops: each write is the object that triggers the next invocation (its
    key grows by a prefix per generation); else the writes go under
    ``writes_key``, which the trigger's filter leaves out, while uploads
    keep coming.
    """
    exports = []
    key = "uploads/cat.jpg"
    for i in range(uploads):
        at = T0 + i * 1.5
        if not loops:
            key = f"uploads/{i}.jpg"
        written = f"{writes_key}/{key}"
        put = bucket_export(
            "worker",
            at,
            {"faas.document.collection": "photos", "faas.document.name": key},
            "PutObject",
            at + 0.1,
            {"aws.s3.bucket": "photos", "aws.s3.key": written},
        )
        exports.append(put)
        key = written
    return exports


def test_object_keys_tell_a_loop_from_writes_the_trigger_filters_out() -> None:
    looped = opened(feed(make_engine(), parse(_keyed_bucket(4, "thumb", True))))
    assert [t.evidence["hops"] for t in looped] == [3]
    assert feed(make_engine(), parse(_keyed_bucket(30, "thumbs", False))) == []


def test_reads_of_the_triggering_bucket_are_no_writes() -> None:
    exports = []
    for i in range(10):
        at = T0 + i * 1.5
        get = bucket_export(
            "worker",
            at,
            {"faas.document.collection": "photos"},
            "GetObject",
            at + 0.1,
            {"aws.s3.bucket": "photos"},
        )
        exports.append(get)
    assert feed(make_engine(), parse(exports)) == []


def test_two_functions_through_two_buckets_are_a_loop() -> None:
    # f writes A, A triggers g, g writes B, B triggers f; no trace carries.
    exports = []
    for i in range(8):
        at = T0 + i * 1.5
        if i % 2 == 0:
            function, writes, trigger = "f", "bucket-a", "bucket-b"
        else:
            function, writes, trigger = "g", "bucket-b", "bucket-a"
        put = bucket_export(
            function,
            at,
            {"faas.document.collection": trigger},
            "CopyObject",
            at + 0.2,
            {"aws.s3.bucket": writes},
        )
        exports.append(put)
    transitions = feed(make_engine(), parse(exports))
    alerts = {t.context.function: t for t in opened(transitions)}
    assert set(alerts) == {"f", "g"}
    assert alerts["f"].evidence["method"] == "resource"
    assert set(alerts["f"].evidence["resources"]) == {"bucket-a", "bucket-b"}


# Fan-out


def test_fan_out_two_loop_warns_at_two_reentries_and_is_critical_at_three() -> None:
    transitions = feed(make_engine(), parse(loop("sqs", generations=4, fan_out=2)))
    (alert,) = opened(transitions)
    # Two doublings in a row are a loop already: no bounded retry doubles.
    assert alert.evidence["hops"] == 2
    assert alert.severity == WARNING
    assert alert.evidence["fan_out"] == 2
    worse = [t for t in transitions if t.event == UPDATED and t.severity == CRITICAL]
    assert worse[0].evidence["hops"] == 3
    assert worse[0].evidence["growth"] == pytest.approx(2.0)
    straight = opened(feed(make_engine(), parse(loop("sqs", generations=4))))
    assert straight[0].severity == WARNING
    assert straight[0].evidence["fan_out"] == 1
    assert straight[0].evidence["growth"] == 1.0


def test_fan_out_through_a_broken_trace_is_counted_too() -> None:
    transitions = feed(make_engine(), parse(loop("s3", generations=4, fan_out=2)))
    (alert,) = opened(transitions)
    assert alert.severity == CRITICAL
    assert alert.evidence["method"] == "resource"
    assert alert.evidence["fan_out"] == 2


# Mutual recursion through SNS and EventBridge


def test_mutual_recursion_through_sns_and_eventbridge() -> None:
    tid = trace_id()
    exports = []
    parent = ""
    for i in range(8):
        at = T0 + i * 0.8
        if i % 2 == 0:
            # "a" is triggered by the bus and publishes to the topic.
            inv = invocation(
                "a",
                tid,
                at,
                "pubsub",
                {"messaging.destination.name": "events-bus"},
                parent=parent,
            )
            send = sdk_call(
                tid,
                inv["spanId"],
                "SNS",
                "Publish",
                at + 0.1,
                {
                    "messaging.system": "aws.sns",
                    "aws.sns.topic.arn": "arn:aws:sns:us-east-1:111122223333:jobs",
                },
                kind=PRODUCER,
            )
            exports.append(lambda_export("a", [inv, send]))
        else:
            inv = invocation(
                "b",
                tid,
                at,
                "pubsub",
                {
                    "messaging.system": "aws.sns",
                    "aws.sns.topic.arn": "arn:aws:sns:us-east-1:111122223333:jobs",
                },
                parent=parent,
                kind=CONSUMER,
            )
            send = sdk_call(
                tid,
                inv["spanId"],
                "EventBridge",
                "PutEvents",
                at + 0.1,
                {"messaging.destination.name": "events-bus"},
            )
            exports.append(lambda_export("b", [inv, send]))
        parent = send["spanId"]
    transitions = feed(make_engine(), parse(exports))
    alerts = {t.context.function: t for t in opened(transitions)}
    assert set(alerts) == {"a", "b"}
    assert alerts["a"].evidence["hops"] == 3
    assert alerts["a"].evidence["method"] == "trace"
    assert alerts["a"].evidence["path"][-3:] == ["a", "b", "a"]
    assert alerts["b"].evidence["hops"] == 3


# Every trigger kind


@pytest.mark.parametrize("kind", sorted(TRIGGERS))
def test_each_trigger_kind_is_followed(kind: str) -> None:
    spans = parse(loop(kind, generations=4))
    transitions = feed(make_engine(), spans)
    (alert,) = opened(transitions)
    assert alert.context.function == "worker"
    assert alert.evidence["hops"] == 3
    method = "trace" if TRIGGERS[kind].linked else "resource"
    assert alert.evidence["method"] == method
    assert feed(make_engine(), parse(loop(kind, generations=3))) == []


def test_a_gateway_in_front_of_a_function_is_not_counted_as_one() -> None:
    spans = parse(loop("http_api_gateway", generations=6))
    transitions = feed(make_engine(), spans)
    assert {t.context.function for t in transitions} == {"worker"}


# Chain cost


def test_chain_cost_and_projection_by_hand() -> None:
    # Four invocations of 0.3 s, 1.5 s apart; each costs 0.3 s x 1 USD/s.
    def span_cost(span: Span) -> float:
        return (span.end - span.time) * 1.0 if span.invocation_id else 0.0

    transitions = feed(
        make_engine(span_cost=span_cost), parse(loop("sqs", generations=4))
    )
    (alert,) = opened(transitions)
    assert alert.cost_usd == pytest.approx(4 * 0.3)
    assert alert.evidence["cost_so_far_usd"] == pytest.approx(1.2)
    assert alert.evidence["chain_invocations"] == 4
    # 1.2 USD over the 4.5 s from the first invocation to the fourth, going
    # on at the same pace (growth 1): 1.2 / 4.5 * 3600 = 960 USD per hour.
    assert alert.evidence["projected_usd_per_hour"] == pytest.approx(960.0)


def test_chain_cost_counts_every_branch_of_a_fan_out() -> None:
    def span_cost(span: Span) -> float:
        return 0.01 if span.invocation_id else 0.0

    spans = parse(loop("sqs", generations=4, fan_out=2))
    transitions = feed(make_engine(span_cost=span_cost), spans)
    (alert,) = opened(transitions)
    # 1 + 2 invocations, then two of the third generation: the second one
    # shows two doublings in a row.
    assert alert.cost_usd == pytest.approx(0.05)
    worse = [t for t in transitions if t.event == UPDATED and t.evidence["hops"] == 3]
    # 1 + 2 + 4 invocations, then the first of the fourth generation.
    assert worse[0].cost_usd == pytest.approx(0.08)


def test_projection_grows_geometrically() -> None:
    straight = projected_per_hour(1.0, 10.0, 5, 1.0)
    assert straight == pytest.approx(360.0)
    # Two generations of 5 s each per 10 s, doubling: an hour is 720 of them.
    doubling = projected_per_hour(1.0, 10.0, 2, 2.0)
    assert doubling == 1e9  # capped
    mild = projected_per_hour(1.0, 3600.0, 1, 1.5)
    # One generation per hour: the next one costs 1.5 times the last.
    assert mild == pytest.approx(1.5)
    assert projected_per_hour(0.0, 10.0, 3, 2.0) == 0.0


# Bounded retries


def _retry_exports(
    messages: int, retries: int, linked: bool, batch: int = 10, every_s: float = 7.0
) -> list[dict[str, object]]:
    """``messages`` messages, each requeued by the function ``retries`` times.

    Messages arrive in batches of ``batch`` every ``every_s`` seconds, as
    a queue poller hands them over; a retry is requeued with a 2 s delay.
    Linked: the messages come from a traced producer and every message's
    trace header becomes a link. Not linked: no trace crosses the queue.
    """
    exports: list[dict[str, object]] = []
    for m in range(messages):
        cause: tuple[str, str] | None = None
        if linked:
            at = T0 + (m // batch) * every_s + (m % batch) * 0.01 - 0.3
            tid = trace_id()
            api = invocation("api", tid, at, "http")
            send = sdk_call(
                tid,
                api["spanId"],
                "SQS",
                "SendMessage",
                at + 0.05,
                JOBS_QUEUE,
            )
            exports.append(lambda_export("api", [api, send]))
            cause = (tid, send["spanId"])
        for attempt in range(retries + 1):
            at = T0 + (m // batch) * every_s + (m % batch) * 0.01 + attempt * 2.0
            tid = trace_id()
            links = [cause] if linked and cause is not None else []
            inv = invocation(
                "worker",
                tid,
                at,
                "pubsub",
                JOBS_MESSAGE,
                links=links,
                kind=CONSUMER,
                name="jobs process",
            )
            own = [inv]
            if attempt < retries:
                send = sdk_call(
                    tid,
                    inv["spanId"],
                    "SQS",
                    "SendMessage",
                    at + 0.1,
                    JOBS_QUEUE,
                )
                own.append(send)
                cause = (tid, send["spanId"])
            exports.append(lambda_export("worker", own))
    return exports


@pytest.mark.parametrize("linked", [True, False])
def test_bounded_retry_below_the_threshold_does_not_alert(linked: bool) -> None:
    spans = parse(_retry_exports(messages=200, retries=2, linked=linked))
    assert feed(make_engine(), spans) == []


def test_bounded_retry_at_the_threshold_warns_but_never_turns_critical() -> None:
    spans = parse(_retry_exports(messages=20, retries=4, linked=True))
    transitions = feed(make_engine(), spans)
    assert opened(transitions)
    assert {t.severity for t in transitions} == {WARNING}
    assert max(int(t.evidence["hops"]) for t in transitions) == 4  # type: ignore[call-overload]


# Memory and checkpoints


def test_edge_tables_stay_bounded_and_idle_resources_expire() -> None:
    stage = TraceStage(span_cost=no_span_cost)
    out: list[Evidence] = []
    exports = []
    for i in range(MAX_RESOURCES + 1000):
        at = T0 + i * 0.01
        inv = invocation("worker", trace_id(), at, "http")
        put = sdk_call(
            inv["traceId"],
            inv["spanId"],
            "S3",
            "PutObject",
            at + 0.001,
            {"aws.s3.bucket": f"bucket-{i}"},
        )
        exports.append(lambda_export("worker", [inv, put]))
    for span in parse(exports):
        stage.process(span, out)
    assert stage.resources.tracked_resources == MAX_RESOURCES
    assert stage.resources.evicted == 1000
    # An hour later, one more span moves the watermark: all of them expire.
    later = invocation("worker", trace_id(), T0 + 3600, "http")
    late = parse([lambda_export("worker", [later])])
    stage.process(late[0], out)
    assert stage.resources.tracked_resources == 0
    assert stage.tracked_traces == 1
    assert stage.tracked_chains == 1
    # No loop: only the sketches of the invocations' windows were sent on.
    assert [ev for ev in out if ev.kind != SPAN_WINDOW] == []


def test_writers_of_one_resource_are_bounded_and_quiet_ones_make_room() -> None:
    graph = ResourceGraph(idle_s=300.0)
    exports = [
        lambda_export(
            f"writer-{i}",
            [sdk_call(trace_id(), "", "S3", "PutObject", T0, {"aws.s3.bucket": "b"})],
        )
        for i in range(MAX_EDGES_PER_RESOURCE + 8)
    ]
    for span in parse(exports):
        graph.wrote("b", span)
    assert graph.edges() == MAX_EDGES_PER_RESOURCE
    assert graph.dropped_edges == 8
    later = sdk_call(
        trace_id(), "", "S3", "PutObject", T0 + 400, {"aws.s3.bucket": "b"}
    )
    (span,) = parse([lambda_export("newcomer", [later])])
    graph.wrote("b", span)
    assert graph.edges() == 1  # the quiet writers were dropped for it
    assert graph.dropped_edges == 8


def test_resource_names_meet_across_arns_urls_and_names() -> None:
    assert resource_name("arn:aws:sqs:us-east-1:1:jobs") == "jobs"
    assert resource_name("https://sqs.us-east-1.amazonaws.com/1/jobs") == "jobs"
    assert resource_name("arn:aws:s3:::photos") == "photos"
    assert resource_name("arn:aws:sns:us-east-1:1:topic") == "topic"
    stream = "arn:aws:dynamodb:us-east-1:1:table/jobs/stream/2026-01-01T00:00:00.000"
    assert resource_name(stream) == "jobs"
    assert resource_name("arn:aws:kinesis:us-east-1:1:stream/clicks") == "clicks"
    assert resource_name("arn:aws:events:us-east-1:1:event-bus/orders") == "orders"
    assert resource_name("arn:aws:states:us-east-1:1:stateMachine:rework") == "rework"


def test_pending_writes_expire_after_the_trigger_latency() -> None:
    graph = ResourceGraph(latency_s=30.0)
    put = sdk_call(trace_id(), "", "S3", "PutObject", T0, {"aws.s3.bucket": "b"})
    (span,) = parse([lambda_export("w", [put])])
    graph.wrote("b", span)
    assert graph.take_write("b", T0 + 31.0) is None
    graph.wrote("b", span)
    assert graph.take_write("b", T0 - 1.0) is None  # a write after cannot cause
    taken = graph.take_write("b", T0 + 1.0)
    assert taken is not None
    assert taken.ref == (span.trace_id, span.span_id)
    assert not taken.by_key  # the write names no key: it is the oldest one


@pytest.mark.parametrize("cut", [0.25, 0.5, 0.8])
def test_snapshot_and_restore_keep_the_resource_edges(cut: float) -> None:
    spans = parse(loop("s3", generations=9))
    whole = feed(make_engine(), spans)
    split = int(len(spans) * cut)
    first = make_engine()
    head = feed(first, spans[:split], flush=False)
    second = make_engine()
    second.restore(0, first.snapshot(0))
    assert second._parts[0].traces.resources.tracked_resources == 1
    tail = feed(second, spans[split:])
    assert [t.to_json() for t in head + tail] == [t.to_json() for t in whole]
    assert any(t.evidence.get("method") == "resource" for t in whole)


def test_chain_evidence_round_trips_with_its_new_fields() -> None:
    spans = parse(loop("s3", generations=4, fan_out=2))
    stage = TraceStage(span_cost=no_span_cost)
    out: list[Evidence] = []
    for span in spans:
        stage.process(span, out)
    chain = next(e for e in out if e.kind == CHAIN)
    assert chain.resources == ("photos",)
    assert decode_evidence(encode_evidence(chain), "t") == chain
    assert math.isfinite(chain.projected_usd_per_hour)


# A fan-out loop through a bucket, split over trace partitions


def _fan_out_bucket_loop(
    generations: int, fan_out: int = 2
) -> list[tuple[int, dict[str, object]]]:
    """A keyed loop through "photos": every invocation writes ``fan_out``
    objects back, each the one that triggers an invocation of the next
    generation. Each export comes with the trace partition it is read on:
    never its writer's, as where a daemon reads every new trace (an S3
    notification starts one) on a partition of its own hash."""
    out: list[tuple[int, dict[str, object]]] = []
    keys = ["uploads/big.tif"]
    for generation in range(generations):
        at = T0 + generation * 1.2
        written: list[str] = []
        for i, key in enumerate(keys):
            start = at + 0.01 * i
            trigger = {"faas.document.collection": "photos", "faas.document.name": key}
            inv = invocation("tiler", trace_id(), start, "datasource", trigger)
            spans = [inv]
            for j in range(fan_out if generation < generations - 1 else 0):
                item = f"tiles/{generation}-{i}-{j}.tif"
                call = {"aws.s3.bucket": "photos", "aws.s3.key": item}
                put = sdk_call(
                    inv["traceId"], inv["spanId"], "S3", "PutObject",
                    start + 0.1 + 0.02 * j, call,
                )  # fmt: skip
                spans.append(put)
                written.append(item)
            out.append(((generation + i) % 3, lambda_export("tiler", spans)))
        keys = written
    return out


def _feed_partitions(
    exports: list[tuple[int, dict[str, object]]], order: list[int] | None = None
) -> list[Transition]:
    """Every trace partition's spans in time order; the partitions read in
    step (``order`` None) or one after another in ``order``. Evidence goes
    to the context's partition 9."""
    if order is None:
        by_part = {id(e): p for p, e in exports}
        spans = [(by_part[id(e)], s) for _, e in exports for s in parse([e])]
        read = sorted(spans, key=lambda ps: ps[1].time)
    else:
        read = [(p, s) for p in order for s in parse(e for q, e in exports if q == p)]
    return feed_partitions(make_engine(), read)


def test_fan_out_bucket_loop_split_over_partitions_is_critical_at_three() -> None:
    exports = _fan_out_bucket_loop(generations=4)
    # No writer and invocation it triggered share a partition, so no
    # partition sees one re-entry of its own.
    stages = [TraceStage() for _ in range(3)]
    local: list[Evidence] = []
    for part, export in exports:
        for span in parse([export]):
            stages[part].process(span, local)
    assert not [e for e in local if e.kind == CHAIN]

    transitions = _feed_partitions(exports)
    (alert,) = opened(transitions)
    assert alert.context.function == "tiler"
    assert alert.evidence["method"] == "resource"
    assert alert.evidence["via"] == "photos"
    # Two doublings warn; the third re-entry of a doubling loop is critical.
    assert alert.evidence["hops"] == 2
    assert alert.severity == WARNING
    # It opens on the second invocation of the second generation, which
    # shows its writer fanned out, and starts with the first.
    assert alert.at == pytest.approx(T0 + 2 * 1.2 + 0.01, abs=1e-3)
    assert transitions[-1].starts_at == pytest.approx(T0 + 2 * 1.2, abs=1e-3)
    critical = [t for t in transitions if t.severity == CRITICAL]
    assert critical[0].evidence["hops"] == 3
    assert critical[0].evidence["growth"] == pytest.approx(2.0)
    assert critical[0].evidence["fan_out"] == 2
    assert transitions[-1].event == RESOLVED


def test_two_reentries_of_a_split_straight_bucket_loop_do_not_alert() -> None:
    exports = _fan_out_bucket_loop(generations=3, fan_out=1)
    assert _feed_partitions(exports) == []


def test_a_split_fan_out_bucket_loop_that_stops_at_two_reentries_warns() -> None:
    # A bug live for a few seconds: one upload doubles twice, then the
    # writes stop; uploads that write nothing come before and after.
    exports = _fan_out_bucket_loop(generations=3)
    for i in range(40):
        trigger = {"faas.document.collection": "photos", "faas.document.name": f"u{i}"}
        inv = invocation(
            "tiler", trace_id(), T0 - 30.0 + 1.5 * i, "datasource", trigger
        )
        exports.append((i % 3, lambda_export("tiler", [inv])))
    transitions = _feed_partitions(exports)
    (alert,) = opened(transitions)
    assert alert.evidence["hops"] == 2
    assert alert.evidence["fan_out"] == 2
    assert {t.severity for t in transitions} == {WARNING}
    assert transitions[-1].event == RESOLVED


@pytest.mark.parametrize("late", [False, True])
@pytest.mark.parametrize("order", [[0, 1, 2], [2, 1, 0], [1, 2, 0], [0, 2, 1]])
def test_split_bucket_loop_alerts_alike_whatever_partition_is_read_first(
    order: list[int], late: bool
) -> None:
    exports = _fan_out_bucket_loop(generations=5)
    if late:
        # A later upload on each partition: a partition read to its end has
        # closed its traces of the loop before the others are read at all.
        for part in range(3):
            trigger = {
                "faas.document.collection": "photos",
                "faas.document.name": f"u{part}",
            }
            inv = invocation("tiler", trace_id(), T0 + 400.0, "datasource", trigger)
            exports.append((part, lambda_export("tiler", [inv])))
    expected = _feed_partitions(exports)
    got = _feed_partitions(exports, order)

    def found(ts: list[Transition]) -> tuple[object, ...]:
        # The earliest start, the most re-entries and the worst severity.
        return (
            min(t.starts_at for t in ts),
            max(int(str(t.evidence["hops"])) for t in ts),
            {t.severity for t in ts} >= {CRITICAL},
        )

    assert found(got) == found(expected)
    assert found(expected)[1:] == (4, True)
    if not late:
        # One episode, ending alike.
        assert len(opened(got)) == len(opened(expected)) == 1
        assert got[-1].event == expected[-1].event == RESOLVED
        assert got[-1].at == expected[-1].at


def test_item_pairing_ignores_redelivered_facts_and_forgets_idle_items() -> None:
    exports = _fan_out_bucket_loop(generations=3)
    stage = TraceStage()
    facts: list[Evidence] = []
    for _, export in exports:
        for span in parse([export]):
            stage.process(span, facts)
    items = [e for e in facts if e.kind in ITEM_FACTS]
    # One fact per invocation and one per write back: 7 and 6.
    assert sorted(e.kind for e in items) == [ITEM_TRIGGERED] * 7 + [WROTE_ITEM] * 6
    # As the evidence topic carries them.
    assert [decode_evidence(encode_evidence(e), "t") for e in items] == items
    pairing = ItemPairing()
    made = [m for e in items for m in pairing.take(e)]
    again = [m for e in items for m in pairing.take(e)]
    # Sent when the second generation shows its doubling, and again for
    # its first invocation, which showed it too once its sibling came.
    chains = [m for m in made if m.kind == CHAIN]
    assert [m.hops for m in chains] == [2, 2]
    assert chains[1].time < chains[0].time
    assert again == []
    assert pairing.tracked_items == 7
    later = Evidence(
        ITEM_TRIGGERED, items[0].context, T0 + 1000.0, "late", via="photos",
        item="uploads/other.tif",
    )  # fmt: skip
    pairing.take(later)
    assert pairing.tracked_items == 1


def test_a_snapshot_from_before_item_pairing_restores_with_an_empty_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exports = _fan_out_bucket_loop(generations=4)
    spans = [s for _, e in exports for s in parse([e])]
    first = make_engine()
    feed(first, spans[:3], flush=False)
    # The layout of version 4: the trace stage's state has no item pairing.
    plain = TraceStage.__getstate__
    monkeypatch.setattr(
        TraceStage,
        "__getstate__",
        lambda self: {k: v for k, v in plain(self).items() if k != "items"},
    )
    old = pickle.dumps((4, first._parts[0]), protocol=5)
    monkeypatch.undo()
    second = make_engine()
    second.restore(0, old)
    assert second._parts[0].traces.items.tracked_items == 0
    assert opened(feed(second, spans[3:]))
    with pytest.raises(ValueError, match="snapshot version 3"):
        second.restore(0, pickle.dumps((3, first._parts[0]), protocol=5))


def test_item_facts_of_writes_exported_before_their_invocation_are_sent() -> None:
    # Tracers export an invocation's spans when it ends, children first.
    exports = _fan_out_bucket_loop(generations=3)
    stage = TraceStage()
    facts: list[Evidence] = []
    spans = [s for _, e in exports for s in parse([e])]
    for span in sorted(spans, key=lambda s: (s.end, -s.time)):
        stage.process(span, facts)
    wrote = [e for e in facts if e.kind == WROTE_ITEM]
    assert sorted(e.item for e in wrote) == sorted(
        s.resource_key for s in spans if not s.invocation_id
    )
    assert {e.cause_item for e in wrote} == {
        "uploads/big.tif",
        "tiles/0-0-0.tif",
        "tiles/0-0-1.tif",
    }
