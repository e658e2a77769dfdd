"""Bounded retries against loops: hand-made span streams at each threshold."""

from __future__ import annotations

import pytest

from detector.alerts import CRITICAL, OPENED, WARNING, Transition
from detector.engine import DetectorConfig
from detector.evidence import (
    CHAIN,
    ITEM_FACTS,
    Evidence,
    decode_evidence,
    encode_evidence,
)
from detector.recursion import TraceStage
from detector.resources import LEARN_INVOCATIONS, ResourceGraph
from dowguard.cli import detector_config
from dowguard.config import load_settings
from ingest.events import Context, Span
from tests.detector.loops import JOBS_MESSAGE, JOBS_QUEUE, loop
from tests.detector.otlp_builder import (
    ACCOUNT,
    CONSUMER,
    PRODUCER,
    REGION,
    T0,
    invocation,
    lambda_export,
    parse,
    sdk_call,
    trace_id,
)
from tests.detector.streams import feed, feed_partitions, make_engine, opened

WORKER = Context("aws", ACCOUNT, REGION, "worker", "$LATEST")


def peak(transitions: list[Transition]) -> int:
    return max(int(str(t.evidence["hops"])) for t in transitions)


def requeues(
    messages: int, retries: int, every_s: float = 0.7, retry_s: float = 1.0
) -> list[dict[str, object]]:
    """Messages from an untraced producer, each requeued ``retries`` times.

    A fresh message has no trace to link to; each requeue is sent from the
    invocation, and its trace header becomes the next invocation's link.
    Fresh messages arrive faster than a requeue comes back, so the first
    fresh ones meet the first requeues' writes while the queue is new.
    """
    exports: list[dict[str, object]] = []
    for m in range(messages):
        cause: tuple[str, str] | None = None
        for attempt in range(retries + 1):
            at = T0 + m * every_s + attempt * retry_s
            tid = cause[0] if cause is not None else trace_id()
            inv = invocation(
                "worker",
                tid,
                at,
                "pubsub",
                JOBS_MESSAGE,
                links=[cause] if cause is not None else [],
                kind=CONSUMER,
                name="jobs process",
            )
            own = [inv]
            if attempt < retries:
                send = sdk_call(
                    tid, inv["spanId"], "SQS", "SendMessage", at + 0.1, JOBS_QUEUE
                )
                own.append(send)
                cause = (tid, send["spanId"])
            exports.append(lambda_export("worker", own))
    # Export order is time order, as a collector that batches by time sends.
    return sorted(exports, key=_first_start)


def _first_start(export: dict[str, object]) -> int:
    spans = export["resourceSpans"][0]["scopeSpans"][0]["spans"]  # type: ignore[index]
    return min(int(s["startTimeUnixNano"]) for s in spans)


def keyed_bucket_loop(
    background: int, generations: int, fan_out: int = 1
) -> list[dict[str, object]]:
    """Uploads to "photos" for ``background`` seconds (one a second, nothing
    written back), then a loop whose every write is the very object that
    triggers the next invocation (both sides name the key)."""
    exports: list[dict[str, object]] = []
    for i in range(background):
        key = f"uploads/{i}.jpg"
        trigger = {"faas.document.collection": "photos", "faas.document.name": key}
        inv = invocation("worker", trace_id(), T0 + i, "datasource", trigger)
        exports.append(lambda_export("worker", [inv]))
    keys = ["uploads/bad.jpg"]
    start = T0 + background
    for generation in range(generations):
        at = start + generation * 1.5
        written: list[str] = []
        for i, key in enumerate(keys):
            trigger = {"faas.document.collection": "photos", "faas.document.name": key}
            inv = invocation("worker", trace_id(), at + 0.01 * i, "datasource", trigger)
            own = [inv]
            for j in range(fan_out):
                out = f"{key}.{j}"
                own.append(
                    sdk_call(
                        inv["traceId"],
                        inv["spanId"],
                        "S3",
                        "PutObject",
                        at + 0.01 * i + 0.1 + 0.02 * j,
                        {"aws.s3.bucket": "photos", "aws.s3.key": out},
                    )
                )
                written.append(out)
            exports.append(lambda_export("worker", own))
        keys = written
    return exports


# Traced requeues of untraced messages


def test_requeues_of_untraced_messages_keep_their_own_depth() -> None:
    # Five requeues: a warning at the third re-entry, and never more than
    # five, however the fresh messages interleave with the requeues.
    transitions = feed(make_engine(), parse(requeues(messages=60, retries=5)))
    assert opened(transitions)
    assert {t.severity for t in transitions} == {WARNING}
    assert peak(transitions) == 5
    assert {t.evidence.get("method") for t in opened(transitions)} == {"trace"}


def test_two_requeues_of_untraced_messages_do_not_alert() -> None:
    assert feed(make_engine(), parse(requeues(messages=60, retries=2))) == []


def test_three_requeues_warn_at_the_threshold() -> None:
    transitions = feed(make_engine(), parse(requeues(messages=20, retries=3)))
    assert opened(transitions)
    assert peak(transitions) == 3


def test_six_requeues_are_critical_at_the_critical_count() -> None:
    transitions = feed(make_engine(), parse(requeues(messages=20, retries=6)))
    assert CRITICAL in {t.severity for t in transitions}
    assert peak(transitions) == 6


# Chains followed by guessing (no trace, no item key)


def test_guessed_chain_turns_critical_only_beyond_the_retry_bound() -> None:
    # An untraced queue loop: every pairing is the oldest pending write.
    nine = feed(make_engine(), parse(loop("sqs_broken", generations=10)))
    assert peak(nine) == 9
    assert {t.severity for t in nine} == {WARNING}
    ten = feed(make_engine(), parse(loop("sqs_broken", generations=11)))
    assert peak(ten) == 10
    assert CRITICAL in {t.severity for t in ten}


def test_the_retry_bound_is_a_setting() -> None:
    config = DetectorConfig(recursion_max_retries=6)
    seven = feed(make_engine(config=config), parse(loop("sqs_broken", generations=8)))
    assert CRITICAL in {t.severity for t in seven}
    six = feed(make_engine(config=config), parse(loop("sqs_broken", generations=7)))
    assert {t.severity for t in six} == {WARNING}


def test_a_guessed_fan_out_loop_is_still_critical_by_its_growth() -> None:
    transitions = feed(
        make_engine(), parse(loop("sqs_broken", generations=4, fan_out=2))
    )
    (alert,) = opened(transitions)
    assert alert.evidence["hops"] == 3
    assert alert.severity == CRITICAL


def _chain(hops: int, guessed: bool, chain: str = "root") -> Evidence:
    return Evidence(
        CHAIN, WORKER, T0 + hops, chain, hops=hops, via="jobs", guessed=guessed
    )


@pytest.mark.parametrize(
    ("hops", "guessed", "severity"),
    [
        (5, False, WARNING),
        (6, False, CRITICAL),
        (6, True, WARNING),
        (9, True, WARNING),
        (10, True, CRITICAL),
    ],
)
def test_critical_count_of_exact_and_guessed_chains(
    hops: int, guessed: bool, severity: str
) -> None:
    engine = make_engine()
    engine.process_evidence(_chain(hops, guessed), 0)
    (alert,) = engine.take_transitions()
    assert alert.severity == severity


def test_chain_evidence_says_whether_it_was_guessed() -> None:
    evidence = _chain(4, True)
    assert decode_evidence(encode_evidence(evidence), "test") == evidence
    guessed = opened(feed(make_engine(), parse(loop("sqs_broken", generations=4))))
    assert [t.evidence.get("guessed") for t in guessed] == [True]
    keyed = opened(feed(make_engine(), parse(keyed_bucket_loop(0, generations=4))))
    assert [t.evidence.get("method") for t in keyed] == ["resource"]
    assert "guessed" not in keyed[0].evidence


# Keyed pairings are the chain's own


def test_keyed_loop_on_a_busy_bucket_alerts_at_the_third_reentry() -> None:
    # A minute of uploads that write nothing back: the rates say the
    # function writes far less than once per invocation, which must not
    # cap a chain whose every write is matched by its key.
    exports = keyed_bucket_loop(background=60, generations=4)
    (alert,) = opened(feed(make_engine(), parse(exports)))
    assert alert.evidence["hops"] == 3
    assert alert.evidence["method"] == "resource"
    assert alert.severity == WARNING


def test_keyed_fan_out_loop_on_a_busy_bucket_warns_at_once_critical_at_three() -> None:
    exports = keyed_bucket_loop(background=60, generations=4, fan_out=2)
    transitions = feed(make_engine(), parse(exports))
    (alert,) = opened(transitions)
    # Two doublings in a row are already geometric: a warning at once.
    assert alert.evidence["hops"] == 2
    assert alert.severity == WARNING
    assert alert.evidence["fan_out"] == 2
    critical = [t for t in transitions if t.severity == CRITICAL]
    assert critical and critical[0].evidence["hops"] == 3


def test_keyed_loop_of_three_generations_alerts_only_when_it_fans_out() -> None:
    straight = keyed_bucket_loop(background=60, generations=3)
    assert feed(make_engine(), parse(straight)) == []
    doubling = keyed_bucket_loop(background=60, generations=3, fan_out=2)
    transitions = feed(make_engine(), parse(doubling))
    (alert,) = opened(transitions)
    assert alert.evidence["hops"] == 2
    assert {t.severity for t in transitions} == {WARNING}


# Learning whether a queue carries the trace


def _send(at: float) -> Span:
    (span,) = parse([lambda_export("w", [sdk_call(trace_id(), "", "SQS",
                    "SendMessage", at, JOBS_QUEUE, PRODUCER)])])  # fmt: skip
    return span


def test_a_queue_is_learnt_for_a_fixed_number_of_invocations() -> None:
    graph = ResourceGraph()
    graph.wrote("jobs", _send(T0))
    assert graph.learning("jobs", T0 + 1.0)
    assert not graph.learning("jobs", T0 - 1.0)  # no write before it
    assert not graph.learning("other", T0 + 1.0)
    for i in range(LEARN_INVOCATIONS - 1):
        graph.settle("jobs", [], T0 + 1.0 + i)
    assert graph.learning("jobs", T0 + 20.0)
    graph.settle("jobs", [], T0 + 20.0)
    assert not graph.learning("jobs", T0 + 20.0)


def test_held_invocations_keep_the_queue_learning_until_released() -> None:
    graph = ResourceGraph()
    graph.wrote("jobs", _send(T0))
    for i in range(LEARN_INVOCATIONS):
        graph.settle("jobs", [], T0 + i)
    assert graph.hold("jobs", T0 + 5.0) == T0 + 5.0
    assert graph.learning("jobs", T0 - 10.0)
    # Learnt already: the next one waits only for the one before it.
    later = graph.hold("jobs", T0 + 9.0)
    assert T0 + 5.0 < later < T0 + 5.001
    graph.release("jobs")
    graph.release("jobs")
    assert not graph.learning("jobs", T0 + 1.0)
    graph.release("jobs")  # one release too many changes nothing
    assert not graph.learning("jobs", T0 + 1.0)


def test_a_queue_that_carries_the_trace_pairs_nothing() -> None:
    graph = ResourceGraph()
    for i in range(LEARN_INVOCATIONS):
        graph.wrote("jobs", _send(T0 + i))
        graph.settle("jobs", [], T0 + i + 0.5)
    graph.wrote("jobs", _send(T0 + 30.0))
    assert graph.take_write("jobs", T0 + 31.0) is None


def test_the_retry_bound_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOWGUARD_RECURSION_MAX_RETRIES", "4")
    assert detector_config(load_settings(None)).recursion_max_retries == 4


def test_holding_ends_once_a_busy_queue_is_learnt() -> None:
    # An untraced queue, five messages a second, each requeued once: while
    # it is learnt its invocations wait, and then none does any more.
    exports = []
    for m in range(300):
        exports.extend(loop("sqs_broken", generations=2, start=T0 + m * 0.2))
    stage = TraceStage()
    out: list[Evidence] = []
    held: list[int] = []
    for span in sorted(parse(exports), key=lambda s: s.time):
        stage.process(span, out)
        if span.invocation_id:
            held.append(len(stage._held))
    assert max(held[:20]) > 0
    assert max(held[len(held) // 2 :]) == 0


@pytest.mark.parametrize("cut", [0.05, 0.1, 0.5])
def test_snapshot_and_restore_keep_held_invocations(cut: float) -> None:
    # Cut while the queue is being learnt: the held invocations and the
    # resource's count of them come back, and so does every alert.
    spans = parse(requeues(messages=30, retries=5))
    whole = feed(make_engine(), spans)
    split = int(len(spans) * cut)
    first = make_engine()
    head = feed(first, spans[:split], flush=False)
    if cut < 0.5:
        assert first._parts[0].traces._held
    second = make_engine()
    second.restore(0, first.snapshot(0))
    tail = feed(second, spans[split:])
    assert [t.to_json() for t in head + tail] == [t.to_json() for t in whole]
    assert {t.severity for t in whole} == {WARNING}


# A loop seen in pieces


def feed_parts(
    exports: list[dict[str, object]], partitions: list[int], items: bool = True
) -> list[Transition]:
    """Each export on its own trace partition, evidence on partition 9.

    ``items=False`` drops the item facts: the trace stages' pieces alone.
    """
    read = [
        (part, span)
        for export, part in zip(exports, partitions, strict=True)
        for span in parse([export])
    ]

    def keep(evidence: Evidence) -> bool:
        return items or evidence.kind not in ITEM_FACTS

    return feed_partitions(make_engine(), read, keep=keep)


def test_a_loop_seen_in_pieces_keeps_one_alert_while_it_runs() -> None:
    # Four hops on partition 0 open the alert; then two hops of every three
    # stay there, so partition 0 sees only single re-entries for 300 s.
    hops = 200
    parts = [0, 0, 0, 0] + [(0, 0, 1)[i % 3] for i in range(hops - 4)]
    transitions = feed_parts(keyed_bucket_loop(0, hops), parts)
    episodes = [t for t in transitions if t.event in (OPENED, "resolved")]
    assert [t.event for t in episodes] == [OPENED, "resolved"]
    last_hop = T0 + (hops - 1) * 1.5
    assert episodes[-1].at > last_hop  # not before the loop stopped
    assert int(str(episodes[0].evidence["hops"])) == 3


def test_pieces_after_a_quiet_partition_open_no_alert_of_their_own() -> None:
    # After the first piece, partition 0 sees no hop for longer than a
    # trace lives; its later single re-entries then keep nothing going.
    parts = [0, 0, 0, 0] + [1] * 100 + [(0, 0, 1)[i % 3] for i in range(30)]
    exports = keyed_bucket_loop(0, len(parts))
    transitions = feed_parts(exports, parts, items=False)
    assert [t.event for t in transitions if t.event != "updated"] == [
        OPENED,
        "resolved",
    ]
    assert transitions[-1].at < T0 + 104 * 1.5 + 120.0
    # Paired by item keys across the partitions, it is one loop throughout.
    paired = feed_parts(exports, parts)
    assert [t.event for t in paired if t.event != "updated"] == [OPENED, "resolved"]
    assert paired[-1].at > T0 + (len(parts) - 1) * 1.5
