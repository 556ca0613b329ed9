"""The key types a caller can ask for, the purposes each may serve, and the HSM objects each
version of one is made of.

One key, one purpose: a key is created for one job, and every version's HSM objects can do
that job and nothing else (the token enforces it with the objects' capabilities and
``CKA_ALLOWED_MECHANISMS``; the domain refuses the wrong operation before it reaches the
token). A type that can serve several purposes is made for its default one unless the key's
creator names another.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from hsm import KeySpec
from vault.errors import BadRequest

# The role of the HMAC key Transit's `hmac` uses for a version of a key that is not itself an
# HMAC key: Vault keeps a separate HMAC key beside each version's key, and so do we, in the HSM
# (an object of its own, HMAC only: one key, one purpose holds for each object).
HMAC_ROLE = "hmac"
# A 512-bit generic secret: long enough for every SHA-2 HMAC (RFC 2104 §3).
_HMAC = (HMAC_ROLE, KeySpec.HMAC512)


class Purpose(enum.Enum):
    ENCRYPTION = "encryption"  # envelope encryption: encrypt, decrypt, rewrap, data keys
    SIGNING = "signing"  # sign, verify, JWKS; signs sealed partner messages
    DECRYPTION = "decryption"  # RSA-OAEP: partners encrypt to it, the HSM decrypts
    KEY_AGREEMENT = "key-agreement"  # ECDH: partners agree a key with it (ECDH-ES)
    MAC = "mac"  # HMAC, record digests, blind indexes
    OTP = "otp"  # OTP seeds


# The operations each purpose allows: what a refusal names ("key cannot be used for sign").
USES: dict[Purpose, frozenset[str]] = {
    # Transit's HMAC (and digests) use the version's own HMAC object, not the key itself.
    Purpose.ENCRYPTION: frozenset(
        {"encrypt", "decrypt", "rewrap", "datakey", "hmac", "digest", "blind-index"}
    ),
    Purpose.SIGNING: frozenset({"sign", "verify", "hmac", "digest", "blind-index"}),
    Purpose.DECRYPTION: frozenset({"open"}),
    Purpose.KEY_AGREEMENT: frozenset({"open"}),
    Purpose.MAC: frozenset({"hmac", "digest", "blind-index"}),
    Purpose.OTP: frozenset({"otp"}),
}


@dataclass(frozen=True, slots=True)
class KeyType:
    name: str
    # Per purpose the type can serve, the default first: (role, spec) for every HSM object of
    # one version; the role suffixes the version's CKA_ID.
    purposes: dict[Purpose, tuple[tuple[str, KeySpec], ...]]
    encryption: bool = False
    signing: bool = False
    hmac: bool = False
    otp: bool = False

    @property
    def default_purpose(self) -> Purpose:
        return next(iter(self.purposes))

    @property
    def asymmetric(self) -> bool:
        return self.purposes[self.default_purpose][0][1].asymmetric

    @property
    def roles(self) -> set[str]:
        """The roles of every object any version of this type can have, whatever its purpose."""
        return {role for objects in self.purposes.values() for role, _ in objects}

    def purpose(self, name: str | None) -> Purpose:
        """The purpose a creator named (``None``: the type's default), if the type serves it."""
        if name is None:
            return self.default_purpose
        for purpose in self.purposes:
            if purpose.value == name:
                return purpose
        allowed = ", ".join(p.value for p in self.purposes)
        raise BadRequest(f"key type {self.name} serves only these purposes: {allowed}")


KEY_TYPES: dict[str, KeyType] = {
    t.name: t
    for t in (
        # The Transit purposes keep an HMAC key per version (Transit's `hmac` works with
        # every key type); the partners' decryption and key-agreement keys do not.
        KeyType(
            "aes256-gcm96",
            {Purpose.ENCRYPTION: (("", KeySpec.AES256_GCM), _HMAC)},
            encryption=True,
        ),
        KeyType("hmac", {Purpose.MAC: (("", KeySpec.HMAC512),)}, hmac=True),
        KeyType(
            "ecdsa-p256",
            {
                Purpose.SIGNING: (("", KeySpec.EC_P256), _HMAC),
                Purpose.KEY_AGREEMENT: (("", KeySpec.EC_P256_ECDH),),
            },
            signing=True,
        ),
        KeyType("ed25519", {Purpose.SIGNING: (("", KeySpec.ED25519), _HMAC)}, signing=True),
        KeyType(
            "rsa-3072",
            {
                Purpose.SIGNING: (("", KeySpec.RSA3072), _HMAC),
                Purpose.DECRYPTION: (("", KeySpec.RSA3072_OAEP),),
            },
            signing=True,
        ),
        # An OTP seed is wrapped (AES key wrap with padding) by "wrap" and bound to its
        # token by an HMAC under "bind": AES-KW has no associated data of its own. Versions
        # made before these specs existed have AES256 / HMAC256 objects (README: rotation).
        KeyType(
            "otp-seed",
            {Purpose.OTP: (("wrap", KeySpec.OTP_WRAP), ("bind", KeySpec.OTP_BIND))},
            otp=True,
        ),
    )
}


def mac_object(
    objects: tuple[tuple[str, KeySpec], ...], purpose: Purpose
) -> tuple[str, KeySpec] | None:
    """The (role, spec) of the object Transit's ``hmac`` uses among a key's ``objects``: the
    key itself for an ``hmac`` key, the version's own HMAC key for the others, none for OTP
    seeds and the partners' decryption and key-agreement keys."""
    for role, spec in objects:
        if role == HMAC_ROLE or (role == "" and purpose is Purpose.MAC):
            return role, spec
    return None


def key_type(name: str) -> KeyType:
    try:
        return KEY_TYPES[name]
    except KeyError:
        raise BadRequest(f"unknown key type {name!r}") from None


def object_id(hsm_id: bytes, role: str) -> bytes:
    return hsm_id + role.encode() if role else hsm_id


def object_label(key_name: str, version: int, role: str) -> str:
    label = f"vault:{key_name}:v{version}"
    return f"{label}:{role}" if role else label
