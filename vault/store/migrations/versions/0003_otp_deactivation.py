"""OTP seeds can be deactivated for good: ``otp_ledger.deactivated_at`` (NULL while active).

Revision ID: 0003
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("otp_ledger") as table:
        table.add_column(sa.Column("deactivated_at", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("otp_ledger") as table:
        table.drop_column("deactivated_at")
