"""The HSM fails under a running two-worker server: a device error, a closed session, a token
that logged us out, the token's store unreadable. During the fault every answer is a 503 or a
correct one; afterwards the same processes answer correctly again, without a restart.

Device errors and lost logins are injected at the adapter's boundary (hsm/_faults.py: the
server reads ``VAULT_TEST_HSM_FAULT_FILE``); the session is really closed; the token's
directory is really moved away.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Server
from tests.e2e.replicas import DEADLINE, HotpToken, b64, fresh_client, health, wait_for
from tests.e2e.test_metrics import scrape, value

pytestmark = [pytest.mark.e2e, pytest.mark.first_pass_only]  # HSM faults: any database


class Faulty:
    """A two-worker server whose HSM fails on demand, and what it answered before."""

    def __init__(self, settings, fault_file: Path) -> None:  # type: ignore[no-untyped-def]
        self.fault_file = fault_file
        self.server = Server(
            settings, workers=2, env={"VAULT_TEST_HSM_FAULT_FILE": str(fault_file)}
        )
        self.pids = self.server.wait_for_workers(2)
        self.transit = fresh_client(self.server, "backup-service")
        self.otp = fresh_client(self.server, "token-management")
        self.token = HotpToken(self.server)
        self.next_counter = 0
        self.sealed: dict[str, str] = {}
        self.sealed_elsewhere: list[tuple[str, str]] = []  # (key, ciphertext of b"new")
        for i in range(3):
            assert self.encrypt(i) == 200
        assert self.verify_next() == 200

    def inject(self, line: str) -> None:
        temporary = self.fault_file.with_suffix(".tmp")
        temporary.write_text(line + "\n")
        temporary.rename(self.fault_file)  # the server never reads half a line

    def clear(self) -> None:
        self.fault_file.unlink(missing_ok=True)

    def close(self) -> None:
        self.transit.close()
        self.otp.close()
        self.server.stop()

    def encrypt(self, i: int) -> int:
        plaintext = b64(f"share {i} {uuid.uuid4()}".encode())
        r = self.transit.post("/v1/transit/encrypt/backup-share", json={"plaintext": plaintext})
        if r.status_code == 200:
            self.sealed[r.json()["data"]["ciphertext"]] = plaintext
        return r.status_code

    def decrypt_all(self) -> set[int]:
        """Every ciphertext handed out so far: each answer is a 503 or the right plaintext."""
        statuses = set()
        for ciphertext, plaintext in self.sealed.items():
            r = self.transit.post(
                "/v1/transit/decrypt/backup-share", json={"ciphertext": ciphertext}
            )
            statuses.add(r.status_code)
            if r.status_code == 200:
                assert r.json()["data"]["plaintext"] == plaintext
            else:
                assert r.status_code == 503, r.text
        return statuses

    def verify_next(self) -> int:
        r = self.token.verify(self.otp, self.next_counter)
        if r.status_code == 200:
            assert r.json()["data"]["valid"] is True, r.text
            self.next_counter += 1
        else:
            assert r.status_code == 503, r.text
        return r.status_code

    def answers(self, rounds: int = 6) -> set[int]:
        """A few rounds of every operation, over new connections (both workers)."""
        statuses: set[int] = set()
        for i in range(rounds):
            statuses.add(self.encrypt(1000 + i))
            statuses |= self.decrypt_all()
            statuses.add(self.verify_next())
        assert statuses <= {200, 503}
        return statuses

    def all_correct(self) -> bool:
        return self.answers(rounds=2) == {200} and self.server.healthy()

    def recovered(self) -> None:
        """Correct answers again, from the same processes, nothing lost."""
        wait_for(self.all_correct, "every answer is correct again")
        for _ in range(5):  # and it stays so
            assert self.answers(rounds=1) == {200}
        # The ledger kept every accepted position, and an accepted code is a replay now.
        assert self.token.state(self.otp)["counter"] == self.next_counter - 1
        r = self.token.verify(self.otp, self.next_counter - 1)
        assert r.json()["data"] == {"valid": False, "reason": "replayed"}
        assert self.server.proc.poll() is None
        assert sorted(self.server.workers()) == sorted(self.pids)


@pytest.fixture
def faulty(settings, tmp_path: Path) -> Iterator[Faulty]:  # type: ignore[no-untyped-def]
    f = Faulty(settings, tmp_path / "hsm-fault")
    yield f
    f.clear()
    f.close()


def test_a_device_error_is_503_until_the_device_is_back(faulty: Faulty) -> None:
    lost_before = value(scrape(faulty.server), "vault_hsm_sessions_lost_total")
    faulty.inject("device-error")
    wait_for(lambda: health(faulty.server) == 503, "health is 503")
    assert faulty.answers() == {503}  # nothing works without the device
    after = scrape(faulty.server)
    assert value(after, "vault_hsm_errors_total", error="HsmUnavailable") > 0
    assert value(after, "vault_hsm_sessions_lost_total") > lost_before
    faulty.clear()
    faulty.recovered()
    assert value(scrape(faulty.server), "vault_hsm_session_open") == 2


@pytest.mark.parametrize("fault", ["session-closed", "logged-out"])
def test_a_lost_session_or_login_costs_a_503_then_recovers(faulty: Faulty, fault: str) -> None:
    logins = value(scrape(faulty.server), "vault_hsm_logins_total")
    faulty.inject(f"{fault} {uuid.uuid4()}")
    seen: set[int] = set()
    deadline = time.monotonic() + DEADLINE
    while 503 not in seen:  # each worker fails the job that meets the fault, once
        assert time.monotonic() < deadline, "the fault never showed"
        seen |= faulty.answers(rounds=1)
    faulty.recovered()
    assert value(scrape(faulty.server), "vault_hsm_logins_total") > logins  # logged in again


def test_an_unreadable_token_store_is_503_then_recovers(faulty: Faulty, settings) -> None:  # type: ignore[no-untyped-def]
    """A worker works from the copies of the keys it has used: those go on answering. A key it
    has not used yet must be read from the token's store, which is gone: that worker's session
    is lost and every answer of it is a 503 until the store is back."""
    tokens = settings.var_dir / "softhsm" / "tokens"
    away = tokens.with_name("tokens.away")
    key = f"conformance-{uuid.uuid4().hex[:12]}"
    with fresh_client(faulty.server, "transit-conformance") as c:
        assert c.post(f"/v1/transit/keys/{key}").status_code in (200, 204)

        def encrypt_with_new_key() -> int:
            r = c.post(f"/v1/transit/encrypt/{key}", json={"plaintext": b64(b"new")})
            if r.status_code == 200:
                faulty.sealed_elsewhere.append((key, r.json()["data"]["ciphertext"]))
            return r.status_code

        os.rename(tokens, away)
        try:
            seen: set[int] = set()
            deadline = time.monotonic() + DEADLINE
            while 503 not in seen:
                assert time.monotonic() < deadline, "the fault never showed"
                seen.add(encrypt_with_new_key())
                seen |= faulty.answers(rounds=1)
            assert seen <= {200, 503}
        finally:
            os.rename(away, tokens)
        faulty.recovered()
        assert encrypt_with_new_key() == 200
        for name, ciphertext in faulty.sealed_elsewhere:
            r = c.post(f"/v1/transit/decrypt/{name}", json={"ciphertext": ciphertext})
            assert r.status_code == 200, r.text
            assert r.json()["data"]["plaintext"] == b64(b"new")
