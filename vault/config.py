"""Service configuration, read once from ``VAULT_*`` environment variables.

Secrets (PINs) are never taken from argv: only from an environment variable or a file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from vault.errors import ConfigError

_PREFIX = "VAULT_"
DEFAULT_OTP_SEED_CACHE = 4096


def _env(name: str, default: str) -> str:
    return os.environ.get(_PREFIX + name, default)


def _env_or_file(name: str, default: str) -> str:
    """``VAULT_<name>``, or the first line of the file ``VAULT_<name>_FILE`` names (a mounted
    secret: a database URL carries its password)."""
    path = os.environ.get(f"{_PREFIX}{name}_FILE")
    if not path:
        return _env(name, default)
    try:
        value = Path(path).read_text(encoding="utf-8").strip().splitlines()
    except OSError:
        raise ConfigError(f"cannot read {_PREFIX}{name}_FILE {path}") from None
    if not value or not value[0].strip():
        raise ConfigError(f"{_PREFIX}{name}_FILE {path} is empty")
    return value[0].strip()


def _env_int(name: str, default: int) -> int:
    raw = _env(name, str(default))
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{_PREFIX}{name} must be an integer") from None


def _env_seconds(name: str, default: float) -> float:
    raw = _env(name, str(default))
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{_PREFIX}{name} must be a number of seconds") from None
    if not 0 < value < 3600:
        raise ConfigError(f"{_PREFIX}{name} must be between 0 and 3600 seconds")
    return value


def _env_bounded(name: str, default: float, least: float, most: float) -> float:
    raw = _env(name, str(default))
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{_PREFIX}{name} must be a number of seconds") from None
    if not least <= value <= most:
        raise ConfigError(f"{_PREFIX}{name} must be between {least:g} and {most:g} seconds")
    return value


def _env_bool(name: str, default: bool) -> bool:
    raw = _env(name, "true" if default else "false").strip().lower()
    if raw not in ("true", "false", "1", "0", "yes", "no"):
        raise ConfigError(f"{_PREFIX}{name} must be true or false")
    return raw in ("true", "1", "yes")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the service and the officers' CLI need to find the HSM and the database."""

    var_dir: Path
    database_url: str
    pkcs11_module: str
    token_label: str
    pin_file: Path
    so_pin_file: Path
    policies_dir: Path
    listen: str
    workers: int
    jwt_audience: str
    jwt_algorithms: tuple[str, ...]
    jwt_max_lifetime: int
    jwt_leeway: int
    key_cache_ttl: float
    max_batch_items: int
    max_body_bytes: int
    softhsm_conf: Path
    hsm_timeout: float = 5.0
    db_timeout: float = 5.0
    worker_stall_timeout: float = 30.0
    lean_dispatch: bool = True
    dev_token_lifetime: int = 24 * 3600
    # Dual control: how long a request for two officers' approvals stays usable.
    approval_ttl: float = 3600.0
    # Automatic rotation: how often each worker looks for keys that are due (the one
    # holding the lease rotates them), and the shortest auto_rotate_period a key may have.
    # Vault's minimum is an hour; only tests lower it (VAULT_TEST_MIN_AUTO_ROTATE_PERIOD),
    # and keys declared in policies/keys.toml keep the hour whatever it says.
    auto_rotate_interval: float = 60.0
    min_auto_rotate_period: int = 3600
    # Tests only, never in production: a file whose contents make the HSM fail on demand
    # (hsm/_faults.py). Unset, no fault can be injected.
    test_hsm_fault_file: str | None = None
    revocation_poll: float = 1.0
    audit_checkpoint_records: int = 1000
    audit_checkpoint_seconds: float = 5.0
    audit_retention_days: int = 365
    # Unwrapped OTP seeds each worker's HSM session keeps (docs/design.md, OTP); 0: none.
    otp_seed_cache: int = DEFAULT_OTP_SEED_CACHE
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    tls_client_optional: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        try:
            return int(self.listen.rsplit(":", 1)[1])
        except (IndexError, ValueError):
            raise ConfigError("VAULT_LISTEN must be host:port") from None

    def user_pin(self) -> str:
        """The token user's PIN: ``VAULT_PIN`` if set, else the first line of the PIN file."""
        return _read_secret("PIN", self.pin_file)

    def so_pin(self) -> str:
        return _read_secret("SO_PIN", self.so_pin_file)


def _read_secret(env_name: str, path: Path) -> str:
    value = os.environ.get(_PREFIX + env_name)
    if value:
        return value
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        raise ConfigError(f"no {_PREFIX}{env_name} and cannot read the PIN file {path}") from None
    value = text.splitlines()[0].strip() if text.strip() else ""
    if not value:
        raise ConfigError(f"the PIN file {path} is empty")
    return value


def _env_path(name: str) -> Path | None:
    raw = _env(name, "")
    return Path(raw).resolve() if raw else None


def _env_count(name: str, default: int) -> int:
    value = _env_int(name, default)
    if value < 0:
        raise ConfigError(f"{_PREFIX}{name} must be 0 or more")
    return value


def _env_positive(name: str, default: int) -> int:
    value = _env_int(name, default)
    if value < 1:
        raise ConfigError(f"{_PREFIX}{name} must be at least 1")
    return value


def _tls(settings: Settings) -> Settings:
    """TLS is all or nothing: a certificate needs its key; client CAs need a certificate."""
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise ConfigError(f"{_PREFIX}TLS_CERT and {_PREFIX}TLS_KEY go together")
    if settings.tls_client_ca is not None and settings.tls_cert is None:
        raise ConfigError(f"{_PREFIX}TLS_CLIENT_CA needs {_PREFIX}TLS_CERT and {_PREFIX}TLS_KEY")
    return settings


def load_settings() -> Settings:
    var_dir = Path(_env("VAR_DIR", "var")).resolve()
    algorithms = tuple(a.strip() for a in _env("JWT_ALGORITHMS", "EdDSA,ES256").split(",") if a)
    allowed = {"EdDSA", "ES256", "ES384", "RS256", "PS256"}
    if not algorithms or not set(algorithms) <= allowed:
        raise ConfigError(f"{_PREFIX}JWT_ALGORITHMS must be a subset of {sorted(allowed)}")
    return _tls(
        Settings(
            var_dir=var_dir,
            database_url=_env_or_file("DATABASE_URL", f"sqlite:///{var_dir / 'vault.db'}"),
            pkcs11_module=_env("PKCS11_MODULE", "/usr/lib/softhsm/libsofthsm2.so"),
            token_label=_env("TOKEN_LABEL", "hsm-vault"),
            pin_file=Path(_env("PIN_FILE", str(var_dir / "softhsm" / "user.pin"))),
            so_pin_file=Path(_env("SO_PIN_FILE", str(var_dir / "softhsm" / "so.pin"))),
            policies_dir=Path(_env("POLICIES_DIR", "policies")).resolve(),
            listen=_env("LISTEN", "127.0.0.1:8200"),
            workers=_env_int("WORKERS", 2),
            jwt_audience=_env("JWT_AUDIENCE", "hsm-vault"),
            jwt_algorithms=algorithms,
            jwt_max_lifetime=_env_int("JWT_MAX_LIFETIME", 24 * 3600),
            jwt_leeway=_env_int("JWT_LEEWAY", 30),
            key_cache_ttl=_env_seconds("KEY_CACHE_TTL", 1.0),
            max_batch_items=_env_int("MAX_BATCH_ITEMS", 1000),
            max_body_bytes=_env_int("MAX_BODY_BYTES", 8 * 1024 * 1024),
            softhsm_conf=Path(_env("SOFTHSM2_CONF", str(var_dir / "softhsm2.conf"))),
            hsm_timeout=_env_seconds("HSM_TIMEOUT", 5.0),
            db_timeout=_env_seconds("DB_TIMEOUT", 5.0),
            worker_stall_timeout=_env_seconds("WORKER_STALL_TIMEOUT", 30.0),
            lean_dispatch=_env_bool("LEAN_DISPATCH", True),
            approval_ttl=_env_bounded("APPROVAL_TTL", 3600.0, 60.0, 7 * 86400.0),
            auto_rotate_interval=_env_bounded("AUTO_ROTATE_INTERVAL", 60.0, 0.05, 3600.0),
            min_auto_rotate_period=int(
                _env_bounded("TEST_MIN_AUTO_ROTATE_PERIOD", 3600.0, 1.0, 3600.0)
            ),
            test_hsm_fault_file=_env("TEST_HSM_FAULT_FILE", "") or None,
            revocation_poll=_env_seconds("REVOCATION_POLL", 1.0),
            audit_checkpoint_records=_env_positive("AUDIT_CHECKPOINT_RECORDS", 1000),
            audit_checkpoint_seconds=_env_seconds("AUDIT_CHECKPOINT_SECONDS", 5.0),
            audit_retention_days=_env_positive("AUDIT_RETENTION_DAYS", 365),
            otp_seed_cache=_env_count("OTP_SEED_CACHE", DEFAULT_OTP_SEED_CACHE),
            tls_cert=_env_path("TLS_CERT"),
            tls_key=_env_path("TLS_KEY"),
            tls_client_ca=_env_path("TLS_CLIENT_CA"),
            tls_client_optional=_env_bool("TLS_CLIENT_OPTIONAL", False),
        )
    )
