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

# -- service tokens (vault/auth.py) ---------------------------------------------------------

# A single-use token's id, once spent; kept until the token could no longer be accepted.
used_tokens = Table(
    "used_tokens",
    metadata,
    Column("service", String(128), primary_key=True),
    Column("jti", String(256), primary_key=True),
    Column("expires_at", Float, nullable=False, index=True),
)

# Revoked tokens: one token (``jti``), or every token of a service issued before a time.
token_revocations = Table(
    "token_revocations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("service", String(128), nullable=False),
    Column("jti", String(256), nullable=True),
    Column("issued_before", Float, nullable=True),
    Column("expires_at", Float, nullable=False, index=True),
    Column("revoked_at", Float, nullable=False),
    Column("actor", String(256), nullable=False),
)

# One row, bumped with every revocation: replicas poll it (at most once a second) and read
# the list again only when it moved.
revocation_generation = Table(
    "revocation_generation",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("generation", BigInteger, nullable=False),
)

# -- quotas (vault/quotas.py) ---------------------------------------------------------------

# Fixed windows: the count of the current window per rule and scope (a service, or a
# subject's keyed digest).
quota_counters = Table(
    "quota_counters",
    metadata,
    Column("rule", String(128), primary_key=True),
    Column("scope", String(128), primary_key=True),
    Column("window_start", Float, nullable=False),
    Column("count", BigInteger, nullable=False),
    Column("expires_at", Float, nullable=False, index=True),
)

# Sliding windows: the times of the admitted requests still inside the window (big-endian
# IEEE 754 doubles, oldest first), per rule and scope.
quota_windows = Table(
    "quota_windows",
    metadata,
    Column("rule", String(128), primary_key=True),
    Column("scope", String(128), primary_key=True),
    Column("stamps", LargeBinary, nullable=False),
    Column("expires_at", Float, nullable=False, index=True),
)

# -- the audit chain (vault/audit/, docs/audit.md) ------------------------------------------

# One row: the last record's sequence number and hash. Appending locks it, which gives the
# records one global order across replicas.
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", LargeBinary(32), nullable=False),
)

# hash = SHA-256(previous record's hash || body); body is canonical JSON, stored as hashed.
audit_records = Table(
    "audit_records",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("at", Float, nullable=False),
    Column("body", Text, nullable=False),
    Column("hash", LargeBinary(32), nullable=False),
)

# Signed checkpoints over the chain's head; each names the one before it (``prev_seq``, unique:
# two replicas cannot both extend the same checkpoint).
audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("prev_seq", BigInteger, nullable=False, unique=True),
    Column("at", Float, nullable=False),
    Column("body", Text, nullable=False),
    Column("signature", LargeBinary, nullable=False),
)

# Running counts of requests per key and operation (each record carries its own).
audit_counts = Table(
    "audit_counts",
    metadata,
    Column("key", String(128), primary_key=True),
    Column("operation", String(64), primary_key=True),
    Column("count", BigInteger, nullable=False),
)
