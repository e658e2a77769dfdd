"""Sustained rises of a context's cost that are too small in dollars for a spike.

A window is noisy; a minute of windows is not. This path judges a context's
closed windows together, on a fixed horizon and by a sequential test of
their invocations, and opens a warning only, never a critical alert.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from detector.engine import DetectorConfig

# Slots of one window in a run's ring: its cost rate, what the baseline
# expected and the variance of that, its invocations, the usual count and
# the variance of that. Rates are USD per hour.
_RATE, _MEAN, _VAR, _COUNT, _USUAL, _COUNT_VAR = range(6)
_SLOTS = 6
# Slots of a run's sequential test, in one array: its two statistics; its
# totals since it (last) started: cost rate, the rate expected of the
# reference, invocations, invocations expected, windows; then the reference:
# the usual count, the cost level and the dispersion of the counts.
_SCORES = 2
_T_RATE, _T_MEAN, _T_COUNT, _T_USUAL, _T_WINDOWS = range(_SCORES, _SCORES + 5)
_REF_COUNT, _REF_LEVEL, _REF_DISPERSION = range(_SCORES + 5, _SCORES + 8)
_SEQ_SLOTS = _SCORES + 8

#: What :meth:`Rise.push` takes of one window: its start, cost rate, the
#: cost rate expected and its deviation, invocations, the usual count and
#: its deviation, and the hour's season.
RiseWindow = tuple[float, float, float, float, float, float, float, float]

#: The spread of window counts that is still Poisson: the deviation learnt
#: from a Poisson count's mean absolute deviation runs up to about 1.3 times
#: the square root of its mean at a few calls a window (an estimate, noisy).
POISSON_DISPERSION = 1.5


# Limitation: the run of a context that falls silent is kept until its next call.
class RiseRun:
    """The latest windows of one context whose cost or count rose; made only then.

    ``alerting`` is set once the run opened the context's cost alert: the
    run then judges that alert's end on the same horizon as its start.
    ``seq`` holds the sequential test: its statistics (one per design
    ratio, :attr:`scores`), its totals and the reference, what the
    context's baseline held when the run started (usual count, cost level,
    dispersion), which the test judges the run against so that a rise the
    baseline goes on learning still adds up.
    """

    __slots__ = (
        "alerting",
        "filled",
        "head",
        "last_end",
        "ring",
        "seq",
        "since",
    )

    def __init__(
        self, size: int, since: float, reference: tuple[float, float, float]
    ) -> None:
        self.last_end = since
        # Single precision: the figures are sums of a few windows, judged
        # against thresholds far coarser than seven digits.
        self.ring = array("f", bytes(4 * _SLOTS * size))
        self.filled = 0
        self.head = 0
        self.since = since
        self.alerting = False
        self.seq = array("d", bytes(8 * _SEQ_SLOTS))
        self.seq[_REF_COUNT:_SEQ_SLOTS] = array("d", reference)

    @property
    def scores(self) -> tuple[float, ...]:
        """The sequential test's statistics, one per design ratio."""
        return tuple(self.seq[:_SCORES])

    @property
    def totals(self) -> tuple[float, ...]:
        """Cost rate, expected rate, invocations, expected ones, windows."""
        return tuple(self.seq[_T_RATE:_REF_COUNT])

    @property
    def reference(self) -> tuple[float, float, float]:
        """Usual count, cost level and dispersion when the run started."""
        seq = self.seq
        return seq[_REF_COUNT], seq[_REF_LEVEL], seq[_REF_DISPERSION]

    def copy(self) -> RiseRun:
        """A run with the same figures that can be pushed without this one."""
        twin = RiseRun.__new__(RiseRun)
        twin.last_end, twin.filled, twin.head = self.last_end, self.filled, self.head
        twin.since, twin.alerting = self.since, self.alerting
        twin.ring = array("f", self.ring)
        twin.seq = array("d", self.seq)
        return twin


@dataclass(frozen=True, slots=True)
class RiseFinding:
    """Figures of a horizon whose cost rose, as its alert's evidence says."""

    rate: float
    expected: float
    ratio: float
    z: float
    count_z: float
    invocations: float
    usual_invocations: float
    cost_usd: float
    horizon_s: float
    trimmed_ratio: float
    #: Deviations of the horizon without its costliest windows above what
    #: was expected of those windows.
    trimmed_z: float = 0.0
    #: The sequential test's largest statistic and its threshold, when it
    #: is what fired (0 and 0 for the fixed horizon).
    score: float = 0.0
    threshold: float = 0.0
    dispersion: float = 1.0

    def evidence(self) -> dict[str, object]:
        found: dict[str, object] = {
            "fired": "cost rate sustained above its baseline",
            "horizon_s": self.horizon_s,
            "rate_usd_per_hour": round(self.rate, 6),
            "baseline_usd_per_hour": round(self.expected, 6),
            "ratio": _rounded(self.ratio),
            "z": round(self.z, 2),
            "invocations": int(self.invocations),
            "usual_invocations": round(self.usual_invocations, 1),
            "invocations_z": round(self.count_z, 2),
            "ratio_without_costliest": _rounded(self.trimmed_ratio),
            "z_without_costliest": round(self.trimmed_z, 2),
            "horizon_cost_usd": round(self.cost_usd, 6),
        }
        if self.threshold > 0.0:
            found["fired"] = "invocations sustained above their baseline"
            found["test"] = "sequential"
            found["score"] = round(self.score, 2)
            found["score_threshold"] = round(self.threshold, 2)
            found["dispersion"] = round(self.dispersion, 2)
        return found


def _ratio(rate: float, mean: float) -> float:
    """A cost rate over what was expected: infinite for a rate over nothing."""
    return rate / mean if mean > 0 else (math.inf if rate > 0 else 0.0)


def _rounded(ratio: float) -> float | None:
    return round(ratio, 2) if math.isfinite(ratio) else None


class Rise:
    """Judges the sustained-rise path for every context of one engine.

    Two tests share a run of the context's windows, and either opens the
    warning.

    The fixed horizon. A run may start at a window whose cost rate is
    ``rise_ratio`` times the context's level with at least its share of
    ``rise_min_count`` invocations; from then on every window of the
    context is added to it, empty ones included. Once it holds
    ``rise_windows`` windows it fires when all of these hold over them:

    - the cost rate is ``rise_ratio`` times what was expected and at least
      ``rise_min_excess`` USD/h above it, ``rise_z`` deviations of the sum
      above (the windows' deviations added as independent);
    - without its ``rise_trim`` costliest windows the horizon is still
      half-way there (``(1 + rise_ratio) / 2`` times expected) and
      ``rise_trim_z`` deviations above it, so that a burst of up to
      ``rise_trim`` windows, however steep, does not fire: a rise is a
      level that holds, not a peak, and the few calls of a slow function
      left around a burst (its edges, a dear call) make no level;
    - the invocations are more than chance: at least
      ``rise_min_count`` of them and ``rise_z`` deviations above the usual
      count (Poisson, or the learned spread when larger), unless each
      invocation costs ``rise_ratio`` times its usual (durations inflating).

    The sequential test. A CUSUM of the window counts per design ratio
    ``rho`` of ``rise_cusum_ratios``: each window adds its Poisson
    log-likelihood ratio of ``rho`` times the usual count against the usual
    count, ``n log(rho) - (rho - 1) mu``, and the statistic never goes below
    0. ``mu`` is the count the run's reference expects of the window's hour.
    A threshold of ``log(A)`` keeps the mean time between false alarms of
    one such statistic on Poisson counts above ``A`` windows (Lorden, 1971);
    ``A`` is ``rise_false_alert_hours`` of windows times the number of
    statistics, so that together they keep to the budget. Bursty traffic
    is not Poisson, hence:

    - a window beyond twice the largest design ratio times the usual
      count (plus ``spike_count_z`` deviations) starts the test afresh: a
      peak that steep is a burst's, or the spike detector's with its
      dollar floor, not a level's (the fixed horizon still sees it); for a
      context that has shown bursts, one beyond ``spike_ratio`` times it
      does (see :meth:`_steep_of`);
    - a window adds at most a third of the threshold, so three windows at
      least are needed: a burst that fills three windows holds a whole one,
      steep, and the two edges of a shorter one are not enough;
    - counts spread more than Poisson (the learnt deviation squared over
      the mean, beyond :data:`POISSON_DISPERSION`) scale every increment
      down by that dispersion, as a quasi-likelihood does; so does the
      spread the baseline expects of the window's cost (its coefficient
      of variation squared times ``mu``), and a window whose hour spreads
      more than that factor of six is not judged at all (a batch job that
      fills part of an hour makes its windows no draws around its mean).

    It fires when a statistic reaches the threshold and, over the latest
    ``rise_windows`` windows, the cost rate is as far above the reference
    as the lowest design ratio's test needs (``(rho - 1) / log(rho)``
    times) and ``rise_min_excess`` USD/h above it, with at least
    ``rise_min_count`` invocations since the test started.

    The test need not wait for a window to close. An open window is read
    with its calls so far and the whole window's drift (:meth:`gate`,
    :meth:`peek`): counts only grow, so a crossing read early is one its
    close would read as well, and the false alarms are the closes' own;
    the alert comes at the call that crosses instead of at the window's
    end. The close updates the run as it would without the early reading.

    A run that no longer rises on either test is dropped, so the state
    exists only while a context is above its baseline. Under its own alert
    the statistics are held at the threshold; the alert ends once the
    horizon is calm and every statistic has fallen to half of it.
    """

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config
        self._size = max(1, config.rise_windows)
        self._horizon_s = self._size * config.window_s
        self._half_way = (1.0 + config.rise_ratio) / 2.0
        self._least = max(1.0, config.rise_min_count / self._size)
        # Limitation: fixed design ratios; a rise far from both gathers less evidence.
        ratios = tuple(r for r in config.rise_cusum_ratios if r > 1.0)[:2]
        self._ratios = tuple((r, math.log(r)) for r in ratios)
        budget = config.rise_false_alert_hours * 3600.0 / config.window_s
        if ratios and budget > 1.0:
            self.threshold = math.log(budget * len(ratios))
        else:
            self.threshold = math.inf
        self._cap = self.threshold / 3.0
        # Twice the largest design ratio: the test is for levels up to it.
        self._steep = 2.0 * max((r for r, _ in self._ratios), default=0.0)
        # A context that has shown bursts: a window as steep as a burst's.
        self._steep_bursty = min(self._steep, config.spike_ratio)
        # Above this multiple of the usual count a window adds to a
        # statistic; a cost rate this far up is what the test needs.
        self._breakeven = min(((r - 1.0) / lr for r, lr in self._ratios), default=0)

    @property
    def sequential(self) -> bool:
        """Whether the sequential test is on."""
        return math.isfinite(self.threshold)

    def candidate(self, rate: float, level: float, count: float) -> bool:
        """Whether a window may start a run (cheap: the level, not the season).

        It must hold its share of the invocations a horizon needs, so that
        the single calls of a rare function do not each start a run.
        """
        return (
            count >= self._least
            and rate >= self.config.rise_ratio * level
            and rate > 0.0
        )

    def may_start(self, rate: float, level: float, count: float, usual: float) -> bool:
        """Whether a window starts a run of either test (``usual``: its count)."""
        if self.candidate(rate, level, count):
            return True
        return (
            self.sequential
            and count >= self._least
            and count > self._breakeven * usual
            and rate > 0.0
        )

    def start(
        self, since: float, usual: float = 0.0, level: float = 0.0, spread: float = 0.0
    ) -> RiseRun:
        """A run from ``since``, judged against the usual count ``usual``
        (deviation ``spread``) and the cost level ``level`` of that time."""
        return RiseRun(self._size, since, (usual, level, _dispersion(usual, spread)))

    def push(
        self,
        run: RiseRun,
        start: float,
        rate: float,
        mean: float,
        spread: float,
        count: float,
        usual: float,
        count_spread: float,
        season: float = 1.0,
        bursty: bool = False,
    ) -> None:
        """Add one closed window; the oldest one leaves a full ring.

        Windows with no invocation are not closed for a run (that would
        cost a close per window of every rising context): the ones since
        the last window added come in here, as empty windows expected to
        be what this one is. ``season`` is what the hour's profile makes
        of the level (expected over level), applied to the run's reference.
        ``bursty`` when the context has shown bursts (see :meth:`_steep_of`).
        """
        window = self.config.window_s
        idle = max(0, round((start - run.last_end) / window))
        run.last_end = start + window
        for _ in range(min(idle, self._size)):
            self._put(run, 0.0, mean, spread, 0.0, usual, count_spread)
        self._put(run, rate, mean, spread, count, usual, count_spread)
        if self.sequential:
            hourly = _hourly(run, mean, spread, season)
            self._step(run, idle, rate, count, season, hourly, bursty)

    def may_cross(self, run: RiseRun, windows: int) -> bool:
        """Whether ``windows`` more windows could bring the run's sequential
        test to its threshold (cheap: each adds at most a third of it)."""
        if not self.sequential or run.alerting:
            return False
        return _top(run) + windows * self._cap >= self.threshold

    def gate(
        self,
        run: RiseRun,
        before: Sequence[RiseWindow],
        start: float,
        mean: float,
        spread: float,
        season: float = 1.0,
        bursty: bool = False,
    ) -> float:
        """The fewest invocations of the window from ``start`` with which the
        sequential test may fire when that window closes (infinite: none).

        ``before`` are the windows still open ahead of it, as they stand.
        Counts only rise, so a window that has not reached the gate cannot
        fire yet; one that has is worth judging (:meth:`peek`). The whole
        window's drift is charged, so a crossing read early is one that
        its close would read too, whatever else the window brings, and the
        false-alarm budget is the close's.
        """
        if not self.sequential or run.alerting:
            return math.inf
        if before:
            run = run.copy()
            for window in before:
                self.push(run, *window, bursty)
        hourly = _hourly(run, mean, spread, season)
        if hourly > self._steep:
            return math.inf
        seq = run.seq
        idle = max(0, round((start - run.last_end) / self.config.window_s))
        dispersion = max(seq[_REF_DISPERSION], hourly)
        mu = seq[_REF_COUNT] * season
        least = math.inf
        for i, (ratio, log_ratio) in enumerate(self._ratios):
            drift = (ratio - 1.0) * mu / dispersion
            base = seq[i] - idle * drift
            if base + self._cap < self.threshold:
                continue  # the cap keeps this statistic short of it
            least = min(least, (self.threshold - base + drift) * dispersion / log_ratio)
        steep = self._steep_of(bursty) * mu + self.config.spike_count_z * math.sqrt(
            dispersion * mu
        )
        if least > steep:
            return math.inf  # a window with that many starts the test afresh
        least = max(least, self.config.rise_min_count - seq[_T_COUNT])
        # A hair low, so that rounding never makes the gate stricter than
        # the test it stands for; peek judges exactly.
        return least - 1e-9 * (1.0 + abs(least))

    def peek(
        self, run: RiseRun, windows: Sequence[RiseWindow], bursty: bool = False
    ) -> RiseFinding | None:
        """What the sequential test finds if ``windows`` (still open, in order)
        closed as they stand; the run itself is left as it is."""
        if not self.sequential or run.alerting:
            return None
        twin = run.copy()
        for window in windows:
            self.push(twin, *window, bursty)
        return self._sequence_fires(twin)

    # Limitation: counts only; dearer calls at the usual count wait for the horizon.
    # Limitation: an open window owes its whole drift; its first calls rarely cross.
    def _step(
        self,
        run: RiseRun,
        idle: int,
        rate: float,
        count: float,
        season: float,
        hourly: float = 1.0,
        bursty: bool = False,
    ) -> None:
        """The sequential test's update for ``idle`` empty windows and one more
        (``hourly``: the dispersion the hour's expected spread gives)."""
        if hourly > self._steep:
            # Windows of such an hour are no independent draws around its
            # mean (a batch fills a third of it): the test does not judge
            # them, the spike detector does, on the hour's spread.
            return
        seq = run.seq
        dispersion = max(seq[_REF_DISPERSION], hourly)
        mu = seq[_REF_COUNT] * season
        # Under its own alert a run judges the level's end: a burst-steep
        # window then is the level's, not a burst's.
        steep = self._steep_of(bursty and not run.alerting)
        # Limitation: until bursts are learnt, ones under 6x over 30 s warn as floods.
        if count > steep * mu + self.config.spike_count_z * math.sqrt(dispersion * mu):
            # A peak this steep is a burst's or the spike detector's: what
            # the test gathered so far is no level, and it starts again.
            for i in range(_REF_COUNT):
                seq[i] = 0.0
            return
        seq[_T_MEAN] += (idle + 1) * seq[_REF_LEVEL] * season
        seq[_T_USUAL] += (idle + 1) * mu
        seq[_T_WINDOWS] += idle + 1
        seq[_T_RATE] += rate
        seq[_T_COUNT] += count
        for i, (ratio, log_ratio) in enumerate(self._ratios):
            drift = (ratio - 1.0) * mu / dispersion
            step = min(count * log_ratio / dispersion - drift, self._cap)
            score = max(seq[i] - idle * drift + step, 0.0)
            # Held at the threshold under alert: the end is judged on how
            # far it falls, not on how long the rise went on.
            seq[i] = min(score, self.threshold) if run.alerting else score

    def _steep_of(self, bursty: bool) -> float:
        """The multiple of the usual count beyond which a window starts the
        test afresh.

        Twice the largest design ratio for every context. One that has shown
        bursts is known to fill a few windows at a time far above its level
        (a burst lasts up to ``burst_windows``, more than the three windows
        the cap per window asks for), so for it a window as steep as one a
        burst is learnt from (``spike_ratio`` times the usual count) starts
        afresh too: such windows are the spike path's, which holds bursts
        like those shown for a burst's length and no longer, and the fixed
        horizon's; the test judges the level between them. The caller says
        ``bursty`` only while the window's excursion is no longer than a
        burst, and never under the run's own alert, whose end is the level's.
        """
        # Limitation: a steep rise on such a context counts only from its fifth window.
        return self._steep_bursty if bursty else self._steep

    def _put(
        self,
        run: RiseRun,
        rate: float,
        mean: float,
        spread: float,
        count: float,
        usual: float,
        count_spread: float,
    ) -> None:
        at = run.head * _SLOTS
        ring = run.ring
        ring[at + _RATE] = rate
        ring[at + _MEAN] = mean
        # As the spike detector does: a deviation of at least 5 % of the mean.
        floor = 0.05 * mean
        ring[at + _VAR] = max(spread, floor) ** 2
        ring[at + _COUNT] = count
        ring[at + _USUAL] = usual
        ring[at + _COUNT_VAR] = max(count_spread * count_spread, usual)
        run.head = (run.head + 1) % self._size
        run.filled = min(run.filled + 1, self._size)

    def _sums(self, run: RiseRun) -> list[float]:
        sums = [0.0] * _SLOTS
        ring = run.ring
        for i in range(run.filled * _SLOTS):
            sums[i % _SLOTS] += ring[i]
        return sums

    def _trimmed(self, run: RiseRun) -> tuple[float, float]:
        """The horizon's ratio without its ``rise_trim`` costliest windows, and
        how many deviations (added as independent) those left are above what
        was expected of them."""
        ring = run.ring
        rows = sorted(
            (ring[at + _RATE], ring[at + _MEAN], ring[at + _VAR])
            for at in range(0, run.filled * _SLOTS, _SLOTS)
        )
        kept = rows[: max(1, len(rows) - self.config.rise_trim)]
        rate = sum(p[0] for p in kept)
        mean = sum(p[1] for p in kept)
        var = sum(p[2] for p in kept)
        z = (rate - mean) / math.sqrt(var) if var > 0 else 0.0
        return _ratio(rate, mean), z

    def measure(self, run: RiseRun) -> RiseFinding:
        """The figures of the run's horizon as it stands."""
        rate, mean, var, count, usual, count_var = self._sums(run)
        z = (rate - mean) / math.sqrt(var) if var > 0 else 0.0
        count_z = (count - usual) / math.sqrt(max(count_var, 1.0))
        k = max(run.filled, 1)
        return self._finding(run, k, rate, mean, z, count, usual, count_z)

    def measure_run(self, run: RiseRun) -> RiseFinding:
        """The figures of the whole run against its reference (sequential test)."""
        seq = run.seq
        count, usual = seq[_T_COUNT], seq[_T_USUAL]
        dispersion = seq[_REF_DISPERSION]
        count_z = (count - usual) / math.sqrt(max(dispersion * usual, 1.0))
        k = max(seq[_T_WINDOWS], 1.0)
        found = self._finding(
            run, k, seq[_T_RATE], seq[_T_MEAN], count_z, count, usual, count_z
        )
        return replace(
            found, score=_top(run), threshold=self.threshold, dispersion=dispersion
        )

    def _finding(
        self,
        run: RiseRun,
        windows: float,
        rate: float,
        mean: float,
        z: float,
        count: float,
        usual: float,
        count_z: float,
    ) -> RiseFinding:
        """The figures of ``windows`` windows of the run from their sums."""
        window = self.config.window_s
        trimmed_ratio, trimmed_z = self._trimmed(run)
        return RiseFinding(
            rate=rate / windows,
            expected=mean / windows,
            ratio=_ratio(rate, mean),
            z=z,
            count_z=count_z,
            invocations=count,
            usual_invocations=usual,
            cost_usd=rate * window / 3600.0,
            horizon_s=windows * window,
            trimmed_ratio=trimmed_ratio,
            trimmed_z=trimmed_z,
        )

    def fires(self, run: RiseRun, usual_each: float) -> RiseFinding | None:
        """The figures when the run is a sustained rise on either test, else None.

        ``usual_each`` is the usual cost of one invocation in USD (0: unknown).
        """
        return self._horizon_fires(run, usual_each) or self._sequence_fires(run)

    # Limitation: the fixed horizon is judged at window close only, never early.
    def _horizon_fires(self, run: RiseRun, usual_each: float) -> RiseFinding | None:
        if run.filled < self._size:
            return None
        cfg = self.config
        found = self.measure(run)
        if not (
            found.ratio >= cfg.rise_ratio
            and found.rate - found.expected >= cfg.rise_min_excess
            and found.z >= cfg.rise_z
            and found.trimmed_ratio >= self._half_way
            and found.trimmed_z >= cfg.rise_trim_z
            and found.invocations >= cfg.rise_min_count
        ):
            return None
        more = found.count_z >= cfg.rise_z
        each = found.cost_usd / found.invocations
        dearer = usual_each > 0 and each >= cfg.rise_ratio * usual_each
        return found if more or dearer else None

    # Limitation: a burst of 3-4 windows at 3-4x the usual count can cross alone.
    def _sequence_fires(self, run: RiseRun) -> RiseFinding | None:
        if not self.sequential or _top(run) < self.threshold:
            return None
        cfg = self.config
        found = self.measure_run(run)
        # The cost of the latest windows against the run's reference, as a
        # ramp's count test adds up long before its average cost is high.
        seq = run.seq
        reference = seq[_T_MEAN] / max(seq[_T_WINDOWS], 1.0)
        ring = run.ring
        recent = sum(ring[at] for at in range(_RATE, run.filled * _SLOTS, _SLOTS))
        recent /= max(run.filled, 1)
        if (
            recent >= self._breakeven * reference
            and recent - reference >= cfg.rise_min_excess
            and found.invocations >= cfg.rise_min_count
        ):
            return found
        return None

    def level_outside(
        self, run: RiseRun, first: float, end: float, found: RiseFinding
    ) -> bool:
        """Whether the run's horizon, which made ``found``, still makes a
        level without its windows from ``first`` to ``end`` (exclusive,
        event time): the rest alone is as far above what was expected of it
        as ``found``'s test needs (the fixed horizon's ``rise_ratio``, at
        ``rise_z`` deviations; the sequential test's least ratio) and
        ``rise_min_excess`` USD/h above. With no window left out, it does;
        with none left, it does not."""
        window = self.config.window_s
        ring = run.ring
        rate = mean = var = 0.0
        kept = 0
        for back in range(run.filled):
            # The latest window ends at last_end; the ring runs back from head.
            begins = run.last_end - (back + 1) * window
            if first - 1e-6 <= begins < end - 1e-6:
                continue
            at = ((run.head - 1 - back) % self._size) * _SLOTS
            rate += ring[at + _RATE]
            mean += ring[at + _MEAN]
            var += ring[at + _VAR]
            kept += 1
        if kept == run.filled:
            return True
        if kept == 0:
            return False
        cfg = self.config
        if (rate - mean) / kept < cfg.rise_min_excess:
            return False
        if found.threshold > 0.0:
            return rate >= self._breakeven * mean
        z = (rate - mean) / math.sqrt(var) if var > 0.0 else 0.0
        return rate >= cfg.rise_ratio * mean and z >= cfg.rise_z

    def fading(self, run: RiseRun) -> bool:
        """Whether a run that has not fired no longer rises (drop it)."""
        if _top(run) > 0.0:
            return False
        found = self.measure(run)
        return found.ratio < self._half_way

    # Limitation: a level that stays 1.5x up keeps its warning open and unlearnt.
    def calm(self, run: RiseRun) -> bool:
        """Whether the horizon of an alert this run opened is back to normal."""
        if _top(run) > self.threshold / 2.0:
            return False
        found = self.measure(run)
        cfg = self.config
        return (
            found.ratio < cfg.resolve_ratio
            or found.rate - found.expected < cfg.rise_min_excess / 2.0
        )


def _top(run: RiseRun) -> float:
    """The larger statistic of a run's sequential test."""
    seq = run.seq
    return seq[0] if seq[0] >= seq[1] else seq[1]


def _hourly(run: RiseRun, mean: float, spread: float, season: float) -> float:
    """The spread the baseline expects of a window's cost, as a dispersion of
    its count: an hour of the profile that holds a batch job varies far more
    than Poisson, window to window."""
    cv = spread / mean if mean > 0.0 else 0.0
    return cv * cv * run.seq[_REF_COUNT] * season / POISSON_DISPERSION


def _dispersion(usual: float, spread: float) -> float:
    """How much more than Poisson a context's window counts spread (at least 1)."""
    if usual <= 0.0:
        return 1.0
    return max(1.0, spread * spread / usual / POISSON_DISPERSION)
