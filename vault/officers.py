"""Security officers' own credentials: an Ed25519 or P-256 key pair each.

The public half is declared in ``policies/officers.toml``; the private half stays with the
officer (a PEM file, encrypted with a passphrase in production). An officer proves who they
are by signing: approvals are signatures over the canonical description of an action, so
whoever can write to the database still cannot forge one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from vault.errors import ConfigError, Forbidden
from vault.policy import Officer, Policies

OfficerPrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey

# ECDSA over P-256 with SHA-256 (FIPS 186-5 §6.4); Ed25519 signs the message itself (RFC 8032).
_ECDSA = ec.ECDSA(hashes.SHA256())


def sign(private_key: OfficerPrivateKey, message: bytes) -> bytes:
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return private_key.sign(message)
    return private_key.sign(message, _ECDSA)


def verify(officer: Officer, signature: bytes, message: bytes) -> bool:
    key = officer.public_key
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, message)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, message, _ECDSA)
        else:
            return False
    except InvalidSignature:
        return False
    return True


def _public_der(key: ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass(frozen=True, slots=True)
class OfficerCredential:
    """An officer, identified by the private key they hold (never by a name they type)."""

    name: str
    private_key: OfficerPrivateKey

    def sign(self, message: bytes) -> bytes:
        return sign(self.private_key, message)


def load_private_key(path: Path, passphrase: bytes | None) -> OfficerPrivateKey:
    try:
        data = path.read_bytes()
    except OSError:
        raise ConfigError(f"cannot read the officer key {path}") from None
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except TypeError:
        raise ConfigError(f"the officer key {path} is encrypted: a passphrase is needed") from None
    except ValueError:
        raise ConfigError(
            f"the officer key {path} is not a PEM private key, or the passphrase is wrong"
        ) from None
    if isinstance(key, ed25519.Ed25519PrivateKey) or (
        isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1)
    ):
        return key
    raise ConfigError("an officer key must be Ed25519 or EC P-256")


def is_encrypted(path: Path) -> bool:
    try:
        return b"ENCRYPTED" in path.read_bytes()[:64]
    except OSError:
        return False


def identify(policies: Policies, private_key: OfficerPrivateKey) -> OfficerCredential:
    """The officer whose declared public key matches ``private_key``."""
    wanted = _public_der(private_key.public_key())
    for officer in policies.officers.values():
        if officer.public_key is not None and _public_der(officer.public_key) == wanted:
            return OfficerCredential(officer.name, private_key)
    raise Forbidden("this key belongs to no officer declared in policies/officers.toml")


def generate(kind: str = "ed25519") -> OfficerPrivateKey:
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    raise ConfigError("an officer key is ed25519 or p256")


def private_pem(key: OfficerPrivateKey, passphrase: bytes | None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def public_pem(key: OfficerPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
