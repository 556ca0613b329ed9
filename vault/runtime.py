"""The composition root of the domain: one ``Vault`` per process wires the HSM, the database
and the services over them. Nothing here touches the HSM or the database: both are reached
lazily, so a process starts while either is away and serves once they are back.

``api/`` builds the HTTP application over a ``Vault``; the officers' tool uses one directly.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from hsm import HsmObserver, JobRunner
from vault.approvals import DualControl
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
from vault.rotation import AutoRotation
from vault.signing import Signer
from vault.store import Database
from vault.store.approvals import ApprovalStore
from vault.store.audit import AuditStore
from vault.store.keys import KeyStore
from vault.store.leases import Leases
from vault.store.messages import SeenMessages
from vault.store.otp_ledger import LockoutPolicy, ReplayLedger
from vault.store.quotas import QuotaStore
from vault.store.tokens import RevocationStore
from vault.tokens import RevocationList, Revoker, SpentTokens
from vault.transit import Transit
from vault.usage import WrapCounter

log = logging.getLogger("vault")


def open_runner(
    settings: Settings,
    observer: HsmObserver | None = None,
    pin: Callable[[], str] | None = None,
) -> JobRunner:
    """The PKCS#11 runner for the configured module and token (the session opens in the
    background; the PIN is read from its source each time it does). ``observer`` hears of
    every job and session (the server's metrics); ``pin``: another credential than the
    service's (the officers' tool)."""
    import hsm  # noqa: PLC0415 - pkcs11 only in processes that use the HSM

    os.environ.setdefault("SOFTHSM2_CONF", str(settings.softhsm_conf))
    return hsm.connect(
        settings.pkcs11_module,
        settings.token_label,
        pin or settings.user_pin,
        observer=observer,
        fault_file=settings.test_hsm_fault_file,
        seed_cache=settings.otp_seed_cache,
    )


@dataclass
class Vault:
    settings: Settings
    policies: Policies
    db: Database
    hsm: Hsm
    authenticator: Authenticator
    registry: KeyRegistry
    wraps: WrapCounter
    transit: Transit
    signer: Signer
    digests: Digests
    partners: PartnerMessages
    otp: OtpService
    dual_control: DualControl
    rotation: AutoRotation
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
        """``audit_observer`` hears how the audit chain's writes go (the server's metrics)."""
        policies = load_policies(settings.policies_dir, settings.var_dir)
        db = Database.open(settings.database_url, settings.db_timeout)
        the_hsm = Hsm(runner if runner is not None else open_runner(settings), settings.hsm_timeout)
        revocations = RevocationStore(db)
        # Lifecycle events (keys, approvals) go into the audit chain, as requests do.
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
        dual_control = DualControl(
            ApprovalStore(db), policies.officers, audit, ttl=settings.approval_ttl
        )
        registry = KeyRegistry(
            KeyStore(db),
            the_hsm,
            settings.key_cache_ttl,
            events=audit,
            dual_control=dual_control,
            min_rotate_period=settings.min_auto_rotate_period,
        )
        signer = Signer(registry, the_hsm)
        wraps = WrapCounter(
            registry.store, lambda name, version: registry.rotate_sync(name, if_latest=version)
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
            wraps=wraps,
            transit=Transit(registry, the_hsm, wraps),
            signer=signer,
            digests=Digests(registry, the_hsm),
            partners=PartnerMessages(
                policies, registry, the_hsm, signer.public_keys, SeenMessages(db)
            ),
            otp=OtpService(
                registry,
                the_hsm,
                ReplayLedger.of(
                    db, LockoutPolicy(policies.otp_max_failures, policies.otp_lockout_seconds)
                ),
            ),
            events=audit,
            dual_control=dual_control,
            rotation=AutoRotation(registry, Leases(db), settings.auto_rotate_interval),
            audit=audit,
            quotas=Quotas(QuotaStore(db)),
            spent_tokens=SpentTokens(db),
            revoker=Revoker(
                revocations,
                settings.jwt_max_lifetime,
                settings.jwt_leeway,
                events=audit,
                dual_control=dual_control,
            ),
        )

    def background(self) -> list[Coroutine[Any, Any, None]]:
        """The work a serving worker runs beside its requests (never the officers' tool)."""
        return [self.rotation.run()]

    def close(self) -> None:
        self.wraps.flush()
        self.audit.close()
        self.otp.ledger.close()
        self.hsm.close()
        self.db.dispose()
