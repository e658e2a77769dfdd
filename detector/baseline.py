"""Baselines of one context's window values: robust level, seasons, bursts, peers.

Cold start. A context is judged against its own baseline once that has seen
``warmup`` windows. Until then it is judged against the pool of its peers:
the warm contexts of the same account with the same architecture and the
same power-of-two memory size; when that pool has not seen ``warmup``
windows itself, the pool of the whole account; when neither is warm, the
context is not judged. Pools learn only from warm contexts not under alert,
so a brand-new function that floods at once meets the usual cost of a
function like it, not its own flood. Bursts (:class:`Bursts`) are learnt
from a context's own windows only; until it has seen enough of them the
engine holds its short excursions back (``DetectorConfig.burst_cold_windows``).
"""

from __future__ import annotations

import functools
import math
from array import array
from typing import Any, ClassVar, NamedTuple

from detector.interning import Shared
from models.base import Detector

#: Scale from mean absolute deviation to standard deviation for a normal law.
MAD_TO_STD = 1.2533

#: Under alert, a window teaches its hour at most this multiple of what the
#: hour expected (the detector's ratio for a critical spike).
ALERT_CLIP = 10.0

HOUR_S = 3600.0
DAY_S = 86_400.0
#: 1970-01-01, day 0 of the epoch, was a Thursday; weekday 0 is a Monday.
_EPOCH_WEEKDAY = 3

# Layout of a seasonal profile: per hour of the day the mean of a window's
# value and its root mean square, then one factor per day of the week.
_MEAN, _RMS, _WEEK = 0, 24, 48
_PROFILE_LEN = 55
# Layout of the accumulators of the hour and the day in progress.
_HOUR, _H_SUM, _H_SQ, _H_N, _H_ALERT, _DAY, _D_SUM, _D_N = range(8)
_ACC_START = array("d", bytes(8 * 8))

# Values are kept as 16-bit codes of their base-2 logarithm, 1/1024 apart
# (0.07 %, far below any threshold), from 2**-30 to 2**34; code 0 means
# "never seen" and code 1 "zero".
_UNSEEN, _ZERO = 0, 1
_LOG_MIN = -30.0
_STEPS = 1024.0
_CODE_MAX = 65_535


def _encode(value: float) -> int:
    if value <= 2.0**_LOG_MIN:
        return _ZERO
    code = 2 + round((math.log2(value) - _LOG_MIN) * _STEPS)
    return min(code, _CODE_MAX)


def _decode(code: int) -> float:
    if code <= _ZERO:
        return 0.0
    return float(2.0 ** ((code - 2) / _STEPS + _LOG_MIN))


class _Settings(NamedTuple):
    """The hyperparameters of a baseline, and the EWMA weight they give."""

    half_life: float
    warmup: int
    clip: float
    alpha: float
    window_s: float = 0.0
    cycle_weight: float = 0.0
    alert_weight: float = 0.0


# Every context holds baselines made with the same few settings, so they
# share one tuple rather than a copy each, and making one costs a lookup.
# Typed: 180 and 180.0 are equal, but their reprs are not.
@functools.lru_cache(maxsize=64, typed=True)
def _settings(half_life: float, warmup: int, clip: float, *seasons: float) -> _Settings:
    alpha = 1.0 - 0.5 ** (1.0 / half_life)
    return _Settings(half_life, warmup, clip, alpha, *seasons)


#: Hour ends handed out lately by :meth:`SeasonalBaseline.valid_until`.
_HOUR_ENDS: Shared[float] = Shared(64)
#: The hour end handed out last.
_hour_end = -math.inf


@functools.cache
def _slot_names(cls: type) -> tuple[str, ...]:
    """Every slot of ``cls`` and of the classes it derives from.

    Cached per class: every checkpoint pickles every baseline it holds.
    """
    names: list[str] = []
    for klass in reversed(cls.__mro__):
        names.extend(klass.__dict__.get("__slots__", ()))
    return tuple(names)


@functools.cache
def _learned_names(cls: type) -> tuple[str, ...]:
    """The slots of ``cls`` a checkpoint keeps: all but the shared settings."""
    return tuple(n for n in _slot_names(cls) if n != "_s")


def weekday(t: float) -> int:
    """Day of the week of an event time, Monday 0, in UTC."""
    # Limitation: profiles are in UTC; a local-time pattern shifts an hour at DST.
    return (int(t // DAY_S) + _EPOCH_WEEKDAY) % 7


class RobustBaseline(Detector):
    """Exponentially weighted mean and deviation with clipped updates.

    Parameters
    ----------
    half_life
        Number of observations after which an observation weighs half.
    warmup
        Observations needed before :meth:`is_warm` is true; until then the
        mean is a plain running mean, so a new context learns quickly.
    clip
        Updates are clipped to ``mean + clip * deviation``, so one outlier
        (or an attack that was not flagged) moves the baseline only a little.

    Scores are deviations above the mean, in ``[0, inf)``; a missing value
    (``None`` or NaN) is not learned and scores 0.

    Examples
    --------
    >>> b = RobustBaseline(half_life=10, warmup=5)
    >>> for x in [1.0, 1.2, 0.8, 1.1, 0.9, 1.0]:
    ...     b.learn_one(x)
    >>> round(b.mean, 2), b.is_warm
    (1.0, True)
    >>> b.score_one(1.0) < 1 < b.score_one(5.0)
    True
    """

    # Slotted, as every context holds several, with the hyperparameters in
    # one shared tuple (read through properties of their own names).
    __slots__ = ("_bursts", "_mad", "_mean", "_n", "_s")
    _param_names: ClassVar[tuple[str, ...]] = ("half_life", "warmup", "clip")

    def __init__(self, half_life: float = 180.0, warmup: int = 30, clip: float = 4.0):
        self._s = _settings(half_life, warmup, clip)
        self._n = 0
        self._mean = 0.0
        self._mad = 0.0
        # What :class:`Bursts` learnt of excursions above this baseline; made
        # by the first one, as most baselines never see any.
        self._bursts: BurstState | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self._params()
        for name in _learned_names(type(self)):
            state[name] = getattr(self, name)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Also the instance dict of a checkpoint from before the slots, which
        # kept the hyperparameters and the weight (remade here) one by one.
        type(self).__init__(self, **{k: state[k] for k in self._param_names})
        for name in _slot_names(type(self)):
            if name in state:
                setattr(self, name, state[name])

    def _params(self) -> dict[str, Any]:
        return {"half_life": self.half_life, "warmup": self.warmup, "clip": self.clip}

    @property
    def half_life(self) -> float:
        return self._s.half_life

    @property
    def warmup(self) -> int:
        return self._s.warmup

    @property
    def clip(self) -> float:
        return self._s.clip

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"half_life": 20.0, "warmup": 5}

    @property
    def mean(self) -> float:
        return self._mean

    @property
    def deviation(self) -> float:
        """An estimate of the standard deviation of the observations."""
        return self._mad * MAD_TO_STD

    @property
    def n(self) -> int:
        return self._n

    @property
    def is_warm(self) -> bool:
        return self._n >= self._s.warmup

    @property
    def bursts(self) -> BurstState | None:
        """The short excursions above this baseline seen so far, if any."""
        return self._bursts

    def expected(self, t: float | None = None) -> tuple[float, float]:
        """Mean and deviation expected of an observation at time ``t``."""
        return self._mean, self._mad * MAD_TO_STD

    def valid_until(self, t: float) -> float:
        """Until when :meth:`expected` stays what it is at ``t`` (no new data)."""
        return math.inf

    def learn_one(self, x: float | None, t: float | None = None) -> None:
        if x is None or x != x:
            return
        n = self._n
        mean = self._mean
        if n >= 2:
            dev = self._mad * MAD_TO_STD
            ceiling = mean + self._s.clip * (dev if dev > 0.1 * mean else 0.1 * mean)
            if x > ceiling:
                x = ceiling
        n += 1
        self._n = n
        alpha = self._s.alpha
        alpha = alpha if alpha * n > 1.0 else 1.0 / n
        self._mad += alpha * ((x - mean if x >= mean else mean - x) - self._mad)
        self._mean = mean + alpha * (x - mean)

    def learn_paused(self, x: float | None, t: float | None = None) -> None:
        """An observation made under an open alert: the level learns nothing."""

    def learn_many_zeros(self, count: int, t: float | None = None) -> None:
        """Learn ``count`` observations of 0 at once (idle windows)."""
        # Step by step while the running mean still sets the pace, then in
        # closed form: with a fixed alpha and non-negative observations, k
        # zeros scale the mean by r**k and move the deviation to
        # r**k * mad + k * alpha * r**(k-1) * mean, where r = 1 - alpha.
        n, mean, mad = self._n, self._mean, self._mad
        alpha, clip = self._s.alpha, self._s.clip
        # learn_one's steps for x = 0 on local variables: an idle gap of a
        # young context is many of them, one per window.
        while count > 0 and alpha * (n + 1) <= 1.0:
            x = 0.0
            if n >= 2:
                dev = mad * MAD_TO_STD
                ceiling = mean + clip * (dev if dev > 0.1 * mean else 0.1 * mean)
                if x > ceiling:
                    x = ceiling
            n += 1
            a = 1.0 / n
            mad += a * ((x - mean if x >= mean else mean - x) - mad)
            mean = mean + a * (x - mean)
            count -= 1
        self._n, self._mean, self._mad = n, mean, mad
        if count <= 0:
            return
        if self._mean < 0:
            for _ in range(min(count, 10_000)):
                RobustBaseline.learn_one(self, 0.0)
            return
        r = 1.0 - alpha
        rk1 = r ** (count - 1)
        self._mad = rk1 * r * self._mad + count * alpha * rk1 * self._mean
        self._mean *= rk1 * r
        self._n += count

    def score_one(
        self, x: float | None, t: float | None = None, floor: float = 0.0
    ) -> float:
        """Deviations above the mean; ``floor`` bounds the deviation below."""
        if x is None or x != x:
            return 0.0
        mean, dev = self.expected(t)
        spread = max(dev, floor)
        if spread <= 0.0:
            return math.inf if x > mean else 0.0
        return max(0.0, (x - mean) / spread)


def _read_through_slots(cls: type, names: dict[str, str]) -> None:
    """Serve each read-only property that only returns a slot by the slot's
    own descriptor: on CPython 3.11 a property is a Python call per read,
    and the hot paths read these per event and per window close.

    The type checker still sees the read-only properties of the source,
    and their docstrings there.
    """
    for public, slot in names.items():
        setattr(cls, public, cls.__dict__[slot])


_read_through_slots(RobustBaseline, {"mean": "_mean", "n": "_n", "bursts": "_bursts"})


class SeasonalBaseline(RobustBaseline):
    """A robust level plus hour-of-day and day-of-week profiles, in UTC.

    The level is a :class:`RobustBaseline` of the recent windows. The daily
    profile keeps, per hour of the day, the mean and the root mean square
    of a window's value in that hour on earlier days; the weekly profile a
    factor per day of the week (that day's mean over the usual day's). What
    is expected of a window is the larger of the level and its hour's
    profile times its weekday's factor, so a nightly batch job or a midday
    peak seen on earlier days is expected, while a flood at an hour that is
    usually quiet meets only the level.

    An hour's profile is updated once, when the hour is over, and is used
    from the next day on: the traffic of a day never raises what that same
    day expects. Each update moves the profile ``cycle_weight`` of the way to
    the new day (the first sighting of an hour or a weekday is taken as it
    is). Windows under an open alert do not move the level; in an hour seen
    before they move its profile only ``alert_weight`` as much, with values
    clipped to :data:`ALERT_CLIP` times what the hour expected. A pattern
    that recurs under alert in an hour known as quiet is therefore learned
    over days, not at once; the first day of a context learns in full.

    The profile is 55 16-bit codes (110 bytes) plus eight accumulators, so
    a context costs a few hundred bytes, not 168 floats.

    Parameters
    ----------
    half_life, warmup, clip
        As for :class:`RobustBaseline`, for the level.
    window_s
        Length of one observation's window in seconds, to place idle
        windows in their hours.
    cycle_weight
        How far one day moves an hour's profile (and one week a weekday's).
    alert_weight
        Share of ``cycle_weight`` that windows under an open alert get.

    Scores are deviations above the expected value, in ``[0, inf)``; a
    missing value is not learned and scores 0.

    Examples
    --------
    >>> b = SeasonalBaseline(half_life=30, warmup=5, window_s=600.0)
    >>> day = [50.0 if hour == 2 else 1.0 for hour in range(24) for _ in range(6)]
    >>> for i, x in enumerate(day * 3):
    ...     b.learn_one(x, i * 600.0)
    >>> at_two = 3 * 86_400.0 + 2 * 3600.0
    >>> round(b.expected(at_two)[0]), b.score_one(50.0, at_two) < 1.0
    (50, True)
    >>> b.score_one(50.0, at_two + 12 * 3600.0) > 10
    True
    """

    __slots__ = ("_acc", "_profile")
    _param_names = (
        *RobustBaseline._param_names,
        "window_s",
        "cycle_weight",
        "alert_weight",
    )

    def __init__(
        self,
        half_life: float = 180.0,
        warmup: int = 30,
        clip: float = 4.0,
        window_s: float = 10.0,
        cycle_weight: float = 0.5,
        alert_weight: float = 0.25,
    ) -> None:
        super().__init__(half_life, warmup, clip)
        if not 0.0 < cycle_weight <= 1.0:
            raise ValueError(f"cycle_weight must be in (0, 1], got {cycle_weight!r}")
        if not 0.0 <= alert_weight <= 1.0:
            raise ValueError(f"alert_weight must be in [0, 1], got {alert_weight!r}")
        if window_s <= 0:
            raise ValueError(f"window_s must be positive, got {window_s!r}")
        self._s = _settings(
            half_life, warmup, clip, window_s, cycle_weight, alert_weight
        )
        self._profile: array[int] | None = None
        self._acc: array[float] | None = None

    def _params(self) -> dict[str, Any]:
        return {
            **super()._params(),
            "window_s": self.window_s,
            "cycle_weight": self.cycle_weight,
            "alert_weight": self.alert_weight,
        }

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"half_life": 20.0, "warmup": 5, "window_s": 600.0}

    @property
    def window_s(self) -> float:
        return self._s.window_s

    @property
    def cycle_weight(self) -> float:
        return self._s.cycle_weight

    @property
    def alert_weight(self) -> float:
        return self._s.alert_weight

    # What is expected

    def expected(self, t: float | None = None) -> tuple[float, float]:
        mean = self._mean
        dev = self._mad * MAD_TO_STD
        profile = self._profile
        if t is None or profile is None:
            return mean, dev
        hour = int(t // HOUR_S) % 24
        code = profile[_MEAN + hour]
        if code == _UNSEEN:
            return mean, dev
        factor = self._week_factor(profile, weekday(t))
        m = _decode(code) * factor
        rms = _decode(profile[_RMS + hour]) * factor
        spread = math.sqrt(max(rms * rms - m * m, 0.0))
        return (m if m > mean else mean), (spread if spread > dev else dev)

    def valid_until(self, t: float) -> float:
        global _hour_end
        end = (t // HOUR_S + 1.0) * HOUR_S
        # Every context keeps this; contexts in the same hour share one float.
        # Nearly every call asks for the hour end of the call before.
        if end != _hour_end:
            _hour_end = _HOUR_ENDS(end)
        return _hour_end

    def profile(self) -> dict[str, list[float | None]]:
        """The learned profiles, decoded (``None`` where never seen)."""
        codes = self._profile or array("H", bytes(2 * _PROFILE_LEN))

        def values(start: int, count: int) -> list[float | None]:
            return [
                None if c == _UNSEEN else _decode(c)
                for c in codes[start : start + count]
            ]

        return {
            "hour_mean": values(_MEAN, 24),
            "hour_rms": values(_RMS, 24),
            "weekday_factor": values(_WEEK, 7),
        }

    # Learning

    def learn_one(self, x: float | None, t: float | None = None) -> None:
        if x is None or x != x:
            return
        # By name, not through super(), which builds an object per call: this
        # runs at every window close, as learn_many_zeros does after a gap.
        RobustBaseline.learn_one(self, x, t)
        if t is not None:
            # A float count keeps the sums' arithmetic float with float.
            self._season(x, t, 1.0, False)

    def learn_paused(self, x: float | None, t: float | None = None) -> None:
        if x is None or x != x or t is None:
            return
        profile = self._profile
        if profile is not None and profile[_MEAN + int(t // HOUR_S) % 24] != _UNSEEN:
            # Bounded, so a flood cannot make itself expected in one day.
            x = min(x, ALERT_CLIP * self.expected(t)[0])
        self._season(x, t, 1.0, True)

    def learn_many_zeros(self, count: int, t: float | None = None) -> None:
        RobustBaseline.learn_many_zeros(self, count, t)
        if t is None or count <= 0:
            return
        # Beyond eight days every hour and weekday has been replaced anyway.
        horizon = 8 * DAY_S
        window_s = self._s.window_s
        span = count * window_s
        if span > horizon:
            t += span - horizon
            count = math.ceil(horizon / window_s)
        while count > 0:
            in_hour = math.ceil(((t // HOUR_S + 1.0) * HOUR_S - t) / window_s)
            # Compared, not min() and max(): an idle gap walks this per hour.
            step = in_hour if in_hour < count else count
            if step < 1:
                step = 1
            self._season(0.0, t, step, False)
            t += step * window_s
            count -= step

    def _season(self, x: float, t: float, count: float, alerted: bool) -> None:
        """Add ``count`` windows of value ``x`` starting at ``t`` to the profile."""
        acc = self._acc
        hour = math.floor(t / HOUR_S)
        if acc is None:
            # Copied, as filling an array from a tuple converts item by item.
            acc = self._acc = _ACC_START[:]
            acc[_HOUR] = hour
            acc[_DAY] = math.floor(t / DAY_S)
            # Made now, not at the first hour's end, so memory is paid up front.
            self._profile_codes()
        if hour != acc[_HOUR]:
            self._commit_hour(acc)
            acc[_HOUR] = hour
            day = math.floor(t / DAY_S)
            if day != acc[_DAY]:
                self._commit_day(acc)
                acc[_DAY] = day
        total = x * count
        acc[_H_SUM] += total
        acc[_H_SQ] += x * x * count
        acc[_H_N] += count
        if alerted:
            acc[_H_ALERT] += count
        acc[_D_SUM] += total
        acc[_D_N] += count

    def _profile_codes(self) -> array[int]:
        if self._profile is None:
            # Repeated rather than read from bytes, which over-allocates.
            self._profile = array("H", [_UNSEEN]) * _PROFILE_LEN
        return self._profile

    def _week_factor(self, profile: array[int], day: int) -> float:
        code = profile[_WEEK + day]
        return 1.0 if code == _UNSEEN else max(_decode(code), 1.0 / 64)

    def _commit_hour(self, acc: array[float]) -> None:
        n = acc[_H_N]
        if n > 0:
            profile = self._profile_codes()
            slot = int(acc[_HOUR]) % 24
            factor = self._week_factor(profile, weekday(acc[_HOUR] * HOUR_S))
            mean = acc[_H_SUM] / n / factor
            square = acc[_H_SQ] / n / (factor * factor)
            old = profile[_MEAN + slot]
            if old == _UNSEEN:
                profile[_MEAN + slot] = _encode(mean)
                profile[_RMS + slot] = _encode(math.sqrt(square))
            else:
                # Quiet days of the week teach the shape of a day less.
                calm = 1.0 - (acc[_H_ALERT] / n) * (1.0 - self.alert_weight)
                w = self.cycle_weight * min(1.0, factor) * calm
                old_mean = _decode(old)
                old_rms = _decode(profile[_RMS + slot])
                profile[_MEAN + slot] = _encode(old_mean + w * (mean - old_mean))
                sq = old_rms * old_rms + w * (square - old_rms * old_rms)
                profile[_RMS + slot] = _encode(math.sqrt(sq))
        acc[_H_SUM] = acc[_H_SQ] = acc[_H_N] = acc[_H_ALERT] = 0.0

    def _commit_day(self, acc: array[float]) -> None:
        n = acc[_D_N]
        profile = self._profile
        if n > 0 and profile is not None:
            seen = [_decode(c) for c in profile[_MEAN : _MEAN + 24] if c != _UNSEEN]
            usual = sum(seen) / len(seen) if seen else 0.0
            if usual > 0.0:
                day = weekday(acc[_DAY] * DAY_S)
                ratio = acc[_D_SUM] / n / usual
                old = profile[_WEEK + day]
                if old != _UNSEEN:
                    previous = _decode(old)
                    ratio = previous + self.cycle_weight * (ratio - previous)
                profile[_WEEK + day] = _encode(min(max(ratio, 1.0 / 64), 64.0))
        acc[_D_SUM] = acc[_D_N] = 0.0


#: An excursion is over once a window's excess over what was expected is back
#: under this share of the excursion's highest. The hysteresis keeps a rise
#: that wavers about a bar from passing for a string of short bursts.
BURST_CALM = 0.25

#: Windows a baseline must have learnt before its level tells an excursion
#: from the usual. Before them, an excursion is a burst only if silence
#: follows it: a new function's first busy windows may just be its level.
BURST_MIN_WINDOWS = 6


class BurstState:
    """What one baseline has seen of short excursions above what it expected.

    ``level`` is the highest excess of a burst learnt (in the baseline's
    units), as of event time ``at``, from which it fades. The ``run_``
    fields describe the excursion in progress: the start of its first and
    of its latest window, its highest excess, how many of its windows were
    not calm (0: there is none), what its windows cost in all, whether it
    can still be learnt, and whether it began before the baseline's level
    was known (see :data:`BURST_MIN_WINDOWS`). ``run_first`` outlives the
    run until the next one starts. ``run_calm`` is where the busy part of
    such a young run ended, once a quiet stretch follows it (0: none yet;
    see :meth:`Bursts._young_goes_on`). ``run_starts`` is the most calls
    that began in one of the run's windows, where the caller counts them
    (0: none seen, and the run's late calls are not told apart).
    ``run_begun`` is whether the run so far is one window judged on the
    calls that began in it rather than on those that ended.

    ``span`` is the most windows a learnt burst lasted, its tail included:
    the windows after it that stayed raised above the level, as the calls
    it began end later the longer they run. ``tail_last`` is the latest
    raised window of the latest excursion, if that was learnt as a burst
    (0: it was not), and ``tail_open`` whether its tail may go on.
    ``run_known`` is whether a burst had been learnt when that excursion
    began: whether it may be like those shown before.
    """

    __slots__ = (
        "at",
        "level",
        "run_begun",
        "run_calm",
        "run_cost",
        "run_first",
        "run_known",
        "run_last",
        "run_learnable",
        "run_peak",
        "run_starts",
        "run_windows",
        "run_young",
        "span",
        "tail_last",
        "tail_open",
    )

    def __init__(self) -> None:
        self.level = 0.0
        self.at = 0.0
        self.span = 0
        self.run_known = False
        self.tail_last = 0.0
        self.tail_open = False
        self.run_first = 0.0
        self.run_last = 0.0
        self.run_peak = 0.0
        self.run_cost = 0.0
        self.run_windows = 0
        self.run_learnable = False
        self.run_young = False
        self.run_calm = 0.0
        self.run_starts = 0.0
        self.run_begun = False

    def __setstate__(self, state: tuple[None, dict[str, Any]] | dict[str, Any]) -> None:
        # Pickled slots arrive as (None, {slot: value}). A state pickled
        # before the run's first window and cost were kept lacks both: its
        # run is taken to start at its latest window, having cost nothing.
        slots = state[1] if isinstance(state, tuple) else state
        type(self).__init__(self)
        for name, value in slots.items():
            setattr(self, name, value)
        if "run_first" not in slots:
            self.run_first = self.run_last

    def __repr__(self) -> str:
        return (
            f"BurstState(level={self.level!r}, at={self.at!r},"
            f" run_windows={self.run_windows!r}, run_peak={self.run_peak!r},"
            f" span={self.span!r})"
        )


class Bursts:
    """Learns how far a context's short excursions above its baseline go.

    An excursion runs from a window that the caller finds far above what the
    baseline expected to the first window back under :data:`BURST_CALM` of
    the run's highest excess while no alert holds it open (or to an idle
    gap, whose windows are empty). One with at most ``max_windows`` windows
    that were not calm is a burst (if it began while the baseline was young,
    only once a quiet stretch as long as itself followed it: see
    :meth:`_young_goes_on`), however high it went and whether
    or not it raised an alert of its own: its highest excess is the burst
    level if it is the highest yet, and the level halves every
    ``half_life_s`` seconds of event time after its last burst. A longer
    run teaches nothing, so a sustained rise, however it began and however
    it wavers under its alert, never makes itself expected; nor does a run
    the caller finds not learnable (one that began under an alert of
    something before it).

    A burst's calls end after it, the later the longer they run, so the
    windows after a learnt burst that the caller finds still raised above
    the level are its tail, up to the first one that is not (or an idle
    gap). The most windows a learnt burst lasted with its tail, if no more
    than ``longest_windows``, is the context's own burst length: an
    excursion of that context may have as many windows above calm as that
    length and still be a burst (:meth:`hold_windows`), never fewer than
    ``max_windows`` nor more than ``longest_windows``.

    Parameters
    ----------
    max_windows
        The most windows above calm that a burst has, before a context has
        shown longer ones.
    half_life_s
        Event-time seconds after which a burst weighs half.
    window_s
        Length of a window in seconds, to see idle gaps between the windows
        observed.
    longest_windows
        The most windows a burst with its tail may last to be learnt as the
        context's own length (``None``: ``max_windows``, no longer bursts).

    Examples
    --------
    >>> b = RobustBaseline(warmup=5)
    >>> for _ in range(10):
    ...     b.learn_one(0.0)
    >>> bursts = Bursts(max_windows=2, half_life_s=3600.0, window_s=10.0)
    >>> bursts.observe(b, 0.0, 5.0, excursion=True, learnable=True)
    >>> bursts.envelope(b, 0.0), bursts.running(b)
    (0.0, True)
    >>> bursts.observe(b, 10.0, 0.1, excursion=False, learnable=True)
    >>> bursts.envelope(b, 0.0), bursts.envelope(b, 3600.0)
    (5.0, 2.5)
    >>> for i in range(3):
    ...     bursts.observe(b, 100.0 + 10 * i, 9.0, excursion=True, learnable=True)
    >>> bursts.run_length(b, 130.0)  # the window from 130 s would be its fourth
    4
    >>> bursts.observe(b, 130.0, 0.0, excursion=False, learnable=True)
    >>> round(bursts.envelope(b, 130.0), 2)  # three windows: not a burst
    4.88

    With a longer bound, a burst's raised tail makes its length:

    >>> longer = Bursts(max_windows=2, half_life_s=3600.0, window_s=10.0,
    ...                 longest_windows=6)
    >>> longer.observe(b, 200.0, 5.0, excursion=True, learnable=True)
    >>> for i in range(1, 5):  # calm against its peak, raised above the level
    ...     longer.observe(b, 200.0 + 10 * i, 1.0, False, True, raised=True)
    >>> longer.observe(b, 250.0, 0.0, excursion=False, learnable=True)
    >>> longer.hold_windows(b)  # one window of burst and four of its tail
    5
    """

    def __init__(
        self,
        max_windows: int,
        half_life_s: float,
        window_s: float,
        longest_windows: int | None = None,
    ):
        if max_windows < 1:
            raise ValueError(f"max_windows must be at least 1, got {max_windows!r}")
        if half_life_s <= 0:
            raise ValueError(f"half_life_s must be positive, got {half_life_s!r}")
        if window_s <= 0:
            raise ValueError(f"window_s must be positive, got {window_s!r}")
        longest = max_windows if longest_windows is None else longest_windows
        if longest < max_windows:
            raise ValueError(
                f"longest_windows must be at least max_windows ({max_windows}),"
                f" got {longest_windows!r}"
            )
        self.max_windows = max_windows
        self.half_life_s = half_life_s
        self.window_s = window_s
        self.longest_windows = longest

    def hold_windows(self, baseline: RobustBaseline) -> int:
        """The most windows above calm an excursion of ``baseline`` may have
        and still be a burst: its own burst length, bounded."""
        state = baseline._bursts
        if state is None or state.span <= self.max_windows:
            return self.max_windows
        return min(state.span, self.longest_windows)

    def burst_extent(
        self, baseline: RobustBaseline, first_too: bool = False
    ) -> tuple[float, float] | None:
        """The first window and the end (exclusive) of the windows that the
        latest burst of ``baseline`` fills, its tail included, as far as its
        own length reaches: of the excursion in progress while it is no
        longer than that, or of the latest learnt one, if a burst was known
        before it began (``first_too``: or even if none was, for a context
        taken to burst before it has shown it). ``None``: none such. The end
        is as far as its length reaches while the burst or its tail may go
        on."""
        state = baseline._bursts
        if state is None or not (state.run_known or first_too):
            return None
        first = state.run_first
        reach = first + self.hold_windows(baseline) * self.window_s
        if state.run_windows > 0:
            if state.run_windows > self.hold_windows(baseline):
                return None
            return first, reach
        if state.tail_last <= 0.0:
            return None
        if state.tail_open:
            return first, reach
        return first, min(reach, state.tail_last + self.window_s)

    def envelope(self, baseline: RobustBaseline, t: float) -> float:
        """The burst level of ``baseline`` at event time ``t`` (0: none known)."""
        state = baseline._bursts
        if state is None or state.level <= 0.0:
            return 0.0
        age = t - state.at
        if age <= 0.0:
            return state.level
        return float(state.level * 0.5 ** (age / self.half_life_s))

    def running(self, baseline: RobustBaseline) -> bool:
        """Whether an excursion of ``baseline`` is in progress."""
        state = baseline._bursts
        return state is not None and state.run_windows > 0

    def run_length(self, baseline: RobustBaseline, start: float) -> int:
        """Windows not calm of the excursion that a window from ``start``,
        not observed yet, would make if it were not calm either: one more
        than the excursion in progress, or 1 if there is none or an idle gap
        ends it first."""
        state = baseline._bursts
        if state is None or state.run_windows == 0 or self._gap(state.run_last, start):
            return 1
        return state.run_windows + 1

    def run_start(self, baseline: RobustBaseline, start: float) -> float:
        """The first window of the excursion in progress, if a window from
        ``start`` would go on with it; else ``start``."""
        state = baseline._bursts
        if state is None or state.run_windows == 0 or self._gap(state.run_last, start):
            return start
        return state.run_first

    def outlasted(self, baseline: RobustBaseline) -> bool:
        """Whether the excursion in progress has more windows not calm than
        a burst of it has (so it can no longer be one)."""
        state = baseline._bursts
        return state is not None and state.run_windows > self.hold_windows(baseline)

    def observe(
        self,
        baseline: RobustBaseline,
        start: float,
        excess: float,
        excursion: bool,
        learnable: bool,
        held: bool = False,
        cost: float = 0.0,
        raised: bool = False,
        starts: float | None = None,
        late: bool = False,
        begun: bool = False,
    ) -> None:
        """Take the window from ``start``, ``excess`` above what ``baseline``
        expected of it and costing ``cost``: ``excursion`` when the caller
        finds it far above, ``learnable`` unless the caller rules out the
        excursion it belongs to, ``held`` while an alert of the context is
        open, ``raised`` when it is still clearly above the level (a tail),
        ``starts`` the calls that began in it if the caller counts them, and
        ``late`` when the caller finds that the calls ending in it began
        before it: then, once the run has shown that starts are counted, the
        window goes on with the run (its excess may raise the run's highest)
        without counting as one more of its windows. ``begun`` when the
        caller judged the window on the calls that began in it, its ending
        calls being few: a run that such a window begins holds the same
        calls in the window after it, as they end, and that window does not
        count as one more of its windows either.
        Until the baseline has learnt :data:`BURST_MIN_WINDOWS` windows what
        it expects is not its level yet, and an excursion then is learnt
        only when silence follows it.

        Every window from an excursion's first to the one that ends it, and
        of a learnt burst's tail, must be observed, save empty ones: a gap
        ends the excursion and the tail.
        """
        state = baseline._bursts
        if state is not None and state.tail_open:
            self._tail(state, start, raised and not excursion)
            if state.tail_open:
                return
        if state is not None and state.run_windows > 0:
            gap = self._gap(state.run_last, start)
            # The calls its first window began, ending: the same burst.
            ending = state.run_begun and not begun and state.run_windows == 1
            state.run_begun = False
            if late and not gap and state.run_starts > 0.0:
                # Its calls that end late: as high as they go, but no more
                # windows of it than its calls began in.
                state.run_last = start
                state.run_cost += cost
                if excess > state.run_peak:
                    state.run_peak = excess
                return
            if starts is not None and starts > state.run_starts:
                state.run_starts = starts
            calm = not excursion and excess <= BURST_CALM * state.run_peak
            if not gap and not learnable:
                state.run_learnable = False
            if state.run_young:
                if self._young_goes_on(baseline, state, start, calm, excess, cost):
                    return
            elif not gap and (held or not calm):
                state.run_last = start
                state.run_cost += cost
                if not calm:
                    if not ending:
                        state.run_windows += 1
                    if excess > state.run_peak:
                        state.run_peak = excess
                    if state.run_windows > self.hold_windows(baseline):
                        state.run_learnable = False
                return
            self._end(baseline, state)
            state = baseline._bursts
            if state is not None and state.tail_open:
                # The window that ends a burst may be the first of its tail.
                self._tail(state, start, raised and not excursion and not gap)
                if state.tail_open:
                    return
        # Limitation: a window of late calls after an excursion has ended may start one.
        if excursion:
            if state is None:
                state = baseline._bursts = BurstState()
            state.run_known = state.level > 0.0
            state.run_first = state.run_last = start
            state.run_peak = excess
            state.run_cost = cost
            state.run_windows = 1
            state.run_learnable = learnable
            state.run_young = baseline.n < BURST_MIN_WINDOWS
            state.run_starts = 0.0 if starts is None else starts
            state.run_begun = begun
            state.tail_last = 0.0

    def _gap(self, last: float, start: float) -> bool:
        """Whether the window from ``start`` comes after an idle gap since
        the window from ``last``."""
        return start - last > 1.5 * self.window_s

    def _young_goes_on(
        self,
        baseline: RobustBaseline,
        state: BurstState,
        start: float,
        calm: bool,
        excess: float,
        cost: float,
    ) -> bool:
        """Take the window from ``start``, ``excess`` above what the baseline
        expected and costing ``cost``, into the run in progress, which began
        before the baseline's level was known. Whether the run goes on with
        the window; else it ends there, learnt or not.

        What the baseline expects is learnt from the run's own windows then,
        so they are told apart by their cost instead: a window that costs at
        most :data:`BURST_CALM` of the run's windows on average is quiet (an
        empty one too), a dearer one busy. The run is a burst once a quiet
        stretch as long as its busy part, and of two windows at least, has
        followed it: the calls that end after a burst, or a level far below
        it. Busy windows go on with its busy part until it is longer than a
        burst (it may be the level: it ends at a calm window then, not
        learnt); a busy one after a shorter quiet stretch makes it no burst.
        """
        window = self.window_s
        # Limitation: two quiet windows after a new function's first learn its level.
        busy_end = state.run_calm if state.run_calm > 0.0 else state.run_last + window
        busy = busy_end - state.run_first
        quiet = start - busy_end
        if cost <= BURST_CALM * state.run_cost / state.run_windows:
            quiet += window
            if quiet >= max(busy, 2.0 * window):
                return False  # silence as long as itself: it ends, learnable
            if state.run_calm == 0.0:
                state.run_calm = busy_end
            state.run_last = start
            return True
        if quiet > 0.0:
            # Busy again: a burst before it only after silence long enough.
            if quiet < max(busy, 2.0 * window):
                state.run_learnable = False
            return False
        state.run_last = start
        state.run_cost += cost
        state.run_windows += 1
        if excess > state.run_peak:
            state.run_peak = excess
        if state.run_windows > self.hold_windows(baseline):
            state.run_learnable = False
            return not calm
        return True

    # Limitation: the burst length never shrinks; slower calls once make it long.
    def _tail(self, state: BurstState, start: float, raised: bool) -> None:
        """Go on with the open tail of the latest burst at the window from
        ``start``, or end it there and learn its length."""
        if raised and not self._gap(state.tail_last, start):
            state.tail_last = start
            if start - state.run_first < self.longest_windows * self.window_s:
                return
            # Longer than any burst may be: it teaches nothing of the length.
            state.tail_open = False
            return
        state.tail_open = False
        length = round((state.tail_last - state.run_first) / self.window_s) + 1
        if state.span < length <= self.longest_windows:
            state.span = length

    def _end(self, baseline: RobustBaseline, state: BurstState) -> None:
        learnt = state.run_learnable and state.run_peak > 0.0
        if learnt:
            known = self.envelope(baseline, state.run_last)
            state.level = max(known, state.run_peak)
            state.at = state.run_last
        # Only a learnt burst has a tail to measure, and only when a longer
        # one could be learnt at all.
        state.tail_last = state.run_last if learnt else 0.0
        state.tail_open = learnt and self.longest_windows > self.max_windows
        state.run_peak = state.run_cost = state.run_calm = 0.0
        state.run_windows = 0
        state.run_learnable = False
        if state.level <= 0.0:
            # Nothing learnt and nothing running: the state need not exist.
            baseline._bursts = None


def memory_bucket(memory_mb: int) -> int:
    """The power of two at or below a memory size: peers share it (1024: 1024-2047)."""
    return 1 << (max(int(memory_mb), 1).bit_length() - 1)


class PeerPool:
    """What a window of a warm context of one peer group usually costs.

    Parameters
    ----------
    key
        The group's name (for evidence and logs).
    parent
        The wider pool (the account's) it also feeds and falls back to.
    half_life, warmup
        Of the pool's :class:`RobustBaseline`, counted in windows of any
        member, so they are longer than a single context's.
    """

    def __init__(
        self,
        key: tuple[str, ...],
        parent: PeerPool | None = None,
        half_life: float = 2000.0,
        warmup: int = 30,
    ) -> None:
        self.key = key
        self.parent = parent
        self.baseline = RobustBaseline(half_life, warmup)

    def learn_one(self, x: float) -> None:
        self.baseline.learn_one(x)
        if self.parent is not None:
            self.parent.baseline.learn_one(x)

    def reference(self) -> PeerPool | None:
        """This pool if it is warm, else the first warm pool above it."""
        pool: PeerPool | None = self
        # is_warm, read without the property: every refresh of a cold
        # context's thresholds asks.
        while pool is not None and pool.baseline._n < pool.baseline._s.warmup:
            pool = pool.parent
        return pool

    @property
    def name(self) -> str:
        return "/".join(self.key)

    def __repr__(self) -> str:
        return f"PeerPool({self.name!r}, n={self.baseline.n})"
