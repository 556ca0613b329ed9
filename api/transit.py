"""``/v1/transit/...``: Vault Transit's paths, fields and shapes over the vault's keys."""

from __future__ import annotations

import datetime as dt
from typing import Any

from cryptography.hazmat.primitives import serialization
from litestar import Controller, Request, delete, get, post
from litestar.params import FromPath, JSONBody
from litestar.types import ASGIApp

from api.responses import JsonResponse, ok
from api.schemas import BatchItem, ConfigKey, CreateKey, DataKeyBody, EncryptBody, RandomBody
from api.security import OPERATION, principal
from vault.auth import Principal
from vault.envelope import EncryptItem, b64decode, b64encode
from vault.errors import BadRequest, NotFound, VaultError
from vault.hsm import HsmOps
from vault.keys import Key, validate_name
from vault.keytypes import key_type
from vault.runtime import Runtime
from vault.transit import DecryptItem, Encrypted

_EMPTY = b""


def runtime_of(request: Request[Any, Any, Any]) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


def _rfc3339(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


def _period(value: int | str | None) -> int | None:
    """Vault accepts seconds or a duration string ("24h", "30m", "3600s")."""
    if value is None or isinstance(value, int):
        return value
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = value.strip()
    try:
        if text and text[-1] in units:
            return int(float(text[:-1]) * units[text[-1]])
        return int(text)
    except ValueError:
        raise BadRequest("auto_rotate_period must be seconds or a duration like '24h'") from None


_ASYMMETRIC_NAMES = {"ecdsa-p256": "P-256", "ed25519": "ed25519", "rsa-3072": "rsa-3072"}


async def key_view(rt: Runtime, key: Key) -> dict[str, Any]:
    """Vault's key info. Only versions that can still decrypt (or verify) are listed."""
    kind = key.type
    live = {n: v for n, v in sorted(key.versions.items()) if n >= key.min_decryption_version}
    view: dict[str, Any] = {
        "allow_plaintext_backup": False,
        "auto_rotate_period": key.auto_rotate_period,
        "deletion_allowed": key.deletion_allowed,
        "derived": False,
        "exportable": False,
        "imported_key": False,
    }
    if kind.asymmetric:
        ids = {n: v.object_id() for n, v in live.items()}

        def job(ops: HsmOps) -> dict[int, bytes]:
            return {n: ops.public_key_der(i) for n, i in ids.items()}

        ders = await rt.hsm.run(job)
        view["keys"] = {
            str(n): {
                "certificate_chain": "",
                "creation_time": _rfc3339(v.created_at),
                "name": _ASYMMETRIC_NAMES[kind.name],
                "public_key": serialization.load_der_public_key(ders[n])
                .public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
                .decode(),
            }
            for n, v in live.items()
        }
    elif kind.hmac:
        view["key_size"] = 32
    else:
        view["keys"] = {str(n): int(v.created_at) for n, v in live.items()}
    view.update(
        {
            "latest_version": key.latest_version,
            "min_available_version": 0,
            "min_decryption_version": key.min_decryption_version,
            "min_encryption_version": key.min_encryption_version,
            "name": key.name,
            "supports_decryption": kind.encryption,
            "supports_derivation": False,
            "supports_encryption": kind.encryption,
            "supports_signing": kind.signing,
            "type": kind.name,
        }
    )
    return view


def _decoded(value: str | None, field: str) -> bytes:
    return _EMPTY if value is None else b64decode(value, field)


def _encrypt_item(item: BatchItem | EncryptBody, single: bool = False) -> EncryptItem | VaultError:
    # Vault: a single request's ``"plaintext": null`` is the empty message; a batch item
    # without plaintext is an error.
    if item.plaintext is None and not single:
        return BadRequest("missing plaintext to encrypt")
    try:
        return EncryptItem(
            _decoded(item.plaintext, "plaintext"),
            _decoded(item.associated_data, "associated_data"),
            item.key_version,
        )
    except VaultError as exc:
        return exc


def _decrypt_item(item: BatchItem | EncryptBody) -> DecryptItem | VaultError:
    if not item.ciphertext:
        return BadRequest("missing ciphertext to decrypt")
    try:
        return DecryptItem(
            item.ciphertext, _decoded(item.associated_data, "associated_data"), item.key_version
        )
    except VaultError as exc:
        return exc


async def encrypt_one(rt: Runtime, caller: Principal, name: str, data: EncryptBody) -> JsonResponse:
    """``encrypt`` of one message: the Litestar route and the fast path both end here."""
    await _key_or_upsert(rt, caller, name, data.type)
    result = await rt.transit.encrypt(name, [_encrypt_item(data, single=True)], data.key_version)
    return ok(_encrypted(_single(result[0])))


async def decrypt_one(rt: Runtime, caller: Principal, name: str, data: EncryptBody) -> JsonResponse:
    """``decrypt`` of one message: the Litestar route and the fast path both end here."""
    result = await rt.transit.decrypt(name, [_decrypt_item(data)])
    return ok({"plaintext": b64encode(_single(result[0]))})


def _batch(data: EncryptBody, max_items: int) -> list[BatchItem] | None:
    if data.batch_input is None:
        return None
    if not data.batch_input:
        raise BadRequest("missing batch input to process")
    if len(data.batch_input) > max_items:
        raise BadRequest(f"batch_input has more than {max_items} items")
    return data.batch_input


def _batch_response(
    items: list[BatchItem],
    results: list[dict[str, Any]],
    *,
    failures_fail: bool,
    partial: int | None = None,
) -> ASGIApp:
    """Vault's batch rules: ``reference`` always echoed; for encrypt and decrypt, any failed
    item makes the reply 400 (or ``partial_failure_response_code`` when some succeeded)."""
    failed = 0
    for item, result in zip(items, results, strict=True):
        result["reference"] = item.reference or ""
        failed += "error" in result
    status = 200
    if failures_fail and failed:
        status = partial if partial and failed < len(results) else 400
    return ok({"batch_results": results}, status=status)


def _single(result: Any) -> Any:
    if isinstance(result, VaultError):
        raise result
    return result


def _encrypted(result: Encrypted | VaultError) -> dict[str, Any]:
    if isinstance(result, VaultError):
        return {"error": str(result)}
    return {"ciphertext": result.ciphertext, "key_version": result.key_version}


def _plaintext(result: bytes | VaultError) -> dict[str, Any]:
    if isinstance(result, VaultError):
        return {"plaintext": "", "error": str(result)}
    return {"plaintext": b64encode(result)}


async def _key_or_upsert(rt: Runtime, caller: Principal, name: str, type_name: str | None) -> None:
    """Vault creates a missing key on encrypt for a caller that may also create keys."""
    try:
        await rt.registry.get(name)
    except NotFound:
        if not caller.service.allows("create", name):
            raise
        kind = type_name or "aes256-gcm96"
        if not key_type(kind).encryption:
            raise BadRequest(f"unknown key type {kind}") from None
        await rt.registry.call(rt.registry.create_sync, name, kind)


async def _rewrap_seeds(
    rt: Runtime, name: str, data: EncryptBody, batch: list[BatchItem] | None
) -> ASGIApp:
    """``rewrap`` on an ``otp-seed`` key moves encrypted seeds to the latest version."""

    async def one(ciphertext: str | None, version: int | None) -> dict[str, Any]:
        if not ciphertext:
            raise BadRequest("missing ciphertext to decrypt")
        blob, new_version = await rt.otp.rewrap(name, ciphertext, version)
        return {"ciphertext": blob, "key_version": new_version}

    if batch is None:
        return ok(await one(data.ciphertext, data.key_version))
    results = []
    for item in batch:
        try:
            version = item.key_version if item.key_version is not None else data.key_version
            results.append(await one(item.ciphertext, version))
        except VaultError as exc:
            results.append({"error": str(exc)})
    return _batch_response(batch, results, failures_fail=False)


class TransitController(Controller):
    path = "/v1/transit"

    @post("/keys/{name:str}", opt={OPERATION: "create"}, status_code=200)
    async def create_key(
        self,
        request: Request[Any, Any, Any],
        name: FromPath[str],
        data: JSONBody[CreateKey | None] = None,
    ) -> ASGIApp:
        rt = runtime_of(request)
        body = data or CreateKey()
        if body.exportable or body.allow_plaintext_backup:
            raise BadRequest("keys in this vault are never exportable")
        if body.derived or body.convergent_encryption:
            raise BadRequest("derived and convergent keys are not supported")
        validate_name(name)
        key, _ = await rt.registry.call(
            rt.registry.create_sync,
            name,
            body.type or "aes256-gcm96",
            _period(body.auto_rotate_period) or 0,
        )
        return ok(await key_view(rt, key))

    @get("/keys/{name:str}", opt={OPERATION: "read"})
    async def read_key(self, request: Request[Any, Any, Any], name: FromPath[str]) -> ASGIApp:
        rt = runtime_of(request)
        rt.registry.invalidate(name)
        return ok(await key_view(rt, await rt.registry.get(name)))

    @get("/keys", opt={OPERATION: "list"})
    async def list_keys(self, request: Request[Any, Any, Any]) -> ASGIApp:
        rt = runtime_of(request)
        service = principal(request).service
        names = [n for n in await rt.registry.names() if service.allows("list", n)]
        if not names:
            return JsonResponse(b'{"errors":[]}', 404)
        return ok({"keys": names})

    @post("/keys/{name:str}/rotate", opt={OPERATION: "rotate"}, status_code=200)
    async def rotate_key(self, request: Request[Any, Any, Any], name: FromPath[str]) -> ASGIApp:
        rt = runtime_of(request)
        key = await rt.registry.call(rt.registry.rotate_sync, name)
        return ok(await key_view(rt, key))

    @post("/keys/{name:str}/config", opt={OPERATION: "config"}, status_code=200)
    async def configure_key(
        self,
        request: Request[Any, Any, Any],
        name: FromPath[str],
        data: JSONBody[ConfigKey | None] = None,
    ) -> ASGIApp:
        rt = runtime_of(request)
        body = data or ConfigKey()
        if body.exportable or body.allow_plaintext_backup:
            raise BadRequest("keys in this vault are never exportable")
        key = await rt.registry.call(
            rt.registry.configure_sync,
            name,
            min_decryption_version=body.min_decryption_version,
            min_encryption_version=body.min_encryption_version,
            deletion_allowed=body.deletion_allowed,
            auto_rotate_period=_period(body.auto_rotate_period),
        )
        return ok(await key_view(rt, key))

    @delete("/keys/{name:str}", opt={OPERATION: "delete"}, status_code=200)
    async def delete_key(self, request: Request[Any, Any, Any], name: FromPath[str]) -> ASGIApp:
        rt = runtime_of(request)
        await rt.registry.call(rt.registry.delete_sync, name)
        return ok(None)

    @post("/encrypt/{name:str}", opt={OPERATION: "encrypt"}, status_code=200)
    async def encrypt(
        self, request: Request[Any, Any, Any], name: FromPath[str], data: JSONBody[EncryptBody]
    ) -> ASGIApp:
        rt = runtime_of(request)
        batch = _batch(data, rt.settings.max_batch_items)
        if batch is None:
            return await encrypt_one(rt, principal(request), name, data)
        await _key_or_upsert(rt, principal(request), name, data.type)
        items = [_encrypt_item(i) for i in batch]
        results = await rt.transit.encrypt(name, items, data.key_version)
        return _batch_response(
            batch,
            [_encrypted(r) for r in results],
            failures_fail=True,
            partial=data.partial_failure_response_code,
        )

    @post("/decrypt/{name:str}", opt={OPERATION: "decrypt"}, status_code=200)
    async def decrypt(
        self, request: Request[Any, Any, Any], name: FromPath[str], data: JSONBody[EncryptBody]
    ) -> ASGIApp:
        rt = runtime_of(request)
        batch = _batch(data, rt.settings.max_batch_items)
        if batch is None:
            return await decrypt_one(rt, principal(request), name, data)
        results = await rt.transit.decrypt(name, [_decrypt_item(i) for i in batch])
        return _batch_response(
            batch,
            [_plaintext(r) for r in results],
            failures_fail=True,
            partial=data.partial_failure_response_code,
        )

    @post("/rewrap/{name:str}", opt={OPERATION: "rewrap"}, status_code=200)
    async def rewrap(
        self, request: Request[Any, Any, Any], name: FromPath[str], data: JSONBody[EncryptBody]
    ) -> ASGIApp:
        rt = runtime_of(request)
        key = await rt.registry.get(name)
        batch = _batch(data, rt.settings.max_batch_items)
        if key.type.otp:
            return await _rewrap_seeds(rt, name, data, batch)
        if batch is None:
            result = await rt.transit.rewrap(name, [_decrypt_item(data)], data.key_version)
            return ok(_encrypted(_single(result[0])))
        items = [_decrypt_item(i) for i in batch]
        results = await rt.transit.rewrap(name, items, data.key_version)
        return _batch_response(batch, [_encrypted(r) for r in results], failures_fail=False)

    @post("/datakey/{kind:str}/{name:str}", opt={OPERATION: "datakey"}, status_code=200)
    async def datakey(
        self,
        request: Request[Any, Any, Any],
        kind: FromPath[str],
        name: FromPath[str],
        data: JSONBody[DataKeyBody | None] = None,
    ) -> ASGIApp:
        if kind not in ("plaintext", "wrapped"):
            raise BadRequest("Invalid path, must be 'plaintext' or 'wrapped'")
        rt = runtime_of(request)
        body = data or DataKeyBody()
        made = await rt.transit.datakey(
            name,
            body.bits or 256,
            _decoded(body.associated_data, "associated_data"),
            body.key_version,
        )
        result: dict[str, Any] = {"ciphertext": made.ciphertext, "key_version": made.key_version}
        if kind == "plaintext":
            result["plaintext"] = b64encode(made.plaintext)
        return ok(result)

    @post(
        ["/random", "/random/{count:int}", "/random/{source:str}/{count:int}"],
        opt={OPERATION: "random"},
        status_code=200,
    )
    async def random(
        self,
        request: Request[Any, Any, Any],
        count: FromPath[int | None] = None,
        source: FromPath[str | None] = None,
        data: JSONBody[RandomBody | None] = None,
    ) -> ASGIApp:
        rt = runtime_of(request)
        body = data or RandomBody()
        chosen = source or body.source or "platform"
        if chosen not in ("platform", "all"):
            raise BadRequest("source must be 'platform' or 'all' (both are the HSM here)")
        fmt = body.format or "base64"
        if fmt not in ("base64", "hex"):
            raise BadRequest("format must be 'base64' or 'hex'")
        raw = await rt.transit.random(
            count if count is not None else body.bytes if body.bytes is not None else 32
        )
        return ok({"random_bytes": raw.hex() if fmt == "hex" else b64encode(raw)})
