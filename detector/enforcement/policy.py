"""The safety policy: which alerts may cause an action, how many, and when.

Each rule is a pure function of the alert, the records shown and the time.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from detector.alerts import CRITICAL, SEVERITY_RANK, Transition
from detector.enforcement.audit import (
    FAILED,
    REJECTED,
    SKIPPED,
    SUCCEEDED,
    THROTTLE,
    ActionRecord,
)
from ingest.events import Context

HOUR_S = 3600.0

#: Alert kinds that are loops, for which triggers are cut too.
LOOP_KINDS = frozenset({"recursive_trigger"})


class Refusal(NamedTuple):
    """A rule that refused a throttle: a short stable name and the details."""

    rule: str
    reason: str


@dataclass(frozen=True)
class Policy:
    """What the enforcer may do on its own.

    ``protected`` holds glob patterns never touched, matched against the
    function name (no ``/``), ``account/function`` (one ``/``) or the whole
    context key ``provider/account/region/function/qualifier``. Rate limits
    count throttles created in the last hour, manual ones included.
    ``cooldown_s`` is the least time between two automatic throttles of one
    context. A throttle is released ``release_after_s`` after it took
    effect, or ``recovery_hold_s`` after the alert resolved or the cost rate
    came back within ``near_baseline_ratio`` of its baseline; loops only
    when ``auto_release_loops``. ``evidence_minimums`` maps an evidence
    field to the least value it must have when the alert carries it.
    """

    protected: tuple[str, ...] = ()
    max_actions_per_hour: int = 10
    max_actions_per_hour_per_account: int = 3
    min_severity: str = CRITICAL
    require_evidence: bool = True
    evidence_sources: frozenset[str] = frozenset()
    evidence_minimums: Mapping[str, float] = field(default_factory=dict)
    cooldown_s: float = 900.0
    release_after_s: float | None = 3600.0
    release_on_recovery: bool = True
    recovery_hold_s: float = 300.0
    near_baseline_ratio: float = 1.2
    auto_release_loops: bool = False
    approval: bool = False
    loop_kinds: frozenset[str] = LOOP_KINDS

    def __post_init__(self) -> None:
        for pattern in self.protected:
            if pattern.count("/") not in (0, 1, 4):
                raise ValueError(
                    f"policy protected: pattern {pattern!r} needs 0, 1 or 4 '/'"
                    " (function, account/function or a whole context key)"
                )
        if self.min_severity not in SEVERITY_RANK:
            raise ValueError(
                f"policy min_severity: {self.min_severity!r} is not one of"
                f" {sorted(SEVERITY_RANK)}"
            )
        for name in ("max_actions_per_hour", "max_actions_per_hour_per_account"):
            if getattr(self, name) < 0:
                raise ValueError(f"policy {name}: must be >= 0")
        if self.near_baseline_ratio < 1.0:
            raise ValueError(
                "policy near_baseline_ratio: must be >= 1.0,"
                f" got {self.near_baseline_ratio}"
            )

    def is_protected(self, context: Context) -> bool:
        names = {0: context.function, 1: f"{context.account}/{context.function}"}
        full = "/".join(context)
        return any(
            fnmatch.fnmatchcase(names.get(p.count("/"), full), p)
            for p in self.protected
        )

    def is_loop(self, kind: str) -> bool:
        return kind in self.loop_kinds

    def unqualified(self, transition: Transition) -> str | None:
        """Why this alert is no candidate for enforcement, or None if it is.

        These reasons can change within one alert episode (an escalation),
        so they are not recorded as actions.
        """
        rank = SEVERITY_RANK.get(transition.severity, -1)
        if rank < SEVERITY_RANK[self.min_severity]:
            return f"severity {transition.severity} is below {self.min_severity}"
        evidence = transition.evidence
        source = evidence.get("source")
        if self.require_evidence and not source:
            return "the alert names no evidence source"
        if self.evidence_sources and source not in self.evidence_sources:
            return f"evidence source {source!r} is not trusted"
        for name, least in self.evidence_minimums.items():
            value = evidence.get(name)
            if isinstance(value, (int, float)) and value < least:
                return f"evidence {name}={value} is below {least}"
        return None

    def refusal(
        self,
        context: Context,
        recent: Iterable[ActionRecord],
        now: float,
        *,
        manual: bool = False,
    ) -> Refusal | None:
        """Why a new throttle of ``context`` is refused now, or None.

        ``recent`` must hold at least the records created in the last
        :meth:`lookback_s` seconds. Manual throttles are counted by the rate
        limits but neither limited by them nor by the cooldown.
        """
        if self.is_protected(context):
            return Refusal("protected", "context is protected")
        if manual:
            return None
        counted = [r for r in recent if r.verb == THROTTLE and _counts(r)]
        last_hour = [r for r in counted if r.created_at > now - HOUR_S]
        if len(last_hour) >= self.max_actions_per_hour:
            return Refusal(
                "hourly_limit",
                f"limit of {self.max_actions_per_hour} actions per hour reached",
            )
        in_account = [r for r in last_hour if r.context.account == context.account]
        if len(in_account) >= self.max_actions_per_hour_per_account:
            return Refusal(
                "account_limit",
                f"limit of {self.max_actions_per_hour_per_account} actions per"
                f" hour in account {context.account} reached",
            )
        for r in counted:
            if r.context == context and r.created_at > now - self.cooldown_s:
                return Refusal(
                    "cooldown", f"cooldown of {self.cooldown_s:g} s since action {r.id}"
                )
        return None

    def lookback_s(self) -> float:
        return max(HOUR_S, self.cooldown_s)

    def release_due(self, throttle: ActionRecord) -> float | None:
        """When a throttle is due for automatic release, if ever.

        A throttle that failed half way counts once it changed something
        (its ``previous`` is set); manual throttles wait for a person.
        """
        if throttle.verb != THROTTLE or throttle.outcome.get("manual"):
            return None
        if throttle.state != SUCCEEDED and not (
            throttle.state == FAILED and throttle.previous
        ):
            return None
        if throttle.outcome.get("loop") and not self.auto_release_loops:
            return None
        due: list[float] = []
        if self.release_after_s is not None:
            due.append(throttle.updated_at + self.release_after_s)
        recovered = throttle.outcome.get("recovered_at")
        if self.release_on_recovery and isinstance(recovered, (int, float)):
            due.append(recovered + self.recovery_hold_s)
        return min(due) if due else None

    def near_baseline(self, rate: float, baseline: float) -> bool:
        """Whether a cost rate above zero is back within reach of baseline."""
        return 0 < rate <= baseline * self.near_baseline_ratio


def _counts(rec: ActionRecord) -> bool:
    # A refused or skipped action touched nothing, and neither did a failure
    # that never reached the platform (circuit open); the rest spent budget.
    if rec.state in (REJECTED, SKIPPED):
        return False
    return not (rec.state == FAILED and rec.attempts == 0)
