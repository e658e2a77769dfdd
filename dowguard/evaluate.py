"""``dowguard evaluate``: the detector scored on labelled recordings.

Owns the measures (recall, precision, false-alert rate, detection delay,
the least delay possible, dollars leaked), their arithmetic on alerts and
labels, and the command.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from dowguard.errors import ConfigError, DowError, ParseError

logger = logging.getLogger(__name__)

#: An alert that opens up to this long after a scenario's end still belongs
#: to it: windows close and chains end a little after the traffic does.
GRACE_S = 120.0

CRITICAL = "critical"

#: One false alert per context in this many hours: 0.5 per 1000
#: function-hours, the budget the delay bound is worked out for.
FALSE_ALERT_HOURS = 2000.0
#: The excess series is averaged over spans this long for the bound, so
#: that the chance of single calls does not pass for the attack's shape.
BOUND_SPAN_S = 60.0
#: Kinds whose excess is more calls at the usual price, where the count of
#: calls is the evidence and the bound applies.
RATE_KINDS = frozenset({"flood", "slow_ramp", "flash_sale", "nightly_batch"})

#: Confidence of the one-sided bounds beside recall and the false-alert rate.
CONFIDENCE = 0.95
#: The targets the bounds are read against: recall of every attack kind at
#: 3x and above, and false alerts per 1000 background function-hours.
RECALL_TARGET = 0.99
FALSE_PER_KFH_TARGET = 0.5
#: Intensities below this nominal multiplier are left out of the per-kind
#: pooling, as the recall target leaves them out.
POOLED_FROM_X = 3.0


def _binomial_tail(hits: int, n: int, p: float) -> float:
    """P(X >= hits) for X binomial(n, p), summed in logs."""
    if p <= 0.0:
        return 1.0 if hits <= 0 else 0.0
    if p >= 1.0:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    log_n = math.lgamma(n + 1)
    return sum(
        math.exp(
            log_n - math.lgamma(i + 1) - math.lgamma(n - i + 1)
            + i * log_p + (n - i) * log_q
        )
        for i in range(hits, n + 1)
    )  # fmt: skip


def _poisson_cdf(events: int, mean: float) -> float:
    """P(X <= events) for X Poisson with ``mean``, summed in logs."""
    if mean <= 0.0:
        return 1.0
    log_mean = math.log(mean)
    return sum(
        math.exp(-mean + i * log_mean - math.lgamma(i + 1)) for i in range(events + 1)
    )


def _bisect(
    low: float, high: float, rising: Callable[[float], float], goal: float
) -> float:
    """The x in [low, high] where the monotone ``rising(x)`` crosses ``goal``."""
    for _ in range(200):
        mid = (low + high) / 2.0
        if rising(mid) < goal:
            low = mid
        else:
            high = mid
        if high - low <= 1e-12 * max(1.0, high):
            break
    return (low + high) / 2.0


def recall_lower_bound(
    hits: int, n: int, confidence: float = CONFIDENCE
) -> float | None:
    """Clopper-Pearson one-sided lower bound on a proportion (None for n = 0).

    The p at which ``hits`` or more of ``n`` happen with probability
    ``1 - confidence``: any lower p makes the count seen less likely than that.
    """
    if n <= 0:
        return None
    if not 0 <= hits <= n:
        raise ValueError(f"recall bound: {hits} hits out of {n} scenarios")
    alpha = 1.0 - confidence
    if hits == 0:
        return 0.0
    if hits == n:
        return float(alpha ** (1.0 / n))
    return _bisect(0.0, hits / n, lambda p: _binomial_tail(hits, n, p), alpha)


def poisson_upper_bound(events: int, confidence: float = CONFIDENCE) -> float:
    """Exact one-sided upper bound on a Poisson mean, having seen ``events``.

    The mean at which ``events`` or fewer happen with probability
    ``1 - confidence``; -log(1 - confidence), about 3.0, for none.
    """
    if events < 0:
        raise ValueError(f"poisson bound: negative count {events}")
    alpha = 1.0 - confidence
    if events == 0:
        return -math.log(alpha)
    high = events + 10.0 * math.sqrt(events) + 10.0
    # The CDF falls as the mean grows: bisect on its complement.
    return _bisect(
        float(events), high, lambda mean: 1.0 - _poisson_cdf(events, mean), 1 - alpha
    )


def rate_upper_bound(
    events: int, hours: float, confidence: float = CONFIDENCE
) -> float | None:
    """The upper bound on false alerts per 1000 function-hours (None for none)."""
    if hours <= 0.0:
        return None
    return poisson_upper_bound(events, confidence) / hours * 1000.0


def scenarios_needed(target: float, confidence: float = CONFIDENCE) -> int:
    """Scenarios a kind needs, none missed, for a recall lower bound of ``target``."""
    return math.ceil(math.log(1.0 - confidence) / math.log(target))


def function_hours_needed(per_kfh: float, confidence: float = CONFIDENCE) -> float:
    """Background function-hours that, with no false alert, bound the rate."""
    return poisson_upper_bound(0, confidence) / per_kfh * 1000.0


_ALPHA = 1.0 - CONFIDENCE
_NONE = poisson_upper_bound(0)
_NEED_N = scenarios_needed(RECALL_TARGET)
_NEED_FH = math.ceil(function_hours_needed(FALSE_PER_KFH_TARGET))

MEASURES = f"""\
Every alert is one episode: an 'opened' transition and what follows it on
the same fingerprint until it resolves. Its time is when it opened; its
severity is the highest it reached. Each labelled scenario has contexts,
an onset and an end in event time, and a set of alert kinds that count as
detecting it. An alert belongs to a scenario when its context is one of
the scenario's and it opened between the onset and {GRACE_S:g} s after the
end. An alert that belongs to no attack is a false alert (alerts on benign
look-alikes are false alerts too, and are also counted apart).

  recall      scenarios with at least one alert of a detecting kind, over
              the scenarios of the row. An alert that opened before the
              onset does not detect it, even if it is still open.
  critical    the same with critical alerts only (enforcement acts on no
              other severity).
  first by    the kinds of the alerts that detected the row's scenarios
              first.
  precision   alerts of a detecting kind that belong to the row's
              scenarios, over those plus the false alerts of the row's
              detecting kinds in the recordings that hold the row.
  false/kfh   false alerts (any kind) on background functions (those of no
              scenario) per 1000 function-hours of background: background
              functions times the recording's hours, in the recordings that
              hold the row, whether the functions ran or not.
  cost x      the cost rate during the scenario over the rate before it,
              as generated (mean over the row), beside the nominal intensity.
  delay       from the onset to the first detecting alert, event-time
              seconds; median and 95th percentile (nearest rank) over the
              detected scenarios.
  bound       the least median delay any detector can have at a budget
              of one false alert per context in {FALSE_ALERT_HOURS:g} hours
              (0.5 per 1000 function-hours), for scenarios that add calls
              at the usual price (floods, ramps): the time from the onset
              until the information the attack's calls carry, the victim's
              usual call rate times r log r - r + 1 per second (r: the rate
              over the usual, from the excess series over {BOUND_SPAN_S:g} s
              spans) added up, reaches the log of that budget in windows.
              Median over the row's scenarios; '–' for other kinds.
  leaked      the attack's excess cost (what it cost above the traffic
              without it, from the labels' per-second series) before the
              first detecting alert, in USD; all of it when none came.
              Mean over the row's scenarios, beside the mean total excess.
  look-alikes benign scenarios: alerts of each severity that belong to
              them. A look-alike passes when none is critical.

What the sample supports: one-sided {CONFIDENCE:.0%} bounds, exact.
  recall low  Clopper-Pearson lower bound on recall: the lowest detection
              rate at which the row's n scenarios detect as many as the
              row's, or more, with probability {_ALPHA:.0%} or more. All n
              detected gives {_ALPHA:g}^(1/n): 0.22 for n = 2, 0.78 for
              n = 12; a bound of {RECALL_TARGET:g} takes {_NEED_N} scenarios
              with none missed.
  false/kfh high
              exact Poisson upper bound on the false-alert rate per 1000
              background function-hours: the highest rate at which as few
              false alerts as the row's, or fewer, have probability
              {_ALPHA:.0%} or more. None in T function-hours gives
              {_NONE:.2f}/T * 1000; a bound of {FALSE_PER_KFH_TARGET:g} takes \
{_NEED_FH}
              function-hours with none.
  per kind    each attack kind pooled over its intensities of
              {POOLED_FROM_X:g}x and more (all of those not given as a
              multiplier, such as the loops' fan-outs), since the recall
              target is per kind: n, recall, recall low, critical and its
              lower bound.

Several recordings pool into one table: give the attacks/ and ramps/ of
several seeds (or background recordings: 'dowguard simulate OUT --suite
background') and the rows sum their n and their function-hours. Each
recording is replayed and scored on its own, so contexts and scenario names
that repeat across seeds do not meet.
"""


@dataclass(frozen=True, slots=True)
class Episode:
    """One alert from opening to resolution, as scoring sees it."""

    kind: str
    context: tuple[str, ...]
    opened_at: float
    severity: str
    fingerprint: str = ""


def episodes(transitions: Iterable[Any]) -> list[Episode]:
    """Alert episodes from transitions (objects with the Transition fields)."""
    out: list[Episode] = []
    current: dict[str, int] = {}
    rank = {"info": 0, "warning": 1, CRITICAL: 2}
    for t in transitions:
        index = current.get(t.fingerprint)
        if t.event == "opened" or index is None:
            current[t.fingerprint] = len(out)
            out.append(
                Episode(t.kind, tuple(t.context), t.at, t.severity, t.fingerprint)
            )
        else:
            ep = out[index]
            if rank.get(t.severity, 0) > rank.get(ep.severity, 0):
                out[index] = Episode(
                    ep.kind, ep.context, ep.opened_at, t.severity, ep.fingerprint
                )
        if t.event == "resolved":
            current.pop(t.fingerprint, None)
    return out


def _context(data: dict[str, str]) -> tuple[str, ...]:
    keys = ("provider", "account", "region", "function", "qualifier")
    return tuple(str(data.get(k, "$LATEST" if k == "qualifier" else "")) for k in keys)


#: Detecting kinds of the bundled recording's scenarios, whose labels
#: predate the ``detected_by`` field.
_LEGACY_DETECTED_BY = {
    "cost_spike": ("cost_spike", "anomaly"),
    "recursive_loop": ("recursive_trigger", "cost_spike"),
}


@dataclass(frozen=True, slots=True)
class Scenario:
    """A labelled scenario as scoring needs it."""

    name: str
    kind: str
    level: str
    benign: bool
    contexts: frozenset[tuple[str, ...]]
    onset: float
    end: float
    detected_by: frozenset[str]
    #: (second, USD) of excess cost, in time order.
    excess: tuple[tuple[float, float], ...] = ()
    #: Cost rate during the scenario over the rate before it, as generated.
    cost_multiplier: float | None = None
    #: The victims' cost rate before the onset, USD per hour.
    baseline_usd_per_hour: float | None = None

    @property
    def total_excess(self) -> float:
        return sum(usd for _, usd in self.excess)

    @classmethod
    def from_label(cls, label: dict[str, Any], source: str = "labels") -> Scenario:
        try:
            kind = str(label["kind"])
            contexts = label.get("contexts") or [label["context"]]
            onset, end = float(label["onset"]), float(label["end"])
            detected = label.get("detected_by", _LEGACY_DETECTED_BY.get(kind, ()))
            excess = _excess(label, onset, end)
            return cls(
                name=str(label.get("name") or kind),
                kind=kind,
                level=str(label.get("level") or _legacy_level(label)),
                benign=bool(label.get("benign", False)),
                contexts=frozenset(_context(c) for c in contexts),
                onset=onset,
                end=end,
                detected_by=frozenset(detected),
                excess=excess,
                cost_multiplier=_measured(label),
                baseline_usd_per_hour=_baseline_rate(label),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ParseError(source, "scenarios", f"bad scenario label: {exc}") from exc


def _measured(label: dict[str, Any]) -> float | None:
    intensity = label.get("intensity", {})
    value = intensity.get("cost_multiplier", intensity.get("rate_multiplier"))
    return None if value is None else float(value)


def _baseline_rate(label: dict[str, Any]) -> float | None:
    value = label.get("intensity", {}).get("baseline_usd_per_hour")
    return None if value is None else float(value)


def _legacy_level(label: dict[str, Any]) -> str:
    intensity = label.get("intensity", {})
    if "fan_out" in intensity:
        return f"fan-out {intensity['fan_out']}"
    if "configured_multiplier" in intensity:
        return f"{intensity['configured_multiplier']:g}x"
    return ""


def _excess(
    label: dict[str, Any], onset: float, end: float
) -> tuple[tuple[float, float], ...]:
    if "excess" in label:
        return tuple((float(s), float(u)) for s, u in label["excess"]["per_second"])
    # Labels of the bundled recording give totals only: spread them evenly.
    intensity = label.get("intensity", {})
    if "looped_cost_usd" in intensity:
        total = float(intensity["looped_cost_usd"])
    else:
        total = float(intensity.get("extra_usd_per_hour", 0.0)) * (end - onset) / 3600
    seconds = max(1, math.ceil(end - onset))
    return tuple((onset + i, total / seconds) for i in range(seconds))


def leaked(excess: Sequence[tuple[float, float]], until: float | None) -> float:
    """Excess cost booked before ``until`` (all of it for ``None``).

    Each entry covers one second from its time; the second that holds
    ``until`` counts in proportion.
    """
    total = 0.0
    for second, usd in excess:
        if until is None or second + 1.0 <= until:
            total += usd
        elif second < until:
            total += usd * (until - second)
    return total


def usual_call_rate(
    scenario: Scenario, invocations: float, seconds: float
) -> float | None:
    """Calls per second of a one-context scenario's victim without the attack.

    ``invocations`` are the victim's over the recording (``seconds`` long),
    the attack's included: those are its excess cost at the usual cost per
    call, which is the baseline cost rate over the usual call rate.
    """
    base = scenario.baseline_usd_per_hour
    if base is None or base <= 0.0 or invocations <= 0.0 or seconds <= 0.0:
        return None
    return invocations / (seconds + 3600.0 * scenario.total_excess / base)


def delay_bound(
    scenario: Scenario,
    calls_per_s: float,
    budget_hours: float = FALSE_ALERT_HOURS,
    window_s: float = 10.0,
) -> float | None:
    """The least median delay to detect a rise of calls at a false-alert budget.

    A detector that alarms falsely at most once in ``A`` windows needs,
    for most attacks, about ``log A`` nats of evidence (Lorden, 1971; Lai,
    1998, for the delay's distribution), and calls at ``r`` times the usual
    Poisson rate ``calls_per_s`` bring ``calls_per_s * (r log r - r + 1)``
    nats a second. The bound is when the evidence since the onset reaches
    ``log A``, ``r`` following the scenario's excess; None when it never does.
    """
    base = scenario.baseline_usd_per_hour
    windows = budget_hours * 3600.0 / window_s
    if base is None or base <= 0.0 or calls_per_s <= 0.0 or windows <= 1.0:
        return None
    # Limitation: first order; overshoot and an unknown ratio make real delays longer.
    needed = math.log(windows)
    spans: dict[int, float] = {}
    for second, usd in scenario.excess:
        index = math.floor((second - scenario.onset) / BOUND_SPAN_S)
        spans[index] = spans.get(index, 0.0) + usd
    gathered = 0.0
    usual_usd_per_s = base / 3600.0
    last = math.ceil((scenario.end - scenario.onset) / BOUND_SPAN_S)
    for index in range(max(last, 1)):
        ratio = 1.0 + spans.get(index, 0.0) / BOUND_SPAN_S / usual_usd_per_s
        rate = calls_per_s * (ratio * math.log(ratio) - ratio + 1.0)
        if rate > 0.0 and gathered + rate * BOUND_SPAN_S >= needed:
            return index * BOUND_SPAN_S + (needed - gathered) / rate
        gathered += rate * BOUND_SPAN_S
    return None


@dataclass(slots=True)
class Outcome:
    """What the detector did about one scenario."""

    scenario: Scenario
    recording: str
    detected_at: float | None = None
    alerts: list[Episode] = field(default_factory=list)
    #: The least median delay possible (see :func:`delay_bound`), if known.
    bound: float | None = None

    @property
    def delay(self) -> float | None:
        if self.detected_at is None:
            return None
        return self.detected_at - self.scenario.onset

    @property
    def leak(self) -> float:
        return leaked(self.scenario.excess, self.detected_at)

    @property
    def true_alerts(self) -> list[Episode]:
        return [a for a in self.alerts if a.kind in self.scenario.detected_by]

    @property
    def first(self) -> Episode | None:
        alerts = self.true_alerts
        return min(alerts, key=lambda a: a.opened_at) if alerts else None

    @property
    def critical(self) -> bool:
        return any(a.severity == CRITICAL for a in self.true_alerts)


@dataclass(slots=True)
class RecordingScore:
    """The alerts of one recording, sorted against its labels."""

    name: str
    hours: float
    background_functions: int
    outcomes: list[Outcome]
    false_alerts: list[Episode]
    background_false: list[Episode]
    alerts: int
    skipped: int = 0

    @property
    def background_hours(self) -> float:
        return self.background_functions * self.hours


def score_recording(
    labels: dict[str, Any],
    alerts: Sequence[Episode],
    name: str = "",
    budget_hours: float = FALSE_ALERT_HOURS,
    window_s: float = 10.0,
) -> RecordingScore:
    """Attribute every alert to a scenario or call it false; see MEASURES.

    ``budget_hours`` and ``window_s`` are what the delay bound is worked
    out for: one false alert per context in so many hours, in windows.
    """
    scenarios = [Scenario.from_label(s, name) for s in labels.get("scenarios", [])]
    outcomes = [Outcome(s, name) for s in scenarios]
    covered = {c for s in scenarios for c in s.contexts}
    calls = {
        _context(f["context"]): float(f.get("invocations", 0))
        for f in labels.get("functions", [])
    }
    functions = set(calls)
    seconds = float(labels["end"]) - float(labels["start"])
    for outcome in outcomes:
        s = outcome.scenario
        if s.kind not in RATE_KINDS or len(s.contexts) != 1:
            continue
        (victim,) = s.contexts
        rate = usual_call_rate(s, calls.get(victim, 0.0), seconds)
        if rate is not None:
            outcome.bound = delay_bound(s, rate, budget_hours, window_s)
    false: list[Episode] = []
    background: list[Episode] = []
    for alert in alerts:
        owner = next(
            (
                o
                for o in outcomes
                if alert.context in o.scenario.contexts
                and o.scenario.onset <= alert.opened_at <= o.scenario.end + GRACE_S
            ),
            None,
        )
        if owner is not None:
            owner.alerts.append(alert)
        if owner is None or owner.scenario.benign:
            false.append(alert)
            if alert.context not in covered:
                background.append(alert)
    for outcome in outcomes:
        times = [a.opened_at for a in outcome.true_alerts]
        outcome.detected_at = min(times) if times else None
    hours = seconds / 3600.0
    return RecordingScore(
        name, hours, len(functions - covered), outcomes, false, background, len(alerts)
    )


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..1); ``None`` for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass(slots=True)
class Row:
    """One line of the table: a scenario kind at one intensity."""

    kind: str
    level: str
    benign: bool
    scenarios: int
    cost_multiplier: float | None
    detected: int
    recall: float
    critical_recall: float
    first_by: str
    precision: float | None
    false_per_kfh: float | None
    delay_p50_s: float | None
    delay_p95_s: float | None
    delay_bound_p50_s: float | None
    leaked_usd: float
    excess_usd: float
    warnings: int
    criticals: int
    #: Clopper-Pearson lower bound on recall (see MEASURES).
    recall_low: float | None = None
    #: False alerts on the background and its function-hours, whose exact
    #: Poisson upper bound per 1000 is ``false_high_per_kfh``.
    background_false: int = 0
    background_hours: float = 0.0
    false_high_per_kfh: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


@dataclass(slots=True)
class KindRow:
    """One attack kind pooled over the intensities the recall target covers."""

    kind: str
    levels: tuple[str, ...]
    scenarios: int
    detected: int
    criticals: int
    recall: float
    recall_low: float | None
    critical_recall: float
    critical_low: float | None

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


def _level_key(level: str) -> tuple[float, str]:
    digits = "".join(ch for ch in level if ch.isdigit() or ch == ".")
    try:
        return float(digits), level
    except ValueError:
        return math.inf, level


def rows(scores: Sequence[RecordingScore]) -> list[Row]:
    """Aggregate outcomes per (kind, level); see MEASURES for each column.

    Recordings are told apart by identity, not name: the attacks/ of two
    seeds share a directory name, and each must add its function-hours.
    """
    groups: dict[tuple[str, str, bool], list[Outcome]] = {}
    holders: dict[tuple[str, str, bool], list[RecordingScore]] = {}
    for score in scores:
        for outcome in score.outcomes:
            s = outcome.scenario
            key = (s.kind, s.level, s.benign)
            groups.setdefault(key, []).append(outcome)
            held_by = holders.setdefault(key, [])
            if not any(sc is score for sc in held_by):
                held_by.append(score)
    out: list[Row] = []
    for (kind, level, benign), group in sorted(
        groups.items(), key=lambda g: (g[0][2], g[0][0], _level_key(g[0][1]))
    ):
        held = holders[(kind, level, benign)]
        kinds = frozenset().union(*(o.scenario.detected_by for o in group))
        true = sum(len(o.true_alerts) for o in group)
        false = sum(1 for sc in held for a in sc.false_alerts if a.kind in kinds)
        fh = sum(sc.background_hours for sc in held)
        bg_false = sum(len(sc.background_false) for sc in held)
        delays = [d for o in group if (d := o.delay) is not None]
        bounds = [b for o in group if (b := o.bound) is not None]
        matched = [a for o in group for a in o.alerts]
        measured = [m for o in group if (m := o.scenario.cost_multiplier) is not None]
        out.append(
            Row(
                kind=kind,
                level=level,
                benign=benign,
                scenarios=len(group),
                cost_multiplier=sum(measured) / len(measured) if measured else None,
                detected=len(delays),
                recall=len(delays) / len(group),
                critical_recall=sum(o.critical for o in group) / len(group),
                first_by=", ".join(
                    sorted({f.kind for o in group if (f := o.first) is not None})
                ),
                precision=true / (true + false) if true + false else None,
                false_per_kfh=bg_false / fh * 1000.0 if fh else None,
                delay_p50_s=percentile(delays, 0.5),
                delay_p95_s=percentile(delays, 0.95),
                delay_bound_p50_s=percentile(bounds, 0.5),
                leaked_usd=sum(o.leak for o in group) / len(group),
                excess_usd=sum(o.scenario.total_excess for o in group) / len(group),
                warnings=sum(1 for a in matched if a.severity != CRITICAL),
                criticals=sum(1 for a in matched if a.severity == CRITICAL),
                recall_low=recall_lower_bound(len(delays), len(group)),
                background_false=bg_false,
                background_hours=fh,
                false_high_per_kfh=rate_upper_bound(bg_false, fh),
            )
        )
    return out


def nominal_multiplier(level: str) -> float | None:
    """The multiplier of a level written as ``3x`` or ``2.5x``; else None."""
    if not level.endswith("x"):
        return None
    try:
        return float(level[:-1])
    except ValueError:
        return None


def kind_rows(
    scores: Sequence[RecordingScore], from_x: float = POOLED_FROM_X
) -> list[KindRow]:
    """Attack kinds pooled over their levels of ``from_x`` and more.

    Levels that are no multiplier (the loops' fan-outs) all count: they are
    no faint version of the attack.
    """
    # Limitation: bounds treat scenarios as independent; a recording shares one replay.
    groups: dict[str, list[Outcome]] = {}
    for score in scores:
        for outcome in score.outcomes:
            s = outcome.scenario
            x = nominal_multiplier(s.level)
            if s.benign or (x is not None and x < from_x):
                continue
            groups.setdefault(s.kind, []).append(outcome)
    out = []
    for kind, group in sorted(groups.items()):
        n = len(group)
        hits = sum(o.detected_at is not None for o in group)
        criticals = sum(o.critical for o in group)
        levels = sorted({o.scenario.level for o in group}, key=_level_key)
        out.append(
            KindRow(
                kind=kind,
                levels=tuple(levels),
                scenarios=n,
                detected=hits,
                criticals=criticals,
                recall=hits / n,
                recall_low=recall_lower_bound(hits, n),
                critical_recall=criticals / n,
                critical_low=recall_lower_bound(criticals, n),
            )
        )
    return out


def overall(scores: Sequence[RecordingScore]) -> dict[str, Any]:
    alerts = sum(sc.alerts for sc in scores)
    false = sum(len(sc.false_alerts) for sc in scores)
    fh = sum(sc.background_hours for sc in scores)
    bg = sum(len(sc.background_false) for sc in scores)
    # Enforcement acts on critical alerts alone: their rate is the one that
    # throttles a healthy function.
    bg_critical = sum(
        1 for sc in scores for a in sc.background_false if a.severity == CRITICAL
    )
    return {
        "recordings": len(scores),
        "alerts": alerts,
        "false_alerts": false,
        "background_false_alerts": bg,
        "background_function_hours": round(fh, 3),
        "false_per_kfh": bg / fh * 1000.0 if fh else None,
        "false_high_per_kfh": rate_upper_bound(bg, fh),
        "background_false_critical": bg_critical,
        "critical_false_high_per_kfh": rate_upper_bound(bg_critical, fh),
        "precision": (alerts - false) / alerts if alerts else None,
        "records_skipped": sum(sc.skipped for sc in scores),
    }


# --- running the detector ----------------------------------------------------


def replay_recording(
    directory: Path, config: Any = None, model: Any = None
) -> tuple[list[Any], int]:
    """Transitions of the real replay path over a recording, and skipped records.

    ``model`` is an offline model (``models.offline.OfflineModel``) the
    detector scores its notable windows with, as a replay's ``--model``.
    """
    from detector.engine import DetectorConfig, Engine
    from detector.replay import Replay
    from ingest.parse import read_paths

    skipped: list[ParseError] = []

    def report(error: ParseError) -> None:
        skipped.append(error)
        logger.warning("evaluate skipped record error=%s", error)

    engine = Engine(config or DetectorConfig(), offline_model=model)
    result = Replay(engine).run(read_paths([directory], report))
    return result.transitions, len(skipped)


def load_labels(directory: Path) -> dict[str, Any]:
    path = directory / "labels.json"
    try:
        labels: dict[str, Any] = orjson.loads(path.read_bytes())
    except FileNotFoundError as exc:
        raise ConfigError(f"evaluate: {directory} has no labels.json") from exc
    except orjson.JSONDecodeError as exc:
        raise ParseError(str(path), "offset 0", f"invalid JSON: {exc}") from exc
    return labels


def recording_names(directories: Sequence[Path]) -> list[str]:
    """Names that tell the recordings apart: the fewest trailing path parts.

    ``s1/attacks`` and ``s2/attacks`` are both ``attacks`` by directory name;
    the same directory given twice keeps its name and a ``#2``.
    """
    parts = [Path(d).resolve().parts or (str(d),) for d in directories]
    depth = 1
    while depth < max((len(p) for p in parts), default=1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
        depth += 1
    names = ["/".join(p[-depth:]) for p in parts]
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return out


def evaluate_dirs(
    directories: Sequence[Path], config: Any = None, model: Any = None
) -> list[RecordingScore]:
    """Replay and score each recording; the bound at the detector's budget."""
    budget = getattr(config, "rise_false_alert_hours", 0.0) or FALSE_ALERT_HOURS
    window = getattr(config, "window_s", 10.0)
    scores = []
    for directory, name in zip(directories, recording_names(directories), strict=True):
        labels = load_labels(directory)
        transitions, skipped = replay_recording(directory, config, model)
        score = score_recording(labels, episodes(transitions), name, budget, window)
        score.skipped = skipped
        scores.append(score)
        logger.info(
            "evaluated recording=%s alerts=%d skipped=%d",
            directory,
            score.alerts,
            skipped,
        )
    return scores


def generate_suite(
    name: str,
    outdir: Path,
    seed: int = 1,
    functions: int | None = None,
    minutes: float | None = None,
    start: str | None = None,
) -> list[Path]:
    """Write the recordings of a suite under ``outdir``; their directories."""
    from dowguard.simulate import simulate, write_recording
    from dowguard.suite import suite

    paths = []
    for recording in suite(name, seed, functions, minutes, start=start):
        path = outdir / recording.name
        write_recording(simulate(recording.config), path)
        paths.append(path)
    return paths


# --- output ------------------------------------------------------------------


def _num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _usd(value: float) -> str:
    return f"{value:.4f}" if value < 1 else f"{value:.2f}"


def format_tables(
    table: Sequence[Row],
    summary: dict[str, Any],
    kinds: Sequence[KindRow] = (),
) -> str:
    lines: list[str] = []
    if any(not r.benign for r in table):
        lines += [
            "| attack | intensity | cost x | n | recall | recall low | critical "
            "| first by | precision | false/kfh | false/kfh high | delay p50 s "
            "| delay p95 s | bound p50 s | leaked USD | excess USD |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: "
            "| ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
    for r in table:
        if r.benign:
            continue
        lines.append(
            f"| {r.kind} | {r.level} | {_num(r.cost_multiplier, 1)} "
            f"| {r.scenarios} | {r.recall:.2f} | {_num(r.recall_low)} "
            f"| {r.critical_recall:.2f} | {r.first_by or '–'} "
            f"| {_num(r.precision)} | {_num(r.false_per_kfh, 1)} "
            f"| {_num(r.false_high_per_kfh, 1)} "
            f"| {_num(r.delay_p50_s, 1)} | {_num(r.delay_p95_s, 1)} "
            f"| {_num(r.delay_bound_p50_s, 1)} "
            f"| {_usd(r.leaked_usd)} | {_usd(r.excess_usd)} |"
        )
    if kinds:
        lines += [
            "",
            f"| attack kind, {POOLED_FROM_X:g}x and up | intensities | n "
            "| recall | recall low | critical | critical low |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
        ]
    for k in kinds:
        lines.append(
            f"| {k.kind} | {', '.join(k.levels)} | {k.scenarios} "
            f"| {k.recall:.2f} | {_num(k.recall_low)} "
            f"| {k.critical_recall:.2f} | {_num(k.critical_low)} |"
        )
    if any(r.benign for r in table):
        lines += [
            "",
            "| look-alike | intensity | n | warning alerts | critical alerts "
            "| passed |",
            "| --- | --- | ---: | ---: | ---: | --- |",
        ]
    for r in table:
        if r.benign:
            passed = "yes" if r.criticals == 0 else "no"
            lines.append(
                f"| {r.kind} | {r.level} | {r.scenarios} | {r.warnings} "
                f"| {r.criticals} | {passed} |"
            )
    if lines:
        lines.append("")
    lines += [
        f"recordings: {summary['recordings']}; alerts: {summary['alerts']}, "
        f"{summary['false_alerts']} false; precision {_num(summary['precision'])}; "
        f"{summary['background_false_alerts']} false alerts on "
        f"{summary['background_function_hours']:.0f} background function-hours "
        f"({_num(summary['false_per_kfh'], 1)} per 1000, at most "
        f"{_num(summary['false_high_per_kfh'], 2)} at {CONFIDENCE:.0%}; "
        f"{summary['background_false_critical']} critical, at most "
        f"{_num(summary['critical_false_high_per_kfh'], 2)}); "
        f"{summary['records_skipped']} records skipped",
        f"{CONFIDENCE:.0%} bounds under the targets take "
        f"{_NEED_N} scenarios a kind, none missed, "
        f"for recall >= {RECALL_TARGET:g}, and "
        f"{_NEED_FH} background "
        f"function-hours, no false alert, for <= {FALSE_PER_KFH_TARGET:g} "
        "per 1000",
    ]
    return "\n".join(lines)


def register(subparsers: Any) -> None:
    """Add ``dowguard evaluate [RECORDING_DIR ...] [--suite NAME] [--json]``."""
    from dowguard.suite import SUITE_START, SUITES

    p = subparsers.add_parser(
        "evaluate",
        help="score the detector on labelled recordings or the scenario suite",
        description=(
            "Replay labelled recordings (directories with labels.json) through\n"
            "the detector, in process, and score its alerts per scenario kind\n"
            "and intensity. Without directories, generate a suite (default:\n"
            "'default') into a temporary directory first.\n\n" + MEASURES
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("recordings", nargs="*", type=Path, metavar="RECORDING_DIR")
    p.add_argument("--suite", choices=SUITES, help="suite to generate (default)")
    p.add_argument("--quick", action="store_true", help="the small suite, for tests")
    p.add_argument("--seed", type=int, default=1, help="suite seed")
    p.add_argument(
        "--functions",
        type=int,
        help="background functions of the attacks recording (default 300)",
    )
    p.add_argument(
        "--minutes",
        type=float,
        help="length of the background suite's recording (default 50)",
    )
    p.add_argument(
        "--start",
        help="when the suite's recordings begin, ISO 8601, UTC unless it names"
        f" a zone (default {SUITE_START}, a Wednesday night)",
    )
    p.add_argument("--keep", type=Path, help="write the suite here and keep it")
    p.add_argument("--window", type=float, help="window length in seconds")
    p.add_argument(
        "--model", help="offline model from `dowguard train` (DOWGUARD_MODEL_PATH)"
    )
    p.add_argument("--json", action="store_true", help="one JSON document")
    p.set_defaults(func=run_cli)


def run_cli(args: argparse.Namespace) -> int:
    from dowguard.cli import detector_config, settings_from

    settings = settings_from(args)
    config = detector_config(settings)
    model = None
    if settings.model_path:
        from models.offline import load

        model = load(settings.model_path)
    began = time.monotonic()
    if args.recordings and (args.suite or args.quick):
        raise ConfigError("evaluate: give recording directories or a suite, not both")
    if args.recordings and args.start is not None:
        raise ConfigError(
            "evaluate: --start is for a generated suite; a recording has its own"
        )
    if args.recordings:
        missing = [str(p) for p in args.recordings if not p.is_dir()]
        if missing:
            raise DowError(f"evaluate: no such directory: {', '.join(missing)}")
        scores = evaluate_dirs(args.recordings, config, model)
    else:
        name = "quick" if args.quick else args.suite or "default"
        with tempfile.TemporaryDirectory(prefix="dowguard-suite-") as tmp:
            root = args.keep or Path(tmp)
            paths = generate_suite(
                name, root, args.seed, args.functions, args.minutes, args.start
            )
            scores = evaluate_dirs(paths, config, model)
    table = rows(scores)
    kinds = kind_rows(scores)
    summary = overall(scores)
    summary["seconds"] = round(time.monotonic() - began, 1)
    if args.json:
        document = {
            "rows": [r.to_json() for r in table],
            "kinds": [k.to_json() for k in kinds],
            "overall": summary,
            "recordings": [
                {
                    "recording": sc.name,
                    "background_function_hours": round(sc.background_hours, 3),
                    "alerts": sc.alerts,
                    "false_alerts": len(sc.false_alerts),
                    "background_false": [
                        [a.kind, a.severity, a.opened_at, "/".join(a.context)]
                        for a in sc.background_false
                    ],
                }
                for sc in scores
            ],
            "scenarios": [
                {
                    "recording": o.recording,
                    "name": o.scenario.name,
                    "kind": o.scenario.kind,
                    "level": o.scenario.level,
                    "benign": o.scenario.benign,
                    "detected": o.detected_at is not None,
                    "delay_s": o.delay,
                    "delay_bound_s": o.bound,
                    "leaked_usd": round(o.leak, 6),
                    "excess_usd": round(o.scenario.total_excess, 6),
                    "cost_multiplier": o.scenario.cost_multiplier,
                    "alerts": [[a.kind, a.severity, a.opened_at] for a in o.alerts],
                }
                for sc in scores
                for o in sc.outcomes
            ],
        }
        sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
    else:
        print(format_tables(table, summary, kinds))  # noqa: T201
    print(  # noqa: T201
        f"dowguard: evaluated {len(scores)} recordings in {summary['seconds']} s",
        file=sys.stderr,
    )
    return 0
