"""Rules judged when a context's window closes, beyond rate spikes, and the
per-call sequential tests of durations and failures that open the same
alerts within a few calls; each context keeps one compact :class:`RuleState`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from detector.alerts import (
    CRITICAL,
    OPENED,
    RESOLVED,
    UPDATED,
    WARNING,
    AccountAlert,
    StoredShare,
    Transition,
    transition_of,
)
from detector.alerts import fingerprint as alert_fingerprint
from detector.baseline import MAD_TO_STD, BurstState
from detector.cost import month_bounds
from detector.interning import Shared
from ingest.events import Context, Invocation

if TYPE_CHECKING:
    from detector.engine import DetectorConfig

logger = logging.getLogger(__name__)

DURATION_INFLATION = "duration_inflation"
ERROR_STORM = "error_storm"
SLOW_RAMP = "slow_ramp"
#: The slot of :class:`RuleState` that holds each rule's alert.
_ALERT_SLOT = {DURATION_INFLATION: "inflation", ERROR_STORM: "storm", SLOW_RAMP: "ramp"}

# Accumulator slots an open window holds beyond cost and count (the engine
# owns slots 0 and 1 and adds to these per invocation).
BILLED_MS, FAILED, FAILED_COST, TIMEOUTS = range(2, 6)
WINDOW_SLOTS = 6

_DAY_S = 86_400.0
#: Bound of a deviation below its mean, so a context of perfectly regular
#: durations does not turn the smallest change into infinite deviations.
_MIN_SPREAD = 0.01
#: Clip of baseline updates, as in RobustBaseline: mean + 4 deviations, with
#: the deviation bounded below by a tenth of the mean.
_CLIP = 4.0
#: Least error share used for the binomial spread of a context that has
#: (almost) never failed.
_MIN_SHARE = 1e-3
#: Least spread of log durations the sequential test assumes: durations are
#: reported to the hundredth of a millisecond but few functions vary less.
_MIN_LOG_SPREAD = 0.05
# The per-call and per-window paths compare rather than call min() and max(),
# each call of which costs as much as ten comparisons.
_log = math.log
_sqrt = math.sqrt


class RuleAlert:
    """Lifecycle of one rule's alert of one context (kept for ``seq``)."""

    __slots__ = (
        "calm",
        "cost",
        "excess",
        "fingerprint",
        "kind",
        "open",
        "peak",
        "seq",
        "severity",
        "starts_at",
    )

    def __init__(self, kind: str, context: Context) -> None:
        self.kind = kind
        self.fingerprint = alert_fingerprint(context, kind)
        self.seq = 0
        self.open = False
        self.severity = WARNING
        self.starts_at = 0.0
        self.cost = 0.0
        self.excess = 0.0
        self.peak = 0.0
        self.calm = 0


class RuleState:
    """What the rules remember of one context between windows.

    Rates are USD per hour; the duration baseline is billed milliseconds per
    invocation; shares are fractions of a window's invocations. Baselines of
    one rule stop learning while that rule's alert is open; the slow anchor
    stops while any cost alert of the context is open.
    """

    __slots__ = (
        "anchor",
        "busy",
        "calls",
        "count",
        "day_cost",
        "day_end",
        "dur",
        "dur_calls",
        "dur_dev",
        "dur_s",
        "dur_sum",
        "each",
        "err_calls",
        "err_failed",
        "err_s",
        "errors",
        "fail_rate",
        "inflation",
        "last_end",
        "log_mu",
        "log_var",
        "month_cost",
        "month_end",
        "month_start",
        "over",
        "pool",
        "ramp",
        "recent",
        "storm",
        "timeouts",
        "windows",
    )

    def __init__(self) -> None:
        self.last_end = -math.inf
        self.windows = 0
        self.busy = 0
        self.recent = 0.0
        self.anchor = 0.0
        self.day_end = -math.inf
        self.day_cost = 0.0
        self.month_start = -math.inf
        self.month_end = -math.inf
        self.month_cost = 0.0
        self.over = 0
        self.pool: list[float] | None = None
        self.dur = 0.0
        self.dur_dev = 0.0
        self.count = 0.0
        self.each = 0.0
        self.timeouts = 0.0
        self.errors = 0.0
        self.fail_rate = 0.0
        self.inflation: RuleAlert | None = None
        self.storm: RuleAlert | None = None
        self.ramp: RuleAlert | None = None
        # The sequential tests: calls learnt, the mean and variance of log
        # durations, and per test its statistic and the run it sums (calls,
        # failures; calls, log deviations from the mean).
        self.calls = 0.0
        self.log_mu = 0.0
        self.log_var = 0.0
        self.err_s = 0.0
        self.err_calls = 0.0
        self.err_failed = 0.0
        self.dur_s = 0.0
        self.dur_calls = 0.0
        self.dur_sum = 0.0

    def __setstate__(self, state: Any) -> None:
        # A checkpoint from before a slot existed restores it at its default.
        self.__init__()  # type: ignore[misc]
        slots: dict[str, Any] = state[1] if isinstance(state, tuple) else state
        for name, value in slots.items():
            setattr(self, name, value)

    def open_alerts(self) -> int:
        inflation, storm, ramp = self.inflation, self.storm, self.ramp
        return (
            (inflation is not None and inflation.open)
            + (storm is not None and storm.open)
            + (ramp is not None and ramp.open)
        )


class _Spend:
    """What an account with a budget spent, so far, of the day and month.

    The period fields are what :func:`_add_spend` and :func:`_project` read;
    ``bucket`` is the current bucket of ``ramp_recent_half_life_s``,
    ``first`` the account's first, and ``alert`` the account's alert.
    """

    __slots__ = (
        "alert",
        "bucket",
        "day_cost",
        "day_end",
        "first",
        "month_cost",
        "month_end",
        "month_start",
    )

    def __init__(self, first: float) -> None:
        self.alert: RuleAlert | None = None
        self.bucket = -math.inf
        self.first = first
        self.day_cost = 0.0
        self.day_end = -math.inf
        self.month_cost = 0.0
        self.month_end = -math.inf
        self.month_start = -math.inf


class AccountShare(_Spend):
    """What the contexts of one partition spent of one account with a budget.

    It is checkpointed with its partition: the day and month so far, the
    buckets of ``ramp_recent_half_life_s`` each up to ``bucket`` (the last
    ``ACCOUNT_BUCKETS`` complete ones and the current one), the first bucket
    of the account when the share was made, and the account's alert as it
    was when the partition was snapshotted.
    """

    __slots__ = ("buckets",)

    def __init__(self, first: float) -> None:
        super().__init__(first)
        self.buckets: list[float] = []


class AccountSpend(_Spend):
    """Spend of one account with a budget: the shares of every partition.

    ``shares`` are the live shares of the partitions held here, ``others``
    the stored shares of partitions other daemons hold, as last read, and
    ``seen`` the event time each of those partitions was read up to. The
    recent rate is the spend of the last complete buckets of
    ``ramp_recent_half_life_s`` each, so a function that went idle stops
    counting as soon as its buckets age out. The day and month are summed
    from the shares when the account is judged.
    """

    __slots__ = ("others", "seen", "shares")

    def __init__(self, first: float) -> None:
        super().__init__(first)
        self.shares: dict[int, AccountShare] = {}
        self.others: dict[int, AccountShare] = {}
        self.seen: dict[int, float] = {}

    def forget_other(self, partition: int) -> None:
        """Drop the stored share of a partition now held here."""
        self.others.pop(partition, None)
        self.seen.pop(partition, None)

    def others_lag(self, now: float, width: float) -> bool:
        """Whether a partition held elsewhere was read to more than a bucket
        of ``width`` before ``now``: its spend since is not known yet."""
        return any(seen < now - width for seen in self.seen.values())

    def sum_shares(self) -> None:
        """Make the day and month the sum of the shares' current ones.

        The current day and month are the latest of the held shares'. A
        share on another day or month (its partition lags, went idle, or
        was stored before the period rolled) spent nothing of them.
        """
        shares = self.shares.values()
        self.day_end = max((s.day_end for s in shares), default=-math.inf)
        self.day_cost = 0.0
        self.month_end = max((s.month_end for s in shares), default=-math.inf)
        self.month_cost = 0.0
        for share in shares:
            if share.day_end == self.day_end:
                self.day_cost += share.day_cost
            if share.month_end == self.month_end:
                self.month_cost += share.month_cost
                self.month_start = share.month_start
        # Limitation: a share read ahead of this engine counts its spend past now too.
        for share in self.others.values():
            if share.day_end == self.day_end:
                self.day_cost += share.day_cost
            if share.month_end == self.month_end:
                self.month_cost += share.month_cost


#: The account shares of one partition, by (provider, account).
AccountShares = dict[tuple[str, str], AccountShare]


# The pool of quiet windows: the window slots, then the windows it spans
# and the longest call (billed ms) of its windows.
_SPAN = WINDOW_SLOTS
_LONGEST = WINDOW_SLOTS + 1
POOL_SLOTS = WINDOW_SLOTS + 2
#: Event time between two judgements of a context's slow ramp.
_RAMP_EVERY_S = 60.0
#: Complete buckets an account's recent rate is averaged over.
ACCOUNT_BUCKETS = 6


def began_in_burst(
    inv: Invocation, bursts: BurstState, window_s: float, max_windows: int
) -> bool:
    """Whether ``inv`` began before the end of the latest window of an
    excursion above its context's level (``bursts``: what its baseline has
    seen of them) that is over or still no longer than ``max_windows``, or
    while such an excursion is in progress.

    Calls are reported as they end, and durations are judged in that order.
    While calls come at a steady rate that order draws durations as they
    come; after a burst it does not: the burst's short calls have ended and
    been judged within it, and those reported after it are its long ones,
    which would look like a run of inflated calls. Leaving out the calls that
    began in it, whatever they lasted, keeps the rest a fair draw. While a
    longer excursion goes on (a flood, a rise, a sale) its calls are judged,
    as the duration test must go on seeing what an attack does to them;
    once it is over, those still to end are its longest, as after a burst.
    The windows still open after the latest one closed may be the burst's
    too, so while it is in progress every call is taken as its own.
    """
    if bursts.run_windows > max_windows:
        return False
    if bursts.run_windows > 0:
        return True
    # The latest window of the excursion in progress, or of the last one.
    last = bursts.run_last
    if last <= 0.0:
        return False
    return inv.began < last + window_s


def _alpha(half_life: float) -> float:
    """The EWMA weight of one observation for a half-life in observations."""
    return 1.0 - math.pow(0.5, 1.0 / max(half_life, 1.0))


def _ewma_k(mean: float, x: float, n: int, k: float, alpha: float | None) -> float:
    """Learn ``k`` windows of mean ``x`` after ``n`` others.

    With ``alpha`` None a running mean, else an exponentially weighted one
    (in closed form for k equal values).
    """
    if alpha is None:
        return (mean * n + x * k) / (n + k)
    return x + math.pow(1.0 - alpha, k) * (mean - x)


class Rules:
    """Judges the rules for every context of one engine at window close."""

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config
        window = config.window_s
        self._window = window
        self._per_hour = 3600.0 / window
        self._alpha = _alpha(config.baseline_half_life)
        self._warm = config.rule_warmup
        self._recent_alpha = _alpha(config.ramp_recent_half_life_s / window)
        self._recent_warm = max(1, round(config.ramp_recent_half_life_s / window))
        # The span of windows whose invocations the recent rate holds as
        # many of as a plain sum would (the variance of an EWMA of weight a
        # is a / (2 - a) of one observation's), in hours.
        alpha = self._recent_alpha
        self._recent_hours = (2.0 - alpha) / alpha * window / 3600.0
        self._anchor_alpha = _alpha(config.ramp_anchor_half_life_s / window)
        self._anchor_warm = max(1, round(config.ramp_anchor_warmup_s / window))
        self._sustain = max(1, round(config.ramp_sustain_s / _RAMP_EVERY_S))
        self._daily = _by_scope(config.daily_budgets, 4)
        self._monthly = _by_scope(config.monthly_budgets, 4)
        self._account_daily = _by_scope(config.daily_budgets, 2)
        self._account_monthly = _by_scope(config.monthly_budgets, 2)
        # Limitation: others' shares are as old as their last checkpoint plus a read.
        self._accounts: dict[tuple[str, str], AccountSpend] = {}
        self._h = config.sequential_h
        # No single call decides: it moves a statistic by half the threshold
        # at most, and the statistic is held below twice the threshold so
        # that it falls back within a few usual calls once the cause stops.
        self._step = config.sequential_h / 2.0
        self._top = 2.0 * config.sequential_h
        self._seq_warm = config.sequential_warmup
        self._seq_alpha = _alpha(config.sequential_half_life)
        self._seq_full = 1.0 / self._seq_alpha
        self._log_ratio = math.log(config.duration_ratio)
        # The alternative's shift of the mean log duration.
        self._d = 2.0 * self._log_ratio
        # Failure log-likelihood ratios by usual share (few distinct values).
        self._llr: dict[float, tuple[float, float, float]] = {}

    def judge(
        self,
        s: RuleState,
        context: Context,
        acc: Sequence[float] | None,
        start: float,
        end: float,
        spike_open: bool,
        out: list[Transition],
        partition: int,
        shares: AccountShares,
        longest_ms: float = 0.0,
    ) -> bool:
        """Judge one closed window; True while an alert of ``s`` is open.

        The window's cost goes to its account's share in ``shares``, the
        account shares of ``partition``; ``longest_ms`` is the billed time of
        its longest call.
        """
        window_cost = 0.0
        pool = s.pool
        if pool is None:
            pool = s.pool = [0.0] * POOL_SLOTS
        if acc is not None:
            window_cost = acc[0]
            pool[0] += window_cost
            pool[1] += acc[1]
            pool[BILLED_MS] += acc[BILLED_MS]
            pool[FAILED] += acc[FAILED]
            pool[FAILED_COST] += acc[FAILED_COST]
            pool[TIMEOUTS] += acc[TIMEOUTS]
            if longest_ms > pool[_LONGEST]:
                pool[_LONGEST] = longest_ms
        last = s.last_end
        idle = 0
        if last > -math.inf:
            idle = round((start - last) / self._window)
            if idle < 0:
                idle = 0
        pool[_SPAN] += idle + 1
        s.last_end = end
        _add_spend(s, start, window_cost)
        if self._account_daily or self._account_monthly:
            self._account(context, window_cost, start, partition, shares, out)
        inflation, storm, ramp = s.inflation, s.storm, s.ramp
        if ramp is not None and ramp.open:
            ramp.cost += window_cost
        # Most windows of most contexts are unremarkable: a quiet window is
        # pooled with the next ones, and the pool is judged as one
        # observation once it is large enough to judge, once a minute of
        # event time, or at once while an alert of the context is open.
        cfg = self.config
        # Limitation: a pool still open when a replay ends is never judged.
        minute = last == -math.inf or end - end % _RAMP_EVERY_S > last
        inflated = inflation is not None and inflation.open
        storming = storm is not None and storm.open
        alerting = (
            spike_open or inflated or storming or (ramp is not None and ramp.open)
        )
        if not (
            alerting
            or minute
            or pool[1] >= cfg.duration_min_count
            or pool[FAILED] >= cfg.error_min_count
        ):
            return False
        cost, count, billed, failed, failed_cost, timeouts, span, longest = pool
        # Made again by the next window: an idle context holds no pool.
        s.pool = None
        span_s = span * self._window
        per_hour = 3600.0 / span_s
        n = s.windows
        s.windows = n + int(span)
        # The spike detector owns a spike: its windows count in the spend so
        # far, not in the recent rate the ramp rule projects from.
        alpha = self._recent_alpha
        recent_alpha = alpha if alpha * n > 1.0 else None
        if not spike_open:
            s.recent = _ewma_k(s.recent, cost * per_hour, n, span, recent_alpha)
        elif span > 1:
            # The idle and quiet windows before this one still count.
            quiet = (cost - window_cost) * 3600.0 / ((span - 1) * self._window)
            s.recent = _ewma_k(s.recent, quiet, n, span - 1, recent_alpha)
        # Below duration_min_count calls a minute, only the per-call test judges.
        if count >= cfg.duration_min_count or inflated:
            self._judge_duration(
                s, context, cost, count, billed, longest, timeouts, per_hour, end, out
            )
        if failed >= cfg.error_min_count or storming:
            self._judge_errors(
                s, context, count, failed, failed_cost, per_hour, end, out
            )
        if count > 0:
            self._learn_window(
                s, cost, count, billed, failed, failed_cost, timeouts, per_hour
            )
        # Ramps build over hours: they are judged once a minute of event time.
        if minute and s.windows >= self._recent_warm:
            self._judge_ramp(s, context, spike_open, end, out)
        inflation, storm, ramp = s.inflation, s.storm, s.ramp
        busy = (inflation is not None and inflation.open) or (
            storm is not None and storm.open
        )
        ramping = ramp is not None and ramp.open
        if not (spike_open or busy or ramping):
            # A running mean over the warm-up, then a fixed slow pace: a ramp
            # that starts after the warm-up moves the anchor by a small share
            # of the ramp, however long the context has been tracked.
            anchor_alpha = self._anchor_alpha if n >= self._anchor_warm else None
            s.anchor = _ewma_k(s.anchor, cost * per_hour, n, span, anchor_alpha)
        if ramping:
            # An idle context need not be woken every window for a ramp: its
            # next busy window judges it with the idle time decayed.
            return busy or s.recent >= cfg.ramp_min_excess
        return busy

    # Sequential tests, one call at a time

    def on_call(
        self,
        s: RuleState,
        context: Context,
        inv: Invocation,
        out: list[Transition],
        judged: bool = True,
    ) -> None:
        """Learn from one call and judge it in both sequential tests.

        ``judged`` False learns the call's duration without judging it: the
        caller knows it began in a burst that has ended or is ending (see
        :func:`began_in_burst`).

        Each test is a CUSUM of log-likelihood ratios, one term per call:
        the statistic ``S`` becomes ``max(0, S + llr)`` and alerts at
        ``sequential_h``. Durations: the log of a successful (or timed out)
        call's duration against the context's learnt mean ``mu`` and spread
        ``sigma`` of log durations, with the alternative ``mu + d`` for
        ``d = 2 ln(duration_ratio)``, so that ``llr = d / sigma**2 *
        (x - mu - d / 2)`` climbs exactly on calls longer than
        ``duration_ratio`` times the usual median. Failures: a failed call
        adds ``ln(p1 / p0)``, another ``ln((1 - p1) / (1 - p0))``, where
        ``p0`` is the usual failure share (at least 0.001) and ``p1`` is
        the share whose expected term is zero at the window rule's bar
        ``max(error_ratio * p0, p0 + error_min_share)``, so the statistic
        climbs exactly on failure shares above that bar. Either opens its
        rule's alert as a warning once its extra cost, estimated from the
        recent cost rate, reaches the rule's minimum excess.

        False alarms under the null. Each term has ``E[exp(llr)] = 1`` when
        calls follow the learnt law (the cap of half the threshold per call
        only lowers it), so ``exp(S)`` is a martingale within a run from
        zero, and a run reaches ``h`` with a chance of at most ``exp(-h)``
        (Ville's inequality); at most one run starts per call, hence at most
        ``exp(-13) = 2.3e-6`` false alarms per call and test at the default
        ``h = 13``. The steps are coarse, so the chance is lower still:
        computed exactly on a grid of the statistic, at most 4.7e-7 per call
        for durations (worst at ``sigma`` near 0.5; 3.0e-7 at 0.3, 3.3e-7 at
        0.9) and 1.0e-6 for failures (at ``p0 = 0.001``, where two failures
        in a row alert; 3.9e-7 at 0.005, 3.5e-7 at 0.02, which take three or
        four). A context at 2 calls a second (7,200 an hour) then has at most
        0.0072 + 0.0034 = 0.011 false alarms an hour; one at the suite's
        background mean of about 340 calls an hour at most 0.5 per 1,000
        hours, and about half that averaged over the shares and spreads of
        that background (log-uniform shares from 1e-4 to 0.02, whose lower
        part the floor of 0.001 makes far rarer than the worst case).
        """
        status = inv.status
        failed = status != "success"
        if not failed or status == "timeout":
            # The duration judged is the handler's: a cold start's INIT is
            # billed too, but it comes from scaling out, not from the call,
            # and a burst of new environments would look like inflation.
            ms = inv.duration_ms
            if ms <= 0.0:
                ms = inv.billed_ms
            if ms > 0.0:
                x = _log(ms)
                calls = s.calls
                alert = s.inflation
                mu = s.log_mu
                var = s.log_var
                # An open alert's calls are not learnt: an attack cannot
                # teach the test that it is normal.
                # Limitation: a lasting benign slowdown keeps its warning open.
                frozen = alert is not None and alert.open
                sigma = -1.0
                # Limitation: judged as reported; after a lull the long calls come last.
                if calls >= self._seq_warm and judged:
                    # The duration test, inline: it runs on most calls.
                    sd = _sqrt(var)
                    sigma = _MIN_LOG_SPREAD if sd < _MIN_LOG_SPREAD else sd
                    n = inv.count
                    step = self._step
                    llr = self._d / (sigma * sigma) * (x - mu - self._log_ratio) * n
                    stat = s.dur_s + (step if step < llr else llr)
                    if stat <= 0.0:
                        s.dur_s = s.dur_calls = s.dur_sum = 0.0
                    else:
                        self._duration_up(s, context, inv, x, sigma, stat, frozen, out)
                if not frozen:
                    # Every call is learnt, in a running mean until the
                    # half-life is reached, clipped like the window baselines.
                    n = inv.count
                    total = calls + n
                    if total < self._seq_full:
                        a = n / total
                    else:
                        a = self._seq_alpha * n
                        total = self._seq_full
                    diff = x - mu
                    if diff > 0.0 and calls > 2.0:
                        if sigma < 0.0:
                            sd = _sqrt(var)
                            sigma = _MIN_LOG_SPREAD if sd < _MIN_LOG_SPREAD else sd
                        top = _CLIP * sigma
                        if diff > top:
                            diff = top
                    s.log_mu = mu + a * diff
                    s.log_var = (1.0 - a) * (var + a * diff * diff)
                    s.calls = total
        # Most calls of most contexts succeed with the statistic at zero,
        # where a success leaves it: nothing to judge.
        if s.err_s > 0.0 or (
            failed and s.calls >= self._seq_warm and s.busy >= self._warm
        ):
            self._call_error(s, context, inv, failed, out)

    def _duration_up(
        self,
        s: RuleState,
        context: Context,
        inv: Invocation,
        x: float,
        sigma: float,
        stat: float,
        inflated: bool,
        out: list[Transition],
    ) -> None:
        """The duration statistic rose to ``stat`` > 0 on a call: keep it and
        alert when it is high enough."""
        n = float(inv.count)
        top = self._top
        s.dur_s = top if top < stat else stat
        s.dur_calls += n
        s.dur_sum += (x - s.log_mu) * n
        # While the alert is open, a call as strong as the cap keeps it
        # open: the last inflated calls of an attack end late.
        if stat >= self._h or (inflated and stat >= self._step):
            self._seq_duration(s, context, inv.time, sigma, out)

    def _call_error(
        self,
        s: RuleState,
        context: Context,
        inv: Invocation,
        failed: bool,
        out: list[Transition],
    ) -> None:
        # Limitation: a share learnt from a few hundred calls may be under the true one.
        p0 = max(s.errors, _MIN_SHARE)
        ratios = self._llr.get(p0)
        if ratios is None:
            ratios = self._failure_llr(p0)
        up, down, need = ratios
        n = float(inv.count)
        stat = s.err_s + (min(up * n, self._step) if failed else down * n)
        if stat <= 0.0:
            s.err_s = s.err_calls = s.err_failed = 0.0
            return
        s.err_s = min(stat, self._top)
        s.err_calls += n
        if failed:
            s.err_failed += n
            storming = s.storm is not None and s.storm.open
            if stat >= self._h or (storming and stat >= self._step):
                self._seq_errors(s, context, inv.time, p0, need, out)

    def _failure_llr(self, p0: float) -> tuple[float, float, float]:
        """Log-likelihood ratios of a failed and a successful call, and the
        failure share at which their expectation is zero, for share ``p0``."""
        cfg = self.config
        need = min(max(cfg.error_ratio * p0, p0 + cfg.error_min_share), 0.999)

        def drift(p1: float) -> float:
            return need * math.log(p1 / p0) + (1.0 - need) * math.log(
                (1.0 - p1) / (1.0 - p0)
            )

        # The drift is concave in p1, greatest at p1 = need: one root above.
        lo, hi = need, 1.0 - 1e-12
        for _ in range(60):
            mid = (lo + hi) / 2.0
            if drift(mid) > 0.0:
                lo = mid
            else:
                hi = mid
        p1 = lo
        ratios = (math.log(p1 / p0), math.log((1.0 - p1) / (1.0 - p0)), need)
        if len(self._llr) >= 256:
            self._llr.clear()
        self._llr[p0] = ratios
        return ratios

    def _seq_duration(
        self,
        s: RuleState,
        context: Context,
        at: float,
        sigma: float,
        out: list[Transition],
    ) -> None:
        if _kept_open(s.inflation):
            return
        usual = math.exp(s.log_mu)
        ratio = math.exp(s.dur_sum / s.dur_calls)
        evidence: dict[str, object] = {
            "rule": DURATION_INFLATION,
            "test": "sequential",
            "value": round(usual * ratio, 3),
            "baseline": round(usual, 3),
            "unit": "duration_ms_geometric_mean",
            "ratio": round(ratio, 3),
            "threshold_ratio": self.config.duration_ratio,
            "log_spread": round(sigma, 4),
            "statistic": round(s.dur_s, 2),
            "threshold_statistic": self._h,
            "calls_judged": int(s.dur_calls),
        }
        # The extra cost is the recent rate's share beyond the usual duration;
        # too little of it is not worth an alert, as for the window rule.
        excess = s.recent * (ratio - 1.0)
        if excess >= self.config.duration_min_excess:
            kind = DURATION_INFLATION
            self._fire(s, kind, context, at, 0.0, excess, ratio, False, evidence, out)

    def _seq_errors(
        self,
        s: RuleState,
        context: Context,
        at: float,
        p0: float,
        need: float,
        out: list[Transition],
    ) -> None:
        if _kept_open(s.storm):
            return
        share = s.err_failed / s.err_calls
        evidence: dict[str, object] = {
            "rule": ERROR_STORM,
            "test": "sequential",
            "value": round(share, 4),
            "baseline": round(s.errors, 4),
            "unit": "failure_share",
            "ratio": round(share / p0, 2),
            "threshold_share": round(need, 4),
            "statistic": round(s.err_s, 2),
            "threshold_statistic": self._h,
            "calls_judged": int(s.err_calls),
            "failures": int(s.err_failed),
        }
        # Failed calls cost what others do: the excess is their extra share.
        excess = s.recent * max(share - s.errors, 0.0)
        if excess >= self.config.error_min_excess:
            kind, ratio = ERROR_STORM, share / p0
            self._fire(s, kind, context, at, 0.0, excess, ratio, False, evidence, out)

    # Learning

    def _learn_window(
        self,
        s: RuleState,
        cost: float,
        count: float,
        billed: float,
        failed: float,
        failed_cost: float,
        timeouts: float,
        per_hour: float,
    ) -> None:
        """Learn the per-invocation baselines from an observation (a window or a
        pool of quiet ones) with invocations; ``per_hour`` scales it to USD/h."""
        inflated = s.inflation is not None and s.inflation.open
        storming = s.storm is not None and s.storm.open
        if inflated and storming:
            return
        s.busy = n = s.busy + 1
        a = self._alpha if self._alpha * n > 1.0 else 1.0 / n
        if not inflated:
            mean = billed / count
            dur = s.dur
            if n > 2:
                dev, floor = s.dur_dev, 0.1 * dur
                ceiling = dur + _CLIP * (floor if floor > dev else dev)
                if ceiling < mean:
                    mean = ceiling
            s.dur_dev += a * (abs(mean - dur) - s.dur_dev)
            s.dur = dur + a * (mean - dur)
            s.each += a * (cost / count - s.each)
            s.timeouts += a * (timeouts / count - s.timeouts)
        if not storming:
            s.errors += a * (failed / count - s.errors)
            s.fail_rate += a * (failed_cost * per_hour - s.fail_rate)
        s.count += a * (count - s.count)

    # Duration inflation

    def _judge_duration(
        self,
        s: RuleState,
        context: Context,
        cost: float,
        count: float,
        billed: float,
        longest: float,
        timeouts: float,
        per_hour: float,
        end: float,
        out: list[Transition],
    ) -> None:
        """Judge an observation's mean billed time per call, without its
        longest call (``longest`` ms).

        Durations are log-normal, and the mean of a few dozen calls of a
        widely spread function is mostly its longest one: a single call
        fifty times the median doubles it. Inflation slows every call, so
        leaving the longest out costs a real one little and takes away what
        one call of the tail does.
        """
        cfg = self.config
        alert = s.inflation
        # The sequential test holds an alert while its statistic stays high
        # on calls of this observation.
        held = count > 0 and s.dur_s >= self._step
        if s.busy < self._warm or s.dur <= 0.0 or count < cfg.duration_min_count:
            # Too few invocations to judge: calm, for an open alert.
            if alert is not None and alert.open and self._calm(alert, cost, hot=held):
                evidence = self._duration_evidence(s, billed / max(count, 1.0))
                self._resolve(s, alert, context, end, evidence, out)
            return
        # Limitation: a window just after a burst holds its late long calls (judged).
        mean = billed / count
        judged = mean
        if 0.0 < longest <= billed and count > 1.0:
            judged = (billed - longest) / (count - 1.0)
        ratio = judged / s.dur
        # The spread of window means was learnt at the usual count; a window
        # of n invocations has a mean whose chance spread scales as 1/sqrt(n).
        spread = MAD_TO_STD * s.dur_dev * math.sqrt(s.count / count)
        spread = max(spread, _MIN_SPREAD * s.dur)
        z = (judged - s.dur) / spread
        expected = s.timeouts * count
        timed_out = timeouts >= cfg.timeout_min_count and timeouts >= (
            expected + cfg.duration_z * math.sqrt(max(expected, 1.0))
        )
        need = cfg.duration_timeout_ratio if timed_out else cfg.duration_ratio
        excess = (cost - s.each * count) * per_hour
        firing = ratio >= need and z >= cfg.duration_z
        if not (firing and excess >= cfg.duration_min_excess):
            if alert is not None and alert.open:
                hot = held or ratio >= (1.0 + need) / 2.0
                if self._calm(alert, cost, max(excess, 0.0) / per_hour, hot):
                    evidence = self._duration_evidence(s, mean)
                    self._resolve(s, alert, context, end, evidence, out)
            return
        evidence = self._duration_evidence(s, mean)
        evidence.update(
            without_longest=round(judged, 3),
            ratio_without_longest=round(ratio, 3),
            longest_billed_ms=longest,
            z=round(z, 2),
            threshold_ratio=need,
            invocations=int(count),
            timeouts=int(timeouts),
            expected_timeouts=round(expected, 2),
        )
        critical = (
            ratio >= cfg.rule_critical_margin * need
            and excess >= cfg.critical_min_excess
        )
        self._fire(
            s,
            DURATION_INFLATION,
            context,
            end,
            cost,
            excess,
            ratio,
            critical,
            evidence,
            out,
            span_s=3600.0 / per_hour,
        )

    def _duration_evidence(self, s: RuleState, mean: float) -> dict[str, object]:
        unit = "billed_ms_per_invocation"
        return _window_evidence(DURATION_INFLATION, mean, s.dur, unit, 3, 3)

    # Error and retry storms

    def _judge_errors(
        self,
        s: RuleState,
        context: Context,
        count: float,
        failed: float,
        failed_cost: float,
        per_hour: float,
        end: float,
        out: list[Transition],
    ) -> None:
        cfg = self.config
        alert = s.storm
        share = failed / count if count > 0 else 0.0
        p0 = s.errors
        excess = failed_cost * per_hour - s.fail_rate
        need = max(cfg.error_ratio * p0, p0 + cfg.error_min_share)
        firing = s.busy >= self._warm and failed >= cfg.error_min_count
        z = 0.0
        if firing:
            spread = math.sqrt(count * max(p0, _MIN_SHARE) * (1.0 - min(p0, 0.999)))
            z = (failed - count * p0) / spread
            firing = share >= need and z >= cfg.error_z
        if not (firing and excess >= cfg.error_min_excess):
            if alert is not None and alert.open:
                hot = failed >= cfg.error_min_count / 2.0 and (
                    share >= p0 + cfg.error_min_share / 2.0
                )
                # The sequential test holds it too while it stays high.
                hot = hot or (count > 0 and s.err_s >= self._step)
                if self._calm(alert, failed_cost, max(excess, 0.0) / per_hour, hot):
                    evidence = self._error_evidence(s, share)
                    self._resolve(s, alert, context, end, evidence, out)
            return
        evidence = self._error_evidence(s, share)
        evidence.update(
            z=round(z, 2),
            threshold_share=round(need, 4),
            failures=int(failed),
            invocations=int(count),
            # Retries of failed invocations show as more invocations than an
            # observation (a window, or a pool of quiet ones) usually holds.
            invocations_vs_usual=round(count / s.count, 2) if s.count > 0 else None,
            failed_usd_per_hour=round(failed_cost * per_hour, 6),
            baseline_failed_usd_per_hour=round(s.fail_rate, 6),
        )
        margin = cfg.rule_critical_margin
        critical = (
            share - p0 >= margin * cfg.error_min_share
            and share >= margin * cfg.error_ratio * p0
            and excess >= cfg.critical_min_excess
        )
        ratio = share / max(p0, _MIN_SHARE)
        self._fire(
            s,
            ERROR_STORM,
            context,
            end,
            failed_cost,
            excess,
            ratio,
            critical,
            evidence,
            out,
            span_s=3600.0 / per_hour,
        )

    def _error_evidence(self, s: RuleState, share: float) -> dict[str, object]:
        return _window_evidence(ERROR_STORM, share, s.errors, "failure_share", 4, 2)

    # Slow ramps against the anchor and the budgets

    def _budgets(self, s: RuleState, context: Context) -> tuple[float, float]:
        """The daily and monthly budgets in USD of a context (inf: none)."""
        daily = monthly = math.inf
        if self._daily or self._monthly:
            key = "/".join(context)
            function = key.rpartition("/")[0]
            daily = self._daily.get(key, self._daily.get(function, math.inf))
            monthly = self._monthly.get(key, self._monthly.get(function, math.inf))
        if s.windows >= self._anchor_warm:
            cfg = self.config
            day = max(cfg.ramp_budget_factor * s.anchor, cfg.ramp_min_excess) * 24.0
            month_days = (s.month_end - s.month_start) / _DAY_S
            if daily == math.inf:
                daily = day
            if monthly == math.inf:
                monthly = day * month_days
        return daily, monthly

    def _judge_ramp(
        self,
        s: RuleState,
        context: Context,
        spike_open: bool,
        end: float,
        out: list[Transition],
    ) -> None:
        cfg = self.config
        alert = s.ramp
        daily, monthly = self._budgets(s, context)
        day, month = _project(s, s.recent, end)
        anchored = s.windows >= self._anchor_warm and s.anchor > 0.0
        ratio = s.recent / s.anchor if anchored else 0.0
        excess = s.recent - s.anchor if anchored else s.recent
        # A rise the spike detector is already alerting on is its business;
        # this rule is for the rise its fast baseline has learnt as normal.
        by_factor = (
            anchored
            and not spike_open
            and ratio >= cfg.ramp_factor
            and excess >= cfg.ramp_min_excess
        )
        # Limitation: a ramp that starts in the anchor's warm-up raises the anchor.
        # A smaller rise, in ratio or in dollars, is still worth a warning
        # when its invocations are far more than chance against the anchor.
        z = self._ramp_z(s) if anchored else 0.0
        by_count = (
            anchored
            and not spike_open
            and ratio >= cfg.ramp_warn_factor
            and excess >= cfg.ramp_warn_min_excess
            and z >= cfg.ramp_warn_z
        )
        over_day = day > daily
        over_month = month > monthly
        # A ramp is a rise that lasts: a batch that runs for minutes each hour
        # lifts the recent rate for a while, then lets it fall back.
        hit = by_factor or by_count or over_day or over_month
        s.over = s.over + 1 if hit else 0
        is_open = alert is not None and alert.open
        if not (hit and (s.over >= self._sustain or is_open)):
            if alert is not None and alert.open:
                excess_usd = max(excess, 0.0) * _RAMP_EVERY_S / 3600.0
                least = min(cfg.ramp_factor, cfg.ramp_warn_factor)
                settled = ratio < (1.0 + least) / 2.0
                hot = not (settled and day < 0.9 * daily and month < 0.9 * monthly)
                if self._calm(alert, 0.0, excess_usd, hot):
                    evidence = self._ramp_evidence(s, ratio, daily, monthly)
                    self._emit(s, alert, context, RESOLVED, end, evidence, out)
            return
        evidence = self._ramp_evidence(s, ratio, daily, monthly)
        evidence["fired"] = [
            name
            for name, fired in (
                ("anchor_factor", by_factor),
                ("anchor_significant", by_count and not by_factor),
                ("daily_budget", over_day),
                ("monthly_budget", over_month),
            )
            if fired
        ]
        evidence["z"] = round(z, 2)
        # The warning-only path never makes a ramp critical by itself.
        margin = cfg.rule_critical_margin
        critical = excess >= cfg.critical_min_excess and (
            (by_factor and ratio >= margin * cfg.ramp_factor)
            or day >= margin * daily
            or month >= margin * monthly
        )
        peak = max(ratio, day / max(daily, 1e-9), month / max(monthly, 1e-9))
        # The cost of each window was added as it closed; the excess is that
        # of the minute since the last judgement.
        self._fire(
            s,
            SLOW_RAMP,
            context,
            end,
            0.0,
            excess,
            peak,
            critical,
            evidence,
            out,
            span_s=_RAMP_EVERY_S,
        )

    def _ramp_z(self, s: RuleState) -> float:
        """Poisson deviations of the recent rate above the anchor, counted in
        invocations at the usual cost of one (0 while that is unknown)."""
        if s.each <= 0.0:
            return 0.0
        expected = s.anchor / s.each * self._recent_hours
        seen = s.recent / s.each * self._recent_hours
        return (seen - expected) / math.sqrt(max(expected, 1.0))

    def _ramp_evidence(
        self, s: RuleState, ratio: float, daily: float, monthly: float
    ) -> dict[str, object]:
        return {
            "rule": SLOW_RAMP,
            "value": round(s.recent, 6),
            "baseline": round(s.anchor, 6),
            "unit": "usd_per_hour",
            "ratio": round(ratio, 3) if ratio else None,
            "threshold_ratio": self.config.ramp_factor,
            **_budget_evidence(daily, monthly),
        }

    # Account budgets

    def _account(
        self,
        context: Context,
        cost: float,
        start: float,
        partition: int,
        shares: AccountShares,
        out: list[Transition],
    ) -> None:
        key = (context.provider, context.account)
        daily = self._account_daily.get(key, math.inf)
        monthly = self._account_monthly.get(key, math.inf)
        if daily == monthly == math.inf:
            return
        width = self.config.ramp_recent_half_life_s
        bucket = start - start % width
        spend = self._accounts.get(key)
        if spend is None:
            spend = self._accounts[key] = AccountSpend(bucket)
        share = shares.get(key)
        if share is None:
            share = shares[key] = AccountShare(spend.first)
            share.alert = spend.alert
            spend.shares[partition] = share
            # Held here from now on: its live share replaces the stored one.
            spend.forget_other(partition)
        if bucket > spend.bucket:
            if spend.bucket > -math.inf:
                # Judged once a bucket is complete: the rate is the mean of
                # the complete buckets, and later windows go to the new one.
                self._judge_account(spend, key, daily, monthly, bucket, out)
            spend.bucket = bucket
        buckets = share.buckets
        if bucket > share.bucket:
            if share.bucket > -math.inf:
                gap = round((bucket - share.bucket) / width)
                buckets.extend([0.0] * min(gap - 1, ACCOUNT_BUCKETS))
            buckets.append(0.0)
            del buckets[: -(ACCOUNT_BUCKETS + 1)]
            share.bucket = bucket
        # A window of a partition whose watermark lags goes to its own bucket.
        back = len(buckets) - 1 - round((share.bucket - bucket) / width)
        if back >= 0:
            buckets[back] += cost
        _add_spend(share, start, cost)

    def _account_buckets(self, spend: AccountSpend, now: float) -> list[float]:
        """The account's complete buckets before ``now``, oldest first, summed
        over its shares; those since the account's first bucket only."""
        width = self.config.ramp_recent_half_life_s
        others = spend.others.values()
        first = min([spend.first, *(s.first for s in others)])
        n = min(ACCOUNT_BUCKETS, round((now - first) / width))
        totals = [0.0] * n
        for share in spend.shares.values():
            _place_buckets(totals, share, now, width)
        for share in others:
            _place_buckets(totals, share, now, width)
        return totals

    def adopt(self, partition: int, shares: AccountShares) -> None:
        """Count the account shares of a partition restored from a checkpoint.

        Of the account alerts the restored partitions carry, the one most
        advanced in its lifecycle (highest ``seq``) is kept, unless this
        engine already has one as advanced.
        """
        for held in self._accounts.values():
            # Its live share replaces the stored one read before.
            held.forget_other(partition)
        for key, share in shares.items():
            spend = self._accounts.get(key)
            if spend is None:
                spend = self._accounts[key] = AccountSpend(share.first)
            spend.first = min(spend.first, share.first)
            spend.bucket = max(spend.bucket, share.bucket)
            spend.shares[partition] = share
            kept = share.alert
            if kept is not None and (spend.alert is None or kept.seq > spend.alert.seq):
                spend.alert = kept
            for each in spend.shares.values():
                each.alert = spend.alert

    def release(self, partition: int, shares: AccountShares, watermark: float) -> None:
        """Count the account shares of a partition no longer held as stored.

        The daemon stores a partition's checkpoint before it lets go of it,
        so its last live share (read up to ``watermark``) is what the store
        holds until the next read of the others' shares replaces it.
        """
        for key, share in shares.items():
            spend = self._accounts.get(key)
            if spend is not None and spend.shares.pop(partition, None) is not None:
                spend.others[partition] = share
                spend.seen[partition] = watermark

    @property
    def has_account_budgets(self) -> bool:
        return bool(self._account_daily or self._account_monthly)

    def stored_shares(
        self, partition: int, shares: AccountShares, watermark: float
    ) -> tuple[StoredShare, ...]:
        """The account shares of ``partition``, read up to ``watermark``, as
        the store keeps them."""
        out = []
        for (provider, account), share in shares.items():
            alert = share.alert
            kept = None
            if alert is not None:
                kept = AccountAlert(alert.seq, alert.open, alert.starts_at, alert.cost)
            out.append(
                StoredShare(
                    partition,
                    provider,
                    account,
                    share.day_end,
                    share.day_cost,
                    share.month_start,
                    share.month_end,
                    share.month_cost,
                    share.bucket,
                    tuple(share.buckets),
                    share.first,
                    watermark,
                    kept,
                )
            )
        return tuple(out)

    def take_others(self, stored: Sequence[StoredShare]) -> None:
        """Judge accounts also on ``stored``, the shares of partitions not held.

        They replace the ones taken before. Shares of partitions held here,
        and of accounts without a budget here, are left out. An account
        alert further in its lifecycle (higher ``seq``) than this engine's,
        opened or resolved by another daemon, becomes this engine's, so
        that an alert open elsewhere is not opened again here.
        """
        for each in self._accounts.values():
            each.others = {}
            each.seen = {}
        for record in stored:
            key = (record.provider, record.account)
            if key not in self._account_daily and key not in self._account_monthly:
                continue
            spend = self._accounts.get(key)
            if spend is None:
                spend = self._accounts[key] = AccountSpend(record.first)
            if record.partition in spend.shares:
                continue
            spend.others[record.partition] = _share_of(record)
            spend.seen[record.partition] = record.watermark
            if record.alert is not None:
                self._adopt_alert(spend, key, record.alert)

    @staticmethod
    def _adopt_alert(
        spend: AccountSpend, key: tuple[str, str], stored: AccountAlert
    ) -> None:
        alert = spend.alert
        if alert is not None and alert.seq >= stored.seq:
            return
        if alert is None:
            context = Context(key[0], key[1], "*", "*", "*")
            alert = spend.alert = RuleAlert(SLOW_RAMP, context)
            for share in spend.shares.values():
                share.alert = alert
        alert.seq = stored.seq
        alert.open = stored.open
        alert.starts_at = stored.starts_at
        alert.cost = stored.cost
        logger.info(
            "account alert adopted provider=%s account=%s seq=%d open=%s",
            key[0],
            key[1],
            stored.seq,
            stored.open,
        )

    def _judge_account(
        self,
        spend: AccountSpend,
        key: tuple[str, str],
        daily: float,
        monthly: float,
        now: float,
        out: list[Transition],
    ) -> None:
        complete = self._account_buckets(spend, now)
        width = self.config.ramp_recent_half_life_s
        rate = sum(complete) / (len(complete) * width) * 3600.0
        spend.sum_shares()
        day, month = _project(spend, rate, now)
        over_day, over_month = day > daily, month > monthly
        context = Context(key[0], key[1], "*", "*", "*")
        alert = spend.alert
        evidence: dict[str, object] = {
            "rule": SLOW_RAMP,
            "scope": "account",
            "value": round(rate, 6),
            "unit": "usd_per_hour",
            "fired": [
                name
                for name, hit in (
                    ("daily_budget", over_day),
                    ("monthly_budget", over_month),
                )
                if hit
            ],
            **_budget_evidence(daily, monthly),
            "source": "invocations",
            "rate_usd_per_hour": round(rate, 6),
            "projected_usd_per_day": round(day, 4),
            "projected_usd_per_month": round(month, 2),
        }
        if over_day or over_month:
            if alert is None:
                alert = spend.alert = RuleAlert(SLOW_RAMP, context)
                # Each share carries the alert into its partition's checkpoint.
                for share in spend.shares.values():
                    share.alert = alert
            alert.cost += sum(complete[-1:])
            if not alert.open:
                # An account budget names no function to throttle, so it
                # stays a warning whatever its margin.
                alert.open = True
                alert.starts_at = now
                alert.calm = 0
                self._account_emit(alert, context, OPENED, now, evidence, out)
        elif alert is not None and alert.open:
            alert.cost += sum(complete[-1:])
            # What a lagging partition spent is not known yet: it may open an
            # alert (what is known is over), not resolve one.
            # Limitation: a partition whose stream stops keeps an account alert open.
            lag = spend.others_lag(now, width)
            if day < 0.9 * daily and month < 0.9 * monthly and not lag:
                alert.open = False
                self._account_emit(alert, context, RESOLVED, now, evidence, out)

    def _account_emit(
        self,
        alert: RuleAlert,
        context: Context,
        event: str,
        at: float,
        evidence: dict[str, object],
        out: list[Transition],
    ) -> None:
        alert.seq += 1
        evidence["cost_so_far_usd"] = round(alert.cost, 6)
        summary = (
            f"account {context.account}: {evidence['rate_usd_per_hour']} USD/h,"
            f" projected {evidence['projected_usd_per_day']} USD today against"
            f" a budget of {evidence['budget_usd_per_day']} USD"
        )
        out.append(transition_of(alert, event, context, at, summary, evidence, WARNING))

    # Alert lifecycle

    def _fire(
        self,
        s: RuleState,
        kind: str,
        context: Context,
        at: float,
        cost: float,
        excess: float,
        peak: float,
        critical: bool,
        evidence: dict[str, object],
        out: list[Transition],
        span_s: float = 0.0,
    ) -> None:
        """Open, escalate or extend the alert of rule ``kind`` (made when it
        first fires); ``excess`` USD/h for ``span_s``."""
        slot = _ALERT_SLOT[kind]
        alert: RuleAlert | None = getattr(s, slot)
        if alert is None:
            alert = RuleAlert(kind, context)
            setattr(s, slot, alert)
        alert.calm = 0
        alert.cost += cost
        alert.excess += max(excess, 0.0) * (span_s or self._window) / 3600.0
        severity = CRITICAL if critical else WARNING
        evidence["excess_usd_per_hour"] = round(excess, 6)
        if not alert.open:
            alert.open = True
            alert.severity = severity
            alert.starts_at = at
            alert.peak = peak
            self._emit(s, alert, context, OPENED, at, evidence, out)
            return
        escalated = critical and alert.severity != CRITICAL
        if escalated or peak >= 2.0 * alert.peak:
            alert.severity = CRITICAL if escalated else alert.severity
            alert.peak = max(alert.peak, peak)
            self._emit(s, alert, context, UPDATED, at, evidence, out)

    def _calm(
        self,
        alert: RuleAlert,
        cost: float,
        excess_usd: float = 0.0,
        hot: bool = False,
    ) -> bool:
        """Count a judgement of an open alert that did not fire; True when the
        alert resolves now. Its cost and excess (USD) still count; ``hot``, a
        judgement still near the threshold, starts the calm count again."""
        alert.cost += cost
        alert.excess += excess_usd
        if hot:
            alert.calm = 0
            return False
        alert.calm += 1
        if alert.calm < self.config.resolve_windows:
            return False
        alert.open = False
        return True

    def _resolve(
        self,
        s: RuleState,
        alert: RuleAlert,
        context: Context,
        at: float,
        evidence: dict[str, object],
        out: list[Transition],
    ) -> None:
        """Emit a duration or error alert's resolution; its sequential test
        starts afresh, on the baselines it kept while the alert was open."""
        if alert.kind == DURATION_INFLATION:
            s.dur_s = s.dur_calls = s.dur_sum = 0.0
        else:
            s.err_s = s.err_calls = s.err_failed = 0.0
        self._emit(s, alert, context, RESOLVED, at, evidence, out)

    def _emit(
        self,
        s: RuleState,
        alert: RuleAlert,
        context: Context,
        event: str,
        at: float,
        evidence: dict[str, object],
        out: list[Transition],
    ) -> None:
        alert.seq += 1
        day, month = _project(s, s.recent, at)
        evidence.update(
            source="invocations",
            rate_usd_per_hour=round(s.recent, 6),
            projected_usd_per_day=round(day, 4),
            projected_usd_per_month=round(month, 2),
            cost_so_far_usd=round(alert.cost, 6),
            excess_so_far_usd=round(alert.excess, 6),
        )
        summary = _summary(context, alert.kind, evidence)
        out.append(transition_of(alert, event, context, at, summary, evidence))
        logger.info(
            "rule alert %s kind=%s function=%s severity=%s",
            event,
            alert.kind,
            context.function,
            alert.severity,
        )


def _place_buckets(
    totals: list[float], share: AccountShare, now: float, width: float
) -> None:
    """Add the complete buckets of ``share`` before ``now`` to ``totals``, the
    last ``len(totals)`` buckets before ``now``, oldest first."""
    n = len(totals)
    buckets = share.buckets
    ahead = round((now - share.bucket) / width) + len(buckets) - 1
    for i, value in enumerate(buckets):
        back = ahead - i
        if 1 <= back <= n:
            totals[n - back] += value


def _share_of(record: StoredShare) -> AccountShare:
    """A stored share as the rules sum it (its alert is not carried)."""
    share = AccountShare(record.first)
    share.day_end = record.day_end
    share.day_cost = record.day_cost
    share.month_start = record.month_start
    share.month_end = record.month_end
    share.month_cost = record.month_cost
    share.bucket = record.bucket
    share.buckets = list(record.buckets)
    return share


class _Period(Protocol):
    """Spend of the current UTC day and month, of a context or an account."""

    day_cost: float
    day_end: float
    month_cost: float
    month_end: float
    month_start: float


#: Day and month bounds handed out lately: every context rolls over into the
#: same few, so each holds a shared float rather than a copy of its own.
_shared: Shared[float] = Shared(64)


def _add_spend(period: _Period, start: float, cost: float) -> None:
    """Add the cost of a window starting at ``start`` to its day and month.

    A window past the end of the day starts a new one, and a new month when
    it is past that too (a month ends on a day's end).
    """
    if start >= period.day_end:
        period.day_end = _shared(start - start % _DAY_S + _DAY_S)
        period.day_cost = 0.0
        if start >= period.month_end:
            month_start, month_end = month_bounds(start)
            period.month_start = _shared(month_start)
            period.month_end = _shared(month_end)
            period.month_cost = 0.0
    period.day_cost += cost
    period.month_cost += cost


def _project(period: _Period, rate: float, now: float) -> tuple[float, float]:
    """Spend of the day and of the month if ``rate`` USD/h holds from ``now``."""
    # Limitation: spend so far is only what was seen since tracking began.
    day = period.day_cost + rate * max(0.0, period.day_end - now) / 3600.0
    month = period.month_cost + rate * max(0.0, period.month_end - now) / 3600.0
    return day, month


def _kept_open(alert: RuleAlert | None) -> bool:
    """Whether ``alert`` is open; a test that fires again keeps it from calming."""
    if alert is not None and alert.open:
        alert.calm = 0
        return True
    return False


def _window_evidence(
    kind: str, value: float, baseline: float, unit: str, digits: int, ratio_digits: int
) -> dict[str, object]:
    """What a window rule's evidence opens with: its value against the baseline."""
    return {
        "rule": kind,
        "value": round(value, digits),
        "baseline": round(baseline, digits),
        "unit": unit,
        "ratio": round(value / baseline, ratio_digits) if baseline > 0 else None,
    }


def _budget_evidence(daily: float, monthly: float) -> dict[str, object]:
    """The budgets of an evidence record, None for no budget."""
    return {
        "budget_usd_per_day": None if daily == math.inf else round(daily, 2),
        "budget_usd_per_month": None if monthly == math.inf else round(monthly, 2),
    }


def _by_scope(budgets: Sequence[tuple[str, float]], parts: int) -> dict[Any, float]:
    """Budgets whose key has ``parts`` parts (account) or more (function)."""
    if parts == 2:
        return {
            tuple(key.split("/")): usd for key, usd in budgets if key.count("/") == 1
        }
    return {key: usd for key, usd in budgets if key.count("/") >= 3}


def _summary(context: Context, kind: str, evidence: dict[str, object]) -> str:
    value = evidence.get("value")
    base = evidence.get("baseline")
    if evidence.get("test") == "sequential":
        what = "durations" if kind == DURATION_INFLATION else "failures"
        return (
            f"{context.function}: {what} of {evidence.get('calls_judged')} calls"
            f" at {value} against a usual {base} {evidence.get('unit')}"
        )
    if kind == DURATION_INFLATION:
        return (
            f"{context.function}: {value} billed ms per invocation"
            f" against a baseline of {base} ms"
        )
    if kind == ERROR_STORM:
        return (
            f"{context.function}: {evidence.get('failures', 0)} failures,"
            f" a share of {value} against a baseline of {base}"
        )
    return (
        f"{context.function}: {value} USD/h, projected"
        f" {evidence.get('projected_usd_per_day')} USD today"
        f" against a long-run {base} USD/h"
    )
