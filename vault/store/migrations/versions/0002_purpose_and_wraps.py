"""Key purposes and wrap counts; no nonce prefixes any more.

- ``keys.purpose``: the one job a key is for. Existing keys get their type's default
  (``encryption``, ``mac``, ``signing`` or ``otp``); a key that decrypts or agrees keys for
  partners is given its purpose by an officer (README: "Upgrading").
- ``key_versions.wraps``: data keys wrapped under the version (the random-IV bound).
- ``nonce_prefixes`` is dropped: wrap IVs are random, nothing in the database takes part.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Each type's default purpose (vault/keytypes.py), frozen here as of this revision.
_DEFAULT_PURPOSE = {
    "aes256-gcm96": "encryption",
    "hmac": "mac",
    "ecdsa-p256": "signing",
    "ed25519": "signing",
    "rsa-3072": "signing",
    "otp-seed": "otp",
}


def upgrade() -> None:
    with op.batch_alter_table("keys") as batch:
        batch.add_column(sa.Column("purpose", sa.String(32), nullable=False, server_default=""))
    keys = sa.table("keys", sa.column("type", sa.String), sa.column("purpose", sa.String))
    for type_name, purpose in _DEFAULT_PURPOSE.items():
        op.execute(keys.update().where(keys.c.type == type_name).values(purpose=purpose))
    with op.batch_alter_table("keys") as batch:
        batch.alter_column("purpose", server_default=None, existing_type=sa.String(32))
    with op.batch_alter_table("key_versions") as batch:
        batch.add_column(
            sa.Column("wraps", sa.BigInteger, nullable=False, server_default=sa.text("0"))
        )
    op.drop_table("nonce_prefixes")


def downgrade() -> None:
    op.create_table(
        "nonce_prefixes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("owner", sa.String(128), nullable=False),
    )
    with op.batch_alter_table("key_versions") as batch:
        batch.drop_column("wraps")
    with op.batch_alter_table("keys") as batch:
        batch.drop_column("purpose")
