"""The composition root of the domain: one ``Vault`` per process wires the HSM, the database
and the services over them. Nothing here touches the HSM or the database: both are reached
lazily, so a process starts while either is away and serves once they are back.

``api/`` builds the HTTP application over a ``Vault``; the officers' tool uses one directly.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from hsm import JobRunner
from vault.audit import AuditChain, AuditKeys, AuditObserver, AuditSettings
from vault.auth import Authenticator
from vault.config import Settings
from vault.digest import Digests
from vault.events import EventSink
from vault.hsm import Hsm
from vault.otp.service import OtpService
from vault.partners import PartnerMessages
from vault.policy import Policies, load_policies
from vault.quotas import Quotas
from vault.registry import KeyRegistry
from vault.signing import Signer
from vault.store import Database
from vault.store.audit import AuditStore
from vault.store.keys import KeyStore
from vault.store.messages import SeenMessages
from vault.store.otp_ledger import LockoutPolicy, ReplayLedger
from vault.store.quotas import QuotaStore
from vault.store.tokens import RevocationStore
from vault.tokens import RevocationList, Revoker, SpentTokens
from vault.transit import Transit

log = logging.getLogger("vault")


def open_runner(settings: Settings) -> JobRunner:
    """The PKCS#11 runner for the configured module and token (the session opens in the
    background; the PIN is read from its source each time it does)."""
    import hsm  # noqa: PLC0415 - pkcs11 only in processes that use the HSM

    os.environ.setdefault("SOFTHSM2_CONF", str(settings.softhsm_conf))
    return hsm.connect(settings.pkcs11_module, settings.token_label, settings.user_pin)


@dataclass
class Vault:
    settings: Settings
    policies: Policies
    db: Database
    hsm: Hsm
    authenticator: Authenticator
    registry: KeyRegistry
    transit: Transit
    signer: Signer
    digests: Digests
    partners: PartnerMessages
    otp: OtpService
    audit: AuditChain
    events: EventSink  # where key lifecycle events go: the audit chain
    quotas: Quotas
    spent_tokens: SpentTokens
    revoker: Revoker

    @classmethod
    def open(
        cls,
        settings: Settings,
        *,
        runner: JobRunner | None = None,
        audit_observer: AuditObserver | None = None,
    ) -> Vault:
        policies = load_policies(settings.policies_dir, settings.var_dir)
        db = Database.open(settings.database_url, settings.db_timeout)
        the_hsm = Hsm(runner if runner is not None else open_runner(settings), settings.hsm_timeout)
        registry = KeyRegistry(KeyStore(db), the_hsm, settings.key_cache_ttl)
        signer = Signer(registry, the_hsm)
        revocations = RevocationStore(db)
        audit = AuditChain(
            AuditStore(db),
            AuditKeys(the_hsm),
            AuditSettings(
                checkpoint_records=settings.audit_checkpoint_records,
                checkpoint_seconds=settings.audit_checkpoint_seconds,
                retention_days=settings.audit_retention_days,
            ),
            observer=audit_observer,
        )
        return cls(
            settings=settings,
            policies=policies,
            db=db,
            hsm=the_hsm,
            authenticator=Authenticator(
                policies,
                audience=settings.jwt_audience,
                algorithms=settings.jwt_algorithms,
                max_lifetime=settings.jwt_max_lifetime,
                leeway=settings.jwt_leeway,
                revocations=RevocationList(
                    revocations,
                    interval=settings.revocation_poll,
                    max_stale=2 * settings.revocation_poll,
                ),
            ),
            registry=registry,
            transit=Transit(registry, the_hsm),
            signer=signer,
            digests=Digests(registry, the_hsm),
            partners=PartnerMessages(
                policies, registry, the_hsm, signer.public_keys, SeenMessages(db)
            ),
            otp=OtpService(
                registry,
                the_hsm,
                ReplayLedger(
                    db.engine,
                    LockoutPolicy(policies.otp_max_failures, policies.otp_lockout_seconds),
                ),
            ),
            audit=audit,
            events=audit,
            quotas=Quotas(QuotaStore(db)),
            spent_tokens=SpentTokens(db),
            revoker=Revoker(revocations, settings.jwt_max_lifetime, settings.jwt_leeway),
        )

    def close(self) -> None:
        self.audit.close()
        self.hsm.close()
        self.db.dispose()
