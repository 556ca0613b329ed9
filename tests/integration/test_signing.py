"""Sign in the HSM, verify on the host: vault signatures checked by independent code
(``cryptography`` over the exported public key, ``joserfc`` over the JWKS)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from joserfc import jws
from joserfc.jwk import KeySet

from vault.errors import BadRequest, VaultError
from vault.signing import Signed, Signer, SignOptions, VerifyItem, b64url

pytestmark = pytest.mark.hsm
T = TypeVar("T")
MESSAGE = b"pay 100.00 EUR to DE89370400440532013000"
HASH_NAMES = {"sha2-256": hashes.SHA256, "sha2-384": hashes.SHA384, "sha2-512": hashes.SHA512}


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def signer(runtime) -> Signer:  # type: ignore[no-untyped-def]
    return Signer(runtime.registry, runtime.hsm)


@pytest.fixture(scope="module")
def keys(runtime) -> dict[str, str]:  # type: ignore[no-untyped-def]
    made = {}
    for kind in ("ecdsa-p256", "ed25519", "rsa-3072"):
        name = f"conformance-sig-{kind}"
        runtime.registry.create_sync(name, kind)
        made[kind] = name
    return made


def sign_one(signer: Signer, name: str, data: bytes, **options: Any) -> Signed:
    version = options.pop("key_version", None)
    result = run(signer.sign(name, [data], SignOptions(**options), version))[0]
    if isinstance(result, VaultError):
        raise result
    return result


def verify_one(signer: Signer, name: str, data: bytes, signature: str, **options: Any) -> bool:
    result = run(signer.verify(name, [VerifyItem(data, signature)], SignOptions(**options)))[0]
    if isinstance(result, VaultError):
        raise result
    return result


def body(signature: str) -> str:
    return signature.split(":", 2)[2]


def public_key(signer: Signer, runtime, name: str, version: int = 1) -> Any:  # type: ignore[no-untyped-def]
    key = runtime.registry.get_sync(name)
    return run(signer.public_keys.one(key.versions[version]))


@pytest.mark.parametrize("hash_algorithm", ["sha2-256", "sha2-384", "sha2-512"])
def test_ecdsa_signatures_verify_with_cryptography(
    signer: Signer, runtime, keys: dict[str, str], hash_algorithm: str
) -> None:  # type: ignore[no-untyped-def]
    name = keys["ecdsa-p256"]
    signed = sign_one(signer, name, MESSAGE, hash_algorithm=hash_algorithm)
    assert signed.signature.startswith("vault:v1:")
    public = public_key(signer, runtime, name)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    der = base64.b64decode(body(signed.signature), validate=True)
    public.verify(der, MESSAGE, ec.ECDSA(HASH_NAMES[hash_algorithm]()))
    with pytest.raises(InvalidSignature):
        public.verify(der, MESSAGE + b"!", ec.ECDSA(HASH_NAMES[hash_algorithm]()))
    assert verify_one(signer, name, MESSAGE, signed.signature, hash_algorithm=hash_algorithm)
    # Verified under another hash, the same signature is not valid (as in Vault).
    other = "sha2-256" if hash_algorithm != "sha2-256" else "sha2-512"
    assert not verify_one(signer, name, MESSAGE, signed.signature, hash_algorithm=other)


def test_ed25519_signs_the_message_and_ignores_hash_and_prehashed(
    signer: Signer, runtime, keys: dict[str, str]
) -> None:  # type: ignore[no-untyped-def]
    name = keys["ed25519"]
    plain = sign_one(signer, name, MESSAGE)
    # Ed25519 is deterministic (RFC 8032 §5.1.6): identical signatures show the options
    # were ignored, as OpenBao does (docs/transit-reference.md §11).
    assert sign_one(signer, name, MESSAGE, hash_algorithm="sha2-512").signature == plain.signature
    assert sign_one(signer, name, MESSAGE, prehashed=True).signature == plain.signature
    public = public_key(signer, runtime, name)
    assert isinstance(public, ed25519.Ed25519PublicKey)
    public.verify(base64.b64decode(body(plain.signature)), MESSAGE)
    jws_sig = sign_one(signer, name, MESSAGE, marshaling_algorithm="jws")
    assert body(jws_sig.signature) == b64url(base64.b64decode(body(plain.signature)))


@pytest.mark.parametrize("hash_algorithm", ["sha2-256", "sha2-512"])
def test_rsa_pss_and_pkcs1v15_verify_with_cryptography(
    signer: Signer, runtime, keys: dict[str, str], hash_algorithm: str
) -> None:  # type: ignore[no-untyped-def]
    name = keys["rsa-3072"]
    public = public_key(signer, runtime, name)
    assert isinstance(public, rsa.RSAPublicKey)
    h = HASH_NAMES[hash_algorithm]
    pss = sign_one(signer, name, MESSAGE, hash_algorithm=hash_algorithm)  # pss is the default
    raw = base64.b64decode(body(pss.signature))
    # Salt = hash length, MGF1 with the same hash (RFC 8017 §9.1; RFC 7518 §3.5).
    public.verify(
        raw, MESSAGE, padding.PSS(mgf=padding.MGF1(h()), salt_length=h().digest_size), h()
    )
    v15 = sign_one(
        signer, name, MESSAGE, hash_algorithm=hash_algorithm, signature_algorithm="pkcs1v15"
    )
    public.verify(base64.b64decode(body(v15.signature)), MESSAGE, padding.PKCS1v15(), h())
    assert verify_one(signer, name, MESSAGE, pss.signature, hash_algorithm=hash_algorithm)
    assert verify_one(
        signer,
        name,
        MESSAGE,
        v15.signature,
        hash_algorithm=hash_algorithm,
        signature_algorithm="pkcs1v15",
    )
    # A signature checked as the other scheme is not valid.
    assert not verify_one(
        signer,
        name,
        MESSAGE,
        pss.signature,
        hash_algorithm=hash_algorithm,
        signature_algorithm="pkcs1v15",
    )
    assert not verify_one(signer, name, MESSAGE, v15.signature, hash_algorithm=hash_algorithm)


def test_prehashed_input_is_the_digest(signer: Signer, runtime, keys: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    for kind in ("ecdsa-p256", "rsa-3072"):
        name = keys[kind]
        digest = hashlib.sha384(MESSAGE).digest()
        signed = sign_one(signer, name, digest, prehashed=True, hash_algorithm="sha2-384")
        # The same signature verifies over the message itself, hashed by the vault.
        assert verify_one(signer, name, MESSAGE, signed.signature, hash_algorithm="sha2-384")
        assert verify_one(
            signer, name, digest, signed.signature, hash_algorithm="sha2-384", prehashed=True
        )
        public = public_key(signer, runtime, name)
        raw = base64.b64decode(body(signed.signature))
        if isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(raw, digest, ec.ECDSA(Prehashed(hashes.SHA384())))
        with pytest.raises(BadRequest, match="prehashed input must be"):
            sign_one(signer, name, b"short", prehashed=True)


@pytest.mark.filterwarnings("ignore:EdDSA is deprecated")  # joserfc: RFC 9864 names it Ed25519
def test_jws_marshaling_verifies_with_joserfc(signer: Signer, keys: dict[str, str]) -> None:
    """A compact JWS assembled around a vault signature (``marshaling_algorithm=jws``) is
    accepted by an independent JOSE library holding only the vault's JWKS."""
    for kind, alg in (("ecdsa-p256", "ES256"), ("ed25519", "EdDSA"), ("rsa-3072", "PS256")):
        name = keys[kind]
        header = {"alg": alg, "kid": f"{name}:v1"}
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(MESSAGE)}"
        signed = sign_one(signer, name, signing_input.encode(), marshaling_algorithm="jws")
        compact = f"{signing_input}.{body(signed.signature)}"
        key_set = KeySet.import_key_set(run(signer.jwks(name)))  # type: ignore[arg-type]
        decoded = jws.deserialize_compact(compact, key_set, algorithms=[alg])
        assert decoded.payload == MESSAGE
        assert verify_one(
            signer, name, signing_input.encode(), signed.signature, marshaling_algorithm="jws"
        )
        tampered = f"{b64url(json.dumps(header).encode())}.{b64url(MESSAGE + b'0')}"
        with pytest.raises(Exception, match="signature"):
            jws.deserialize_compact(
                f"{tampered}.{body(signed.signature)}", key_set, algorithms=[alg]
            )


def test_ecdsa_jws_value_is_raw_r_s(signer: Signer, keys: dict[str, str]) -> None:
    signed = sign_one(signer, keys["ecdsa-p256"], MESSAGE, marshaling_algorithm="jws")
    text = body(signed.signature)
    assert "=" not in text
    assert "+" not in text
    assert "/" not in text
    assert len(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))) == 64
    # Read as asn1 (standard base64 of DER), a JWS value is malformed, as in Vault.
    with pytest.raises(BadRequest):
        verify_one(signer, keys["ecdsa-p256"], MESSAGE, "vault:v1:" + text + "!")


def test_tampered_input_other_key_and_other_version_fail(
    signer: Signer, runtime, keys: dict[str, str]
) -> None:  # type: ignore[no-untyped-def]
    name = "conformance-sig-tamper"
    other = "conformance-sig-other"
    runtime.registry.create_sync(name, "ecdsa-p256")
    runtime.registry.create_sync(other, "ecdsa-p256")
    runtime.registry.rotate_sync(name)
    signed = sign_one(signer, name, MESSAGE, key_version=1)
    assert signed.key_version == 1
    assert verify_one(signer, name, MESSAGE, signed.signature)
    assert not verify_one(signer, name, MESSAGE[:-1], signed.signature)
    assert not verify_one(signer, other, MESSAGE, signed.signature)
    as_v2 = signed.signature.replace("vault:v1:", "vault:v2:")
    assert not verify_one(signer, name, MESSAGE, as_v2)
    flipped = bytearray(base64.b64decode(body(signed.signature)))
    flipped[-1] ^= 1
    forged = "vault:v1:" + base64.b64encode(bytes(flipped)).decode()
    assert not verify_one(signer, name, MESSAGE, forged)


def test_rotation_keeps_old_signatures_until_min_decryption_version(
    signer: Signer, runtime
) -> None:  # type: ignore[no-untyped-def]
    name = "conformance-sig-rotation"
    runtime.registry.create_sync(name, "ed25519")
    old = sign_one(signer, name, MESSAGE)
    runtime.registry.rotate_sync(name)
    runtime.registry.invalidate(name)
    new = sign_one(signer, name, MESSAGE)
    assert (old.key_version, new.key_version) == (1, 2)
    assert verify_one(signer, name, MESSAGE, old.signature)
    assert verify_one(signer, name, MESSAGE, new.signature)
    jwks = run(signer.jwks(name))
    assert [k["kid"] for k in jwks["keys"]] == [f"{name}:v1", f"{name}:v2"]
    # Vault refuses a version below min_decryption_version for verification as well.
    runtime.registry.configure_sync(name, min_decryption_version=2)
    runtime.registry.invalidate(name)
    with pytest.raises(BadRequest, match="too old"):
        verify_one(signer, name, MESSAGE, old.signature)
    assert verify_one(signer, name, MESSAGE, new.signature)
    assert [k["kid"] for k in run(signer.jwks(name))["keys"]] == [f"{name}:v2"]
    with pytest.raises(BadRequest, match="key version 3 does not exist"):
        verify_one(signer, name, MESSAGE, new.signature.replace("vault:v2:", "vault:v3:"))
    with pytest.raises(BadRequest, match="key version 3 does not exist"):
        sign_one(signer, name, MESSAGE, key_version=3)


@pytest.mark.parametrize(
    ("signature", "message"),
    [
        ("garbage", "invalid signature: expected vault:v"),
        ("vault:v1", "invalid signature: expected vault:v"),
        ("vault:vX:AAAA", "invalid signature: expected vault:v"),
        ("vault:v\u0661:AAAA", "invalid signature: expected vault:v"),
        ("vault:v1:!!!", "invalid base64 signature value"),
    ],
)
def test_malformed_signatures_are_errors(
    signer: Signer, keys: dict[str, str], signature: str, message: str
) -> None:
    with pytest.raises(BadRequest, match=message):
        verify_one(signer, keys["ed25519"], MESSAGE, signature)


def test_wrong_length_signature_is_just_invalid(signer: Signer, keys: dict[str, str]) -> None:
    assert not verify_one(signer, keys["ed25519"], MESSAGE, "vault:v1:AAAA")
    assert not verify_one(signer, keys["ecdsa-p256"], MESSAGE, "vault:v1:AAAA")


def test_batch_fails_item_by_item(signer: Signer, keys: dict[str, str]) -> None:
    results = run(
        signer.sign(keys["ecdsa-p256"], [MESSAGE, BadRequest("missing input"), b""], SignOptions())
    )
    assert isinstance(results[0], Signed)
    assert isinstance(results[2], Signed)
    assert isinstance(results[1], BadRequest)
    checks = run(
        signer.verify(
            keys["ecdsa-p256"],
            [
                VerifyItem(MESSAGE, results[0].signature),
                VerifyItem(b"x", results[0].signature),
                VerifyItem(MESSAGE, "garbage"),
            ],
            SignOptions(),
        )
    )
    assert checks[0] is True
    assert checks[1] is False
    assert isinstance(checks[2], BadRequest)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"hash_algorithm": "sha2-999"}, 'invalid hash algorithm "sha2-999"'),
        ({"hash_algorithm": "md5"}, "invalid hash algorithm"),
        ({"marshaling_algorithm": "foo"}, "invalid marshaling type"),
    ],
)
def test_bad_options_are_refused(options: dict[str, str], message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        SignOptions(**options)  # type: ignore[arg-type]


def test_rsa_signature_algorithm_is_checked(signer: Signer, keys: dict[str, str]) -> None:
    with pytest.raises(BadRequest, match="unsupported rsa signature algorithm"):
        sign_one(signer, keys["rsa-3072"], MESSAGE, signature_algorithm="foo")


def test_non_signing_keys_cannot_sign(signer: Signer) -> None:
    with pytest.raises(BadRequest, match="key type aes256-gcm96 does not support signing"):
        sign_one(signer, "backup-share", MESSAGE)
    with pytest.raises(BadRequest, match="key type hmac does not support signing"):
        sign_one(signer, "payout-digest", MESSAGE)


def test_jwks_members(signer: Signer, runtime, keys: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    expected = {
        "ecdsa-p256": {"kty": "EC", "crv": "P-256", "alg": "ES256"},
        "ed25519": {"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA"},
        "rsa-3072": {"kty": "RSA", "alg": "PS256"},
    }
    for kind, members in expected.items():
        (jwk,) = run(signer.jwks(keys[kind]))["keys"]
        assert jwk["kid"] == f"{keys[kind]}:v1"
        assert jwk["use"] == "sig"
        assert "d" not in jwk
        assert members.items() <= jwk.items()
