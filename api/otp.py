"""``/v1/otp/...``: seed custody and verification for the token-management service."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from litestar import Controller, post
from litestar.params import FromPath, JSONBody
from msgspec import Meta, Struct

from api import metrics
from api.call import CallParam, route
from api.documents import answers
from api.responses import Reply, ok
from vault.errors import BadRequest
from vault.otp import MAX_RESYNC_WINDOW, OtpInputError
from vault.otp.pskc import parse_pskc
from vault.otp.seeds import TokenParams
from vault.otp.service import (
    SeedState,
    TokenIdentity,
    VerifyInput,
    VerifyResult,
    token_params,
)

Ident = Annotated[str, Meta(max_length=1024)]
EncryptedSeed = Annotated[str, Meta(max_length=4096)]
Code = Annotated[str, Meta(max_length=32)]


class SeedBody(Struct, kw_only=True):
    token_serial: Ident
    app_id: Ident = ""
    dfp_hash: Ident = ""
    kind: str = "totp"
    algorithm: str | None = None
    digits: int | None = None
    period: int | None = None
    ocra_suite: str | None = None
    issuer: Annotated[str, Meta(max_length=256)] | None = None
    account_name: Annotated[str, Meta(max_length=256)] | None = None
    device_public_key: Annotated[str, Meta(max_length=16384)] | None = None
    seed_hex: Annotated[str, Meta(max_length=256)] | None = None
    seed_base32: Annotated[str, Meta(max_length=256)] | None = None


class PskcBody(Struct, kw_only=True):
    pskc: Annotated[str, Meta(max_length=4 * 1024 * 1024)]
    preshared_key_hex: Annotated[str, Meta(max_length=128)] | None = None
    app_id: Ident = ""
    dfp_hash: Ident = ""


class VerifyBody(Struct, kw_only=True):
    encrypted_seed: EncryptedSeed
    token_serial: Ident
    otp: Code
    app_id: Ident = ""
    dfp_hash: Ident = ""
    challenge: Annotated[str, Meta(max_length=128)] | None = None
    challenge2: Annotated[str, Meta(max_length=128)] | None = None
    counter: Annotated[int, Meta(ge=0, le=2**63 - 1)] | None = None
    window: Annotated[int, Meta(ge=0, le=100)] | None = None
    password: Annotated[str, Meta(max_length=256)] | None = None
    password_hash: Annotated[str, Meta(max_length=256)] | None = None
    session_info_hex: Annotated[str, Meta(max_length=1024)] | None = None


class SeedRef(Struct, kw_only=True):
    """The seed an operation acts on, named by its blob (the caller holds it)."""

    encrypted_seed: EncryptedSeed


class ResyncBody(Struct, kw_only=True):
    encrypted_seed: EncryptedSeed
    otp: Code
    next_otp: Code
    window: Annotated[int, Meta(ge=0, le=MAX_RESYNC_WINDOW)] | None = None


def _identity(body: SeedBody | VerifyBody) -> TokenIdentity:
    return TokenIdentity(body.token_serial, body.app_id, body.dfp_hash)


def _params(body: SeedBody) -> TokenParams:
    return token_params(body.kind, body.algorithm, body.digits, body.period, body.ocra_suite)


def _seed(body: SeedBody) -> bytes:
    if (body.seed_hex is None) == (body.seed_base32 is None):
        raise OtpInputError("seed", "give exactly one of seed_hex or seed_base32")
    try:
        if body.seed_hex is not None:
            return bytes.fromhex(body.seed_hex)
        text = (body.seed_base32 or "").replace(" ", "").upper()
        return base64.b32decode(text + "=" * (-len(text) % 8))
    except (ValueError, binascii.Error):
        raise OtpInputError(
            "seed_hex" if body.seed_hex is not None else "seed_base32", "is not valid"
        ) from None


def _device_key(text: str | None) -> bytes | None:
    if text is None:
        return None
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    try:
        if "BEGIN" in text:
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode(text, validate=True))
    except (ValueError, binascii.Error):
        raise OtpInputError("device_public_key", "is not a PEM or base64 DER public key") from None
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _verify_view(result: VerifyResult) -> dict[str, Any]:
    view: dict[str, Any] = {"valid": result.valid}
    for field in ("reason", "counter", "time_step", "next_counter", "drift"):
        value = getattr(result, field)
        if value is not None:
            view[field] = value
    return view


def _state_view(state: SeedState) -> dict[str, Any]:
    view: dict[str, Any] = {
        "seed_id": state.seed_id,
        "kind": state.kind,
        "key_version": state.key_version,
        "failures": state.failures,
        "locked": state.locked_until is not None,
        "locked_until": state.locked_until,
        "deactivated": state.deactivated_at is not None,
        "deactivated_at": state.deactivated_at,
    }
    for field in ("counter", "next_counter", "time_step"):
        value = getattr(state, field)
        if value is not None:
            view[field] = value
    return view


class SeedCreated(Struct, kw_only=True):
    encrypted_seed: str
    provisioning: dict[str, Any] | None = None


class ImportedTokens(Struct):
    tokens: list[dict[str, Any]]


class Verified(Struct, kw_only=True, omit_defaults=True):
    valid: bool
    reason: str | None = None
    counter: int | None = None
    time_step: int | None = None
    next_counter: int | None = None
    drift: int | None = None


class TokenState(Struct, kw_only=True, omit_defaults=True):
    seed_id: str
    kind: str
    key_version: int
    failures: int
    locked: bool
    locked_until: float | None
    deactivated: bool
    deactivated_at: float | None
    counter: int | None = None
    next_counter: int | None = None
    time_step: int | None = None


class OtpController(Controller):
    path = "/v1/otp"

    @post("/seeds/{name:str}", opt=route("otp:create"), responses=answers(SeedCreated))
    async def create_seed(
        self, call: CallParam, name: FromPath[str], data: JSONBody[SeedBody]
    ) -> Reply:
        if data.seed_hex is not None or data.seed_base32 is not None:
            raise BadRequest("a new seed is generated in the HSM; use .../import to bring one")
        blob, provisioning = await call.vault.otp.create(
            name,
            _identity(data),
            _params(data),
            device_public_key_der=_device_key(data.device_public_key),
            issuer=data.issuer,
            account=data.account_name,
        )
        return ok({"encrypted_seed": blob, "provisioning": provisioning}, secret=True)

    @post("/seeds/{name:str}/import", opt=route("otp:import"), responses=answers(SeedCreated))
    async def import_seed(
        self, call: CallParam, name: FromPath[str], data: JSONBody[SeedBody]
    ) -> Reply:
        blob = await call.vault.otp.import_seed(name, _identity(data), _params(data), _seed(data))
        # The same answer shape as a new seed's, which may carry the seed: never cached.
        return ok({"encrypted_seed": blob}, secret=True)

    @post(
        "/seeds/{name:str}/import-pskc", opt=route("otp:import"), responses=answers(ImportedTokens)
    )
    async def import_pskc(
        self, call: CallParam, name: FromPath[str], data: JSONBody[PskcBody]
    ) -> Reply:
        try:
            psk = bytes.fromhex(data.preshared_key_hex) if data.preshared_key_hex else None
        except ValueError:
            raise OtpInputError("preshared_key_hex", "is not hexadecimal") from None
        entries = parse_pskc(data.pskc, preshared_key=psk)
        imported = await call.vault.otp.import_pskc(name, entries, data.app_id, data.dfp_hash)
        results = []
        for token in imported:
            item: dict[str, Any] = {
                "token_serial": token.token_serial,
                "key_id": token.key_id,
                "kind": token.kind,
                "encrypted_seed": token.encrypted_seed,
            }
            if token.counter is not None:
                item["counter"] = token.counter
            results.append(item)
        return ok({"tokens": results})

    @post("/verify/{name:str}", opt=route("otp:verify"), responses=answers(Verified))
    async def verify(
        self, call: CallParam, name: FromPath[str], data: JSONBody[VerifyBody]
    ) -> Reply:
        try:
            session = bytes.fromhex(data.session_info_hex) if data.session_info_hex else None
        except ValueError:
            raise OtpInputError("session_info_hex", "is not hexadecimal") from None
        result = await call.vault.otp.verify(
            name,
            VerifyInput(
                encrypted_seed=data.encrypted_seed,
                identity=_identity(data),
                otp=data.otp,
                challenge=data.challenge,
                challenge2=data.challenge2,
                counter=data.counter,
                window=data.window,
                password=data.password,
                password_hash=data.password_hash,
                session_info=session,
            ),
        )
        metrics.otp_verified(name, "accepted" if result.valid else result.reason or "mismatch")
        if not result.valid:
            call.findings += (f"otp.{result.reason}",)
        return ok(_verify_view(result))

    # -- token management: each names the seed by its blob, whose tag the HSM checks first --

    @post("/seeds/{name:str}/state", opt=route("otp:read"), responses=answers(TokenState))
    async def seed_state(
        self, call: CallParam, name: FromPath[str], data: JSONBody[SeedRef]
    ) -> Reply:
        return ok(_state_view(await call.vault.otp.state(name, data.encrypted_seed)))

    @post("/seeds/{name:str}/resync", opt=route("otp:resync"), responses=answers(Verified))
    async def resync(
        self, call: CallParam, name: FromPath[str], data: JSONBody[ResyncBody]
    ) -> Reply:
        result = await call.vault.otp.resync(
            name,
            data.encrypted_seed,
            data.otp,
            data.next_otp,
            data.window,
            actor=call.caller.service.name,
        )
        return ok(_verify_view(result))

    @post("/seeds/{name:str}/unlock", opt=route("otp:unlock"), responses=answers(TokenState))
    async def unlock(self, call: CallParam, name: FromPath[str], data: JSONBody[SeedRef]) -> Reply:
        state = await call.vault.otp.unlock(
            name, data.encrypted_seed, actor=call.caller.service.name
        )
        return ok(_state_view(state))

    @post(
        "/seeds/{name:str}/deactivate", opt=route("otp:deactivate"), responses=answers(TokenState)
    )
    async def deactivate(
        self, call: CallParam, name: FromPath[str], data: JSONBody[SeedRef]
    ) -> Reply:
        state = await call.vault.otp.deactivate(
            name, data.encrypted_seed, actor=call.caller.service.name
        )
        return ok(_state_view(state))
