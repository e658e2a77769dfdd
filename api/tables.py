"""The SQL schema: alerts and their history, checkpoints, functions, users' data.

Times are epoch seconds (UTC) stored as doubles, as everywhere in dowguard:
they compare and sort the same on SQLite and PostgreSQL, and keyset cursors
built from them round-trip exactly.
"""

from __future__ import annotations

from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Double,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: JSON documents; JSONB on PostgreSQL so they can be indexed later.
JsonDoc = JSON().with_variant(JSONB(), "postgresql")

#: The alert status the detector sets.
FIRING = "firing"
RESOLVED = "resolved"

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JsonDoc,
        list[Any]: JsonDoc,
        float: Double(),
    }


class ContextColumns:
    """The five parts of a function context, and their joined key."""

    context_key: Mapped[str] = mapped_column(String(1024), index=True)
    provider: Mapped[str] = mapped_column(String(64))
    account: Mapped[str] = mapped_column(String(128))
    region: Mapped[str] = mapped_column(String(64))
    function: Mapped[str] = mapped_column(String(256))
    qualifier: Mapped[str] = mapped_column(String(128))


class AlertRow(ContextColumns, Base):
    """One alert per fingerprint; a new episode reuses and resets the row.

    ``status`` is what the detector says (firing or resolved); ``acked_*`` and
    ``resolved_by`` are what people did. Silences are not stored here: they
    apply by their matchers when alerts are read.
    """

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(32), unique=True)
    kind: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16), index=True)
    status: Mapped[str] = mapped_column(String(16))
    labels: Mapped[dict[str, Any]]
    annotations: Mapped[dict[str, Any]]
    evidence: Mapped[dict[str, Any]]
    cost_usd: Mapped[float]
    starts_at: Mapped[float]
    ends_at: Mapped[float | None]
    updated_at: Mapped[float]
    last_seq: Mapped[int] = mapped_column(BigInteger)
    last_event: Mapped[str] = mapped_column(String(16))
    acked_at: Mapped[float | None]
    acked_by: Mapped[str | None] = mapped_column(String(256))
    resolved_by: Mapped[str | None] = mapped_column(String(256))

    # Keyset pagination wants an index per filter and sort order, ending in
    # the sort column (and id, the tie-break); the ones here serve the
    # listings people use most: by time or cost, open ones, one account or
    # function. Counting the open ones reads only (status, acked_at).
    __table_args__ = (
        Index("ix_alerts_starts_at_id", "starts_at", "id"),
        Index("ix_alerts_cost_usd_id", "cost_usd", "id"),
        Index("ix_alerts_status_acked_at_starts_at", "status", "acked_at", "starts_at"),
        Index("ix_alerts_status_acked_at_cost_usd", "status", "acked_at", "cost_usd"),
        Index("ix_alerts_status_starts_at", "status", "starts_at"),
        Index("ix_alerts_status_cost_usd", "status", "cost_usd"),
        Index("ix_alerts_kind_severity_starts_at", "kind", "severity", "starts_at"),
        Index("ix_alerts_account_starts_at", "account", "starts_at", "id"),
        Index("ix_alerts_function_starts_at", "function", "starts_at", "id"),
    )


class TransitionRow(Base):
    """Every transition the detector emitted, once (the alert's history)."""

    __tablename__ = "alert_transitions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(32), index=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    event: Mapped[str] = mapped_column(String(16))
    at: Mapped[float]
    payload: Mapped[dict[str, Any]]
    stored_at: Mapped[float]

    __table_args__ = (UniqueConstraint("fingerprint", "seq"),)


class CheckpointRow(Base):
    """Detector state of one partition number for one consumer group."""

    __tablename__ = "checkpoints"

    consumer_group: Mapped[str] = mapped_column(String(255), primary_key=True)
    partition: Mapped[int] = mapped_column(Integer, primary_key=True)
    state: Mapped[bytes] = mapped_column(LargeBinary)
    offsets: Mapped[dict[str, Any]]
    updated_at: Mapped[float]


class AccountShareRow(Base):
    """One partition's spend of one account with a budget, for one group.

    Written with the partition's checkpoint, in the same transaction, and
    read by the daemons of the group that hold the other partitions.
    """

    __tablename__ = "account_shares"

    consumer_group: Mapped[str] = mapped_column(String(255), primary_key=True)
    partition: Mapped[int] = mapped_column(Integer, primary_key=True)
    provider: Mapped[str] = mapped_column(String(64), primary_key=True)
    account: Mapped[str] = mapped_column(String(128), primary_key=True)
    day_end: Mapped[float]
    day_cost: Mapped[float]
    month_start: Mapped[float]
    month_end: Mapped[float]
    month_cost: Mapped[float]
    bucket: Mapped[float]
    buckets: Mapped[list[Any]]
    first: Mapped[float]
    watermark: Mapped[float]
    # The account alert as the partition last saw it: {seq, open, starts_at,
    # cost}, or None before the account had one.
    alert: Mapped[dict[str, Any] | None]
    updated_at: Mapped[float]


class FunctionRow(ContextColumns, Base):
    """A tracked function context: the detector's figures and enforcement."""

    __tablename__ = "function_status"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    context_key: Mapped[str] = mapped_column(String(1024), unique=True)
    updated_at: Mapped[float]
    cost_usd_per_hour: Mapped[float] = mapped_column(index=True)
    baseline_usd_per_hour: Mapped[float]
    invocations_per_s: Mapped[float]
    open_alerts: Mapped[int] = mapped_column(Integer)
    enforcement_action_id: Mapped[str | None] = mapped_column(String(64))
    enforcement_verb: Mapped[str | None] = mapped_column(String(16))
    enforcement_state: Mapped[str | None] = mapped_column(String(32))
    enforcement_at: Mapped[float | None]


class CommentRow(Base):
    """A note a person left on an alert, alone or with an ack or a resolve."""

    __tablename__ = "comments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(32), index=True)
    action: Mapped[str] = mapped_column(String(16))
    author: Mapped[str] = mapped_column(String(256))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float]


class SilenceRow(Base):
    """Matchers over alert labels that mute alerts from starts_at to ends_at."""

    __tablename__ = "silences"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    matchers: Mapped[list[Any]]
    starts_at: Mapped[float]
    ends_at: Mapped[float] = mapped_column(index=True)
    created_by: Mapped[str] = mapped_column(String(256))
    comment: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float]
    updated_at: Mapped[float]


class ApiKeyRow(Base):
    """An API key, stored only as the SHA-256 of the secret."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[float]
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class ActionRow(ContextColumns, Base):
    """One enforcement action (throttle or release) and how it went."""

    __tablename__ = "actions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(512), unique=True)
    fingerprint: Mapped[str] = mapped_column(String(32), index=True)
    verb: Mapped[str] = mapped_column(String(16))
    hook: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(32), index=True)
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(index=True)
    updated_at: Mapped[float]
    attempts: Mapped[int] = mapped_column(Integer)
    previous: Mapped[dict[str, Any]]
    outcome: Mapped[dict[str, Any]]
