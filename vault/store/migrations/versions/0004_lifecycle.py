"""Key lifecycle: trim floor, the auto-rotation lease, dual-control approvals.

Revision ID: 0004
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("keys") as batch:
        batch.add_column(
            sa.Column("min_available_version", sa.Integer, nullable=False, server_default="0")
        )
    op.create_table(
        "leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    op.create_table(
        "approval_requests",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(128), nullable=False),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("requested_by", sa.String(128), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("executed_at", sa.Float, nullable=True),
        sa.Column("executed_by", sa.String(160), nullable=True),
    )
    op.create_table(
        "approvals",
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("officer", sa.String(128), primary_key=True),
        sa.Column("signature", sa.LargeBinary(512), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.ForeignKeyConstraint(["request_id"], ["approval_requests.id"], ondelete="CASCADE"),
    )


def downgrade() -> None:
    op.drop_table("approvals")
    op.drop_table("approval_requests")
    op.drop_table("leases")
    with op.batch_alter_table("keys") as batch:
        batch.drop_column("min_available_version")
