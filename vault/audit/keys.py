"""The HSM keys kept for the audit alone: one signs checkpoints, one makes subject digests.

They are not in the key registry, so no API route, grant or officer command can use, rotate
or delete them: each is a fixed ``CKA_ID`` that ``hsm-vault bootstrap`` creates once (like
every key here: sensitive, never extractable).

- signing: ECDSA P-256 (``audit-signing-v1``). Checkpoints are signed over SHA-256 of their
  body; the signature is kept in DER, which ``openssl dgst -sha256 -verify`` and
  ``cryptography`` verify as they are.
- subjects: HMAC-SHA-256 (``audit-subjects-v1``). A subject (``user_id=...``) is recorded as
  the first 16 bytes of its HMAC (hex): the same subject always gives the same digest, so
  quotas can count it and an auditor can follow it, and nobody without the HSM can tell
  whose it is.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

from cryptography.hazmat.primitives import serialization

from hsm import HsmOps, KeySpec, MacAlgorithm, SignScheme
from vault.hsm import Hsm
from vault.signing import ecdsa_raw_to_der

SIGNING_KEY = "audit-signing-v1"
SIGNING_ID = b"hsm-vault/audit/signing/v1"
SUBJECTS_KEY = "audit-subjects-v1"
SUBJECTS_ID = b"hsm-vault/audit/subjects/v1"
SUBJECT_DIGEST_BYTES = 16  # 128 bits: no two subjects share a digest in practice
_DIGEST_CACHE = 4096
_KEYS = ((SIGNING_KEY, SIGNING_ID, KeySpec.EC_P256), (SUBJECTS_KEY, SUBJECTS_ID, KeySpec.HMAC256))
AUDIT_KEY_IDS = frozenset(key_id for _, key_id, _ in _KEYS)  # never a registry key's objects


class AuditKeys:
    def __init__(self, hsm: Hsm) -> None:
        self.hsm = hsm
        self._public_pem: bytes | None = None
        self._digests: OrderedDict[bytes, str] = OrderedDict()

    def ensure_sync(self) -> list[str]:
        """Create whichever audit key is missing; the names of those created."""

        def job(ops: HsmOps) -> list[str]:
            present = {o.key_id for o in ops.objects()}
            made = []
            for name, key_id, spec in _KEYS:
                if key_id not in present:
                    ops.generate(spec, key_id, f"vault:{name}")
                    made.append(name)
            return made

        return self.hsm.run_sync(job)

    # -- checkpoints -----------------------------------------------------------------------

    @staticmethod
    def _sign_job(body: bytes):  # type: ignore[no-untyped-def]
        digest = hashlib.sha256(body).digest()

        def job(ops: HsmOps) -> bytes:
            return ops.sign(SIGNING_ID, SignScheme.ECDSA, digest, "sha256")

        return job

    async def sign(self, body: bytes) -> bytes:
        return ecdsa_raw_to_der(await self.hsm.run(self._sign_job(body)))

    def sign_sync(self, body: bytes) -> bytes:
        return ecdsa_raw_to_der(self.hsm.run_sync(self._sign_job(body)))

    def public_key_pem(self) -> bytes:
        """The signing key's public half (PEM SubjectPublicKeyInfo), read from the HSM."""
        if self._public_pem is None:
            der = self.hsm.run_sync(lambda ops: ops.public_key_der(SIGNING_ID))
            self._public_pem = serialization.load_der_public_key(der).public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        return self._public_pem

    # -- subjects --------------------------------------------------------------------------

    async def subject_digests(self, inputs: list[bytes]) -> list[str]:
        """The keyed digest of each input (one HSM job for those not seen recently)."""
        known = {i: self._digests.get(i) for i in inputs}
        missing = [i for i, d in known.items() if d is None]
        if missing:

            def job(ops: HsmOps) -> list[bytes]:
                return [ops.mac(SUBJECTS_ID, MacAlgorithm.SHA256, m) for m in missing]

            macs = await self.hsm.run(job, calls=len(missing))
            for given, mac in zip(missing, macs, strict=True):
                known[given] = self._digests[given] = mac[:SUBJECT_DIGEST_BYTES].hex()
                if len(self._digests) > _DIGEST_CACHE:
                    self._digests.popitem(last=False)
        return [known[i] or "" for i in inputs]
