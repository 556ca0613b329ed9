"""``/v1/transit/...``: Vault Transit's paths, fields and shapes over the vault's keys."""

from __future__ import annotations

import datetime as dt
from typing import Any

from cryptography.hazmat.primitives import serialization
from litestar import Controller, Request, delete, get, post
from litestar.types import ASGIApp

from api.responses import JsonResponse, ok
from api.schemas import BatchItem, ConfigKey, CreateKey, DataKeyBody, EncryptBody, RandomBody
from api.security import OPERATION, principal
from vault.envelope import b64decode, b64encode
from vault.errors import BadRequest, VaultError
from vault.hsm import HsmOps
from vault.keys import Key, validate_name
from vault.runtime import Runtime
from vault.transit import DecryptItem, Encrypted, EncryptItem

_EMPTY = b""


def _runtime(request: Request[Any, Any, Any]) -> Runtime:
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


async def key_view(rt: Runtime, key: Key) -> dict[str, Any]:
    kind = key.type
    versions: dict[str, Any]
    if kind.asymmetric:
        ids = {v.version: v.object_id() for v in key.versions.values()}

        def job(ops: HsmOps) -> dict[int, bytes]:
            return {n: ops.public_key_der(i) for n, i in ids.items()}

        ders = await rt.hsm.run(job)
        versions = {}
        for n, v in sorted(key.versions.items()):
            pem = serialization.load_der_public_key(ders[n]).public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            versions[str(n)] = {
                "public_key": pem.decode(),
                "creation_time": _rfc3339(v.created_at),
                "name": kind.name,
            }
    else:
        versions = {str(n): int(v.created_at) for n, v in sorted(key.versions.items())}
    return {
        "name": key.name,
        "type": kind.name,
        "keys": versions,
        "latest_version": key.latest_version,
        "min_available_version": 0,
        "min_decryption_version": key.min_decryption_version,
        "min_encryption_version": key.min_encryption_version,
        "deletion_allowed": key.deletion_allowed,
        "exportable": False,
        "allow_plaintext_backup": False,
        "auto_rotate_period": key.auto_rotate_period,
        "derived": False,
        "imported_key": False,
        "supports_encryption": kind.encryption,
        "supports_decryption": kind.encryption,
        "supports_derivation": False,
        "supports_signing": kind.signing,
    }


def _decoded(value: str | None, field: str) -> bytes:
    return _EMPTY if value is None else b64decode(value, field)


def _encrypt_item(item: BatchItem | EncryptBody) -> EncryptItem | VaultError:
    if item.plaintext is None:
        return BadRequest("missing plaintext to encrypt")
    try:
        return EncryptItem(
            b64decode(item.plaintext, "plaintext"),
            _decoded(item.associated_data, "associated_data"),
        )
    except VaultError as exc:
        return exc


def _decrypt_item(item: BatchItem | EncryptBody) -> DecryptItem | VaultError:
    if not item.ciphertext:
        return BadRequest("missing ciphertext to decrypt")
    try:
        return DecryptItem(item.ciphertext, _decoded(item.associated_data, "associated_data"))
    except VaultError as exc:
        return exc


def _batch(data: EncryptBody, max_items: int) -> list[BatchItem] | None:
    if data.batch_input is None:
        return None
    if not data.batch_input:
        raise BadRequest("missing batch input to process")
    if len(data.batch_input) > max_items:
        raise BadRequest(f"batch_input has more than {max_items} items")
    return data.batch_input


def _batch_response(items: list[BatchItem], results: list[dict[str, Any]]) -> ASGIApp:
    for item, result in zip(items, results, strict=True):
        if item.reference is not None:
            result["reference"] = item.reference
    return ok({"batch_results": results}, status=_batch_status(results))


def _batch_status(results: list[dict[str, Any]]) -> int:
    # Vault: a batch in which every item failed is a 400; otherwise 200 with per-item errors.
    return 400 if results and all("error" in r for r in results) else 200


def _single(result: Any) -> Any:
    if isinstance(result, VaultError):
        raise result
    return result


def _encrypted(result: Encrypted | VaultError) -> dict[str, Any]:
    if isinstance(result, VaultError):
        return {"error": str(result)}
    return {"ciphertext": result.ciphertext, "key_version": result.key_version}


class TransitController(Controller):
    path = "/v1/transit"

    @post("/keys/{name:str}", opt={OPERATION: "create"}, status_code=200)
    async def create_key(
        self, request: Request[Any, Any, Any], name: str, data: CreateKey | None = None
    ) -> ASGIApp:
        rt = _runtime(request)
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
    async def read_key(self, request: Request[Any, Any, Any], name: str) -> ASGIApp:
        rt = _runtime(request)
        rt.registry.invalidate(name)
        return ok(await key_view(rt, await rt.registry.get(name)))

    @get("/keys", opt={OPERATION: "list"})
    async def list_keys(self, request: Request[Any, Any, Any]) -> ASGIApp:
        rt = _runtime(request)
        service = principal(request).service
        names = [n for n in await rt.registry.names() if service.allows("list", n)]
        if not names:
            return JsonResponse(b'{"errors":[]}', 404)
        return ok({"keys": names})

    @post("/keys/{name:str}/rotate", opt={OPERATION: "rotate"}, status_code=200)
    async def rotate_key(self, request: Request[Any, Any, Any], name: str) -> ASGIApp:
        rt = _runtime(request)
        key = await rt.registry.call(rt.registry.rotate_sync, name)
        return ok(await key_view(rt, key))

    @post("/keys/{name:str}/config", opt={OPERATION: "config"}, status_code=200)
    async def configure_key(
        self, request: Request[Any, Any, Any], name: str, data: ConfigKey | None = None
    ) -> ASGIApp:
        rt = _runtime(request)
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
    async def delete_key(self, request: Request[Any, Any, Any], name: str) -> ASGIApp:
        rt = _runtime(request)
        await rt.registry.call(rt.registry.delete_sync, name)
        return ok(None)

    @post("/encrypt/{name:str}", opt={OPERATION: "encrypt"}, status_code=200)
    async def encrypt(
        self, request: Request[Any, Any, Any], name: str, data: EncryptBody
    ) -> ASGIApp:
        rt = _runtime(request)
        batch = _batch(data, rt.settings.max_batch_items)
        if batch is None:
            result = await rt.transit.encrypt(name, [_encrypt_item(data)], data.key_version)
            return ok(_encrypted(_single(result[0])))
        results = await rt.transit.encrypt(
            name, [_encrypt_item(i) for i in batch], data.key_version
        )
        return _batch_response(batch, [_encrypted(r) for r in results])

    @post("/decrypt/{name:str}", opt={OPERATION: "decrypt"}, status_code=200)
    async def decrypt(
        self, request: Request[Any, Any, Any], name: str, data: EncryptBody
    ) -> ASGIApp:
        rt = _runtime(request)
        batch = _batch(data, rt.settings.max_batch_items)
        if batch is None:
            result = await rt.transit.decrypt(name, [_decrypt_item(data)])
            return ok({"plaintext": b64encode(_single(result[0]))})
        results = await rt.transit.decrypt(name, [_decrypt_item(i) for i in batch])
        return _batch_response(
            batch,
            [
                {"error": str(r)} if isinstance(r, VaultError) else {"plaintext": b64encode(r)}
                for r in results
            ],
        )

    @post("/rewrap/{name:str}", opt={OPERATION: "rewrap"}, status_code=200)
    async def rewrap(
        self, request: Request[Any, Any, Any], name: str, data: EncryptBody
    ) -> ASGIApp:
        rt = _runtime(request)
        otp = rt.extras.get("otp")
        key = await rt.registry.get(name)
        if key.type.otp and otp is not None:
            return await otp.rewrap(request, name, data)  # type: ignore[attr-defined, no-any-return]
        batch = _batch(data, rt.settings.max_batch_items)
        if batch is None:
            result = await rt.transit.rewrap(name, [_decrypt_item(data)], data.key_version)
            return ok(_encrypted(_single(result[0])))
        results = await rt.transit.rewrap(name, [_decrypt_item(i) for i in batch], data.key_version)
        return _batch_response(batch, [_encrypted(r) for r in results])

    @post("/datakey/{kind:str}/{name:str}", opt={OPERATION: "datakey"}, status_code=200)
    async def datakey(
        self, request: Request[Any, Any, Any], kind: str, name: str, data: DataKeyBody | None = None
    ) -> ASGIApp:
        if kind not in ("plaintext", "wrapped"):
            raise BadRequest("data key type must be 'plaintext' or 'wrapped'")
        rt = _runtime(request)
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
        count: int | None = None,
        source: str | None = None,
        data: RandomBody | None = None,
    ) -> ASGIApp:
        rt = _runtime(request)
        body = data or RandomBody()
        chosen = source or body.source or "platform"
        if chosen not in ("platform", "all"):
            raise BadRequest("source must be 'platform' or 'all' (both are the HSM here)")
        fmt = body.format or "base64"
        if fmt not in ("base64", "hex"):
            raise BadRequest("format must be 'base64' or 'hex'")
        raw = await rt.transit.random(count or body.bytes or 32)
        return ok({"random_bytes": raw.hex() if fmt == "hex" else b64encode(raw)})
