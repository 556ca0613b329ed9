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
from vault.keytypes import USES, KeyType, Purpose, object_id

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
    # Data keys wrapped under this version, as the database knew when the key was read
    # (vault/usage.py: the invocation bound of random-IV AES-GCM).
    wraps: int = 0

    def object_id(self, role: str = "") -> bytes:
        return object_id(self.hsm_id, role)


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

    @property
    def objects(self) -> tuple[tuple[str, KeySpec], ...]:
        """(role, spec) of every HSM object one version of this key is made of."""
        return self.type.purposes[self.purpose]

    @property
    def spec(self) -> KeySpec:
        return self.objects[0][1]

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
        found = self.versions.get(version)
        if found is None:
            raise KeyVersionUnavailable(f"key version {version} does not exist")
        if version < self.min_encryption_version:
            raise KeyVersionUnavailable(f"key version {version} is below min_encryption_version")
        if version < self.min_decryption_version:
            raise KeyVersionUnavailable(f"key version {version} is below min_decryption_version")
        return found

    def version_to_check(self, version: int) -> KeyVersion:
        """The version a ciphertext, signature, MAC or seed names, if it may still be used
        (callers re-read a key whose ``latest_version`` is below it first: see
        ``KeyRegistry.get(newest=...)``)."""
        found = self.versions.get(version)
        if found is None:
            raise KeyVersionUnavailable(f"key version {version} does not exist")
        if version < self.min_decryption_version:
            raise KeyVersionUnavailable(
                f"key version {version} is below min_decryption_version (too old)"
            )
        return found

    def live_versions(self) -> list[KeyVersion]:
        """Every version that may still decrypt or verify, oldest first."""
        return [v for n, v in sorted(self.versions.items()) if n >= self.min_decryption_version]


def validate_name(name: str) -> str:
    if not KEY_NAME.fullmatch(name):
        raise BadRequest("key name must be 1-128 characters of letters, digits, '.', '_' or '-'")
    return name


def rotate_period(value: int | float | str) -> int:
    """Whole seconds, or a duration such as ``"24h"``, ``"1.5h"``, ``"30m"``, ``"3600s"``
    (Vault's forms; ``""`` is 0); 0 is off, anything else is at least an hour and fits the
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
    if not math.isfinite(seconds) or not (
        seconds == 0 or MIN_ROTATE_PERIOD <= seconds <= MAX_ROTATE_PERIOD
    ):
        raise BadRequest(
            f"auto_rotate_period must be 0 (off) or at least one hour (at most "
            f"{MAX_ROTATE_PERIOD} seconds)"
        )
    return int(seconds)
