"""The raw PKCS#11 ceiling: the HSM operations behind each endpoint, in-process, one thread,
through the vault's own HSM layer (``Vault.hsm.run_sync``), with no HTTP, JSON or auth.

Nonces: AES-GCM under the real ``backup-share`` key must never reuse a (nonce, key) pair;
the IVs here are random 96-bit values as the envelope's are (docs/envelope.md). The
plaintext is moreover a constant, so even a repeated IV could not leak anything.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from hsm import HsmOps, MacAlgorithm, SignScheme
from vault.config import load_settings
from vault.envelope import DEK_BYTES, NONCE_BYTES
from vault.runtime import Vault

AES_KEY = "backup-share"
HMAC_KEY = "payout-digest"
ECDSA_KEY = "payout-signing"
OTP_KEY = "otp-seeds"
_DEK = bytes(DEK_BYTES)  # a constant 32-byte "data key": see the module docstring
_AAD = b"hsm-vault/bench/ceiling"
_INPUT = bytes(range(64))
_OTP_MESSAGES = [(n).to_bytes(8, "big") for n in (1000, 1001, 1002)]


@dataclass(frozen=True, slots=True)
class Ceiling:
    op: str
    description: str
    ops_per_s: float
    us_per_op: float
    count: int

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            "op": self.op,
            "description": self.description,
            "ops_per_s": self.ops_per_s,
            "us_per_op": self.us_per_op,
            "count": self.count,
        }


def _measure(
    rt: Vault, op: Callable[[HsmOps], object], seconds: float, chunk: int = 200
) -> tuple[float, int]:
    """Run ``op`` in chunks (one ``run_sync`` job each) for about ``seconds``; ops/s."""

    def job(ops: HsmOps) -> None:
        for _ in range(chunk):
            op(ops)

    rt.hsm.run_sync(job)  # warm-up: session copies of the keys, caches
    count = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        rt.hsm.run_sync(job)
        count += chunk
    elapsed = time.perf_counter() - start
    return count / elapsed, count


def measure(seconds: float = 1.5) -> list[Ceiling]:
    """Each operation for ``seconds`` on a runtime opened over var/ (as the server opens it)."""
    rt = Vault.open(load_settings())
    try:
        aes = rt.registry.get_sync(AES_KEY).version_to_use().object_id()
        hmac_id = rt.registry.get_sync(HMAC_KEY).version_to_use().object_id()
        ecdsa = rt.registry.get_sync(ECDSA_KEY).version_to_use().object_id()
        otp = rt.registry.get_sync(OTP_KEY).version_to_use()
        wrap = otp.object_id("wrap")

        sample_nonce, sample = rt.hsm.run_sync(
            lambda ops: ops.encrypt_gcm(aes, os.urandom(NONCE_BYTES), _DEK, _AAD)
        )
        wrapped_seed = rt.hsm.run_sync(lambda ops: ops.seed_import(wrap, os.urandom(20)))

        def sign(ops: HsmOps) -> bytes:
            digest = hashlib.sha256(_INPUT).digest()
            return ops.sign(ecdsa, SignScheme.ECDSA, digest, "sha256")

        cases: list[tuple[str, str, Callable[[HsmOps], object]]] = [
            (
                "encrypt",
                "AES-256-GCM encrypt of a 32-byte data key (the envelope's wrap)",
                lambda ops: ops.encrypt_gcm(aes, os.urandom(NONCE_BYTES), _DEK, _AAD),
            ),
            (
                "decrypt",
                "AES-256-GCM decrypt of a wrapped data key",
                lambda ops: ops.decrypt_gcm(aes, sample_nonce, sample, _AAD),
            ),
            (
                "hmac",
                "HMAC-SHA256 over 64 bytes",
                lambda ops: ops.mac(hmac_id, MacAlgorithm.SHA256, _INPUT),
            ),
            ("sign", "ECDSA P-256: SHA-256 on the host + CKM_ECDSA", sign),
            (
                "otp",
                "OTP check: unwrap a seed, 3 x HMAC-SHA1, destroy it",
                lambda ops: ops.seed_macs(wrap, wrapped_seed, MacAlgorithm.SHA1, _OTP_MESSAGES),
            ),
        ]
        results = []
        for name, description, op in cases:
            chunk = 20 if name in ("sign", "otp") else 200
            rate, count = _measure(rt, op, seconds, chunk)
            results.append(Ceiling(name, description, rate, 1e6 / rate, count))
        return results
    finally:
        rt.close()
