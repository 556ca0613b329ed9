"""The audit chain behind a real server: every request leaves its record before the answer
(and fails closed when it cannot), key changes made through the API and the officers' tool
are in the chain with who made them, and ``hsm-vault audit verify``/``export`` work on it."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.e2e.trust_support import audit_records, b64, record_of, servers, share_ad, with_keys
from vault.store import make_engine

pytestmark = pytest.mark.e2e
HSM_VAULT = str(Path(sys.executable).parent / "hsm-vault")
ENCRYPT = "/v1/transit/encrypt/backup-share"


def cli(*args: str, officer: str = "alice", **env: str) -> subprocess.CompletedProcess[str]:
    """``hsm-vault ARGS`` as the dev officer ``officer``."""
    key = Path(os.environ["VAULT_VAR_DIR"]) / "dev-officers" / f"{officer}.pem"
    return subprocess.run(
        [HSM_VAULT, *args],
        env={**os.environ, "VAULT_OFFICER_KEY": str(key), **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_every_request_leaves_one_record_before_its_answer(server, settings) -> None:  # type: ignore[no-untyped-def]
    with server.client("backup-service") as c:
        ok = c.post(ENCRYPT, json={"plaintext": b64(b"x"), "associated_data": share_ad("u-1")})
        forbidden = c.post("/v1/transit/encrypt/payout-digest", json={"plaintext": b64(b"x")})
        bad = c.post(ENCRYPT, json={"plaintext": "not base64!"})
        unknown = c.get("/v1/transit/nowhere")
    for response, status in ((ok, 200), (forbidden, 403), (bad, 400), (unknown, 404)):
        assert response.status_code == status
        # No wait: the record is committed before the answer leaves.
        record = record_of(settings.database_url, response)
        assert record["status"] == status
    first = record_of(settings.database_url, ok)
    assert first["service"] == "backup-service"
    assert (first["operation"], first["key"], first["key_version"]) == (
        "encrypt",
        "backup-share",
        1,
    )
    assert first["client"] == "127.0.0.1"
    assert first["count"] >= 1
    assert len(first["subjects"]) == 1
    assert record_of(settings.database_url, forbidden)["error"] == "Forbidden"
    with server.client(None) as anonymous:  # probes are not audited
        probe = anonymous.get("/v1/sys/health")
    assert not [
        r
        for r in audit_records(settings.database_url)
        if r.get("request_id") == probe.headers["x-request-id"]
    ]


def test_key_changes_are_in_the_chain_with_who_made_them(server, settings) -> None:  # type: ignore[no-untyped-def]
    name = f"events-{uuid.uuid4().hex[:8]}"
    with server.client("security-officer") as officer:
        assert officer.post(f"/v1/transit/keys/{name}").status_code == 200
        assert officer.post(f"/v1/transit/keys/{name}/rotate").status_code == 200
        assert (
            officer.post(
                f"/v1/transit/keys/{name}/config", json={"deletion_allowed": True}
            ).status_code
            == 200
        )
        request = cli("approvals", "request", "key.delete", name).stdout.strip()
        assert cli("approvals", "approve", request, officer="bob").returncode == 0
        deleted = officer.delete(f"/v1/transit/keys/{name}", headers={"X-Vault-Approval": request})
        assert deleted.status_code == 204, deleted.text
    by_cli = f"cli-events-{uuid.uuid4().hex[:8]}"
    made = cli("keys", "create", by_cli, "--type", "aes256-gcm96")
    assert made.returncode == 0, made.stderr
    assert cli("keys", "rotate", by_cli, officer="bob").returncode == 0
    records = [r for r in audit_records(settings.database_url) if r["type"] == "event"]
    events = [
        (r["event"], r["actor"], r.get("key_version"))
        for r in records
        if r.get("key") in (name, by_cli) and r["event"].startswith("key.")
    ]
    assert events == [
        ("key.create", "service:security-officer", 1),
        ("key.rotate", "service:security-officer", 2),
        ("key.config", "service:security-officer", None),
        ("key.delete", "service:security-officer", None),
        ("key.create", "officer:alice", 1),
        ("key.rotate", "officer:bob", 2),
    ]
    approvals = [
        (r["event"], r["actor"])
        for r in records
        if r.get("key") == name and r["event"].startswith("approval.")
    ]
    assert approvals == [("approval.request", "officer:alice"), ("approval.grant", "officer:bob")]


def test_the_officers_verify_and_export_the_chain(server, settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with server.client("backup-service") as c:
        for i in range(5):
            c.post(ENCRYPT, json={"plaintext": b64(b"x"), "associated_data": share_ad(f"u-{i}")})
    signed = cli("audit", "checkpoint")
    assert signed.returncode == 0, signed.stderr
    verified = cli("audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.strip().endswith("OK")
    exported = cli("audit", "export", str(tmp_path / "export"))
    assert exported.returncode == 0, exported.stderr
    offline = cli("audit", "verify", "--export", str(tmp_path / "export"))
    assert offline.returncode == 0, offline.stdout
    # An edit the officers' verify names.
    engine = make_engine(settings.database_url)
    try:
        with engine.begin() as conn:
            seq, body = conn.execute(
                text("SELECT seq, body FROM audit_records ORDER BY seq LIMIT 1 OFFSET 3")
            ).one()
            conn.execute(
                text("UPDATE audit_records SET body = :b WHERE seq = :s"),
                {"b": body.replace('"type"', '"typ"'), "s": seq},
            )
        verified = cli("audit", "verify")
        assert verified.returncode == 1
        assert f"record {seq}: edited" in verified.stdout
    finally:
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE audit_records SET body = :b WHERE seq = :s"), {"b": body, "s": seq}
            )
        engine.dispose()
    assert cli("audit", "verify").returncode == 0


# -- fail closed ----------------------------------------------------------------------------

_READ_ONLY = {
    "sqlite": [
        "CREATE TRIGGER audit_read_only BEFORE INSERT ON audit_records "
        "BEGIN SELECT RAISE(ABORT, 'audit is read-only'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION audit_read_only() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'audit is read-only'; END $$",
        "CREATE TRIGGER audit_read_only BEFORE INSERT ON audit_records "
        "FOR EACH ROW EXECUTE FUNCTION audit_read_only()",
    ],
}


def _run(url: str, statements: list[str]) -> None:
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(text(statement))
    finally:
        engine.dispose()


def test_with_the_audit_unwritable_every_request_fails_closed(settings, database_url: str) -> None:  # type: ignore[no-untyped-def]
    with_keys(settings, database_url)
    dialect = "postgresql" if database_url.startswith("postgresql") else "sqlite"
    with servers(settings, database_url, count=1) as (replica,):
        ad = share_ad("u-closed")
        with replica.client("backup-service") as c:
            made = c.post(ENCRYPT, json={"plaintext": b64(b"x"), "associated_data": ad})
            assert made.status_code == 200
            ciphertext = made.json()["data"]["ciphertext"]
            _run(database_url, _READ_ONLY[dialect])
            answers = [
                c.post(ENCRYPT, json={"plaintext": b64(b"x"), "associated_data": ad}),
                c.post(
                    "/v1/transit/decrypt/backup-share",
                    json={"ciphertext": ciphertext, "associated_data": ad},
                ),
                c.post("/v1/transit/datakey/plaintext/backup-share", json={}),
                c.post("/v1/transit/encrypt/payout-digest", json={"plaintext": b64(b"x")}),
            ]
        with replica.client("security-officer") as officer:
            answers.append(officer.get("/v1/transit/keys/backup-share"))
            answers.append(officer.post(f"/v1/transit/keys/closed-{uuid.uuid4().hex[:6]}"))
        with replica.client(None) as anonymous:
            answers.append(anonymous.post(ENCRYPT, json={"plaintext": b64(b"x")}))
            answers.append(anonymous.get("/v1/transit/nowhere"))
            assert anonymous.get("/v1/sys/live").status_code == 200  # the process lives on
        for answer in answers:
            assert answer.status_code == 503, (answer.request.url, answer.status_code, answer.text)
            assert "plaintext" not in answer.text
            assert "ciphertext" not in answer.text
        _run(
            database_url,
            [
                "DROP TRIGGER audit_read_only"
                + (" ON audit_records" if dialect == "postgresql" else "")
            ],
        )
        with replica.client("backup-service") as c:  # and it recovers by itself
            again = c.post(ENCRYPT, json={"plaintext": b64(b"x"), "associated_data": ad})
        assert again.status_code == 200
        assert record_of(database_url, again)["status"] == 200


@pytest.mark.postgres
def test_two_replicas_write_one_chain(settings, pg_database: str) -> None:  # type: ignore[no-untyped-def]
    """Concurrent requests on two server processes: one global order, verified end to end."""
    with_keys(settings, pg_database)
    env = {"VAULT_DATABASE_URL": pg_database}
    with servers(settings, pg_database) as replicas:
        body = {"plaintext": b64(b"x"), "associated_data": share_ad("u-order")}
        clients = [r.client("backup-service") for r in replicas]
        try:
            with ThreadPoolExecutor(16) as pool:
                statuses = list(
                    pool.map(
                        lambda i: clients[i % 2].post(ENCRYPT, json=body).status_code, range(400)
                    )
                )
        finally:
            for c in clients:
                c.close()
        assert statuses == [200] * 400
    records = audit_records(pg_database)
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    encrypts = [r for r in records if r.get("operation") == "encrypt"]
    assert [r["count"] for r in encrypts] == list(range(1, 401))  # running count, in chain order
    prefixes = {r["request_id"][:23] for r in encrypts}  # each process has its own
    assert len(prefixes) == 2
    assert cli("audit", "checkpoint", **env).returncode == 0
    verified = cli("audit", "verify", "--strict", **env)
    assert verified.returncode == 0, verified.stdout
