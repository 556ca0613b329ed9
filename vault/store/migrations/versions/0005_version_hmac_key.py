"""key_versions.hmac_key: whether a version has its own HMAC object in the HSM.

Transit's ``hmac`` works with every key type, as in Vault: each version of an aes256-gcm96,
ecdsa-p256, ed25519 or rsa-3072 key gets a separate HMAC key (role ``hmac``). Versions made
before have none (false here) and answer 400 until the key is rotated.

Revision ID: 0005
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("key_versions") as batch:
        batch.add_column(
            sa.Column("hmac_key", sa.Boolean, nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("key_versions") as batch:
        batch.drop_column("hmac_key")
