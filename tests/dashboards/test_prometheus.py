"""Every dashboard expression against a real Prometheus scraping dowguard.

Prometheus (the Debian package's binary) scrapes a loopback endpoint served
by detector.metrics with recorded values; the tests ask its query API.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, ProcessCollector

from dashboards.provision import (
    check_promql,
    expressions,
    load_dashboards,
    render_expr,
)
from detector.alerts import FunctionStatus, Transition
from detector.metrics import DowMetrics, start_metrics_server
from ingest.events import Context
from tests.dashboards.helpers import wait_for
from tests.processes import free_port

pytestmark = pytest.mark.prometheus

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
ACCOUNT, FUNCTION, COST, BASELINE = "123456789012", "resize", 38.2, 2.5
# Generous: the machine is shared, and Prometheus replays its WAL at start.
STARTUP_S = 90.0


@dataclass
class Scraped:
    url: str
    metrics: DowMetrics
    http: httpx.Client

    def query(self, expr: str) -> list[dict[str, Any]]:
        response = self.http.get(f"{self.url}/api/v1/query", params={"query": expr})
        body = response.json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result


def _record(metrics: DowMetrics) -> None:
    ctx = Context("aws", ACCOUNT, "us-east-1", FUNCTION)
    other = Context("aws", ACCOUNT, "us-east-1", "thumbnail")
    metrics.set_function_costs(
        [
            FunctionStatus(ctx, 0.0, COST, BASELINE, 40.0, open_alerts=1),
            FunctionStatus(other, 0.0, 0.4, 0.5, 3.0),
        ]
    )
    metrics.set_tracked_contexts(2)
    metrics.record_transitions(
        [Transition("opened", "fp1", "cost_spike", "critical", ctx, 0.0, 0.0, 1, 1.0)]
    )
    metrics.record_event("invocations", 100)
    metrics.record_dead_letter("cloudwatch-logs")
    metrics.record_late_event("billing")
    metrics.set_consumer_lag("dowguard.invocations", 0, 42)
    metrics.observe_commit(0.02)
    metrics.record_enforcement("dry-run", "throttle", "done")


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scraped]:
    if not Path(PROMETHEUS).exists():
        pytest.skip("prometheus is not installed (apt-get install -y prometheus)")
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    metrics = DowMetrics(registry)
    _record(metrics)
    server = start_metrics_server("127.0.0.1", 0, registry)
    workdir = tmp_path_factory.mktemp("prometheus")
    config = workdir / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: dowguard\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{server.server_port}']\n"
    )
    port = free_port()
    log = (workdir / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    http = httpx.Client(timeout=10.0)
    try:
        wait_for(lambda: _ready(http, url, proc, workdir), STARTUP_S, "prometheus")
        yield Scraped(url, metrics, http)
    finally:
        http.close()
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        log.close()
        server.shutdown()
        server.server_close()


def _ready(
    http: httpx.Client, url: str, proc: subprocess.Popen[bytes], workdir: Path
) -> bool:
    if proc.poll() is not None:
        output = (workdir / "prometheus.log").read_text(errors="replace")
        raise AssertionError(f"prometheus exited {proc.returncode}:\n{output[-3000:]}")
    try:
        return http.get(f"{url}/-/ready").status_code == 200
    except httpx.TransportError:
        return False


def _wait_scraped(scraped: Scraped) -> None:
    """Until two scrapes of the target are in, so rate() has a range."""

    def probe() -> bool:
        # New events between scrapes give the rates something to show.
        scraped.metrics.record_event("invocations", 10)
        result = scraped.query('count_over_time(up{job="dowguard"}[1m])')
        return bool(result) and float(result[0]["value"][1]) >= 3

    wait_for(probe, STARTUP_S, "three scrapes of the dowguard target")


def _panel_exprs(
    uid: str, title: str, values: dict[str, str] | None = None
) -> dict[str, str]:
    """A panel's expressions as Grafana sends them; one function by default."""
    dash = next(d for d in load_dashboards() if d["uid"] == uid)
    panel = next(p for p in dash["panels"] if p["title"] == title)
    values = values or {"account": ACCOUNT, "function": FUNCTION}
    return {t["refId"]: render_expr(t["expr"], values) for t in panel["targets"]}


def test_every_expression_is_accepted(scraped: Scraped) -> None:
    dashboards = load_dashboards()

    assert check_promql(scraped.url, dashboards, client=scraped.http) == []
    values = {"account": ACCOUNT, "function": FUNCTION}
    assert check_promql(scraped.url, dashboards, values, client=scraped.http) == []


def test_check_promql_reports_a_parse_error(scraped: Scraped) -> None:
    dash = load_dashboards()[0]
    dash["panels"][0]["targets"][0]["expr"] = "sum(rate(dowguard_events_total[1m])"

    problems = check_promql(scraped.url, [dash], client=scraped.http)

    assert len(problems) == 1
    assert "bad_data" in problems[0]


def test_spend_panels_return_the_recorded_functions(scraped: Scraped) -> None:
    _wait_scraped(scraped)
    every_function = {"account": ACCOUNT}  # "All" functions of the account
    panel = "Spend rate per function"
    one = _panel_exprs("dowguard-overview", panel)["A"]
    every = _panel_exprs("dowguard-overview", panel, every_function)["A"]

    rows = {r["metric"]["function"]: float(r["value"][1]) for r in scraped.query(every)}

    assert rows == {FUNCTION: COST, "thumbnail": 0.4}
    assert [r["metric"]["function"] for r in scraped.query(one)] == [FUNCTION]
    actual_vs_base = _panel_exprs("dowguard-function", "Spend rate vs baseline")
    actual = scraped.query(actual_vs_base["A"])
    baseline = scraped.query(actual_vs_base["B"])
    assert [float(r["value"][1]) for r in actual] == [COST]
    assert [float(r["value"][1]) for r in baseline] == [BASELINE]
    ratio = _panel_exprs("dowguard-function", "Spend over baseline")["A"]
    assert float(scraped.query(ratio)[0]["value"][1]) == pytest.approx(COST / BASELINE)


def test_pipeline_panels_return_the_recorded_series(scraped: Scraped) -> None:
    _wait_scraped(scraped)

    events = scraped.query(
        _panel_exprs("dowguard-overview", "Events per second by stream")["A"]
    )
    assert [r["metric"]["stream"] for r in events] == ["invocations"]
    assert float(events[0]["value"][1]) > 0
    alerts = scraped.query(
        _panel_exprs("dowguard-overview", "Open alerts by kind and severity")["A"]
    )
    assert [(r["metric"], r["value"][1]) for r in alerts] == [
        ({"kind": "cost_spike", "severity": "critical"}, "1")
    ]
    lag = scraped.query(_panel_exprs("dowguard-overview", "Consumer lag")["A"])
    assert [(r["metric"]["topic"], r["value"][1]) for r in lag] == [
        ("dowguard.invocations", "42")
    ]
    memory = _panel_exprs("dowguard-overview", "Daemon memory")
    per_context = scraped.query(memory["B"])
    assert len(per_context) == 1 and float(per_context[0]["value"][1]) > 0


def test_function_variable_lists_recorded_functions(scraped: Scraped) -> None:
    _wait_scraped(scraped)
    dash = next(d for d in load_dashboards() if d["uid"] == "dowguard-function")
    query = next(e for e in expressions(dash) if e.where == "variable function")
    selector = render_expr(query.expr, {"account": ACCOUNT})

    functions = {r["metric"]["function"] for r in scraped.query(selector)}

    assert functions == {FUNCTION, "thumbnail"}
