"""The recording generator: deterministic, and valid in each real format."""

from __future__ import annotations

import argparse
import base64
import csv
import gzip
import io
import itertools
import json
import re
from collections import Counter, defaultdict
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from dowguard import simulate
from dowguard.errors import ConfigError
from dowguard.simulate import (
    CUR_COLUMNS,
    LoopScenario,
    Recording,
    SimConfig,
    SpikeScenario,
)
from ingest.events import Invocation, InvocationStart

REPORT = re.compile(
    r"^REPORT RequestId: (?P<rid>[0-9a-f-]{36})\tDuration: (?P<dur>\d+\.\d\d) ms\t"
    r"Billed Duration: (?P<billed>\d+) ms\tMemory Size: (?P<mem>\d+) MB\t"
    r"Max Memory Used: \d+ MB\t(?:Init Duration: (?P<init>\d+\.\d\d) ms\t)?"
    r"(?:\nXRAY TraceId: 1-(?P<t1>[0-9a-f]{8})-(?P<t2>[0-9a-f]{24})\t"
    r"SegmentId: (?P<seg>[0-9a-f]{16})\tSampled: (?:true|false)\t)?\n$"
)
UUID = re.compile(
    r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
)


def small_config(seed: int = 3) -> SimConfig:
    """Four minutes with the loop bug live in the second and a short spike."""
    return SimConfig(
        seed=seed,
        minutes=4.0,
        loop=LoopScenario(onset_s=60.0, end_s=150.0),
        spike=SpikeScenario(onset_s=120.0, duration_s=60.0, multiplier=20.0),
    )


@pytest.fixture(scope="module")
def recording() -> Recording:
    return simulate.simulate(small_config())


def payloads(rec: Recording) -> list[dict[str, Any]]:
    out = []
    for line in rec.log_lines:
        obj = json.loads(line)
        if "awslogs" in obj:
            obj = json.loads(gzip.decompress(base64.b64decode(obj["awslogs"]["data"])))
        out.append(obj)
    return out


def spans(rec: Recording) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(resource attributes, span) of every span of every export."""
    out = []
    for line in rec.trace_lines:
        for rs in json.loads(line)["resourceSpans"]:
            resource = attrs(rs["resource"])
            for scope in rs["scopeSpans"]:
                out += [(resource, span) for span in scope["spans"]]
    return out


def attrs(span: dict[str, Any]) -> dict[str, Any]:
    return {
        a["key"]: next(iter(a["value"].values())) for a in span.get("attributes", [])
    }


def test_same_seed_writes_the_same_bytes(tmp_path: Path) -> None:
    first = simulate.write_recording(simulate.simulate(small_config()), tmp_path / "a")
    second = simulate.write_recording(simulate.simulate(small_config()), tmp_path / "b")
    assert first.keys() == second.keys()
    for name in first:
        assert first[name].read_bytes() == second[name].read_bytes(), name


def test_another_seed_writes_other_traffic(recording: Recording) -> None:
    other = simulate.simulate(small_config(seed=4))
    assert other.log_lines != recording.log_lines


def test_log_payloads_are_cloudwatch_subscription_payloads(
    recording: Recording,
) -> None:
    wrapped = sum(1 for line in recording.log_lines if line.startswith(b'{"awslogs"'))
    assert 0 < wrapped < len(recording.log_lines)
    for payload in payloads(recording):
        assert payload["messageType"] == "DATA_MESSAGE"
        assert re.fullmatch(r"\d{12}", payload["owner"])
        assert payload["logGroup"].startswith("/aws/lambda/")
        assert re.fullmatch(
            r"\d{4}/\d\d/\d\d/\[\$LATEST\][0-9a-f]{32}", payload["logStream"]
        )
        stamps = [e["timestamp"] for e in payload["logEvents"]]
        assert stamps == sorted(stamps)
        # One payload holds about one second of one stream's events.
        assert stamps[-1] - stamps[0] < 1000
        for event in payload["logEvents"]:
            assert re.fullmatch(r"\d{56}", event["id"])


def test_report_lines_are_well_formed_and_bill_init(recording: Recording) -> None:
    reports = 0
    for payload in payloads(recording):
        for event in payload["logEvents"]:
            message = event["message"]
            if not message.startswith("REPORT"):
                continue
            reports += 1
            match = REPORT.match(message)
            assert match, message
            assert UUID.match(match["rid"])
            init = float(match["init"] or 0)
            # Since 2025-08-01 INIT is inside Billed Duration.
            assert int(match["billed"]) == pytest.approx(
                float(match["dur"]) + init, abs=1.01
            )
    assert reports > 100


def test_json_format_functions_write_platform_reports(recording: Recording) -> None:
    reports = [
        json.loads(e["message"])
        for p in payloads(recording)
        for e in p["logEvents"]
        if e["message"].startswith("{") and '"platform.report"' in e["message"]
    ]
    assert reports
    for report in reports:
        record = report["record"]
        assert record["status"] in ("success", "error")
        assert record["metrics"]["billedDurationMs"] >= record["metrics"]["durationMs"]
        assert UUID.match(record["requestId"])


def test_xray_trace_id_of_report_is_the_otlp_trace_id(recording: Recording) -> None:
    xray: dict[str, str] = {}
    for payload in payloads(recording):
        for event in payload["logEvents"]:
            match = REPORT.match(event["message"])
            if match and match["t1"]:
                xray[match["rid"]] = match["t1"] + match["t2"]
            if '"platform.report"' in event["message"]:
                record = json.loads(event["message"])["record"]
                if "tracing" in record:
                    root = record["tracing"]["value"].split(";")[0]
                    xray[record["requestId"]] = root[7:].replace("-", "")
    invocation_spans = {
        attrs(span)["faas.invocation_id"]: span
        for _, span in spans(recording)
        if "faas.invocation_id" in attrs(span)
    }
    assert len(invocation_spans) > 50
    for request_id, span in invocation_spans.items():
        assert xray[request_id] == span["traceId"]


def test_span_ids_are_hex_of_the_right_length(recording: Recording) -> None:
    for _, span in spans(recording):
        assert re.fullmatch(r"[0-9a-f]{32}", span["traceId"])
        assert re.fullmatch(r"[0-9a-f]{16}", span["spanId"])
        assert re.fullmatch(r"(?:[0-9a-f]{16})?", span["parentSpanId"])
        assert int(span["endTimeUnixNano"]) >= int(span["startTimeUnixNano"])


def test_sqs_consumer_span_has_the_shape_the_trace_stage_relies_on(
    recording: Recording,
) -> None:
    all_spans = spans(recording)
    by_id = {span["spanId"]: (res, span) for res, span in all_spans}
    consumers = [(r, s) for r, s in all_spans if s["kind"] == 5]
    assert consumers
    for resource, span in consumers:
        a = attrs(span)
        queue = a["messaging.destination.name"]
        assert span["name"] == f"{queue} process"
        assert a["faas.trigger"] == "pubsub"
        assert a["messaging.system"] == "aws_sqs"
        assert re.fullmatch(
            rf"arn:aws:lambda:[a-z0-9-]+:\d{{12}}:function:{resource['faas.name']}"
            r":\$LATEST",
            a["cloud.resource_id"],
        )
        assert resource["cloud.platform"] == "aws_lambda"
        assert resource["service.name"] == resource["faas.name"]
        assert int(resource["faas.max_memory"]) % (1024 * 1024) == 0
        # Parent and link are the PRODUCER span that sent the message, in
        # the same trace (X-Ray keeps Root across the hop).
        _, producer = by_id[span["parentSpanId"]]
        assert producer["kind"] == 4
        assert producer["name"] == f"{queue} send"
        assert attrs(producer)["messaging.destination.name"] == queue
        assert producer["traceId"] == span["traceId"]
        assert span["links"] == [
            {"traceId": producer["traceId"], "spanId": producer["spanId"]}
        ]


def test_producer_spans_are_children_of_their_invocation_span(
    recording: Recording,
) -> None:
    by_id = {span["spanId"]: span for _, span in spans(recording)}
    for _, span in spans(recording):
        if span["kind"] in (3, 4):
            parent = by_id[span["parentSpanId"]]
            assert "faas.invocation_id" in attrs(parent)
            if span["kind"] == 3:
                assert attrs(span)["faas.invoked_name"]


def test_loop_chains_stop_at_lambdas_limit(recording: Recording) -> None:
    label = next(
        s for s in recording.labels["scenarios"] if s["kind"] == "recursive_loop"
    )
    intensity = label["intensity"]
    assert intensity["max_hops"] == 16
    assert intensity["dropped_by_lambda"] > 0
    assert (
        0.2 <= intensity["hop_interval_s"]["min"] <= intensity["hop_interval_s"]["max"]
    )
    assert intensity["hop_interval_s"]["max"] <= 2.0
    # The trace of one chain holds one "orders process" span per hop.
    per_trace = Counter(
        span["traceId"]
        for _, span in spans(recording)
        if span["name"] == "orders process"
    )
    assert max(per_trace.values()) == 16
    dropped = [
        json.loads(line)
        for line in recording.metric_lines
        if b"RecursiveInvocationsDropped" in line
    ]
    assert sum(d["value"]["sum"] for d in dropped) == intensity["dropped_by_lambda"]


def test_metric_stream_counts_match_the_logs(recording: Recording) -> None:
    records = [json.loads(line) for line in recording.metric_lines]
    invocations: Counter[str] = Counter()
    for record in records:
        assert record["timestamp"] % 60_000 == 0
        assert set(record["value"]) == {"max", "min", "sum", "count"}
        if record["metric_name"] == "Invocations" and record["dimensions"]:
            invocations[record["dimensions"]["FunctionName"]] += int(
                record["value"]["sum"]
            )
    expected = {
        f["context"]["function"]: f["invocations"]
        for f in recording.labels["functions"]
        if f["invocations"]
    }
    assert dict(invocations) == expected
    billing = [r for r in records if r["namespace"] == "AWS/Billing"]
    assert billing and all(r["metric_name"] == "EstimatedCharges" for r in billing)
    lam = [r["value"]["max"] for r in billing if "ServiceName" in r["dimensions"]]
    assert lam == sorted(lam)
    times = [r["timestamp"] for r in records]
    assert times == sorted(times)


def test_cur_rows_have_the_columns_and_sum_to_the_simulated_cost(
    recording: Recording,
) -> None:
    text = simulate._cur_bytes(recording.cur_rows)
    reader = csv.DictReader(io.StringIO(text.decode()))
    assert tuple(reader.fieldnames or ()) == CUR_COLUMNS
    rows = list(reader)
    lam = [r for r in rows if r["line_item_product_code"] == "AWSLambda"]
    for row in lam:
        assert row["line_item_usage_start_date"].endswith(":00:00Z")
        assert row["line_item_resource_id"].startswith("arn:aws:lambda:")
        assert re.fullmatch(r"[a-z2-7]{52}", row["identity_line_item_id"])
        amount = float(row["line_item_usage_amount"])
        cost = float(row["line_item_unblended_cost"])
        assert cost == pytest.approx(
            amount * float(row["line_item_unblended_rate"]), rel=1e-6, abs=1e-9
        )
    suffixes = {re.sub(r"^[A-Z]+\d?-", "", r["line_item_usage_type"]) for r in lam}
    assert {"Request", "Lambda-GB-Second", "Lambda-GB-Second-ARM"} <= suffixes
    assert any(r["line_item_usage_type"] == "EU-Request-ARM" for r in lam)
    usage_cost = sum(
        float(r["line_item_unblended_cost"])
        for r in lam
        if "Provisioned-Concurrency" not in r["line_item_usage_type"]
    )
    simulated = sum(f["cost_usd"] for f in recording.labels["functions"])
    assert usage_cost == pytest.approx(simulated, rel=1e-4)


def test_labels_name_each_scenario_with_its_window(recording: Recording) -> None:
    labels = recording.labels
    start = labels["start"]
    spike = next(s for s in labels["scenarios"] if s["kind"] == "cost_spike")
    assert spike["context"]["function"] == "image-resize"
    assert spike["onset"] == pytest.approx(start + 120.0)
    assert spike["end"] == pytest.approx(start + 180.0)
    assert spike["intensity"]["spike_per_s"] > 5 * spike["intensity"]["baseline_per_s"]
    loop = next(s for s in labels["scenarios"] if s["kind"] == "recursive_loop")
    assert loop["context"]["function"] == "order-processor"
    assert start + 60.0 <= loop["onset"] < loop["end"] <= labels["end"]
    alerting = {
        f["context"]["function"] for f in labels["functions"] if f["expect_alert"]
    }
    assert alerting == {"image-resize", "order-processor"}


def test_no_scenario_means_no_loop_and_no_spike() -> None:
    quiet = simulate.simulate(replace(small_config(), loop=None, spike=None, minutes=2))
    assert quiet.labels["scenarios"] == []
    assert not any(b"RecursiveInvocationsDropped" in m for m in quiet.metric_lines)


def test_init_before_august_2025_is_not_billed() -> None:
    old = simulate.config_for(
        minutes=1, scenarios=("none",), start="2025-01-15T10:00:00Z"
    )
    rec = simulate.simulate(old)
    cold = 0
    for payload in payloads(rec):
        for event in payload["logEvents"]:
            match = REPORT.match(event["message"])
            if match and match["init"]:
                cold += 1
                assert int(match["billed"]) == pytest.approx(
                    float(match["dur"]), abs=1.01
                )
    assert cold > 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"minutes": 0.0}, "--minutes must be positive"),
        ({"loop": LoopScenario("email-sender", onset_s=60.0)}, "must read queue"),
        (
            {"spike": SpikeScenario("order-processor", onset_s=60.0)},
            "arrivals of its own",
        ),
    ],
)
def test_bad_configuration_is_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        simulate.simulate(replace(small_config(), **change))


def test_cli_writes_the_files_and_labels(tmp_path: Path, capsys: Any) -> None:
    parser = argparse.ArgumentParser()
    simulate.register(parser.add_subparsers())
    args = parser.parse_args(
        [
            "simulate",
            str(tmp_path),
            "--seed",
            "9",
            "--minutes",
            "1",
            "--scenario",
            "none",
        ]
    )
    assert args.func(args) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(
        [
            simulate.LOGS_FILE,
            simulate.TRACES_FILE,
            simulate.METRICS_FILE,
            simulate.CUR_FILE,
            simulate.LABELS_FILE,
        ]
    )
    labels = json.loads((tmp_path / simulate.LABELS_FILE).read_text())
    assert labels["seed"] == 9
    for name in (simulate.LOGS_FILE, simulate.TRACES_FILE, simulate.METRICS_FILE):
        for line in gzip.decompress((tmp_path / name).read_bytes()).splitlines():
            json.loads(line)
    # The gzip headers carry no time, so regenerating gives the same bytes.
    head = (tmp_path / simulate.LOGS_FILE).read_bytes()[:10]
    assert head[4:8] == b"\0\0\0\0"
    assert "wrote" in capsys.readouterr().out


def test_small_recording_parses_with_the_ingest_parsers(recording: Recording) -> None:
    from ingest.formats.cloudwatch import parse_cloudwatch
    from ingest.formats.cur import parse_cur_csv
    from ingest.formats.metric_stream import parse_metric_stream
    from ingest.formats.otlp import parse_otlp

    events = []
    for i, line in enumerate(recording.log_lines):
        events += parse_cloudwatch(line, f"logs:{i}")
    invocations = [e for e in events if isinstance(e, Invocation)]
    per_function = Counter(inv.context.function for inv in invocations)
    for fn in recording.labels["functions"]:
        assert per_function[fn["context"]["function"]] == fn["invocations"]
    # Every call is logged when it starts too, before its REPORT.
    starts = [e for e in events if isinstance(e, InvocationStart)]
    assert Counter(s.context.function for s in starts) == per_function
    regions = defaultdict(set)
    for inv in invocations:
        regions[inv.context.account].add(inv.context.region)
    assert "unknown" not in set().union(*regions.values())
    for i, line in enumerate(recording.trace_lines):
        assert parse_otlp(line, f"traces:{i}")
    assert parse_metric_stream(b"\n".join(recording.metric_lines), "metrics")
    assert parse_cur_csv(simulate._cur_bytes(recording.cur_rows), "cur")


BUNDLED = Path(__file__).resolve().parent.parent / "data" / "recording"


@pytest.fixture(scope="module")
def bundled_labels() -> dict[str, Any]:
    labels: dict[str, Any] = json.loads((BUNDLED / simulate.LABELS_FILE).read_text())
    return labels


def test_bundled_recording_parses_cleanly_and_matches_its_labels(
    bundled_labels: dict[str, Any],
) -> None:
    from ingest.events import Invocation, Span
    from ingest.parse import read_path

    errors: list[Exception] = []
    events = list(read_path(BUNDLED, errors.append))
    assert errors == []
    invocations = [e for e in events if isinstance(e, Invocation)]
    per_function = Counter(inv.context.function for inv in invocations)
    for fn in bundled_labels["functions"]:
        assert per_function[fn["context"]["function"]] == fn["invocations"]

    # The spike function's rate jumps at least twentyfold at the onset.
    spike = next(s for s in bundled_labels["scenarios"] if s["kind"] == "cost_spike")
    name, onset, end = spike["context"]["function"], spike["onset"], spike["end"]
    times = [inv.time for inv in invocations if inv.context.function == name]
    # REPORT lines are stamped at the end of a call, a few seconds late.
    before = sum(1 for t in times if bundled_labels["start"] + 10 <= t < onset)
    during = sum(1 for t in times if onset + 10 <= t < end)
    rate_before = before / (onset - bundled_labels["start"] - 10)
    assert during / (end - onset - 10) >= 20 * rate_before

    # The loop function runs many more invocations while the loop lasts.
    loop = next(s for s in bundled_labels["scenarios"] if s["kind"] == "recursive_loop")
    name = loop["context"]["function"]
    times = [inv.time for inv in invocations if inv.context.function == name]
    width = loop["end"] - loop["onset"]
    in_loop = sum(1 for t in times if loop["onset"] <= t <= loop["end"])
    earlier = sum(1 for t in times if loop["onset"] - width <= t < loop["onset"])
    assert in_loop >= 5 * max(earlier, 1)
    consumer = [
        e
        for e in events
        if isinstance(e, Span) and e.context.function == name and e.kind == 5
    ]
    hops = Counter(span.trace_id for span in consumer)
    assert max(hops.values()) == loop["intensity"]["max_hops"]

    # Traced invocations carry the trace id their spans have.
    traced = {inv.request_id: inv.trace_id for inv in invocations if inv.trace_id}
    for span in events:
        if isinstance(span, Span) and span.invocation_id:
            assert traced[span.invocation_id] == span.trace_id


@pytest.mark.slow
def test_bundled_recording_is_what_the_generator_writes(
    bundled_labels: dict[str, Any],
) -> None:
    config = SimConfig(seed=bundled_labels["seed"])
    assert config.start == bundled_labels["start"]
    fresh = simulate.simulate(config)
    assert fresh.labels == json.loads(json.dumps(bundled_labels))
    files = {
        simulate.LOGS_FILE: fresh.log_lines,
        simulate.TRACES_FILE: fresh.trace_lines,
        simulate.METRICS_FILE: fresh.metric_lines,
    }
    for name, lines in files.items():
        committed = gzip.decompress((BUNDLED / name).read_bytes())
        assert committed == b"".join(line + b"\n" for line in lines), name
    cur = gzip.decompress((BUNDLED / simulate.CUR_FILE).read_bytes())
    assert cur == simulate._cur_bytes(fresh.cur_rows)


def test_cli_scenarios_keep_their_place_in_a_shorter_recording() -> None:
    config = simulate.config_for(minutes=7.0)
    assert config.spike is not None and config.loop is not None
    assert config.spike.onset_s == pytest.approx(16 * 60 / 5)
    assert config.loop.onset_s < config.loop.end_s < 7 * 60


def test_scenario_outside_the_recording_is_refused() -> None:
    late = replace(small_config(), spike=SpikeScenario(onset_s=600.0))
    with pytest.raises(ConfigError, match="spike onset at 600 s is outside"):
        simulate.simulate(late)


# --- the scenario suite ------------------------------------------------------


@pytest.fixture(scope="module")
def suite_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short recording of every attack and look-alike on a small background."""
    from dowguard.suite import attacks_config

    config = attacks_config(
        seed=5, background=40, minutes=16.0, onset_s=8 * 60.0, end_s=12 * 60.0,
        instances=1,
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("suite")
    simulate.write_recording(simulate.simulate(config), folder)
    return folder


@pytest.fixture(scope="module")
def suite_events(suite_dir: Path) -> tuple[list[Any], list[Exception]]:
    from ingest.parse import read_paths

    errors: list[Exception] = []
    return list(read_paths([suite_dir], errors.append)), errors


@pytest.fixture(scope="module")
def suite_labels(suite_dir: Path) -> dict[str, Any]:
    labels: dict[str, Any] = json.loads((suite_dir / simulate.LABELS_FILE).read_text())
    return labels


def scenario(labels: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in labels["scenarios"] if s["name"] == name)


def invocations_of(events: list[Any], function: str) -> list[Any]:
    from ingest.events import Invocation

    return [
        e
        for e in events
        if isinstance(e, Invocation) and e.context.function == function
    ]


def spans_of(events: list[Any], function: str) -> list[Any]:
    from ingest.events import Span

    return [e for e in events if isinstance(e, Span) and e.context.function == function]


def test_suite_recording_parses_without_errors(
    suite_events: tuple[list[Any], list[Exception]], suite_labels: dict[str, Any]
) -> None:
    events, errors = suite_events
    assert errors == []
    counted = Counter(
        e.context.function for e in events if type(e).__name__ == "Invocation"
    )
    for fn in suite_labels["functions"]:
        assert counted[fn["context"]["function"]] == fn["invocations"]


def test_every_scenario_has_the_label_fields(suite_labels: dict[str, Any]) -> None:
    kinds = {s["kind"] for s in suite_labels["scenarios"]}
    assert kinds == {
        "sqs_loop", "s3_loop", "mutual_loop", "flood", "duration_inflation",
        "error_storm", "flash_sale", "nightly_batch", "deploy", "bounded_retry",
    }  # fmt: skip
    for s in suite_labels["scenarios"]:
        assert s["contexts"] and s["onset"] <= s["end"]
        assert s["benign"] == (s["kind"] in simulate.BENIGN_KINDS)
        assert bool(s["detected_by"]) != s["benign"]
        series = s["excess"]["per_second"]
        total = s["excess"]["total_usd"]
        assert sum(usd for _, usd in series) == pytest.approx(total, rel=1e-5)
        if not s["benign"]:
            assert s["excess"]["total_usd"] > 0
            # Excess starts at the onset (a second's rounding aside).
            assert series[0][0] >= int(s["onset"]) - 1


def _rate(times: list[float], since: float, until: float) -> float:
    return sum(1 for t in times if since <= t < until) / (until - since)


@pytest.mark.parametrize("level", [3, 10, 30])
def test_flood_multiplies_the_rate_at_onset(
    suite_events: tuple[list[Any], list[Exception]],
    suite_labels: dict[str, Any],
    level: int,
) -> None:
    label = scenario(suite_labels, f"flood-{level}x-a")
    times = [
        i.time for i in invocations_of(suite_events[0], label["context"]["function"])
    ]
    start, onset, end = suite_labels["start"], label["onset"], label["end"]
    before = _rate(times, start + 30, onset)
    during = _rate(times, onset + 10, end)
    assert 0.6 * level <= during / before <= 1.6 * level
    # The label's measured multiplier says the same of the costs.
    assert 0.6 * level <= label["intensity"]["cost_multiplier"] <= 1.6 * level


def test_s3_loop_trace_is_broken_but_names_the_bucket(
    suite_events: tuple[list[Any], list[Exception]], suite_labels: dict[str, Any]
) -> None:
    from ingest.events import SPAN_KIND_CLIENT, SPAN_KIND_SERVER

    label = scenario(suite_labels, "s3loop-f1-a")
    bucket = label["intensity"]["channel"]
    assert label["intensity"]["trace_linked"] is False
    spans = spans_of(suite_events[0], label["context"]["function"])
    during = [s for s in spans if label["onset"] <= s.time <= label["end"]]
    invocations = [s for s in during if s.kind == SPAN_KIND_SERVER]
    puts = [s for s in during if s.kind == SPAN_KIND_CLIENT]
    assert len(invocations) > 20
    for span in invocations:
        # Each hop starts a new trace: no parent, no link, but the trigger
        # is the bucket's notification.
        assert span.parent_id == "" and span.links == ()
        assert (span.trigger, span.destination) == ("datasource", bucket)
    assert len({s.trace_id for s in invocations}) == len(invocations)
    assert puts and all(
        s.destination == bucket and s.name == "S3.PutObject" for s in puts
    )


def test_sqs_loop_trace_is_linked_hop_after_hop(
    suite_events: tuple[list[Any], list[Exception]], suite_labels: dict[str, Any]
) -> None:
    from ingest.events import SPAN_KIND_CONSUMER

    label = scenario(suite_labels, "sqsloop-f1-a")
    consumers = [
        s
        for s in spans_of(suite_events[0], label["context"]["function"])
        if s.kind == SPAN_KIND_CONSUMER
    ]
    per_trace = Counter(s.trace_id for s in consumers)
    assert max(per_trace.values()) == label["intensity"]["max_reentries"] + 1 == 16
    assert all(s.links for s in consumers if s.parent_id)


def test_mutual_loop_alternates_two_functions_in_one_trace(
    suite_events: tuple[list[Any], list[Exception]], suite_labels: dict[str, Any]
) -> None:
    from ingest.events import SPAN_KIND_CONSUMER

    label = scenario(suite_labels, "mutual-f1-a")
    a, b = (c["function"] for c in label["contexts"])
    traces: dict[str, list[str]] = defaultdict(list)
    for span in sorted(suite_events[0], key=lambda e: e.time):
        if (
            type(span).__name__ == "Span"
            and span.kind == SPAN_KIND_CONSUMER
            and span.context.function in (a, b)
        ):
            traces[span.trace_id].append(span.context.function)
    longest = max(traces.values(), key=len)
    assert longest.count(a) >= 10 and longest.count(b) >= 10
    assert all(x != y for x, y in itertools.pairwise(longest))


def test_fan_out_two_loop_branches(suite_labels: dict[str, Any]) -> None:
    two = scenario(suite_labels, "sqsloop-f2-a")["intensity"]
    assert two["fan_out"] == 2 and two["max_reentries"] >= 3
    # In the seconds its bug lives a branching chain makes more calls than hops.
    assert two["looped_invocations"] > 2 * two["max_reentries"]


def test_duration_inflation_grows_durations_not_the_rate(
    suite_events: tuple[list[Any], list[Exception]], suite_labels: dict[str, Any]
) -> None:
    label = scenario(suite_labels, "inflate-10x-a")
    calls = invocations_of(suite_events[0], label["context"]["function"])
    onset, end = label["onset"], label["end"]
    before = [c for c in calls if c.time < onset]
    late = [c for c in calls if onset + (end - onset) / 2 < c.time - 60 <= end]
    mean = sum(c.duration_ms for c in before) / len(before)
    assert sum(c.duration_ms for c in late) / len(late) > 6 * mean
    rate_before = len(before) / (onset - suite_labels["start"])
    rate_during = sum(1 for c in calls if onset <= c.time < end) / (end - onset)
    assert rate_during < 1.7 * rate_before


def test_error_storm_fails_and_redelivers(
    suite_events: tuple[list[Any], list[Exception]], suite_labels: dict[str, Any]
) -> None:
    label = scenario(suite_labels, "storm-30x-a")
    calls = invocations_of(suite_events[0], label["context"]["function"])
    onset, end = label["onset"], label["end"]
    during = [c for c in calls if onset + 60 <= c.time <= end]
    before = [c for c in calls if c.time < onset]
    assert sum(c.status != "success" for c in during) / len(during) > 0.9
    assert sum(c.status != "success" for c in before) <= 1
    assert len(during) / (end - onset - 60) > 2 * len(before) / (
        onset - suite_labels["start"]
    )


def test_deploy_moves_the_function_to_a_new_version(
    suite_events: tuple[list[Any], list[Exception]], suite_labels: dict[str, Any]
) -> None:
    label = scenario(suite_labels, "deploy-slower")
    calls = invocations_of(suite_events[0], label["context"]["function"])
    qualifiers = {c["qualifier"] for c in label["contexts"]}
    assert qualifiers == {"7", "8"}
    for call in calls:
        # REPORT lines come at the end of a call; the version is the start's.
        expected = "8" if call.time - call.duration_ms / 1000 >= label["onset"] else "7"
        assert call.context.qualifier == expected


def test_bounded_retry_stops_at_its_bound(
    suite_events: tuple[list[Any], list[Exception]], suite_labels: dict[str, Any]
) -> None:
    from ingest.events import SPAN_KIND_CONSUMER

    for hops in (2, 5):
        label = scenario(suite_labels, f"bounded-retry-{hops}")
        assert label["benign"] and label["intensity"]["max_reentries"] == hops
        consumers = [
            s
            for s in spans_of(suite_events[0], label["context"]["function"])
            if s.kind == SPAN_KIND_CONSUMER
        ]
        assert max(Counter(s.trace_id for s in consumers).values()) == hops + 1


def test_flash_sale_lifts_every_function_of_the_application(
    suite_events: tuple[list[Any], list[Exception]], suite_labels: dict[str, Any]
) -> None:
    label = scenario(suite_labels, "flash-sale")
    assert len(label["contexts"]) >= 5
    for context in label["contexts"]:
        times = [i.time for i in invocations_of(suite_events[0], context["function"])]
        before = _rate(times, suite_labels["start"] + 30, label["onset"])
        assert _rate(times, label["onset"] + 10, label["end"]) > 2.5 * before


def test_background_has_the_published_shape() -> None:
    from dowguard.suite import Background, background_functions

    fns = background_functions(Background(functions=1000, rate_cap=1e9, seed=2))
    assert fns == background_functions(Background(functions=1000, rate_cap=1e9, seed=2))
    rates = sorted(f.rate_per_s for f in fns if f.rate_per_s > 0)
    # Eight orders of magnitude between the 1st and the 99th percentile.
    low, high = rates[len(rates) // 100], rates[-len(rates) // 100]
    assert 1e7 <= high / low <= 1e9
    rare = sum(1 for r in rates if r <= 1 / 3600) / len(rates)
    assert 0.35 <= rare <= 0.55
    triggers = Counter(f.trigger for f in fns)
    assert 0.45 <= triggers["http"] / len(fns) <= 0.65
    assert {"timer", "sqs", "sns", "s3"} <= set(triggers)
    assert min(f.memory_mb for f in fns) == 128
    assert all(f.diurnal > 0 for f in fns if f.trigger != "timer")
    medians = sorted(f.duration_ms for f in fns)
    assert 150 <= medians[len(medians) // 2] <= 800
    assert sum(1 for f in fns if f.burst is not None) > 20


def test_daily_cycle_peaks_in_the_afternoon() -> None:
    fn = simulate.FunctionSpec(
        "web", "http", 128, 10.0, rate_per_s=1.0, diurnal=0.5, peak_hour=15.0
    )
    day = datetime(2026, 3, 4, tzinfo=UTC).timestamp()
    assert simulate._cycle(fn, day + 15 * 3600) == pytest.approx(1.5)
    assert simulate._cycle(fn, day + 3 * 3600) == pytest.approx(0.5)
    weekend = replace(fn, diurnal=0.0, weekend=0.5)
    saturday = datetime(2026, 3, 7, 12, tzinfo=UTC).timestamp()
    assert simulate._cycle(weekend, saturday) == 0.5
    assert simulate._cycle(weekend, saturday + 2 * 86400) == 1.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {
                "loops": (
                    LoopScenario("order-processor", "nowhere", 1.0, 2.0, name="x"),
                )
            },
            "nothing of the loop reads",
        ),
        (
            {"attacks": (simulate.Attack("a", "flood", ("ghost",), 1.0, 2.0),)},
            "unknown functions",
        ),
        (
            {"attacks": (simulate.Attack("a", "meteor", ("cleanup-cron",), 1.0, 2.0),)},
            "unknown kind",
        ),
    ],
)
def test_bad_scenario_is_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        simulate.simulate(replace(small_config(), **change))
