"""Shared fixtures: a real SoftHSM2 token and database in a temporary var dir, an in-process
runtime over them, and a real server process for end-to-end tests."""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import settings as hypothesis_settings

ROOT = Path(__file__).resolve().parent.parent
# The property tests check what holds, not how fast: on a loaded CI machine an example may
# take longer than hypothesis's default 200 ms deadline, which then fails the test (flaky).
hypothesis_settings.register_profile("suite", deadline=None)
hypothesis_settings.load_profile("suite")
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
def var_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The session's var dir. With ``VAULT_TEST_DATABASE=postgresql`` (``make test``'s second
    pass) the session's database, which every in-process vault and every server uses, is a
    fresh PostgreSQL one instead of SQLite."""
    path = _SESSION_VAR or tmp_path_factory.mktemp("var")
    _configure_env(path)
    backend = os.environ.get("VAULT_TEST_DATABASE", "sqlite")
    if backend == "sqlite":
        yield path
        return
    if backend != "postgresql":
        raise pytest.UsageError("VAULT_TEST_DATABASE must be sqlite or postgresql")
    _require_postgres()
    name = _pg_create("session")
    os.environ["VAULT_DATABASE_URL"] = _pg_url(name)
    try:
        yield path
    finally:
        _pg_drop(name)


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


class Unclosed:
    """The session's vault for an in-process app, left open when the app shuts down (closing
    the session that logged in would log out the whole test process)."""

    def __init__(self, vault: Any) -> None:
        self._vault = vault

    def __getattr__(self, name: str) -> Any:
        return getattr(self._vault, name)

    def close(self) -> None:
        pass


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
        healthy: bool = True,
        tls: dict[str, Any] | None = None,
    ) -> None:
        """Start and wait until it is ready (``healthy=False``: only until it answers, for
        servers started while the HSM or the database is away; ``tls``: httpx's arguments
        for a server that speaks TLS)."""
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
                probe = "/v1/sys/health" if healthy else "/v1/sys/live"
                if httpx.get(f"{self.url}{probe}", timeout=1, **self.tls).status_code == 200:
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

    def workers(self) -> list[int]:
        """The ids of the server's worker processes (its children)."""
        pids: list[int] = []
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            with contextlib.suppress(OSError):
                pids += [int(pid) for pid in (task / "children").read_text().split()]
        return pids

    def wait_for_workers(self, count: int, timeout: float = 60) -> list[int]:
        """The worker ids once ``count`` workers run and the server is healthy again."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = self.workers()
            if len(pids) == count and self.healthy():
                return pids
            time.sleep(0.1)
        raise AssertionError(f"{count} workers did not come up: {self.workers()}")

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/v1/sys/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        """SIGKILL the whole replica, server process first so that nothing respawns a worker:
        no shutdown code runs anywhere, as when a machine fails."""
        workers = self.workers()
        self.proc.kill()
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait()
        self.log.close()

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


_OBJECT = re.compile(r"^(Secret Key|Private Key|Public Key) Object", re.MULTILINE)


def token_objects(settings) -> list[dict[str, str]]:  # type: ignore[no-untyped-def]
    """The token's objects as OpenSC's pkcs11-tool lists them: an independent reader."""
    tool = shutil.which("pkcs11-tool")
    if tool is None:
        pytest.fail("pkcs11-tool (Debian's opensc) is required: `make test` installs it")
    env = dict(
        os.environ, VAULT_TEST_PIN=settings.user_pin(), SOFTHSM2_CONF=str(settings.softhsm_conf)
    )
    out = subprocess.run(  # the PIN travels in the environment (env:NAME), never in argv
        [
            tool,
            "--module",
            settings.pkcs11_module,
            "--token-label",
            settings.token_label,
            "-l",
            "--pin",
            "env:VAULT_TEST_PIN",
            "-O",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    objects = []
    starts = [m.start() for m in _OBJECT.finditer(out)] + [len(out)]
    for a, b in itertools.pairwise(starts):
        text = out[a:b]
        fields = {"kind": text.split(" Object", 1)[0]}
        for line in text.splitlines()[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                fields[k.strip().lower()] = v.strip()
        objects.append(fields)
    return objects


# -- PostgreSQL ------------------------------------------------------------------------------

PG_ADMIN_URL = os.environ.get(
    "VAULT_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
# .ci/run sets this: there, a PostgreSQL that cannot be reached fails the tests that need it
# instead of skipping them.
PG_REQUIRED = os.environ.get("VAULT_TEST_REQUIRE_POSTGRES", "") not in ("", "0")


def _pg_admin(statement: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(statement)


@functools.cache
def _pg_reachable() -> bool:
    try:
        _pg_admin("SELECT 1")
    except Exception:
        return False
    return True


def _require_postgres() -> None:
    if not _pg_reachable():
        message = f"PostgreSQL is not reachable at {PG_ADMIN_URL} (.ci/run installs and starts it)"
        if PG_REQUIRED:
            pytest.fail(message)
        pytest.skip(message)


def _pg_url(name: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def _pg_create(kind: str) -> str:
    """A new empty database; its name says which test run made it."""
    import uuid

    name = f"hsmvault_{kind}_{uuid.uuid4().hex[:12]}"
    _pg_admin(f'CREATE DATABASE "{name}"')
    return name


def _pg_drop(name: str) -> None:
    _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database of its own (the machine's server, trust auth on
    loopback; ``.ci/run`` installs and starts it), dropped afterwards."""
    from vault import store

    _require_postgres()
    name = _pg_create("test")
    url = _pg_url(name)
    engine = store.make_engine(url)
    try:
        store.migrate(engine)
    finally:
        engine.dispose()
    try:
        yield url
    finally:
        _pg_drop(name)


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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses a PostgreSQL database of its own carries the ``postgres`` marker,
    and every test on a SQLite database of its own the ``first_pass_only`` marker: the
    session's database is not theirs, so ``make test``'s PostgreSQL pass, which deselects
    both, would only run them again."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        callspec = getattr(item, "callspec", None)
        own = callspec.params.get("database_url") if callspec is not None else None
        if "pg_database" in fixtures or own == "postgresql":
            item.add_marker(pytest.mark.postgres)
        elif own == "sqlite":
            item.add_marker(pytest.mark.first_pass_only)
