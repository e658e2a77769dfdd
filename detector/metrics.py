"""Prometheus metrics of dowguard: their names, labels and the calls that feed them.

Every metric is named ``dowguard_*`` and lives in :data:`registry`; the
daemon serves it with :func:`start_metrics_server`, the API can mount it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from detector.alerts import RESOLVED, FunctionStatus, Transition
from dowguard.errors import ConfigError

logger = logging.getLogger(__name__)

#: The values of the ``stream`` label of events and late events.
STREAMS = ("invocations", "billing", "traces", "evidence")

#: How many function contexts the cost gauges export unless told otherwise.
DEFAULT_TOP_N = 50

# Commits are one SQL transaction plus a Kafka offset commit: milliseconds
# when healthy, seconds when the database or the broker struggles.
COMMIT_BUCKETS = (
    *(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
    *(0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)


# account, function, spend rate, baseline rate, open alerts
_FunctionRow = tuple[str, str, float, float, int]
_FUNCTION_GAUGES = (
    "dowguard_function_cost_usd_per_hour",
    "dowguard_function_baseline_usd_per_hour",
    "dowguard_function_alerts_open",
)


class _StateCollector(Collector):
    """Gauges that are replaced as a whole: open alerts and function costs.

    They are built from a snapshot at scrape time, so a scrape never sees a
    half-replaced set (clearing a labelled gauge and refilling it would let
    a scrape in between see no functions at all).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[str, tuple[str, str]] = {}
        self._costs: list[_FunctionRow] = []

    # Limitation: open alerts are followed from this process's transitions;
    # after a restart they are missing until set_open_alerts seeds them.
    def set_open(self, alerts: Iterable[tuple[str, str, str]]) -> None:
        fresh = {fp: (kind, severity) for fp, kind, severity in alerts}
        with self._lock:
            self._open = fresh

    def apply(self, transitions: Iterable[Transition]) -> None:
        with self._lock:
            for tr in transitions:
                if tr.event == RESOLVED:
                    self._open.pop(tr.fingerprint, None)
                else:
                    self._open[tr.fingerprint] = (tr.kind, tr.severity)

    def set_costs(self, costs: list[_FunctionRow]) -> None:
        with self._lock:
            self._costs = costs

    def open_count(self) -> int:
        with self._lock:
            return len(self._open)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            open_alerts = list(self._open.values())
            costs = self._costs
        by_label: dict[tuple[str, str], int] = {}
        for key in open_alerts:
            by_label[key] = by_label.get(key, 0) + 1
        alerts = GaugeMetricFamily(
            "dowguard_alerts_open",
            "Alerts currently open, by kind and severity.",
            labels=("kind", "severity"),
        )
        for (kind, severity), count in sorted(by_label.items()):
            alerts.add_metric((kind, severity), count)
        cost = GaugeMetricFamily(
            "dowguard_function_cost_usd_per_hour",
            "Computed spend rate of the costliest function contexts.",
            labels=("account", "function"),
        )
        baseline = GaugeMetricFamily(
            "dowguard_function_baseline_usd_per_hour",
            "Learned baseline spend rate of the same function contexts.",
            labels=("account", "function"),
        )
        function_alerts = GaugeMetricFamily(
            "dowguard_function_alerts_open",
            "Alerts open on the same function contexts.",
            labels=("account", "function"),
        )
        for account, function, actual, base, open_count in costs:
            cost.add_metric((account, function), actual)
            baseline.add_metric((account, function), base)
            function_alerts.add_metric((account, function), open_count)
        yield alerts
        yield cost
        yield baseline
        yield function_alerts

    def describe(self) -> Iterator[Metric]:
        # Names only, so the registry can refuse a duplicate without a collect.
        yield GaugeMetricFamily("dowguard_alerts_open", "", labels=("kind", "severity"))
        for name in _FUNCTION_GAUGES:
            yield GaugeMetricFamily(name, "", labels=("account", "function"))


class DowMetrics:
    """Every dowguard metric, registered in one registry.

    The module builds one instance on :data:`registry`; tests build their own
    on a fresh :class:`CollectorRegistry` to start from zero.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.events = Counter(
            "dowguard_events",
            "Normalised events taken by the detector, by stream.",
            ("stream",),
            registry=registry,
        )
        self.dead_letters = Counter(
            "dowguard_dead_letters",
            "Inputs sent to the dead-letter topic, by source format or topic.",
            ("source",),
            registry=registry,
        )
        self.parse_errors = Counter(
            "dowguard_parse_errors",
            "Inputs that no parser accepted.",
            registry=registry,
        )
        self.late_events = Counter(
            "dowguard_late_events",
            "Events that arrived after their window had closed, by stream.",
            ("stream",),
            registry=registry,
        )
        self.transitions = Counter(
            "dowguard_transitions",
            "Alert transitions emitted, by alert kind and event.",
            ("kind", "event"),
            registry=registry,
        )
        self.enforcement_actions = Counter(
            "dowguard_enforcement_actions",
            "Enforcement actions by hook, verb and resulting state.",
            ("hook", "verb", "state"),
            registry=registry,
        )
        self.commit_seconds = Histogram(
            "dowguard_commit_seconds",
            "Time to store effects and commit the offsets they cover.",
            buckets=COMMIT_BUCKETS,
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "dowguard_consumer_lag",
            "Messages between the committed offset and the end of a partition.",
            ("topic", "partition"),
            registry=registry,
        )
        self.tracked_contexts = Gauge(
            "dowguard_tracked_contexts",
            "Function contexts that the detector holds state for.",
            registry=registry,
        )
        self._state = _StateCollector()
        registry.register(self._state)

    def record_event(self, stream: str, count: int = 1) -> None:
        """Count ``count`` events taken from ``stream`` (one of :data:`STREAMS`)."""
        self.events.labels(stream).inc(count)

    def record_dead_letter(self, source: str) -> None:
        """Count one input dead-lettered; ``source`` is its format or topic."""
        self.dead_letters.labels(source).inc()

    def record_parse_error(self) -> None:
        self.parse_errors.inc()

    def record_late_event(self, stream: str, count: int = 1) -> None:
        self.late_events.labels(stream).inc(count)

    def record_transitions(self, transitions: Iterable[Transition]) -> None:
        """Count transitions and follow which alerts they leave open."""
        batch = list(transitions)
        for tr in batch:
            self.transitions.labels(tr.kind, tr.event).inc()
        self._state.apply(batch)

    def set_open_alerts(self, alerts: Iterable[tuple[str, str, str]]) -> None:
        """Replace the open alerts, as ``(fingerprint, kind, severity)`` triples.

        For a process that starts with alerts already open in the database
        (after a restart, or in the API), before any transition arrives.
        """
        self._state.set_open(alerts)

    def open_alerts(self) -> int:
        """How many alerts the metrics currently count as open."""
        return self._state.open_count()

    def record_enforcement(self, hook: str, verb: str, state: str) -> None:
        """Count one enforcement action, e.g. ``("lambda", "throttle", "done")``."""
        self.enforcement_actions.labels(hook, verb, state).inc()

    def observe_commit(self, seconds: float) -> None:
        self.commit_seconds.observe(seconds)

    def set_consumer_lag(self, topic: str, partition: int, lag: int) -> None:
        self.consumer_lag.labels(topic, str(partition)).set(lag)

    def forget_partition(self, topic: str, partition: int) -> None:
        """Drop the lag of a partition this process no longer owns."""
        try:
            self.consumer_lag.remove(topic, str(partition))
        except KeyError:
            logger.debug("lag not set topic=%s partition=%d", topic, partition)

    def set_tracked_contexts(self, count: int) -> None:
        self.tracked_contexts.set(count)

    def set_function_costs(
        self, rows: Sequence[FunctionStatus], top_n: int = DEFAULT_TOP_N
    ) -> None:
        """Export spend, baseline and open alerts of the ``top_n`` costliest functions.

        Every exported (account, function) pair is a time series that
        Prometheus keeps for as long as its retention; exporting every
        context would let the number of series grow with the number of
        functions (an attacker who deploys functions could inflate it).
        The costliest ones are the ones a dashboard needs. Contexts that
        share an account and a function name (regions, qualifiers) are
        summed, since the labels cannot tell them apart.
        """
        if top_n < 0:
            raise ConfigError(f"metrics top_n: expected 0 or more, got {top_n}")
        summed: dict[tuple[str, str], tuple[float, float, int]] = {}
        for row in rows:
            key = (row.context.account, row.context.function)
            actual, base, open_count = summed.get(key, (0.0, 0.0, 0))
            summed[key] = (
                actual + row.cost_usd_per_hour,
                base + row.baseline_usd_per_hour,
                open_count + row.open_alerts,
            )
        ranked = sorted(summed.items(), key=lambda item: (-item[1][0], item[0]))
        self._state.set_costs([(*key, *values) for key, values in ranked[:top_n]])

    def render(self) -> tuple[bytes, str]:
        """The text exposition of every metric and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _build_registry() -> CollectorRegistry:
    # A registry of our own rather than the default one: what /metrics shows
    # is then only what dowguard registers here (a library that registers on
    # the default registry cannot add series or clash with our names), plus
    # the process metrics, added on purpose since memory per tracked context
    # is something to watch.
    reg = CollectorRegistry()
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        reg.register(collector)
    return reg


#: The registry that the daemon and the API serve.
registry = _build_registry()
#: The metrics of this process.
METRICS = DowMetrics(registry)

record_event = METRICS.record_event
record_dead_letter = METRICS.record_dead_letter
record_parse_error = METRICS.record_parse_error
record_late_event = METRICS.record_late_event
record_transitions = METRICS.record_transitions
set_open_alerts = METRICS.set_open_alerts
record_enforcement = METRICS.record_enforcement
observe_commit = METRICS.observe_commit
set_consumer_lag = METRICS.set_consumer_lag
forget_partition = METRICS.forget_partition
set_tracked_contexts = METRICS.set_tracked_contexts
set_function_costs = METRICS.set_function_costs
render = METRICS.render


def start_metrics_server(
    host: str = "127.0.0.1",
    port: int = 9464,
    reg: CollectorRegistry | None = None,
) -> WSGIServer:
    """Serve ``/metrics`` over HTTP in a daemon thread; port 0 picks a free one.

    Returns the server: its ``server_port`` is the bound port, and
    ``shutdown()`` stops it.
    """
    try:
        server, _thread = start_http_server(port, addr=host, registry=reg or registry)
    except OSError as exc:
        raise ConfigError(f"metrics server {host}:{port}: {exc.strerror}") from exc
    logger.info("metrics serving host=%s port=%d", host, server.server_port)
    return server


__all__ = [
    "DEFAULT_TOP_N",
    "METRICS",
    "STREAMS",
    "DowMetrics",
    "forget_partition",
    "observe_commit",
    "record_dead_letter",
    "record_enforcement",
    "record_event",
    "record_late_event",
    "record_parse_error",
    "record_transitions",
    "registry",
    "render",
    "set_consumer_lag",
    "set_function_costs",
    "set_open_alerts",
    "set_tracked_contexts",
    "start_metrics_server",
]
