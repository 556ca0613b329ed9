"""Service tokens (single use, revocation), quotas, and the audit chain.

Revision ID: 0006
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_ZERO_HASH = bytes(32)

# PostgreSQL: a batch of audit records appended in one call (vault/store/audit.py). The head
# row's lock is taken first and held only by the server, for these statements and the commit.
# Each body arrives without its first member ``seq`` and its last member ``count``; both are
# written in here, exactly as the Python encoder would write them.
_AUDIT_APPEND = """
CREATE FUNCTION audit_append(
    bodies text[], ats float8[], keys text[], operations text[], prune_through bigint
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    n integer := coalesce(array_length(bodies, 1), 0);
    last_seq bigint;
    previous bytea;
    pair_keys text[];
    pair_operations text[];
    running bigint[];
    seqs bigint[] := '{}';
    texts text[] := '{}';
    hashes bytea[] := '{}';
    body text;
    p integer;
BEGIN
    UPDATE audit_head SET seq = audit_head.seq + n WHERE id = 1
        RETURNING audit_head.seq, audit_head.hash INTO last_seq, previous;
    IF prune_through IS NOT NULL THEN
        DELETE FROM audit_records WHERE audit_records.seq <= prune_through;
        DELETE FROM audit_checkpoints WHERE audit_checkpoints.seq < prune_through;
    END IF;
    -- The batch's requests per key and operation, added to the running counts at once;
    -- ``running`` starts at each pair's count before the batch.
    WITH added AS (
        INSERT INTO audit_counts AS c (key, operation, count)
        SELECT k, o, count(*) FROM unnest(keys, operations) AS u(k, o)
        WHERE k IS NOT NULL GROUP BY k, o
        ON CONFLICT (key, operation) DO UPDATE SET count = c.count + excluded.count
        RETURNING c.key, c.operation, c.count - (
            SELECT count(*) FROM unnest(keys, operations) AS v(k, o)
            WHERE v.k = c.key AND v.o = c.operation
        ) AS before
    )
    SELECT array_agg(key), array_agg(operation), array_agg(before)
        INTO pair_keys, pair_operations, running FROM added;
    FOR i IN 1 .. n LOOP
        body := '{"seq":' || (last_seq - n + i) || ',' || substr(bodies[i], 2);
        IF keys[i] IS NOT NULL THEN
            p := 1;
            WHILE pair_keys[p] <> keys[i] OR pair_operations[p] <> operations[i] LOOP
                p := p + 1;
            END LOOP;
            running[p] := running[p] + 1;
            body := left(body, -1) || ',"count":' || running[p] || '}';
        END IF;
        previous := sha256(previous || convert_to(body, 'UTF8'));
        seqs := seqs || (last_seq - n + i);
        texts := texts || body;
        hashes := hashes || previous;
    END LOOP;
    INSERT INTO audit_records (seq, at, body, hash)
        SELECT * FROM unnest(seqs, ats, texts, hashes);
    UPDATE audit_head SET hash = previous WHERE id = 1;
    RETURN last_seq;
END
$$
"""

# A durability barrier (vault/store/aio.py): a transaction with an id, committed synchronously
# whatever the session says, so its commit flushes the WAL written before it.
_AUDIT_DURABLE = """
CREATE FUNCTION audit_durable() RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('synchronous_commit', 'on', true);
    RETURN txid_current();
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "used_tokens",
        sa.Column("service", sa.String(128), primary_key=True),
        sa.Column("jti", sa.String(256), primary_key=True),
        sa.Column("expires_at", sa.Float, nullable=False, index=True),
    )
    op.create_table(
        "token_revocations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("service", sa.String(128), nullable=False),
        sa.Column("jti", sa.String(256), nullable=True),
        sa.Column("issued_before", sa.Float, nullable=True),
        sa.Column("expires_at", sa.Float, nullable=False, index=True),
        sa.Column("revoked_at", sa.Float, nullable=False),
        sa.Column("actor", sa.String(256), nullable=False),
    )
    generation = op.create_table(
        "revocation_generation",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("generation", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(generation, [{"id": 1, "generation": 0}])
    op.create_table(
        "quota_counters",
        sa.Column("rule", sa.String(128), primary_key=True),
        sa.Column("scope", sa.String(128), primary_key=True),
        sa.Column("window_start", sa.Float, nullable=False),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False, index=True),
    )
    op.create_table(
        "quota_windows",
        sa.Column("rule", sa.String(128), primary_key=True),
        sa.Column("scope", sa.String(128), primary_key=True),
        sa.Column("stamps", sa.LargeBinary, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False, index=True),
    )
    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
    )
    op.bulk_insert(head, [{"id": 1, "seq": 0, "hash": _ZERO_HASH}])
    op.create_table(
        "audit_records",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("prev_seq", sa.BigInteger, nullable=False, unique=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("signature", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "audit_counts",
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("operation", sa.String(64), primary_key=True),
        sa.Column("count", sa.BigInteger, nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_AUDIT_APPEND)
        op.execute(_AUDIT_DURABLE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION audit_durable")
        op.execute("DROP FUNCTION audit_append")
    for table in (
        "audit_counts",
        "audit_checkpoints",
        "audit_records",
        "audit_head",
        "quota_windows",
        "quota_counters",
        "revocation_generation",
        "token_revocations",
        "used_tokens",
    ):
        op.drop_table(table)
