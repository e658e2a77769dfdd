"""The detector: one object that every path (daemon, replay, tests) feeds.

Events are given with the partition number their stream puts them on; all
state is kept per partition number so that it can be checkpointed, moved to
another daemon in a rebalance, and restored there. Time is event time only:
a partition's watermark is the latest event time seen on it, and a window
closes once the watermark has passed its end by the allowed lateness.
Metric streams and billing rows are judged on their own periods (a minute,
an hour) by detector.sources and detector.reconcile, never as instants.
"""

from __future__ import annotations

import heapq
import logging
import math
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from detector.alerts import (
    CRITICAL,
    OPENED,
    RESOLVED,
    UPDATED,
    WARNING,
    FunctionStatus,
    StoredShare,
    Transition,
    fingerprint,
    transition_of,
)
from detector.baseline import (
    BURST_MIN_WINDOWS,
    Bursts,
    BurstState,
    PeerPool,
    RobustBaseline,
    SeasonalBaseline,
    memory_bucket,
)
from detector.evidence import CHAIN, CHAIN_ENDED, ITEM_FACTS, SPAN_WINDOW, Evidence
from detector.poisson import cached_quantile, normal_tail, upper_quantile
from detector.reconcile import Reconciler
from detector.recursion import TraceStage
from detector.rise import Rise, RiseFinding, RiseRun, RiseWindow
from detector.rules import (
    BILLED_MS,
    FAILED,
    FAILED_COST,
    POOL_SLOTS,
    TIMEOUTS,
    WINDOW_SLOTS,
    AccountShares,
    Rules,
    RuleState,
    began_in_burst,
)
from detector.sources import (
    AGREE,
    CALM,
    GAP,
    HOLD,
    LOGS,
    METRICS,
    NO_GAP,
    RISE,
    RISE_END,
    SPIKE,
    TRACES,
    Finding,
    PartitionSources,
    SourceFusion,
    SourcesConfig,
    SourceState,
    fused_severity,
)
from detector.spanwindows import SKETCH_BITS, SKETCH_WAIT_S, distinct
from ingest.events import (
    Billing,
    Context,
    Event,
    Invocation,
    InvocationStart,
    Metric,
    Span,
)
from models.features import Window, window_features

if TYPE_CHECKING:
    from detector.cost import CostModel

logger = logging.getLogger(__name__)

COST_SPIKE = "cost_spike"
RECURSIVE_TRIGGER = "recursive_trigger"
BILLING_GAP = "billing_gap"
ANOMALY = "anomaly"
# 3: the trace stage keeps chains across traces and the resource edges;
# contexts carry their metric and billing state, seasonal baselines and peers.
# 5: the trace stage holds the context side's item pairing, open windows hold
# the models' slots (cold starts, longest call, GB-s), a rising context's run
# carries its sequential test and the rules' state theirs; a version 4
# snapshot restores with no pairing, those slots at zero, its rising runs
# dropped and the rules' tests afresh.
# 6: an excursion's burst state keeps its first window and its cost; an older
# one restores with its run starting at its latest window, having cost nothing.
# 7: a partition holds its contexts' share of each budgeted account's day and
# month (and the account's alert); an older one restores with no share.
# 8: a context caches the gate on which its rise run reads an open window
# call by call; an older one restores with none, until a window sets it.
# 9: a context holds the span sketches of its latest windows and the trace
# stage those it has not sent on; an older one restores with none.
# 10: a burst state keeps the context's burst length, the latest burst's tail
# and whether a burst was known before it; an older one restores with none.
# 11: a burst state keeps where a young excursion's quiet began and the most
# calls that began in one of its windows; an older one restores with neither.
# 12: the rules' pool keeps the longest call of its windows; an older one
# restores with none, judged with no call left out.
SNAPSHOT_VERSION = 12
#: Versions restore reads; an older one is brought to today's fields (_upgrade).
READABLE_SNAPSHOTS = (4, 5, 6, 7, 8, 9, 10, 11, SNAPSHOT_VERSION)


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    """Settings of the detector.

    Rates are in USD per hour. A window's cost rate opens a ``cost_spike``
    alert when it is at least ``spike_ratio`` times the context's baseline,
    at least ``spike_min_excess`` above it, and ``spike_z`` deviations above
    it; ``critical_ratio`` times, ``critical_min_excess`` above and
    ``critical_z`` deviations above make it critical (twice the warning's
    deviations: a context whose windows vary widely, as a rare or bursty
    function's do, is throttled only far outside its own range). A
    causal chain that re-enters a function ``recursion_hops`` times opens a
    ``recursive_trigger`` alert, critical from ``recursion_critical_hops``.

    A spike must also be more than chance in the number of invocations:
    at least ``spike_min_count`` and ``spike_count_z`` Poisson deviations
    above the usual count of a window, unless each invocation itself costs
    ``spike_ratio`` times its usual cost (durations inflating; a window that
    is mostly one call is judged on the others). Without it, one run of a
    rare, costly timer would look like a spike.

    A cost alert is critical on the critical rate (a strong margin) or when
    an independent source (traces, billing) agrees on it; ``sources`` holds
    the metric, billing and agreement settings (see detector.sources).

    Early firing judges a window before it closes, on the part of it that
    has elapsed (at least ``early_min_elapsed_s``): its cost rate against
    the warning and critical rates, and its count against the count usual
    for that much time: at least ``early_min_count`` above it, and a count
    that a Poisson count reaches no more often than a normal one exceeds
    ``early_count_z`` deviations (its upper quantile). Both bars are higher
    than a closed window's, since every invocation is a new look at a
    shorter, noisier span. An early alert is critical when the count is also more than
    ``early_critical_z`` deviations above what the critical rate would
    bring, or the cost so far already exceeds a whole window at that rate.
    The calls started in the window are judged by the same test, priced at
    the context's usual cost per call, without waiting for the shortest
    span and without the whole-window rule (their cost is not spent yet).

    A context whose usual count was learnt from fewer than
    ``established_calls`` calls (its usual count of a window times the
    windows learnt; 0: no such rule) has no established usual: a batch
    job's first run is as far above it as a flood. On it, a cost spike
    whose rate alone is critical (early or at a window's close, with no
    independent source agreeing) opens or stays a warning until the
    excursion so far, from its first window (or its alert's start, if
    earlier) to now, has cost at least the critical rate over that time.
    A flood at the critical rate holds it from its first window and is
    critical as on any context; a run whose spans now and then reach the
    critical rate while it averages less only warns.

    A chain turns critical at ``recursion_critical_hops`` re-entries, or
    earlier, from ``recursion_hops`` on, when its generations grow by
    ``recursion_growth`` or more each (a fan-out loop, whose cost is
    geometric) and it has already run as many invocations of the function
    as a straight loop has at the critical count. A bounded retry, which
    requeues its own message at most N times, therefore never alerts for N
    below ``recursion_hops``, and only warns for N up to
    ``recursion_critical_hops - 1``: it reaches critical only by going on.
    Where the trace broke and neither side named the item, which write
    caused an invocation is a guess, and the interleaved chains of a bounded
    retry can add up to more than its N; such a chain turns critical by its
    count only beyond ``recursion_max_retries`` re-entries (the growth rule
    stands).

    The window-close rules (``detector.rules``) alert on their own kinds,
    judging a window, or quiet windows pooled for up to a minute:

    ``duration_inflation``: a window's mean billed duration per invocation
    is ``duration_ratio`` times its baseline, ``duration_z`` chance
    deviations above it (the spread of window means scaled to the window's
    count), with at least ``duration_min_count`` invocations, and the
    extra cost over the usual cost per invocation is at least
    ``duration_min_excess`` USD/h. When at least ``timeout_min_count``
    invocations time out, more than chance above the usual share of
    timeouts, ``duration_timeout_ratio`` is enough.

    ``error_storm``: at least ``error_min_count`` failed invocations, a
    failure share at least ``error_ratio`` times and ``error_min_share``
    above the usual share, ``error_z`` binomial deviations above the usual
    count, and failed invocations costing ``error_min_excess`` USD/h more
    than usual. The per-invocation baselines of both rules judge once they
    have learnt ``rule_warmup`` observations.

    ``slow_ramp``: a recent cost rate (half-life ``ramp_recent_half_life_s``)
    ``ramp_factor`` times and ``ramp_min_excess`` USD/h above a slow anchor
    (a running mean over ``ramp_anchor_warmup_s``, then a half-life of
    ``ramp_anchor_half_life_s``, frozen while any cost alert of the context
    is open), while no cost spike is open; or the spend of the day or month
    so far plus the recent rate to its end exceeding a budget; either for
    ``ramp_sustain_s`` in a row (judged once a minute; windows under a cost
    spike are left out of the recent rate). Budgets are USD per day and
    per month keyed by the context key
    (``provider/account/region/function/qualifier``) or by the function
    without qualifier (applied to each qualifier); without one, a warm
    anchor gives ``ramp_budget_factor`` times its daily spend (at least
    ``ramp_min_excess`` per hour), and its monthly spend alike. A key
    ``provider/account`` budgets the sum of the account's contexts (of the
    partitions the engine holds, each checkpointing its own share), judged
    each ``ramp_recent_half_life_s`` on the spend of the last hour of such
    buckets; its alert has the context ``provider/account/*/*/*``. A
    smaller rise is a ``slow_ramp`` warning too when the recent rate is
    ``ramp_warn_factor`` times and ``ramp_warn_min_excess`` USD/h above the
    anchor in invocations ``ramp_warn_z`` Poisson deviations above it (at
    the usual cost of one invocation); that path alone is never critical.

    ``duration_inflation`` and ``error_storm`` also open within a few
    calls, through per-call sequential tests (CUSUMs of log-likelihood ratios, see
    ``Rules.on_call``): of each successful call's log duration against the
    learnt mean and spread of the context's log durations, climbing on calls
    longer than ``duration_ratio`` times the usual, and of each call's
    failure flag, climbing on failure shares above the error bar. Each
    alerts at ``sequential_h``, once ``sequential_warmup`` calls have been
    learnt (half-life ``sequential_half_life`` calls, frozen while the
    alert is open) and the extra cost reaches the rule's minimum excess;
    their alerts are warnings, which the window-close rules escalate, and
    stay open while the statistic stays high.

    Severity of these rules is warning; it is critical only when the value
    reaches ``rule_critical_margin`` times its threshold (the ratio, the
    share above baseline, the budget) and the excess cost is at least
    ``critical_min_excess`` USD/h, because critical may reach enforcement.

    With ``seasonal`` the cost baseline keeps hour-of-day and day-of-week
    profiles (:class:`detector.baseline.SeasonalBaseline`). A context that
    is not warm yet is judged against its peers' pool once that has seen
    ``peer_warmup`` windows (the cold-start rule of :mod:`detector.baseline`).

    A rise too small in dollars for a spike opens a ``cost_spike`` warning
    when it holds (:class:`detector.rise.Rise`): over the last
    ``rise_windows`` windows of a warm context (0: off) the cost rate is
    ``rise_ratio`` times what its baseline expected, ``rise_z`` deviations
    and ``rise_min_excess`` USD/h above it, still half-way there and
    ``rise_trim_z`` deviations above it without the ``rise_trim``
    costliest windows, in more invocations than chance; or,
    sooner, a sequential test of its window counts against their usual
    (one CUSUM per ratio of ``rise_cusum_ratios``) reaches the threshold
    that keeps to one false alert per context in ``rise_false_alert_hours``
    (0: no such test); that test reads an open window call by call, as its
    close would, so it may warn at the call that crosses; for a context
    that has shown bursts, a window ``spike_ratio`` times its usual count
    starts that test afresh while its excursion is no longer than a burst,
    as one six times it does for any. It is never
    critical by itself; a later window over the spike thresholds escalates
    it as it would a spike.

    A context that bursts is not flagged for bursts like those it has shown
    (:class:`detector.baseline.Bursts`): an excursion above its own baseline
    of at most ``burst_windows`` windows is learnt, however high it went,
    the highest one fading with a half-life of ``burst_half_life_s`` (0
    ``burst_margin``: off). A window, or the elapsed part of one, whose
    excess over what was expected is within ``burst_margin`` times that
    burst's then raises nothing, at either severity, while its excursion is
    no longer than ``burst_windows`` windows; once it is longer, it alerts
    at the severity its rate earns, starting at the excursion's first
    window with the cost of all of it. History delays an alert, it never
    lifts the critical rate: the most that bursts shown before buy an
    attacker is ``burst_windows`` windows at no more than ``burst_margin``
    times their excess. An excursion beyond that alerts as on a context
    that never burst. Nothing is learnt of a longer excursion, nor of one
    that began under an alert already open. A window to learn from needs
    more invocations than chance with a floor of ``burst_min_count`` once
    the usual count is learnt, below the spike's, so that a rare function's
    bursts of a few calls are known before one of them is big enough to
    alert. Where the calls begun in a window are counted (START records or
    Telemetry API starts) and are a burst's count while those that ended in
    it are not, the window is judged on its starts, each at the context's
    usual cost of a call, as the early firing on starts prices them: a slow
    function's burst is in the windows its calls began in, its REPORTs come
    a minute or two later, spread thin.

    The cold-start rule of bursts: a context that has learnt fewer than
    ``burst_cold_windows`` windows of its own (and at least the few its level
    needs, :data:`detector.baseline.BURST_MIN_WINDOWS`) has had no time to
    show its bursts, so a warning on an excursion far above its own level
    waits while the excursion is no longer than ``burst_windows`` windows,
    as a learnt burst's would; longer, it opens as of the excursion's first
    window with the cost of all of it. Until the context is warm, its
    bursts are taken to reach up to the critical rate; from
    ``baseline_warmup`` windows on, less each window, down to the warning
    rate at ``burst_cold_windows``, so that its own history takes over
    gradually. A window beyond what the young context's bursts are taken to
    reach never waits, nor does one at the context's own level (a new
    function whose traffic is high from its first call meets its peers at
    once). A critical finding on an excursion opens at once too, but as a
    warning while the excursion is no longer than ``burst_windows`` windows
    and has cost less than that many windows at the critical rate (the most
    a young context's burst is taken to reach, less as it ages by the same
    share); past either it is critical.
    The first burst of a young context looks like a flood to it, and a
    critical alert throttles the function; a flood at ten times the critical
    rate is critical 4 s in. At the context's own level a critical window
    is critical at once. From
    ``burst_cold_windows`` on only the bursts
    it has shown hold a window (``burst_cold_windows`` at most
    BURST_MIN_WINDOWS: no such rule).

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
    recursion_growth: float = 1.5
    recursion_max_retries: int = 9
    baseline_half_life: float = 180.0
    baseline_warmup: int = 60
    spike_ratio: float = 2.5
    spike_min_excess: float = 0.5
    spike_z: float = 6.0
    critical_ratio: float = 10.0
    critical_min_excess: float = 2.0
    critical_z: float = 12.0
    spike_min_count: float = 5.0
    spike_count_z: float = 4.0
    early_min_elapsed_s: float = 2.0
    early_min_count: float = 10.0
    early_count_z: float = 5.0
    early_critical_z: float = 2.0
    established_calls: int = 50
    resolve_ratio: float = 1.5
    resolve_windows: int = 3
    lineage_quiet_s: float = 60.0
    trace_ttl_s: float = 120.0
    sources: SourcesConfig = field(default_factory=SourcesConfig)
    duration_ratio: float = 1.5
    duration_z: float = 6.0
    duration_min_count: float = 20.0
    duration_min_excess: float = 0.05
    duration_timeout_ratio: float = 1.2
    timeout_min_count: float = 3.0
    error_ratio: float = 3.0
    error_min_share: float = 0.2
    error_min_count: float = 10.0
    error_z: float = 6.0
    error_min_excess: float = 0.05
    ramp_recent_half_life_s: float = 600.0
    ramp_anchor_half_life_s: float = 6 * 3600.0
    ramp_anchor_warmup_s: float = 3600.0
    ramp_factor: float = 3.0
    ramp_sustain_s: float = 600.0
    ramp_min_excess: float = 0.5
    ramp_budget_factor: float = 3.0
    ramp_warn_factor: float = 1.5
    ramp_warn_z: float = 5.0
    ramp_warn_min_excess: float = 0.05
    daily_budgets: tuple[tuple[str, float], ...] = ()
    monthly_budgets: tuple[tuple[str, float], ...] = ()
    rule_critical_margin: float = 2.0
    rule_warmup: int = 20
    sequential_h: float = 13.0
    sequential_warmup: int = 200
    sequential_half_life: float = 2000.0
    seasonal: bool = True
    peer_warmup: int = 30
    online_model: bool = True
    anomaly_score: float = 0.8
    anomaly_windows: int = 3
    anomaly_ratio: float = 1.5
    anomaly_min_excess: float = 0.1
    model_learn_every: int = 4
    rise_windows: int = 9
    rise_ratio: float = 2.0
    rise_z: float = 5.0
    rise_trim: int = 4
    rise_min_count: float = 20.0
    rise_min_excess: float = 0.05
    burst_margin: float = 3.0
    burst_windows: int = 4
    burst_half_life_s: float = 86_400.0
    burst_cold_windows: int = 120
    rise_cusum_ratios: tuple[float, ...] = (1.5, 3.0)
    rise_false_alert_hours: float = 2000.0
    burst_min_count: float = 2.0
    rise_trim_z: float = 2.0
    burst_longest_windows: int = 12


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
    # Gates of early firing: USD per elapsed second of a window, invocations.
    early_rate: float = math.inf
    early_count: float = math.inf
    total_cost: float = 0.0
    late_events: int = 0
    last_time: float = 0.0
    last_rate: float = 0.0
    last_invocations: float = 0.0
    spike: _Alert | None = None
    recursion: _Alert | None = None
    # chain -> [hops, cost, ended, last time, projected USD/h, growth, fan-out,
    #          invocations, guessed]; made by the first chain, as most contexts
    #          have none.
    chains: dict[str, list[float]] | None = None
    sources: SourceState | None = None
    rules: RuleState | None = None
    peers: PeerPool | None = None
    fresh_until: float = -math.inf
    anomaly: _Alert | None = None
    rise: RiseRun | None = None
    # The cost rate from which a closed window may show a burst (see
    # Engine._track_burst); last, as checkpoints restore fields in order.
    burst_rate: float = math.inf
    # The invocations of the newest open window from which the rise run's
    # sequential test may fire before the window closes (see Rise.gate).
    rise_gate: float = math.inf
    # Window start -> the bits of the span sketches of that window, merged
    # over trace partitions until a later window reads them (see
    # Engine._take_span_window), the callers' above SKETCH_BITS in one int
    # (half the bytes of two); none for a context without spans.
    spans: dict[float, int] | None = None


@dataclass(slots=True)
class _Partition:
    contexts: dict[Context, _Context] = field(default_factory=dict)
    traces: TraceStage = field(default_factory=TraceStage)
    watermark: float = -math.inf
    # Checkpoints written before ``closing`` existed hold their windows to
    # close here, as a heap of (end, ticket, context, start); restore moves
    # them over (see _upgrade).
    due: list[tuple[float, int, Context, float]] = field(default_factory=list)
    ticket: int = 0
    number: int = 0
    sources: PartitionSources = field(default_factory=PartitionSources)
    pools: dict[tuple[str, ...], PeerPool] = field(default_factory=dict)
    model: Any = None
    model_ticks: int = 0
    # Windows to close, by end: every window of one partition ends on the
    # same grid, so a few lists in the order their windows opened replace a
    # heap entry per window; ``ends`` is the heap of their distinct ends.
    closing: dict[float, list[tuple[_Context, float]]] = field(default_factory=dict)
    ends: list[float] = field(default_factory=list)
    # What this partition's contexts spent of each account with a budget;
    # stored beside the checkpoint too, for the daemons holding the others.
    accounts: AccountShares = field(default_factory=dict)


class _Excursion(NamedTuple):
    """An excursion above a context's own level as far as it has gone: its
    windows not calm (with the one judged), whether it reaches that window
    through windows still open, the start of its first window, what it has
    cost, and the most windows a burst has."""

    windows: int
    goes_on: bool
    first: float
    spent: float
    burst_windows: int


# Accumulator slots of an open window (the hot path spells them 0 and 1),
# then the window-close rules' slots, then the calls started in the window,
# then cold starts, the longest billed call (ms) and the billed
# MB-milliseconds (GB-seconds times 1,024,000).
_COST, _COUNT = range(2)
_STARTS = WINDOW_SLOTS
_COLD, _PEAK_MS, _MB_MS = range(WINDOW_SLOTS + 1, WINDOW_SLOTS + 4)
_ACC_SLOTS = WINDOW_SLOTS + 4


def _longest_share(acc: list[float]) -> float:
    """The share of an open window's billed time its longest call took."""
    billed = acc[BILLED_MS]
    return acc[_PEAK_MS] / billed if billed > 0.0 else 0.0


def _looping_in_logs(state: _Context) -> bool:
    """Whether an open loop of ``state`` was seen in its own invocation records.

    Only those count: a loop followed through spans depends on when the
    traces are read, ahead of or behind the logs, and would make the
    sustained-rise path depend on the reading order.
    """
    recursion = state.recursion
    if recursion is None or not recursion.open or not state.chains:
        return False
    return any(
        name.startswith("lineage:") and not chain[2]
        for name, chain in state.chains.items()
    )


#: Observations the rules' per-invocation baselines need before the models
#: take them as a context's usual duration and error share.
_USUAL_MIN_OBSERVATIONS = 5

# Slots of a chain's figures in a context (see _Context.chains).
_CHAIN_SLOTS = 9
#: Windows of span sketches a context holds beyond the windows of the read
#: lag (Engine._span_lag), should some trace partitions run ahead.
_SPAN_WINDOWS_SPARE = 2
_SKETCH_MASK = (1 << SKETCH_BITS) - 1


def _upgrade(part: _Partition) -> _Partition:
    """Bring a partition restored from an older checkpoint to today's fields."""
    if not hasattr(part, "closing"):
        part.closing, part.ends = {}, []
    if not hasattr(part, "accounts"):
        part.accounts = {}  # from before account spend was checkpointed
    if part.due:
        # The old heap, in its order: by end, then by the order of opening.
        for end, _, context, start in sorted(part.due):
            state = part.contexts.get(context)
            if state is None:
                continue
            slot = part.closing.get(end)
            if slot is None:
                slot = part.closing[end] = []
                heapq.heappush(part.ends, end)
            slot.append((state, start))
        part.due = []
    for state in part.contexts.values():
        if not hasattr(state, "burst_rate"):
            # From before bursts were learnt: the next close sets it.
            state.burst_rate = math.inf
        if not hasattr(state, "rules"):
            state.rules = None  # a checkpoint from before the rules
        run = getattr(state, "rise", None)
        if run is not None and not hasattr(run, "seq"):
            # A run from before the sequential test: a later window starts anew.
            run = None
        state.rise = run
        if not hasattr(state, "spans"):
            state.spans = None  # from before span sketches
        if not hasattr(state, "rise_gate"):
            # From before the test was read per call: its windows' closes
            # (and the next window to open) set the gate.
            state.rise_gate = math.inf
        # Windows from before starts (or the models' slots) were counted lack
        # their slots; such a window's features miss what it did not count.
        for acc in state.windows.values():
            if len(acc) < _ACC_SLOTS:
                acc.extend([0.0] * (_ACC_SLOTS - len(acc)))
        pool = None if state.rules is None else state.rules.pool
        if pool is not None and len(pool) < POOL_SLOTS:
            # A pool from before it kept its longest call: none is left out.
            pool.extend([0.0] * (POOL_SLOTS - len(pool)))
    return part


class Engine:
    """Feeds events into per-partition state and collects what it emits."""

    def __init__(
        self,
        config: DetectorConfig | None = None,
        invocation_cost: Callable[[Invocation], float] | None = None,
        span_cost: Callable[[Span], float] | None = None,
        cost_model: CostModel | None = None,
        offline_model: Any = None,
    ) -> None:
        self.config = config or DetectorConfig()
        self._cost_model = cost_model
        #: A model trained offline (``models.offline.OfflineModel``), or none.
        self.offline_model = offline_model
        #: Called with (context, window start, features) of each warm window.
        self.on_window: Callable[[Context, float, dict[str, float]], None] | None
        self.on_window = None
        self._scores: dict[str, float] | None = None
        if invocation_cost is None or span_cost is None:
            if cost_model is None:
                from detector.cost import Pricing

                self._cost_model = cost_model = Pricing.load().model
            invocation_cost = invocation_cost or cost_model.invocation_cost
            span_cost = span_cost or cost_model.span_cost
        self._invocation_cost = invocation_cost
        self._span_cost = span_cost
        self._window = self.config.window_s
        self._hops = self.config.recursion_hops
        self._lateness = self.config.lateness_s
        self._per_hour = 3600.0 / self.config.window_s
        # The span a window's first seconds are judged over by early firing.
        self._first_span = self._early_span(0.0)
        # The chance of a look at a span passing early firing's count bar:
        # what early_count_z deviations of a normal count would leave.
        self._early_tail = normal_tail(self.config.early_count_z)
        self._rules = Rules(self.config)
        self._on_call = self._rules.on_call
        self._rise = Rise(self.config) if self.config.rise_windows > 0 else None
        cfg = self.config
        # A window this many times the level is still raised (a burst's tail).
        self._raised_ratio = (1.0 + cfg.rise_ratio) / 2.0
        self._bursts: Bursts | None = None
        if cfg.burst_margin > 0:
            self._bursts = Bursts(
                cfg.burst_windows,
                cfg.burst_half_life_s,
                cfg.window_s,
                max(cfg.burst_longest_windows, cfg.burst_windows),
            )
        self._parts: dict[int, _Partition] = {}
        self._transitions: list[Transition] = []
        self._evidence: list[Evidence] = []
        self._dirty: set[Context] = set()
        self._fusion = SourceFusion(
            self.config, self.config.sources, self._metric_minute_cost
        )
        self._reconciler = Reconciler(self._fusion, self.config.partitions)
        self.late_events = 0
        self.events = 0
        #: Span sketches that came after the window that reads them closed,
        #: and those of a context this partition holds no state for.
        self.late_span_windows = 0
        self.unmatched_span_windows = 0
        self._span_lag = max(1, math.ceil(SKETCH_WAIT_S / self._window - 1e-9))

    # Intake

    def process(self, event: Event, partition: int) -> None:
        """Take one event from the stream it travels on, at that partition."""
        self.events += 1
        self._take(self._parts.get(partition) or self._part(partition), event)

    def intake(self, partition: int) -> Callable[[Event], None]:
        """:meth:`process` at one partition, for the events of one batch.

        The partition is found once, not per event. What it returns holds
        until the partition is dropped or restored. An engine whose
        :meth:`process` does more gets that, bound to the partition.
        """
        if type(self).process is not Engine.process:
            process = self.process
            return lambda event: process(event, partition)
        part = self._parts.get(partition) or self._part(partition)
        on_invocation = self._on_invocation
        take = self._take

        def one(event: Event) -> None:
            self.events += 1
            if type(event) is Invocation:
                on_invocation(part, event)
            else:
                take(part, event)

        return one

    def _take(self, part: _Partition, event: Event) -> None:
        """Hand one event of a partition to the stage that owns its type."""
        if type(event) is Invocation:
            self._on_invocation(part, event)
        elif type(event) is InvocationStart:
            self._on_start(part, event)
        elif isinstance(event, Span):
            part.traces.process(event, self._evidence)
        elif isinstance(event, Metric):
            self._on_metric(part, event)
        elif isinstance(event, Billing):
            self._on_billing(part, event)

    def process_many(
        self,
        events: Sequence[Event],
        partitions: Sequence[int],
        on_output: Callable[[], None],
    ) -> None:
        """:meth:`process` each event at its partition, in order.

        ``on_output`` is called after each event that left transitions or
        evidence waiting, before the next event is taken, exactly as a caller
        of :meth:`process` checking :meth:`has_output` after each would.
        """
        parts = self._parts
        on_invocation = self._on_invocation
        take = self._take
        self.events += len(events)
        for event, partition in zip(events, partitions, strict=True):
            part = parts.get(partition) or self._part(partition)
            if type(event) is Invocation:
                # The bulk of a stream, without the call more of _take.
                on_invocation(part, event)
            else:
                take(part, event)
            if self._transitions or self._evidence:
                on_output()

    def process_evidence(self, evidence: Evidence, partition: int) -> None:
        """Take evidence from the trace stage (keyed by its context)."""
        part = self._part(partition)
        if evidence.kind == SPAN_WINDOW:
            self._take_span_window(part, evidence)
            return
        if evidence.kind in ITEM_FACTS or evidence.kind == CHAIN_ENDED:
            # Item facts of every trace partition meet here and make chains.
            for made in part.traces.pair_items(evidence):
                self.process_evidence(made, partition)
            if evidence.kind in ITEM_FACTS:
                return
        state = self._state(part, evidence.context)
        chains = state.chains
        chain = chains.get(evidence.chain) if chains is not None else None
        if evidence.kind == CHAIN:
            if chains is None:
                chains = state.chains = {}
            if chain is None:
                chain = chains[evidence.chain] = [0.0, 0.0, 0.0, evidence.time]
            if len(chain) < _CHAIN_SLOTS:
                chain.extend([0.0, 1.0, 0.0, 0.0, 0.0][len(chain) - _CHAIN_SLOTS :])
            chain[2] = 0.0
            if evidence.hops >= chain[0]:
                # The latest figures of a chain come with its highest count.
                chain[4] = evidence.projected_usd_per_hour
                chain[5] = evidence.growth
            chain[0] = max(chain[0], evidence.hops)
            chain[1] = max(chain[1], evidence.cost_usd)
            chain[3] = max(chain[3], evidence.time)
            chain[6] = max(chain[6], evidence.fan_out)
            chain[7] = max(chain[7], evidence.invocations)
            if evidence.guessed:
                chain[8] = 1.0
            self._on_chain(state, evidence)
        elif evidence.kind == CHAIN_ENDED and chains is not None and chain is not None:
            chain[2] = 1.0
            chain[3] = max(chain[3], evidence.time)
            if all(c[2] for c in chains.values()):
                # The last chain to end, not the last one read: partitions
                # are read in no fixed order.
                # Limitation: a chain read after the others all ended reopens the alert.
                ended = max(c[3] for c in chains.values())
                self._resolve_recursion(state, ended)

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
            open_alerts = self._open_alerts(state)
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
            self._flush_sources(part)

    @property
    def tracked_contexts(self) -> int:
        return sum(len(p.contexts) for p in self._parts.values())

    def computed_cost(self, context: Context, start: float, end: float) -> float:
        """USD computed for a context over [start, end), each source once.

        From the hourly totals (pro rata inside an hour); NaN when the period
        is older than they are kept for.
        """
        state = self._find(context)
        if state is None or state.sources is None:
            return 0.0
        total = state.sources.hours.total(start, end)
        return math.nan if total is None else total

    @property
    def source_counts(self) -> dict[str, int]:
        """Counters of the metric and billing rules (rejected, late, ...)."""
        fusion, rec = self._fusion, self._reconciler
        return {
            "metric_rejected": fusion.rejected,
            "metric_late": fusion.metric_late,
            "log_metric_disagreements": fusion.disagreements,
            "billing_rejected": rec.rejected,
            "billing_compared": rec.compared,
            "billing_uncovered": rec.uncovered,
            "billing_too_late": rec.too_late,
        }

    # Checkpoints

    def snapshot(self, partition: int) -> bytes:
        part = self._parts.get(partition) or _Partition()
        return pickle.dumps((SNAPSHOT_VERSION, part), protocol=5)

    def restore(self, partition: int, blob: bytes) -> None:
        version, part = pickle.loads(blob)
        if version not in READABLE_SNAPSHOTS:
            raise ValueError(
                f"snapshot version {version} is none of {READABLE_SNAPSHOTS}"
            )
        part.traces.span_cost = self._span_cost
        part.traces.windows.window_s = self._window
        self.drop(partition)
        part = self._parts[partition] = _upgrade(part)
        part.number = partition
        self._rules.adopt(partition, part.accounts)

    def drop(self, partition: int) -> None:
        """Forget a partition's state (it was revoked in a rebalance); its
        share of its accounts' spend counts on as a stored one."""
        part = self._parts.pop(partition, None)
        if part is not None:
            self._rules.release(partition, part.accounts, part.watermark)

    # Account shares of other daemons

    @property
    def has_account_budgets(self) -> bool:
        """Whether any budget is an account's, judged on every partition."""
        return self._rules.has_account_budgets

    def account_shares(self, partition: int) -> tuple[StoredShare, ...]:
        """The account shares of a partition held here, to store with its
        checkpoint."""
        part = self._parts.get(partition)
        if part is None or not part.accounts:
            return ()
        return self._rules.stored_shares(partition, part.accounts, part.watermark)

    def take_account_shares(self, shares: Sequence[StoredShare]) -> None:
        """Count the stored account shares of the partitions not held here.

        They replace those taken before; shares of partitions held here are
        left out, since their live shares count.
        """
        held = self._parts.keys()
        self._rules.take_others([s for s in shares if s.partition not in held])

    # Internals: state

    def _part(self, partition: int) -> _Partition:
        part = self._parts.get(partition)
        if part is None:
            traces = TraceStage(
                hops=self.config.recursion_hops,
                trace_ttl_s=self.config.trace_ttl_s,
                span_cost=self._span_cost,
                window_s=self.config.window_s,
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
                acc = state.windows[start] = [0.0] * _ACC_SLOTS
                self._schedule(part, state, start)
                if start >= state.fresh_until:
                    self._new_period(part, state, inv, start)
                if state.rise is not None:
                    self._gate_rise(state)
            n = inv.count
            acc[0] += cost
            acc[1] += n
            # Slots of the window-close rules: duration, failures, timeouts.
            billed = inv.billed_ms
            billed_n = billed * n
            acc[BILLED_MS] += billed_n
            # Slots of the models' features: GB-seconds, the longest call and
            # cold starts (a record with an init duration started an instance).
            acc[_MB_MS] += billed_n * inv.memory_mb
            if billed > acc[_PEAK_MS]:
                acc[_PEAK_MS] = billed
            if inv.init_ms > 0.0:
                acc[_COLD] += n
            status = inv.status
            if status != "success":
                acc[FAILED] += n
                acc[FAILED_COST] += cost
                if status == "timeout":
                    acc[TIMEOUTS] += n
            # Their sequential tests judge each call as it comes, save the
            # durations of a burst's calls (reported longest last).
            rules = state.rules
            if rules is None:
                rules = state.rules = RuleState()
            known = state.baseline.bursts
            judged = known is None or not began_in_burst(
                inv, known, self._window, self._burst_windows(state)
            )
            self._on_call(rules, context, inv, self._transitions, judged)
            spike = state.spike
            if spike is not None and spike.open:
                spike.cost += cost
            # Early firing: a necessary condition of _early_fire, on cached gates.
            if acc[1] >= state.early_count and acc[0] >= state.early_rate * (
                time - start
            ):
                self._early_fire(state, acc, start, n)
            # A rise's sequential test: a necessary condition of _rise_early.
            if acc[1] >= state.rise_gate:
                self._rise_early(state)
        if time > part.watermark:
            part.watermark = time
            ends = part.ends
            if ends and ends[0] <= time - self._lateness:
                self._close_due(part, time - self._lateness)

    def _on_start(self, part: _Partition, begun: InvocationStart) -> None:
        """Count a call that has begun in its window; judge the starts early.

        A start adds no cost and no invocation: both come from the call's
        REPORT. It only lets early firing see a flood of calls that are
        still running, on their count and their usual cost.
        """
        state = part.contexts.get(begun.context)
        if state is None or state.peers is None:
            # Limitation: starts count only once a REPORT of the context was read.
            return
        time = begun.time
        if time < state.closed_until:
            # Too late for early firing; the call's REPORT carries its cost.
            return
        if time > state.last_time:
            state.last_time = time
        start = time - time % self._window
        acc = state.windows.get(start)
        if acc is None:
            acc = state.windows[start] = [0.0] * _ACC_SLOTS
            self._schedule(part, state, start)
            if start >= state.fresh_until:
                self._refresh_thresholds(state, start)
            if state.rise is not None:
                self._gate_rise(state)
        starts = acc[_STARTS] = acc[_STARTS] + 1.0
        # The count gate is the cached one of the invocation path; the cost
        # gate prices each start at the context's usual cost per call.
        if starts >= state.early_count:
            each = self._usual_each(state)
            if each > 0.0 and starts * each >= state.early_rate * (time - start):
                self._early_fire_starts(state, acc, start, each)
        if time > part.watermark:
            part.watermark = time
            ends = part.ends
            if ends and ends[0] <= time - self._lateness:
                self._close_due(part, time - self._lateness)

    def _usual_each(self, state: _Context) -> float:
        """The usual cost of one call of a context in USD, 0 while unknown."""
        usual_count = state.counts.mean
        if usual_count <= 0.0:
            return 0.0
        return state.baseline.mean * self._window / 3600.0 / usual_count

    def _schedule(self, part: _Partition, state: _Context, start: float) -> None:
        """Close the window of ``state`` from ``start`` once the watermark allows."""
        end = start + self._window
        slot = part.closing.get(end)
        if slot is None:
            slot = part.closing[end] = []
            heapq.heappush(part.ends, end)
        slot.append((state, start))

    def _close_due(self, part: _Partition, horizon: float) -> None:
        # In order of end, and of opening among windows of one end: a window
        # scheduled while others close ends later, in a list of its own end.
        ends = part.ends
        closing = part.closing
        close = self._close_window
        while ends and ends[0] <= horizon:
            end = heapq.heappop(ends)
            for state, start in closing.pop(end):
                if end > state.closed_until:
                    close(part, state, start, end)
        billing = part.sources.due
        if billing and billing[0][0] <= horizon:
            self._reconcile_due(part, horizon)

    def _close_window(
        self, part: _Partition, state: _Context, start: float, end: float
    ) -> None:
        # Limitation: a close costs ~6 parses (baseline, source, rule learning).
        acc = state.windows.pop(start, None)
        begun = None
        if acc is not None and acc[_COUNT] == 0.0 and acc[_COST] == 0.0:
            # Only starts: no call ended in it, so it closes as an empty one,
            # save for the bursts, which are told of the calls it began.
            begun = acc[_STARTS]
            acc = None
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
        self._fusion.on_window(part.sources, state, start, cost, count, part.watermark)
        self._dirty.add(state.context)
        # Nothing below learns the baseline before learn_one: warm holds until
        # then. The models and the rise path have nothing to do with a cold
        # context (without a run): their calls are skipped.
        warm = baseline.is_warm
        if warm and (acc is not None or state.anomaly is not None):
            self._model_window(part, state, start, acc, under_alert)
        starts = begun if acc is None else acc[_STARTS]
        if under_alert or rate >= state.warn_rate:
            longest = 0.0 if acc is None else _longest_share(acc)
            self._judge_window(state, rate, cost, count, end, start, starts, longest)
            under_alert = state.spike is not None and state.spike.open
        elif rate >= state.burst_rate or (
            starts
            and starts * self._usual_each(state) * self._per_hour >= state.burst_rate
        ):
            self._track_burst(state, rate, cost, count, start, starts)
        self._scores = None
        if self._rise is not None:
            try:
                run = state.rise
            except AttributeError:
                run = None
            if warm or run is not None:
                under_alert = self._judge_rise(
                    state, start, end, rate, count, under_alert
                )
        if not under_alert:
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
            self._schedule(part, state, end)
        if state.chains:
            self._expire_lineage(state, end)
        self._refresh_thresholds(state, end)
        # Duration, error and budget rules judge the same window. Checkpoints
        # from before the rules existed restore contexts without the field.
        try:
            rules = state.rules
        except AttributeError:
            rules = None
        if rules is None:
            rules = state.rules = RuleState()
        spike_open = state.spike is not None and state.spike.open
        keep = self._rules.judge(
            rules,
            state.context,
            acc,
            start,
            end,
            spike_open,
            self._transitions,
            part.number,
            part.accounts,
            0.0 if acc is None else acc[_PEAK_MS],
        )
        if keep and not under_alert:
            self._schedule(part, state, end)

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
        baseline = state.baseline
        state.fresh_until = baseline.valid_until(at)
        reference = self._reference(state, at)
        bursts = self._bursts
        known = baseline.bursts
        # Windows far above the context's own level are looked at even when
        # they cannot warn: they may be bursts to learn.
        if bursts is None:
            state.burst_rate = math.inf
        elif known is not None and (known.run_windows > 0 or known.tail_open):
            # Every window, until the excursion and a learnt burst's tail are over.
            state.burst_rate = 0.0
        elif reference is not None and baseline.is_warm:
            state.burst_rate = self._excursion_rate(reference)
        else:
            state.burst_rate = self._excursion_rate((baseline.mean, baseline.deviation))
            if known is not None:
                state.burst_rate = self._held_bar(state, at, state.burst_rate)
        if reference is None:
            state.warn_rate = state.early_rate = state.early_count = math.inf
            return
        # Most contexts know no burst: their envelope is not looked up.
        envelope = 0.0 if known is None else self._burst_hold(state, at)[0]
        warn, crit = self._thresholds(reference, envelope)
        state.warn_rate = warn
        spike = state.spike
        if spike is None or not spike.open:
            state.early_rate = warn / 3600.0
        elif spike.severity != CRITICAL:
            # An open warning can only be escalated.
            state.early_rate = crit / 3600.0
        else:
            state.early_rate = state.early_count = math.inf
            return
        # The lowest count bar of _early_fire: at its shortest span, or the
        # whole-window bar when the cost so far is a window's at the critical
        # rate.
        shortest = self._early_count(state, self._first_span, exact=True)
        state.early_count = min(shortest, self._count_threshold(state))

    def _early_span(self, elapsed: float) -> float:
        """The span an elapsed part of a window is judged over, in seconds."""
        least = min(self.config.early_min_elapsed_s, self._window)
        return min(max(elapsed, least), self._window)

    def _early_count(self, state: _Context, span: float, exact: bool = False) -> float:
        """Calls (or starts) in ``span`` seconds of a window that are more
        than chance: at least ``early_min_count`` above the usual count, and
        its Poisson upper quantile at the tail ``early_count_z`` deviations
        of a normal count leave (``sqrt`` deviations would let a span of a
        few usual calls pass 25 to 60 times as often).

        ``exact`` for the cached gate; the per-call judgement takes the
        quantile of a mean rounded up within 1/128, never below the gate.
        """
        usual = state.counts.mean * span / self._window
        # Limitation: the tail is per look; a window holds many looks of early firing.
        quantile = upper_quantile if exact else cached_quantile
        bar = float(quantile(usual, self._early_tail))
        least = usual + self.config.early_min_count
        return bar if bar > least else least

    def _thresholds(
        self, reference: tuple[float, float], envelope: float = 0.0
    ) -> tuple[float, float]:
        """The warning and critical cost rates against a mean and deviation,
        and the excess of the bursts that hold the window back (``envelope``,
        see :meth:`_burst_hold`)."""
        # Comparisons rather than max and min calls, picking the same values.
        cfg = self.config
        base, deviation = reference
        least = 0.05 * base
        spread = least if least > deviation else deviation
        warn = cfg.spike_ratio * base
        other = base + cfg.spike_min_excess
        if other > warn:
            warn = other
        other = base + cfg.spike_z * spread
        if other > warn:
            warn = other
        crit = warn
        other = cfg.critical_ratio * base
        if other > crit:
            crit = other
        other = base + cfg.critical_min_excess
        if other > crit:
            crit = other
        other = base + cfg.critical_z * spread
        if other > crit:
            crit = other
        if envelope > 0.0:
            # A burst like those the context has shown is no news at either
            # severity. The caller passes no envelope once the excursion has
            # outlasted a burst, so this delays critical, never lifts it.
            other = base + cfg.burst_margin * envelope
            if other > warn:
                warn = other
            if other > crit:
                crit = other
        return warn, crit

    def _burst_windows(self, state: _Context) -> int:
        """The most windows above calm that a burst of ``state`` has."""
        bursts = self._bursts
        if bursts is None:
            return self.config.burst_windows
        return bursts.hold_windows(state.baseline)

    def _envelope(self, state: _Context, at: float) -> float:
        """The excess of the bursts known of ``state`` at ``at`` (0: none)."""
        bursts = self._bursts
        return 0.0 if bursts is None else bursts.envelope(state.baseline, at)

    def _burst_hold(
        self, state: _Context, start: float, observed: bool = False
    ) -> tuple[float, BurstState | None]:
        """What the known bursts of ``state`` make of the window from ``start``.

        The excess of the bursts that hold the window back (0: none), while
        its excursion is no longer than a burst; and once the excursion has
        outlasted one, nothing holds it and its state is returned, so that
        its alert starts at its first window. ``observed`` when the window
        has been shown to the bursts already (at its close): its excursion
        counts it then, and would count it otherwise.
        """
        bursts = self._bursts
        if bursts is None:
            return 0.0, None
        baseline = state.baseline
        envelope = bursts.envelope(baseline, start)
        if envelope <= 0.0:
            return 0.0, None
        if observed:
            outlasted = bursts.outlasted(baseline)
        else:
            # Limitation: a window still open before this one is not counted yet.
            outlasted = bursts.run_length(baseline, start) > bursts.hold_windows(
                baseline
            )
        if not outlasted:
            return envelope, None
        return 0.0, baseline.bursts

    def _young_share(self, state: _Context) -> float:
        """How young ``state`` is for the cold-start rule of bursts: 1 until
        its baseline is warm, falling to 0 at ``burst_cold_windows`` windows
        (0 too before its own level is known)."""
        if self._bursts is None:
            return 0.0
        n = state.baseline.n
        cold = self.config.burst_cold_windows
        if n < BURST_MIN_WINDOWS or n >= cold:
            return 0.0
        warm = self.config.baseline_warmup
        if n <= warm:
            return 1.0
        return (cold - n) / (cold - warm)

    def _young_hold(
        self,
        state: _Context,
        start: float,
        rate: float,
        thresholds: tuple[float, float],
        observed: bool,
    ) -> tuple[bool, BurstState | None]:
        """What the cold-start rule of bursts makes of a warning on the window
        from ``start`` at ``rate`` (against the warning and critical rates
        ``thresholds``): whether it waits; and once its excursion has
        outlasted a burst, that excursion, so that its alert starts at its
        first window.

        A young context's bursts are taken to reach up to the critical rate
        until it is warm, and less as it ages (:meth:`_young_share` of the way
        from the warning rate to the critical one). ``observed`` as for
        :meth:`_burst_hold`: at its close the window has been shown to the
        bursts, so it waits only as part of an excursion in progress; before,
        when it goes on with one, or when its rate so far is an excursion's
        above the context's own level. A window at that level, however far
        above the peers it is judged against, never waits: that is the
        context's traffic, not a burst of it.
        """
        share = self._young_share(state)
        warn, crit = thresholds
        if share <= 0.0 or rate >= warn + share * (crit - warn):
            return False, None
        run = self._excursion_so_far(state, start, None if observed else 0.0)
        if run.windows == 0:
            return False, None
        if run.windows > run.burst_windows:
            return False, state.baseline.bursts
        if observed or run.goes_on:
            # At its close the window is part of an excursion in progress;
            # before, one that goes on in windows not closed yet, whose
            # closes tell whether it has outlasted a burst.
            return True, None
        if run.windows == 1 and rate < self._excursion_rate(
            self._own_level(state, start)
        ):
            return False, None
        return True, None

    def _young_burst(
        self,
        state: _Context,
        start: float,
        rate: float,
        crit: float,
        spent: float | None = None,
    ) -> bool:
        """Whether a critical finding on the window from ``start`` at ``rate``
        (against the critical rate ``crit``) may be a burst of a young context
        (:meth:`_young_share`): it opens (or stays) a warning then.

        A young context's bursts are taken to reach up to the critical rate
        for up to ``burst_windows`` windows; its first one looks like a flood
        to it, and a critical alert throttles the function. So the finding
        is a warning while its excursion is no longer than a burst and has
        cost less than a burst's most: ``burst_windows`` windows at the
        critical rate until the context is warm, less as it ages (by the
        same share as the warnings' rule), so that a flood goes past it the
        sooner the stronger it is and the older the context.
        ``spent``: the cost so far of the window, not closed yet (None at
        its close, once it has been shown to the bursts). A window at the
        context's own level is not an excursion of it: critical against its
        peers, it is critical.
        """
        share = self._young_share(state)
        if share <= 0.0:
            return False
        run = self._excursion_so_far(state, start, spent)
        if run.windows == 0 or run.windows > run.burst_windows:
            return False
        most = share * crit * run.burst_windows * self._window / 3600.0
        if run.spent >= most:
            return False
        if spent is not None and run.windows == 1 and not run.goes_on:
            return rate >= self._excursion_rate(self._own_level(state, start))
        return True

    def _calls_learnt(self, state: _Context) -> float:
        """The calls the usual count of ``state`` was learnt from: its usual
        count of a window times the windows it has learnt (exactly that
        while they are fewer than its half-life spans, save clipped ones)."""
        counts = state.counts
        # Limitation: an excursion's windows before its alert add to it (clipped).
        return counts.mean * counts.n

    def _few_calls_hold(
        self,
        state: _Context,
        start: float,
        now: float,
        span: float,
        cost: float,
        crit: float,
        observed: bool,
        pending: float = 0.0,
    ) -> bool:
        """Whether a finding critical on its rate alone, on the window from
        ``start`` judged at ``now`` over ``span`` seconds at ``cost``, stays
        a warning because ``state`` has learnt its usual from too few calls.

        Fewer than ``established_calls``: its usual is a guess from a
        handful of calls, and a batch job's first run is as far above it as
        a flood. A span of such an excursion is then no ground to throttle
        the function; the excursion as a whole is. The finding is critical
        once what the excursion has cost since its first window (or since
        its alert, when that began earlier, as it does where bursts are not
        learnt) averages the critical rate ``crit``. A flood at the critical
        rate holds it from its first window, a batch whose spans only now
        and then reach it does not. ``observed`` at the window's close, as
        for :meth:`_burst_hold`; ``pending``: what the cost judged adds to
        the window's reports (the calls still running, priced).
        """
        least = self.config.established_calls
        if least <= 0 or self._calls_learnt(state) >= least:
            return False
        # Limitation: a metric minute's strong finding (logs not read) is not held.
        first, spent = start, cost
        if self._bursts is not None:
            run = self._excursion_so_far(state, start, None if observed else cost)
            if run.windows > 0:
                first, spent = run.first, run.spent
        spike = state.spike
        if spike is not None and spike.open and spike.starts_at < first:
            first, spent = spike.starts_at, spike.cost + pending
        # Limitation: a flood after a long, weaker excursion waits for its mean.
        lasted = now - first
        return spent * 3600.0 < crit * (lasted if lasted > span else span)

    def _excursion_so_far(
        self, state: _Context, start: float, spent: float | None
    ) -> _Excursion:
        """The excursion of ``state`` that the window from ``start`` is part
        of, so far (the bursts must be learnt).

        ``spent``: the cost so far of the window, not closed yet, which
        would go on with the excursion in progress or begin one; None at its
        close, once it has been shown to the bursts, when only an excursion
        still running holds it (none: no windows).
        """
        bursts = self._bursts
        assert bursts is not None
        baseline = state.baseline
        known = baseline.bursts
        most = bursts.max_windows
        if spent is None:
            if known is None or known.run_windows == 0:
                return _Excursion(0, False, start, 0.0, most)
            return _Excursion(
                known.run_windows, False, known.run_first, known.run_cost, most
            )
        length = bursts.run_length(baseline, start)
        goes_on = length == 1 and self._run_goes_on_open(state, start)
        if known is None or not (length > 1 or goes_on):
            return _Excursion(length, goes_on, start, spent, most)
        # The excursion's closed windows, and those still open before this.
        after = known.run_last
        spent += known.run_cost + sum(
            acc[_COST] for at, acc in state.windows.items() if after < at < start
        )
        return _Excursion(length, goes_on, known.run_first, spent, most)

    def _run_goes_on_open(self, state: _Context, start: float) -> bool:
        """Whether the excursion in progress of ``state`` reaches the window
        from ``start`` through windows that are still open."""
        known = state.baseline.bursts
        if known is None or known.run_windows == 0:
            return False
        between = sum(1 for s in state.windows if known.run_last < s < start)
        reach = (between + 1.5) * self._window
        return between > 0 and start - known.run_last <= reach

    def _beyond_bursts(self, envelope: float, cost: float, base: float) -> bool:
        """Whether ``cost``, spent in part of a window, is already beyond
        bursts of excess ``envelope`` for a whole window (at a ``base``
        expected rate).

        A burst of a few seconds extrapolated from those seconds looks far
        costlier than the windows it was learnt from; spent so far, it does
        not.
        """
        if envelope <= 0.0:
            return True
        excess = cost * self._per_hour - base
        return excess >= self.config.burst_margin * envelope

    def _own_level(self, state: _Context, at: float) -> tuple[float, float]:
        """What the context's own baseline expects of the window from ``at``.

        While it is cold, its plain level: its seasons are not learnt yet.
        """
        baseline = state.baseline
        if baseline.is_warm:
            return baseline.expected(at)
        return baseline.mean, baseline.deviation

    def _excursion_rate(self, level: tuple[float, float]) -> float:
        """A spike's warning rate against a level, without its dollar floor:
        far above the level, however cheap."""
        cfg = self.config
        mean, deviation = level
        least = 0.05 * mean
        spread = least if least > deviation else deviation
        low = cfg.spike_ratio * mean
        high = mean + cfg.spike_z * spread
        return high if high > low else low

    def _track_burst(
        self,
        state: _Context,
        rate: float,
        cost: float,
        count: float,
        at: float,
        starts: float | None = None,
    ) -> None:
        """Show the window from ``at`` to what learns the bursts of ``state``.

        ``starts``: the calls that began in the window (None: not known). A
        window whose ending calls make a burst's count while those that
        began in it do not holds calls that began earlier, in the burst
        before it: it is that burst's tail, not more of it. One whose starts
        make a burst's count while its ending calls do not is a burst of
        calls still running, judged on its starts (see the class notes).

        Against the context's own level, warm or not, so that bursts seen
        while it was judged against its peers (or not at all) are known once
        it is warm. A burst is learnt at any height, even one that raised an
        alert of its own; nothing is learnt of an excursion that began while
        an alert of something before it was open (a flood, a sustained rise),
        nor of one in which a recursive-trigger alert of the context is open.
        """
        bursts = self._bursts
        baseline = state.baseline
        if bursts is None:
            return
        level = self._own_level(state, at)
        least = self._burst_count(state)
        begun = False
        if starts is not None and starts >= least > count:
            # The calls it began are a burst's count, those that ended in it
            # are not: a slow function's burst, whose reports come windows
            # later, spread thin. It is the burst's own window, at the usual
            # cost of its calls (as the early firing on starts prices them).
            guess = starts * self._usual_each(state) * self._per_hour
            if guess > rate:
                rate, count, begun = guess, starts, True
        bar = self._excursion_rate(level)
        if rate < bar and baseline.bursts is not None:
            bar = self._held_bar(state, at, bar)
        excursion = rate >= bar and self._burst_significant(state, cost, count)
        late = False
        # Limitation: without START records no window is told to hold late calls.
        if starts is not None:
            late = count >= least > starts
        spike = state.spike
        held = spike is not None and spike.open
        # Limitation: an attack throttled within the burst length is learnt as a burst.
        learnable = True
        if held and spike is not None:
            rising = getattr(state, "rise", None)
            learnable = spike.starts_at >= bursts.run_start(baseline, at) and not (
                rising is not None and rising.alerting
            )
        loop = state.recursion
        if loop is not None and loop.open:
            # The excursions of a context whose own loop is alerting are the
            # loop's waves: learnt as bursts, they would hold its cost alerts.
            learnable = False
        excess = rate - level[0]
        # Raised as the fixed horizon of the rise path would find a level.
        raised = excess > 0.0 and rate >= self._raised_ratio * level[0]
        bursts.observe(
            baseline,
            at,
            excess,
            excursion,
            learnable,
            held,
            cost,
            raised,
            starts,
            late,
            begun,
        )

    def _held_bar(self, state: _Context, at: float, bar: float) -> float:
        """The rate from which a window of ``state``, which knows bursts, is
        an excursion: ``bar`` (far above its own level), or lower, the rate
        at which it would warn against its reference but for those bursts.

        Such a window is held back only while its excursion is no longer
        than a burst, so it must count in one. A young context's own level
        may have learnt a deviation from its first burst that puts ``bar``
        above what its peers make a warning.
        """
        reference = self._reference(state, at)
        if reference is None:
            return bar
        warn = self._thresholds(reference)[0]
        return warn if warn < bar else bar

    def _burst_significant(self, state: _Context, cost: float, count: float) -> bool:
        """Whether a window holds more invocations than chance, as a burst to
        learn: the spike's test, its count with a floor of ``burst_min_count``
        calls rather than ``spike_min_count``.

        The spike's floor is a bar for alerting. A rare function's bursts of
        a few calls a window stay under it, and were they not learnt, its
        first burst above the floor would alert as if it had never burst.
        A few dear calls are no burst: that branch keeps the spike's floor,
        and so does the count until its baseline is warm (a young one's
        usual count is no measure of chance yet).
        """
        # Limitation: a rare function's chance windows of 2-3 calls count as bursts.
        if count >= self._burst_count(state):
            return True
        return self._significant(state, cost, count)

    def _burst_count(self, state: _Context) -> float:
        """The calls in a window that are more than chance for ``state``, as
        a burst to learn (see :meth:`_burst_significant`)."""
        cfg = self.config
        counts = state.counts
        usual = counts.mean
        least = cfg.burst_min_count if counts.is_warm else cfg.spike_min_count
        return usual + max(least, cfg.spike_count_z * math.sqrt(usual))

    def _count_threshold(self, state: _Context) -> float:
        """Invocations in a window that are more than chance."""
        usual = state.counts.mean
        cfg = self.config
        return usual + max(cfg.spike_min_count, cfg.spike_count_z * math.sqrt(usual))

    def _significant(
        self, state: _Context, cost: float, count: float, longest: float = 0.0
    ) -> bool:
        """Whether a window's calls are more than chance: more of them than
        usual, or dearer calls than usual.

        ``longest`` is the share of the window's billed time that its
        longest call took, when known. A window that is mostly that call is
        judged on the others, priced at their share of the billed time:
        durations are log-normal, and one call from the far tail can cost
        as much as a window of the usual traffic, while an attack's calls
        are dearer all through.
        """
        if count >= self._count_threshold(state):
            return True
        usual_count = state.counts.mean
        if count < self.config.spike_min_count or usual_count <= 0:
            return False
        usual_each = state.baseline.mean * self.config.window_s / 3600 / usual_count
        each = cost / count
        if longest > 0.5:
            each = cost * (1.0 - longest) / (count - 1)
        return each >= self.config.spike_ratio * usual_each

    def _early_fire(
        self, state: _Context, acc: list[float], start: float, calls: int
    ) -> None:
        """Judge the elapsed part of the window from ``start``; fire if it is enough.

        The elapsed part ends at the latest event time of the context (an
        event read late counts with those after it). Its cost rate is judged
        against the thresholds the window close uses, and its count against
        the count usual for that span, so a couple of calls never fire, nor
        does a burst no longer than a few seconds of a busy function. A
        record of ``calls`` > 1 aggregates calls made at unknown times: it
        fires only when the window is critical whatever the rest holds, and
        leaves the rest to the window close.
        """
        self._judge_early(state, acc, start, acc[_COST], acc[_COUNT], calls, 0.0)

    def _early_fire_starts(
        self, state: _Context, acc: list[float], start: float, each: float
    ) -> None:
        """Judge the elapsed part of a window on the calls started in it.

        The same test as :meth:`_early_fire`, with the starts for the count
        and ``each`` (the usual cost of a call) times their number for the
        cost, since a call still running has no cost yet.
        """
        starts = acc[_STARTS]
        self._judge_early(state, acc, start, starts * each, starts, 1, each)

    def _judge_early(
        self,
        state: _Context,
        acc: list[float],
        start: float,
        cost: float,
        count: float,
        calls: int,
        each: float,
    ) -> None:
        """Fire on the elapsed part of a window, judged on ``cost`` and
        ``count``: its reports, or with ``each`` > 0 its starts priced at
        ``each`` apiece."""
        spike = state.spike
        escalate = spike is not None and spike.open
        if escalate and spike is not None and spike.severity == CRITICAL:
            state.early_rate = state.early_count = math.inf
            return
        reference = self._reference(state, start)
        if reference is None:
            return
        envelope, run = self._burst_hold(state, start)
        warn, crit = self._thresholds(reference, envelope)
        # Whatever the rest of the window holds, this one is critical. Only
        # for cost already spent: the starts' cost is a guess (a burst of
        # starts of a batch is usual), so they take the count margin below.
        whole = each == 0.0 and cost >= crit * self._window / 3600.0
        whole = whole and count >= self._count_threshold(state)
        if calls != 1 and not whole:
            return
        # Limitation: an aggregate read before single records in a window is not seen.
        elapsed = min(state.last_time - start, self._window)
        span = self._early_span(elapsed)
        needed = self._early_count(state, span)
        if count < needed and not whole:
            return
        rate = cost * 3600.0 / span
        if rate < (crit if escalate else warn):
            return
        # Critical on the critical rate with a margin for chance: the count
        # against what that rate would bring at the same cost per call.
        at_crit = count * crit / rate
        z = self.config.early_critical_z
        strong = whole or count >= at_crit + z * math.sqrt(at_crit)
        if not self._beyond_bursts(envelope, cost, reference[0]):
            # Like the bursts the context has shown, at either severity,
            # while its excursion is no longer than one.
            return
        young = strong and (
            self._young_burst(state, start, rate, crit, acc[_COST])
            or self._few_calls_hold(
                state,
                start,
                state.last_time,
                span,
                cost,
                crit,
                False,
                cost - acc[_COST],
            )
        )
        if young:
            if escalate:
                # The open warning is all a young context's burst, or an
                # excursion of a context with few calls learnt, may raise.
                return
            # Raised at once, as a warning: it is critical once it outlasts
            # a burst, or once its excursion has held the critical rate.
            strong = False
        # Before the shortest span has passed the rate is understated: only
        # a critical finding is sure enough, a warning from reports waits
        # for the span. Starts need not wait: they are judged over the whole
        # span already, and the next start of a flood may come seconds later.
        if not (strong or young) and (escalate or (elapsed < span and each == 0.0)):
            return
        if not (strong or young or escalate):
            limits = (warn, crit)
            held, young_run = self._young_hold(state, start, rate, limits, False)
            if held:
                return
            run = young_run if run is None else run
        # Agreement from other topics (traces, billing) is left to the window
        # close: a daemon may read them ahead of or behind the logs.
        severity = CRITICAL if strong else WARNING
        on = "whole window at the critical rate" if whole else "elapsed rate"
        usual = round(state.counts.mean * span / self._window, 2)
        detail: dict[str, object] = {
            "elapsed_s": round(elapsed, 3),
            "span_s": round(span, 3),
            "cost_so_far_usd": round(acc[_COST], 6),
            "invocations_so_far": int(acc[_COUNT]),
        }
        if each > 0.0:
            # Calls still running are in the starts only: their count and
            # estimated cost are the evidence until their REPORTs come.
            detail.update(
                starts_so_far=int(count),
                starts_needed=round(needed, 2),
                starts_usual=usual,
                usual_cost_per_call_usd=round(each, 9),
                estimated_cost_usd=round(cost, 6),
            )
            on = f"starts, {on}"
        else:
            detail.update(invocations_needed=round(needed, 2), invocations_usual=usual)
        detail["threshold_usd_per_hour"] = round(crit if strong else warn, 6)
        detail["on"] = on
        # The alert's cost is what REPORTs have brought; those still to come
        # add theirs as they arrive, so a start is never priced twice.
        self._raise_spike(
            state,
            rate,
            acc[_COST],
            state.last_time,
            severity,
            early=True,
            early_on=detail,
            run=run,
        )
        if state.spike is not None and state.spike.severity == CRITICAL:
            state.early_rate = state.early_count = math.inf
        else:
            state.early_rate = crit / 3600.0

    def _judge_window(
        self,
        state: _Context,
        rate: float,
        cost: float,
        count: float,
        end: float,
        start: float | None = None,
        starts: float | None = None,
        longest: float = 0.0,
    ) -> None:
        """Judge a closed window's cost rate; ``longest`` is its longest
        call's share of its billed time (see :meth:`_significant`)."""
        at = end - self._window if start is None else start
        # First what the window shows of the context's bursts: a burst that
        # it ends is known when the window itself is judged.
        self._track_burst(state, rate, cost, count, at, starts)
        reference = self._reference(state, at)
        if reference is None:
            return
        envelope, run = self._burst_hold(state, at, observed=True)
        warn, crit = self._thresholds(reference, envelope)
        base = reference[0]
        # Limitation: an attack like learnt bursts goes unflagged for the burst length.
        if rate >= warn and self._significant(state, cost, count, longest):
            agreeing = self._fusion.agreeing(state, end, LOGS)
            severity = fused_severity(rate >= crit, agreeing)
            opening = state.spike is None or not state.spike.open
            # Only a finding critical on its rate alone may wait for the
            # excursion of a context with few calls learnt to hold it.
            if severity == CRITICAL and (
                self._young_burst(state, at, rate, crit)
                or (
                    fused_severity(False, agreeing) != CRITICAL
                    and self._few_calls_hold(
                        state, at, end, self._window, cost, crit, True
                    )
                )
            ):
                # At once, but no more than a warning while it may be a burst.
                severity = WARNING
            elif severity != CRITICAL and opening:
                limits = (warn, crit)
                held, young_run = self._young_hold(state, at, rate, limits, True)
                if held:
                    return
                run = young_run if run is None else run
            self._raise_spike(state, rate, cost, end, severity, early=False, run=run)
            return
        spike = state.spike
        if spike is None or not spike.open:
            return
        run = getattr(state, "rise", None)
        if run is not None and run.alerting:
            # The rise path judges the end of its alert on its own horizon.
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

    def _judge_rise(
        self,
        state: _Context,
        start: float,
        end: float,
        rate: float,
        count: float,
        under_alert: bool,
    ) -> bool:
        """The sustained-rise path of a closed window; whether a cost alert is
        open after it (see detector.rise). The run that is left sets the gate
        on which the windows still open are read call by call."""
        under_alert = self._judge_rise_window(
            state, start, end, rate, count, under_alert
        )
        if state.rise is None:
            state.rise_gate = math.inf
        else:
            self._gate_rise(state)
        return under_alert

    def _judge_rise_window(
        self,
        state: _Context,
        start: float,
        end: float,
        rate: float,
        count: float,
        under_alert: bool,
    ) -> bool:
        """The closed window's judgement proper; :meth:`_judge_rise` then sets
        the gate from the run it leaves."""
        # A context seen through metric streams only has the same path on its
        # minutes (SourceFusion._judge_rise), which findings bring here.
        rise = self._rise
        assert rise is not None
        try:
            run = state.rise
        except AttributeError:
            run = None
        baseline = state.baseline
        counts = state.counts
        level = baseline.mean
        if run is None:
            if (
                under_alert
                or not baseline.is_warm
                or _looping_in_logs(state)
                or not rise.may_start(rate, level, count, counts.mean)
            ):
                # Only against the context's own history: a cold one meets
                # its peers in the spike path, and a deploy is learnt; a
                # spike owns its own, and a loop the invocation records
                # themselves show (Lineage) explains the rise.
                return under_alert
            run = state.rise = rise.start(start, counts.mean, level, counts.deviation)
        elif under_alert and not run.alerting:
            # The spike detector opened the alert first: it owns it.
            state.rise = None
            return under_alert
        spike = state.spike
        if run.alerting and (spike is None or not spike.open):
            # Resolved through another source (a metric stream's minutes).
            state.rise = None
            return under_alert
        mean, spread = baseline.expected(start)
        # The counts have no season of their own: the hour's profile scales them.
        season = mean / level if level > 0 else 1.0
        usual = counts.mean * season
        bursty = self._bursting(state, start, observed=True)
        rise.push(
            run,
            start,
            rate,
            mean,
            spread,
            count,
            usual,
            counts.deviation,
            season,
            bursty,
        )
        if run.alerting and spike is not None:
            if not rise.calm(run):
                return True
            found = rise.measure(run)
            self._emit(state, spike, RESOLVED, end, self._rise_evidence(state, found))
            spike.open = False
            state.rise = None
            return False
        usual_each = 0.0
        if counts.mean > 0:
            usual_each = level * self._window / 3600.0 / counts.mean
        finding = rise.fires(run, usual_each)
        if finding is None:
            if rise.fading(run):
                state.rise = None
            return under_alert
        if self._rise_held_by_bursts(state, start, finding, True, run):
            return under_alert
        self._open_rise(state, run, finding, end)
        return True

    def _bursting(self, state: _Context, start: float, observed: bool) -> bool:
        """Whether the window from ``start`` may be one of the bursts that
        ``state`` has shown: some are known and its excursion, if it is
        one, is no longer than a burst (``observed``: see :meth:`_burst_hold`).

        The rise path's sequential test starts afresh on such a window when
        it is as steep as a burst's (see ``Rise._steep_of``); once the
        excursion has outlasted a burst its windows count as any level's.
        """
        if state.baseline.bursts is None:
            return False
        return self._burst_hold(state, start, observed)[0] > 0.0

    def _rise_held_by_bursts(
        self,
        state: _Context,
        start: float,
        finding: RiseFinding,
        observed: bool,
        run: RiseRun,
    ) -> bool:
        """Whether a rise no longer than the bursts ``state`` has shown, and
        within their excess, waits as the spike path's like windows do; or,
        on a longer horizon, whether it is a burst's (:meth:`_burst_rise`).

        A bursty function's bursts fill a short horizon at many times its
        usual count; once the excursion outlasts a burst nothing holds it.
        A young context (:meth:`_young_share`) is taken to burst before it
        has shown it: a longer horizon of its waits for its latest excursion
        as for a learnt burst, and read early (not ``observed``) it is left
        to the window's close, where that excursion is known to have ended,
        and been learnt, or to go on.
        """
        bursts = self._bursts
        if bursts is None:
            return False
        young = self._young_share(state) > 0.0
        if finding.horizon_s > bursts.max_windows * self._window:
            if young and not observed:
                return True
            return self._burst_rise(state, start, finding, run)
        if young:
            # The cold-start rule of bursts: too young to know its bursts.
            return True
        envelope, _ = self._burst_hold(state, start, observed)
        excess = finding.rate - finding.expected
        return envelope > 0.0 and excess < self.config.burst_margin * envelope

    def _burst_rise(
        self, state: _Context, start: float, finding: RiseFinding, run: RiseRun
    ) -> bool:
        """Whether the horizon of ``run`` rose only through a burst like those
        ``state`` has shown: without the windows that burst fills (its tail
        of calls that end after it included, as far as the context's own
        burst length reaches, and the window before it, where its first
        calls fall), the rest is no level.

        The calls of a burst end after it, the later the longer they run: a
        slow function's burst of three windows leaves several more raised,
        which the fixed horizon's trim of the costliest few does not take
        out. An excursion longer than the context's own bursts is no burst
        and is judged whole, as is any rise where no burst is known; on a
        young context the latest excursion is taken for a burst like those
        shown before even if it is the first.
        """
        bursts = self._bursts
        rise = self._rise
        if bursts is None or rise is None or self._envelope(state, start) <= 0.0:
            return False
        young = self._young_share(state) > 0.0
        extent = bursts.burst_extent(state.baseline, first_too=young)
        if extent is None:
            return False
        first, end = extent
        return not rise.level_outside(run, first - self._window, end, finding)

    def _open_windows(self, state: _Context, run: RiseRun) -> list[RiseWindow]:
        """The windows of ``state`` still open after ``run``'s latest, in order,
        as :meth:`Rise.push` takes them (what their closes would pass)."""
        windows: list[RiseWindow] = []
        baseline = state.baseline
        counts = state.counts
        level = baseline.mean
        for start in sorted(s for s in state.windows if s >= run.last_end):
            acc = state.windows[start]
            mean, spread = baseline.expected(start)
            season = mean / level if level > 0 else 1.0
            windows.append(
                (
                    start,
                    acc[_COST] * self._per_hour,
                    mean,
                    spread,
                    acc[_COUNT],
                    counts.mean * season,
                    counts.deviation,
                    season,
                )
            )
        return windows

    def _gate_rise(self, state: _Context) -> None:
        """Cache the count from which the newest open window of ``state`` is
        judged by its rise run's sequential test call by call."""
        rise, run = self._rise, state.rise
        if run is None or rise is None or not rise.may_cross(run, len(state.windows)):
            # Most runs are chance: far from the threshold, whatever comes.
            state.rise_gate = math.inf
            return
        windows = self._open_windows(state, run)
        if not windows:
            state.rise_gate = math.inf
            return
        bursty = self._bursting(state, windows[-1][0], observed=False)
        state.rise_gate = self._gate_of(rise, run, windows, bursty)

    @staticmethod
    def _gate_of(
        rise: Rise, run: RiseRun, windows: list[RiseWindow], bursty: bool
    ) -> float:
        """The count from which the newest of ``windows`` may make ``run``'s
        sequential test fire, the older ones as they stand (``bursty``: see
        :meth:`_bursting`)."""
        start, _, mean, spread, _, _, _, season = windows[-1]
        return rise.gate(run, windows[:-1], start, mean, spread, season, bursty)

    def _rise_early(self, state: _Context) -> None:
        """Judge a rise run's sequential test on the open windows as they
        stand, once the newest holds as many calls as its gate; open the
        warning at the latest call if it fires.

        The close of each window updates the run exactly as before: this
        reads ahead on a copy, and a crossing read here is one the close
        would read too, so the budget of false alarms is unchanged.
        """
        rise, run = self._rise, state.rise
        state.rise_gate = math.inf
        if rise is None or run is None or run.alerting:
            return
        spike = state.spike
        if spike is not None and spike.open:
            return  # opened by the spike path, which owns it
        windows = self._open_windows(state, run)
        if not windows:
            return
        if any(w[1] >= state.warn_rate for w in windows[:-1]):
            # An older window that the spike path judges at its close: its
            # alert (at that window's end) comes first; leave it to the closes.
            return
        bursty = self._bursting(state, windows[-1][0], observed=False)
        found = rise.peek(run, windows, bursty)
        if found is None:
            # Not yet, or not on the cost: judged again once the gate as it
            # stands now is reached; one past the calls so far at least.
            gate = self._gate_of(rise, run, windows, bursty)
            state.rise_gate = gate if gate > windows[-1][4] else math.inf
            return
        start = windows[-1][0]
        twin = run.copy()
        for window in windows:
            rise.push(twin, *window, bursty)
        if self._rise_held_by_bursts(state, start, found, False, twin):
            return  # left to the close, which holds it or not
        detail: dict[str, object] = {
            "on": "invocations so far",
            "elapsed_s": round(min(state.last_time - start, self._window), 3),
            "invocations_so_far": int(windows[-1][4]),
        }
        self._open_rise(state, run, found, state.last_time, detail)
        # As after an early warning of the spike path: only escalation is
        # left to read early.
        self._refresh_thresholds(state, start)

    def _open_rise(
        self,
        state: _Context,
        run: RiseRun,
        found: RiseFinding,
        at: float,
        early_on: dict[str, object] | None = None,
    ) -> None:
        """Open a cost alert from a sustained rise: a warning, whatever its
        sources; a later window over the spike thresholds may escalate it.
        ``early_on``: what an open window held when it was read early."""
        spike = self._opened_warning(state, at, found.cost_usd, found.rate)
        run.alerting = True
        state.rise_gate = math.inf
        evidence = self._rise_evidence(state, found)
        if early_on is not None:
            evidence["early"] = True
            evidence["early_on"] = early_on
        self._emit(state, spike, OPENED, at, evidence)

    def _opened_warning(
        self, state: _Context, at: float, cost: float, rate: float
    ) -> _Alert:
        """The cost alert of ``state`` opened as a warning from ``at``, not
        yet emitted: its opening's evidence may read it."""
        spike = state.spike
        if spike is None:
            spike = state.spike = _Alert(
                COST_SPIKE, fingerprint(state.context, COST_SPIKE)
            )
        spike.calm = 0
        spike.open = True
        spike.severity = WARNING
        spike.starts_at = at
        spike.cost = cost
        spike.peak = spike.reported_peak = rate
        return spike

    def _rise_evidence(self, state: _Context, found: RiseFinding) -> dict[str, object]:
        evidence = self._spike_evidence(state, found.rate, state.closed_until)
        evidence.update(found.evidence())
        evidence["early"] = False
        return evidence

    def _open_metric_rise(self, state: _Context, finding: Finding) -> None:
        """Open a warning from the sustained rise of a metrics-only context's
        minutes; a later minute over the spike thresholds may escalate it."""
        horizon_cost = finding.evidence.get("horizon_cost_usd", finding.cost)
        spike = self._opened_warning(
            state, finding.at, float(horizon_cost), finding.rate
        )
        evidence = self._metric_rise_evidence(state, finding)
        self._emit(state, spike, OPENED, finding.at, evidence)

    def _metric_rise_evidence(
        self, state: _Context, finding: Finding
    ) -> dict[str, object]:
        evidence = self._spike_evidence(state, finding.rate, finding.at, METRICS)
        evidence.update(finding.evidence)
        evidence["early"] = False
        return evidence

    def _raise_spike(
        self,
        state: _Context,
        rate: float,
        window_cost: float,
        at: float,
        severity: str,
        early: bool,
        leader: str = LOGS,
        early_on: dict[str, object] | None = None,
        run: BurstState | None = None,
    ) -> None:
        """Open, escalate or update the cost alert of ``state``. ``run``: the
        excursion held back as a burst that has outlasted one; a new alert
        starts at its first window and counts the cost of all its windows."""
        spike = state.spike
        if spike is None:
            spike = state.spike = _Alert(
                COST_SPIKE, fingerprint(state.context, COST_SPIKE)
            )
        spike.calm = 0
        evidence = self._spike_evidence(state, rate, at, leader)
        evidence["early"] = early
        if early_on is not None:
            # What the elapsed part of the window showed when it fired.
            evidence["early_on"] = early_on
        if not spike.open:
            spike.open = True
            spike.severity = severity
            spike.starts_at = at
            spike.cost = window_cost
            if run is not None:
                # At a window's close the run holds the window already.
                closed = not early
                spike.starts_at = run.run_first
                spike.cost = run.run_cost if closed else run.run_cost + window_cost
                evidence["held_as_burst"] = {
                    "first_window_at": run.run_first,
                    "windows": run.run_windows + (0 if closed else 1),
                    "burst_windows": self.config.burst_windows,
                }
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
        self,
        state: _Context,
        rate: float,
        at: float | None = None,
        leader: str = LOGS,
    ) -> dict[str, object]:
        """What fired, by how much against what baseline, and every source."""
        when = state.closed_until if at is None else at
        track = state.sources.metric if state.sources is not None else None
        if leader == METRICS and track is not None:
            baseline, window = track.baseline, 60.0
            base = baseline.mean
        else:
            baseline, window = state.baseline, self._window
            # The seasonal expectation, or the peers' while the context is cold.
            reference = self._reference(state, when)
            base = baseline.mean if reference is None else reference[0]
        agreeing = self._fusion.agreeing(state, when, leader)
        evidence: dict[str, object] = {
            "source": "invocations" if leader == LOGS else leader,
            "fired": "cost rate above its baseline",
            "rate_usd_per_hour": round(rate, 6),
            "baseline_usd_per_hour": round(base, 6),
            "ratio": round(rate / base, 2) if base > 0 else None,
            "baseline_windows": baseline.n,
            "window_s": window,
            "projected_usd_per_hour": round(
                rate if leader == METRICS else max(rate, state.last_rate), 6
            ),
            "sources_agreeing": agreeing,
            "sources": self._source_entries(state),
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
        acc: list[float] | None,
        under_alert: bool,
    ) -> None:
        """Score a warm context's window with the models; let them learn it."""
        cfg = self.config
        cost, count = (acc[_COST], acc[_COUNT]) if acc is not None else (0.0, 0.0)
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
            # A burst like those the context has shown is not notable either.
            # Limitation: the cold-start rule of bursts does not reach the model.
            and rate - mean > cfg.burst_margin * self._envelope(state, start)
            and acc is not None
            and self._significant(state, cost, count, _longest_share(acc))
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
            window = Window(
                self._window,
                cost,
                count,
                mean,
                spread,
                baseline.mean,
                state.counts.mean,
                self._window_extra(state, acc, start),
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

    def _window_extra(
        self, state: _Context, acc: list[float] | None, start: float | None = None
    ) -> dict[str, float]:
        """What the models read of a window beyond its cost and count.

        The usual billed duration and error share of a call are the rules'
        per-invocation baselines (learned before this window, paused while
        their alert is open), once they have seen a few observations. The
        distinct triggers and callers are those of a window a few before the
        one from ``start`` (see :meth:`_take_span_window`), where spans of
        the context were read.
        """
        if acc is None:
            return {}
        extra = {
            "errors": acc[FAILED],
            "cold_starts": acc[_COLD],
            "gb_seconds": acc[_MB_MS] / 1_024_000.0,
            "billed_s": acc[BILLED_MS] / 1000.0,
            "peak_billed_ms": acc[_PEAK_MS],
            "concurrency": acc[BILLED_MS] / 1000.0 / self._window,
        }
        rules = getattr(state, "rules", None)
        if rules is not None and rules.busy >= _USUAL_MIN_OBSERVATIONS:
            extra["usual_billed_ms"] = rules.dur
            extra["usual_error_share"] = rules.errors
        if state.spans is not None and start is not None:
            self._span_features(state, start, extra)
        return extra

    def _take_span_window(self, part: _Partition, evidence: Evidence) -> None:
        """Merge one trace partition's sketch of a context's window.

        A later window reads it when it closes: the one ``_span_lag``
        windows on, which gives the sketches ``SKETCH_WAIT_S`` of event time
        to come in. A trace partition sends a window's sketch once its own
        watermark has passed the window by the trace stage's pending time;
        a partition that few traces fall on passes it late, and in a daemon
        the evidence topic adds its delay. Read by the window itself or the
        next, the counts would depend on how the partitions are read; read
        this late, the daemon and a replay at any speed give the same ones.
        """
        state = part.contexts.get(evidence.context)
        if state is None:
            # Spans of a function whose invocation records are not read:
            # it has no windows to add the counts to.
            self.unmatched_span_windows += 1
            return
        start = evidence.time
        lag = self._span_lag
        if start + (lag + 1) * self._window <= state.closed_until:
            # Limitation: a backlog read logs first: its sketches come late, unread.
            self.late_span_windows += 1
            logger.debug(
                "span sketch late context=%s window=%s", evidence.context, start
            )
            return
        pending = state.spans
        if pending is None:
            pending = state.spans = {}
        bits = evidence.triggers | evidence.callers << SKETCH_BITS
        pending[start] = pending.get(start, 0) | bits
        # Sketches whose reading window closed without reading them (its
        # features were not needed) are dropped.
        horizon = state.closed_until - (lag + 1) * self._window
        for old in [s for s in pending if s <= horizon]:
            del pending[old]
        while len(pending) > lag + _SPAN_WINDOWS_SPARE:
            del pending[min(pending)]

    def _span_features(
        self, state: _Context, start: float, extra: dict[str, float]
    ) -> None:
        """The distinct triggers and callers of the window ``_span_lag``
        windows before the one from ``start``."""
        pending = state.spans
        if pending is None:
            return
        read = start - self._span_lag * self._window
        bits = pending.pop(read, None)
        if bits is not None:
            extra["distinct_triggers"] = distinct(bits & _SKETCH_MASK)
            extra["distinct_callers"] = distinct(bits >> SKETCH_BITS)
        for old in [s for s in pending if s < read]:
            del pending[old]
        if not pending:
            state.spans = None

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
        if alert.streak >= self.config.anomaly_windows and not self._open_alerts(
            state, model=False
        ):
            alert.open = True
            alert.starts_at = at
            alert.cost = cost
            self._emit(state, alert, OPENED, at, self._anomaly_evidence())

    @staticmethod
    def _open_alerts(state: _Context, model: bool = True) -> int:
        """How many alerts of the context are open, the model's among them
        unless ``model`` is False (the rules' alerts, such as error storms
        and duration inflation, count as a spike or a loop does: the model
        only speaks where nothing else has)."""
        gap = state.sources.gap_alert if state.sources is not None else None
        alerts = (state.spike, state.recursion, gap, state.anomaly if model else None)
        count = sum(1 for a in alerts if a is not None and a.open)
        rules = state.rules
        return count + rules.open_alerts() if rules is not None else count

    def _anomaly_evidence(self) -> dict[str, object]:
        return {"source": "model", "model_scores": dict(self._scores or {})}

    def _source_entries(self, state: _Context) -> dict[str, object]:
        """One entry per source that has seen this context."""
        entries: dict[str, object] = {}
        if state.last_time > 0:
            entries[LOGS] = {
                "window_s": self._window,
                "rate_usd_per_hour": round(state.last_rate, 6),
                "baseline_usd_per_hour": round(state.baseline.mean, 6),
                "invocations_last_window": state.last_invocations,
                "cost_total_usd": round(state.total_cost, 6),
                "late_events": state.late_events,
            }
        metric = self._fusion.metric_entry(state)
        if metric is not None:
            entries[METRICS] = metric
        recursion = state.recursion
        if recursion is not None and recursion.open:
            entries[TRACES] = {"recursion_open": True, "hops": int(recursion.peak)}
        src = state.sources
        billing = src.billing if src is not None else None
        entry = self._reconciler.last_entry(billing) if billing is not None else None
        if entry is not None:
            entries["billing"] = entry
        return entries

    # Internals: metric streams and billing

    def _metric_minute_cost(
        self, context: Context, invocations: float, duration_ms: float
    ) -> tuple[float, str]:
        model = self._cost_model
        if model is None:
            from detector.cost import Pricing

            model = self._cost_model = Pricing.load().model
        return model.metric_minute_cost(context, invocations, duration_ms)

    def _on_metric(self, part: _Partition, metric: Metric) -> None:
        if metric.namespace != "AWS/Lambda":
            return
        state = self._state(part, metric.context)
        spike = state.spike
        findings = self._fusion.on_metric(
            part.sources,
            state,
            metric,
            part.watermark - self._lateness,
            state.last_time > 0,
            spike is not None and spike.open,
        )
        for finding in findings:
            self._apply(state, finding)
        due = part.sources.due
        if due and due[0][0] <= self._horizon(part):
            self._reconcile_due(part, self._horizon(part))

    def _on_billing(self, part: _Partition, bill: Billing) -> None:
        state = self._state(part, bill.context)
        horizon = self._horizon(part)
        self._reconciler.on_billing(part.sources, state, bill, horizon)
        due = part.sources.due
        if due and due[0][0] <= horizon:
            self._reconcile_due(part, horizon)

    def _horizon(self, part: _Partition) -> float:
        """Event time up to which the computed cost of a partition is complete.

        Logs and metric streams come on different topics, which a daemon may
        read at different paces: the cost is complete only up to the source
        that is further behind, whichever of them the partition has seen.
        """
        logs = part.watermark - self._lateness
        metrics = part.sources.latest_metric - self.config.sources.metric_settle_s
        if part.watermark == -math.inf or part.sources.latest_metric == -math.inf:
            return max(logs, metrics)
        # Limitation: a partition whose logs stop holds its comparisons back.
        return min(logs, metrics)

    def _reconcile_due(
        self, part: _Partition, horizon: float, force: bool = False
    ) -> None:
        horizon = max(horizon, self._horizon(part))
        low = self._account_horizon()
        for state, finding in self._reconciler.due(
            part.sources, part.contexts.get, horizon, self._account_cost, force, low
        ):
            self._apply(state, finding)

    def _account_horizon(self) -> float:
        """Event time up to which every partition's computed cost is complete.

        Account-wide charges are compared with the contexts of all partitions,
        so they wait until each partition has seen its logs up to the period's
        end, whatever order a daemon reads its topics and partitions in.
        """
        parts = self._parts
        if len(parts) < self.config.partitions:
            # Limitation: partitions not held here (or idle) hold this back.
            return -math.inf
        return min(
            self._horizon(p) if p.watermark > -math.inf else -math.inf
            for p in parts.values()
        )

    def _account_cost(
        self, account: tuple[str, str, str], start: float, end: float
    ) -> tuple[float | None, int]:
        """Computed USD of an account's contexts in the partitions held here."""
        # Limitation: account-wide bills meet the partitions held here only.
        total = 0.0
        matched = False
        for part in self._parts.values():
            provider, name, region = account
            for key, ring in part.sources.accounts.items():
                if key[:2] != (provider, name) or (region and key[2] != region):
                    continue
                found = ring.total(start, end)
                if found is None:
                    return None, len(self._parts)
                total += found
                matched = True
        if not matched:
            # No context of the account is watched here (a payer account whose
            # functions run in linked accounts): nothing to compare with.
            return None, 0
        return total, len(self._parts)

    def _flush_sources(self, part: _Partition) -> None:
        for state in list(part.contexts.values()):
            src = state.sources
            if src is None or src.metric is None or not src.metric.minutes:
                continue
            spike = state.spike
            open_ = spike is not None and spike.open
            for finding in self._fusion.settle(
                part.sources, state, src, math.inf, state.last_time > 0, open_, True
            ):
                self._apply(state, finding)
        if part.sources.due:
            # At the end of a stream no more rows come: compare what is complete.
            self._reconcile_due(part, self._horizon(part), force=True)

    def _apply(self, state: _Context, finding: Finding) -> None:
        """Apply what a metric minute or a billing comparison concluded."""
        kind = finding.kind
        if kind in (GAP, NO_GAP):
            self._on_gap(state, finding)
            return
        spike = state.spike
        was_open = spike is not None and spike.open
        if kind == RISE:
            self._open_metric_rise(state, finding)
            return
        if was_open and spike is not None:
            spike.cost += finding.cost
        if kind == SPIKE:
            agreeing = self._fusion.agreeing(state, finding.at, METRICS)
            severity = fused_severity(finding.strong, agreeing)
            self._raise_spike(
                state,
                finding.rate,
                finding.cost,
                finding.at,
                severity,
                early=False,
                leader=METRICS,
            )
        elif spike is None or not spike.open:
            return
        elif kind == AGREE and spike.severity != CRITICAL:
            agreeing = self._fusion.agreeing(state, finding.at, LOGS)
            if fused_severity(False, agreeing) == CRITICAL:
                self._raise_spike(
                    state, state.last_rate, 0.0, finding.at, CRITICAL, early=False
                )
        elif kind == HOLD:
            spike.calm = 0
        elif kind == RISE_END:
            evidence = self._metric_rise_evidence(state, finding)
            self._emit(state, spike, RESOLVED, finding.at, evidence)
            spike.open = False
        elif kind == CALM:
            spike.calm += finding.calm
            if spike.calm >= self.config.resolve_windows:
                evidence = self._spike_evidence(
                    state, finding.rate, finding.at, METRICS
                )
                self._emit(state, spike, RESOLVED, finding.at, evidence)
                spike.open = False

    def _on_gap(self, state: _Context, finding: Finding) -> None:
        src = self._fusion.state(state)
        alert: _Alert | None = src.gap_alert
        evidence = dict(finding.evidence)
        if finding.kind == GAP:
            if alert is None:
                fp = fingerprint(state.context, BILLING_GAP)
                alert = src.gap_alert = _Alert(BILLING_GAP, fp)
            alert.severity = WARNING
            if not alert.open:
                alert.open = True
                alert.starts_at = finding.at
                alert.cost = finding.cost
                self._emit(state, alert, OPENED, finding.at, evidence)
            else:
                alert.cost += finding.cost
                self._emit(state, alert, UPDATED, finding.at, evidence)
        elif alert is not None and alert.open:
            self._emit(state, alert, RESOLVED, finding.at, evidence)
            alert.open = False

    # Internals: recursion

    def _on_chain(self, state: _Context, evidence: Evidence) -> None:
        alert = state.recursion
        if alert is None:
            fp = fingerprint(state.context, RECURSIVE_TRIGGER)
            alert = state.recursion = _Alert(RECURSIVE_TRIGGER, fp)
        named = state.chains or {}
        chains = named.values()
        hops = max(c[0] for c in chains)
        cost = sum(c[1] for c in chains)
        severity = CRITICAL if any(map(self._critical, chains)) else WARNING
        source = "invocations" if evidence.via == "lineage" else "traces"
        details: dict[str, object] = {
            "source": source,
            "method": "lineage" if evidence.via == "lineage" else evidence.method,
            "hops": int(hops),
            "threshold": self.config.recursion_hops,
            "via": evidence.via,
            "path": list(evidence.path),
            "chains": len(named),
            "fan_out": int(max(c[6] for c in chains)),
            "growth": round(max(c[5] for c in chains), 3),
            "chain_invocations": int(sum(c[7] for c in chains)),
            "projected_usd_per_hour": round(sum(c[4] for c in chains if not c[2]), 6),
        }
        if evidence.resources:
            details["resources"] = list(evidence.resources)
        if any(c[8] for c in chains):
            details["guessed"] = True
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
        # Chains of one context come from every trace partition, in the
        # order the partitions happen to be read: the alert starts with the
        # earliest chain seen, whichever arrived first.
        earlier = evidence.time < alert.starts_at
        if earlier:
            alert.starts_at = evidence.time
        if escalated or earlier or hops >= 2 * alert.reported_peak:
            alert.severity = severity if escalated else alert.severity
            alert.reported_peak = hops
            self._emit(state, alert, UPDATED, evidence.time, details)

    def _critical(self, chain: list[float]) -> bool:
        """Whether one chain's figures make a recursion alert critical."""
        cfg = self.config
        hops, growth = chain[0], chain[5]
        if hops >= cfg.recursion_critical_hops and (
            not chain[8] or hops > cfg.recursion_max_retries
        ):
            return True
        if hops < cfg.recursion_hops or growth < cfg.recursion_growth:
            return False
        # Invocations of the function in a geometric chain after ``hops``
        # generations, against a straight loop's at the critical count.
        grown = (math.pow(growth, hops + 1) - 1.0) / (growth - 1.0)
        return grown >= cfg.recursion_critical_hops + 1

    def _resolve_recursion(self, state: _Context, at: float) -> None:
        alert = state.recursion
        chains = state.chains or {}
        # Dropped, not emptied: a context without chains holds no dict.
        state.chains = None
        if alert is None or not alert.open:
            return
        hops = max((c[0] for c in chains.values()), default=0)
        details: dict[str, object] = {
            "source": "traces",
            "hops": int(hops),
            "chains": len(chains),
        }
        self._emit(state, alert, RESOLVED, at, details)
        alert.open = False

    def _on_lineage(self, part: _Partition, state: _Context, inv: Invocation) -> None:
        # Limitation: a Lineage chain costs one invocation and projects nothing.
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
        chains = state.chains
        if not chains:
            return
        quiet = self.config.lineage_quiet_s
        for name, chain in chains.items():
            if name.startswith("lineage:") and not chain[2] and chain[3] + quiet <= now:
                chain[2] = 1.0
        if all(c[2] for c in chains.values()):
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
        elif alert.kind == BILLING_GAP:
            summary = (
                f"{context.function or context.account}: billed"
                f" {evidence.get('billed_usd')} USD, computed"
                f" {evidence.get('computed_usd')} USD"
            )
        elif evidence.get("method") == "resource":
            resources = evidence.get("resources")
            through = ", ".join(resources) if isinstance(resources, list) else "?"
            summary = (
                f"{context.function}: its writes to {through} trigger it again; "
                f"re-entered {evidence.get('hops')} times"
            )
        else:
            summary = (
                f"{context.function}: causal chain re-entered it "
                f"{evidence.get('hops')} times"
            )
        evidence["cost_so_far_usd"] = round(alert.cost, 6)
        self._transitions.append(
            transition_of(alert, event, context, at, summary, dict(evidence))
        )
        self._dirty.add(context)
