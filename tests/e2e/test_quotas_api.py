"""Quotas over HTTP, across two server processes on PostgreSQL: the policies' "a user's share
is retrieved at most three times a day" and "the identity service stores at most ten shares a
minute" (policies/quotas.toml)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest

from tests.e2e.trust_support import b64, headers, record_of, servers, share_ad, token, with_keys

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]
ENCRYPT = "/v1/transit/encrypt/backup-share"
DECRYPT = "/v1/transit/decrypt/backup-share"


def stored_share(replica: Any, user: str) -> dict[str, str]:
    ad = share_ad(user)
    with replica.client("backup-service") as backup:
        made = backup.post(
            ENCRYPT, json={"plaintext": b64(b"share of " + user.encode()), "associated_data": ad}
        )
    assert made.status_code == 200, made.text
    return {"ciphertext": made.json()["data"]["ciphertext"], "associated_data": ad}


def retrieve(settings: Any, replica: Any, share: dict[str, str]) -> httpx.Response:
    """One retrieval by the recovery service (a fresh token each time: its grant is single-use)."""
    return httpx.post(
        f"{replica.url}{DECRYPT}",
        json=share,
        headers=headers(token(settings, "recovery-service")),
        timeout=30,
    )


def test_the_fourth_retrieval_of_a_users_share_in_a_day_is_429(settings, pg_database) -> None:  # type: ignore[no-untyped-def]
    on_pg = with_keys(settings, pg_database)
    alice, bob = f"alice-{uuid.uuid4().hex[:6]}", f"bob-{uuid.uuid4().hex[:6]}"
    with servers(settings, pg_database) as replicas:
        share_a, share_b = stored_share(replicas[0], alice), stored_share(replicas[1], bob)
        for i in range(3):  # spread over both processes
            allowed = retrieve(settings, replicas[i % 2], share_a)
            assert allowed.status_code == 200, allowed.text
        refused = retrieve(settings, replicas[1], share_a)
        assert refused.status_code == 429, refused.text
        retry_after = int(refused.headers["retry-after"])
        assert 86000 < retry_after <= 86400  # the first retrieval leaves the window in a day
        assert "share-retrieval" in refused.json()["errors"][0]
        assert retrieve(settings, replicas[0], share_a).status_code == 429  # either process
        assert retrieve(settings, replicas[0], share_b).status_code == 200  # another user's
        # Refused before any HSM work, and audited with the quota's reason and the subject's
        # digest (never the user's id).
        record = record_of(on_pg.database_url, refused, wait=2.0)
        assert (record["status"], record["error"]) == (429, "QuotaExceeded")
        assert "share-retrieval" in record["reason"]
        assert len(record["subjects"]) == 1
        assert alice not in record["subjects"][0]
        same_user = record_of(
            on_pg.database_url, retrieve(settings, replicas[0], share_a), wait=2.0
        )
        assert same_user["subjects"] == record["subjects"]
        # A request the per-subject quota covers must name its subject.
        unnamed = retrieve(
            settings,
            replicas[0],
            {"ciphertext": share_a["ciphertext"], "associated_data": b64(b"user=x")},
        )
        assert unnamed.status_code == 400
        with replicas[0].client(None) as anonymous:
            text = anonymous.get("/metrics").text
        assert "vault_quota_refusals_total{" in text
        assert 'quota="share-retrieval"' in text


def test_a_fixed_window_per_service(settings, pg_database) -> None:  # type: ignore[no-untyped-def]
    with_keys(settings, pg_database)
    with servers(settings, pg_database) as replicas:
        if time.time() % 60 > 45:  # the window is a calendar minute: start in a fresh one
            time.sleep(61 - time.time() % 60)
        body = {"plaintext": b64(b"x"), "associated_data": share_ad("u-store")}
        presented = headers(token(settings, "identity-service"))
        statuses = [
            httpx.post(f"{replicas[i % 2].url}{ENCRYPT}", json=body, headers=presented, timeout=30)
            for i in range(11)
        ]
    assert [r.status_code for r in statuses] == [200] * 10 + [429]
    assert 1 <= int(statuses[-1].headers["retry-after"]) <= 60
