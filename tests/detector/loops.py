"""Self-triggering loops through each kind of trigger, as OTLP/JSON exports.

Each builder returns the exports of ``generations`` generations of a loop
of one function ("worker"): every invocation writes ``fan_out`` times to
the resource that triggers it, and every write triggers one invocation of
the next generation. Whether the trace carries over the trigger is the
trigger's own business, as on the platform.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.detector.otlp_builder import (
    ACCOUNT,
    CLIENT,
    CONSUMER,
    REGION,
    SERVER,
    T0,
    invocation,
    lambda_export,
    new_id,
    sdk_call,
    service_export,
    span,
    trace_id,
)

Export = dict[str, Any]
Written = tuple[list[Export], list[Export], "Cause"]
# A cause of the next invocation: (trace id, span id to hang it on)
Cause = tuple[str, str]


@dataclass(frozen=True)
class Trigger:
    """How one kind of trigger looks on both sides."""

    #: (trace id, invocation span id, time) -> (spans of the write, exports
    #: of services in between, the span the next invocation hangs on)
    write: Callable[[str, str, float], Written]
    #: (cause, time, generation) -> the next invocation span
    invoke: Callable[[Cause | None, float], Export]
    linked: bool  # does the trace carry over?


def _write_only(
    service: str, operation: str, attrs: dict[str, object], kind: int = CLIENT
) -> Callable[[str, str, float], Written]:
    def write(tid: str, parent: str, at: float) -> Written:
        call = sdk_call(tid, parent, service, operation, at, attrs, kind)
        return [call], [], (tid, call["spanId"])

    return write


def _s3_invoke(bucket: str) -> Callable[[Cause | None, float], Export]:
    def invoke(cause: Cause | None, at: float) -> Export:
        attrs = {
            "faas.document.collection": bucket,
            "faas.document.operation": "insert",
            "faas.document.name": f"in/{new_id(8)}.jpg",
        }
        return invocation("worker", trace_id(), at, "datasource", attrs)

    return invoke


def _linked_invoke(
    trigger: str,
    attrs: dict[str, object],
    by_link: bool = False,
    kind: int = SERVER,
    name: str = "",
) -> Callable[[Cause | None, float], Export]:
    def invoke(cause: Cause | None, at: float) -> Export:
        tid = cause[0] if cause is not None else trace_id()
        if cause is not None and by_link:
            # Each record's trace context becomes a link, in a new trace.
            return invocation(
                "worker",
                trace_id(),
                at,
                trigger,
                attrs,
                links=[cause],
                kind=kind,
                name=name,
            )
        parent = cause[1] if cause is not None else ""
        return invocation(
            "worker", tid, at, trigger, attrs, parent=parent, kind=kind, name=name
        )

    return invoke


def _broken_invoke(
    trigger: str, attrs: dict[str, object], kind: int = SERVER, name: str = ""
) -> Callable[[Cause | None, float], Export]:
    def invoke(cause: Cause | None, at: float) -> Export:
        tid = trace_id()
        return invocation("worker", tid, at, trigger, attrs, kind=kind, name=name)

    return invoke


def _step_functions_write(
    tid: str, parent: str, at: float
) -> tuple[list[Export], list[Export], Cause]:
    machine = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:rework"
    start = sdk_call(
        tid,
        parent,
        "SFN",
        "StartExecution",
        at,
        {"aws.step_functions.state_machine.arn": machine},
    )
    execution = span(
        tid,
        new_id(),
        "rework",
        SERVER,
        at + 0.05,
        0.5,
        {"aws.step_functions.state_machine.arn": machine},
        start["spanId"],
    )
    task = span(
        tid,
        new_id(),
        "Lambda.Invoke",
        CLIENT,
        at + 0.1,
        0.4,
        {
            "rpc.system": "aws-api",
            "rpc.service": "Lambda",
            "rpc.method": "Invoke",
            "faas.invoked_name": "worker",
            "faas.invoked_provider": "aws",
        },
        execution["spanId"],
    )
    states = service_export("StepFunctions", [execution, task])
    return [start], [states], (tid, task["spanId"])


def _http_write(
    through_gateway: bool,
) -> Callable[[str, str, float], Written]:
    def write(tid: str, parent: str, at: float) -> Written:
        url = "https://api.example.com/rework"
        call = span(
            tid,
            new_id(),
            "POST",
            CLIENT,
            at,
            0.3,
            {"http.request.method": "POST", "url.full": url},
            parent,
        )
        if not through_gateway:
            return [call], [], (tid, call["spanId"])
        gateway = span(
            tid,
            new_id(),
            "/rework",
            SERVER,
            at + 0.01,
            0.28,
            {"http.request.method": "POST", "http.route": "/rework"},
            call["spanId"],
        )
        return (
            [call],
            [service_export("API Gateway", [gateway])],
            (
                tid,
                gateway["spanId"],
            ),
        )

    return write


CLICKS_ARN = f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/clicks"
#: The "jobs" queue as a sender names it, and its messages as a consumer sees them.
JOBS_QUEUE: dict[str, object] = {
    "aws.sqs.queue_url": f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/jobs",
    "messaging.system": "aws_sqs",
}
JOBS_MESSAGE: dict[str, object] = {
    "messaging.system": "aws_sqs",
    "messaging.destination.name": "jobs",
}
#: Records of the "clicks" stream as a consumer sees them.
_CLICKS_RECORD: dict[str, object] = {
    "messaging.system": "aws_kinesis",
    "messaging.destination.name": CLICKS_ARN,
}

TRIGGERS: dict[str, Trigger] = {
    "s3": Trigger(
        _write_only("S3", "PutObject", {"aws.s3.bucket": "photos"}),
        _s3_invoke("photos"),
        linked=False,
    ),
    "sqs": Trigger(
        _write_only("SQS", "SendMessage", JOBS_QUEUE),
        _linked_invoke(
            "pubsub",
            JOBS_MESSAGE,
            by_link=True,
            kind=CONSUMER,
            name="jobs process",
        ),
        linked=True,
    ),
    "sqs_broken": Trigger(
        _write_only("SQS", "SendMessage", JOBS_QUEUE),
        _broken_invoke(
            "pubsub",
            JOBS_MESSAGE,
            kind=CONSUMER,
            name="jobs process",
        ),
        linked=False,
    ),
    "eventbridge": Trigger(
        _write_only(
            "EventBridge", "PutEvents", {"messaging.destination.name": "orders-bus"}
        ),
        _linked_invoke("pubsub", {"messaging.destination.name": "orders-bus"}),
        linked=True,
    ),
    "dynamodb_streams": Trigger(
        _write_only("DynamoDB", "PutItem", {"aws.dynamodb.table_names": ["jobs"]}),
        _broken_invoke("datasource", {"faas.document.collection": "jobs"}),
        linked=False,
    ),
    "kinesis": Trigger(
        _write_only("Kinesis", "PutRecord", {"aws.kinesis.stream_name": "clicks"}),
        _linked_invoke(
            "pubsub",
            _CLICKS_RECORD,
            by_link=True,
            kind=CONSUMER,
            name="clicks process",
        ),
        linked=True,
    ),
    "kinesis_broken": Trigger(
        _write_only("Kinesis", "PutRecords", {"aws.kinesis.stream_name": "clicks"}),
        _broken_invoke(
            "pubsub",
            _CLICKS_RECORD,
            kind=CONSUMER,
            name="clicks process",
        ),
        linked=False,
    ),
    "step_functions": Trigger(
        _step_functions_write, _linked_invoke("other", {}), linked=True
    ),
    "http_api_gateway": Trigger(
        _http_write(True),
        _linked_invoke("http", {"http.request.method": "POST", "http.route": "/r"}),
        linked=True,
    ),
    "http_function_url": Trigger(
        _http_write(False),
        _linked_invoke("http", {"http.request.method": "POST", "url.path": "/"}),
        linked=True,
    ),
}


def loop(
    kind: str,
    generations: int,
    start: float = T0,
    fan_out: int = 1,
    gap_s: float = 1.5,
) -> list[Export]:
    """``generations`` generations of a loop of "worker" through ``kind``."""
    trigger = TRIGGERS[kind]
    exports: list[Export] = []
    causes: list[Cause | None] = [None]
    for generation in range(generations):
        at = start + generation * gap_s
        next_causes: list[Cause | None] = []
        for i, cause in enumerate(causes):
            inv = trigger.invoke(cause, at + 0.01 * i)
            own = [inv]
            if generation + 1 < generations:
                for j in range(fan_out):
                    written = at + 0.01 * i + 0.1 + 0.02 * j
                    spans, services, caused = trigger.write(
                        inv["traceId"], inv["spanId"], written
                    )
                    own.extend(spans)
                    exports.extend(services)
                    next_causes.append(caused)
            exports.append(lambda_export("worker", own))
        causes = next_causes
    return exports
