"""Wiring: one ``Runtime`` per process holds the HSM thread, the database and the services."""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass, field

from sqlalchemy import insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from vault import db
from vault.auth import Authenticator
from vault.config import Settings
from vault.envelope import Envelope, NonceSequence
from vault.errors import StoreUnavailable
from vault.hsm import Hsm
from vault.keys import KeyRegistry
from vault.otp.ledger import LockoutPolicy, ReplayLedger
from vault.otp.service import OtpService
from vault.policy import Policies, load_policies
from vault.transit import Transit

log = logging.getLogger("vault")


def allocate_nonce_prefix(engine: Engine) -> int:
    """A fixed field no other process has had (SP 800-38D §8.2.1)."""
    owner = f"{socket.gethostname()}:{os.getpid()}"[:128]
    try:
        with engine.begin() as conn:
            result = conn.execute(
                insert(db.nonce_prefixes).values(created_at=time.time(), owner=owner)
            )
            key = result.inserted_primary_key
    except SQLAlchemyError:
        raise StoreUnavailable() from None
    if key is None:
        raise StoreUnavailable()
    return int(key[0])


def open_hsm(settings: Settings) -> Hsm:
    import hsm  # noqa: PLC0415 - keeps pkcs11 out of processes that never touch the HSM

    os.environ.setdefault("SOFTHSM2_CONF", str(settings.softhsm_conf))
    return hsm.connect(settings.pkcs11_module, settings.token_label, settings.user_pin())


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    hsm: Hsm
    policies: Policies
    registry: KeyRegistry
    transit: Transit
    otp: OtpService
    authenticator: Authenticator
    extras: dict[str, object] = field(default_factory=dict)

    @classmethod
    def start(cls, settings: Settings, *, hsm: Hsm | None = None) -> Runtime:
        policies = load_policies(settings.policies_dir, settings.var_dir)
        engine = db.make_engine(settings.database_url)
        the_hsm = hsm if hsm is not None else open_hsm(settings)
        registry = KeyRegistry(engine, the_hsm, settings.key_cache_ttl)
        envelope = Envelope(NonceSequence(allocate_nonce_prefix(engine)))
        authenticator = Authenticator(
            policies,
            audience=settings.jwt_audience,
            algorithms=settings.jwt_algorithms,
            max_lifetime=settings.jwt_max_lifetime,
            leeway=settings.jwt_leeway,
        )
        return cls(
            settings=settings,
            engine=engine,
            hsm=the_hsm,
            policies=policies,
            registry=registry,
            transit=Transit(registry, the_hsm, envelope),
            otp=OtpService(
                registry,
                the_hsm,
                ReplayLedger(
                    engine, LockoutPolicy(policies.otp_max_failures, policies.otp_lockout_seconds)
                ),
            ),
            authenticator=authenticator,
        )

    def close(self) -> None:
        self.hsm.close()
        self.engine.dispose()
