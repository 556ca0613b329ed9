"""The database goes away or stops taking writes while the service runs: every answer during
the fault is a 503 or a correct one, and afterwards the same processes answer correctly again
without a restart, having lost nothing they had accepted."""

from __future__ import annotations

import sqlite3
import urllib.parse
from collections.abc import Callable

import pytest
from sqlalchemy import make_url

from tests.conftest import Server
from tests.e2e.replicas import (
    OTP_KEY,
    HotpToken,
    b64,
    conformance_key,
    create_key,
    fresh_client,
    health,
    replicas,
    wait_for,
)
from tests.e2e.tcp_proxy import TcpProxy
from tests.e2e.test_metrics import scrape, value

pytestmark = pytest.mark.e2e


class Workload:
    """What a fault must not change: OTP positions accepted, ciphertexts handed out."""

    def __init__(self, server: Server) -> None:
        create_key(server, OTP_KEY, "otp-seed")
        self.key = conformance_key(server)
        self.token = HotpToken(server)
        self.next_counter = 0
        self.sealed: dict[str, str] = {}  # ciphertext -> plaintext (base64)
        self.otp = fresh_client(server, "token-management")
        self.transit = fresh_client(server, "transit-conformance")

    def close(self) -> None:
        self.otp.close()
        self.transit.close()

    def start(self, server: Server) -> list[int]:
        """An OTP accepted and a value encrypted before the fault; the workers' ids."""
        assert self.verify_next() == 200
        assert self.encrypt(0) == 200
        return server.wait_for_workers(2)

    def verify_next(self) -> int:
        r = self.token.verify(self.otp, self.next_counter)
        if r.status_code == 200:
            assert r.json()["data"]["valid"] is True, r.text
            self.next_counter += 1
        return r.status_code

    def encrypt(self, i: int) -> int:
        plaintext = b64(f"secret {i}".encode())
        r = self.transit.post(f"/v1/transit/encrypt/{self.key}", json={"plaintext": plaintext})
        if r.status_code == 200:
            self.sealed[r.json()["data"]["ciphertext"]] = plaintext
        return r.status_code

    def check_nothing_lost(self) -> None:
        for counter in range(self.next_counter):
            r = self.token.verify(self.otp, counter)
            assert r.status_code == 200, r.text
            assert r.json()["data"] == {"valid": False, "reason": "replayed"}, counter
        for ciphertext, plaintext in self.sealed.items():
            r = self.transit.post(
                f"/v1/transit/decrypt/{self.key}", json={"ciphertext": ciphertext}
            )
            assert r.status_code == 200, r.text
            assert r.json()["data"]["plaintext"] == plaintext


def test_postgresql_refusing_connections_is_503_then_recovers(settings, pg_database: str) -> None:  # type: ignore[no-untyped-def]
    url = make_url(pg_database)
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
    proxy.start()
    through_proxy = url.set(port=proxy.port).render_as_string(hide_password=False)
    try:
        with replicas(settings, through_proxy, count=1) as (server,):
            work = Workload(server)
            try:
                pids = work.start(server)

                errors = value(scrape(server), "vault_database_errors_total")
                proxy.stop()
                wait_for(lambda: health(server) == 503, "health is 503")
                for i in range(6):  # both workers, new connections each time
                    assert work.verify_next() == 503
                    assert work.encrypt(i + 1) in (200, 503)
                with server.client("security-officer") as officer:
                    assert officer.post(f"/v1/transit/keys/{work.key}/rotate").status_code == 503
                assert value(scrape(server), "vault_database_errors_total") > errors

                proxy.start()
                wait_for(lambda: health(server) == 200, "health is 200 again")
                assert work.verify_next() == 200  # the code refused during the outage
                assert work.verify_next() == 200
                assert work.encrypt(100) == 200
                work.check_nothing_lost()
                assert server.proc.poll() is None
                assert sorted(server.workers()) == sorted(pids)  # no worker was restarted
            finally:
                work.close()
    finally:
        proxy.stop()


def _sqlite_read_only(path: str, on: bool) -> None:
    """Make every table refuse writes (or take them again), as a full or read-only volume
    would; the service's own connections stay open."""
    with sqlite3.connect(path, timeout=30) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        for table in tables:
            for action in ("INSERT", "UPDATE", "DELETE"):
                trigger = f"fault_{table}_{action.lower()}"
                if on:
                    conn.execute(
                        f"CREATE TRIGGER {trigger} BEFORE {action} ON {table} "
                        "BEGIN SELECT RAISE(ABORT, 'database is read-only'); END"
                    )
                else:
                    conn.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    conn.close()


def _postgresql_read_only(url: str, on: bool) -> None:
    """Make the database read-only for every new transaction and cut the open connections,
    as a primary demoted to a standby does."""
    import psycopg

    name = make_url(url).database
    admin = make_url(url).set(database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        setting = (
            "SET default_transaction_read_only = on"
            if on
            else "RESET default_transaction_read_only"
        )
        conn.execute(f'ALTER DATABASE "{name}" {setting}')
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )


def _read_only(database_url: str) -> Callable[[bool], None]:
    if database_url.startswith("sqlite"):
        path = urllib.parse.urlparse(database_url).path
        return lambda on: _sqlite_read_only(path, on)
    return lambda on: _postgresql_read_only(database_url, on)


def test_a_database_that_refuses_writes_is_503_for_writes_then_recovers(
    settings, database_url: str
) -> None:  # type: ignore[no-untyped-def]
    read_only = _read_only(database_url)
    with replicas(settings, database_url, count=1) as (server,):
        work = Workload(server)
        try:
            pids = work.start(server)

            read_only(True)
            try:
                for i in range(6):
                    assert work.verify_next() == 503  # an acceptance must be written first
                    assert work.encrypt(i + 1) in (200, 503)  # reads only
                with server.client("security-officer") as officer:
                    r = officer.post(f"/v1/transit/keys/{work.key}/rotate")
                    assert r.status_code == 503, r.text
                    r = officer.get(f"/v1/transit/keys/{work.key}")
                    assert r.status_code in (200, 503)
                    if r.status_code == 200:
                        assert r.json()["data"]["latest_version"] == 1
            finally:
                read_only(False)

            wait_for(lambda: work.verify_next() == 200, "an OTP is accepted again")
            assert work.encrypt(100) == 200
            work.check_nothing_lost()
            assert sorted(server.workers()) == sorted(pids)
        finally:
            work.close()
