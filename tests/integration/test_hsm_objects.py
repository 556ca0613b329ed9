"""What is on the token, read by an independent tool (OpenSC's pkcs11-tool) and by the
vault's own HSM layer: every key is sensitive and never extractable; no seed lingers."""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import re
import shutil
import subprocess
import uuid

import pyotp
import pytest

from vault.otp.service import TokenIdentity, VerifyInput, token_params

pytestmark = pytest.mark.hsm

_OBJECT = re.compile(r"^(Secret Key|Private Key|Public Key) Object", re.MULTILINE)


def _pkcs11_tool_objects(settings) -> list[dict[str, str]]:  # type: ignore[no-untyped-def]
    tool = shutil.which("pkcs11-tool")
    if tool is None:
        pytest.fail("pkcs11-tool (Debian's opensc) is required: `make test` installs it")
    env = dict(
        os.environ, VAULT_TEST_PIN=settings.user_pin(), SOFTHSM2_CONF=str(settings.softhsm_conf)
    )
    out = subprocess.run(  # the PIN travels in the environment (env:NAME), never in argv
        [
            tool,
            "--module",
            settings.pkcs11_module,
            "--token-label",
            settings.token_label,
            "-l",
            "--pin",
            "env:VAULT_TEST_PIN",
            "-O",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    objects = []
    starts = [m.start() for m in _OBJECT.finditer(out)] + [len(out)]
    for a, b in itertools.pairwise(starts):
        text = out[a:b]
        fields = {"kind": text.split(" Object", 1)[0]}
        for line in text.splitlines()[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                fields[k.strip().lower()] = v.strip()
        objects.append(fields)
    return objects


def test_every_vault_key_is_sensitive_and_never_extractable(runtime, settings) -> None:  # type: ignore[no-untyped-def]
    # Make sure every kind of key exists, then ask the independent reader.
    for kind in ("aes256-gcm96", "hmac", "ecdsa-p256", "ed25519", "rsa-3072", "otp-seed"):
        runtime.registry.create_sync(f"objects-{kind}", kind)
    objects = _pkcs11_tool_objects(settings)
    secrets_ = [o for o in objects if o["kind"] in ("Secret Key", "Private Key")]
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


def test_verification_leaves_no_seed_behind(runtime) -> None:  # type: ignore[no-untyped-def]
    otp = runtime.otp
    identity = TokenIdentity(f"tok-{uuid.uuid4()}", "app", "dfp")
    seed = os.urandom(20)
    blob = asyncio.run(
        otp.import_seed("otp-seeds", identity, token_params("totp", "sha1", 6, 30, None), seed)
    )

    def session_objects() -> int:
        return int(runtime.hsm.run_sync(lambda ops: ops.session_object_count()))

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
