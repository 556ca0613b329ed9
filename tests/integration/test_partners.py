"""Sealed partner messages against an independent JOSE library (joserfc) playing the partner.

Dev partners (policies/partners.toml): ``acme-bank`` signs ES256 and we encrypt to it with
RSA-OAEP-256, it encrypts to us with RSA-OAEP (SoftHSM 2.6 decrypts OAEP with SHA-1 only);
``globex-pay`` signs EdDSA and both sides use ECDH-ES+A256KW.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from joserfc import jwe, jws
from joserfc.jwk import ECKey, KeySet, import_key
from sqlalchemy import insert, select

from tests.integration.key_doubles import token_calls
from vault.bootstrap import dev_partner_key_path
from vault.errors import BadRequest, ConfigError, NotFound
from vault.partners import PartnerMessages
from vault.policy import Partner, PartnerKey, load_policies
from vault.signing import Signer
from vault.store import tables
from vault.store.messages import SeenMessages

pytestmark = [
    pytest.mark.hsm,
    # joserfc flags "EdDSA" (RFC 9864 prefers "Ed25519") and RSA-OAEP (SHA-1); both are
    # what the profile is tested with on purpose.
    pytest.mark.filterwarnings("ignore::joserfc.errors.SecurityWarning"),
]
T = TypeVar("T")
PROFILES = {
    "acme-bank": {"sig": "ES256", "to_partner": "RSA-OAEP-256", "to_us": "RSA-OAEP"},
    "globex-pay": {"sig": "EdDSA", "to_partner": "ECDH-ES+A256KW", "to_us": "ECDH-ES+A256KW"},
}
PAYOUT = {"payout_id": "po-42", "amount": "100.00", "currency": "EUR", "iban": "DE89..."}


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0
        self.pinned: float | None = None  # a time that does not move (boundary tests)

    def __call__(self) -> float:
        return (time.time() if self.pinned is None else self.pinned) + self.offset


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def messages(runtime, clock: Clock) -> PartnerMessages:  # type: ignore[no-untyped-def]
    return PartnerMessages(
        runtime.policies,
        runtime.registry,
        runtime.hsm,
        runtime.signer.public_keys,
        SeenMessages(runtime.db),
        clock,
    )


@pytest.fixture(scope="module")
def signer(runtime) -> Signer:  # type: ignore[no-untyped-def]
    return Signer(runtime.registry, runtime.hsm)


@pytest.fixture(autouse=True)
def _reset_clock(clock: Clock) -> None:
    clock.offset = 0.0


def partner_key(settings, partner: str, role: str) -> Any:  # type: ignore[no-untyped-def]
    return import_key(dev_partner_key_path(settings, partner, role).read_bytes())


def our_jwks(messages: PartnerMessages, signer: Signer, partner: str) -> dict[str, Any]:
    return run(messages.jwks(partner))


def partner_seals(
    settings,  # type: ignore[no-untyped-def]
    messages: PartnerMessages,
    signer: Signer,
    partner: str,
    claims: dict[str, Any] | None = None,
    *,
    jws_header: dict[str, Any] | None = None,
    jwe_header: dict[str, Any] | None = None,
    sign_with: Any = None,
) -> str:
    """What the partner sends us: its JWS inside a JWE to our decryption key, via joserfc."""
    profile = PROFILES[partner]
    body = {
        "iss": partner,
        "aud": "hsm-vault",
        "iat": int(time.time()),
        "jti": str(uuid.uuid4()),
        "payload": PAYOUT,
        **(claims or {}),
    }
    signed_header = jws_header or {"alg": profile["sig"], "typ": "JWT"}
    inner = jws.serialize_compact(
        signed_header,
        json.dumps(body),
        sign_with or partner_key(settings, partner, "sig"),
        algorithms=[signed_header["alg"]],
    )
    enc = next(k for k in our_jwks(messages, signer, partner)["keys"] if k["use"] == "enc")
    header = jwe_header or {
        "alg": profile["to_us"],
        "enc": "A256GCM",
        "cty": "JWT",
        "kid": enc["kid"],
    }
    return jwe.encrypt_compact(
        header,
        inner,
        import_key(enc),
        algorithms=[header["alg"], header.get("enc", "A256GCM")],
    )


@pytest.mark.parametrize("partner", sorted(PROFILES))
def test_partner_opens_what_the_vault_seals(
    settings, messages: PartnerMessages, signer: Signer, partner: str
) -> None:  # type: ignore[no-untyped-def]
    profile = PROFILES[partner]
    sealed = run(messages.seal(partner, PAYOUT))
    decrypted = jwe.decrypt_compact(
        sealed.jwe,
        partner_key(settings, partner, "enc"),
        algorithms=[profile["to_partner"], "A256GCM"],
    )
    assert decrypted.headers()["alg"] == profile["to_partner"]
    assert decrypted.headers()["cty"] == "JWT"
    # policies/partners.toml: acme-bank's key list names its key; globex-pay's single key none.
    assert decrypted.headers().get("kid") == {"acme-bank": "acme-bank-enc-1"}.get(partner)
    assert decrypted.plaintext is not None
    verified = jws.deserialize_compact(
        decrypted.plaintext,
        KeySet.import_key_set(our_jwks(messages, signer, partner)),  # type: ignore[arg-type]
        algorithms=[profile["sig"]],
    )
    claims = json.loads(verified.payload)
    assert claims["payload"] == PAYOUT
    assert claims["jti"] == sealed.message_id
    assert claims["iat"] == sealed.issued_at
    assert abs(claims["iat"] - time.time()) < 5
    assert claims["iss"] == "hsm-vault"
    assert claims["aud"] == partner


def test_each_seal_has_a_fresh_id_and_content_key(messages: PartnerMessages) -> None:
    first = run(messages.seal("globex-pay", PAYOUT))
    second = run(messages.seal("globex-pay", PAYOUT))
    assert first.message_id != second.message_id
    assert first.jwe.split(".")[1:] != second.jwe.split(".")[1:]


def test_binary_payloads_round_trip_through_the_partner(
    settings, messages: PartnerMessages
) -> None:  # type: ignore[no-untyped-def]
    sealed = run(messages.seal("acme-bank", None, b"\x00\x01binary"))
    decrypted = jwe.decrypt_compact(
        sealed.jwe,
        partner_key(settings, "acme-bank", "enc"),
        algorithms=["RSA-OAEP-256", "A256GCM"],
    )
    assert decrypted.plaintext is not None
    payload = json.loads(jws.extract_compact(decrypted.plaintext).payload)
    assert payload["payload_b64"] == "AAFiaW5hcnk="


@pytest.mark.parametrize("partner", sorted(PROFILES))
def test_vault_opens_what_the_partner_seals(
    settings, messages: PartnerMessages, signer: Signer, partner: str
) -> None:  # type: ignore[no-untyped-def]
    token = partner_seals(settings, messages, signer, partner)
    opened = run(messages.open(partner, token))
    assert opened.payload == PAYOUT
    assert opened.payload_b64 is None
    assert abs(opened.issued_at - time.time()) < 5


def test_ed25519_partner_may_name_its_algorithm_ed25519(
    settings, messages: PartnerMessages, signer: Signer
) -> None:  # type: ignore[no-untyped-def]
    token = partner_seals(settings, messages, signer, "globex-pay", jws_header={"alg": "Ed25519"})
    assert run(messages.open("globex-pay", token)).payload == PAYOUT


def test_replayed_message_is_refused(settings, messages: PartnerMessages, signer: Signer) -> None:  # type: ignore[no-untyped-def]
    token = partner_seals(settings, messages, signer, "acme-bank")
    run(messages.open("acme-bank", token))
    with pytest.raises(BadRequest, match="message replayed"):
        run(messages.open("acme-bank", token))
    # The same message id in a new message (re-encrypted, re-signed) is a replay too.
    jti = str(uuid.uuid4())
    run(
        messages.open(
            "globex-pay", partner_seals(settings, messages, signer, "globex-pay", {"jti": jti})
        )
    )
    with pytest.raises(BadRequest, match="message replayed"):
        run(
            messages.open(
                "globex-pay", partner_seals(settings, messages, signer, "globex-pay", {"jti": jti})
            )
        )


@pytest.mark.parametrize("offset", [-31, 31, -3600, 86400])
def test_stale_or_future_messages_are_refused(
    settings, messages: PartnerMessages, signer: Signer, clock: Clock, offset: int
) -> None:  # type: ignore[no-untyped-def]
    # The vault's clock stands still, so a second past the window stays past it however long
    # sealing and opening take on a slow machine.
    now = int(time.time())
    token = partner_seals(settings, messages, signer, "globex-pay", {"iat": now + offset})
    clock.pinned = float(now)
    try:
        with pytest.raises(BadRequest, match="message timestamp outside the allowed window"):
            run(messages.open("globex-pay", token))
    finally:
        clock.pinned = None


def test_window_follows_our_clock(
    settings, messages: PartnerMessages, signer: Signer, clock: Clock
) -> None:  # type: ignore[no-untyped-def]
    token = partner_seals(settings, messages, signer, "globex-pay")
    clock.offset = 40
    with pytest.raises(BadRequest, match="outside the allowed window"):
        run(messages.open("globex-pay", token))
    clock.offset = 20  # within 30 s: accepted (and so remembered)
    run(messages.open("globex-pay", token))


def test_signature_by_another_key_is_refused(
    settings, messages: PartnerMessages, signer: Signer
) -> None:  # type: ignore[no-untyped-def]
    impostor = ECKey.import_key(ec.generate_private_key(ec.SECP256R1()))
    token = partner_seals(settings, messages, signer, "acme-bank", sign_with=impostor)
    with pytest.raises(BadRequest, match="message signature is not valid"):
        run(messages.open("acme-bank", token))


def test_claims_must_name_the_partner_and_us(
    settings, messages: PartnerMessages, signer: Signer
) -> None:  # type: ignore[no-untyped-def]
    for claims, reason in (
        ({"iss": "globex-pay"}, "iss"),
        ({"aud": "someone-else"}, "aud"),
        ({"jti": ""}, "jti"),
        ({"iat": "now"}, "iat"),
    ):
        token = partner_seals(settings, messages, signer, "acme-bank", claims)
        with pytest.raises(BadRequest, match=reason):
            run(messages.open("acme-bank", token))


def test_tampered_messages_fail_alike(
    settings, runtime, messages: PartnerMessages, signer: Signer
) -> None:  # type: ignore[no-untyped-def]
    """A bad key block and a bad ciphertext give the same answer for the same token calls
    (with RSA-OAEP: the decryption, then a known-good one; no Manger-style oracle)."""
    for partner in PROFILES:
        parts = partner_seals(settings, messages, signer, partner).split(".")
        costs = []
        for index in (1, 1, 3, 4):  # encrypted key (twice: the first makes the canary), ...
            segment = parts[index]
            flipped = ("B" if segment[5] == "A" else "A").join((segment[:5], segment[6:]))
            token = ".".join([*parts[:index], flipped, *parts[index + 1 :]])
            with (
                token_calls(runtime) as calls,
                pytest.raises(BadRequest, match="message could not be decrypted"),
            ):
                run(messages.open(partner, token))
            costs.append(dict(calls))
        assert costs[1] == costs[2] == costs[3], (partner, costs)
        assert costs[1] == ({"decrypt": 2} if partner == "acme-bank" else {"derive_key": 1})


def test_headers_outside_the_profile_are_refused(
    settings, messages: PartnerMessages, signer: Signer
) -> None:  # type: ignore[no-untyped-def]
    kid = "payout-decryption-ec:v1"
    cases = [
        ({"alg": "ECDH-ES", "enc": "A256GCM", "kid": kid}, "unexpected JWE alg"),
        ({"alg": "ECDH-ES+A128KW", "enc": "A256GCM", "kid": kid}, "unexpected JWE alg"),
        ({"alg": "ECDH-ES+A256KW", "enc": "A128GCM", "kid": kid}, "unexpected JWE enc"),
        ({"alg": "ECDH-ES+A256KW", "enc": "A256GCM", "kid": "other:v1"}, "kid"),
        (
            {"alg": "ECDH-ES+A256KW", "enc": "A256GCM", "kid": "payout-decryption-ec:v9"},
            "key version 9 does not exist",
        ),
    ]
    for header, reason in cases:
        token = partner_seals(settings, messages, signer, "globex-pay", jwe_header=header)
        with pytest.raises(BadRequest, match=reason):
            run(messages.open("globex-pay", token))
    # joserfc will not write a crit it does not understand; swap one into a real message.
    parts = partner_seals(settings, messages, signer, "globex-pay").split(".")
    header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    header.update(crit=["x-extension"], **{"x-extension": 1})
    parts[0] = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    with pytest.raises(BadRequest, match="critical"):
        run(messages.open("globex-pay", ".".join(parts)))


def test_unsigned_and_unencrypted_forms_are_refused(messages: PartnerMessages) -> None:
    def seg(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    none_jwe = ".".join([seg({"alg": "none", "enc": "A256GCM"}), "", "AAAA", "AAAA", "AAAA"])
    with pytest.raises(BadRequest, match="unexpected JWE alg"):
        run(messages.open("acme-bank", none_jwe))
    plain_jws = ".".join([seg({"alg": "none"}), seg({"jti": "x"}), ""])
    with pytest.raises(BadRequest, match="not a compact JWE"):
        run(messages.open("acme-bank", plain_jws))
    duplicate = "eyJhbGciOiJSU0EtT0FFUCIsImFsZyI6Im5vbmUifQ"  # {"alg":"RSA-OAEP","alg":"none"}
    with pytest.raises(BadRequest, match="duplicate"):
        run(messages.open("acme-bank", f"{duplicate}.AA.AA.AA.AA"))


def test_invalid_curve_points_never_reach_the_hsm(messages: PartnerMessages) -> None:
    def seg(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    off_curve = {"kty": "EC", "crv": "P-256", "x": "A" * 43, "y": "A" * 42 + "E"}
    header = {"alg": "ECDH-ES+A256KW", "enc": "A256GCM", "epk": off_curve}
    with pytest.raises(BadRequest, match="not a point on P-256"):
        run(messages.open("globex-pay", ".".join([seg(header), "AAAA", "AAAA", "AAAA", "AAAA"])))


def test_unknown_partner(messages: PartnerMessages) -> None:
    with pytest.raises(NotFound):
        run(messages.seal("nobody", PAYOUT))


def test_ledger_prunes_expired_rows(runtime) -> None:  # type: ignore[no-untyped-def]
    ledger = SeenMessages(runtime.db)
    now = time.time()
    seen = tables.seen_messages
    with runtime.db.engine.begin() as conn:
        conn.execute(insert(seen).values(partner="p", message_id="old", expires_at=now - 1))
    run(ledger.remember("p", "new", now + 60, now))
    with runtime.db.engine.connect() as conn:
        ids = {r[0] for r in conn.execute(select(seen.c.message_id).where(seen.c.partner == "p"))}
    assert ids == {"new"}
    with pytest.raises(BadRequest, match="message replayed"):
        run(ledger.remember("p", "new", now + 60, now))


def test_partner_policy_is_backward_compatible(tmp_path: Path) -> None:
    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    (tmp_path / "p.toml").write_text(
        f'[partners.old]\npublic_key = """{pem}"""\n'
        'signing_key = "payout-signing"\ndecryption_key = "payout-decryption-ec"\n'
    )
    partner = load_policies(tmp_path, tmp_path).partners["old"]
    one = (PartnerKey(pem.encode()),)  # one key, both roles, valid without limit
    assert partner == Partner(
        "old", "payout-signing", "payout-decryption-ec", sig_keys=one, enc_keys=one
    )
    assert partner.max_clock_skew == 30
    assert partner.partner_id == "old"
    for extra, reason in (
        ('key_management = "RSA1_5"', "key_management"),
        ("max_clock_skew = 0", "max_clock_skew"),
        ('colour = "red"', "unknown field"),
    ):
        (tmp_path / "p.toml").write_text(
            f'[partners.old]\npublic_key = """{pem}"""\nsigning_key = "a"\n'
            f'decryption_key = "b"\n{extra}\n'
        )
        with pytest.raises(ConfigError, match=reason):
            load_policies(tmp_path, tmp_path)
    (tmp_path / "p.toml").write_text('[partners.old]\nsigning_key = "a"\ndecryption_key = "b"\n')
    with pytest.raises(ConfigError, match="needs public_key"):
        load_policies(tmp_path, tmp_path)
