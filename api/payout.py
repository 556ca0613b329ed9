"""``/v1/payout/...``: sealed partner messages (docs/signing-and-partners.md).

The ``authorize`` hook authenticates and checks that the caller holds the operation on some
key (these paths carry a partner, not a key); each handler then checks the grant on the key
the operation really uses: the partner's ``signing_key`` to seal, its ``decryption_key`` to open.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.params import FromPath, JSONBody
from litestar.types import ASGIApp
from msgspec import Meta, Struct

from api.responses import ok
from api.security import OPERATION, principal
from api.signing import signer
from api.transit import runtime_of
from vault.errors import BadRequest, Forbidden
from vault.jose import MAX_COMPACT_CHARS
from vault.partners import PartnerMessages
from vault.policy import Partner
from vault.runtime import Runtime

Compact = Annotated[str, Meta(min_length=1, max_length=MAX_COMPACT_CHARS)]
B64 = Annotated[str, Meta(max_length=2 * 1024 * 1024)]


class SealBody(Struct, kw_only=True):
    payload: Any = None
    payload_b64: B64 | None = None


class OpenBody(Struct, kw_only=True):
    jwe: Compact


def partner_messages(rt: Runtime) -> PartnerMessages:
    found = rt.extras.get("partners")
    if not isinstance(found, PartnerMessages):
        found = PartnerMessages(rt.policies, rt.registry, rt.hsm, rt.engine)
        rt.extras["partners"] = found
    return found


def _authorized(
    request: Request[Any, Any, Any], messages: PartnerMessages, name: str, operation: str
) -> Partner:
    partner = messages.partner(name)
    key = partner.signing_key if operation == "seal" else partner.decryption_key
    if not principal(request).service.allows(operation, key):
        raise Forbidden()
    return partner


class PayoutController(Controller):
    path = "/v1/payout"

    @post("/seal/{partner:str}", opt={OPERATION: "seal"}, status_code=200)
    async def seal(
        self, request: Request[Any, Any, Any], partner: FromPath[str], data: JSONBody[SealBody]
    ) -> ASGIApp:
        messages = partner_messages(runtime_of(request))
        _authorized(request, messages, partner, "seal")
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
        sealed = await messages.seal(partner, data.payload, raw)
        return ok(
            {
                "jwe": sealed.jwe,
                "message_id": sealed.message_id,
                "issued_at": sealed.issued_at,
                "key_version": sealed.key_version,
            }
        )

    @post("/open/{partner:str}", opt={OPERATION: "open"}, status_code=200)
    async def open(
        self, request: Request[Any, Any, Any], partner: FromPath[str], data: JSONBody[OpenBody]
    ) -> ASGIApp:
        messages = partner_messages(runtime_of(request))
        _authorized(request, messages, partner, "open")
        opened = await messages.open(partner, data.jwe)
        result: dict[str, Any] = {"message_id": opened.message_id, "issued_at": opened.issued_at}
        if opened.payload_b64 is not None:
            result["payload_b64"] = base64.b64encode(opened.payload_b64).decode()
        else:
            result["payload"] = opened.payload
        return ok(result)

    @get("/partners/{partner:str}/jwks", opt={OPERATION: "seal"})
    async def jwks(self, request: Request[Any, Any, Any], partner: FromPath[str]) -> ASGIApp:
        rt = runtime_of(request)
        messages = partner_messages(rt)
        _authorized(request, messages, partner, "seal")
        return ok(await messages.jwks(partner, signer(rt).public_keys))
