"""Helpers for the zero-trust end-to-end tests: databases with the declared keys, servers on
them, the audit records a request left, tokens minted as a service would."""

from __future__ import annotations

import base64
import dataclasses
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import jwt
from sqlalchemy import text

from tests.conftest import Server
from vault.bootstrap import create_declared_keys, load_dev_key
from vault.store import Database, make_engine
from vault.store.tokens import RevocationStore
from vault.tokens import Revoker


def with_keys(settings: Any, url: str) -> Any:
    """``settings`` on the database at ``url``, with the declared keys made there."""
    moved = dataclasses.replace(settings, database_url=url)
    create_declared_keys(moved)
    return moved


@contextmanager
def servers(settings: Any, url: str, count: int = 2, **env: str) -> Iterator[list[Server]]:
    """``count`` separate server processes sharing the database at ``url``."""
    started: list[Server] = []
    try:
        for _ in range(count):
            started.append(Server(settings, env={"VAULT_DATABASE_URL": url, **env}))
        yield started
    finally:
        for server in started:
            server.stop()


def token(settings: Any, service: str, lifetime: int = 600, **claims: Any) -> str:
    now = int(time.time())
    body = {
        "sub": service,
        "aud": settings.jwt_audience,
        "iat": now,
        "exp": now + lifetime,
        "jti": str(uuid.uuid4()),
    } | claims
    return jwt.encode(body, load_dev_key(settings, service), "EdDSA")


def headers(presented: str) -> dict[str, str]:
    return {"X-Vault-Token": presented}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def share_ad(user: str) -> str:
    """backup-share's associated data: canonical JSON naming the user (policies/keys.toml)."""
    return b64(json.dumps({"share": 1, "user_id": user}, separators=(",", ":")).encode())


def audit_records(url: str) -> list[dict[str, Any]]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT body FROM audit_records ORDER BY seq")).all()
    finally:
        engine.dispose()
    return [json.loads(body) for (body,) in rows]


def record_of(url: str, response: httpx.Response, wait: float = 0.0) -> dict[str, Any]:
    """The audit record of the request ``response`` answered (by its request id)."""
    request_id = response.headers["x-request-id"]
    deadline = time.monotonic() + wait
    while True:
        found = [r for r in audit_records(url) if r.get("request_id") == request_id]
        if found or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    assert len(found) == 1, f"{len(found)} audit records for request {request_id}"
    return found[0]


@contextmanager
def revoker_on(settings: Any, url: str) -> Iterator[Revoker]:
    db = Database.open(url)
    try:
        yield Revoker(RevocationStore(db), settings.jwt_max_lifetime, settings.jwt_leeway)
    finally:
        db.dispose()
