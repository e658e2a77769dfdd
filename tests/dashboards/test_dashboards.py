"""The dashboard JSON: structure, variables, and the metrics it queries."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from dashboards.provision import (
    expressions,
    load_dashboards,
    referenced_variables,
    render_expr,
    validate_dashboard,
    validate_dashboards,
)
from detector.alerts import FunctionStatus, Transition
from detector.metrics import DowMetrics
from ingest.events import Context

METRIC_RE = re.compile(r"\b(dowguard_[a-z_]+)")


def _by_uid(uid: str) -> dict[str, Any]:
    return next(d for d in load_dashboards() if d["uid"] == uid)


def _exported_sample_names() -> set[str]:
    """Sample names of every dowguard metric once each has a value."""
    metrics = DowMetrics(CollectorRegistry())
    ctx = Context("aws", "1", "us-east-1", "f")
    metrics.record_event("invocations")
    metrics.record_dead_letter("cur")
    metrics.record_parse_error()
    metrics.record_late_event("billing")
    metrics.record_transitions(
        [Transition("opened", "fp", "recursion", "critical", ctx, 0.0, 0.0, 1, 0.0)]
    )
    metrics.record_enforcement("dry-run", "throttle", "done")
    metrics.observe_commit(0.01)
    metrics.set_consumer_lag("t", 0, 1)
    metrics.set_tracked_contexts(1)
    metrics.set_function_costs([FunctionStatus(ctx, 0.0, 1.0, 1.0, 1.0, 1)])
    return {
        sample.name
        for family in metrics.registry.collect()
        for sample in family.samples
    }


def test_builtin_dashboards_are_valid() -> None:
    dashboards = load_dashboards()

    assert validate_dashboards(dashboards) == []
    assert {d["uid"] for d in dashboards} == {"dowguard-overview", "dowguard-function"}


def test_every_dowguard_metric_queried_is_exported() -> None:
    exported = _exported_sample_names()
    used = {
        name
        for dash in load_dashboards()
        for item in expressions(dash)
        for name in METRIC_RE.findall(item.expr)
    }

    assert used, "the dashboards query no dowguard metric"
    assert used - exported == set()


@pytest.mark.parametrize(
    "metric",
    [
        "dowguard_function_cost_usd_per_hour",
        "dowguard_function_baseline_usd_per_hour",
        "dowguard_alerts_open",
        "dowguard_events_total",
        "dowguard_dead_letters_total",
        "dowguard_late_events_total",
        "dowguard_consumer_lag",
        "dowguard_commit_seconds_bucket",
        "dowguard_enforcement_actions_total",
    ],
)
def test_overview_shows_metric(metric: str) -> None:
    exprs = [item.expr for item in expressions(_by_uid("dowguard-overview"))]
    assert any(metric in expr for expr in exprs)


def test_function_dashboard_selects_one_function() -> None:
    dash = _by_uid("dowguard-function")
    for item in expressions(dash):
        if item.where.startswith("panel"):
            assert 'account="$account"' in item.expr, item.where
            assert 'function="$function"' in item.expr, item.where
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert not variables["function"]["multi"]


def _break(mutate: Callable[[dict[str, Any]], None]) -> list[str]:
    dash = copy.deepcopy(_by_uid("dowguard-overview"))
    mutate(dash)
    return validate_dashboard(dash)


def _panel(dash: dict[str, Any], index: int) -> dict[str, Any]:
    panel: dict[str, Any] = dash["panels"][index]
    return panel


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: _panel(d, 1).update(id=_panel(d, 0)["id"]), "is used twice"),
        (lambda d: _panel(d, 1)["gridPos"].update(x=22), "leaves the 24-column grid"),
        (lambda d: _panel(d, 1)["gridPos"].update(x=3), "overlaps panel 1"),
        (lambda d: _panel(d, 0)["targets"][0].pop("expr"), "expr is missing"),
        (lambda d: _panel(d, 0)["targets"][0].pop("refId"), "refId is missing"),
        (lambda d: _panel(d, 0)["targets"][0].pop("datasource"), "datasource"),
        (
            lambda d: _panel(d, 0).update(datasource={"uid": "x", "type": "loki"}),
            "datasource must be",
        ),
        (
            lambda d: _panel(d, 0)["targets"][0].update(expr="sum(x{a=~'$nosuch'})"),
            "variable $nosuch is used but not defined",
        ),
        (lambda d: d["templating"]["list"].pop(0), "no datasource variable"),
        (lambda d: d.update(uid="short"), "uid 'short'"),
        (lambda d: d.update(uid="x" * 41), "is not 8-40"),
        (lambda d: _panel(d, 0)["fieldConfig"]["defaults"].pop("unit"), "unit"),
    ],
)
def test_validator_catches(
    mutate: Callable[[dict[str, Any]], None], expected: str
) -> None:
    problems = _break(mutate)
    assert any(expected in p for p in problems), problems


def test_validator_catches_duplicate_uid_across_dashboards() -> None:
    first = _by_uid("dowguard-overview")
    second = copy.deepcopy(first)
    second["title"] = "another title"

    problems = validate_dashboards([first, second])

    assert "dashboards: uid 'dowguard-overview' is used twice" in problems


def test_referenced_variables_ignore_grafana_builtins() -> None:
    node = {"a": ["$__rate_interval ${__field.labels.x} $account [[function]]"]}
    assert referenced_variables(node) == {"account", "function"}


def test_render_expr_substitutes_values_builtins_and_all() -> None:
    expr = 'rate(x{a="$account", f=~"${function}"}[$__rate_interval]) * $__range_s'

    rendered = render_expr(expr, {"account": "123"})

    assert rendered == 'rate(x{a="123", f=~".*"}[1m]) * 3600'


def test_variable_queries_yield_their_selector() -> None:
    dash = _by_uid("dowguard-overview")
    found = {i.where: i.expr for i in expressions(dash) if "variable" in i.where}

    assert found["variable account"] == "dowguard_function_cost_usd_per_hour"
    assert found["variable function"] == (
        'dowguard_function_cost_usd_per_hour{account=~"$account"}'
    )
