"""Transit operations on keys: encrypt, decrypt, rewrap, data keys, random bytes.

Batches keep their order and fail item by item; the HSM work of a whole call is one job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hsm import HsmOps
from vault.envelope import DATAKEY_BITS, EncryptItem, Envelope, ParsedCiphertext, parse
from vault.errors import BadRequest, InvalidCiphertext, VaultError
from vault.hsm import Hsm
from vault.keys import Key, KeyVersion
from vault.registry import KeyRegistry

MAX_RANDOM_BYTES = 131072  # Vault's own ceiling for /transit/random


@dataclass(frozen=True, slots=True)
class Encrypted:
    ciphertext: str
    key_version: int


@dataclass(frozen=True, slots=True)
class DataKey:
    ciphertext: str
    key_version: int
    plaintext: bytes


@dataclass(frozen=True, slots=True)
class DecryptItem:
    ciphertext: str
    associated_data: bytes
    key_version: int | None = None  # for rewrap: the version to rewrap to


def _require(key: Key, what: str) -> None:
    if not key.type.encryption:
        raise BadRequest(f"key type {key.type.name} does not support {what}")


class Transit:
    def __init__(self, registry: KeyRegistry, hsm: Hsm) -> None:
        self.registry = registry
        self.hsm = hsm

    async def encrypt(
        self, name: str, items: Sequence[EncryptItem | VaultError], key_version: int | None = None
    ) -> list[Encrypted | VaultError]:
        """Encrypt each item under its own fresh data key; ``key_version`` (or an item's own)
        picks the wrapping version, the latest by default."""
        key = await self.registry.get(name)
        _require(key, "encryption")
        plan: list[KeyVersion | VaultError] = []
        for item in items:
            if isinstance(item, VaultError):
                plan.append(item)
                continue
            try:
                wanted = item.key_version if item.key_version is not None else key_version
                plan.append(key.version_to_use(wanted))
            except VaultError as exc:
                plan.append(exc)
        versions = [v for v in plan if isinstance(v, KeyVersion)]
        if not versions:
            return [p for p in plan if isinstance(p, VaultError)]
        job = Envelope.wrap_job(key, versions)
        _, wrapped = await self.hsm.run(job, calls=len(versions))
        out: list[Encrypted | VaultError] = []
        it = iter(wrapped)
        for item, version in zip(items, plan, strict=True):
            if isinstance(version, VaultError):
                out.append(version)
                continue
            assert isinstance(item, EncryptItem)
            sealed = Envelope.seal(key, version.version, next(it), item)
            out.append(Encrypted(sealed, version.version))
        return out

    async def _unwrap(
        self, name: str, items: Sequence[DecryptItem | VaultError]
    ) -> tuple[Key, list[tuple[ParsedCiphertext, bytes] | VaultError]]:
        parsed: list[ParsedCiphertext | None] = []
        errors: list[VaultError | None] = []
        for item in items:
            if isinstance(item, VaultError):
                parsed.append(None)
                errors.append(item)
                continue
            try:
                parsed.append(parse(item.ciphertext))
                errors.append(None)
            except VaultError as exc:
                parsed.append(None)
                errors.append(exc)
        newest = max((p.version for p in parsed if p is not None), default=None)
        key = await self.registry.get(name, newest=newest)
        _require(key, "decryption")
        deks = await self.hsm.run(Envelope.unwrap_job(key, parsed), calls=len(parsed))
        out: list[tuple[ParsedCiphertext, bytes] | VaultError] = []
        for p, dek, err in zip(parsed, deks, errors, strict=True):
            if err is not None:
                out.append(err)
            elif isinstance(dek, VaultError):
                out.append(dek)
            elif p is None or not isinstance(dek, bytes):
                out.append(InvalidCiphertext())
            else:
                out.append((p, dek))
        return key, out

    async def decrypt(
        self, name: str, items: Sequence[DecryptItem | VaultError]
    ) -> list[bytes | VaultError]:
        key, unwrapped_items = await self._unwrap(name, items)
        out: list[bytes | VaultError] = []
        for item, unwrapped in zip(items, unwrapped_items, strict=True):
            if isinstance(unwrapped, VaultError):
                out.append(unwrapped)
                continue
            assert isinstance(item, DecryptItem)
            try:
                out.append(Envelope.open(key, unwrapped[0], unwrapped[1], item.associated_data))
            except VaultError as exc:
                out.append(exc)
        return out

    async def rewrap(
        self, name: str, items: Sequence[DecryptItem | VaultError], key_version: int | None = None
    ) -> list[Encrypted | VaultError]:
        plaintexts = await self.decrypt(name, items)
        again: list[EncryptItem | VaultError] = []
        for item, plain in zip(items, plaintexts, strict=True):
            if isinstance(plain, VaultError):
                again.append(plain)
            else:
                assert isinstance(item, DecryptItem)
                again.append(EncryptItem(plain, item.associated_data, item.key_version))
        return await self.encrypt(name, again, key_version)

    async def datakey(
        self, name: str, bits: int, associated_data: bytes, key_version: int | None = None
    ) -> DataKey:
        if bits not in DATAKEY_BITS:
            raise BadRequest("invalid bit length: bits must be 128, 256 or 512")
        key = await self.registry.get(name)
        _require(key, "data keys")
        version = key.version_to_use(key_version)
        job = Envelope.wrap_job(key, [version], bits // 8)
        plaintext, wrapped = await self.hsm.run(job)
        sealed = Envelope.seal(
            key, version.version, wrapped[0], EncryptItem(plaintext, associated_data)
        )
        return DataKey(sealed, version.version, plaintext)

    async def random(self, length: int) -> bytes:
        if not 1 <= length <= MAX_RANDOM_BYTES:
            raise BadRequest(f"bytes must be between 1 and {MAX_RANDOM_BYTES}")

        def job(ops: HsmOps) -> bytes:
            return ops.random(length)

        return await self.hsm.run(job)
