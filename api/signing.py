"""``/v1/transit/...`` signatures, HMACs, record digests, blind indexes and JWKS.

Shapes and batch rules follow docs/transit-reference.md §11-13: sign, verify and hmac batches
always answer 200 with per-item errors, every item echoes ``reference`` (``""`` when absent),
and only the top-level ``key_version`` counts. The record-digest, blind-index and JWKS paths
are this vault's own (docs/signing-and-partners.md).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Annotated, Any

from litestar import Controller, get, post
from litestar.params import FromPath, JSONBody
from msgspec import Meta, Struct

from api.call import Call, CallParam, route
from api.documents import answers
from api.responses import Reply, ok
from api.schemas import B64, BatchResults, Reference, Valid, Version
from vault.digest import Field, Mac, MacCheck
from vault.errors import BadRequest, VaultError
from vault.signing import DEFAULT_HASH, Signed, SignOptions, VerifyItem

Text = Annotated[str, Meta(max_length=1024)]
FieldPair = tuple[Annotated[str, Meta(max_length=1024)], str | int | bool | None]


class SignItem(Struct, kw_only=True):
    input: B64 | None = None
    signature: Annotated[str, Meta(max_length=65536)] | None = None
    hmac: Annotated[str, Meta(max_length=1024)] | None = None
    reference: Reference = None


class SignBody(Struct, kw_only=True):
    """sign, verify and hmac bodies (Vault's field names; unknown fields are ignored)."""

    input: B64 | None = None
    signature: Annotated[str, Meta(max_length=65536)] | None = None
    hmac: Annotated[str, Meta(max_length=1024)] | None = None
    prehashed: bool | None = None
    hash_algorithm: Text | None = None
    algorithm: Text | None = None
    signature_algorithm: Text | None = None
    marshaling_algorithm: Text | None = None
    salt_length: Text | int | None = None
    key_version: Version | None = None
    batch_input: list[SignItem] | None = None


class DigestItem(Struct, kw_only=True):
    fields: list[FieldPair] | None = None
    digest: Annotated[str, Meta(max_length=1024)] | None = None
    reference: Reference = None


class DigestBody(Struct, kw_only=True):
    fields: list[FieldPair] | None = None
    digest: Annotated[str, Meta(max_length=1024)] | None = None
    key_version: Version | None = None
    batch_input: list[DigestItem] | None = None


class BlindIndexItem(Struct, kw_only=True):
    value: Annotated[str, Meta(max_length=65536)] | None = None
    normalization: Text | None = None
    context: Text | None = None
    reference: Reference = None


class BlindIndexBody(Struct, kw_only=True):
    value: Annotated[str, Meta(max_length=65536)] | None = None
    normalization: Text | None = None
    context: Text | None = None
    key_version: Version | None = None
    batch_input: list[BlindIndexItem] | None = None


class Signature(Struct):
    signature: str
    key_version: int


class Hmac(Struct):
    hmac: str


class Digest(Struct, kw_only=True):
    digest: str
    key_version: int


class BlindIndex(Struct, kw_only=True):
    blind_index: str
    key_version: int


class Jwks(Struct):
    keys: list[dict[str, str]]


def _decode_input(value: str | None, missing: str | None) -> bytes | VaultError:
    """Base64 ``input``; absent is the empty message unless ``missing`` names the error."""
    if value is None:
        return BadRequest(missing) if missing else b""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return BadRequest("unable to decode input as base64")


def _batch(items: Sequence[Any] | None, call: Call) -> Sequence[Any] | None:
    if items is None:
        return None
    if not items:
        raise BadRequest("missing batch input to process")
    limit = call.vault.settings.max_batch_items
    if len(items) > limit:
        raise BadRequest(f"batch_input has more than {limit} items")
    return items


def _reference(item: Any) -> str:
    ref = item.reference
    return "" if ref is None else str(ref)


def _single(result: Any) -> Any:
    if isinstance(result, VaultError):
        raise result
    return result


def _sign_options(body: SignBody, path_hash: str | None) -> SignOptions:
    return SignOptions(
        hash_algorithm=path_hash or body.hash_algorithm or DEFAULT_HASH,
        prehashed=bool(body.prehashed),
        signature_algorithm=body.signature_algorithm,
        marshaling_algorithm=body.marshaling_algorithm or "asn1",
        salt_length=body.salt_length,
    )


def _signed(result: Signed | VaultError, reference: str) -> dict[str, Any]:
    if isinstance(result, VaultError):
        return {"key_version": 0, "error": str(result), "reference": reference}
    return {
        "signature": result.signature,
        "key_version": result.key_version,
        "reference": reference,
    }


def _verify_mode(body: SignBody, batch: Sequence[SignItem] | None) -> str:
    """Which kind of verification, by Vault's rules (a signature wins over an hmac)."""
    if batch is None:
        if body.signature is not None:
            return "signature"
        if body.hmac is not None:
            return "hmac"
        raise BadRequest("neither a 'signature' nor an 'hmac' were given to verify")
    signatures = [i.signature is not None for i in batch]
    hmacs = [i.hmac is not None and i.signature is None for i in batch]
    missing = [not (s or h) for s, h in zip(signatures, hmacs, strict=True)]
    if any(signatures) and any(hmacs):
        raise BadRequest(
            "elements of batch_input must all provide 'signature' field value "
            "or all provide 'hmac' field value"
        )
    if all(missing):
        raise BadRequest("no batch_input elements have 'signature' or 'hmac'")
    if any(missing):
        which = "signature" if any(signatures) else "hmac"
        raise BadRequest(f"some elements of batch_input are missing '{which}' field value")
    return "signature" if any(signatures) else "hmac"


def _fields(fields: list[FieldPair] | None) -> Sequence[Field] | VaultError:
    if fields is None:
        return BadRequest("missing fields")
    return fields


def _mac_result(result: Mac | VaultError, name: str, reference: str | None) -> dict[str, Any]:
    out: dict[str, Any]
    if isinstance(result, VaultError):
        out = {"error": str(result)}
    else:
        out = {name: result.value, "key_version": result.key_version}
    if reference is not None:
        out["reference"] = reference
    return out


def _note_invalid(call: Call, results: Sequence[bool | VaultError], finding: str) -> None:
    """A signature or MAC that did not verify is audited, not only answered."""
    if any(r is False for r in results):
        call.findings += (finding,)


def _valid_items(batch: Sequence[Any], results: Sequence[bool | VaultError]) -> Reply:
    out = []
    for i, r in zip(batch, results, strict=True):
        if isinstance(r, VaultError):
            out.append({"valid": False, "error": str(r), "reference": _reference(i)})
        else:
            out.append({"valid": r, "reference": _reference(i)})
    return ok({"batch_results": out})


class SigningController(Controller):
    path = "/v1/transit"

    # -- signatures ------------------------------------------------------------------------

    @post(
        ["/sign/{name:str}", "/sign/{name:str}/{hash_algorithm:str}"],
        opt=route("sign"),
        responses=answers(Signature, BatchResults),
    )
    async def sign(
        self,
        call: CallParam,
        name: FromPath[str],
        hash_algorithm: FromPath[str | None] = None,
        data: JSONBody[SignBody | None] = None,
    ) -> Reply:
        body = data or SignBody()
        batch = _batch(body.batch_input, call)
        options = _sign_options(body, hash_algorithm)
        signer = call.vault.signer
        if batch is None:
            item = _decode_input(body.input, None)
            result = _single((await signer.sign(name, [item], options, body.key_version))[0])
            call.key_version = result.key_version
            return ok({"signature": result.signature, "key_version": result.key_version})
        inputs = [_decode_input(i.input, "missing input") for i in batch]
        results = await signer.sign(name, inputs, options, body.key_version)
        return ok(
            {
                "batch_results": [
                    _signed(r, _reference(i)) for i, r in zip(batch, results, strict=True)
                ]
            }
        )

    @post(
        ["/verify/{name:str}", "/verify/{name:str}/{hash_algorithm:str}"],
        opt=route("verify"),
        responses=answers(Valid, BatchResults),
    )
    async def verify(
        self,
        call: CallParam,
        name: FromPath[str],
        hash_algorithm: FromPath[str | None] = None,
        data: JSONBody[SignBody | None] = None,
    ) -> Reply:
        body = data or SignBody()
        batch = _batch(body.batch_input, call)
        if _verify_mode(body, batch) == "hmac":
            return await _verify_hmac(call, name, body, batch, hash_algorithm)
        options = _sign_options(body, hash_algorithm)
        signer = call.vault.signer
        if batch is None:
            item = _decode_input(body.input, None)
            sig_item = (
                item if isinstance(item, VaultError) else VerifyItem(item, body.signature or "")
            )
            valid = _single((await signer.verify(name, [sig_item], options))[0])
            _note_invalid(call, [valid], "signature.invalid")
            return ok({"valid": valid})
        items: list[VerifyItem | VaultError] = []
        for i in batch:
            decoded = _decode_input(i.input, "missing input")
            items.append(
                decoded
                if isinstance(decoded, VaultError)
                else VerifyItem(decoded, i.signature or "")
            )
        results = await signer.verify(name, items, options)
        _note_invalid(call, results, "signature.invalid")
        return _valid_items(batch, results)

    @get("/keys/{name:str}/jwks", opt=route("verify"), responses=answers(Jwks))
    async def jwks(self, call: CallParam, name: FromPath[str]) -> Reply:
        return ok(await call.vault.signer.jwks(name))

    # -- HMAC ------------------------------------------------------------------------------

    @post(
        ["/hmac/{name:str}", "/hmac/{name:str}/{algorithm:str}"],
        opt=route("hmac"),
        responses=answers(Hmac, BatchResults),
    )
    async def hmac(
        self,
        call: CallParam,
        name: FromPath[str],
        algorithm: FromPath[str | None] = None,
        data: JSONBody[SignBody | None] = None,
    ) -> Reply:
        body = data or SignBody()
        batch = _batch(body.batch_input, call)
        chosen = algorithm or body.algorithm
        digests = call.vault.digests
        if batch is None:
            item = _single(_decode_input(body.input, "missing input for HMAC"))
            result = _single((await digests.hmac(name, [item], chosen, body.key_version))[0])
            call.key_version = result.key_version
            return ok({"hmac": result.value})
        inputs = [_decode_input(i.input, "missing input for HMAC") for i in batch]
        results = await digests.hmac(name, inputs, chosen, body.key_version)
        out = []
        for i, r in zip(batch, results, strict=True):
            if isinstance(r, VaultError):
                out.append({"error": str(r), "reference": _reference(i)})
            else:
                out.append({"hmac": r.value, "reference": _reference(i)})
        return ok({"batch_results": out})

    # -- record digests --------------------------------------------------------------------

    @post("/digest/{name:str}", opt=route("digest"), responses=answers(Digest, BatchResults))
    async def digest(
        self, call: CallParam, name: FromPath[str], data: JSONBody[DigestBody]
    ) -> Reply:
        batch = _batch(data.batch_input, call)
        digests = call.vault.digests
        if batch is None:
            results = await digests.record_digests(
                name, [_single(_fields(data.fields))], data.key_version
            )
            return ok(_mac_result(_single(results[0]), "digest", None))
        results = await digests.record_digests(
            name, [_fields(i.fields) for i in batch], data.key_version
        )
        return ok(
            {
                "batch_results": [
                    _mac_result(r, "digest", _reference(i))
                    for i, r in zip(batch, results, strict=True)
                ]
            }
        )

    @post("/digest/{name:str}/verify", opt=route("digest"), responses=answers(Valid, BatchResults))
    async def verify_digest(
        self, call: CallParam, name: FromPath[str], data: JSONBody[DigestBody]
    ) -> Reply:
        batch = _batch(data.batch_input, call)
        digests = call.vault.digests

        def item(fields: list[FieldPair] | None, digest: str | None) -> Any:
            record = _fields(fields)
            if isinstance(record, VaultError):
                return record
            if digest is None:
                return BadRequest("missing digest to verify")
            return (record, digest)

        if batch is None:
            results = await digests.verify_record_digests(
                name, [_single(item(data.fields, data.digest))]
            )
            _note_invalid(call, results, "digest.invalid")
            return ok({"valid": _single(results[0])})
        results = await digests.verify_record_digests(
            name, [item(i.fields, i.digest) for i in batch]
        )
        _note_invalid(call, results, "digest.invalid")
        return _valid_items(batch, results)

    # -- blind indexes ---------------------------------------------------------------------

    @post(
        "/blind-index/{name:str}", opt=route("digest"), responses=answers(BlindIndex, BatchResults)
    )
    async def blind_index(
        self, call: CallParam, name: FromPath[str], data: JSONBody[BlindIndexBody]
    ) -> Reply:
        batch = _batch(data.batch_input, call)
        digests = call.vault.digests

        def item(
            value: str | None, normalization: str | None, context: str | None
        ) -> tuple[str, str, str] | VaultError:
            if value is None:
                return BadRequest("missing value")
            if normalization is None:
                return BadRequest("missing normalization")
            return (value, normalization, context or "")

        if batch is None:
            results = await digests.blind_indexes(
                name,
                [_single(item(data.value, data.normalization, data.context))],
                data.key_version,
            )
            return ok(_mac_result(_single(results[0]), "blind_index", None))
        results = await digests.blind_indexes(
            name, [item(i.value, i.normalization, i.context) for i in batch], data.key_version
        )
        return ok(
            {
                "batch_results": [
                    _mac_result(r, "blind_index", _reference(i))
                    for i, r in zip(batch, results, strict=True)
                ]
            }
        )


async def _verify_hmac(
    call: Call,
    name: str,
    body: SignBody,
    batch: Sequence[SignItem] | None,
    path_algorithm: str | None,
) -> Reply:
    algorithm = path_algorithm or body.hash_algorithm or body.algorithm
    digests = call.vault.digests
    if batch is None:
        item = _decode_input(body.input, None)
        check = item if isinstance(item, VaultError) else MacCheck(item, body.hmac or "")
        valid = _single((await digests.verify_hmac(name, [check], algorithm))[0])
        _note_invalid(call, [valid], "hmac.invalid")
        return ok({"valid": valid})
    checks: list[MacCheck | VaultError] = []
    for i in batch:
        decoded = _decode_input(i.input, "missing input")
        checks.append(
            decoded if isinstance(decoded, VaultError) else MacCheck(decoded, i.hmac or "")
        )
    results = await digests.verify_hmac(name, checks, algorithm)
    _note_invalid(call, results, "hmac.invalid")
    out: list[dict[str, Any]] = []
    for i, r in zip(batch, results, strict=True):
        # Vault leaves "valid" out of a failed HMAC item (a Go omitempty), see §C.
        if isinstance(r, VaultError):
            out.append({"error": str(r), "reference": _reference(i)})
        elif r:
            out.append({"valid": True, "reference": _reference(i)})
        else:
            out.append({"reference": _reference(i)})
    return ok({"batch_results": out})
