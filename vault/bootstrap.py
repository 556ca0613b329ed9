"""First-run set-up for development and CI: token, PINs, schema, declared keys, dev credentials.

Idempotent: a second run reuses the token, the keys and the data.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
import uuid
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from vault import store
from vault.config import Settings
from vault.errors import ConfigError
from vault.policy import load_policies

log = logging.getLogger("vault.bootstrap")
BOOTSTRAP = "bootstrap"  # the actor of what bootstrap creates

_SOFTHSM_CONF = """\
# Written by hsm-vault bootstrap (development only).
directories.tokendir = {tokendir}
objectstore.backend = file
log.level = ERROR
slots.removable = false
"""


def write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    path.chmod(0o600)


def ensure_softhsm_config(settings: Settings) -> None:
    conf = settings.softhsm_conf
    tokendir = conf.parent / "softhsm" / "tokens"
    tokendir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not conf.exists():
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text(_SOFTHSM_CONF.format(tokendir=tokendir), encoding="utf-8")
    os.environ["SOFTHSM2_CONF"] = str(conf)


def ensure_pins(settings: Settings) -> None:
    for path in (settings.so_pin_file, settings.pin_file):
        if not path.exists() and not os.environ.get(
            "VAULT_PIN" if path == settings.pin_file else "VAULT_SO_PIN"
        ):
            write_private(path, (secrets.token_urlsafe(24) + "\n").encode())


def ensure_token(settings: Settings) -> bool:
    import hsm  # noqa: PLC0415

    try:
        if hsm.token_exists(settings.pkcs11_module, settings.token_label):
            return False
        hsm.init_token(
            settings.pkcs11_module, settings.token_label, settings.so_pin(), settings.user_pin()
        )
    except hsm.errors.HsmError as exc:
        raise ConfigError(str(exc)) from None
    return True


def mint_token(
    private_key: ed25519.Ed25519PrivateKey, service: str, audience: str, lifetime: int
) -> str:
    now = int(time.time())
    claims = {
        "sub": service,
        "aud": audience,
        "iat": now,
        "exp": now + lifetime,
        "jti": str(uuid.uuid4()),
    }
    return jwt.encode(claims, private_key, algorithm="EdDSA")


def dev_key_path(settings: Settings, service: str) -> Path:
    return settings.var_dir / "dev-keys" / f"{service}.pem"


def load_dev_key(settings: Settings, service: str) -> ed25519.Ed25519PrivateKey:
    key = serialization.load_pem_private_key(
        dev_key_path(settings, service).read_bytes(), password=None
    )
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise TypeError("dev service keys are Ed25519")
    return key


def _write_key_pair(private_path: Path, key: PrivateKeyTypes) -> None:
    """The private key as PKCS#8 PEM (mode 0600) and its public half beside it (.pub.pem)."""
    write_private(
        private_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    private_path.with_suffix(".pub.pem").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def dev_officer_key_path(settings: Settings, officer: str) -> Path:
    return settings.var_dir / "dev-officers" / f"{officer}.pem"


def ensure_dev_officers(settings: Settings) -> list[str]:
    """An Ed25519 key pair per dev officer declared in policies/officers.toml."""
    policies = load_policies(settings.policies_dir, settings.var_dir, require_keys=False)
    written = []
    for officer in policies.officers.values():
        path = dev_officer_key_path(settings, officer.name)
        if officer.dev and not path.exists():
            _write_key_pair(path, ed25519.Ed25519PrivateKey.generate())
            written.append(officer.name)
    return written


def ensure_dev_credentials(settings: Settings) -> list[str]:
    """A key pair per dev service (private PKCS#8 PEM, public PEM) and a fresh token each."""
    policies = load_policies(settings.policies_dir, settings.var_dir, require_keys=False)
    written = []
    for service in policies.dev_services:
        private_path = dev_key_path(settings, service)
        if not private_path.exists():
            _write_key_pair(private_path, ed25519.Ed25519PrivateKey.generate())
        token = mint_token(
            load_dev_key(settings, service),
            service,
            settings.jwt_audience,
            settings.dev_token_lifetime,
        )
        write_private(settings.var_dir / "dev-tokens" / f"{service}.jwt", token.encode())
        written.append(service)
    return written


def dev_partner_key_path(settings: Settings, partner: str, role: str) -> Path:
    """A dev partner's private key (PKCS#8 PEM); ``role`` is "sig" or "enc"."""
    return settings.var_dir / "dev-partners" / f"{partner}-{role}.pem"


def _dev_partner_key(key_type: str) -> PrivateKeyTypes:
    if key_type == "rsa-3072":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1())


def ensure_dev_partners(settings: Settings) -> list[str]:
    """Key pairs for each dev partner, of the same kinds as the keys we use with it: a
    signing key like our ``signing_key`` and an encryption key like our ``decryption_key``
    (public PEM beside each private one, for ``sig_public_key_file``/``enc_public_key_file``)."""
    policies = load_policies(settings.policies_dir, settings.var_dir, require_keys=False)
    written = []
    for partner in policies.partners.values():
        if not partner.dev:
            continue
        for role, our_key in (("sig", partner.signing_key), ("enc", partner.decryption_key)):
            path = dev_partner_key_path(settings, partner.name, role)
            if path.exists():
                continue
            declared = policies.keys.get(our_key)
            _write_key_pair(path, _dev_partner_key(declared.type if declared else "ecdsa-p256"))
            written.append(f"{partner.name}-{role}")
    return written


def bootstrap(settings: Settings) -> None:
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    ensure_softhsm_config(settings)
    ensure_pins(settings)
    if ensure_token(settings):
        log.info("initialized HSM token %r", settings.token_label)
    engine = store.make_engine(settings.database_url)
    try:
        store.migrate(engine)
    finally:
        engine.dispose()
    ensure_dev_credentials(settings)
    ensure_dev_partners(settings)
    ensure_dev_officers(settings)
    create_declared_keys(settings)


def create_declared_keys(settings: Settings) -> list[str]:
    """The audit's own keys and the keys of policies/keys.toml that do not exist yet, each
    creation in the audit chain (existing keys are left as they are: ``hsm-vault keys
    create`` also brings their configuration in line)."""
    from vault.approvals import Authority  # noqa: PLC0415
    from vault.events import LifecycleEvent  # noqa: PLC0415
    from vault.runtime import Vault  # noqa: PLC0415

    vault = Vault.open(settings)
    created = []
    try:
        for name in vault.audit.keys.ensure_sync():
            vault.events.emit(LifecycleEvent("audit.key.create", BOOTSTRAP, name))
            created.append(name)
        for declared in vault.policies.keys.values():
            plan = vault.registry.plan_declared(declared)
            if plan.outcome == "create":
                vault.registry.apply_declared(declared, by=Authority("bootstrap"))
                created.append(declared.name)
            elif plan.outcome == "conflict":
                # e.g. a key made before purposes existed got its type's default: an officer
                # gives it the declared one (README, "Upgrading"); never done silently.
                log.warning("key %r: %s", declared.name, plan.reason)
    finally:
        vault.close()
    return created
