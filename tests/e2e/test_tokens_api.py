"""Service tokens over HTTP: every forged, stretched, revoked or replayed token is 401 and
leaves an audit record; a single-use token is spent once across two server processes on
PostgreSQL; revocations reach every replica within about two seconds."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.e2e.trust_support import (
    b64,
    headers,
    record_of,
    revoker_on,
    servers,
    share_ad,
    token,
    with_keys,
)
from vault.approvals import Authority
from vault.bootstrap import dev_key_path, load_dev_key
from vault.errors import Forbidden

pytestmark = pytest.mark.e2e
ENCRYPT = "/v1/transit/encrypt/backup-share"
DECRYPT = "/v1/transit/decrypt/backup-share"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict[str, Any], body: dict[str, Any], signature: bytes) -> str:
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(body).encode())}"
    return f"{signing_input}.{b64url(signature)}"


def attacks(settings: Any) -> dict[str, str]:
    """Tokens claiming backup-service (which may encrypt on backup-share): each must be 401."""
    now = int(time.time())
    own = load_dev_key(settings, "backup-service")
    public_pem = dev_key_path(settings, "backup-service").with_suffix(".pub.pem").read_bytes()

    def claims(**changes: Any) -> dict[str, Any]:
        body = {
            "sub": "backup-service",
            "aud": settings.jwt_audience,
            "iat": now,
            "exp": now + 300,
            "jti": str(uuid.uuid4()),
        } | changes
        return {k: v for k, v in body.items() if v is not None}

    def signed(body: dict[str, Any], key: Any = own, **head: Any) -> str:
        return jwt.encode(body, key, "EdDSA", headers=head or None)

    hs_body = claims()
    hs_input = (
        f"{b64url(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}."
        f"{b64url(json.dumps(hs_body).encode())}"
    )
    attacks = {
        "alg none": forged({"alg": "none", "typ": "JWT"}, claims(), b""),
        "HMAC with the public key": f"{hs_input}."
        + b64url(hmac.new(public_pem, hs_input.encode(), hashlib.sha256).digest()),
        "unknown kid": signed(claims(), kid="not-a-key-of-ours"),
        "wrong aud": signed(claims(aud="another-vault")),
        "expired": signed(claims(iat=now - 900, exp=now - 600)),
        "too long-lived": signed(claims(exp=now + settings.jwt_max_lifetime + 3600)),
        "another service's key": signed(claims(), load_dev_key(settings, "identity-service")),
    }
    for claim in ("exp", "iat", "sub", "aud", "jti"):
        attacks[f"missing {claim}"] = signed(claims(**{claim: None}))
    return attacks


def assert_refused_and_audited(settings: Any, response: httpx.Response, reason: str = "") -> None:
    assert response.status_code == 401, response.text
    record = record_of(settings.database_url, response, wait=2.0)
    assert record["status"] == 401
    assert record["error"] == "Unauthorized"
    assert reason in record["reason"]


def test_the_jwt_attack_matrix_is_401_and_audited(server, settings) -> None:  # type: ignore[no-untyped-def]
    body = {"plaintext": b64(b"x"), "associated_data": share_ad("u-matrix")}
    with httpx.Client(base_url=server.url, timeout=30) as c:
        for name, presented in attacks(settings).items():
            response = c.post(ENCRYPT, json=body, headers=headers(presented))
            assert response.status_code == 401, (name, response.text)
            record = record_of(settings.database_url, response, wait=2.0)
            assert record["status"] == 401, name
            assert record["error"] in ("Unauthorized", "NotVerified"), name
            assert "service" not in record, name  # nobody was authenticated


def test_a_revoked_token_is_401_and_audited(server, settings) -> None:  # type: ignore[no-untyped-def]
    presented = token(settings, "backup-service")
    body = {"plaintext": b64(b"x"), "associated_data": share_ad("u-revoked")}
    with httpx.Client(base_url=server.url, headers=headers(presented), timeout=30) as c:
        assert c.post(ENCRYPT, json=body).status_code == 200  # verified and cached
        jti = jwt.decode(presented, options={"verify_signature": False})["jti"]
        with revoker_on(settings, settings.database_url) as revoker:
            revoker.revoke_token("backup-service", jti, Authority("officer:test"))
        revoked_at = time.monotonic()
        while (response := c.post(ENCRYPT, json=body)).status_code == 200:
            assert time.monotonic() - revoked_at < 3.0, "revocation not effective in time"
            time.sleep(0.05)
    assert_refused_and_audited(settings, response, "token revoked")
    record = record_of(settings.database_url, response)
    assert record["claimed_service"] == "backup-service"


def test_a_single_use_token_used_twice_is_401_and_audited(server, settings) -> None:  # type: ignore[no-untyped-def]
    ad = share_ad("u-single")
    with server.client("backup-service") as backup:
        ciphertext = backup.post(ENCRYPT, json={"plaintext": b64(b"s"), "associated_data": ad})
    body = {"ciphertext": ciphertext.json()["data"]["ciphertext"], "associated_data": ad}
    presented = token(settings, "recovery-service")
    with httpx.Client(base_url=server.url, headers=headers(presented), timeout=30) as c:
        first = c.post(DECRYPT, json=body)
        assert first.status_code == 200, first.text
        again = c.post(DECRYPT, json=body)
    assert_refused_and_audited(settings, again, "token already used")
    spent = record_of(settings.database_url, again)
    assert spent["service"] == "recovery-service"  # authenticated, then refused
    assert spent["token_id"] == record_of(settings.database_url, first)["token_id"]


# -- across replicas (PostgreSQL) -----------------------------------------------------------


@pytest.fixture(scope="module")
def pg_url(settings) -> Any:  # type: ignore[no-untyped-def]
    """A fresh PostgreSQL database for the module, with the declared keys."""
    from tests.conftest import PG_ADMIN_URL, _pg_admin
    from vault import store

    name = f"hsmvault_test_{uuid.uuid4().hex[:12]}"
    _pg_admin(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    engine = store.make_engine(url)
    store.migrate(engine)
    engine.dispose()
    with_keys(settings, url)
    yield url
    _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def replicas(settings, pg_url):  # type: ignore[no-untyped-def]
    with servers(settings, pg_url) as started:
        yield started


def test_a_single_use_token_raced_over_two_replicas_is_accepted_once(settings, replicas) -> None:  # type: ignore[no-untyped-def]
    ad = share_ad(f"u-race-{uuid.uuid4().hex[:6]}")
    with replicas[0].client("backup-service") as backup:
        made = backup.post(ENCRYPT, json={"plaintext": b64(b"share"), "associated_data": ad})
    body = {"ciphertext": made.json()["data"]["ciphertext"], "associated_data": ad}
    presented = token(settings, "recovery-service")

    def decrypt(i: int) -> int:
        target = replicas[i % 2]
        return httpx.post(
            f"{target.url}{DECRYPT}", json=body, headers=headers(presented), timeout=30
        ).status_code

    with ThreadPoolExecutor(12) as pool:
        statuses = list(pool.map(decrypt, range(12)))
    assert sorted(statuses) == [200] + [401] * 11, statuses


def test_revocation_reaches_every_replica_within_two_seconds(settings, replicas, pg_url) -> None:  # type: ignore[no-untyped-def]
    presented = token(settings, "backup-service")
    body = {"plaintext": b64(b"x"), "associated_data": share_ad("u-rev")}
    for replica in replicas:  # each has verified and cached it
        assert (
            httpx.post(f"{replica.url}{ENCRYPT}", json=body, headers=headers(presented)).status_code
            == 200
        )
    jti = jwt.decode(presented, options={"verify_signature": False})["jti"]
    revoked = officer_cli(settings, pg_url, "tokens", "revoke", "backup-service", jti)
    assert revoked.returncode == 0, revoked.stderr
    started = time.monotonic()
    pending = set(range(len(replicas)))
    while pending:
        for i in list(pending):
            status = httpx.post(
                f"{replicas[i].url}{ENCRYPT}", json=body, headers=headers(presented)
            ).status_code
            if status == 401:
                pending.discard(i)
        elapsed = time.monotonic() - started
        assert elapsed < 2.5, (
            f"replicas {pending} still accept a revoked token after {elapsed:.2f}s"
        )
        time.sleep(0.05)


def test_revoking_every_token_of_a_service_needs_two_officers(settings, replicas, pg_url) -> None:  # type: ignore[no-untyped-def]
    old = token(settings, "payout-gateway")
    hmac_path = "/v1/transit/hmac/payout-digest"
    assert (
        httpx.post(
            f"{replicas[0].url}{hmac_path}", json={"input": "aGk="}, headers=headers(old)
        ).status_code
        == 200
    )
    # Without dual control set up, the domain refuses outright.
    with revoker_on(settings, pg_url) as revoker, pytest.raises(Forbidden):
        revoker.revoke_service("payout-gateway", time.time(), Authority("officer:alice"))
    # The officers' command needs an approval of two officers for exactly this action.
    alone = officer_cli(settings, pg_url, "tokens", "revoke-service", "payout-gateway")
    assert alone.returncode != 0
    assert "needs the approvals of 2 different officers" in alone.stderr
    request = officer_cli(
        settings, pg_url, "approvals", "request", "service.revoke_tokens", "payout-gateway"
    ).stdout.strip()
    half = officer_cli(
        settings, pg_url, "tokens", "revoke-service", "payout-gateway", "--approval", request
    )
    assert half.returncode != 0
    assert "has 1" in half.stderr
    assert (
        httpx.post(
            f"{replicas[0].url}{hmac_path}", json={"input": "aGk="}, headers=headers(old)
        ).status_code
        == 200
    )
    approved = officer_cli(settings, pg_url, "approvals", "approve", request, officer="bob")
    assert approved.returncode == 0, approved.stderr
    done = officer_cli(
        settings, pg_url, "tokens", "revoke-service", "payout-gateway", "--approval", request
    )
    assert done.returncode == 0, done.stderr
    again = officer_cli(
        settings, pg_url, "tokens", "revoke-service", "payout-gateway", "--approval", request
    )
    assert again.returncode != 0
    assert "already used" in again.stderr
    time.sleep(2.5)
    for replica in replicas:
        refused = httpx.post(
            f"{replica.url}{hmac_path}", json={"input": "aGk="}, headers=headers(old)
        )
        assert refused.status_code == 401
    time.sleep(1.1)  # iat has whole seconds: a token issued after the cut-off
    fresh = token(settings, "payout-gateway")
    assert (
        httpx.post(
            f"{replicas[1].url}{hmac_path}", json={"input": "aGk="}, headers=headers(fresh)
        ).status_code
        == 200
    )


def officer_cli(
    settings: Any, database_url: str, *args: str, officer: str = "alice"
) -> subprocess.CompletedProcess[str]:
    """``hsm-vault ARGS`` as the dev officer ``officer``, on the replicas' database."""
    env = {
        **os.environ,
        "VAULT_DATABASE_URL": database_url,
        "VAULT_OFFICER_KEY": str(settings.var_dir / "dev-officers" / f"{officer}.pem"),
    }
    return subprocess.run(
        [str(Path(sys.executable).parent / "hsm-vault"), *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
