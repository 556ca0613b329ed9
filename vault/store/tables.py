"""The tables. The database holds key metadata and ledgers, never key material."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKeyConstraint,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    false,
)

metadata = MetaData()

keys = Table(
    "keys",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("type", String(32), nullable=False),
    Column("latest_version", Integer, nullable=False),
    Column("min_decryption_version", Integer, nullable=False, default=1),
    Column("min_encryption_version", Integer, nullable=False, default=0),
    Column("deletion_allowed", Boolean, nullable=False, default=False),
    Column("auto_rotate_period", Integer, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    # Vault's trim floor: versions below it are gone from the registry and the HSM.
    Column("min_available_version", Integer, nullable=False, default=0, server_default="0"),
    # The one job the key is for (vault/keytypes.py: Purpose); its HSM objects can do no other.
    Column("purpose", String(32), nullable=False),
)

key_versions = Table(
    "key_versions",
    metadata,
    Column("key_name", String(128), primary_key=True),
    Column("version", Integer, primary_key=True),
    # CKA_ID of the version's HSM object(s); a role suffix names each object of a version.
    Column("hsm_id", LargeBinary(32), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
    # The version has its own HMAC object (role "hmac"); rows from before it existed do not.
    Column("hmac_key", Boolean, nullable=False, default=False, server_default=false()),
    # Data keys wrapped under the version so far, as the replicas have reported them: what
    # forces a rotation well before SP 800-38D §8.3's 2^32 random IVs (vault/usage.py).
    Column("wraps", BigInteger, nullable=False, default=0),
    ForeignKeyConstraint(["key_name"], ["keys.name"], ondelete="CASCADE"),
)

# One row per provisioned OTP seed: the last accepted position, the failure count, and
# when the seed was deactivated for good (NULL while it is active).
otp_ledger = Table(
    "otp_ledger",
    metadata,
    Column("seed_id", LargeBinary(32), primary_key=True),
    Column("key_name", String(128), nullable=False),
    Column("last_position", BigInteger, nullable=False, default=-1),
    Column("failures", Integer, nullable=False, default=0),
    Column("locked_until", Float, nullable=False, default=0.0),
    Column("updated_at", Float, nullable=False),
    Column("deactivated_at", Float, nullable=True),
)

# Message ids of opened partner messages, kept until they could no longer pass the clock check.
seen_messages = Table(
    "seen_messages",
    metadata,
    Column("partner", String(128), primary_key=True),
    Column("message_id", String(128), primary_key=True),
    Column("expires_at", Float, nullable=False, index=True),
)

# Work one process of all replicas does at a time (automatic rotation): whoever holds the
# row until ``expires_at`` does it; the others find it held and do nothing.
leases = Table(
    "leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(128), nullable=False),
    Column("expires_at", Float, nullable=False),
)

# Dual control: an action that two officers must approve (vault/approvals.py). ``params`` is
# the canonical JSON of the action's parameters; the officers sign the whole description.
approval_requests = Table(
    "approval_requests",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("action", String(64), nullable=False),
    Column("target", String(128), nullable=False),
    Column("params", Text, nullable=False),
    Column("requested_by", String(128), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("executed_at", Float, nullable=True),
    Column("executed_by", String(160), nullable=True),
)

approvals = Table(
    "approvals",
    metadata,
    Column("request_id", String(64), primary_key=True),
    Column("officer", String(128), primary_key=True),
    Column("signature", LargeBinary(512), nullable=False),
    Column("created_at", Float, nullable=False),
    ForeignKeyConstraint(["request_id"], ["approval_requests.id"], ondelete="CASCADE"),
)
