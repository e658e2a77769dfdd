"""detector.metrics: what each call records, read back from its registry."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client import CollectorRegistry

from detector import metrics as module
from detector.alerts import FunctionStatus, Transition
from detector.metrics import DowMetrics, start_metrics_server
from dowguard.errors import ConfigError
from ingest.events import Context


@pytest.fixture
def metrics() -> DowMetrics:
    return DowMetrics(CollectorRegistry())


def _value(m: DowMetrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def _status(
    account: str, function: str, cost: float, region: str = "us-east-1"
) -> FunctionStatus:
    ctx = Context("aws", account, region, function)
    return FunctionStatus(ctx, 0.0, cost, cost / 2, 1.0, open_alerts=1)


def _transition(event: str, fp: str, severity: str = "warning") -> Transition:
    ctx = Context("aws", "1", "us-east-1", "f")
    return Transition(event, fp, "cost_spike", severity, ctx, 0.0, 0.0, 1, 0.0)


def test_record_event_counts_per_stream(metrics: DowMetrics) -> None:
    metrics.record_event("invocations")
    metrics.record_event("invocations", 4)
    metrics.record_event("traces")

    assert _value(metrics, "dowguard_events_total", stream="invocations") == 5
    assert _value(metrics, "dowguard_events_total", stream="traces") == 1
    assert _value(metrics, "dowguard_events_total", stream="billing") is None


def test_set_function_costs_exports_only_the_top_n(metrics: DowMetrics) -> None:
    rows = [_status("1", f"fn{i}", float(i)) for i in range(10)]

    metrics.set_function_costs(rows, top_n=3)

    exported = {
        s.labels["function"]: s.value
        for fam in metrics.registry.collect()
        if fam.name == "dowguard_function_cost_usd_per_hour"
        for s in fam.samples
    }
    assert exported == {"fn9": 9.0, "fn8": 8.0, "fn7": 7.0}
    baseline = "dowguard_function_baseline_usd_per_hour"
    assert _value(metrics, baseline, account="1", function="fn9") == 4.5


def test_set_function_costs_replaces_the_previous_set(metrics: DowMetrics) -> None:
    metrics.set_function_costs([_status("1", "old", 5.0)], top_n=5)
    metrics.set_function_costs([_status("1", "new", 1.0)], top_n=5)

    cost = "dowguard_function_cost_usd_per_hour"
    assert _value(metrics, cost, account="1", function="old") is None
    assert _value(metrics, cost, account="1", function="new") == 1.0


def test_set_function_costs_sums_regions_of_one_function(metrics: DowMetrics) -> None:
    rows = [
        _status("1", "resize", 2.0, "us-east-1"),
        _status("1", "resize", 3.0, "eu-west-1"),
    ]

    metrics.set_function_costs(rows, top_n=1)

    labels = {"account": "1", "function": "resize"}
    assert _value(metrics, "dowguard_function_cost_usd_per_hour", **labels) == 5.0
    assert _value(metrics, "dowguard_function_alerts_open", **labels) == 2


def test_set_function_costs_refuses_negative_top_n(metrics: DowMetrics) -> None:
    with pytest.raises(ConfigError, match="top_n"):
        metrics.set_function_costs([], top_n=-1)


def test_transitions_follow_open_alerts_by_severity(metrics: DowMetrics) -> None:
    metrics.record_transitions([_transition("opened", "a"), _transition("opened", "b")])
    metrics.record_transitions([_transition("updated", "a", "critical")])

    gauge = "dowguard_alerts_open"
    assert _value(metrics, gauge, kind="cost_spike", severity="warning") == 1
    assert _value(metrics, gauge, kind="cost_spike", severity="critical") == 1

    metrics.record_transitions([_transition("resolved", "a")])

    assert _value(metrics, gauge, kind="cost_spike", severity="critical") is None
    assert metrics.open_alerts() == 1
    counter = "dowguard_transitions_total"
    assert _value(metrics, counter, kind="cost_spike", event="opened") == 2
    assert _value(metrics, counter, kind="cost_spike", event="resolved") == 1


def test_set_open_alerts_replaces_what_transitions_built(metrics: DowMetrics) -> None:
    metrics.record_transitions([_transition("opened", "a")])

    stored = [("x", "recursion", "critical"), ("y", "recursion", "critical")]
    metrics.set_open_alerts(stored)

    gauge = "dowguard_alerts_open"
    assert _value(metrics, gauge, kind="recursion", severity="critical") == 2
    assert _value(metrics, gauge, kind="cost_spike", severity="warning") is None


def test_forget_partition_drops_its_lag(metrics: DowMetrics) -> None:
    metrics.set_consumer_lag("dowguard.invocations", 0, 7)
    metrics.set_consumer_lag("dowguard.invocations", 1, 3)

    metrics.forget_partition("dowguard.invocations", 0)
    metrics.forget_partition("dowguard.invocations", 5)

    lag = "dowguard_consumer_lag"
    assert _value(metrics, lag, topic="dowguard.invocations", partition="0") is None
    assert _value(metrics, lag, topic="dowguard.invocations", partition="1") == 3


def test_commit_histogram_buckets_observations(metrics: DowMetrics) -> None:
    metrics.observe_commit(0.003)
    metrics.observe_commit(2.0)

    bucket = "dowguard_commit_seconds_bucket"
    assert _value(metrics, bucket, le="0.005") == 1
    assert _value(metrics, bucket, le="+Inf") == 2
    assert _value(metrics, "dowguard_commit_seconds_count") == 2


def test_module_functions_record_into_the_module_registry() -> None:
    name, labels = "dowguard_dead_letters_total", {"source": "test-source"}
    before = module.registry.get_sample_value(name, labels) or 0.0

    module.record_dead_letter("test-source")

    assert module.registry.get_sample_value(name, labels) == before + 1
    assert module.registry.get_sample_value("process_cpu_seconds_total") is not None


def test_metrics_server_serves_the_registry(metrics: DowMetrics) -> None:
    metrics.record_enforcement("dry-run", "throttle", "done")
    server = start_metrics_server("127.0.0.1", 0, metrics.registry)
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        text = httpx.get(url, timeout=10).text
    finally:
        server.shutdown()
        server.server_close()

    expected = (
        'dowguard_enforcement_actions_total{hook="dry-run",state="done",'
        'verb="throttle"} 1.0'
    )
    assert expected in text


def test_metrics_server_on_a_taken_port_raises_config_error(
    metrics: DowMetrics,
) -> None:
    server = start_metrics_server("127.0.0.1", 0, metrics.registry)
    try:
        with pytest.raises(ConfigError, match=f"127.0.0.1:{server.server_port}"):
            start_metrics_server("127.0.0.1", server.server_port, metrics.registry)
    finally:
        server.shutdown()
        server.server_close()
