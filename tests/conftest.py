"""Shared fixtures: a real SoftHSM2 token and database in a temporary var dir, an in-process
runtime over them, and a real server process for end-to-end tests."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
_SESSION_VAR = (
    Path(os.environ.get("VAULT_TEST_VAR_DIR", "")) if os.environ.get("VAULT_TEST_VAR_DIR") else None
)


def _configure_env(var_dir: Path) -> None:
    """Point every VAULT_* setting at the test's own var dir before anything reads them."""
    os.environ["VAULT_VAR_DIR"] = str(var_dir)
    os.environ["SOFTHSM2_CONF"] = str(var_dir / "softhsm2.conf")
    os.environ["VAULT_POLICIES_DIR"] = str(ROOT / "policies")
    os.environ["VAULT_TOKEN_LABEL"] = "hsm-vault-test"
    os.environ["VAULT_DATABASE_URL"] = f"sqlite:///{var_dir / 'vault.db'}"
    os.environ.pop("VAULT_PIN", None)
    os.environ.pop("VAULT_SO_PIN", None)


@pytest.fixture(scope="session")
def var_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = _SESSION_VAR or tmp_path_factory.mktemp("var")
    _configure_env(path)
    return path


@pytest.fixture(scope="session")
def settings(var_dir: Path):  # type: ignore[no-untyped-def]
    from vault.bootstrap import bootstrap
    from vault.config import load_settings

    s = load_settings()
    bootstrap(s)
    return s


@pytest.fixture(scope="session")
def runtime(settings):  # type: ignore[no-untyped-def]
    """The session's vault (one HSM login per test process)."""
    from vault.runtime import Vault

    vault = Vault.open(settings)
    yield vault
    vault.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mint(settings, service: str, lifetime: int = 600) -> str:  # type: ignore[no-untyped-def]
    from vault.bootstrap import load_dev_key, mint_token

    return mint_token(load_dev_key(settings, service), service, settings.jwt_audience, lifetime)


class Server:
    """A real ``hsm-vault serve`` process on a free loopback port. ``tls``: httpx's ``verify``
    and ``cert`` arguments for a server started with ``VAULT_TLS_*`` (then over https)."""

    def __init__(  # type: ignore[no-untyped-def]
        self,
        settings,
        workers: int = 1,
        env: dict[str, str] | None = None,
        tls: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.port = free_port()
        self.tls = tls or {}
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        full_env = dict(os.environ)
        full_env["VAULT_LISTEN"] = f"127.0.0.1:{self.port}"
        full_env.update(env or {})
        exe = shutil.which("hsm-vault", path=str(Path(sys.executable).parent)) or "hsm-vault"
        self.log = (settings.var_dir / f"server-{self.port}.log").open("wb")
        self.proc = subprocess.Popen(
            [exe, "serve", "--workers", str(workers)],
            env=full_env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.read_log()}")
            try:
                if httpx.get(f"{self.url}/v1/sys/health", timeout=1, **self.tls).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server did not become healthy: {self.read_log()}")

    def read_log(self) -> str:
        return (self.settings.var_dir / f"server-{self.port}.log").read_text(errors="replace")

    def client(self, service: str | None, *, bearer: bool = False) -> httpx.Client:
        headers = {}
        if service is not None:
            token = mint(self.settings, service)
            headers = {"Authorization": f"Bearer {token}"} if bearer else {"X-Vault-Token": token}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **self.tls)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="session")
def server(settings) -> Iterator[Server]:  # type: ignore[no-untyped-def]
    srv = Server(settings)
    yield srv
    srv.stop()


# -- PostgreSQL ------------------------------------------------------------------------------

PG_ADMIN_URL = os.environ.get(
    "VAULT_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _pg_admin(statement: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(statement)


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database of its own (the machine's server, trust auth on
    loopback; ``.ci/run`` installs and starts it), dropped afterwards."""
    import uuid

    from vault import store

    name = f"hsmvault_test_{uuid.uuid4().hex[:12]}"
    _pg_admin(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    engine = store.make_engine(url)
    try:
        store.migrate(engine)
    finally:
        engine.dispose()
    try:
        yield url
    finally:
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each global property is checked on both backends: a fresh migrated database of each."""
    if request.param == "sqlite":
        from vault import store

        url = f"sqlite:///{tmp_path / 'vault.db'}"
        engine = store.make_engine(url)
        store.migrate(engine)
        engine.dispose()
        yield url
    else:
        yield request.getfixturevalue("pg_database")
