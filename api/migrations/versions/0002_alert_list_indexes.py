"""Indexes for the alert list: open alerts by time or cost, kind with severity.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: (name, columns) of the indexes this revision adds.
ADDED = [
    ("ix_alerts_status_acked_at_starts_at", ["status", "acked_at", "starts_at"]),
    ("ix_alerts_status_acked_at_cost_usd", ["status", "acked_at", "cost_usd"]),
    ("ix_alerts_status_cost_usd", ["status", "cost_usd"]),
    ("ix_alerts_kind_severity_starts_at", ["kind", "severity", "starts_at"]),
]
#: Indexes that gain the id as the keyset tie-break.
WIDENED = [
    ("ix_alerts_account_starts_at", ["account", "starts_at"]),
    ("ix_alerts_function_starts_at", ["function", "starts_at"]),
]


def upgrade() -> None:
    op.drop_index("ix_alerts_kind", table_name="alerts")
    for name, columns in ADDED:
        op.create_index(name, "alerts", columns)
    for name, columns in WIDENED:
        op.drop_index(name, table_name="alerts")
        op.create_index(name, "alerts", [*columns, "id"])


def downgrade() -> None:
    for name, columns in WIDENED:
        op.drop_index(name, table_name="alerts")
        op.create_index(name, "alerts", columns)
    for name, _ in ADDED:
        op.drop_index(name, table_name="alerts")
    op.create_index("ix_alerts_kind", "alerts", ["kind"])
