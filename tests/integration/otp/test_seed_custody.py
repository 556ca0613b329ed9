"""What the token itself enforces for OTP seeds (real SoftHSM2, python-pkcs11 straight at the
objects the vault made): a seed blob unwraps only into a sensitive, never-extractable,
HMAC-only session object; the wrap key cannot encrypt or decrypt; the bind key computes
HMAC-SHA-256 and nothing else; neither can be changed. Also: the blob's binding is keyed,
and seeds under versions made before all this keep working."""

from __future__ import annotations

import asyncio
import base64
import hmac
import os
import uuid
from typing import Any

import pyotp
import pytest
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import _pkcs11 as p11
from pkcs11 import exceptions as p11e

from hsm import KeySpec, MacAlgorithm
from hsm._ops import _SEED_TEMPLATE
from hsm.errors import AuthenticationFailed
from tests.integration.otp.conftest import legacy_binding
from vault import keytypes
from vault.errors import BadRequest
from vault.otp import seeds
from vault.otp.service import TokenIdentity, VerifyInput, token_params

pytestmark = pytest.mark.hsm

KEY = "otp-seeds"
IDENTITY = TokenIdentity("custody-token", "app", "dfp")
TOTP = token_params("totp", "sha1", 6, 30, None)

# What an attacker holding the user PIN would ask C_UnwrapKey for, instead of the template
# verification uses. Each must be refused by the token (CKR_TEMPLATE_INCONSISTENT).
ATTACKS: dict[str, dict[Attribute, Any] | None] = {
    "readable": {**_SEED_TEMPLATE, Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True},
    "not sensitive": {**_SEED_TEMPLATE, Attribute.SENSITIVE: False},
    "extractable": {**_SEED_TEMPLATE, Attribute.EXTRACTABLE: True},
    "kept on the token": {**_SEED_TEMPLATE, Attribute.TOKEN: True},
    "an AES key that decrypts": {
        **_SEED_TEMPLATE,
        Attribute.KEY_TYPE: KeyType.AES,
        Attribute.DECRYPT: True,
        Attribute.ALLOWED_MECHANISMS: [Mechanism.AES_ECB],
    },
    "a key that derives": {**_SEED_TEMPLATE, Attribute.DERIVE: True},
    "python-pkcs11's defaults": None,
}


def _probe(key: Any) -> Any:
    """The object with every operation's method, whatever its flags say: python-pkcs11 only
    offers ``encrypt`` on a key whose CKA_ENCRYPT is true, and the point is to ask anyway."""
    mixins = (p11.EncryptMixin, p11.DecryptMixin, p11.SignMixin)
    return type("Probe", (p11.SecretKey, *mixins, p11.Object), {})(key.wrapper)


def _objects(ops: Any, version: Any) -> tuple[Any, Any]:
    return (
        ops._key(version.object_id("wrap"), ObjectClass.SECRET_KEY),
        ops._key(version.object_id("bind"), ObjectClass.SECRET_KEY),
    )


@pytest.fixture(scope="module")
def latest(runtime: Any) -> Any:
    return runtime.registry.get_sync(KEY).version_to_use()


@pytest.mark.parametrize("attack", list(ATTACKS), ids=list(ATTACKS))
def test_a_seed_blob_unwraps_into_nothing_readable(runtime: Any, latest: Any, attack: str) -> None:
    seed = os.urandom(20)
    wrap_id = latest.object_id("wrap")

    def job(ops: Any) -> Any:
        wrapped = ops.seed_import(wrap_id, seed)
        wrapper, _ = _objects(ops, latest)
        try:
            obj = wrapper.unwrap_key(
                ObjectClass.SECRET_KEY,
                KeyType.GENERIC_SECRET,
                wrapped,
                mechanism=Mechanism.AES_KEY_WRAP_PAD,
                template=ATTACKS[attack],
            )
        except p11e.TemplateInconsistent:
            return "refused"
        try:
            return bytes(obj[Attribute.VALUE])
        except p11e.AttributeSensitive:
            return "unwrapped, not readable"
        finally:
            obj.destroy()

    assert runtime.hsm.run_sync(job) == "refused"


def test_the_verification_template_is_the_one_the_token_takes(runtime: Any, latest: Any) -> None:
    """The control for the attacks above: the exact template works, and gives an object
    that is sensitive, never extractable, a session object, and signs (HMAC) only."""
    wrap_id = latest.object_id("wrap")

    def job(ops: Any) -> dict[str, Any]:
        obj = ops._unwrap_seed(wrap_id, ops.seed_import(wrap_id, os.urandom(32)))
        try:
            flags = {
                a.name: bool(obj[a])
                for a in (
                    Attribute.SENSITIVE,
                    Attribute.EXTRACTABLE,
                    Attribute.TOKEN,
                    Attribute.SIGN,
                    Attribute.ENCRYPT,
                    Attribute.DERIVE,
                    Attribute.MODIFIABLE,
                )
            }
            flags["ALLOWED_MECHANISMS"] = set(obj[Attribute.ALLOWED_MECHANISMS])
            return flags
        finally:
            obj.destroy()

    flags = runtime.hsm.run_sync(job)
    assert flags == {
        "SENSITIVE": True,
        "EXTRACTABLE": False,
        "TOKEN": False,
        "SIGN": True,
        "ENCRYPT": False,
        "DERIVE": False,
        "MODIFIABLE": False,
        "ALLOWED_MECHANISMS": {
            Mechanism.SHA_1_HMAC,
            Mechanism.SHA256_HMAC,
            Mechanism.SHA512_HMAC,
        },
    }


@pytest.mark.parametrize(
    ("operation", "mechanism"),
    [
        ("decrypt", Mechanism.AES_ECB),  # with ECB, a KEK is an unwrap oracle on the host
        ("encrypt", Mechanism.AES_ECB),
        ("encrypt", Mechanism.AES_GCM),
        ("encrypt", Mechanism.AES_CBC_PAD),
    ],
    ids=["decrypt-ecb", "encrypt-ecb", "encrypt-gcm", "encrypt-cbc"],
)
def test_the_wrap_key_neither_encrypts_nor_decrypts(
    runtime: Any, latest: Any, operation: str, mechanism: Mechanism
) -> None:
    def job(ops: Any) -> str:
        wrapper, _ = _objects(ops, latest)
        param = p11.GCMParams(os.urandom(12), b"", 128) if mechanism is Mechanism.AES_GCM else None
        if mechanism is Mechanism.AES_CBC_PAD:
            param = os.urandom(16)
        try:
            getattr(_probe(wrapper), operation)(
                bytes(16), mechanism=mechanism, mechanism_param=param
            )
        except p11e.PKCS11Error as exc:
            return type(exc).__name__
        return "done"

    assert runtime.hsm.run_sync(job) != "done"


def test_the_bind_key_computes_hmac_sha256_only(runtime: Any, latest: Any) -> None:
    def job(ops: Any) -> dict[str, str]:
        _, bind = _objects(ops, latest)
        out = {}
        for mechanism in (Mechanism.SHA256_HMAC, Mechanism.SHA_1_HMAC, Mechanism.SHA512_HMAC):
            try:
                _probe(bind).sign(b"data", mechanism=mechanism)
                out[mechanism.name] = "done"
            except p11e.PKCS11Error as exc:
                out[mechanism.name] = type(exc).__name__
        return out

    result = runtime.hsm.run_sync(job)
    assert result["SHA256_HMAC"] == "done"
    assert result["SHA_1_HMAC"] != "done"
    assert result["SHA512_HMAC"] != "done"


def test_the_otp_keys_cannot_be_changed(runtime: Any, latest: Any) -> None:
    def job(ops: Any) -> list[tuple[bool, str]]:
        out = []
        for obj, attr in zip(
            _objects(ops, latest), (Attribute.DECRYPT, Attribute.DERIVE), strict=True
        ):
            try:
                obj[attr] = True
                outcome = "changed"
            except p11e.PKCS11Error as exc:
                outcome = type(exc).__name__
            out.append((bool(obj[Attribute.MODIFIABLE]), outcome))
        return out

    assert runtime.hsm.run_sync(job) == [(False, "PKCS11Error"), (False, "PKCS11Error")]


def test_a_tampered_blob_is_told_from_a_device_fault(runtime: Any, latest: Any) -> None:
    """SoftHSM reports a failed RFC 5649 integrity check as GeneralError, like a fault: the
    known-good blob of the same key (unwrapped into the same template) tells them apart."""
    wrap_id = latest.object_id("wrap")

    def job(ops: Any) -> str:
        wrapped = bytearray(ops.seed_import(wrap_id, os.urandom(20)))
        wrapped[5] ^= 1
        try:
            ops.seed_macs(wrap_id, bytes(wrapped), MacAlgorithm.SHA1, [b"m"])
        except AuthenticationFailed:
            return "authentication failed"
        return "unwrapped"

    assert runtime.hsm.run_sync(job) == "authentication failed"


def test_the_binding_is_keyed_and_per_seed(runtime: Any) -> None:
    made = [
        asyncio.run(runtime.otp.import_seed(KEY, IDENTITY, TOTP, os.urandom(20))) for _ in range(2)
    ]
    bindings = [seeds.parse(blob).binding for blob in made]
    assert legacy_binding(*IDENTITY.fields) not in bindings
    assert bindings[0] != bindings[1]  # two blobs of one token cannot be linked by it


def test_another_identity_is_refused_with_a_keyed_binding(runtime: Any) -> None:
    seed = os.urandom(20)
    blob = asyncio.run(runtime.otp.import_seed(KEY, IDENTITY, TOTP, seed))
    code = pyotp.TOTP(base64.b32encode(seed).decode()).now()
    other = TokenIdentity("custody-token", "app", "another-device")
    with pytest.raises(BadRequest, match="bound to another"):
        asyncio.run(runtime.otp.verify(KEY, VerifyInput(blob, other, code)))
    assert asyncio.run(runtime.otp.verify(KEY, VerifyInput(blob, IDENTITY, code))).valid is True


def _make_legacy_key(runtime: Any) -> str:
    """An otp-seed key whose version was made as before: a general AES-256 key (encrypt,
    decrypt, wrap, unwrap; no unwrap template) and an HMAC key of any hash."""
    name = f"otp-legacy-{uuid.uuid4().hex[:8]}"
    current = keytypes.KEY_TYPES["otp-seed"]
    keytypes.KEY_TYPES["otp-seed"] = keytypes.KeyType(
        "otp-seed",
        {keytypes.Purpose.OTP: (("wrap", KeySpec.AES256), ("bind", KeySpec.HMAC256))},
        otp=True,
    )
    try:
        runtime.registry.create_sync(name, "otp-seed")
    finally:
        keytypes.KEY_TYPES["otp-seed"] = current
    return name


def _tampered(blob: str, offset: int) -> str:
    value = seeds.parse(blob)
    raw = bytearray(value.signed + value.tag)
    raw[offset] ^= 0x01
    return seeds.assemble(value.version, bytes(raw), b"")


@pytest.mark.parametrize(
    "offset",
    [0, 1, 17, 50, 52, -40, -33],
    ids=["format", "seed_id", "binding", "length", "params", "wrapped", "wrapped-end"],
)
def test_a_tampered_blob_does_not_authenticate_whatever_the_identity(
    runtime: Any, offset: int
) -> None:
    seed = os.urandom(20)
    blob = asyncio.run(runtime.otp.import_seed(KEY, IDENTITY, TOTP, seed))
    code = pyotp.TOTP(base64.b32encode(seed).decode()).now()
    forged = _tampered(blob, offset)
    other = TokenIdentity("custody-token", "app", "another-device")
    for identity in (IDENTITY, other):
        with pytest.raises(BadRequest) as caught:
            asyncio.run(runtime.otp.verify(KEY, VerifyInput(forged, identity, code)))
        assert "bound to another" not in str(caught.value)


@pytest.fixture(scope="module")
def legacy_key(runtime: Any) -> str:
    return _make_legacy_key(runtime)


def _legacy_blob(runtime: Any, name: str, seed: bytes) -> str:
    """A format-0x02 blob (unkeyed binding), as the starting code sealed it."""
    key = runtime.registry.get_sync(name)
    version = key.version_to_use()

    def job(ops: Any) -> str:
        wrapped = ops.seed_import(version.object_id("wrap"), seed)
        signed = bytearray(
            seeds.body(os.urandom(16), legacy_binding(*IDENTITY.fields), TOTP, wrapped)
        )
        signed[0] = seeds.FORMAT_LEGACY
        context = seeds.context(name, version.version)
        tag = ops.mac(version.object_id("bind"), MacAlgorithm.SHA256, context + bytes(signed))
        return seeds.assemble(version.version, bytes(signed), tag)

    return str(runtime.hsm.run_sync(job))


def test_seeds_of_a_version_made_before_keep_verifying(runtime: Any, legacy_key: str) -> None:
    seed = os.urandom(20)
    code = pyotp.TOTP(base64.b32encode(seed).decode()).now()
    # A new blob under the old version, and an old-format blob: both verify.
    blob = asyncio.run(runtime.otp.import_seed(legacy_key, IDENTITY, TOTP, seed))
    assert asyncio.run(runtime.otp.verify(legacy_key, VerifyInput(blob, IDENTITY, code))).valid
    old = _legacy_blob(runtime, legacy_key, seed)
    assert seeds.parse(old).format == seeds.FORMAT_LEGACY
    result = asyncio.run(runtime.otp.verify(legacy_key, VerifyInput(old, IDENTITY, code)))
    assert result.valid is True
    other = TokenIdentity("custody-token", "other-app", "dfp")
    with pytest.raises(BadRequest, match="bound to another"):
        asyncio.run(runtime.otp.verify(legacy_key, VerifyInput(old, other, code)))


def test_rotation_gives_an_old_otp_key_the_new_attributes(runtime: Any) -> None:
    legacy_key = _make_legacy_key(runtime)
    rotated = runtime.registry.rotate_sync(legacy_key)
    version = rotated.version_to_use()
    old_version = rotated.versions[version.version - 1]

    def modifiable(ops: Any) -> list[bool]:
        return [
            bool(o[Attribute.MODIFIABLE])
            for o in (*_objects(ops, old_version), *_objects(ops, version))
        ]

    assert runtime.hsm.run_sync(modifiable) == [True, True, False, False]
    seed = os.urandom(20)
    blob = asyncio.run(runtime.otp.import_seed(legacy_key, IDENTITY, TOTP, seed))
    assert seeds.parse(blob).version == version.version
    code = pyotp.TOTP(base64.b32encode(seed).decode()).now()
    assert asyncio.run(runtime.otp.verify(legacy_key, VerifyInput(blob, IDENTITY, code))).valid


def test_host_hmac_agrees_with_the_hardened_seed(runtime: Any, latest: Any) -> None:
    """The zero-padding quirk of SoftHSM's KWP (softhsm/README.md) changes no HMAC."""
    seed = os.urandom(20)
    wrap_id = latest.object_id("wrap")

    def job(ops: Any) -> list[bytes]:
        wrapped = ops.seed_import(wrap_id, seed)
        return list(ops.seed_macs(wrap_id, wrapped, MacAlgorithm.SHA1, [b"\x00" * 8, b"x"]))

    expected = [hmac.new(seed, m, "sha1").digest() for m in (b"\x00" * 8, b"x")]
    assert runtime.hsm.run_sync(job) == expected
