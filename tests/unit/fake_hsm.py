"""An in-memory stand-in for the HSM adapter, for unit tests of ``vault/`` alone.

It keeps key material in a dict and does the crypto with ``cryptography``; it behaves like
``hsm/`` where the domain can tell: a bad GCM tag is ``DecryptionFailed`` (decided by
``key_works``), a missing object is ``ObjectMissing``, every job runs under one lock. It
counts the calls of each kind (``FakeOps.calls``). Test scaffolding only, never a model of
how the real token protects anything.
"""

from __future__ import annotations

import hmac
import os
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hsm import KeySpec, MacAlgorithm, ObjectInfo
from hsm.errors import DecryptionFailed, HsmUnavailable, ObjectMissing
from vault.approvals import Authority
from vault.hsm import Hsm
from vault.registry import KeyRegistry
from vault.store import Database, make_engine, migrate
from vault.store.keys import KeyStore

T = TypeVar("T")
_AES = frozenset({KeySpec.AES256, KeySpec.AES256_GCM, KeySpec.OTP_WRAP})
_HMAC = frozenset({KeySpec.HMAC256, KeySpec.HMAC512, KeySpec.OTP_BIND})


@dataclass
class FakeObject:
    spec: KeySpec
    label: str
    secret: Any  # bytes for AES/HMAC, a private key object for the asymmetric specs


class FakeOps:
    """The ``HsmOps`` calls the envelope, key registry and transit code make."""

    def __init__(self) -> None:
        self.store: dict[bytes, FakeObject] = {}
        self.calls: Counter[str] = Counter()  # HSM calls made, by kind
        self.forgotten: list[bytes] = []  # wrap key ids whose cached seeds were dropped

    def generate(self, spec: KeySpec, key_id: bytes, label: str) -> None:
        if key_id in self.store:
            raise ValueError(f"an object with id {key_id.hex()} already exists")
        secret: Any
        if spec in _AES | _HMAC:
            secret = os.urandom(32)
        elif spec in (KeySpec.EC_P256, KeySpec.EC_P256_ECDH):
            secret = ec.generate_private_key(ec.SECP256R1())
        elif spec is KeySpec.ED25519:
            secret = ed25519.Ed25519PrivateKey.generate()
        else:
            secret = rsa.generate_private_key(public_exponent=65537, key_size=3072)
        self.store[key_id] = FakeObject(spec, label, secret)

    def forget_seeds(self, wrap_key_id: bytes) -> int:
        """The fake keeps no unwrapped seeds; what the domain asked to drop is recorded."""
        self.calls["forget_seeds"] += 1
        self.forgotten.append(wrap_key_id)
        return 0

    def destroy(self, key_id: bytes) -> int:
        found = self.store.pop(key_id, None)
        if found is None:
            return 0
        return 2 if found.spec.asymmetric else 1  # a key pair is two objects

    def exists(self, key_id: bytes) -> bool:
        return key_id in self.store

    def objects(self) -> list[ObjectInfo]:
        return [
            ObjectInfo(
                key_id=key_id,
                label=obj.label,
                object_class="PRIVATE_KEY" if obj.spec.asymmetric else "SECRET_KEY",
                key_type=obj.spec.value,
                sensitive=True,
                extractable=False,
                token=True,
            )
            for key_id, obj in self.store.items()
        ]

    def random(self, length: int) -> bytes:
        return os.urandom(length)

    def _secret(self, key_id: bytes, specs: frozenset[KeySpec]) -> bytes:
        obj = self.store.get(key_id)
        if obj is None:
            raise ObjectMissing()
        if obj.spec not in specs:
            raise TypeError(f"object {key_id.hex()} is {obj.spec.value}, not one of {specs}")
        secret: bytes = obj.secret
        return secret

    def encrypt_gcm(
        self, key_id: bytes, iv: bytes, plaintext: bytes, aad: bytes
    ) -> tuple[bytes, bytes]:
        self.calls["encrypt_gcm"] += 1
        return iv, AESGCM(self._secret(key_id, _AES)).encrypt(iv, plaintext, aad)

    def decrypt_gcm(self, key_id: bytes, iv: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        self.calls["decrypt_gcm"] += 1
        key = self._secret(key_id, _AES)
        try:
            return AESGCM(key).decrypt(iv, ciphertext, aad)
        except InvalidTag:
            raise DecryptionFailed() from None

    def key_works(self, key_id: bytes, oaep_hash: str | None = None) -> bool:
        self.calls["key_works"] += 1
        return key_id in self.store

    def mac(self, key_id: bytes, algorithm: MacAlgorithm, data: bytes) -> bytes:
        self.calls["mac"] += 1
        return hmac.new(self._secret(key_id, _HMAC), data, algorithm.value).digest()

    def public_key_der(self, key_id: bytes) -> bytes:
        obj = self.store.get(key_id)
        if obj is None:
            raise ObjectMissing()
        if not obj.spec.asymmetric:
            raise TypeError("a secret key has no public half")
        der: bytes = obj.secret.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return der


class FakeHsm:
    """A ``hsm.JobRunner`` over :class:`FakeOps`: jobs run one at a time, in the caller's
    thread."""

    def __init__(self) -> None:
        self.ops = FakeOps()
        self.jobs = 0  # how many jobs ran: the domain promises one per call
        self.fresh_jobs = 0  # of which with the token read afresh first
        self._lock = threading.Lock()
        self._closed = False

    async def run(self, job: Callable[[Any], T], *, calls: int = 1) -> T:
        return self.run_sync(job)

    def run_now(self, job: Callable[[Any], T], *, calls: int = 1) -> tuple[bool, T | None]:
        return True, self.run_sync(job)

    def run_sync(self, job: Callable[[Any], T], *, fresh: bool = False) -> T:
        if self._closed:
            raise HsmUnavailable()
        with self._lock:
            self.jobs += 1
            self.fresh_jobs += fresh
            return job(self.ops)

    def healthy(self) -> bool:
        return not self._closed

    def close(self) -> None:
        self._closed = True

    def labels(self) -> dict[bytes, str]:
        return {info.key_id: info.label for info in self.ops.objects()}


# For unit tests of rules other than dual control: changes made as if a dev service exempt
# from it made them (tests/unit/test_approvals.py checks dual control itself).
UNATTENDED = Authority("test", exempt=True)


def registry_over(fake: FakeHsm, database_url: str, *, cache_ttl: float = 1.0) -> KeyRegistry:
    """A key registry on a migrated database and the fake HSM, as the domain sees them."""
    engine = make_engine(database_url)
    migrate(engine)
    return KeyRegistry(KeyStore(Database(engine)), Hsm(fake), cache_ttl)
