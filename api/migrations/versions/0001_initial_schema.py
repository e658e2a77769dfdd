"""Initial schema: alerts and their history, checkpoints, functions, users' data.

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json(name: str) -> sa.Column[object]:
    kind = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    return sa.Column(name, kind, nullable=False)


def _time(name: str, nullable: bool = False) -> sa.Column[float]:
    return sa.Column(name, sa.Double(), nullable=nullable)


def _text(name: str, length: int, nullable: bool = False) -> sa.Column[str]:
    return sa.Column(name, sa.String(length=length), nullable=nullable)


def _context() -> list[sa.Column[str]]:
    return [
        _text("context_key", 1024),
        _text("provider", 64),
        _text("account", 128),
        _text("region", 64),
        _text("function", 256),
        _text("qualifier", 128),
    ]


def _index(table: str, *columns: str, name: str | None = None) -> None:
    op.create_index(name or f"ix_{table}_{'_'.join(columns)}", table, list(columns))


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), nullable=False),
        _text("fingerprint", 32),
        _text("kind", 64),
        _text("severity", 16),
        _text("status", 16),
        _json("labels"),
        _json("annotations"),
        _json("evidence"),
        sa.Column("cost_usd", sa.Double(), nullable=False),
        _time("starts_at"),
        _time("ends_at", nullable=True),
        _time("updated_at"),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        _text("last_event", 16),
        _time("acked_at", nullable=True),
        _text("acked_by", 256, nullable=True),
        _text("resolved_by", 256, nullable=True),
        *_context(),
        sa.PrimaryKeyConstraint("id", name="pk_alerts"),
        sa.UniqueConstraint("fingerprint", name="uq_alerts_fingerprint"),
    )
    _index("alerts", "context_key")
    _index("alerts", "kind")
    _index("alerts", "severity")
    _index("alerts", "starts_at", "id")
    _index("alerts", "cost_usd", "id")
    _index("alerts", "status", "starts_at")
    _index("alerts", "account", "starts_at")
    _index("alerts", "function", "starts_at")

    op.create_table(
        "alert_transitions",
        sa.Column("id", sa.Integer(), nullable=False),
        _text("fingerprint", 32),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        _text("event", 16),
        _time("at"),
        _json("payload"),
        _time("stored_at"),
        sa.PrimaryKeyConstraint("id", name="pk_alert_transitions"),
        sa.UniqueConstraint(
            "fingerprint", "seq", name="uq_alert_transitions_fingerprint_seq"
        ),
    )
    _index("alert_transitions", "fingerprint")

    op.create_table(
        "checkpoints",
        _text("consumer_group", 255),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("state", sa.LargeBinary(), nullable=False),
        _json("offsets"),
        _time("updated_at"),
        sa.PrimaryKeyConstraint("consumer_group", "partition", name="pk_checkpoints"),
    )

    op.create_table(
        "function_status",
        sa.Column("id", sa.Integer(), nullable=False),
        _time("updated_at"),
        sa.Column("cost_usd_per_hour", sa.Double(), nullable=False),
        sa.Column("baseline_usd_per_hour", sa.Double(), nullable=False),
        sa.Column("invocations_per_s", sa.Double(), nullable=False),
        sa.Column("open_alerts", sa.Integer(), nullable=False),
        _text("enforcement_action_id", 64, nullable=True),
        _text("enforcement_verb", 16, nullable=True),
        _text("enforcement_state", 32, nullable=True),
        _time("enforcement_at", nullable=True),
        *_context(),
        sa.PrimaryKeyConstraint("id", name="pk_function_status"),
        sa.UniqueConstraint("context_key", name="uq_function_status_context_key"),
    )
    _index("function_status", "cost_usd_per_hour")

    op.create_table(
        "comments",
        sa.Column("id", sa.Integer(), nullable=False),
        _text("fingerprint", 32),
        _text("action", 16),
        _text("author", 256),
        sa.Column("body", sa.Text(), nullable=False),
        _time("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_comments"),
    )
    _index("comments", "fingerprint")

    op.create_table(
        "silences",
        _text("id", 32),
        _json("matchers"),
        _time("starts_at"),
        _time("ends_at"),
        _text("created_by", 256),
        sa.Column("comment", sa.Text(), nullable=False),
        _time("created_at"),
        _time("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_silences"),
    )
    _index("silences", "ends_at")

    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        _text("name", 256),
        _text("key_hash", 64),
        _text("role", 16),
        _time("created_at"),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    )

    op.create_table(
        "actions",
        _text("id", 64),
        _text("key", 512),
        _text("fingerprint", 32),
        _text("verb", 16),
        _text("hook", 64),
        _text("state", 32),
        sa.Column("reason", sa.Text(), nullable=False),
        _time("created_at"),
        _time("updated_at"),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _json("previous"),
        _json("outcome"),
        *_context(),
        sa.PrimaryKeyConstraint("id", name="pk_actions"),
        sa.UniqueConstraint("key", name="uq_actions_key"),
    )
    _index("actions", "context_key")
    _index("actions", "created_at")
    _index("actions", "fingerprint")
    _index("actions", "state")


def downgrade() -> None:
    for table in (
        "actions",
        "api_keys",
        "silences",
        "comments",
        "function_status",
        "checkpoints",
        "alert_transitions",
        "alerts",
    ):
        op.drop_table(table)
