"""The account shares table: each partition's spend of each budgeted account.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _double(name: str) -> sa.Column[float]:
    return sa.Column(name, sa.Double(), nullable=False)


def upgrade() -> None:
    json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    op.create_table(
        "account_shares",
        sa.Column("consumer_group", sa.String(length=255), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("account", sa.String(length=128), nullable=False),
        *(
            _double(name)
            for name in (
                "day_end",
                "day_cost",
                "month_start",
                "month_end",
                "month_cost",
                "bucket",
            )
        ),
        sa.Column("buckets", json, nullable=False),
        _double("first"),
        _double("watermark"),
        sa.Column("alert", json, nullable=True),
        _double("updated_at"),
        sa.PrimaryKeyConstraint(
            "consumer_group",
            "partition",
            "provider",
            "account",
            name="pk_account_shares",
        ),
    )


def downgrade() -> None:
    op.drop_table("account_shares")
