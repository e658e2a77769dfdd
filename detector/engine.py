"""The detector: one object that every path (daemon, replay, tests) feeds.

Events are given with the partition number their stream puts them on; all
state is kept per partition number so that it can be checkpointed, moved to
another daemon in a rebalance, and restored there. Time is event time only:
a partition's watermark is the latest event time seen on it, and a window
closes once the watermark has passed its end by the allowed lateness.
"""

from __future__ import annotations

import heapq
import logging
import math
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from detector.alerts import (
    CRITICAL,
    OPENED,
    RESOLVED,
    UPDATED,
    WARNING,
    FunctionStatus,
    Transition,
    fingerprint,
)
from detector.baseline import PeerPool, RobustBaseline, SeasonalBaseline, memory_bucket
from detector.evidence import CHAIN, CHAIN_ENDED, Evidence
from detector.recursion import TraceStage
from ingest.events import Billing, Context, Event, Invocation, Metric, Span
from models.features import Window, window_features

logger = logging.getLogger(__name__)

COST_SPIKE = "cost_spike"
RECURSIVE_TRIGGER = "recursive_trigger"
ANOMALY = "anomaly"
SNAPSHOT_VERSION = 2


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    """Settings of the detector.

    Rates are in USD per hour. A window's cost rate opens a ``cost_spike``
    alert when it is at least ``spike_ratio`` times the context's baseline,
    at least ``spike_min_excess`` above it, and ``spike_z`` deviations above
    it; ``critical_ratio`` and ``critical_min_excess`` make it critical. A
    causal chain that re-enters a function ``recursion_hops`` times opens a
    ``recursive_trigger`` alert, critical from ``recursion_critical_hops``.

    A spike must also be more than chance in the number of invocations:
    at least ``spike_min_count`` and ``spike_count_z`` Poisson deviations
    above the usual count of a window, unless each invocation itself costs
    ``spike_ratio`` times its usual cost (durations inflating). Without it,
    one run of a rare, costly timer would look like a spike.

    With ``seasonal`` the cost baseline keeps hour-of-day and day-of-week
    profiles (:class:`detector.baseline.SeasonalBaseline`). A context that
    is not warm yet is judged against its peers' pool once that has seen
    ``peer_warmup`` windows (the cold-start rule of :mod:`detector.baseline`).

    With ``online_model`` a pooled river model scores every window of a warm
    context that is at least ``anomaly_ratio`` times and ``anomaly_min_excess``
    USD/h above what was expected, in more invocations than chance (as a
    spike must be); its score is added to the evidence, and
    ``anomaly_windows`` such windows in a row scoring ``anomaly_score`` or
    more open an ``anomaly`` alert, always a warning (it never reaches
    enforcement), unless another alert of the context is open already. The
    model learns from every ``model_learn_every``-th window not under alert.
    """

    window_s: float = 10.0
    lateness_s: float = 5.0
    partitions: int = 3
    recursion_hops: int = 3
    recursion_critical_hops: int = 6
    baseline_half_life: float = 180.0
    baseline_warmup: int = 60
    spike_ratio: float = 2.5
    spike_min_excess: float = 0.5
    spike_z: float = 6.0
    critical_ratio: float = 10.0
    critical_min_excess: float = 2.0
    spike_min_count: float = 5.0
    spike_count_z: float = 4.0
    resolve_ratio: float = 1.5
    resolve_windows: int = 3
    lineage_quiet_s: float = 60.0
    trace_ttl_s: float = 120.0
    seasonal: bool = True
    peer_warmup: int = 30
    online_model: bool = True
    anomaly_score: float = 0.8
    anomaly_windows: int = 3
    anomaly_ratio: float = 1.5
    anomaly_min_excess: float = 0.1
    model_learn_every: int = 4


@dataclass(slots=True)
class _Alert:
    """Lifecycle of one alert of one context (kept across episodes for seq)."""

    kind: str
    fingerprint: str
    seq: int = 0
    open: bool = False
    severity: str = WARNING
    starts_at: float = 0.0
    cost: float = 0.0
    peak: float = 0.0
    reported_peak: float = 0.0
    calm: int = 0
    streak: int = 0


@dataclass(slots=True)
class _Context:
    """Everything known about one function context."""

    context: Context
    baseline: RobustBaseline
    counts: RobustBaseline
    windows: dict[float, list[float]] = field(default_factory=dict)
    closed_until: float = -math.inf
    warn_rate: float = math.inf
    early_cost: float = math.inf
    early_count: float = math.inf
    total_cost: float = 0.0
    late_events: int = 0
    last_time: float = 0.0
    last_rate: float = 0.0
    last_invocations: float = 0.0
    billed_cost: float = 0.0
    metric_invocations: float = 0.0
    spike: _Alert | None = None
    recursion: _Alert | None = None
    chains: dict[str, list[float]] = field(default_factory=dict)
    peers: PeerPool | None = None
    fresh_until: float = -math.inf
    anomaly: _Alert | None = None


@dataclass(slots=True)
class _Partition:
    contexts: dict[Context, _Context] = field(default_factory=dict)
    traces: TraceStage = field(default_factory=TraceStage)
    watermark: float = -math.inf
    due: list[tuple[float, int, Context, float]] = field(default_factory=list)
    ticket: int = 0
    number: int = 0
    pools: dict[tuple[str, ...], PeerPool] = field(default_factory=dict)
    model: Any = None
    model_ticks: int = 0


# Accumulator slots of an open window.
_COST, _COUNT = range(2)


class Engine:
    """Feeds events into per-partition state and collects what it emits."""

    def __init__(
        self,
        config: DetectorConfig | None = None,
        invocation_cost: Callable[[Invocation], float] | None = None,
        span_cost: Callable[[Span], float] | None = None,
        offline_model: Any = None,
    ) -> None:
        self.config = config or DetectorConfig()
        #: A model trained offline (``models.offline.OfflineModel``), or none.
        self.offline_model = offline_model
        #: Called with (context, window start, features) of each warm window.
        self.on_window: Callable[[Context, float, dict[str, float]], None] | None
        self.on_window = None
        self._scores: dict[str, float] | None = None
        if invocation_cost is None or span_cost is None:
            from detector.cost import Pricing

            pricing = Pricing.load()
            invocation_cost = invocation_cost or pricing.invocation_cost
            span_cost = span_cost or pricing.span_cost
        self._invocation_cost = invocation_cost
        self._span_cost = span_cost
        self._window = self.config.window_s
        self._hops = self.config.recursion_hops
        self._lateness = self.config.lateness_s
        self._per_hour = 3600.0 / self.config.window_s
        self._parts: dict[int, _Partition] = {}
        self._transitions: list[Transition] = []
        self._evidence: list[Evidence] = []
        self._dirty: set[Context] = set()
        self.late_events = 0
        self.events = 0

    # Intake

    def process(self, event: Event, partition: int) -> None:
        """Take one event from the stream it travels on, at that partition."""
        self.events += 1
        part = self._parts.get(partition) or self._part(partition)
        if type(event) is Invocation:
            self._on_invocation(part, event)
        elif isinstance(event, Span):
            part.traces.process(event, self._evidence)
        elif isinstance(event, Metric):
            self._state(part, event.context).metric_invocations += (
                event.sum if event.name == "Invocations" else 0.0
            )
        elif isinstance(event, Billing):
            # Limitation: billed cost is recorded but not yet reconciled.
            self._state(part, event.context).billed_cost += event.cost_usd

    def process_evidence(self, evidence: Evidence, partition: int) -> None:
        """Take evidence from the trace stage (keyed by its context)."""
        part = self._part(partition)
        state = self._state(part, evidence.context)
        chain = state.chains.get(evidence.chain)
        if evidence.kind == CHAIN:
            if chain is None:
                chain = state.chains[evidence.chain] = [0.0, 0.0, 0.0, evidence.time]
            chain[0] = max(chain[0], evidence.hops)
            chain[1] = max(chain[1], evidence.cost_usd)
            chain[2] = 0.0
            chain[3] = max(chain[3], evidence.time)
            self._on_chain(state, evidence)
        elif evidence.kind == CHAIN_ENDED and chain is not None:
            chain[2] = 1.0
            if all(c[2] for c in state.chains.values()):
                self._resolve_recursion(state, evidence.time)

    def has_output(self) -> bool:
        """Whether transitions or evidence are waiting to be taken."""
        return bool(self._transitions or self._evidence)

    def take_transitions(self) -> list[Transition]:
        out, self._transitions = self._transitions, []
        return out

    def take_evidence(self) -> list[Evidence]:
        """Evidence for the context stage; the caller routes it back in."""
        out, self._evidence = self._evidence, []
        return out

    def take_status(self) -> list[FunctionStatus]:
        """Status of the contexts that changed since the last call."""
        rows = []
        for context in sorted(self._dirty):
            state = self._find(context)
            if state is None:
                continue
            alerts = (state.spike, state.recursion, state.anomaly)
            open_alerts = sum(1 for a in alerts if a is not None and a.open)
            rows.append(
                FunctionStatus(
                    context,
                    state.last_time,
                    state.last_rate,
                    state.baseline.mean,
                    state.last_invocations / self.config.window_s,
                    open_alerts,
                )
            )
        self._dirty.clear()
        return rows

    def flush(self) -> None:
        """Close every open window and trace, as at the end of a replay."""
        for part in self._parts.values():
            part.traces.flush(self._evidence)
            self._close_due(part, math.inf)

    @property
    def tracked_contexts(self) -> int:
        return sum(len(p.contexts) for p in self._parts.values())

    # Checkpoints

    def snapshot(self, partition: int) -> bytes:
        part = self._parts.get(partition) or _Partition()
        return pickle.dumps((SNAPSHOT_VERSION, part), protocol=5)

    def restore(self, partition: int, blob: bytes) -> None:
        version, part = pickle.loads(blob)
        if version != SNAPSHOT_VERSION:
            raise ValueError(f"snapshot version {version} is not {SNAPSHOT_VERSION}")
        part.traces.span_cost = self._span_cost
        self._parts[partition] = part

    def drop(self, partition: int) -> None:
        """Forget a partition's state (it was revoked in a rebalance)."""
        self._parts.pop(partition, None)

    # Internals: state

    def _part(self, partition: int) -> _Partition:
        part = self._parts.get(partition)
        if part is None:
            traces = TraceStage(
                hops=self.config.recursion_hops,
                trace_ttl_s=self.config.trace_ttl_s,
                span_cost=self._span_cost,
            )
            part = self._parts[partition] = _Partition(traces=traces, number=partition)
        return part

    def _state(self, part: _Partition, context: Context) -> _Context:
        state = part.contexts.get(context)
        if state is None:
            cfg = self.config
            baseline: RobustBaseline
            if cfg.seasonal:
                baseline = SeasonalBaseline(
                    cfg.baseline_half_life, cfg.baseline_warmup, window_s=cfg.window_s
                )
            else:
                baseline = RobustBaseline(cfg.baseline_half_life, cfg.baseline_warmup)
            counts = RobustBaseline(cfg.baseline_half_life, cfg.baseline_warmup)
            state = part.contexts[context] = _Context(context, baseline, counts)
        return state

    def _find(self, context: Context) -> _Context | None:
        for part in self._parts.values():
            state = part.contexts.get(context)
            if state is not None:
                return state
        return None

    # Internals: invocations and windows

    def _on_invocation(self, part: _Partition, inv: Invocation) -> None:
        context = inv.context
        state = part.contexts.get(context)
        if state is None:
            state = self._state(part, context)
        cost = self._invocation_cost(inv)
        time = inv.time
        state.total_cost += cost
        if time > state.last_time:
            state.last_time = time
        if inv.lineage >= self._hops:
            self._on_lineage(part, state, inv)
        if time < state.closed_until:
            state.late_events += 1
            self.late_events += 1
        else:
            start = time - time % self._window
            acc = state.windows.get(start)
            if acc is None:
                acc = state.windows[start] = [0.0, 0.0]
                part.ticket += 1
                heapq.heappush(
                    part.due, (start + self._window, part.ticket, context, start)
                )
                if start >= state.fresh_until:
                    self._new_period(part, state, inv, start)
            acc[_COST] += cost
            acc[_COUNT] += inv.count
            spike = state.spike
            if spike is not None and spike.open:
                spike.cost += cost
            if acc[_COST] >= state.early_cost and acc[_COUNT] >= state.early_count:
                self._early_fire(state, acc, time)
        if time > part.watermark:
            part.watermark = time
            due = part.due
            if due and due[0][0] <= time - self._lateness:
                self._close_due(part, time - self._lateness)

    def _schedule(self, part: _Partition, context: Context, start: float) -> None:
        part.ticket += 1
        end = start + self._window
        heapq.heappush(part.due, (end, part.ticket, context, start))

    def _close_due(self, part: _Partition, horizon: float) -> None:
        due = part.due
        contexts = part.contexts
        while due and due[0][0] <= horizon:
            end, _, context, start = heapq.heappop(due)
            state = contexts.get(context)
            if state is not None and end > state.closed_until:
                self._close_window(part, state, start, end)

    def _close_window(
        self, part: _Partition, state: _Context, start: float, end: float
    ) -> None:
        acc = state.windows.pop(start, None)
        if acc is None:
            cost = count = 0.0
        else:
            cost = acc[_COST]
            count = acc[_COUNT]
        rate = cost * self._per_hour
        baseline = state.baseline
        spike = state.spike
        under_alert = spike is not None and spike.open
        closed = state.closed_until
        if closed > -math.inf and not under_alert:
            idle = round((start - closed) / self._window)
            if idle > 0:
                baseline.learn_many_zeros(idle, closed)
                state.counts.learn_many_zeros(idle)
                self._refresh_thresholds(state, start)
        state.closed_until = end
        state.last_rate = rate
        state.last_invocations = count
        self._dirty.add(state.context)
        if acc is not None or state.anomaly is not None:
            self._model_window(part, state, start, cost, count, under_alert)
        if under_alert or rate >= state.warn_rate:
            self._judge_window(state, rate, cost, count, end, start)
            under_alert = state.spike is not None and state.spike.open
        self._scores = None
        if not under_alert:
            warm = baseline.is_warm
            baseline.learn_one(rate, start)
            state.counts.learn_one(count)
            if warm and acc is not None and state.peers is not None:
                state.peers.learn_one(rate)
        else:
            baseline.learn_paused(rate, start)
        anomaly = state.anomaly
        if under_alert or (anomaly is not None and anomaly.open):
            # Keep closing empty windows of an idle context under alert, so
            # that its alert can resolve when the traffic stops.
            self._schedule(part, state.context, end)
        if state.chains:
            self._expire_lineage(state, end)
        self._refresh_thresholds(state, end)

    def _new_period(
        self, part: _Partition, state: _Context, inv: Invocation, start: float
    ) -> None:
        """A window opens after what the cached thresholds were made for."""
        if state.peers is None:
            state.peers = self._peer_pool(part, inv)
        self._refresh_thresholds(state, start)

    def _peer_pool(self, part: _Partition, inv: Invocation) -> PeerPool:
        # Limitation: pools are per partition; peers on other partitions are not met.
        ctx = inv.context
        account = (ctx.provider, ctx.account)
        peers = (*account, inv.architecture, f"{memory_bucket(inv.memory_mb)}MB")
        pool = part.pools.get(peers)
        if pool is None:
            parent = part.pools.get(account)
            if parent is None:
                warmup = self.config.peer_warmup
                parent = part.pools[account] = PeerPool(account, warmup=warmup)
            pool = PeerPool(peers, parent, warmup=self.config.peer_warmup)
            part.pools[peers] = pool
        return pool

    def _reference(self, state: _Context, at: float) -> tuple[float, float] | None:
        """Mean and deviation a window at ``at`` is judged against, if any."""
        baseline = state.baseline
        if baseline.is_warm:
            return baseline.expected(at)
        pool = state.peers.reference() if state.peers is not None else None
        if pool is None:
            return None
        return pool.baseline.mean, pool.baseline.deviation

    def _refresh_thresholds(self, state: _Context, at: float) -> None:
        """Cache what the next window (from ``at``) must reach to be judged."""
        state.fresh_until = state.baseline.valid_until(at)
        reference = self._reference(state, at)
        if reference is None:
            state.warn_rate = state.early_cost = state.early_count = math.inf
            return
        warn, crit = self._thresholds(reference)
        state.warn_rate = warn
        spike = state.spike
        if spike is not None and spike.open and spike.severity == CRITICAL:
            state.early_cost = math.inf
        else:
            # A window whose cost so far already exceeds a whole window at the
            # critical rate is critical whatever the rest of the window holds.
            state.early_cost = crit * self._window / 3600.0
        state.early_count = self._count_threshold(state)

    def _thresholds(self, reference: tuple[float, float]) -> tuple[float, float]:
        """The warning and critical cost rates against a mean and deviation."""
        cfg = self.config
        base, deviation = reference
        spread = max(deviation, 0.05 * base)
        warn = max(
            cfg.spike_ratio * base,
            base + cfg.spike_min_excess,
            base + cfg.spike_z * spread,
        )
        crit = max(warn, cfg.critical_ratio * base, base + cfg.critical_min_excess)
        return warn, crit

    def _count_threshold(self, state: _Context) -> float:
        """Invocations in a window that are more than chance."""
        usual = state.counts.mean
        cfg = self.config
        return usual + max(cfg.spike_min_count, cfg.spike_count_z * math.sqrt(usual))

    def _significant(self, state: _Context, cost: float, count: float) -> bool:
        if count >= self._count_threshold(state):
            return True
        usual_count = state.counts.mean
        if count < self.config.spike_min_count or usual_count <= 0:
            return False
        usual_each = state.baseline.mean * self.config.window_s / 3600 / usual_count
        return cost / count >= self.config.spike_ratio * usual_each

    def _early_fire(self, state: _Context, acc: list[float], time: float) -> None:
        rate = acc[_COST] * 3600.0 / self.config.window_s
        self._raise_spike(state, rate, acc[_COST], time, CRITICAL, early=True)
        state.early_cost = math.inf

    def _judge_window(
        self,
        state: _Context,
        rate: float,
        cost: float,
        count: float,
        end: float,
        start: float | None = None,
    ) -> None:
        at = end - self._window if start is None else start
        reference = self._reference(state, at)
        if reference is None:
            return
        warn, crit = self._thresholds(reference)
        base = reference[0]
        if rate >= warn and self._significant(state, cost, count):
            severity = CRITICAL if rate >= crit else WARNING
            self._raise_spike(state, rate, cost, end, severity, early=False)
            return
        spike = state.spike
        if spike is None or not spike.open:
            return
        if rate < self.config.resolve_ratio * base + 1e-12 or (
            rate - base < self.config.spike_min_excess / 2
        ):
            spike.calm += 1
            if spike.calm >= self.config.resolve_windows:
                evidence = self._spike_evidence(state, rate, end)
                self._emit(state, spike, RESOLVED, end, evidence)
                spike.open = False
        else:
            spike.calm = 0

    def _raise_spike(
        self,
        state: _Context,
        rate: float,
        window_cost: float,
        at: float,
        severity: str,
        early: bool,
    ) -> None:
        spike = state.spike
        if spike is None:
            spike = state.spike = _Alert(
                COST_SPIKE, fingerprint(state.context, COST_SPIKE)
            )
        spike.calm = 0
        evidence = self._spike_evidence(state, rate, at)
        evidence["early"] = early
        if not spike.open:
            spike.open = True
            spike.severity = severity
            spike.starts_at = at
            spike.cost = window_cost
            spike.peak = spike.reported_peak = rate
            self._emit(state, spike, OPENED, at, evidence)
            return
        spike.peak = max(spike.peak, rate)
        escalated = severity == CRITICAL and spike.severity != CRITICAL
        if escalated or rate >= 2.0 * spike.reported_peak:
            spike.severity = CRITICAL if escalated else spike.severity
            spike.reported_peak = rate
            self._emit(state, spike, UPDATED, at, evidence)

    def _spike_evidence(
        self, state: _Context, rate: float, at: float
    ) -> dict[str, object]:
        reference = self._reference(state, at)
        base = state.baseline.mean if reference is None else reference[0]
        evidence: dict[str, object] = {
            "source": "invocations",
            "rate_usd_per_hour": round(rate, 6),
            "baseline_usd_per_hour": round(base, 6),
            "ratio": round(rate / base, 2) if base > 0 else None,
            "baseline_windows": state.baseline.n,
        }
        if not state.baseline.is_warm and state.peers is not None:
            pool = state.peers.reference()
            if pool is not None:
                evidence["judged_against"] = f"peers:{pool.name}"
        if self._scores:
            evidence["model_scores"] = dict(self._scores)
        return evidence

    # Internals: learned models

    def _model_window(
        self,
        part: _Partition,
        state: _Context,
        start: float,
        cost: float,
        count: float,
        under_alert: bool,
    ) -> None:
        """Score a warm context's window with the models; let them learn it."""
        cfg = self.config
        offline = self.offline_model
        baseline = state.baseline
        if not baseline.is_warm or (
            not cfg.online_model and offline is None and self.on_window is None
        ):
            return
        model = part.model
        if model is None and cfg.online_model:
            # Made at the first warm window: river takes a while to import.
            from models.online import PooledModel

            model = part.model = PooledModel()
        mean, spread = baseline.expected(start)
        rate = cost * self._per_hour
        # More than chance, as for a spike: one run of a costly timer is not.
        notable = (
            rate >= cfg.anomaly_ratio * mean
            and rate - mean >= cfg.anomaly_min_excess
            and self._significant(state, cost, count)
        )
        learn = False
        if model is not None and not under_alert and count > 0:
            part.model_ticks += 1
            if part.model_ticks >= cfg.model_learn_every:
                part.model_ticks = 0
                learn = True
        hit = False
        # Features are made only for windows that are scored, learned or tapped.
        if notable or learn or self.on_window is not None:
            # Limitation: windows count cost and invocations only; other features miss.
            window = Window(
                self._window,
                cost,
                count,
                mean,
                spread,
                baseline.mean,
                state.counts.mean,
            )
            features = window_features(window)
            if self.on_window is not None:
                self.on_window(state.context, start, features)
            if notable:
                scores: dict[str, float] = {}
                if model is not None and model.is_warm:
                    scores["online"] = score = round(model.score_one(features), 4)
                    hit = score >= cfg.anomaly_score
                if offline is not None:
                    scores["offline"] = score = round(offline.score_one(features), 4)
                    hit = hit or score >= offline.threshold
                self._scores = scores
            if learn and model is not None:
                model.learn_one(features)
        self._track_anomaly(state, hit, cost, start + self._window)

    def _track_anomaly(
        self, state: _Context, hit: bool, cost: float, at: float
    ) -> None:
        alert = state.anomaly
        if not hit:
            if alert is not None:
                alert.streak = 0
                if alert.open:
                    alert.cost += cost
                    alert.calm += 1
                    if alert.calm >= self.config.resolve_windows:
                        alert.open = False
                        self._emit(state, alert, RESOLVED, at, self._anomaly_evidence())
            return
        if alert is None:
            fp = fingerprint(state.context, ANOMALY)
            alert = state.anomaly = _Alert(ANOMALY, fp, severity=WARNING)
        alert.calm = 0
        alert.streak += 1
        if alert.open:
            alert.cost += cost
            return
        others = (state.spike, state.recursion)
        if alert.streak >= self.config.anomaly_windows and not any(
            a is not None and a.open for a in others
        ):
            alert.open = True
            alert.starts_at = at
            alert.cost = cost
            self._emit(state, alert, OPENED, at, self._anomaly_evidence())

    def _anomaly_evidence(self) -> dict[str, object]:
        return {"source": "model", "model_scores": dict(self._scores or {})}

    # Internals: recursion

    def _on_chain(self, state: _Context, evidence: Evidence) -> None:
        alert = state.recursion
        if alert is None:
            fp = fingerprint(state.context, RECURSIVE_TRIGGER)
            alert = state.recursion = _Alert(RECURSIVE_TRIGGER, fp)
        hops = max(c[0] for c in state.chains.values())
        cost = sum(c[1] for c in state.chains.values())
        severity = CRITICAL if hops >= self.config.recursion_critical_hops else WARNING
        details: dict[str, object] = {
            "source": "traces" if evidence.via != "lineage" else "invocations",
            "hops": int(hops),
            "threshold": self.config.recursion_hops,
            "via": evidence.via,
            "path": list(evidence.path),
            "chains": len(state.chains),
        }
        alert.cost = cost
        self._dirty.add(state.context)
        if not alert.open:
            alert.open = True
            alert.severity = severity
            alert.starts_at = evidence.time
            alert.peak = alert.reported_peak = hops
            self._emit(state, alert, OPENED, evidence.time, details)
            return
        alert.peak = max(alert.peak, hops)
        escalated = severity == CRITICAL and alert.severity != CRITICAL
        if escalated or hops >= 2 * alert.reported_peak:
            alert.severity = severity if escalated else alert.severity
            alert.reported_peak = hops
            self._emit(state, alert, UPDATED, evidence.time, details)

    def _resolve_recursion(self, state: _Context, at: float) -> None:
        alert = state.recursion
        if alert is None or not alert.open:
            state.chains.clear()
            return
        hops = max((c[0] for c in state.chains.values()), default=0)
        details: dict[str, object] = {
            "source": "traces",
            "hops": int(hops),
            "chains": len(state.chains),
        }
        self._emit(state, alert, RESOLVED, at, details)
        alert.open = False
        state.chains.clear()

    def _on_lineage(self, part: _Partition, state: _Context, inv: Invocation) -> None:
        chain = f"lineage:{inv.trace_id or inv.request_id}"
        evidence = Evidence(
            CHAIN,
            inv.context,
            inv.time,
            chain,
            hops=inv.lineage,
            cost_usd=self._invocation_cost(inv),
            via="lineage",
            path=(inv.context.function,),
        )
        self.process_evidence(evidence, part.number)

    def _expire_lineage(self, state: _Context, now: float) -> None:
        if not state.chains:
            return
        quiet = self.config.lineage_quiet_s
        for name, chain in state.chains.items():
            if name.startswith("lineage:") and not chain[2] and chain[3] + quiet <= now:
                chain[2] = 1.0
        if all(c[2] for c in state.chains.values()):
            self._resolve_recursion(state, now)

    # Internals: output

    def _emit(
        self,
        state: _Context,
        alert: _Alert,
        event: str,
        at: float,
        evidence: dict[str, object],
    ) -> None:
        alert.seq += 1
        context = state.context
        if alert.kind == ANOMALY:
            scores = evidence.get("model_scores")
            pairs = scores.items() if isinstance(scores, dict) else ()
            named = ", ".join(f"{k} score {v}" for k, v in pairs)
            summary = f"{context.function}: windows unlike its usual ones ({named})"
        elif alert.kind == COST_SPIKE:
            summary = (
                f"{context.function}: spend {evidence.get('rate_usd_per_hour')} USD/h"
                f" against a baseline of {evidence.get('baseline_usd_per_hour')} USD/h"
            )
        else:
            summary = (
                f"{context.function}: causal chain re-entered it "
                f"{evidence.get('hops')} times"
            )
        evidence["cost_so_far_usd"] = round(alert.cost, 6)
        self._transitions.append(
            Transition(
                event,
                alert.fingerprint,
                alert.kind,
                alert.severity,
                context,
                alert.starts_at,
                at,
                alert.seq,
                alert.cost,
                summary,
                dict(evidence),
            )
        )
        self._dirty.add(context)
