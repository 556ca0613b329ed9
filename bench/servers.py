"""The three servers under test, each started the way it is meant to be run."""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

import httpx

from bench.procs import ServerProcess, free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# The vault's own server settings (api/cli.py `serve`), for the bare endpoint.
GRANIAN_FLAGS = (
    "--interface",
    "asgi",
    "--workers",
    "2",
    "--loop",
    "uvloop",
    "--http",
    "1",
    "--no-ws",
    "--backlog",
    "4096",
    "--no-access-log",
    "--respawn-failed-workers",
)
# What the vault was served with before it moved to granian (and what the brief asked for).
UVICORN_FLAGS = (
    "--workers",
    "2",
    "--loop",
    "uvloop",
    "--http",
    "httptools",
    "--no-access-log",
    "--log-level",
    "warning",
    "--backlog",
    "4096",
    "--timeout-keep-alive",
    "30",
    "--no-proxy-headers",
    "--no-server-header",
    "--no-date-header",
)
BARE_SERVERS = ("granian", "uvicorn")


def vault_http_server() -> str:
    """Which HTTP server ``hsm-vault serve`` runs (read from its source: granian or uvicorn)."""
    try:
        source = (ROOT / "api" / "cli.py").read_text(encoding="utf-8")
    except OSError:
        return "granian"
    return "granian" if "Granian(" in source else "uvicorn"


def vault_env() -> dict[str, str]:
    """The environment the Makefile exports, with defaults for a direct ``python -m``."""
    env = dict(os.environ)
    var_dir = Path(env.get("VAULT_VAR_DIR", ROOT / "var")).resolve()
    env["VAULT_VAR_DIR"] = str(var_dir)
    env.setdefault("SOFTHSM2_CONF", str(var_dir / "softhsm2.conf"))
    env.setdefault("VAULT_POLICIES_DIR", str(ROOT / "policies"))
    return env


def start_vault(
    log_dir: Path, workers: int = 2, *, name: str = "hsm-vault", database_url: str | None = None
) -> ServerProcess:
    port = free_port()
    env = vault_env()
    env["VAULT_LISTEN"] = f"127.0.0.1:{port}"
    if database_url is not None:
        env["VAULT_DATABASE_URL"] = database_url
    server = ServerProcess(
        name,
        [str(BIN / "hsm-vault"), "serve", "--workers", str(workers)],
        port=port,
        log_path=log_dir / f"{name}.log",
        env=env,
        cwd=ROOT,
    )
    try:
        server.wait_healthy("/v1/sys/health")
    except BaseException:
        server.stop()
        raise
    return server


def start_bare(log_dir: Path, server: str) -> ServerProcess:
    """bench/bare_app.py under ``server`` (granian or uvicorn) with the vault's settings."""
    port = free_port()
    address = ("--host", "127.0.0.1", "--port", str(port))
    if server == "granian":
        argv = [str(BIN / "granian"), *GRANIAN_FLAGS, *address, "bench.bare_app:app"]
    else:
        argv = [sys.executable, "-m", "uvicorn", "bench.bare_app:app", *address, *UVICORN_FLAGS]
    process = ServerProcess(
        f"bare-{server}",
        argv,
        port=port,
        log_path=log_dir / f"bare-{server}.log",
        env=dict(os.environ),
        cwd=ROOT,
    )
    try:
        # No health route: any HTTP answer (a 405 for GET here) means it is listening.
        process.wait_healthy("/v1/transit/encrypt/bench", expect_any=True)
    except BaseException:
        process.stop()
        raise
    return process


class OpenBao:
    """``bao server -dev`` (in-memory storage) with Transit mounted and three keys.

    The root token is random, handed over in the environment (not argv), and never printed;
    HOME points at a private directory so the dev server's token helper file lands there.
    """

    AES_KEY = "bench"
    HMAC_KEY = "bench-hmac"
    ECDSA_KEY = "bench-ecdsa"

    def __init__(self, log_dir: Path, home: Path) -> None:
        self.token = secrets.token_urlsafe(24)
        port = free_port()
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "BAO_DEV_ROOT_TOKEN_ID": self.token,
        }
        self.server = ServerProcess(
            "openbao",
            [str(BIN / "bao"), "server", "-dev", f"-dev-listen-address=127.0.0.1:{port}"],
            port=port,
            log_path=log_dir / "openbao.log",
            env=env,
            cwd=home,
            secrets=[self.token],
        )
        try:
            self.server.wait_healthy("/v1/sys/health")
            self._configure()
        except BaseException:
            self.server.stop()
            raise

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def process(self) -> ServerProcess:
        return self.server

    def headers(self) -> dict[str, str]:
        return {"X-Vault-Token": self.token}

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers(), timeout=30)

    def _configure(self) -> None:
        with self.client() as c:
            c.post("/v1/sys/mounts/transit", json={"type": "transit"}).raise_for_status()
            for name, body in (
                (self.AES_KEY, {"type": "aes256-gcm96"}),
                (self.HMAC_KEY, {"type": "hmac", "key_size": 32}),
                (self.ECDSA_KEY, {"type": "ecdsa-p256"}),
            ):
                c.post(f"/v1/transit/keys/{name}", json=body).raise_for_status()

    def stop(self) -> None:
        self.server.stop()
