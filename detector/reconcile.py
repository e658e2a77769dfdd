"""Reconciliation of billed cost (CUR, FOCUS, EstimatedCharges) with computed cost.

Billed rows are held per context and period until the computed side of that
period is complete, then compared; a gap beyond the tolerance is a finding.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from detector.alerts import rfc3339
from detector.sources import (
    BILLED,
    BILLING,
    GAP,
    HOUR_S,
    NO_GAP,
    Finding,
    PartitionSources,
    Ring,
    SourceFusion,
    SourceState,
)
from ingest.events import Billing, Context

logger = logging.getLogger(__name__)

ESTIMATED_CHARGES = "estimated_charges"
#: Usage kinds the real-time cost model prices; the others (provisioned
#: concurrency, unknown kinds) are reported beside the gap but not in it.
PRICED_KINDS = frozenset({"requests", "gb_seconds", "storage"})
#: The EstimatedCharges series that is all Lambda (others hold other services).
LAMBDA_CHARGES = "service:AWSLambda"

#: (provider, account, region or "" for all), start, end -> computed USD of
#: the account's contexts and the number of partitions counted.
AccountCost = Callable[[tuple[str, str, str], float, float], tuple[float | None, int]]


@dataclass(slots=True)
class BillingTrack:
    """What was billed for one context, and the periods to compare.

    The priced cost billed per hour is the source state's ``BILLED`` lane;
    ``not_priced`` holds the rest per hour (a daily row is spread over its
    hours); ``queued`` the periods waiting for their comparison, start and
    end of each in a row; ``last`` the latest comparison (start, end,
    billed, computed, not priced), None before the first.
    """

    not_priced: Ring | None = None
    # The first queued period in fields of its own (NaN while none is), the
    # others after it in one flat tuple: a billed context mostly waits for
    # one period, and a tuple of it would cost more than its two numbers.
    next_start: float = math.nan
    next_end: float = math.nan
    later: tuple[float, ...] = ()
    charges: list[tuple[float, float]] | None = None
    # The latest comparison, field by field rather than a tuple of them:
    # every billed context keeps one. NaN before the first.
    last_start: float = math.nan
    last_end: float = math.nan
    last_billed: float = 0.0
    last_computed: float = 0.0
    last_excluded: float = 0.0
    source: str = ""
    gaps: int = 0

    @property
    def queued(self) -> tuple[float, ...]:
        """The periods waiting for their comparison, start and end of each."""
        if math.isnan(self.next_start):
            return ()
        return (self.next_start, self.next_end, *self.later)

    @queued.setter
    def queued(self, queued: tuple[float, ...]) -> None:
        if not queued:
            self.next_start = self.next_end = math.nan
            self.later = ()
            return
        self.next_start, self.next_end = queued[0], queued[1]
        self.later = queued[2:]

    @property
    def last(self) -> tuple[float, float, float, float, float] | None:
        """The latest comparison: start, end, billed, computed, not priced."""
        if math.isnan(self.last_start):
            return None
        return (
            self.last_start,
            self.last_end,
            self.last_billed,
            self.last_computed,
            self.last_excluded,
        )

    @last.setter
    def last(self, last: tuple[float, float, float, float, float] | None) -> None:
        if last is None:
            self.last_start = self.last_end = math.nan
            self.last_billed = self.last_computed = self.last_excluded = 0.0
            return
        start, end, billed, computed, excluded = last
        self.last_start, self.last_end = start, end
        self.last_billed, self.last_computed = billed, computed
        self.last_excluded = excluded

    def __setstate__(self, state: Any) -> None:
        slots: dict[str, Any] = state[1] if isinstance(state, tuple) else state
        if "last_start" not in slots:
            # A checkpoint from when the latest comparison and the queued
            # periods were tuples, each period a (start, end) pair, and the
            # billed sums a ring of this track.
            self.last = None
            self.queued = ()
            queued = slots.get("queued", ())
            if queued and isinstance(queued[0], tuple):
                slots = {**slots, "queued": tuple(t for p in queued for t in p)}
            billed = slots.get("billed")
            if billed is not None:
                _OLD_BILLED[id(self)] = billed
            slots = {name: v for name, v in slots.items() if name != "billed"}
        for name, value in slots.items():
            setattr(self, name, value)


#: Billed rings of tracks restored from a checkpoint from before the billed
#: lane, by track, until the source state they belong to takes them over.
_OLD_BILLED: dict[int, Ring] = {}


def take_old_billed(track: BillingTrack) -> Ring | None:
    """The billed ring a restored track came with, handed over once."""
    return _OLD_BILLED.pop(id(track), None)


class Reconciler:
    """Compares billed with computed cost for the contexts of an engine."""

    def __init__(self, fusion: SourceFusion, partitions: int) -> None:
        self.fusion = fusion
        self.config = fusion.config
        self.partitions = partitions
        self.rejected = 0
        self.uncovered = 0
        self.too_late = 0
        self.compared = 0

    def on_billing(
        self,
        psrc: PartitionSources,
        holder: Any,
        bill: Billing,
        horizon: float,
    ) -> None:
        """Take one billed charge and queue its period for comparison.

        The comparison waits until the computed cost of the period is
        complete and, for rows that arrive after it, a little longer, so
        that all rows of a period (requests, GB-s, storage) are in.
        """
        if not _valid(bill):
            self.rejected += 1
            logger.debug(
                "billing rejected context=%s cost=%r start=%r end=%r",
                "/".join(bill.context),
                bill.cost_usd,
                bill.time,
                bill.end,
            )
            return
        src = self.fusion.state(holder)
        track: BillingTrack | None = src.billing
        if track is None:
            track = src.billing = BillingTrack()
        track.source = bill.source
        if bill.usage_kind == ESTIMATED_CHARGES:
            if holder.context.function != LAMBDA_CHARGES:
                # Totals of every service: nothing computed to compare them with.
                return
            if track.charges is None:
                track.charges = []
            track.charges.append((bill.time, bill.cost_usd))
            track.charges.sort()
            period = (bill.time, bill.time)
        else:
            if bill.usage_kind in PRICED_KINDS:
                kept = src.add_span(bill.time, bill.end, bill.cost_usd, BILLED)
            else:
                if track.not_priced is None:
                    track.not_priced = Ring(HOUR_S, self.config.hours_kept)
                kept = track.not_priced.add_span(bill.time, bill.end, bill.cost_usd)
            if not kept:
                self.too_late += 1
                return
            period = (bill.time, bill.end)
        queued = track.queued
        start, end = period
        for i in range(0, len(queued), 2):
            if queued[i] == start and queued[i + 1] == end:
                return
        track.queued = (*queued, start, end)
        psrc.schedule(max(end, horizon + self.config.billing_settle_s), holder.context)

    def due(
        self,
        psrc: PartitionSources,
        lookup: Callable[[Context], Any],
        horizon: float,
        account_cost: AccountCost,
        force: bool = False,
        account_horizon: float = math.inf,
    ) -> list[tuple[Any, Finding]]:
        """Findings of the contexts whose queued periods became comparable.

        A charge that covers a whole account (EstimatedCharges, or a row
        naming no function) is compared with the contexts of every
        partition, so it waits for ``account_horizon``, the horizon of the
        partition furthest behind: the result must not depend on the order
        in which partitions happen to be read.
        """
        out: list[tuple[Any, Finding]] = []
        due = psrc.due
        retry: list[Context] = []
        while due and (force or due[0][0] <= horizon):
            slot = psrc.take_due()
            for i in range(1, len(slot)):
                context = slot[i]
                holder = lookup(context)
                if holder is None:
                    continue
                wide = account_wide(context)
                upto = horizon if force or not wide else min(horizon, account_horizon)
                for finding in self.due_one(psrc, holder, upto, account_cost):
                    out.append((holder, finding))
                src = holder.sources
                track = src.billing if src is not None else None
                if wide and not force and track is not None and track.queued:
                    retry.append(context)
        for context in retry:
            # Looked at again once this partition's horizon moves on.
            psrc.schedule(horizon + 1.0, context)
        return out

    def due_one(
        self,
        psrc: PartitionSources,
        holder: Any,
        horizon: float,
        account_cost: AccountCost,
    ) -> list[Finding]:
        src: SourceState | None = holder.sources
        track: BillingTrack | None = src.billing if src is not None else None
        if src is None or track is None:
            return []
        findings: list[Finding] = []
        waiting: list[float] = []
        queued = track.queued
        for i in range(0, len(queued), 2):
            start, end = queued[i], queued[i + 1]
            if end > horizon:
                waiting.extend((start, end))
            elif start == end:
                self._charges(psrc, holder, track, horizon, account_cost, findings)
            else:
                self._period(
                    psrc, holder, src, track, start, end, account_cost, findings
                )
        track.queued = tuple(waiting)
        return findings

    def _period(
        self,
        psrc: PartitionSources,
        holder: Any,
        src: SourceState,
        track: BillingTrack,
        start: float,
        end: float,
        account_cost: AccountCost,
        findings: list[Finding],
    ) -> None:
        if start < psrc.since:
            # Limitation: a period begun before the detector watched is skipped.
            self.uncovered += 1
            return
        context: Context = holder.context
        if context.function:
            computed = src.total(start, end)
        else:
            # A row naming no function (a bill without resource ids) is the
            # account's in that region: every context of it is compared.
            key = (context.provider, context.account, context.region)
            computed, seen = account_cost(key, start, end)
            if computed is None and seen == 0:
                self.uncovered += 1
                return
        billed = src.total(start, end, BILLED)
        if computed is None or billed is None:
            self.too_late += 1
            return
        extra = track.not_priced.total(start, end) if track.not_priced else 0.0
        findings.append(
            self._compare(track, start, end, billed, computed, extra or 0.0)
        )

    def _charges(
        self,
        psrc: PartitionSources,
        holder: Any,
        track: BillingTrack,
        horizon: float,
        account_cost: AccountCost,
        findings: list[Finding],
    ) -> None:
        """Compare the rate of change of EstimatedCharges between samples."""
        charges = track.charges
        if charges is None:
            return
        while len(charges) >= 2 and charges[1][0] <= horizon:
            (t1, v1), (t2, v2) = charges[0], charges[1]
            del charges[0]
            if v2 < v1 or t2 <= t1:
                # A month-to-date total that falls has started a new month.
                continue
            if t1 < psrc.since:
                self.uncovered += 1
                continue
            context = holder.context
            # Limitation: a payer's charges include linked accounts not counted here.
            key = (context.provider, context.account, "")
            computed, seen = account_cost(key, t1, t2)
            if computed is None:
                if seen == 0:
                    self.uncovered += 1
                else:
                    self.too_late += 1
                continue
            finding = self._compare(track, t1, t2, v2 - v1, computed, 0.0)
            hours = (t2 - t1) / 3600.0
            finding.evidence.update(
                {
                    "billed_usd_per_hour": round((v2 - v1) / hours, 6),
                    "computed_usd_per_hour": round(computed / hours, 6),
                    "partitions_counted": seen,
                    "partitions": self.partitions,
                }
            )
            findings.append(finding)

    def _compare(
        self,
        track: BillingTrack,
        start: float,
        end: float,
        billed: float,
        computed: float,
        excluded: float,
    ) -> Finding:
        cfg = self.config
        self.compared += 1
        gap = billed - computed
        over = abs(gap) >= cfg.billing_min_usd and abs(gap) > (
            cfg.billing_tolerance * computed
        )
        track.last = (start, end, billed, computed, excluded)
        evidence: dict[str, Any] = {
            "source": BILLING,
            "billing_source": track.source,
            "period": [rfc3339(start), rfc3339(end)],
            "billed_usd": round(billed, 6),
            "computed_usd": round(computed, 6),
            "gap_usd": round(gap, 6),
            "ratio": round(billed / computed, 3) if computed > 0 else None,
            "tolerance": cfg.billing_tolerance,
            "min_gap_usd": cfg.billing_min_usd,
            "not_priced_usd": round(excluded, 6),
        }
        if over:
            track.gaps += 1
            evidence["fired"] = "billed cost differs from computed cost"
            evidence["hint"] = (
                "billed above computed: functions (or invocations) this detector"
                " does not see are being charged"
                if gap > 0
                else "computed above billed: the pricing overstates this function"
                " (architecture, discounts) or the bill is not final"
            )
        kind = GAP if over else NO_GAP
        return Finding(kind, end, cost=max(gap, 0.0), evidence=evidence)

    def last_entry(self, track: BillingTrack) -> dict[str, Any] | None:
        """The billing entry of an alert's per-source evidence."""
        if track.last is None:
            return None
        start, end, billed, computed, excluded = track.last
        return {
            "billing_source": track.source,
            "period": [rfc3339(start), rfc3339(end)],
            "billed_usd": round(billed, 6),
            "computed_usd": round(computed, 6),
            "not_priced_usd": round(excluded, 6),
            "gaps": track.gaps,
        }


def account_wide(context: Context) -> bool:
    """Whether a billed charge covers every context of an account."""
    return not context.function or context.function == LAMBDA_CHARGES


def _valid(bill: Billing) -> bool:
    numbers = (bill.cost_usd, bill.time, bill.end)
    return (
        all(isinstance(n, (int, float)) and math.isfinite(n) for n in numbers)
        and bill.cost_usd >= 0
        and bill.end >= bill.time
    )
