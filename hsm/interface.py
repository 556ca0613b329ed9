"""The adapter's small interface: value types, the operations a job may call, the runner.

A caller composes a *job* — a plain function over :class:`HsmOps` — and hands it to
:meth:`JobRunner.run`. The whole job runs under the one PKCS#11 lock (on the HSM's own
thread, or inline when that is cheaper), so one request costs one hand-over however many
HSM calls it makes, and no two threads ever call the module at once (SoftHSM2 crashes when
they do; see docs/design.md). Exceptions a job raises itself pass through unchanged; those
of the token arrive as :mod:`hsm.errors`.

Keys are named by their ``CKA_ID`` (bytes); the caller stores that id with each key version.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from hsm.errors import HsmError

T = TypeVar("T")


class KeySpec(enum.Enum):
    """What one HSM object (or key pair) is and the one job it may do. Every secret or private
    key is sensitive, never extractable and not modifiable; where the spec names a job, the
    token allows the object that job's mechanisms only (``CKA_ALLOWED_MECHANISMS``), so a key
    cannot be turned to another use even by a caller holding the PIN."""

    AES256 = "aes256"
    AES256_GCM = "aes256-gcm"  # AES-GCM encryption and decryption only (an envelope KEK)
    HMAC256 = "hmac256"  # a 256-bit generic secret (HMAC-SHA-256)
    HMAC512 = "hmac512"  # a 512-bit generic secret: HMAC-SHA-1/224/256/384/512 only
    EC_P256 = "ec-p256"  # ECDSA only
    EC_P256_ECDH = "ec-p256-ecdh"  # ECDH key agreement only
    ED25519 = "ed25519"  # EdDSA only
    RSA3072 = "rsa3072"  # RSA-PSS and PKCS#1 v1.5 signatures only
    RSA3072_OAEP = "rsa3072-oaep"  # RSA-OAEP decryption only
    # OTP seed custody (one of each per otp-seed key version): a key that only wraps and
    # unwraps seeds with AES key wrap with padding, and unwraps them only into sensitive,
    # never-extractable HMAC-only objects; and an HMAC-SHA-256-only key for seed blobs' tags.
    OTP_WRAP = "otp-wrap"
    OTP_BIND = "otp-bind"

    @property
    def asymmetric(self) -> bool:
        return self in _ASYMMETRIC


_ASYMMETRIC = frozenset(
    {KeySpec.EC_P256, KeySpec.EC_P256_ECDH, KeySpec.ED25519, KeySpec.RSA3072, KeySpec.RSA3072_OAEP}
)


class MacAlgorithm(enum.Enum):
    SHA1 = "sha1"
    SHA224 = "sha224"
    SHA256 = "sha256"
    SHA384 = "sha384"
    SHA512 = "sha512"


class SignScheme(enum.Enum):
    """How the HSM signs. Hashing happens on the host (SoftHSM 2.6 lacks CKM_ECDSA_SHA*)."""

    ECDSA = "ecdsa"  # input: digest; output: r || s (raw, 64 bytes for P-256)
    EDDSA = "eddsa"  # input: the message itself (Ed25519 is not prehashed)
    RSA_PSS = "rsa-pss"  # input: digest
    RSA_PKCS1V15 = "rsa-pkcs1v15"  # input: DER DigestInfo


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One object on the token, as an independent inventory sees it."""

    key_id: bytes
    label: str
    object_class: str
    key_type: str
    sensitive: bool
    extractable: bool
    token: bool


@dataclass(frozen=True, slots=True)
class GeneratedSeed:
    """A new OTP seed: always wrapped for storage; in plaintext once (for provisioning) or
    wrapped to the device's public key, never both."""

    wrapped: bytes
    plaintext: bytes | None = None
    device_wrapped: bytes | None = None
    device_wrapping: str | None = None  # the JOSE name of the RSA-OAEP variant used


@dataclass(frozen=True, slots=True)
class SeedRef:
    """Names a seed blob for the process's seed cache: the wrap key's id, a digest of the whole
    blob (every byte its tag covers, and the tag), and a digest of the identity binding the
    caller presents it with (what the HSM must have verified for that blob)."""

    wrap_key_id: bytes
    blob: bytes
    binding: bytes


class HsmOps(Protocol):
    """Synchronous HSM operations; only ever called on the HSM thread, inside a job."""

    def generate(self, spec: KeySpec, key_id: bytes, label: str) -> None:
        """Create a persistent key (pair) with ``CKA_ID=key_id``: sensitive, not extractable."""

    def destroy(self, key_id: bytes) -> int:
        """Destroy every object with this id; return how many there were."""

    def objects(self) -> list[ObjectInfo]: ...

    def random(self, length: int) -> bytes: ...

    def encrypt_gcm(
        self, key_id: bytes, iv: bytes, plaintext: bytes, aad: bytes
    ) -> tuple[bytes, bytes]:
        """AES-256-GCM with a 128-bit tag appended to the ciphertext. Returns the IV the
        token really used with the ciphertext: some modules (AWS CloudHSM, FIPS-mode
        modules) ignore the one offered and write their own into the mechanism parameters."""

    def decrypt_gcm(self, key_id: bytes, iv: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        """Raises ``DecryptionFailed`` when the data does not decrypt: the token does not say
        whether the tag or the device failed; :meth:`key_works` tells them apart."""

    def key_works(self, key_id: bytes, oaep_hash: str | None = None) -> bool:
        """Whether a known-good ciphertext still decrypts under this key — AES-GCM, or
        RSA-OAEP with ``oaep_hash`` for a decryption key pair. If it does, the key and the
        device work, and a decryption that failed under the key failed on its input."""

    def mac(self, key_id: bytes, algorithm: MacAlgorithm, data: bytes) -> bytes: ...

    def sign(self, key_id: bytes, scheme: SignScheme, data: bytes, hash_name: str) -> bytes:
        """``hash_name`` (sha256/sha384/sha512) selects the PSS hash and MGF; ignored otherwise."""

    def public_key_der(self, key_id: bytes) -> bytes:
        """The public half as DER SubjectPublicKeyInfo."""

    def rsa_oaep_decrypt(self, key_id: bytes, ciphertext: bytes, hash_name: str) -> bytes:
        """Raises ``DecryptionFailed`` as :meth:`decrypt_gcm` does."""

    def ecdh(self, key_id: bytes, peer_point: bytes) -> bytes:
        """ECDH on P-256 with the private key ``key_id``; returns the shared secret Z."""

    def seed_generate(
        self, wrap_key_id: bytes, length: int, device_public_key_der: bytes | None
    ) -> GeneratedSeed:
        """Generate an OTP seed inside the HSM and wrap it (AES key wrap with padding).

        Without a device key the seed leaves once in plaintext for provisioning; with one,
        it is wrapped to the device (RSA-OAEP) and its plaintext never leaves the HSM."""

    def seed_import(self, wrap_key_id: bytes, seed: bytes) -> bytes:
        """Take a vendor seed once, return only its wrapped form."""

    def seed_macs(
        self,
        wrap_key_id: bytes,
        wrapped: bytes,
        algorithm: MacAlgorithm,
        messages: Sequence[bytes],
        until: Callable[[bytes], bool] | None = None,
        keep: SeedRef | None = None,
    ) -> list[bytes]:
        """Unwrap the seed into a sensitive, non-extractable session object, MAC each
        message with it (stopping after the first MAC ``until`` accepts), and destroy it
        (also when anything fails). A blob that does not unwrap is ``AuthenticationFailed``
        when the wrap key still unwraps a known-good blob, ``HsmUnavailable`` otherwise.

        ``keep``: the caller has had the HSM authenticate the blob for ``keep.binding`` in
        this job; the object then stays in the process's seed cache (when it has one) instead
        of being destroyed, and a seed the cache already holds for the blob is used as is."""

    def cached_seed_macs(
        self,
        ref: SeedRef,
        algorithm: MacAlgorithm,
        messages: Sequence[bytes],
        until: Callable[[bytes], bool] | None = None,
    ) -> list[bytes] | None:
        """The MACs (as :meth:`seed_macs`) with the seed the cache holds for ``ref``'s blob,
        if the HSM verified ``ref.binding`` for it; None otherwise (nothing was computed:
        the caller authenticates the blob and calls :meth:`seed_macs` with ``keep``)."""

    def forget_seed(self, ref: SeedRef) -> None:
        """Destroy the cached seed of ``ref``'s blob, if any (the seed was deactivated)."""

    def forget_seeds(self, wrap_key_id: bytes) -> int:
        """Destroy every cached seed unwrapped under this wrap key; return how many."""

    def cached_seed_count(self) -> int:
        """How many seeds the cache holds (each one session object)."""


class HsmObserver(Protocol):
    """What the runner reports as it works (for metrics). Called on whichever thread ran the
    job, under the PKCS#11 lock: it must be cheap and must not raise."""

    def job_done(self, error: HsmError | None) -> None:
        """A job ran; ``error`` is the token's error when it failed there (a job's own
        exceptions, such as a tag that does not verify in the caller's check, are not)."""

    def session_opened(self) -> None:
        """A session was opened and logged in (at start, or again after a loss)."""

    def session_closed(self, *, lost: bool) -> None:
        """The session is gone: ``lost`` when the token or the device dropped it (or a job
        found it unusable), not when it was closed on purpose or could not be opened."""


class JobRunner(Protocol):
    """Runs jobs under the PKCS#11 lock (``hsm.HsmThread``; a fake in unit tests)."""

    async def run(self, job: Callable[[HsmOps], T], *, calls: int = 1) -> T:
        """Run ``job`` without blocking the event loop on a slow HSM. ``calls`` is about how
        many HSM calls the job makes: a job of many (a batch) always runs on the HSM thread.
        Cancelling the caller skips a job that has not started yet."""
        ...

    def run_now(self, job: Callable[[HsmOps], T], *, calls: int = 1) -> tuple[bool, T | None]:
        """``(True, result)`` when ``job`` could run at once on the calling thread (a short
        job, the lock free, the HSM fast: ``run`` would have run it inline too); its errors
        are raised. ``(False, None)``: nothing ran; ``run`` it."""
        ...

    def run_sync(self, job: Callable[[HsmOps], T], *, fresh: bool = False) -> T:
        """Run ``job`` on the calling thread. ``fresh``: read the token afresh first, so the
        job sees every object other processes made (SoftHSM 2.6 may hide them otherwise)."""
        ...

    def healthy(self) -> bool: ...

    def close(self) -> None: ...
