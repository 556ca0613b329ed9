"""``/v1/payout/...``: sealed partner messages (docs/signing-and-partners.md).

The gate authenticates and checks that the caller holds the operation on some key (these
paths carry a partner, not a key); each handler then checks the grant on the key the
operation really uses: the partner's ``signing_key`` to seal, its ``decryption_key`` to open.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from litestar import Controller, get, post
from litestar.params import FromPath, JSONBody
from msgspec import Meta, Struct

from api.call import Call, CallParam, route
from api.documents import answers
from api.responses import Reply, ok
from vault.errors import BadRequest, Forbidden
from vault.jose import MAX_COMPACT_CHARS
from vault.policy import Partner

Compact = Annotated[str, Meta(min_length=1, max_length=MAX_COMPACT_CHARS)]
B64 = Annotated[str, Meta(max_length=2 * 1024 * 1024)]


class SealBody(Struct, kw_only=True):
    payload: Any = None
    payload_b64: B64 | None = None


class OpenBody(Struct, kw_only=True):
    jwe: Compact


class Sealed(Struct, kw_only=True):
    jwe: str
    message_id: str
    issued_at: int
    key_version: int


class Opened(Struct, kw_only=True):
    message_id: str
    issued_at: int
    payload: Any = None
    payload_b64: str | None = None


class PartnerJwks(Struct):
    keys: list[dict[str, str]]


MAX_PAYLOAD_DEPTH = 32  # a JSON payload nested deeper is refused (its encoding recurses)


def _depth(value: Any, limit: int = MAX_PAYLOAD_DEPTH) -> int:
    """How deeply ``value`` nests, counting without recursion (stops past ``limit``)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > limit:
            break
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


def _authorized(call: Call, name: str, operation: str) -> Partner:
    """These paths name a partner, not a key: the grant is checked on the key the operation
    really uses (the partner's ``signing_key`` to seal, its ``decryption_key`` to open)."""
    partner = call.vault.partners.partner(name)
    key = partner.signing_key if operation == "seal" else partner.decryption_key
    if not call.caller.service.allows(operation, key):
        raise Forbidden()
    call.key = key
    return partner


class PayoutController(Controller):
    path = "/v1/payout"

    @post("/seal/{partner:str}", opt=route("seal", key=None), responses=answers(Sealed))
    async def seal(
        self, call: CallParam, partner: FromPath[str], data: JSONBody[SealBody]
    ) -> Reply:
        _authorized(call, partner, "seal")
        raw: bytes | None = None
        if data.payload_b64 is not None:
            if data.payload is not None:
                raise BadRequest("give payload or payload_b64, not both")
            try:
                raw = base64.b64decode(data.payload_b64, validate=True)
            except (binascii.Error, ValueError):
                raise BadRequest("payload_b64 is not valid base64") from None
        elif data.payload is None:
            raise BadRequest("missing payload (a JSON value) or payload_b64")
        elif _depth(data.payload) > MAX_PAYLOAD_DEPTH:
            raise BadRequest(f"payload nests deeper than {MAX_PAYLOAD_DEPTH} levels")
        sealed = await call.vault.partners.seal(partner, data.payload, raw)
        call.key_version = sealed.key_version
        return ok(
            {
                "jwe": sealed.jwe,
                "message_id": sealed.message_id,
                "issued_at": sealed.issued_at,
                "key_version": sealed.key_version,
            }
        )

    @post("/open/{partner:str}", opt=route("open", key=None), responses=answers(Opened))
    async def open(
        self, call: CallParam, partner: FromPath[str], data: JSONBody[OpenBody]
    ) -> Reply:
        _authorized(call, partner, "open")
        opened = await call.vault.partners.open(partner, data.jwe)
        if opened.evidence is not None:
            call.evidence = {
                "partner": partner,
                "message_id": opened.message_id,
                "jws_protected": opened.evidence.protected,
                "jws_payload_sha256": opened.evidence.payload_sha256,
                "jws_signature": opened.evidence.signature,
            }
        result: dict[str, Any] = {"message_id": opened.message_id, "issued_at": opened.issued_at}
        if opened.payload_b64 is not None:
            result["payload_b64"] = base64.b64encode(opened.payload_b64).decode()
        else:
            result["payload"] = opened.payload
        return ok(result, secret=True)

    @get(
        "/partners/{partner:str}/jwks", opt=route("seal", key=None), responses=answers(PartnerJwks)
    )
    async def jwks(self, call: CallParam, partner: FromPath[str]) -> Reply:
        _authorized(call, partner, "seal")
        return ok(await call.vault.partners.jwks(partner))
