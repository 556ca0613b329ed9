"""Initial schema: keys, versions, nonce prefixes, OTP ledger, seen partner messages.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "keys",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("latest_version", sa.Integer, nullable=False),
        sa.Column("min_decryption_version", sa.Integer, nullable=False),
        sa.Column("min_encryption_version", sa.Integer, nullable=False),
        sa.Column("deletion_allowed", sa.Boolean, nullable=False),
        sa.Column("auto_rotate_period", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "key_versions",
        sa.Column("key_name", sa.String(128), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("hsm_id", sa.LargeBinary(32), nullable=False, unique=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.ForeignKeyConstraint(["key_name"], ["keys.name"], ondelete="CASCADE"),
    )
    op.create_table(
        "nonce_prefixes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("owner", sa.String(128), nullable=False),
    )
    op.create_table(
        "otp_ledger",
        sa.Column("seed_id", sa.LargeBinary(32), primary_key=True),
        sa.Column("key_name", sa.String(128), nullable=False),
        sa.Column("last_position", sa.BigInteger, nullable=False),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("locked_until", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "seen_messages",
        sa.Column("partner", sa.String(128), primary_key=True),
        sa.Column("message_id", sa.String(128), primary_key=True),
        sa.Column("expires_at", sa.Float, nullable=False, index=True),
    )


def downgrade() -> None:
    for table in ("seen_messages", "otp_ledger", "nonce_prefixes", "key_versions", "keys"):
        op.drop_table(table)
