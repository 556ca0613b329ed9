"""The key types a caller can ask for, and the HSM objects each version of one is made of."""

from __future__ import annotations

from dataclasses import dataclass

from hsm import KeySpec
from vault.errors import BadRequest

# The role of the HMAC key Transit's `hmac` uses for a version of a key that is not itself an
# HMAC key: Vault keeps a separate HMAC key beside each version's key, and so do we, in the HSM.
HMAC_ROLE = "hmac"
_MAC_SPECS = (KeySpec.HMAC256, KeySpec.HMAC512)


@dataclass(frozen=True, slots=True)
class KeyType:
    name: str
    # (role, spec) for every HSM object of one version; the role suffixes the version's CKA_ID.
    objects: tuple[tuple[str, KeySpec], ...]
    encryption: bool = False
    signing: bool = False
    hmac: bool = False
    otp: bool = False

    @property
    def asymmetric(self) -> bool:
        return self.objects[0][1].asymmetric

    @property
    def spec(self) -> KeySpec:
        return self.objects[0][1]

    @property
    def mac_object(self) -> tuple[str, KeySpec] | None:
        """The (role, spec) of the object Transit's ``hmac`` uses: the key itself for an
        ``hmac`` key, the version's own HMAC key for the others, none for OTP seeds."""
        for role, spec in self.objects:
            if spec in _MAC_SPECS and (self.hmac or role == HMAC_ROLE):
                return role, spec
        return None


# A 512-bit generic secret: long enough for every SHA-2 HMAC (RFC 2104 §3).
_HMAC = (HMAC_ROLE, KeySpec.HMAC512)

KEY_TYPES: dict[str, KeyType] = {
    t.name: t
    for t in (
        KeyType("aes256-gcm96", (("", KeySpec.AES256), _HMAC), encryption=True),
        KeyType("hmac", (("", KeySpec.HMAC512),), hmac=True),
        KeyType("ecdsa-p256", (("", KeySpec.EC_P256), _HMAC), signing=True),
        KeyType("ed25519", (("", KeySpec.ED25519), _HMAC), signing=True),
        KeyType("rsa-3072", (("", KeySpec.RSA3072), _HMAC), signing=True),
        # An OTP seed is wrapped (AES key wrap with padding) by "wrap" and bound to its
        # token by an HMAC under "bind": AES-KW has no associated data of its own. Versions
        # made before these specs existed have AES256 / HMAC256 objects (README: rotation).
        KeyType("otp-seed", (("wrap", KeySpec.OTP_WRAP), ("bind", KeySpec.OTP_BIND)), otp=True),
    )
}


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
