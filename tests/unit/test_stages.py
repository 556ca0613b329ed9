"""The gate's stages with a real vault over the fake HSM: admission refuses before any HSM work
of the handler's, every request is recorded before its answer, a record that cannot be kept
fails the request, and a request a per-subject quota covers must name its subject before its
single-use token is spent."""

from __future__ import annotations

import dataclasses
import json
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from litestar.testing import TestClient

from api.app import create_app
from api.call import Call
from api.stages import AuditStage, QuotaStage, SingleUse, Subjects
from tests.unit.fake_hsm import FakeHsm
from vault.config import load_settings
from vault.errors import RateLimited, StoreUnavailable
from vault.runtime import Vault
from vault.store import make_engine, migrate
from vault.store.audit import AuditStore

SERVICE_KEY = ed25519.Ed25519PrivateKey.generate()
PEM = (
    SERVICE_KEY.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)
POLICIES = f'''
[keys.shares]
type = "aes256-gcm96"
associated_data = {{ format = "kv", subject = "user" }}

[services.alpha]
public_key = """{PEM}"""
grants = [
  {{ keys = ["shares"], operations = ["encrypt"] }},
  {{ keys = ["shares"], operations = ["decrypt"], single_use = true }},
]

[quotas.per-user]
keys = ["shares"]
operations = ["encrypt", "decrypt"]
per = "subject"
limit = 2
window = "1d"
'''


def mint(**claims: Any) -> str:
    now = int(time.time())
    body = {
        "sub": "alpha",
        "aud": "hsm-vault",
        "iat": now,
        "exp": now + 300,
        "jti": str(uuid.uuid4()),
    }
    return jwt.encode(body | claims, SERVICE_KEY, "EdDSA")


def b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


@pytest.fixture
def vault(tmp_path: Path) -> Iterator[Vault]:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.toml").write_text(textwrap.dedent(POLICIES))
    url = f"sqlite:///{tmp_path / 'vault.db'}"
    migrate(make_engine(url))
    settings = dataclasses.replace(
        load_settings(), policies_dir=tmp_path / "policies", database_url=url, var_dir=tmp_path
    )
    fake = FakeHsm()
    made = Vault.open(settings, runner=fake)
    made.audit.keys.ensure_sync()
    made.registry.create_sync("shares", "aes256-gcm96")
    yield made
    made.close()


def client(vault: Vault, *stages: Any) -> TestClient[Any]:
    app = create_app(vault.settings, lambda _: vault)
    if stages:
        app._stages = stages
    return TestClient(app)  # type: ignore[arg-type]


def records(vault: Vault) -> list[dict[str, Any]]:
    store: AuditStore = vault.audit.store
    found = [json.loads(r.body) for r in store.chain()]
    return [r for r in found if r["type"] != "event"]  # the requests' records


def jobs(vault: Vault) -> int:
    runner = vault.hsm.runner
    assert isinstance(runner, FakeHsm)
    return runner.jobs


class Refuse:
    async def admit(self, call: Call, body: Any) -> None:
        raise RateLimited("no", retry_after=7)

    async def record(self, call: Call) -> None:
        return None


class Unwritable:
    async def admit(self, call: Call, body: Any) -> None:
        return None

    async def record(self, call: Call) -> None:
        raise StoreUnavailable()


def test_a_refused_admission_costs_no_hsm_work_and_is_recorded(vault: Vault) -> None:
    with client(vault, Refuse(), AuditStage()) as c:
        before = jobs(vault)
        r = c.post(
            "/v1/transit/encrypt/shares",
            json={"plaintext": b64("x")},
            headers={"X-Vault-Token": mint()},
        )
        assert jobs(vault) == before
    assert (r.status_code, r.headers["retry-after"]) == (429, "7")
    (record,) = records(vault)
    assert (record["status"], record["error"], record["service"]) == (429, "RateLimited", "alpha")
    assert record["request_id"] == r.headers["x-request-id"]


def test_a_record_that_cannot_be_kept_fails_the_request(vault: Vault) -> None:
    with client(vault, Unwritable()) as c:
        r = c.post(
            "/v1/transit/encrypt/shares",
            json={"plaintext": b64("secret"), "associated_data": b64("user=u1")},
            headers={"X-Vault-Token": mint()},
        )
    assert r.status_code == 503
    assert "ciphertext" not in r.text


def test_per_subject_quotas_and_a_single_use_token(vault: Vault) -> None:
    with client(vault, Subjects(), SingleUse(), QuotaStage(), AuditStage()) as c:

        def post(path: str, body: dict[str, Any], presented: str | None = None) -> Any:
            return c.post(
                f"/v1/transit/{path}/shares",
                json=body,
                headers={"X-Vault-Token": presented or mint()},
            )

        made = post("encrypt", {"plaintext": b64("s"), "associated_data": b64("user=u1;n=1")})
        assert made.status_code == 200, made.text
        ciphertext = made.json()["data"]["ciphertext"]
        presented = mint()
        unnamed = post(
            "decrypt", {"ciphertext": ciphertext, "associated_data": b64("n=1;user=")}, presented
        )
        assert unnamed.status_code == 400  # checked before the token is spent...
        good = {"ciphertext": ciphertext, "associated_data": b64("user=u1;n=1")}
        assert post("decrypt", good, presented).status_code == 200  # ...so it still works once
        assert post("decrypt", good, presented).status_code == 401  # and only once
        over = post("decrypt", good)  # u1's third operation in the day
        assert over.status_code == 429
        other = post("encrypt", {"plaintext": b64("s"), "associated_data": b64("user=u2")})
        assert other.status_code == 200
    found = records(vault)
    assert [r["status"] for r in found] == [200, 400, 200, 401, 429, 200]
    u1, u2 = found[0]["subjects"], found[-1]["subjects"]
    assert len(u1) == 1
    assert u1 != u2
    assert found[2]["subjects"] == u1
    assert all("u1" not in s and "u2" not in s for r in found for s in r.get("subjects", ()))
    assert found[3]["reason"].startswith("token already used")
