"""Named keys with versions (Tink's keyset model): one primary that encrypts, many that decrypt.

The one rule for versions lives here: :meth:`Key.version_to_use` picks the version that
encrypts, signs or MACs (the latest unless one is asked for), :meth:`Key.version_to_check`
the version a ciphertext, signature, MAC, seed blob or JWE ``kid`` names. Every operation
goes through one of the two, with one set of messages.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from hsm import KeySpec
from vault.errors import BadRequest, KeyVersionUnavailable
from vault.keytypes import HMAC_ROLE, USES, KeyType, Purpose, mac_object, object_id

KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
MIN_ROTATE_PERIOD = 3600  # as Vault: automatic rotation at most once an hour
MAX_ROTATE_PERIOD = 2**31 - 1  # the column is a 32-bit integer (about 68 years)
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(?P<number>[0-9]{1,12}(?:\.[0-9]{1,9})?)(?P<unit>[smhd]?)")
_PERIOD_FORM = "auto_rotate_period must be whole seconds or a duration like '24h'"


@dataclass(frozen=True, slots=True)
class KeyVersion:
    version: int
    hsm_id: bytes
    created_at: float
    # Whether the version has its own HMAC object (role ``HMAC_ROLE``). Versions made before
    # the vault kept one have none: Transit's HMAC refuses them until the key is rotated.
    has_hmac_key: bool = False
    # Data keys wrapped under this version, as the database knew when the key was read
    # (vault/usage.py: the invocation bound of random-IV AES-GCM).
    wraps: int = 0

    def object_id(self, role: str = "") -> bytes:
        return object_id(self.hsm_id, role)

    def roles(self, kind: KeyType) -> list[str]:
        """The roles of the HSM objects this version really has: a type's purposes differ in
        what their objects can do, not in their roles, except for the HMAC key, which only
        versions made with one have."""
        return sorted(r for r in kind.roles if r != HMAC_ROLE or self.has_hmac_key)


@dataclass(frozen=True, slots=True)
class Key:
    name: str
    type: KeyType
    latest_version: int
    min_decryption_version: int
    min_encryption_version: int
    deletion_allowed: bool
    auto_rotate_period: int
    created_at: float
    updated_at: float
    purpose: Purpose
    versions: dict[int, KeyVersion] = field(default_factory=dict)
    # Vault's trim floor: versions below it no longer exist (rows and HSM objects are gone).
    min_available_version: int = 0

    @property
    def objects(self) -> tuple[tuple[str, KeySpec], ...]:
        """(role, spec) of every HSM object one version of this key is made of."""
        return self.type.purposes[self.purpose]

    @property
    def spec(self) -> KeySpec:
        return self.objects[0][1]

    @property
    def mac_object(self) -> tuple[str, KeySpec] | None:
        """The object Transit's ``hmac`` uses (``vault.keytypes.mac_object``)."""
        return mac_object(self.objects, self.purpose)

    def check_use(self, operation: str) -> None:
        """One key, one purpose: refuse an operation the key was not made for (its HSM
        objects would refuse it too, unless they predate purposes: see README)."""
        if operation not in USES[self.purpose]:
            raise BadRequest(f"key cannot be used for {operation}")

    def version_to_use(self, requested: int | None = None) -> KeyVersion:
        """The version that encrypts, signs or MACs: the latest, or the one asked for if the
        configuration allows it (not below ``min_encryption_version``, and never one that
        could not be decrypted or verified again)."""
        version = requested if requested else self.latest_version
        # The floors first: a trimmed version is "too old", not unknown (as in Vault).
        if 0 < version < self.min_encryption_version:
            raise KeyVersionUnavailable(f"key version {version} is below min_encryption_version")
        if 0 < version < self.min_decryption_version:
            raise KeyVersionUnavailable(f"key version {version} is below min_decryption_version")
        found = self.versions.get(version)
        if found is None:
            raise KeyVersionUnavailable(f"key version {version} does not exist")
        return found

    def version_to_check(self, version: int) -> KeyVersion:
        """The version a ciphertext, signature, MAC or seed names, if it may still be used
        (callers re-read a key whose ``latest_version`` is below it first: see
        ``KeyRegistry.get(newest=...)``)."""
        if 0 < version < self.min_decryption_version:
            raise KeyVersionUnavailable(
                f"key version {version} is below min_decryption_version (too old)"
            )
        found = self.versions.get(version)
        if found is None:
            raise KeyVersionUnavailable(f"key version {version} does not exist")
        return found

    def trim_floor(self, floor: int | None) -> int:
        """Check a new ``min_available_version`` as Vault does, in Vault's order and words
        (docs/transit-reference.md; OpenBao's ``pathTrimUpdate``): never below the current
        floor, and never above what ``min_encryption_version`` and ``min_decryption_version``
        still need."""
        if floor is None:
            raise BadRequest("missing min_available_version")
        if floor < self.min_available_version:
            raise BadRequest("minimum available version cannot be decremented")
        if self.min_encryption_version == 0:
            raise BadRequest(
                "minimum available version cannot be set when minimum encryption version is not set"
            )
        if self.min_decryption_version == 0:
            raise BadRequest(
                "minimum available version cannot be set when minimum decryption version is not set"
            )
        if floor > self.min_encryption_version:
            # (sic) "minmum": Vault's own words, which clients may match.
            raise BadRequest(
                "minimum available version cannot be greater than minmum encryption version"
            )
        if floor > self.min_decryption_version:
            raise BadRequest(
                "minimum available version cannot be greater than minimum decryption version"
            )
        if floor < 0:
            raise BadRequest("minimum available version cannot be negative")
        if floor == 0:
            raise BadRequest("minimum available version should be positive")
        return floor

    def live_versions(self) -> list[KeyVersion]:
        """Every version that may still decrypt or verify, oldest first."""
        return [v for n, v in sorted(self.versions.items()) if n >= self.min_decryption_version]


def validate_name(name: str) -> str:
    if not KEY_NAME.fullmatch(name):
        raise BadRequest("key name must be 1-128 characters of letters, digits, '.', '_' or '-'")
    return name


def rotate_period(value: int | float | str, minimum: int = MIN_ROTATE_PERIOD) -> int:
    """Whole seconds, or a duration such as ``"24h"``, ``"1.5h"``, ``"30m"``, ``"3600s"``
    (Vault's forms; ``""`` is 0); 0 is off, anything else is at least ``minimum`` (an hour,
    as Vault; only tests lower it, see ``Settings.min_auto_rotate_period``) and fits the
    column. A fraction needs a unit (``"86400.0"`` and ``86400.5`` are refused, as in Vault)."""
    if isinstance(value, str):
        text = value.strip()
        match = _DURATION.fullmatch(text)
        if text and (match is None or ("." in match["number"] and not match["unit"])):
            raise BadRequest(_PERIOD_FORM)
        seconds = float(match["number"]) * _DURATION_UNITS[match["unit"] or "s"] if match else 0.0
    elif isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    else:
        raise BadRequest(_PERIOD_FORM)
    if not math.isfinite(seconds) or not (seconds == 0 or minimum <= seconds <= MAX_ROTATE_PERIOD):
        least = "one hour" if minimum == MIN_ROTATE_PERIOD else f"{minimum} seconds"
        raise BadRequest(
            f"auto_rotate_period must be 0 (off) or at least {least} (at most "
            f"{MAX_ROTATE_PERIOD} seconds)"
        )
    return int(seconds)
