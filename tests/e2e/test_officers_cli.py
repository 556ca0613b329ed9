"""The officers' tool driven as an officer would: ``hsm-vault`` subprocesses on a real SoftHSM2
token, against served keys."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import create_engine, text

from hsm import KeySpec
from tests.conftest import ROOT, Server
from vault.audit.keys import AUDIT_KEY_IDS
from vault.bootstrap import mint_token
from vault.envelope import EncryptItem
from vault.errors import HsmUnavailable, VaultError
from vault.transit import DecryptItem

pytestmark = [pytest.mark.e2e, pytest.mark.hsm]

EXE = shutil.which("hsm-vault", path=str(Path(sys.executable).parent)) or "hsm-vault"


def cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, officer: str = "alice"
) -> subprocess.CompletedProcess[str]:
    """``hsm-vault ARGS`` as the dev officer ``officer`` (no PIN or key on the command line)."""
    full = dict(os.environ)
    full["VAULT_OFFICER_KEY"] = str(
        Path(os.environ["VAULT_VAR_DIR"]) / "dev-officers" / f"{officer}.pem"
    )
    full.update(env or {})
    return subprocess.run(
        [EXE, *args], env=full, cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def fresh_key(settings: Any, kind: str = "aes256-gcm96", prefix: str = "cli") -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    ok(cli("keys", "create", name, "--type", kind))
    return name


# -- the ceremony: an empty token to served keys ---------------------------------------------------


def _write_policies(directory: Path, service_key: Path, officers: dict[str, Path]) -> None:
    directory.mkdir()
    (directory / "keys.toml").write_text(
        '[keys.ledger-share]\ntype = "aes256-gcm96"\n\n'
        '[keys.ledger-signing]\ntype = "ecdsa-p256"\nauto_rotate_period = 86400\n'
    )
    (directory / "services.toml").write_text(
        f'[services.ledger]\npublic_key_file = "{service_key}"\n'
        'grants = [{ keys = ["ledger-*"], operations = ["encrypt", "decrypt", "read"] }]\n'
    )
    (directory / "officers.toml").write_text(
        "".join(
            f'[officers.{n}]\npublic_key_file = "{p.with_suffix(".pub.pem")}"\n\n'
            for n, p in officers.items()
        )
    )


def test_ceremony_from_an_empty_token_to_served_keys(var_dir: Path, tmp_path: Path) -> None:
    var = tmp_path / "var"
    service = ed25519.Ed25519PrivateKey.generate()
    service_pub = tmp_path / "ledger.pub.pem"
    service_pub.write_bytes(
        service.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    env = {
        "VAULT_VAR_DIR": str(var),
        "SOFTHSM2_CONF": str(var / "softhsm2.conf"),
        "VAULT_SOFTHSM2_CONF": str(var / "softhsm2.conf"),
        "VAULT_POLICIES_DIR": str(tmp_path / "policies"),
        "VAULT_TOKEN_LABEL": "ceremony",
        "VAULT_DATABASE_URL": f"sqlite:///{tmp_path / 'ceremony.db'}",
        "VAULT_OFFICER_KEY_PASSPHRASE": "correct horse battery staple",
    }
    officers = {n: tmp_path / "officers" / f"{n}.pem" for n in ("alice", "bob")}
    for name, path in officers.items():
        out = ok(cli("officers", "keygen", name, "--out", str(path), env=env))
        assert f"[officers.{name}]" in out
        assert b"ENCRYPTED PRIVATE KEY" in path.read_bytes()
    _write_policies(tmp_path / "policies", service_pub, officers)
    pins = {"VAULT_SO_PIN": "so-" + uuid.uuid4().hex, "VAULT_PIN": "user-" + uuid.uuid4().hex}

    dry = ok(cli("token", "init", "--dry-run", env={**env, **pins}))
    assert "would initialize" in dry
    same = cli("token", "init", env={**env, "VAULT_SO_PIN": "samepin1", "VAULT_PIN": "samepin1"})
    assert same.returncode != 0
    assert "must differ" in same.stderr
    ok(cli("token", "init", env={**env, **pins}))
    again = cli("token", "init", env={**env, **pins})
    assert again.returncode != 0
    assert "exists already" in again.stderr
    ok(cli("migrate", env=env))

    as_alice = {**env, **pins, "VAULT_OFFICER_KEY": str(officers["alice"])}
    assert "would create: ledger-share" in ok(cli("keys", "create", "--dry-run", env=as_alice))
    assert ok(cli("officers", "whoami", env=as_alice)).strip() == "alice"
    created = ok(cli("keys", "create", env=as_alice))
    assert "created: ledger-share" in created
    assert "created: ledger-signing" in created
    assert ok(cli("keys", "create", env=as_alice)).count("unchanged") == 2

    # The user PIN changes; the service then logs in with the new one.
    new_pin = "user-" + uuid.uuid4().hex
    ok(cli("token", "change-pin", env={**as_alice, "VAULT_NEW_PIN": new_pin}))
    refused = cli("hsm-objects", env=as_alice)
    assert refused.returncode != 0
    served = {**env, "VAULT_PIN": new_pin}
    assert "vault:ledger-signing:v1" in ok(cli("hsm-objects", env=served))

    server = Server(SimpleNamespace(var_dir=var), env=served)
    try:
        token = mint_token(service, "ledger", "hsm-vault", 600)
        with httpx.Client(base_url=server.url, headers={"X-Vault-Token": token}) as c:
            plaintext = base64.b64encode(b"ledger entry").decode()
            r = c.post("/v1/transit/encrypt/ledger-share", json={"plaintext": plaintext})
            assert r.status_code == 200, r.text
            r = c.post(
                "/v1/transit/decrypt/ledger-share",
                json={"ciphertext": r.json()["data"]["ciphertext"]},
            )
            assert r.json()["data"]["plaintext"] == plaintext
            info = c.get("/v1/transit/keys/ledger-signing").json()["data"]
            assert info["auto_rotate_period"] == 86400
    finally:
        server.stop()


# -- rotation while requests run ---------------------------------------------------------------


def test_rotating_while_requests_run_loses_none(settings: Any, server: Server) -> None:
    name = fresh_key(settings, prefix="conformance")  # a key the traffic's service may use
    results: list[tuple[int, str]] = []
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(
            base_url=server.url,
            headers={"X-Vault-Token": _conformance_token(settings)},
            timeout=30,
        ) as c:
            while not stop.is_set():
                plaintext = base64.b64encode(uuid.uuid4().bytes).decode()
                r = c.post(f"/v1/transit/encrypt/{name}", json={"plaintext": plaintext})
                ciphertext = r.json().get("data", {}).get("ciphertext", "") if r.is_success else ""
                results.append((r.status_code, plaintext + " " + ciphertext))

    threads = [threading.Thread(target=traffic) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for _ in range(3):
            time.sleep(0.5)
            ok(cli("keys", "rotate", name))
        time.sleep(1.5)  # past the servers' key cache
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert results
    assert {status for status, _ in results} == {200}
    versions = {line.split()[1].split(":")[1] for _, line in results}
    assert "v4" in versions  # the last rotation reached the server
    with httpx.Client(
        base_url=server.url, headers={"X-Vault-Token": _conformance_token(settings)}
    ) as c:
        for _, line in results[:: max(1, len(results) // 200)]:
            plaintext, ciphertext = line.split()
            r = c.post(f"/v1/transit/decrypt/{name}", json={"ciphertext": ciphertext})
            assert r.json()["data"]["plaintext"] == plaintext


def _conformance_token(settings: Any) -> str:
    from tests.conftest import mint

    return mint(settings, "transit-conformance")


# -- rewrap at scale, killed and resumed ----------------------------------------------------------

COUNT = 10_000


def _in_thousands(items: list[Any], call: Any) -> list[Any]:
    """``call`` (a transit batch operation) over ``items`` a thousand at a time."""

    async def run() -> list[Any]:
        out: list[Any] = []
        for i in range(0, len(items), 1000):
            for result in await call(items[i : i + 1000]):
                assert not isinstance(result, VaultError), result
                out.append(result)
        return out

    return asyncio.run(run())


def _encrypt_many(runtime: Any, name: str, plaintexts: list[bytes], ads: list[bytes]) -> list[str]:
    items = [EncryptItem(p, a) for p, a in zip(plaintexts, ads, strict=True)]
    return [r.ciphertext for r in _in_thousands(items, lambda b: runtime.transit.encrypt(name, b))]


def _decrypt_many(runtime: Any, name: str, ciphertexts: list[str], ads: list[bytes]) -> list[bytes]:
    runtime.registry.invalidate(name)
    items = [DecryptItem(c, a) for c, a in zip(ciphertexts, ads, strict=True)]
    return _in_thousands(items, lambda b: runtime.transit.decrypt(name, b))


def _kill_when(proc: subprocess.Popen[str], done: Any, low: int) -> int:
    """SIGKILL ``proc`` as soon as ``done()`` passes ``low``; how far it had got."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        progress = done()
        if progress >= low:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return int(done())
        if proc.poll() is not None:
            pytest.fail(f"rewrap ended (status {proc.returncode}) before it could be killed")
        time.sleep(0.01)
    pytest.fail("rewrap made no progress")


def _popen(*args: str) -> subprocess.Popen[str]:
    env = dict(os.environ)
    return subprocess.Popen(
        [EXE, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True
    )


def test_rewrap_ten_thousand_killed_halfway_resumes_without_loss(
    settings: Any, runtime: Any, tmp_path: Path
) -> None:
    name = f"rewrap-{uuid.uuid4().hex[:8]}"
    runtime.registry.create_sync(name, "aes256-gcm96")
    plaintexts = [os.urandom(24) for _ in range(COUNT)]
    ads = [f"row-{i}".encode() if i % 2 else b"" for i in range(COUNT)]
    ciphertexts = _encrypt_many(runtime, name, plaintexts, ads)
    source, target = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    with source.open("w") as fh:
        for i, (ct, ad) in enumerate(zip(ciphertexts, ads, strict=True)):
            row: dict[str, Any] = {"id": i, "ciphertext": ct}
            if ad:
                row["associated_data"] = base64.b64encode(ad).decode()
            fh.write(json.dumps(row) + "\n")
    runtime.registry.rotate_sync(name)

    proc = _popen(
        "keys", "rewrap", name, "--in", str(source), "--out", str(target),
        "--batch-size", "100", "--rate", "2500",
    )  # fmt: skip
    lines = lambda: target.read_bytes().count(b"\n") if target.exists() else 0  # noqa: E731
    reached = _kill_when(proc, lines, COUNT // 3)
    assert 0 < reached < COUNT
    with target.open("a") as fh:  # a write torn by the kill
        fh.write('{"id": 12, "ciphertext": "vault:v2:AAA')

    resumed = ok(cli("keys", "rewrap", name, "--in", str(source), "--out", str(target)))
    assert f"resumed after {reached}" in resumed
    assert f"rewrapped {COUNT - reached}, skipped 0, failed 0" in resumed
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert [r["id"] for r in rows] == list(range(COUNT))
    assert all(r["ciphertext"].startswith("vault:v2:") for r in rows)
    assert _decrypt_many(runtime, name, [r["ciphertext"] for r in rows], ads) == plaintexts
    again = ok(cli("keys", "rewrap", name, "--in", str(source), "--out", str(tmp_path / "o2")))
    assert f"rewrapped {COUNT}, skipped 0, failed 0" in again  # the input is never changed


def test_rewrap_a_table_killed_and_resumed(settings: Any, runtime: Any, tmp_path: Path) -> None:
    name = f"rewrap-{uuid.uuid4().hex[:8]}"
    runtime.registry.create_sync(name, "aes256-gcm96")
    count = 3000
    plaintexts = [os.urandom(16) for _ in range(count)]
    ads = [f"user-{i}".encode() for i in range(count)]
    ciphertexts = _encrypt_many(runtime, name, plaintexts, ads)
    url = f"sqlite:///{tmp_path / 'app.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE shares (id INTEGER PRIMARY KEY, blob TEXT, ad TEXT)"))
        conn.execute(
            text("INSERT INTO shares (id, blob, ad) VALUES (:id, :blob, :ad)"),
            [
                {"id": i, "blob": c, "ad": base64.b64encode(a).decode()}
                for i, (c, a) in enumerate(zip(ciphertexts, ads, strict=True))
            ],
        )
        conn.execute(text("UPDATE shares SET blob = 'not a ciphertext' WHERE id = 7"))
    runtime.registry.rotate_sync(name)

    def moved() -> int:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    text("SELECT count(*) FROM shares WHERE blob LIKE 'vault:v2:%'")
                ).scalar_one()
            )

    args = ("keys", "rewrap", name, "--database-url", url, "--table", "shares",
            "--column", "blob", "--ad-column", "ad", "--batch-size", "100")  # fmt: skip
    reached = _kill_when(_popen(*args, "--rate", "600"), moved, count // 3)
    assert 0 < reached < count
    resumed = cli(*args)
    assert resumed.returncode == 1  # the one broken row
    assert f"rewrapped {count - 1 - reached}, skipped {reached}, failed 1" in resumed.stdout
    assert "id=7" in resumed.stderr
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, blob FROM shares ORDER BY id")).all()
    engine.dispose()
    good = [(i, blob) for i, blob in rows if i != 7]
    assert all(blob.startswith("vault:v2:") for _, blob in good)
    decrypted = _decrypt_many(runtime, name, [b for _, b in good], [ads[i] for i, _ in good])
    assert decrypted == [plaintexts[i] for i, _ in good]


# -- reconcile ---------------------------------------------------------------------------------


def test_reconcile_finds_and_repairs_planted_drift(settings: Any, runtime: Any) -> None:
    import secrets

    from sqlalchemy import insert, update

    from vault.store.tables import key_versions, keys

    name = fresh_key(settings)
    other = fresh_key(settings, "ecdsa-p256")
    orphans = {secrets.token_bytes(16): KeySpec.AES256, secrets.token_bytes(16): KeySpec.EC_P256}
    for oid, spec in orphans.items():  # objects made straight through the HSM adapter
        runtime.hsm.run_sync(
            lambda ops, oid=oid, spec=spec: ops.generate(spec, oid, f"vault:{other}:v9")
        )
    lost = secrets.token_bytes(16)
    with runtime.db.engine.begin() as conn:  # a version row whose object was never made
        conn.execute(
            insert(key_versions).values(
                key_name=name, version=2, hsm_id=lost, created_at=time.time()
            )
        )
        conn.execute(update(keys).where(keys.c.name == name).values(latest_version=2))
    runtime.registry.invalidate(name)
    with pytest.raises(HsmUnavailable):  # a lost version answers 503, never a wrong result
        asyncio.run(runtime.transit.encrypt(name, [EncryptItem(b"x", b"")]))

    found = cli("keys", "reconcile", "--json")
    assert found.returncode == 3, found.stdout + found.stderr
    report = json.loads(found.stdout)
    assert {o["id"] for o in report["orphans"]} >= {oid.hex() for oid in orphans}
    assert {"key": name, "version": 2} in report["lost_versions"]

    dry = cli("keys", "reconcile", "--repair", "--dry-run")
    assert dry.returncode == 3
    assert "dry run" in dry.stdout
    fixed = cli("keys", "reconcile", "--repair", "--grace", "0")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert f"forgot version 2 of {name}" in fixed.stdout
    assert "in line" in fixed.stdout
    objects = {o.key_id for o in runtime.hsm.run_sync(lambda ops: ops.objects(), fresh=True)}
    assert not objects & set(orphans)
    assert objects >= AUDIT_KEY_IDS  # the audit chain's keys are no version's, and no orphans
    runtime.registry.invalidate(name)
    done = asyncio.run(runtime.transit.encrypt(name, [EncryptItem(b"x", b"")]))
    assert done[0].key_version == 3  # the lost latest version was replaced


# -- dual control ---------------------------------------------------------------------------------


def test_a_deletion_is_refused_with_one_approval_and_done_with_two(settings: Any) -> None:
    name = fresh_key(settings)
    assert "deletion_allowed: False -> True" in ok(
        cli("keys", "configure", name, "--deletion-allowed")
    )
    nobody = cli("keys", "delete", name)
    assert nobody.returncode == 1
    assert "needs the approvals of 2 different officers" in nobody.stderr
    request = ok(cli("approvals", "request", "key.delete", name)).strip()
    one = cli("keys", "delete", name, "--approval", request, officer="bob")
    assert one.returncode == 1
    assert "has 1" in one.stderr
    twice = cli("approvals", "approve", request)
    assert twice.returncode == 1
    assert "already approved" in twice.stderr
    ok(cli("approvals", "approve", request, officer="bob"))
    assert "alice, bob" in ok(cli("approvals", "show", request))
    assert "would delete" in ok(cli("keys", "delete", name, "--approval", request, "--dry-run"))
    assert "deleted" in ok(cli("keys", "delete", name, "--approval", request, officer="bob"))
    reused = cli("keys", "delete", name, "--approval", request)
    assert reused.returncode == 1
    assert name not in ok(cli("keys", "list"))


def test_the_api_trims_and_deletes_only_under_two_approvals(settings: Any, server: Server) -> None:
    name = fresh_key(settings)
    for _ in range(3):
        ok(cli("keys", "rotate", name))
    ok(cli("keys", "configure", name, "--min-decryption-version", "3",
           "--min-encryption-version", "3", "--deletion-allowed"))  # fmt: skip
    with server.client("security-officer") as c:
        trim = {"min_available_version": 3}
        r = c.post(f"/v1/transit/keys/{name}/trim", json=trim)
        assert r.status_code == 403
        assert "needs the approvals of 2 different officers" in r.json()["errors"][0]
        request = ok(cli("approvals", "request", "key.trim", name, "--min-available-version", "3"))
        headers = {"X-Vault-Approval": request.strip()}
        r = c.post(f"/v1/transit/keys/{name}/trim", json=trim, headers=headers)
        assert r.status_code == 403
        assert "has 1" in r.json()["errors"][0]
        ok(cli("approvals", "approve", request.strip(), officer="bob"))
        r = c.post(
            f"/v1/transit/keys/{name}/trim", json={"min_available_version": 2}, headers=headers
        )
        assert r.status_code == 403  # approved for 3, not 2
        r = c.post(f"/v1/transit/keys/{name}/trim", json=trim, headers=headers)
        assert r.status_code == 200, r.text
        assert r.json()["data"]["min_available_version"] == 3
        assert sorted(r.json()["data"]["keys"]) == ["3", "4"]
        r = c.post(f"/v1/transit/keys/{name}/config", json={"min_decryption_version": 2})
        assert r.status_code == 400
        assert "less then min available" in r.json()["errors"][0]
        assert c.delete(f"/v1/transit/keys/{name}").status_code == 403
        request = ok(cli("approvals", "request", "key.delete", name, officer="bob")).strip()
        ok(cli("approvals", "approve", request))
        r = c.delete(f"/v1/transit/keys/{name}", headers={"X-Vault-Approval": request})
        assert r.status_code == 204
        r = c.post("/v1/transit/keys/no-such-key/trim", json=trim)
        assert r.status_code == 400
        assert r.json()["errors"] == ["invalid key name"]


def test_the_conformance_dev_service_is_exempt_by_its_policy(server: Server) -> None:
    name = f"conformance-{uuid.uuid4().hex[:8]}"
    with server.client("transit-conformance") as c:
        assert c.post(f"/v1/transit/keys/{name}").status_code == 200
        for _ in range(2):
            c.post(f"/v1/transit/keys/{name}/rotate")
        r = c.post(
            f"/v1/transit/keys/{name}/config",
            json={
                "min_decryption_version": 2,
                "min_encryption_version": 3,
                "deletion_allowed": True,
            },
        )
        assert r.status_code == 200, r.text
        r = c.post(f"/v1/transit/keys/{name}/trim", json={"min_available_version": 2})
        assert r.status_code == 200, r.text
        assert r.json()["data"]["min_available_version"] == 2
        assert c.delete(f"/v1/transit/keys/{name}").status_code == 204


# -- the wrappers -----------------------------------------------------------------------------


def test_the_scripts_work_from_any_directory(settings: Any, tmp_path: Path) -> None:
    name = fresh_key(settings)
    env = dict(os.environ)
    env["VAULT_OFFICER_KEY"] = str(settings.var_dir / "dev-officers" / "bob.pem")
    env["PATH"] = "/usr/bin:/bin"  # no hsm-vault on PATH: the checkout's .venv is found
    result = subprocess.run(
        [str(ROOT / "scripts" / "rotate-key.sh"), name],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"{name}: latest version is now v2" in result.stdout
    listed = subprocess.run(
        [str(ROOT / "scripts" / "hsm-vault"), "keys", "list", "--json"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert any(json.loads(line)["name"] == name for line in listed.stdout.splitlines())
    assert "Usage" in ok(cli("keys", "rewrap", "--help"))
