"""Alert transitions as the detector emits them, and where they are stored.

An alert is identified by a fingerprint of its labels (the function context
and the alert kind), as in Alertmanager. The detector emits a transition
each time an alert opens, changes or resolves; ``seq`` numbers the
transitions of one fingerprint so that storing one twice is a no-op.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from ingest.events import Context

OPENED = "opened"
UPDATED = "updated"
RESOLVED = "resolved"

#: "Look at this": shown and forwarded, never enforced.
WARNING = "warning"
#: "Stop this": the only severity an enforcement hook may act on.
CRITICAL = "critical"
SEVERITY_RANK = {"info": 0, WARNING: 1, CRITICAL: 2}

ALERT_NAME = "DenialOfWallet"


def alert_labels(context: Context, kind: str) -> dict[str, str]:
    """The identity labels of an alert, Alertmanager style."""
    return {
        "alertname": ALERT_NAME,
        "kind": kind,
        "provider": context.provider,
        "account": context.account,
        "region": context.region,
        "function": context.function,
        "qualifier": context.qualifier,
    }


def fingerprint(context: Context, kind: str) -> str:
    """A stable 16-hex-digit hash of the sorted label set."""
    labels = alert_labels(context, kind)
    text = "\x1f".join(f"{k}\x1e{labels[k]}" for k in sorted(labels))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def rfc3339(ts: float) -> str:
    """Format an epoch time as RFC 3339 in UTC with milliseconds."""
    moment = datetime.fromtimestamp(ts, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class Transition:
    """One change of one alert: opened, updated or resolved, at event time."""

    event: str
    fingerprint: str
    kind: str
    severity: str
    context: Context
    starts_at: float
    at: float
    seq: int
    cost_usd: float
    summary: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The stable JSON shape of a transition (replay --json, the API)."""
        return {
            "event": self.event,
            "fingerprint": self.fingerprint,
            "kind": self.kind,
            "severity": self.severity,
            "context": self.context._asdict(),
            "starts_at": rfc3339(self.starts_at),
            "at": rfc3339(self.at),
            "seq": self.seq,
            "cost_usd": round(self.cost_usd, 6),
            "summary": self.summary,
            "evidence": self.evidence,
        }


class AlertState(Protocol):
    """What a detector keeps of one alert's lifecycle to report a transition."""

    @property
    def fingerprint(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def severity(self) -> str: ...
    @property
    def starts_at(self) -> float: ...
    @property
    def seq(self) -> int: ...
    @property
    def cost(self) -> float: ...


def transition_of(
    alert: AlertState,
    event: str,
    context: Context,
    at: float,
    summary: str,
    evidence: dict[str, Any],
    severity: str | None = None,
) -> Transition:
    """The transition ``event`` of ``alert`` at ``at``, with its current seq."""
    return Transition(
        event,
        alert.fingerprint,
        alert.kind,
        alert.severity if severity is None else severity,
        context,
        alert.starts_at,
        at,
        alert.seq,
        alert.cost,
        summary,
        evidence,
    )


@dataclass(frozen=True, slots=True)
class StoredShare:
    """What one partition's contexts spent of one account with a budget.

    It is stored with its partition's checkpoint, so that daemons holding
    other partitions judge the account on the whole spend. The day and
    month are given by their ends (``month_start`` too); ``buckets`` are
    the spend of the recent-rate buckets up to the one starting at
    ``bucket``, oldest first; ``first`` is the account's first bucket;
    ``watermark`` the event time the partition was read up to. ``alert``
    is the account alert as the partition last saw it: its seq, whether
    open, its start and its cost so far (None: no alert yet).
    """

    partition: int
    provider: str
    account: str
    day_end: float
    day_cost: float
    month_start: float
    month_end: float
    month_cost: float
    bucket: float
    buckets: tuple[float, ...]
    first: float
    watermark: float
    alert: AccountAlert | None = None


@dataclass(frozen=True, slots=True)
class AccountAlert:
    """The lifecycle fields of an account alert that travel with a share."""

    seq: int
    open: bool
    starts_at: float
    cost: float


@dataclass(slots=True)
class Checkpoint:
    """Detector state of one partition number and the offsets it covers.

    ``offsets`` maps a topic name to the next offset to read in that
    partition; ``state`` is an opaque snapshot the detector restores;
    ``shares`` are the partition's account shares, stored beside it in the
    same transaction for the daemons that hold other partitions (they are
    read back with ``load_shares``, not with the checkpoint).
    """

    partition: int
    state: bytes
    offsets: dict[str, int]
    shares: tuple[StoredShare, ...] = ()


@dataclass(slots=True)
class FunctionStatus:
    """What the detector currently knows of one tracked function context."""

    context: Context
    updated_at: float
    cost_usd_per_hour: float
    baseline_usd_per_hour: float
    invocations_per_s: float
    open_alerts: int = 0


class AlertSink(Protocol):
    """Where the daemon and replay store their effects, atomically."""

    def commit(
        self,
        transitions: Sequence[Transition],
        checkpoints: Mapping[int, Checkpoint] | None = None,
        group: str = "",
    ) -> None:
        """Store transitions and checkpoints in one transaction.

        A checkpoint's account shares replace those stored for its
        partition number, in the same transaction.

        A transition whose (fingerprint, seq) is already stored is skipped,
        so redelivered effects are no-ops.
        """

    def load_checkpoint(self, group: str, partition: int) -> Checkpoint | None:
        """The last checkpoint committed for a partition number, if any."""

    def load_shares(self, group: str) -> list[StoredShare]:
        """The account shares stored with the checkpoints of ``group``."""

    def update_functions(self, rows: Sequence[FunctionStatus]) -> None:
        """Upsert the current status of tracked contexts (for the API)."""
