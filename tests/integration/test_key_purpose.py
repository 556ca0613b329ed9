"""One key, one purpose, enforced by the token itself.

Each key's objects are asked, through python-pkcs11 but past the library's own capability
checks, to do what their purpose does not allow: the token (SoftHSM 2.6.1) refuses. The
allowed operation works on the same objects, so the refusal is not an artefact of the test.
The domain refuses the same operations first, with a 400 that names them.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import Callable
from typing import Any

import pkcs11.exceptions as p11e
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from pkcs11 import KDF, MGF, Attribute, KeyType, Mechanism, ObjectClass
from pkcs11._pkcs11 import DecryptMixin, DeriveMixin, EncryptMixin, SignMixin, WrapMixin
from pkcs11.mechanisms import GCMParams

from vault.errors import BadRequest
from vault.keys import Key
from vault.signing import SignOptions
from vault.transit import DecryptItem

pytestmark = pytest.mark.hsm

# What SoftHSM 2.6.1 answers when a key's policy forbids the call: the capability flag
# (CKR_KEY_FUNCTION_NOT_PERMITTED, 0x68, which python-pkcs11 does not name), the allowed
# mechanisms (CKR_MECHANISM_INVALID), or the key's type (CKR_KEY_TYPE_INCONSISTENT).
_POLICY_REFUSALS = (p11e.MechanismInvalid, p11e.KeyTypeInconsistent)
_UNNAMED_REFUSALS = ("0x68", "0x1b")  # KEY_FUNCTION_NOT_PERMITTED, ACTION_PROHIBITED


def refused_by_token(call: Callable[[], Any]) -> None:
    with pytest.raises(p11e.PKCS11Error) as caught:
        call()
    error = caught.value
    assert isinstance(error, _POLICY_REFUSALS) or str(error).endswith(_UNNAMED_REFUSALS), repr(
        error
    )


def unguarded(obj: Any) -> Any:
    """The same token object with every operation python-pkcs11 has, whatever the object's
    capabilities say: the call reaches the token's C_*Init, and the token decides."""
    mixins = (EncryptMixin, DecryptMixin, SignMixin, DeriveMixin, WrapMixin)
    return type("Unguarded", (type(obj), *mixins), {})(obj.wrapper)


@pytest.fixture(scope="module")
def keys(runtime: Any) -> dict[str, Key]:
    made = {}
    for label, type_name, purpose in (
        ("aes", "aes256-gcm96", None),
        ("hmac", "hmac", None),
        ("ec-sign", "ecdsa-p256", "signing"),
        ("ec-ecdh", "ecdsa-p256", "key-agreement"),
        ("ed", "ed25519", None),
        ("rsa-sign", "rsa-3072", "signing"),
        ("rsa-oaep", "rsa-3072", "decryption"),
    ):
        name = f"purpose-{label}-{uuid.uuid4().hex[:8]}"
        made[label], _ = runtime.registry.create_sync(name, type_name, purpose=purpose)
    return made


def on_token(runtime: Any, key: Key, check: Callable[[Any], None], cls: ObjectClass) -> None:
    """Run ``check`` on the latest version's object of class ``cls``, on the HSM thread."""
    oid = key.versions[key.latest_version].object_id()

    def job(ops: Any) -> None:
        check(unguarded(ops._key(oid, cls)))

    runtime.hsm.run_sync(job)


PRIVATE, SECRET = ObjectClass.PRIVATE_KEY, ObjectClass.SECRET_KEY
DIGEST = hashlib.sha256(b"payout").digest()
PSS = (Mechanism.SHA256, MGF.SHA256, 32)
OAEP = (Mechanism.SHA_1, MGF.SHA1, None)
GCM = GCMParams(os.urandom(12), b"", 128)


def _peer_point() -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    peer = ec.generate_private_key(ec.SECP256R1()).public_key()
    return peer.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def _ecdh(obj: Any) -> Any:
    return obj.derive_key(
        KeyType.GENERIC_SECRET,
        256,
        mechanism=Mechanism.ECDH1_DERIVE,
        mechanism_param=(KDF.NULL, None, _peer_point()),
        template={Attribute.TOKEN: False, Attribute.SENSITIVE: True},
    )


def test_an_rsa_decryption_key_cannot_sign(runtime: Any, keys: dict[str, Key]) -> None:
    def check(obj: Any) -> None:
        refused_by_token(
            lambda: obj.sign(DIGEST, mechanism=Mechanism.RSA_PKCS_PSS, mechanism_param=PSS)
        )
        refused_by_token(lambda: obj.sign(DIGEST, mechanism=Mechanism.RSA_PKCS))
        refused_by_token(lambda: obj.decrypt(bytes(384), mechanism=Mechanism.RSA_X_509))

    on_token(runtime, keys["rsa-oaep"], check, PRIVATE)
    # Its own job works: RSA-OAEP through the vault's own HSM call (the canary round trip).
    oid = keys["rsa-oaep"].versions[1].object_id()
    assert runtime.hsm.run_sync(lambda ops: ops.key_works(oid, "sha1")) is True


def test_an_rsa_signing_key_cannot_decrypt(runtime: Any, keys: dict[str, Key]) -> None:
    def check(obj: Any) -> None:
        refused_by_token(
            lambda: obj.decrypt(bytes(384), mechanism=Mechanism.RSA_PKCS_OAEP, mechanism_param=OAEP)
        )
        refused_by_token(lambda: obj.decrypt(bytes(384), mechanism=Mechanism.RSA_X_509))
        assert len(obj.sign(DIGEST, mechanism=Mechanism.RSA_PKCS_PSS, mechanism_param=PSS)) == 384

    on_token(runtime, keys["rsa-sign"], check, PRIVATE)


def test_an_ec_signing_key_cannot_agree_keys(runtime: Any, keys: dict[str, Key]) -> None:
    def check(obj: Any) -> None:
        refused_by_token(lambda: _ecdh(obj))
        assert len(obj.sign(DIGEST, mechanism=Mechanism.ECDSA)) == 64

    on_token(runtime, keys["ec-sign"], check, PRIVATE)


def test_an_ec_key_agreement_key_cannot_sign(runtime: Any, keys: dict[str, Key]) -> None:
    def check(obj: Any) -> None:
        refused_by_token(lambda: obj.sign(DIGEST, mechanism=Mechanism.ECDSA))
        _ecdh(obj).destroy()

    on_token(runtime, keys["ec-ecdh"], check, PRIVATE)


def test_an_ed25519_key_only_signs(runtime: Any, keys: dict[str, Key]) -> None:
    def check(obj: Any) -> None:
        refused_by_token(lambda: _ecdh(obj))
        refused_by_token(lambda: obj.sign(DIGEST, mechanism=Mechanism.ECDSA))
        assert len(obj.sign(b"message", mechanism=Mechanism.EDDSA)) == 64

    on_token(runtime, keys["ed"], check, PRIVATE)


def test_an_hmac_key_cannot_encrypt_or_use_another_hash(runtime: Any, keys: dict[str, Key]) -> None:
    def check(obj: Any) -> None:
        refused_by_token(
            lambda: obj.encrypt(b"x" * 16, mechanism=Mechanism.AES_GCM, mechanism_param=GCM)
        )
        refused_by_token(lambda: obj.sign(b"x", mechanism=Mechanism.SHA_1_HMAC))
        assert len(obj.sign(b"x", mechanism=Mechanism.SHA256_HMAC)) == 32

    on_token(runtime, keys["hmac"], check, SECRET)


def test_an_envelope_key_only_does_aes_gcm(runtime: Any, keys: dict[str, Key]) -> None:
    """Above all no ECB: an ECB decryption oracle would unwrap anything wrapped under it."""

    def check(obj: Any) -> None:
        refused_by_token(lambda: obj.decrypt(bytes(16), mechanism=Mechanism.AES_ECB))
        refused_by_token(lambda: obj.encrypt(bytes(16), mechanism=Mechanism.AES_ECB))
        refused_by_token(
            lambda: obj.decrypt(bytes(32), mechanism=Mechanism.AES_CBC, mechanism_param=bytes(16))
        )
        refused_by_token(lambda: obj.sign(b"x", mechanism=Mechanism.AES_CMAC))
        refused_by_token(lambda: obj.wrap_key(obj, mechanism=Mechanism.AES_KEY_WRAP_PAD))
        assert len(obj.encrypt(b"x", mechanism=Mechanism.AES_GCM, mechanism_param=GCM)) == 17

    on_token(runtime, keys["aes"], check, SECRET)


@pytest.mark.parametrize(
    "label", ["aes", "hmac", "ec-sign", "ec-ecdh", "ed", "rsa-sign", "rsa-oaep"]
)
def test_no_key_can_be_changed_or_copied(runtime: Any, keys: dict[str, Key], label: str) -> None:
    cls = SECRET if label in ("aes", "hmac") else PRIVATE

    def check(obj: Any) -> None:
        assert obj[Attribute.MODIFIABLE] is False
        assert obj[Attribute.SENSITIVE] is True
        assert obj[Attribute.EXTRACTABLE] is False
        for capability in (Attribute.SIGN, Attribute.DECRYPT, Attribute.DERIVE):
            with pytest.raises(p11e.PKCS11Error):
                obj[capability] = True
        with pytest.raises(p11e.PKCS11Error):
            obj.copy({Attribute.TOKEN: False})
        with pytest.raises(p11e.PKCS11Error):
            obj.copy({})

    on_token(runtime, keys[label], check, cls)


# -- the domain refuses first ---------------------------------------------------------------


def test_the_domain_refuses_what_a_key_is_not_for(runtime: Any, keys: dict[str, Key]) -> None:
    signer, transit = runtime.signer, runtime.transit
    for label in ("rsa-oaep", "ec-ecdh"):
        name = keys[label].name
        with pytest.raises(BadRequest, match=r"^key cannot be used for sign$"):
            asyncio.run(signer.sign(name, [b"payout"], SignOptions()))
        with pytest.raises(BadRequest, match=r"^key cannot be used for verify$"):
            asyncio.run(signer.jwks(name))
    with pytest.raises(BadRequest, match="does not support decryption"):
        asyncio.run(transit.decrypt(keys["rsa-oaep"].name, [DecryptItem("vault:v1:AAAA", b"")]))
    [signed] = asyncio.run(signer.sign(keys["ec-sign"].name, [b"payout"], SignOptions()))
    assert not isinstance(signed, Exception)


def test_a_type_serves_only_its_purposes(runtime: Any) -> None:
    for type_name, purpose in (
        ("aes256-gcm96", "signing"),
        ("hmac", "encryption"),
        ("ed25519", "key-agreement"),
        ("rsa-3072", "key-agreement"),
        ("ecdsa-p256", "decryption"),
        ("ecdsa-p256", "anything"),
    ):
        with pytest.raises(BadRequest, match="serves only these purposes"):
            runtime.registry.create_sync(f"bad-{uuid.uuid4().hex[:8]}", type_name, purpose=purpose)
