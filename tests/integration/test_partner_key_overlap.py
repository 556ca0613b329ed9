"""Partner keys with overlap, both ways, against joserfc playing the partner.

The partner's keys (policies/partners.toml ``sig_keys`` / ``enc_keys``, oldest first): every
signing key valid now verifies what it sends, until retired; the newest valid encryption key
is the one we seal to. Our own keys for the partner rotate as keys do: the JWS ``kid`` names
the version that signed, the JWE ``kid`` the version the partner encrypted to.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from joserfc import jwe, jws
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, import_key

from vault.errors import BadRequest
from vault.partners import PartnerMessages
from vault.policy import load_policies
from vault.store.messages import SeenMessages

pytestmark = [
    pytest.mark.hsm,
    pytest.mark.filterwarnings("ignore::joserfc.errors.SecurityWarning"),  # EdDSA's name
]
T = TypeVar("T")
T0 = 1_900_000_000  # 2030-03-17T17:46:40Z: the clock of these tests
HOUR = 3600
PAYOUT = {"payout_id": "po-7", "amount": "12.00"}
NAME = "overlap-partner"  # its own name in the seen-messages ledger


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class Clock:
    def __init__(self) -> None:
        self.now = float(T0)

    def __call__(self) -> float:
        return self.now


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def pem(private: Any) -> str:
    public: bytes = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return public.decode()


def private_jwk(private: Any) -> Any:
    return import_key(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def key_entry(role: str, private: Any, **fields: Any) -> str:
    lines = [f"[[partners.{NAME}.{role}_keys]]", f'public_key = """{pem(private)}"""']
    for name, value in fields.items():
        if isinstance(value, bool):
            lines.append(f"{name} = {str(value).lower()}")
        elif name in ("not_before", "not_after"):
            lines.append(f"{name} = {iso(value)}")  # a TOML offset date-time
        else:
            lines.append(f'{name} = "{value}"')
    return "\n".join(lines) + "\n"


class Partner:
    """The partner, played with joserfc, and our PartnerMessages for it."""

    def __init__(self, runtime, tmp_path: Path, entries: str) -> None:  # type: ignore[no-untyped-def]
        tag = uuid.uuid4().hex[:8]
        self.signing, self.decryption = f"overlap-sig-{tag}", f"overlap-dec-{tag}"
        runtime.registry.create_sync(self.signing, "ecdsa-p256")
        runtime.registry.create_sync(self.decryption, "ecdsa-p256", purpose="key-agreement")
        (tmp_path / "partners.toml").write_text(
            f'[partners.{NAME}]\nsigning_key = "{self.signing}"\n'
            f'decryption_key = "{self.decryption}"\n\n{entries}'
        )
        self.runtime = runtime
        self.clock = Clock()
        self.messages = PartnerMessages(
            load_policies(tmp_path, tmp_path),
            runtime.registry,
            runtime.hsm,
            runtime.signer.public_keys,
            SeenMessages(runtime.db),
            self.clock,
        )

    def our_jwks(self) -> dict[str, Any]:
        return run(self.messages.jwks(NAME))

    def sends(
        self, signer: Any, alg: str, *, kid: str | None = None, to_kid: str | None = None
    ) -> str:
        """A message from the partner: its JWS (signed by ``signer``) in a JWE to our key."""
        claims = {
            "iss": NAME,
            "aud": "hsm-vault",
            "iat": int(self.clock.now),
            "jti": str(uuid.uuid4()),
            "payload": PAYOUT,
        }
        header = {"alg": alg, "typ": "JWT", **({"kid": kid} if kid else {})}
        inner = jws.serialize_compact(header, json.dumps(claims), signer, algorithms=[alg])
        ours = [k for k in self.our_jwks()["keys"] if k["use"] == "enc"]
        target = next(k for k in ours if k["kid"] == to_kid) if to_kid else ours[-1]
        protected = {"alg": target["alg"], "enc": "A256GCM", "cty": "JWT", "kid": target["kid"]}
        return jwe.encrypt_compact(
            protected, inner, import_key(target), algorithms=[target["alg"], "A256GCM"]
        )

    def opens(self, token: str) -> Any:
        return run(self.messages.open(NAME, token)).payload

    def reads(self, sealed: str, private: Any, alg: str) -> tuple[dict[str, Any], Any]:
        """What the partner makes of a message we sealed: it decrypts with its key, then
        verifies our signature with our JWKS alone (every live version is in it)."""
        decrypted = jwe.decrypt_compact(sealed, private_jwk(private), algorithms=[alg, "A256GCM"])
        assert decrypted.plaintext is not None
        verified = jws.deserialize_compact(
            decrypted.plaintext,
            KeySet.import_key_set(self.our_jwks()),  # type: ignore[arg-type]
            algorithms=["ES256"],
        )
        return decrypted.headers(), verified


@pytest.fixture
def keys() -> dict[str, Any]:
    return {
        "sig-old": ec.generate_private_key(ec.SECP256R1()),
        "sig-new": ed25519.Ed25519PrivateKey.generate(),
        "enc-old": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "enc-new": ec.generate_private_key(ec.SECP256R1()),
    }


def test_older_signing_key_opens_while_valid_and_is_refused_after(
    runtime, tmp_path: Path, keys: dict[str, Any]
) -> None:  # type: ignore[no-untyped-def]
    partner = Partner(
        runtime,
        tmp_path,
        key_entry("sig", keys["sig-old"], kid="p-sig-1", not_after=T0 + HOUR)
        + key_entry("sig", keys["sig-new"], kid="p-sig-2")
        + key_entry("enc", keys["enc-new"]),
    )
    old, new = private_jwk(keys["sig-old"]), private_jwk(keys["sig-new"])
    # Within the overlap both keys are accepted, with or without a kid.
    assert partner.opens(partner.sends(old, "ES256")) == PAYOUT
    assert partner.opens(partner.sends(old, "ES256", kid="p-sig-1")) == PAYOUT
    assert partner.opens(partner.sends(new, "EdDSA")) == PAYOUT
    assert partner.opens(partner.sends(new, "EdDSA", kid="p-sig-2")) == PAYOUT
    # A kid must match the key that signed: another key's kid does not verify.
    with pytest.raises(BadRequest, match="unexpected JWS alg"):
        partner.opens(partner.sends(old, "ES256", kid="p-sig-2"))
    # The old key's not_after: refused from that instant on, the new key still opens.
    partner.clock.now = T0 + HOUR
    for token in (
        partner.sends(old, "ES256"),
        partner.sends(old, "ES256", kid="p-sig-1"),
    ):
        with pytest.raises(BadRequest, match="message signed with a retired partner key"):
            partner.opens(token)
    assert partner.opens(partner.sends(new, "EdDSA")) == PAYOUT
    # A key that never was the partner's is still just a bad signature.
    impostor = private_jwk(ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(BadRequest, match="message signature is not valid"):
        partner.opens(partner.sends(impostor, "EdDSA"))


def test_a_retired_key_is_refused_at_once(runtime, tmp_path: Path, keys: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    partner = Partner(
        runtime,
        tmp_path,
        key_entry("sig", keys["sig-old"], retired=True)
        + key_entry("sig", keys["sig-new"])
        + key_entry("enc", keys["enc-new"]),
    )
    with pytest.raises(BadRequest, match="retired partner key"):
        partner.opens(partner.sends(private_jwk(keys["sig-old"]), "ES256"))
    assert partner.opens(partner.sends(private_jwk(keys["sig-new"]), "EdDSA")) == PAYOUT


def test_we_seal_to_the_newest_valid_encryption_key(
    runtime, tmp_path: Path, keys: dict[str, Any]
) -> None:  # type: ignore[no-untyped-def]
    partner = Partner(
        runtime,
        tmp_path,
        key_entry("sig", keys["sig-new"])
        + key_entry("enc", keys["enc-old"], kid="p-enc-1", not_after=T0 + 2 * HOUR)
        + key_entry("enc", keys["enc-new"], kid="p-enc-2", not_before=T0 + HOUR),
    )

    def partner_reads(sealed: str, private: Any, alg: str) -> tuple[str, str, Any]:
        headers, verified = partner.reads(sealed, private, alg)
        return headers["alg"], headers["kid"], json.loads(verified.payload)["payload"]

    # Before the new key's not_before: the old one (RSA) is the newest valid.
    sealed = run(partner.messages.seal(NAME, PAYOUT)).jwe
    read = partner_reads(sealed, keys["enc-old"], "RSA-OAEP-256")
    assert read == ("RSA-OAEP-256", "p-enc-1", PAYOUT)
    # From not_before on, the new key (EC) seals; the old one cannot read that.
    partner.clock.now = T0 + HOUR
    sealed = run(partner.messages.seal(NAME, PAYOUT)).jwe
    read = partner_reads(sealed, keys["enc-new"], "ECDH-ES+A256KW")
    assert read == ("ECDH-ES+A256KW", "p-enc-2", PAYOUT)
    with pytest.raises(JoseError):
        jwe.decrypt_compact(
            sealed,
            private_jwk(keys["enc-old"]),
            algorithms=["ECDH-ES+A256KW", "RSA-OAEP-256", "A256GCM"],
        )


def test_no_valid_encryption_key_refuses_to_seal(
    runtime, tmp_path: Path, keys: dict[str, Any]
) -> None:  # type: ignore[no-untyped-def]
    partner = Partner(
        runtime,
        tmp_path,
        key_entry("sig", keys["sig-new"])
        + key_entry("enc", keys["enc-old"], not_after=T0)
        + key_entry("enc", keys["enc-new"], not_before=T0 + HOUR),
    )
    with pytest.raises(BadRequest, match="partner has no encryption key valid now"):
        run(partner.messages.seal(NAME, PAYOUT))


def test_our_keys_rotate_as_keys_do(runtime, tmp_path: Path, keys: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    partner = Partner(
        runtime, tmp_path, key_entry("sig", keys["sig-old"]) + key_entry("enc", keys["enc-new"])
    )
    signer = private_jwk(keys["sig-old"])

    def signed_kid(sealed: str) -> str:
        _, verified = partner.reads(sealed, keys["enc-new"], "ECDH-ES+A256KW")
        kid: str = verified.headers()["kid"]
        return kid

    first = run(partner.messages.seal(NAME, PAYOUT)).jwe
    assert signed_kid(first) == f"{partner.signing}:v1"
    runtime.registry.rotate_sync(partner.signing)
    runtime.registry.invalidate(partner.signing)
    assert signed_kid(run(partner.messages.seal(NAME, PAYOUT)).jwe) == f"{partner.signing}:v2"
    assert signed_kid(first) == f"{partner.signing}:v1"  # still verifiable by the partner

    # Our decryption key: the partner may encrypt to any live version, named by kid.
    v1 = f"{partner.decryption}:v1"
    to_v1 = partner.sends(signer, "ES256", to_kid=v1)
    runtime.registry.rotate_sync(partner.decryption)
    runtime.registry.invalidate(partner.decryption)
    enc_kids = [k["kid"] for k in partner.our_jwks()["keys"] if k["use"] == "enc"]
    assert enc_kids == [v1, f"{partner.decryption}:v2"]
    assert partner.opens(to_v1) == PAYOUT
    assert partner.opens(partner.sends(signer, "ES256")) == PAYOUT  # to v2, the newest
    stale = partner.sends(signer, "ES256", to_kid=v1)
    runtime.registry.configure_sync(partner.decryption, min_decryption_version=2)
    runtime.registry.invalidate(partner.decryption)
    with pytest.raises(BadRequest, match="below min_decryption_version"):
        partner.opens(stale)
