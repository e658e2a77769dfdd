"""Metric streams beside invocation logs: per-source cost, cross-checks, fusion.

Severity rule of cost alerts: ``critical`` ("stop this", the only severity
enforcement acts on) needs a strong margin (the critical rate) or a second,
independent source that agrees (a loop in the traces, a billing gap); logs
and metrics count the same invocations, so they confirm but do not
escalate. Anything else is ``warning``.
"""

from __future__ import annotations

import heapq
import logging
import math
from array import array
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from typing import Any

from detector.alerts import CRITICAL, WARNING, rfc3339
from detector.baseline import RobustBaseline
from detector.interning import Shared
from detector.rise import POISSON_DISPERSION, Rise, RiseRun
from dowguard.errors import StorageError
from ingest.events import Context, Metric

logger = logging.getLogger(__name__)

LOGS = "logs"
METRICS = "metrics"
TRACES = "traces"
BILLING = "billing"

#: What a finding asks of the alert lifecycle.
SPIKE = "spike"
CALM = "calm"
HOLD = "hold"
AGREE = "agree"
GAP = "gap"
NO_GAP = "no_gap"
#: A sustained rise of a metrics-only context opens a warning, and ends it.
RISE = "rise"
RISE_END = "rise_end"

HOUR_S = 3600.0
MINUTE_S = 60.0
#: Minutes of log counts kept beside a metric stream, for its cross-check.
_LOG_MINUTES = 4

# Slots of a pending metric minute.
_MINUTE, _INV, _DUR, _SEEN = range(4)
_MINUTE_SLOTS = 4
_HAS_INV, _HAS_DUR = 1, 2

#: The metrics that price a minute.
# Limitation: Errors, Throttles and ConcurrentExecutions are not used yet.
_COST_METRICS = frozenset({"Invocations", "Duration"})


@dataclass(frozen=True, slots=True)
class SourcesConfig:
    """Settings of the metric, billing and fusion rules.

    A metric minute is settled (costed, judged) once both ``Invocations``
    and ``Duration`` are in and the logs of that minute are closed, or at
    the latest once metrics ``metric_settle_s`` later arrive. Logs that see
    fewer than ``1 - log_shortfall`` of the invocations a metric counts (in
    minutes of at least ``cross_check_min_count``) disagree with it. A
    billed cost differing from the computed one by ``billing_min_usd`` and
    by more than ``billing_tolerance`` of the computed cost is a gap; a
    period is compared ``billing_settle_s`` after its last row arrived.
    Another source agrees with a spike when it spiked within
    ``agreement_s`` of it.
    """

    metric_settle_s: float = 60.0
    cross_check_min_count: float = 20.0
    log_shortfall: float = 0.5
    billing_tolerance: float = 0.5
    billing_min_usd: float = 0.5
    billing_settle_s: float = 60.0
    agreement_s: float = 120.0
    hours_kept: int = 48
    account_minutes_kept: int = 48 * 60


class Ring:
    """Sums per time bucket over the most recent ``size`` buckets.

    Compact (one array of numbers) because every costed context keeps one;
    single precision is the default, ample against a tolerance of percents.
    The array grows with the buckets seen, bucket ``first`` at index 0,
    until they span ``size`` buckets; from then on it is circular, bucket
    ``b`` at ``b % size``. A context tracked for an hour holds one bucket,
    not the ``size`` a context tracked for days needs.
    """

    __slots__ = ("bucket_s", "first", "latest", "size", "values")

    def __init__(self, bucket_s: float, size: int, typecode: str = "f") -> None:
        self.bucket_s = bucket_s
        self.size = size
        self.values: array[float] = array(typecode)
        self.first = -1
        self.latest = -1

    def __setstate__(self, state: Any) -> None:
        slots: dict[str, Any] = state[1] if isinstance(state, tuple) else state
        for name, value in slots.items():
            setattr(self, name, value)
        if "size" not in slots:
            # A ring of a checkpoint from before rings grew: circular, full.
            self.size = len(self.values)
            if self.first < 0:
                self.values = array(self.values.typecode)

    def add(self, time: float, value: float) -> bool:
        """Add ``value`` to the bucket of ``time``; False if it is too old."""
        bucket = int(time // self.bucket_s)
        values = self.values
        size = self.size
        if self.first < 0:
            values.append(0.0)
            self.first = self.latest = _shared_bucket(bucket)
        elif bucket > self.latest:
            if len(values) < size and bucket - self.first < size - 1:
                values.extend(_zeros(values, bucket - self.latest))
            else:
                values = self._circular()
                for b in range(max(self.latest + 1, bucket - size + 1), bucket + 1):
                    values[b % size] = 0.0
            self.latest = _shared_bucket(bucket)
        elif bucket <= self.latest - size:
            return False
        elif bucket < self.first:
            if len(values) < size and self.latest - bucket < size - 1:
                values[0:0] = _zeros(values, self.first - bucket)
            else:
                values = self._circular()
                for b in range(bucket, self.first):
                    values[b % size] = 0.0
            self.first = _shared_bucket(bucket)
        if len(values) < size:
            values[bucket - self.first] += value
        else:
            values[bucket % size] += value
        return True

    def _circular(self) -> array[float]:
        """The values laid out circularly, at full size (made so if need be)."""
        values = self.values
        size = self.size
        if len(values) == size:
            return values
        ring = _zeros(values, size)
        first = self.first
        for i, value in enumerate(values):
            ring[(first + i) % size] = value
        self.values = ring
        return ring

    def add_span(self, start: float, end: float, value: float) -> bool:
        """Spread ``value`` evenly over [start, end), bucket by bucket."""
        return _spread(start, end, self.bucket_s, value, self.add)

    def total(self, start: float, end: float) -> float | None:
        """Sum over [start, end), buckets pro rata; None if no longer kept."""
        if self.first < 0:
            return 0.0
        values = self.values
        size = self.size
        first = self.first
        if len(values) == size:
            return _pro_rata(
                start, end, self.bucket_s, first, self.latest, size,
                lambda b: values[b % size],
            )  # fmt: skip
        return _pro_rata(
            start, end, self.bucket_s, first, self.latest, size,
            lambda b: values[b - first],
        )  # fmt: skip


#: Bucket numbers handed out lately. Every context's rings start and end in
#: the same few hours and minutes, so they share one int object for each.
_shared_bucket: Shared[int] = Shared(256)


def _zeros(like: array[float], count: int) -> array[float]:
    """``count`` zeros of the type of ``like``, in a buffer of that size."""
    return array(like.typecode, (0.0,)) * count


def _spread(
    start: float,
    end: float,
    step: float,
    value: float,
    add: Callable[[float, float], bool],
) -> bool:
    """``add`` ``value`` spread evenly over [start, end), bucket by bucket of
    ``step`` seconds; False if any part was too old to keep."""
    if end - start <= step:
        return add(start, value)
    kept = True
    bucket = int(start // step)
    while bucket * step < end:
        left = max(start, bucket * step)
        right = min(end, (bucket + 1) * step)
        kept = add(left, value * (right - left) / (end - start)) and kept
        bucket += 1
    return kept


def _pro_rata(
    start: float,
    end: float,
    step: float,
    first: int,
    latest: int,
    size: int,
    value_of: Callable[[int], float],
) -> float | None:
    """Sum over [start, end) of buckets ``first`` to ``latest`` of ``step``
    seconds, each pro rata (``value_of`` a bucket number); None if part of
    the span is older than the ``size`` buckets kept."""
    lo = int(start // step)
    hi = math.ceil(end / step) - 1
    evicted = latest - size
    if first <= evicted and lo <= evicted:
        return None
    total = 0.0
    for b in range(max(lo, first), min(hi, latest) + 1):
        left = max(start, b * step)
        right = min(end, (b + 1) * step)
        if right > left:
            total += value_of(b) * (right - left) / step
    return total


# Layout of a metric track's numbers: its figures, then its ring of log
# counts per minute (the first and latest minute held, then one slot per
# minute), then its pending minutes, ``_MINUTE_SLOTS`` numbers each.
(
    _COUNT_MEAN,
    _SETTLED_UNTIL,
    _LATEST,
    _LAST_RATE,
    _LAST_COUNT,
    _SPIKED_AT,
    _COST,
    _LOG_FIRST,
    _LOG_LATEST,
    _LOG_COUNTS,
) = range(10)
_PENDING = _LOG_COUNTS + _LOG_MINUTES
_FRESH_TRACK = (0.0, -math.inf, -math.inf, 0.0, 0.0, -math.inf, 0.0)


class _Figure:
    """A figure of a metric track, kept in the track's array of numbers."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __get__(self, track: Any, owner: Any = None) -> float:
        return track.nums[self.index]  # type: ignore[no-any-return]

    def __set__(self, track: Any, value: float) -> None:
        track.nums[self.index] = value


class MetricTrack:
    """What the metric stream says of one context, minute by minute.

    Its numbers live in one array, as every context seen through a metric
    stream keeps one: the figures read as attributes (``count_mean``,
    ``settled_until``, ...), a ring of the log counts of the last
    ``_LOG_MINUTES`` minutes for the cross-check, and the pending minutes in
    time order, ``_MINUTE_SLOTS`` numbers each.
    """

    __slots__ = (
        "baseline",
        "disagreements",
        "last_disagreement",
        "last_memory",
        "led_minutes",
        "nums",
        "rise",
    )

    count_mean = _Figure(_COUNT_MEAN)
    settled_until = _Figure(_SETTLED_UNTIL)
    latest = _Figure(_LATEST)
    last_rate = _Figure(_LAST_RATE)
    last_count = _Figure(_LAST_COUNT)
    spiked_at = _Figure(_SPIKED_AT)
    cost = _Figure(_COST)

    def __init__(self, baseline: RobustBaseline) -> None:
        self.baseline = baseline
        self.nums: array[float] = array(
            "d", (*_FRESH_TRACK, -1.0, -1.0, *(0.0,) * _LOG_MINUTES)
        )
        self.last_memory = ""
        self.led_minutes = 0
        self.disagreements = 0
        self.last_disagreement: tuple[float, float, float] | None = None
        # The sustained-rise run of the minutes the metric leads, made only
        # while they rise (see SourceFusion._judge_rise).
        self.rise: RiseRun | None = None

    def __repr__(self) -> str:
        return f"MetricTrack(nums={self.nums!r}, baseline={self.baseline!r})"

    @property
    def last_minute(self) -> float:
        """The minute settled last (-inf before the first)."""
        return self.settled_until - MINUTE_S

    @property
    def minutes(self) -> array[float] | None:
        """The pending minutes, a copy (None while no minute is pending)."""
        return self.nums[_PENDING:] or None

    def log_add(self, time: float, count: float) -> None:
        """Count ``count`` log invocations in the minute of ``time``.

        The ring of ``Ring`` at full size, kept inside ``nums``.
        """
        nums = self.nums
        minute = float(time // MINUTE_S)
        size = _LOG_MINUTES
        first, latest = nums[_LOG_FIRST], nums[_LOG_LATEST]
        if first < 0:
            nums[_LOG_FIRST] = nums[_LOG_LATEST] = minute
        elif minute > latest:
            for m in range(int(max(latest + 1, minute - size + 1)), int(minute) + 1):
                nums[_LOG_COUNTS + m % size] = 0.0
            nums[_LOG_LATEST] = minute
        elif minute <= latest - size:
            return
        elif minute < first:
            for m in range(int(minute), int(first)):
                nums[_LOG_COUNTS + m % size] = 0.0
            nums[_LOG_FIRST] = minute
        nums[_LOG_COUNTS + int(minute) % size] += count

    def log_total(self, start: float, end: float) -> float | None:
        """Log invocations in [start, end); None if no longer kept."""
        nums = self.nums
        first, latest = nums[_LOG_FIRST], nums[_LOG_LATEST]
        if first < 0:
            return 0.0
        size = _LOG_MINUTES
        return _pro_rata(
            start, end, MINUTE_S, int(first), int(latest), size,
            lambda m: nums[_LOG_COUNTS + m % size],
        )  # fmt: skip

    def __getstate__(self) -> tuple[None, dict[str, Any]]:
        return None, {name: getattr(self, name) for name in self.__slots__}

    def __setstate__(self, state: Any) -> None:
        slots: dict[str, Any] = state[1] if isinstance(state, tuple) else state
        if "nums" in slots:
            # A checkpoint from before the rise path of metric minutes has none.
            self.rise = None
            for name, value in slots.items():
                setattr(self, name, value)
            return
        self._upgrade(slots)

    def _upgrade(self, slots: dict[str, Any]) -> None:
        """Take the layout of a checkpoint from before the array of numbers.

        Its figures were attributes of their own, its log counts a ``Ring``
        and its pending minutes an array (or one array per minute, older).
        """
        MetricTrack.__init__(self, slots["baseline"])
        for name in ("last_memory", "led_minutes", "disagreements"):
            setattr(self, name, slots[name])
        self.last_disagreement = slots["last_disagreement"]
        for name in ("count_mean", "settled_until", "latest", "last_rate"):
            setattr(self, name, slots[name])
        for name in ("last_count", "spiked_at", "cost"):
            setattr(self, name, slots[name])
        logs: Ring = slots["logs"]
        nums = self.nums
        if logs.first >= 0:
            nums[_LOG_FIRST], nums[_LOG_LATEST] = logs.first, logs.latest
            size = logs.size
            for minute in range(
                max(logs.first, logs.latest - size + 1), logs.latest + 1
            ):
                if len(logs.values) < size:
                    value = logs.values[minute - logs.first]
                else:
                    value = logs.values[minute % size]
                nums[_LOG_COUNTS + minute % _LOG_MINUTES] = value
        minutes: Any = slots["minutes"]
        if isinstance(minutes, list):
            # From when each pending minute had an array of its own.
            for acc in sorted(minutes):
                nums.extend(acc)
        elif minutes:
            nums.extend(minutes)


#: The lanes of a context's hourly sums: the cost computed from its logs
#: and metric streams, and the priced cost billed for it.
COMPUTED, BILLED = 0, 1


class SourceState:
    """The non-log sources of one function context (hung off its state).

    It also holds the context's sums per hour, in two lanes (``COMPUTED``
    and ``BILLED``) that share one array: every costed context keeps the
    first and every billed one the second, so one buffer and one object
    serve both. Each lane holds what a ``Ring`` of ``size`` hours would: it
    grows with the hours it has spanned, its first hour at its start, until
    it spans ``size`` of them and turns circular, hour ``h`` at ``h % size``.
    The computed lane comes first in the array, the billed one after it.
    ``hours`` is the computed lane (the state itself, read as a ring).
    """

    __slots__ = (
        "billed_first",
        "billed_latest",
        "billing",
        "computed_first",
        "computed_latest",
        "gap_alert",
        "metric",
        "size",
        "values",
    )

    bucket_s = HOUR_S

    def __init__(self, size: int) -> None:
        self.size = size
        self.values: array[float] = array("f")
        self.computed_first = self.computed_latest = -1
        self.billed_first = self.billed_latest = -1
        self.metric: MetricTrack | None = None
        self.billing: Any = None
        self.gap_alert: Any = None

    @property
    def hours(self) -> SourceState:
        """The computed lane, as a ring: ``total(start, end)``, ``add``."""
        return self

    @property
    def computed_n(self) -> int:
        """Hours the computed lane holds: those it spans, at most ``size``.

        A lane holds its first to its latest hour until they span ``size``.
        """
        first = self.computed_first
        if first < 0:
            return 0
        return min(self.size, self.computed_latest - first + 1)

    def _lane(self, lane: int) -> tuple[int, int, int, int]:
        """Offset, length, first and latest hour of ``lane``."""
        n = self.computed_n
        if lane == COMPUTED:
            return 0, n, self.computed_first, self.computed_latest
        return n, len(self.values) - n, self.billed_first, self.billed_latest

    def add(self, time: float, value: float, lane: int = COMPUTED) -> bool:
        """Add ``value`` to the hour of ``time``; False if it is too old."""
        bucket = int(time // HOUR_S)
        size = self.size
        if lane == COMPUTED:
            # Every window close adds to the computed lane, nearly always in
            # its latest hour: that case reads the lane's bounds inline.
            first = self.computed_first
            if first >= 0 and bucket == self.computed_latest:
                if bucket - first + 1 < size:
                    self.values[bucket - first] += value
                else:
                    self.values[bucket % size] += value
                return True
        lo, n, first, latest = self._lane(lane)
        values = self.values
        if first < 0:
            values[lo:lo] = _zeros(values, 1)
            n = 1
            first = latest = _shared_bucket(bucket)
        elif bucket > latest:
            if n < size and bucket - first < size - 1:
                values[lo + n : lo + n] = _zeros(values, bucket - latest)
                n += bucket - latest
            else:
                values, n = self._circular(lo, n, first)
                for b in range(max(latest + 1, bucket - size + 1), bucket + 1):
                    values[lo + b % size] = 0.0
            latest = _shared_bucket(bucket)
        elif bucket <= latest - size:
            return False
        elif bucket < first:
            if n < size and latest - bucket < size - 1:
                values[lo:lo] = _zeros(values, first - bucket)
                n += first - bucket
            else:
                values, n = self._circular(lo, n, first)
                for b in range(bucket, first):
                    values[lo + b % size] = 0.0
            first = _shared_bucket(bucket)
        if n < size:
            values[lo + bucket - first] += value
        else:
            values[lo + bucket % size] += value
        if lane == COMPUTED:
            self.computed_first, self.computed_latest = first, latest
        else:
            self.billed_first, self.billed_latest = first, latest
        return True

    def _circular(self, lo: int, n: int, first: int) -> tuple[array[float], int]:
        """The lane at ``lo`` laid out circularly, at full size, and that size."""
        size = self.size
        values = self.values
        if n == size:
            return values, n
        ring = _zeros(values, size)
        for i in range(n):
            ring[(first + i) % size] = values[lo + i]
        # A new array of the exact size, as lanes at full size stay so.
        self.values = values = values[:lo] + ring + values[lo + n :]
        return values, size

    def add_span(
        self, start: float, end: float, value: float, lane: int = COMPUTED
    ) -> bool:
        """Spread ``value`` evenly over [start, end), hour by hour."""
        return _spread(start, end, HOUR_S, value, lambda t, v: self.add(t, v, lane))

    def total(self, start: float, end: float, lane: int = COMPUTED) -> float | None:
        """Sum over [start, end), hours pro rata; None if no longer kept."""
        lo, n, first, latest = self._lane(lane)
        if first < 0:
            return 0.0
        values = self.values
        size = self.size
        if n == size:
            return _pro_rata(
                start, end, HOUR_S, first, latest, size,
                lambda b: values[lo + b % size],
            )  # fmt: skip
        return _pro_rata(
            start, end, HOUR_S, first, latest, size,
            lambda b: values[lo + b - first],
        )  # fmt: skip

    def __getstate__(self) -> tuple[None, dict[str, Any]]:
        return None, {name: getattr(self, name) for name in self.__slots__}

    def __setstate__(self, state: Any) -> None:
        slots: dict[str, Any] = state[1] if isinstance(state, tuple) else state
        if "values" in slots:
            for name, value in slots.items():
                setattr(self, name, value)
            return
        # A checkpoint from when each lane was a ring of its own: the
        # computed one here, the billed one in the billing track.
        hours: Ring = slots["hours"]
        SourceState.__init__(self, hours.size)
        self.metric = slots["metric"]
        self.billing = slots["billing"]
        self.gap_alert = slots["gap_alert"]
        self._take_ring(hours, COMPUTED)
        if self.billing is not None:
            from detector.reconcile import take_old_billed

            billed = take_old_billed(self.billing)
            if billed is not None:
                self._take_ring(billed, BILLED)

    def _take_ring(self, ring: Ring, lane: int) -> None:
        """Put what ``ring`` holds into the empty ``lane``, hour by hour."""
        if ring.first < 0:
            return
        size = ring.size
        if ring.size != self.size:
            raise StorageError(
                f"checkpoint of a source state: rings of {ring.size} and"
                f" {self.size} hours cannot share an array"
            )
        step = ring.bucket_s
        # The held hours in order, oldest first, so that the lane grows (or
        # turns circular) as the ring did; then the ring's first hour, which
        # may be older than those held, so that the lane refuses the same
        # hours as no longer kept.
        held = range(max(ring.first, ring.latest - size + 1), ring.latest + 1)
        for hour in held:
            if len(ring.values) < size:
                value = ring.values[hour - ring.first]
            else:
                value = ring.values[hour % size]
            self.add(hour * step, value, lane)
        if lane == COMPUTED:
            self.computed_first = ring.first
        else:
            self.billed_first = ring.first


@dataclass(slots=True)
class PartitionSources:
    """Per-partition part of the source state: coverage and account totals.

    ``due`` holds the contexts with billed periods to compare, by the time
    they are due: a heap of ``[time, context, ...]`` lists, one per distinct
    time, each in the order its contexts were queued (``due[0][0]`` is the
    earliest time); ``due_at`` finds the list of a time. Rows of one bill
    share their times, so a queued context costs a list slot, not an entry.
    """

    since: float = math.inf
    latest_metric: float = -math.inf
    accounts: dict[tuple[str, str, str], Ring] = field(default_factory=dict)
    due: list[list[Any]] = field(default_factory=list)
    due_at: dict[float, list[Any]] = field(default_factory=dict)

    def schedule(self, time: float, context: Context) -> None:
        """Look at ``context`` again once the horizon reaches ``time``."""
        slot = self.due_at.get(time)
        if slot is None:
            slot = self.due_at[time] = [time]
            heapq.heappush(self.due, slot)
        slot.append(context)

    def take_due(self) -> list[Any]:
        """The earliest list of ``due``, taken off it: its time, its contexts."""
        slot = heapq.heappop(self.due)
        del self.due_at[slot[0]]
        return slot

    def __setstate__(self, state: Any) -> None:
        slots: dict[str, Any] = state[1] if isinstance(state, tuple) else state
        if "due_at" in slots:
            for name, value in slots.items():
                setattr(self, name, value)
            return
        # A checkpoint from when each queued context had a heap entry of
        # (time, ticket, context): the same order, one list per time.
        for name in ("since", "latest_metric", "accounts"):
            setattr(self, name, slots[name])
        self.due, self.due_at = [], {}
        for time, _, context in sorted(slots["due"]):
            self.schedule(time, context)


@dataclass(slots=True)
class Finding:
    """What a source concluded, for the engine's alert lifecycle to apply."""

    kind: str
    at: float
    rate: float = 0.0
    cost: float = 0.0
    strong: bool = False
    calm: int = 0
    evidence: dict[str, Any] = field(default_factory=dict)


def _reference_cv(run: RiseRun) -> float:
    """The coefficient of variation of counts a run's reference dispersion
    stands for (that of Poisson counts, a little over, when it is 1)."""
    usual, _, dispersion = run.reference
    if usual <= 0.0:
        return 0.0
    return math.sqrt(dispersion * POISSON_DISPERSION / usual)


def spike_thresholds(base: float, deviation: float, cfg: Any) -> tuple[float, float]:
    """Warning and critical cost rates (USD/h) above a baseline rate.

    The same rule as the log windows: a ratio, an absolute excess and a
    number of deviations must all be passed.
    """
    spread = max(deviation, 0.05 * base)
    warn = max(
        cfg.spike_ratio * base, base + cfg.spike_min_excess, base + cfg.spike_z * spread
    )
    crit = max(
        warn,
        cfg.critical_ratio * base,
        base + cfg.critical_min_excess,
        base + cfg.critical_z * spread,
    )
    return warn, crit


def fused_severity(strong: bool, agreeing: Collection[str]) -> str:
    """Critical on a strong margin, or when an independent source agrees.

    Logs and metric streams count the same invocations, so their agreement
    confirms the measure, not that the traffic is hostile: a flash sale is
    seen by both. A loop in the traces or a billing gap at the same time is
    other evidence, and only with one of them do two sources make critical.
    """
    independent = any(source not in (LOGS, METRICS) for source in agreeing)
    return CRITICAL if strong or (len(agreeing) >= 2 and independent) else WARNING


def count_threshold(usual: float, cfg: Any) -> float:
    """Invocations in a window that are more than chance (Poisson)."""
    least = float(cfg.spike_min_count)
    return usual + max(least, float(cfg.spike_count_z) * math.sqrt(usual))


MetricCost = Callable[[Context, float, float], tuple[float, str]]


class SourceFusion:
    """The metric-stream rules of an engine: minute windows and cross-checks.

    ``metric_cost(context, invocations, duration_sum_ms)`` prices a minute
    and says where the memory came from.
    """

    def __init__(self, detector: Any, config: SourcesConfig, cost: MetricCost):
        self.detector = detector
        self.config = config
        self.cost = cost
        minutes = detector.window_s / MINUTE_S
        self._half_life = max(10.0, float(detector.baseline_half_life) * minutes)
        self._warmup = max(10, round(detector.baseline_warmup * minutes))
        self._count_alpha: float = 1.0 - math.pow(0.5, 1.0 / self._half_life)
        # The log path's sustained-rise tests on minute windows: its
        # sequential threshold and fixed horizon follow the window length.
        self._rise: Rise | None = None
        if detector.rise_windows > 0:
            self._rise = Rise(replace(detector, window_s=MINUTE_S))
        self.rejected = 0
        self.metric_late = 0
        self.disagreements = 0

    # State

    def state(self, holder: Any) -> SourceState:
        """The source state of an engine context, created on first use."""
        src: SourceState | None = holder.sources
        if src is None:
            src = holder.sources = SourceState(self.config.hours_kept)
        return src

    def account_ring(self, psrc: PartitionSources, context: Context) -> Ring:
        key = (context.provider, context.account, context.region)
        ring = psrc.accounts.get(key)
        if ring is None:
            ring = psrc.accounts[key] = Ring(MINUTE_S, self.config.account_minutes_kept)
        return ring

    # Logs

    def on_window(
        self,
        psrc: PartitionSources,
        holder: Any,
        start: float,
        cost: float,
        count: float,
        watermark: float,
    ) -> None:
        """A log window closed: count its cost per hour and its invocations."""
        # Limitation: log events late for their window are not in these totals.
        if psrc.since == math.inf:
            # Conservative: the first window closes once the watermark is past it.
            psrc.since = watermark if watermark > -math.inf else start
        if cost <= 0.0 and count <= 0.0:
            return
        src = holder.sources
        if src is None:
            src = self.state(holder)
        src.add(start, cost)
        self.account_ring(psrc, holder.context).add(start, cost)
        if src.metric is not None:
            src.metric.log_add(start, count)

    # Metrics

    def valid_metric(self, metric: Metric) -> bool:
        """Whether a metric's statistics are usable; bad ones are counted."""
        values = (metric.sum, metric.count, metric.max, metric.min, metric.time)
        finite = all(math.isfinite(v) for v in values)
        if finite and metric.sum >= 0 and metric.count >= 0 and metric.period_s > 0:
            return True
        self.rejected += 1
        logger.debug(
            "metric rejected context=%s name=%s sum=%r count=%r",
            "/".join(metric.context),
            metric.name,
            metric.sum,
            metric.count,
        )
        return False

    def on_metric(
        self,
        psrc: PartitionSources,
        holder: Any,
        metric: Metric,
        horizon: float,
        has_logs: bool,
        under_alert: bool,
    ) -> list[Finding]:
        """Take one AWS/Lambda metric aggregate; findings of settled minutes."""
        if metric.name not in _COST_METRICS or not self.valid_metric(metric):
            return []
        src = self.state(holder)
        track = src.metric
        if track is None:
            track = src.metric = MetricTrack(
                RobustBaseline(self._half_life, self._warmup)
            )
        minute = metric.time - metric.time % MINUTE_S
        if psrc.since == math.inf:
            psrc.since = minute
        if metric.time > track.latest:
            track.latest = metric.time
        if metric.time > psrc.latest_metric:
            psrc.latest_metric = metric.time
        if minute < track.settled_until:
            # Limitation: a metric after its minute settled is only counted.
            self.metric_late += 1
            return []
        nums = track.nums
        at = _PENDING
        while at < len(nums) and nums[at + _MINUTE] < minute:
            at += _MINUTE_SLOTS
        if at == len(nums) or nums[at + _MINUTE] != minute:
            # A new array of the exact size: inserting in place would leave
            # room for more minutes than are ever pending at once.
            pending = array("d", (minute, 0.0, 0.0, 0.0))
            nums = track.nums = nums[:at] + pending + nums[at:]
        if metric.name == "Invocations":
            nums[at + _INV] = metric.sum
            nums[at + _SEEN] = float(int(nums[at + _SEEN]) | _HAS_INV)
        else:
            nums[at + _DUR] = metric.sum
            nums[at + _SEEN] = float(int(nums[at + _SEEN]) | _HAS_DUR)
        return self.settle(psrc, holder, src, horizon, has_logs, under_alert)

    def settle(
        self,
        psrc: PartitionSources,
        holder: Any,
        src: SourceState,
        horizon: float,
        has_logs: bool,
        under_alert: bool,
        force: bool = False,
    ) -> list[Finding]:
        """Settle, in order, every metric minute whose sources are complete.

        A minute is complete once both cost metrics are in and the logs of
        it and of the next minute are closed (the REPORT line of a call that
        starts near a minute's end is written in the next one); a context
        without logs needs only its own minute closed. Metrics that arrive
        ``metric_settle_s`` after a minute's end settle it in any case.
        """
        track = src.metric
        if track is None or len(track.nums) == _PENDING:
            return []
        nums = track.nums
        findings: list[Finding] = []
        late_bound = track.latest - self.config.metric_settle_s
        while len(nums) > _PENDING:
            minute = nums[_PENDING + _MINUTE]
            end = minute + MINUTE_S
            seen = int(nums[_PENDING + _SEEN])
            both = _HAS_INV | _HAS_DUR
            complete = seen == both or (seen & _HAS_INV and not nums[_PENDING + _INV])
            logs_end = end + MINUTE_S if has_logs else end
            ready = complete and logs_end <= horizon
            if not (force or ready or end <= late_bound):
                break
            acc = nums[_PENDING : _PENDING + _MINUTE_SLOTS]
            # A new array of the exact size, as for a new pending minute.
            rest = nums[_PENDING + _MINUTE_SLOTS :]
            nums = track.nums = nums[:_PENDING] + rest
            finding = self._settle_minute(
                psrc, holder, src, track, minute, acc, has_logs, under_alert
            )
            if finding is not None:
                findings.append(finding)
                if finding.kind in (SPIKE, RISE):
                    under_alert = True
                elif finding.kind == RISE_END:
                    under_alert = False
        return findings

    def _settle_minute(
        self,
        psrc: PartitionSources,
        holder: Any,
        src: SourceState,
        track: MetricTrack,
        minute: float,
        acc: array[float],
        has_logs: bool,
        under_alert: bool,
    ) -> Finding | None:
        context: Context = holder.context
        cfg = self.detector
        invocations = acc[_INV]
        cost, memory_source = self.cost(context, invocations, acc[_DUR])
        rate = cost * HOUR_S / MINUTE_S
        # None: the log counts of that minute are no longer kept (unknown).
        logs = track.log_total(minute, minute + MINUTE_S)
        logs_next = track.log_total(minute + MINUTE_S, minute + 2 * MINUTE_S)
        # Minutes with no record at all were idle: the stream skips them.
        idle = 0
        if track.settled_until > -math.inf:
            idle = max(0, round((minute - track.settled_until) / MINUTE_S))
            if idle and not under_alert:
                track.baseline.learn_many_zeros(idle)
                track.count_mean *= (1.0 - self._alpha(track)) ** idle
        track.settled_until = minute + MINUTE_S  # and so last_minute
        track.last_rate = rate
        track.last_count = invocations
        track.last_memory = memory_source
        base = track.baseline
        warm = base.is_warm
        warn, crit = spike_thresholds(base.mean, base.deviation, cfg)
        significant = invocations >= count_threshold(track.count_mean, cfg)
        spiking = warm and rate >= warn and significant
        if spiking:
            track.spiked_at = minute + MINUTE_S
        if logs is not None:
            self._cross_check(context, track, minute, logs, invocations)
        # Limitation: a call whose REPORT lands two minutes on is costed twice.
        led = logs == 0.0 and logs_next == 0.0 and invocations > 0.0
        finding: Finding | None = None
        if led:
            # Counted once: logs saw nothing of this minute, the metric leads.
            track.led_minutes += 1
            track.cost += cost
            src.add(minute, cost)
            self.account_ring(psrc, context).add(minute, cost)
        at = minute + MINUTE_S
        if led and spiking:
            finding = Finding(SPIKE, at, rate, cost, strong=rate >= crit)
        elif spiking and under_alert:
            finding = Finding(AGREE, at, rate, 0.0)
        elif under_alert and (led or not has_logs):
            # Limitation: an idle metric-only context resolves on its next record.
            calm = rate < cfg.resolve_ratio * base.mean + 1e-12 or (
                rate - base.mean < cfg.spike_min_excess / 2
            )
            kind = CALM if calm else HOLD
            finding = Finding(kind, at, rate, cost, calm=idle + int(calm))
        # An empty minute of a context that never had logs is one of its
        # windows too, as an empty window is in the log path.
        empty = invocations == 0.0 and not has_logs
        if self._rise is not None and (track.rise is not None or led):
            judged = self._judge_rise(
                track,
                minute,
                rate,
                invocations,
                (led or empty) and not spiking,
                under_alert,
            )
            if judged is not None:
                judged.cost = cost
                finding = judged
                under_alert = judged.kind in (RISE, HOLD)
        if not under_alert and not spiking:
            alpha = self._alpha(track)
            base.learn_one(rate)
            track.count_mean += alpha * (invocations - track.count_mean)
        return finding

    def _judge_rise(
        self,
        track: MetricTrack,
        minute: float,
        rate: float,
        invocations: float,
        judged: bool,
        under_alert: bool,
    ) -> Finding | None:
        """The sustained-rise path of a settled minute of a metrics-only context.

        Only minutes the metric leads (no log saw them, or empty ones of a
        context without logs) that no spike rule fired on are ``judged``;
        any other drops the run, as the logs
        or the spike rules then own the context. A run is made, as in the
        log path, only from a warm baseline and only while the minutes
        rise. The track learns no deviation of its counts: the reference
        uses the spread of its cost instead: at steady durations a minute's
        cost spreads as its count does, so the cost baseline's coefficient
        of variation times the usual count is the count's deviation (Poisson
        at least). Like the rest of the reference it is frozen when the run
        starts: the baseline learns a ramp's slope as spread, and a spread
        followed live would hide the ramp it comes from.
        Returns a ``RISE`` finding that opens a warning, ``RISE_END`` that
        ends it, ``HOLD`` while it holds, or None.
        """
        # Limitation: a burst that fills three minutes at 1.5-6x warns as a level.
        rise = self._rise
        assert rise is not None
        run = track.rise
        at = minute + MINUTE_S
        base = track.baseline
        if not judged or (run is not None and run.alerting != under_alert):
            # Logs saw the minute, a spike rule owns it, another path opened
            # the alert first, or the alert ended through another source.
            track.rise = None
            return None
        level = base.mean
        usual = track.count_mean
        if run is None:
            if under_alert or not base.is_warm:
                return None
            if not rise.may_start(rate, level, invocations, usual):
                return None
            cv = base.deviation / level if level > 0.0 else 0.0
            run = track.rise = rise.start(minute, usual, level, cv * usual)
        mean = base.mean
        cv = _reference_cv(run)
        rise.push(run, minute, rate, mean, cv * mean, invocations, usual, cv * usual)
        if run.alerting:
            if not rise.calm(run):
                return Finding(HOLD, at, rate)
            found = rise.measure(run)
            track.rise = None
            return Finding(RISE_END, at, found.rate, evidence=found.evidence())
        usual_each = level * MINUTE_S / HOUR_S / usual if usual > 0 else 0.0
        found_or_none = rise.fires(run, usual_each)
        if found_or_none is None:
            if rise.fading(run):
                track.rise = None
            return None
        run.alerting = True
        found = found_or_none
        return Finding(RISE, at, found.rate, evidence=found.evidence())

    def _cross_check(
        self,
        context: Context,
        track: MetricTrack,
        minute: float,
        logs: float,
        invocations: float,
    ) -> None:
        cfg = self.config
        if invocations < cfg.cross_check_min_count:
            return
        if logs >= (1.0 - cfg.log_shortfall) * invocations:
            return
        track.disagreements += 1
        track.last_disagreement = (minute, logs, invocations)
        self.disagreements += 1
        logger.info(
            "logs short of metrics context=%s minute=%s logs=%d metrics=%d",
            "/".join(context),
            rfc3339(minute),
            logs,
            invocations,
        )

    def _alpha(self, track: MetricTrack) -> float:
        """Weight of a new minute in the usual count: a mean at first."""
        return max(self._count_alpha, 1.0 / (track.baseline.n + 1))

    # Fusion

    def agreeing(self, holder: Any, at: float, leader: str) -> list[str]:
        """The sources that agree with a spike at ``at`` led by ``leader``."""
        out = [leader]
        src: SourceState | None = holder.sources
        track = src.metric if src is not None else None
        window = self.config.agreement_s
        near = track is not None and abs(track.spiked_at - at) <= window + MINUTE_S
        if leader != METRICS and near:
            out.append(METRICS)
        recursion = holder.recursion
        if recursion is not None and recursion.open:
            out.append(TRACES)
        return out

    def metric_entry(self, holder: Any) -> dict[str, Any] | None:
        """The metrics entry of an alert's per-source evidence."""
        src: SourceState | None = holder.sources
        track = src.metric if src is not None else None
        if track is None or track.last_minute == -math.inf:
            return None
        base = track.baseline
        entry: dict[str, Any] = {
            "minute": rfc3339(track.last_minute),
            "window_s": MINUTE_S,
            "rate_usd_per_hour": round(track.last_rate, 6),
            "baseline_usd_per_hour": round(base.mean, 6),
            "baseline_minutes": base.n,
            "invocations": track.last_count,
            "memory_from": track.last_memory,
            "minutes_led": track.led_minutes,
            "cost_led_usd": round(track.cost, 6),
            "disagreements": track.disagreements,
        }
        if track.last_disagreement is not None:
            minute, logs, metric = track.last_disagreement
            entry["last_disagreement"] = {
                "minute": rfc3339(minute),
                "log_invocations": logs,
                "metric_invocations": metric,
                "note": "logs saw far fewer invocations than the metric counts:"
                " a subscription filter may be dropping logs",
            }
        return entry
