"""Transit operations on keys: encrypt, decrypt, rewrap, data keys, random bytes.

Batches keep their order and fail item by item; the HSM work of a whole call is one job.
A batch of more than one item is sealed in format 0x02 (``vault.envelope``): one data key
per key version it uses, wrapped once; its decryption unwraps each distinct data key once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hsm import HsmOps
from vault.envelope import (
    DATAKEY_BITS,
    FORMAT_V1,
    FORMAT_V2,
    BatchSealers,
    EncryptItem,
    Envelope,
    ParsedCiphertext,
    openers,
    parse,
)
from vault.errors import BadRequest, HsmUnavailable, InvalidCiphertext, VaultError
from vault.hsm import Hsm
from vault.keys import Key, KeyVersion
from vault.registry import KeyRegistry
from vault.usage import WrapCounter

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


def _require(key: Key, what: str, operation: str) -> None:
    if not key.type.encryption:
        raise BadRequest(f"key type {key.type.name} does not support {what}")
    key.check_use(operation)


class Transit:
    def __init__(self, registry: KeyRegistry, hsm: Hsm, wraps: WrapCounter) -> None:
        self.registry = registry
        self.hsm = hsm
        self.wraps = wraps

    async def encrypt(
        self,
        name: str,
        items: Sequence[EncryptItem | VaultError],
        key_version: int | None = None,
        operation: str = "encrypt",
    ) -> list[Encrypted | VaultError]:
        """Encrypt the items; ``key_version`` (or an item's own) picks the wrapping version,
        the latest by default. A single item gets a data key of its own (format 0x01); more
        than one share one data key per version (format 0x02), each under its own nonce."""
        named = [i.key_version for i in items if isinstance(i, EncryptItem) and i.key_version]
        key = await self.registry.get(name, newest=max([key_version or 0, *named]) or None)
        _require(key, "encryption", operation)
        plan: list[KeyVersion | VaultError] = []
        chosen: dict[int | None, KeyVersion] = {}  # the items of a batch mostly ask alike
        for item in items:
            if isinstance(item, VaultError):
                plan.append(item)
                continue
            wanted = item.key_version if item.key_version is not None else key_version
            picked = chosen.get(wanted)
            if picked is None:
                try:
                    picked = chosen[wanted] = key.version_to_use(wanted)
                except VaultError as exc:
                    plan.append(exc)
                    continue
            plan.append(picked)
        versions = [v for v in plan if isinstance(v, KeyVersion)]
        if not versions:
            return [p for p in plan if isinstance(p, VaultError)]
        one = len(versions) == 1  # one message: a data key of its own (format 0x01)
        to_wrap = versions if one else BatchSealers.plan(versions)
        self.wraps.charge(key, to_wrap)
        job = Envelope.wrap_job(key, to_wrap, fmt=FORMAT_V1 if one else FORMAT_V2)
        _, wrapped = await self.hsm.run(job, calls=len(to_wrap))
        seal: Callable[[int, EncryptItem], str]
        if one:

            def seal_one(version: int, item: EncryptItem) -> str:
                return Envelope.seal(key, version, wrapped[0], item)

            seal = seal_one
        else:
            seal = BatchSealers(key, to_wrap, wrapped).seal
        out: list[Encrypted | VaultError] = []
        for item, version in zip(items, plan, strict=True):
            if isinstance(version, VaultError):
                out.append(version)
                continue
            assert isinstance(item, EncryptItem)
            out.append(Encrypted(seal(version.version, item), version.version))
        return out

    async def decrypt(
        self, name: str, items: Sequence[DecryptItem | VaultError], operation: str = "decrypt"
    ) -> list[bytes | VaultError]:
        """Each item's plaintext or its own error. The HSM work is one job, plus one more
        only when some item did not authenticate (``Envelope.check_job``)."""
        parsed: list[ParsedCiphertext | None] = []
        out: list[bytes | VaultError | None] = []
        for item in items:
            try:
                parsed.append(parse(item.ciphertext) if isinstance(item, DecryptItem) else None)
                out.append(item if isinstance(item, VaultError) else None)
            except VaultError as exc:
                parsed.append(None)
                out.append(exc)
        newest = max((p.version for p in parsed if p is not None), default=None)
        key = await self.registry.get(name, newest=newest)
        _require(key, "decryption", operation)
        job, calls = Envelope.unwrap_job(key, parsed)
        deks = await self.hsm.run(job, calls=calls)
        failed: dict[int, bytes] = {}  # item -> the object id of the version it names
        opened = zip(items, parsed, deks, openers(deks), strict=True)
        for i, (item, p, dek, aead) in enumerate(opened):
            if out[i] is not None:
                continue
            if isinstance(dek, VaultError):
                out[i] = dek
                continue
            assert isinstance(item, DecryptItem)
            assert p is not None
            assert dek is not None
            out[i] = Envelope.open(key, p, dek, item.associated_data, aead)
            if out[i] is None:  # the data key or the payload did not authenticate
                failed[i] = key.versions[p.version].object_id()
        if failed:
            works = await self.hsm.run(Envelope.check_job(list(failed.values())))
            for i, kek in failed.items():
                out[i] = InvalidCiphertext() if works[kek] else HsmUnavailable()
        return [r if r is not None else InvalidCiphertext() for r in out]

    async def rewrap(
        self, name: str, items: Sequence[DecryptItem | VaultError], key_version: int | None = None
    ) -> list[Encrypted | VaultError]:
        plaintexts = await self.decrypt(name, items, "rewrap")
        again: list[EncryptItem | VaultError] = []
        for item, plain in zip(items, plaintexts, strict=True):
            if isinstance(plain, VaultError):
                again.append(plain)
            else:
                assert isinstance(item, DecryptItem)
                again.append(EncryptItem(plain, item.associated_data, item.key_version))
        return await self.encrypt(name, again, key_version, "rewrap")

    async def datakey(
        self, name: str, bits: int, associated_data: bytes, key_version: int | None = None
    ) -> DataKey:
        if bits not in DATAKEY_BITS:
            raise BadRequest("invalid bit length: bits must be 128, 256 or 512")
        key = await self.registry.get(name, newest=key_version)
        _require(key, "data keys", "datakey")
        version = key.version_to_use(key_version)
        self.wraps.charge(key, [version])
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
