"""What is on the token, read by an independent tool (OpenSC's pkcs11-tool) and by the
vault's own HSM layer: every key is sensitive and never extractable; no seed lingers outside
the seed cache (whose objects tests/integration/otp/test_seed_cache.py looks at)."""

from __future__ import annotations

import asyncio
import base64
import os
import time
import uuid

import pyotp
import pytest

from tests.conftest import token_objects
from vault.otp.service import TokenIdentity, VerifyInput, token_params

pytestmark = pytest.mark.hsm


def _settled_secrets(settings) -> list[dict[str, str]]:  # type: ignore[no-untyped-def]
    """The token's secret and private keys, listed again (2 s at most) while one is unlabeled:
    the session-scoped test server shares the token and may be creating a key (an automatic
    rotation), which SoftHSM 2.6 shows other processes before its attributes are written."""
    deadline = time.monotonic() + 2
    while True:
        objects = token_objects(settings)
        found = [o for o in objects if o["kind"] in ("Secret Key", "Private Key")]
        if all(o.get("label") for o in found) or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_every_vault_key_is_sensitive_and_never_extractable(runtime, settings) -> None:  # type: ignore[no-untyped-def]
    # Make sure every kind of key exists, then ask the independent reader.
    for kind in ("aes256-gcm96", "hmac", "ecdsa-p256", "ed25519", "rsa-3072", "otp-seed"):
        runtime.registry.create_sync(f"objects-{kind}", kind)
    secrets_ = _settled_secrets(settings)
    labels = {o.get("label", "") for o in secrets_}
    for kind in ("aes256-gcm96", "hmac", "ecdsa-p256", "ed25519", "rsa-3072"):
        assert f"vault:objects-{kind}:v1" in labels
    for kind in ("aes256-gcm96", "ecdsa-p256", "ed25519", "rsa-3072"):
        assert f"vault:objects-{kind}:v1:hmac" in labels  # Transit's HMAC key per version
    assert "vault:objects-otp-seed:v1:wrap" in labels
    assert "vault:objects-otp-seed:v1:bind" in labels
    # The OTP wrap key cannot encrypt or decrypt raw data (with AES-ECB decryption a KEK is
    # an unwrap oracle on the host): it wraps and unwraps, nothing else.
    wrap = next(o for o in secrets_ if o.get("label") == "vault:objects-otp-seed:v1:wrap")
    assert wrap.get("usage") == "wrap, unwrap", wrap
    assert secrets_, "no key objects found"
    for obj in secrets_:
        assert obj.get("label", "").startswith("vault:"), obj
        access = obj.get("access", "")
        assert "sensitive" in access, obj
        assert "always sensitive" in access, obj
        assert "never extractable" in access, obj
        assert "local" in access, obj  # generated on the token, not imported


def test_keys_are_used_as_the_token_objects_they_are(runtime) -> None:  # type: ignore[no-untyped-def]
    """No session copy of any key: a copy would outlive the key's deletion in this process
    (and SoftHSM cannot copy a non-modifiable key into the session anyway)."""

    from vault.envelope import EncryptItem
    from vault.signing import SignOptions

    aes, _ = runtime.registry.create_sync(f"direct-{uuid.uuid4().hex[:8]}", "aes256-gcm96")
    ec, _ = runtime.registry.create_sync(f"direct-{uuid.uuid4().hex[:8]}", "ecdsa-p256")
    asyncio.run(runtime.transit.encrypt(aes.name, [EncryptItem(b"x", b"")]))
    asyncio.run(runtime.signer.sign(ec.name, [b"x"], SignOptions()))

    def others(ops):  # type: ignore[no-untyped-def]
        """Session objects besides the seeds the seed cache keeps (earlier tests' checks)."""
        return ops.session_object_count() - ops.cached_seed_count()

    # None: no key is used through a session copy (see _settled_secrets for the retry).
    deadline = time.monotonic() + 2
    while runtime.hsm.run_sync(others) != 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert runtime.hsm.run_sync(others) == 0


def test_verification_leaves_no_seed_behind(runtime) -> None:  # type: ignore[no-untyped-def]
    otp = runtime.otp
    identity = TokenIdentity(f"tok-{uuid.uuid4()}", "app", "dfp")
    seed = os.urandom(20)
    blob = asyncio.run(
        otp.import_seed("otp-seeds", identity, token_params("totp", "sha1", 6, 30, None), seed)
    )

    def session_objects() -> int:
        """Session objects besides the seeds the seed cache keeps, one per seed."""
        return int(
            runtime.hsm.run_sync(lambda ops: ops.session_object_count() - ops.cached_seed_count())
        )

    before = session_objects()
    code = pyotp.TOTP(base64.b32encode(seed).decode()).now()
    result = asyncio.run(otp.verify("otp-seeds", VerifyInput(blob, identity, code)))
    assert result.valid is True
    assert session_objects() == before
    # A failing verification (and a tampered blob) clean up as well.
    asyncio.run(
        otp.verify(
            "otp-seeds", VerifyInput(blob, identity, "000000" if code != "000000" else "111111")
        )
    )
    assert session_objects() == before


def test_an_unwrapped_seed_is_sensitive_and_not_extractable(runtime) -> None:  # type: ignore[no-untyped-def]
    """Look at the object verification uses, with the template verification uses."""
    from pkcs11 import Attribute

    key = runtime.registry.get_sync("otp-seeds")
    wrap_id = key.version_to_use().object_id("wrap")

    def job(ops):  # type: ignore[no-untyped-def]
        wrapped = ops.seed_import(wrap_id, os.urandom(20))
        obj = ops._unwrap_seed(wrap_id, wrapped)
        try:
            return (
                bool(obj[Attribute.SENSITIVE]),
                bool(obj[Attribute.EXTRACTABLE]),
                bool(obj[Attribute.TOKEN]),
                bool(obj[Attribute.SIGN]),
                bool(obj[Attribute.ENCRYPT]),
            )
        finally:
            obj.destroy()

    sensitive, extractable, on_token, can_sign, can_encrypt = runtime.hsm.run_sync(job)
    assert sensitive is True
    assert extractable is False
    assert on_token is False
    assert can_sign is True
    assert can_encrypt is False
