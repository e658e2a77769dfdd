"""Sustained rises of a context's cost that are too small in dollars for a spike.

A window is noisy; a minute of windows is not. This path judges the last
``rise_windows`` closed windows of a context together, against what its own
(seasonal) baseline expected of each, and opens a warning only, never a
critical alert: the dollar floor of critical stays with the spike detector.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from detector.engine import DetectorConfig

# Slots of one window in a run's ring: its cost rate, what the baseline
# expected and the variance of that, its invocations, the usual count and
# the variance of that. Rates are USD per hour.
_RATE, _MEAN, _VAR, _COUNT, _USUAL, _COUNT_VAR = range(6)
_SLOTS = 6


class RiseRun:
    """The latest windows of one context whose cost rose; made only then.

    ``alerting`` is set once the run opened the context's cost alert: the
    run then judges that alert's end on the same horizon as its start.
    """

    __slots__ = ("alerting", "filled", "head", "last_end", "ring", "since")

    def __init__(self, size: int, since: float) -> None:
        self.last_end = since
        # Single precision: the figures are sums of a few windows, judged
        # against thresholds far coarser than seven digits.
        self.ring = array("f", bytes(4 * _SLOTS * size))
        self.filled = 0
        self.head = 0
        self.since = since
        self.alerting = False


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

    def evidence(self) -> dict[str, object]:
        return {
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
            "horizon_cost_usd": round(self.cost_usd, 6),
        }


def _rounded(ratio: float) -> float | None:
    return round(ratio, 2) if math.isfinite(ratio) else None


class Rise:
    """Judges the sustained-rise path for every context of one engine.

    A run starts at a window whose cost rate is ``rise_ratio`` times the
    context's level with at least its share of ``rise_min_count``
    invocations; from then on every
    window of the context is added to it, empty ones included. Once it
    holds ``rise_windows`` windows it fires when all of these hold over
    them:

    - the cost rate is ``rise_ratio`` times what was expected and at least
      ``rise_min_excess`` USD/h above it, ``rise_z`` deviations of the sum
      above (the windows' deviations added as independent);
    - without its ``rise_trim`` costliest windows the horizon is still
      half-way there (``(1 + rise_ratio) / 2`` times expected), so that a
      burst of up to ``rise_trim`` windows, however steep, does not fire:
      a rise is a level that holds, not a peak;
    - the invocations are more than chance: at least
      ``rise_min_count`` of them and ``rise_z`` deviations above the usual
      count (Poisson, or the learned spread when larger), unless each
      invocation costs ``rise_ratio`` times its usual (durations inflating).

    A run that no longer rises is dropped, so the state exists only while
    a context is above its baseline.
    """

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config
        self._size = max(1, config.rise_windows)
        self._horizon_s = self._size * config.window_s
        self._half_way = (1.0 + config.rise_ratio) / 2.0
        self._least = max(1.0, config.rise_min_count / self._size)

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

    def start(self, since: float) -> RiseRun:
        return RiseRun(self._size, since)

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
    ) -> None:
        """Add one closed window; the oldest one leaves a full ring.

        Windows with no invocation are not closed for a run (that would
        cost a close per window of every rising context): the ones since
        the last window added come in here, as empty windows expected to
        be what this one is.
        """
        window = self.config.window_s
        idle = min(round((start - run.last_end) / window), self._size)
        run.last_end = start + window
        for _ in range(idle):
            self._put(run, 0.0, mean, spread, 0.0, usual, count_spread)
        self._put(run, rate, mean, spread, count, usual, count_spread)

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

    def _trimmed(self, run: RiseRun) -> float:
        """The horizon's ratio without its ``rise_trim`` costliest windows."""
        ring = run.ring
        pairs = sorted(
            (ring[at + _RATE], ring[at + _MEAN])
            for at in range(0, run.filled * _SLOTS, _SLOTS)
        )
        kept = pairs[: max(1, len(pairs) - self.config.rise_trim)]
        rate = sum(p[0] for p in kept)
        mean = sum(p[1] for p in kept)
        return rate / mean if mean > 0 else (math.inf if rate > 0 else 0.0)

    def measure(self, run: RiseRun) -> RiseFinding:
        """The figures of the run's horizon as it stands."""
        rate, mean, var, count, usual, count_var = self._sums(run)
        k = max(run.filled, 1)
        ratio = rate / mean if mean > 0 else (math.inf if rate > 0 else 0.0)
        z = (rate - mean) / math.sqrt(var) if var > 0 else 0.0
        count_z = (count - usual) / math.sqrt(max(count_var, 1.0))
        window = self.config.window_s
        return RiseFinding(
            rate=rate / k,
            expected=mean / k,
            ratio=ratio,
            z=z,
            count_z=count_z,
            invocations=count,
            usual_invocations=usual,
            cost_usd=rate * window / 3600.0,
            horizon_s=k * window,
            trimmed_ratio=self._trimmed(run),
        )

    # Limitation: no rise is found before its horizon is full, however sure.
    def fires(self, run: RiseRun, usual_each: float) -> RiseFinding | None:
        """The figures when the run's horizon is a sustained rise, else None.

        ``usual_each`` is the usual cost of one invocation in USD (0: unknown).
        """
        if run.filled < self._size:
            return None
        cfg = self.config
        found = self.measure(run)
        if not (
            found.ratio >= cfg.rise_ratio
            and found.rate - found.expected >= cfg.rise_min_excess
            and found.z >= cfg.rise_z
            and found.trimmed_ratio >= self._half_way
            and found.invocations >= cfg.rise_min_count
        ):
            return None
        more = found.count_z >= cfg.rise_z
        each = found.cost_usd / found.invocations
        dearer = usual_each > 0 and each >= cfg.rise_ratio * usual_each
        return found if more or dearer else None

    def fading(self, run: RiseRun) -> bool:
        """Whether a run that has not fired no longer rises (drop it)."""
        found = self.measure(run)
        return found.ratio < self._half_way

    # Limitation: a level that stays 1.5x up keeps its warning open and unlearnt.
    def calm(self, run: RiseRun) -> bool:
        """Whether the horizon of an alert this run opened is back to normal."""
        found = self.measure(run)
        cfg = self.config
        return (
            found.ratio < cfg.resolve_ratio
            or found.rate - found.expected < cfg.rise_min_excess / 2.0
        )
