"""Sealed partner messages: sign with our HSM key, then encrypt to the partner (and back).

``seal``: the claims ``{iss, aud, iat, jti, payload | payload_b64}`` are signed as a compact
JWS with our signing key (in the HSM), then encrypted as a compact JWE (``cty: JWT``, RFC 7519
§5.2) under a fresh content key drawn from the HSM's RNG and wrapped to the partner's public
key on the host. ``open``: the content key is recovered with our decryption key in the HSM
(RSA-OAEP decryption, or the ECDH step of ECDH-ES whose Concat KDF and AES key unwrap then run
on the host over Z), the content is decrypted, the partner's signature is verified with its
registered public key, and the message is refused if its ``iat`` is outside the partner's
window or its ``jti`` was seen before (an INSERT into ``seen_messages``: atomic across
replicas). The profile is in ``vault/jose.py``; docs/signing-and-partners.md has it in full.
"""

from __future__ import annotations

import base64
import dataclasses
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from hsm import HsmOps
from hsm.errors import DecryptionFailed
from vault import jose
from vault.encoding import b64url
from vault.errors import BadRequest, HsmUnavailable, NotFound
from vault.hsm import Hsm
from vault.jose import JoseError
from vault.keys import Key, KeyVersion
from vault.keytypes import Purpose
from vault.policy import Partner, PartnerKey, Policies
from vault.registry import KeyRegistry
from vault.signing import (
    RSA_CALL_WEIGHT,
    PublicKey,
    PublicKeys,
    hsm_input,
    jws_algorithm,
    plan_for_jws,
    public_jwk,
    require_signing,
)
from vault.store.messages import SeenMessages

MESSAGE_ID_BYTES = 16  # 128 random bits: collisions are not a concern
MAX_MESSAGE_ID_CHARS = 128  # the width of seen_messages.message_id
# Ledger rows outlive the clock window by this much, so replicas whose clocks differ a little
# still find the row of any message that could pass their own check.
LEDGER_MARGIN = 60
_KID = re.compile(r"^(?P<name>.+):v(?P<version>[1-9][0-9]{0,8})$")
_HSM_HASH = "sha256"  # the JWS algorithms here all hash with SHA-256


@dataclass(frozen=True, slots=True)
class SealedMessage:
    jwe: str
    message_id: str
    issued_at: int
    key_version: int


@dataclass(frozen=True, slots=True)
class OpenedMessage:
    payload: Any
    payload_b64: bytes | None
    message_id: str
    issued_at: int
    # Non-repudiation: the partner's verified signature, kept in the audit chain.
    evidence: jose.VerifiedJws | None = None


@dataclass(frozen=True, slots=True)
class _Loaded:
    """One of the partner's keys, loaded: as declared, the key, and the JOSE alg it takes."""

    declared: PartnerKey
    public: PublicKey
    alg: str

    def valid_at(self, now: float) -> bool:
        return self.declared.valid_at(now)


@dataclass(frozen=True, slots=True)
class _PartnerKeys:
    signature: tuple[_Loaded, ...]  # oldest first, as declared
    encryption: tuple[_Loaded, ...]

    def recipient(self, now: float) -> _Loaded:
        """The newest encryption key valid now: what we seal to."""
        for key in reversed(self.encryption):
            if key.valid_at(now):
                return key
        raise BadRequest("partner has no encryption key valid now")


class PartnerMessages:
    def __init__(
        self,
        policies: Policies,
        registry: KeyRegistry,
        hsm: Hsm,
        public_keys: PublicKeys,
        ledger: SeenMessages,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.policies = policies
        self.registry = registry
        self.hsm = hsm
        self.public_keys = public_keys
        self.ledger = ledger
        self._clock = clock
        self._keys: dict[str, _PartnerKeys] = {}

    def partner(self, name: str) -> Partner:
        found = self.policies.partners.get(name)
        if found is None:
            raise NotFound("unknown partner")
        return found

    def _partner_keys(self, partner: Partner) -> _PartnerKeys:
        cached = self._keys.get(partner.name)
        if cached is not None:
            return cached
        if not partner.sig_keys or not partner.enc_keys:
            raise BadRequest("partner has no public keys configured")
        signature, encryption = [], []
        for declared in partner.sig_keys:
            public = jose.load_public_pem(declared.pem, "partner signing key")
            signature.append(_Loaded(declared, public, jose.signature_algorithm_for(public)))
        for declared in partner.enc_keys:
            public = jose.load_public_pem(declared.pem, "partner encryption key")
            encryption.append(_Loaded(declared, public, jose.key_management_for(public)))
        keys = _PartnerKeys(tuple(signature), tuple(encryption))
        self._keys[partner.name] = keys
        return keys

    # -- seal ------------------------------------------------------------------------------

    async def seal(
        self, partner_name: str, payload: Any = None, payload_b64: bytes | None = None
    ) -> SealedMessage:
        partner = self.partner(partner_name)
        now = int(self._clock())
        recipient = self._partner_keys(partner).recipient(now)
        key = await self.registry.get(partner.signing_key)
        require_signing(key, "sign")
        version = key.version_to_use()
        message_id = b64url(secrets.token_bytes(MESSAGE_ID_BYTES))
        claims: dict[str, Any] = {
            "iss": partner.audience,
            "aud": partner.partner_id,
            "iat": now,
            "jti": message_id,
        }
        if payload_b64 is not None:
            claims["payload_b64"] = base64.b64encode(payload_b64).decode()
        else:
            claims["payload"] = payload
        header = {"alg": jws_algorithm(key), "kid": f"{key.name}:v{version.version}", "typ": "JWT"}
        to_sign = jose.signing_input(header, jose.encode_json(claims))
        plan = plan_for_jws(key)
        prepared = hsm_input(plan, to_sign, prehashed=False)
        oid = version.object_id()

        def job(ops: HsmOps) -> tuple[bytes, bytes]:
            fresh = ops.random(jose.CEK_BYTES + jose.IV_BYTES)
            return fresh, ops.sign(oid, plan.scheme, prepared, _HSM_HASH)

        fresh, signature = await self.hsm.run(job)
        # ES256's JWS signature is the raw r || s the HSM returns (RFC 7518 §3.4).
        jws = f"{to_sign.decode('ascii')}.{b64url(signature)}"
        cek, iv = fresh[: jose.CEK_BYTES], fresh[jose.CEK_BYTES :]
        extra, encrypted_key = jose.wrap_cek(recipient.public, recipient.alg, cek)
        protected = {"alg": recipient.alg, "enc": jose.ENC, "cty": "JWT", **extra}
        if recipient.declared.kid:  # which of its keys the partner decrypts with
            protected["kid"] = recipient.declared.kid
        protected_b64 = b64url(jose.encode_json(protected))
        sealed = jose.encrypt_content(cek, iv, protected_b64, jws.encode("ascii"))
        ciphertext, tag = sealed[: -jose.TAG_BYTES], sealed[-jose.TAG_BYTES :]
        compact = ".".join(
            (protected_b64, b64url(encrypted_key), b64url(iv), b64url(ciphertext), b64url(tag))
        )
        return SealedMessage(compact, message_id, now, version.version)

    # -- open ------------------------------------------------------------------------------

    def inbound_algorithm(self, partner: Partner, key: Key) -> str:
        """The JWE ``alg`` this partner must use to us: fixed by our key's purpose (ECDH key
        agreement on P-256, or RSA-OAEP decryption) and the policy."""
        key.check_use("open")
        if key.purpose is Purpose.KEY_AGREEMENT:
            if partner.key_management not in ("", jose.ECDH_ES_A256KW):
                raise BadRequest("partner key_management does not fit the decryption key")
            return jose.ECDH_ES_A256KW
        if partner.key_management not in ("", jose.RSA_OAEP_256, jose.RSA_OAEP):
            raise BadRequest("partner key_management does not fit the decryption key")
        return partner.key_management or jose.RSA_OAEP_256

    @staticmethod
    def _kid_version(key_name: str, header: dict[str, Any]) -> int | None:
        """The version of our decryption key the JWE ``kid`` names (``None``: the latest)."""
        kid = header.get("kid")
        if kid is None:
            return None
        match = _KID.fullmatch(kid) if isinstance(kid, str) else None
        if match is None or match["name"] != key_name:
            raise BadRequest("JWE kid does not name the partner's decryption key")
        return int(match["version"])

    async def _content_key(
        self, alg: str, version: KeyVersion, header: dict[str, Any], encrypted_key: bytes
    ) -> bytes | None:
        oid = version.object_id()
        if alg == jose.ECDH_ES_A256KW:
            point = jose.peer_point(header)
            apu, apv = jose.party_info(header, "apu"), jose.party_info(header, "apv")

            def agree(ops: HsmOps) -> bytes:
                return ops.ecdh(oid, point)

            z = await self.hsm.run(agree)
            return jose.unwrap_cek(jose.concat_kdf(z, alg, apu, apv), encrypted_key)
        hash_name = jose.OAEP_HASH[alg]

        def decrypt(ops: HsmOps) -> bytes | None:
            try:
                return ops.rsa_oaep_decrypt(oid, encrypted_key, hash_name)
            except DecryptionFailed:  # decided with the content's own failure (open)
                return None

        return await self.hsm.run(decrypt, calls=RSA_CALL_WEIGHT)

    async def _undecryptable(self, alg: str, version: KeyVersion) -> BadRequest:
        """A message that did not decrypt, whether at its key block or its content: with
        RSA-OAEP both cost the same HSM work — the decryption, then a known-good one under the
        key, which tells a bad message (400) from a failing device (503) — so neither the
        answer nor its timing says which part failed (RFC 7516 §11.5; Manger's attack)."""
        if alg != jose.ECDH_ES_A256KW:
            oid, hash_name = version.object_id(), jose.OAEP_HASH[alg]
            works = await self.hsm.run(
                lambda ops: ops.key_works(oid, hash_name), calls=RSA_CALL_WEIGHT
            )
            if not works:
                raise HsmUnavailable()
        return BadRequest("message could not be decrypted")

    async def open(self, partner_name: str, compact: str) -> OpenedMessage:
        partner = self.partner(partner_name)
        keys = self._partner_keys(partner)
        parts = jose.split_compact(compact, 5, "JWE")
        protected_b64 = parts[0]
        header = jose.decode_json(jose.decode_segment(protected_b64, "JWE header"), "JWE header")
        named = self._kid_version(partner.decryption_key, header)
        key = await self.registry.get(partner.decryption_key, newest=named)
        alg = self.inbound_algorithm(partner, key)
        jose.check_header(header, "JWE", alg)
        if header.get("enc") != jose.ENC:
            raise BadRequest(f"unexpected JWE enc (this profile uses {jose.ENC})")
        if "zip" in header:
            raise BadRequest("JWE compression is not supported")
        cty = header.get("cty")
        if cty is not None and (not isinstance(cty, str) or cty.upper() != "JWT"):
            raise BadRequest("JWE cty must be JWT (a nested signed message)")
        version = key.version_to_check(key.latest_version if named is None else named)
        encrypted_key, iv, ciphertext, tag = (
            jose.decode_segment(p, "JWE segment") for p in parts[1:]
        )
        cek = await self._content_key(alg, version, header, encrypted_key)
        if cek is None or len(cek) != jose.CEK_BYTES:
            # RFC 7516 §11.5: carry on with a random key, so a bad key block and a bad
            # ciphertext fail alike, at the same step.
            cek = secrets.token_bytes(jose.CEK_BYTES)
        inner = jose.decrypt_content(cek, iv, protected_b64, ciphertext, tag)
        if inner is None:
            raise await self._undecryptable(alg, version)
        try:
            jws = inner.decode("ascii")
        except UnicodeDecodeError:
            raise BadRequest("message is not a compact JWS") from None
        verified = self._verified(keys, jws)
        claims = jose.decode_json(verified.payload, "message claims")
        opened = await self._accept(partner, claims)
        return dataclasses.replace(opened, evidence=verified)

    def _verified(self, keys: _PartnerKeys, jws: str) -> jose.VerifiedJws:
        """The partner's JWS, signed by one of its signing keys valid now (the
        one its ``kid`` names, if it names one we know). A signature by a key no longer valid
        is refused as such, so the partner learns to use its new key."""
        kid = jose.jws_header(jws).get("kid")
        pool = [k for k in keys.signature if k.declared.kid and k.declared.kid == kid]
        pool = pool or list(keys.signature)
        now = self._clock()
        try:
            return jose.verified_jws(jws, [(k.public, k.alg) for k in pool if k.valid_at(now)])
        except JoseError:
            stale = [(k.public, k.alg) for k in pool if not k.valid_at(now)]
            if stale and _signed_by_any(jws, stale):
                raise BadRequest("message signed with a retired partner key") from None
            raise

    async def _accept(self, partner: Partner, claims: dict[str, Any]) -> OpenedMessage:
        if claims.get("iss") != partner.partner_id:
            raise BadRequest("message iss does not name the partner")
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if partner.audience not in audiences:
            raise BadRequest("message aud does not name this vault")
        message_id, issued_at = claims.get("jti"), claims.get("iat")
        if (
            not isinstance(message_id, str)
            or not 0 < len(message_id) <= MAX_MESSAGE_ID_CHARS
            or not message_id.isprintable()
        ):
            raise BadRequest("message jti must be a string of 1 to 128 characters")
        if not isinstance(issued_at, int) or isinstance(issued_at, bool):
            raise BadRequest("message iat must be an integer (seconds since the epoch)")
        now = self._clock()
        skew = partner.max_clock_skew
        if abs(now - issued_at) > skew:
            raise BadRequest("message timestamp outside the allowed window")
        expires = claims.get("exp")
        if expires is not None and (not isinstance(expires, int | float) or now > expires + skew):
            raise BadRequest("message timestamp outside the allowed window")
        payload_b64: bytes | None = None
        if "payload_b64" in claims:
            encoded = claims["payload_b64"]
            try:
                payload_b64 = base64.b64decode(str(encoded), validate=True)
            except ValueError:
                raise BadRequest("message payload_b64 is not base64") from None
        elif "payload" not in claims:
            raise BadRequest("message has no payload")
        await self.ledger.remember(partner.name, message_id, issued_at + skew + LEDGER_MARGIN, now)
        return OpenedMessage(claims.get("payload"), payload_b64, message_id, issued_at)

    # -- keys for the partner --------------------------------------------------------------

    async def jwks(self, partner_name: str) -> dict[str, Any]:
        """What the partner needs from us: our signing keys (``use: sig``) and decryption
        keys (``use: enc``, with the ``alg`` it must use), every usable version."""
        partner = self.partner(partner_name)
        signing = await self.registry.get(partner.signing_key)
        require_signing(signing, "sign")
        decryption = await self.registry.get(partner.decryption_key)
        enc_alg = self.inbound_algorithm(partner, decryption)
        out: list[dict[str, str]] = []
        for key, use, alg in (
            (signing, "sig", jws_algorithm(signing)),
            (decryption, "enc", enc_alg),
        ):
            versions = key.live_versions()
            publics = await self.public_keys.of(versions)
            for v in versions:
                public = publics[v.version]
                if use == "enc" and not isinstance(
                    public, rsa.RSAPublicKey | ec.EllipticCurvePublicKey
                ):
                    continue
                out.append(public_jwk(public, kid=f"{key.name}:v{v.version}", alg=alg, use=use))
        return {"keys": out}


def _signed_by_any(jws: str, keys: list[tuple[PublicKey, str]]) -> bool:
    try:
        jose.verified_jws(jws, keys)
    except JoseError:
        return False
    return True
