"""``/v1/transit/...``: Vault Transit's paths, fields and shapes over the vault's keys."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
from cryptography.hazmat.primitives import serialization
from litestar import Controller, delete, get, post
from litestar.params import FromPath, JSONBody

from api.call import Call, CallParam, route
from api.documents import answers
from api.errors import PARTIAL_FAILURE_STATUSES
from api.responses import Reply, ok
from api.schemas import (
    BatchItem,
    BatchResults,
    ConfigKey,
    CreateKey,
    DataKey,
    DataKeyBody,
    EncryptBody,
    Encrypted,
    HashBody,
    HashSum,
    KeyInfo,
    KeyNames,
    Plaintext,
    RandomBody,
    RandomBytes,
    TrimKey,
)
from hsm import HsmOps
from vault.approvals import Authority
from vault.encoding import b64decode, b64encode
from vault.envelope import EncryptItem
from vault.errors import BadRequest, NotFound, VaultError
from vault.hashing import hash_sum
from vault.keys import Key, validate_name
from vault.keytypes import Purpose, key_type
from vault.otp.service import SEEDS_NOT_REWRAPPABLE
from vault.runtime import Vault
from vault.transit import DecryptItem
from vault.transit import Encrypted as EncryptedItem

_EMPTY = b""
_ASYMMETRIC_NAMES = {"ecdsa-p256": "P-256", "ed25519": "ed25519", "rsa-3072": "rsa-3072"}
REVERTING = (
    "invalid HTTP response code override from partial_failure_response_code, reverting to 400"
)


def _rfc3339(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


async def key_view(vault: Vault, key: Key) -> dict[str, Any]:
    """Vault's key info. Only versions that can still decrypt (or verify) are listed."""
    kind = key.type
    live = {v.version: v for v in key.live_versions()}
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

        ders = await vault.hsm.run(job)
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
            "min_available_version": key.min_available_version,
            "min_decryption_version": key.min_decryption_version,
            "min_encryption_version": key.min_encryption_version,
            "name": key.name,
            "purpose": key.purpose.value,
            "supports_decryption": kind.encryption,
            "supports_derivation": False,
            "supports_encryption": kind.encryption,
            "supports_signing": key.purpose is Purpose.SIGNING,
            "type": kind.name,
        }
    )
    return view


def authority(call: Call) -> Authority:
    """The calling service as the author of a key change, with the approval it presents
    (``X-Vault-Approval``); a dev service with ``dual_control = false`` needs none."""
    service = call.caller.service
    return Authority(f"service:{service.name}", call.approval, exempt=not service.dual_control)


def _decoded(value: str | msgspec.UnsetType | None, field: str) -> bytes:
    return b64decode(value, field) if isinstance(value, str) else _EMPTY


class _AssociatedData:
    """The ``associated_data`` of one request's items, each distinct value decoded once (the
    items of a batch usually share theirs: one user, one public key)."""

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: dict[str, bytes] = {}

    def __call__(self, value: str | None) -> bytes:
        if not isinstance(value, str):
            return _EMPTY
        decoded = self._seen.get(value)
        if decoded is None:
            decoded = self._seen[value] = b64decode(value, "associated_data")
        return decoded


def _encrypt_item(
    item: BatchItem | EncryptBody, single: bool = False, ad: _AssociatedData | None = None
) -> EncryptItem | VaultError:
    # Vault: a single request's ``"plaintext": null`` is the empty message; a batch item
    # without plaintext is an error.
    if item.plaintext is None and not single:  # a batch item without plaintext
        return BadRequest("missing plaintext to encrypt")
    try:
        return EncryptItem(
            _decoded(item.plaintext, "plaintext"),
            (ad or _AssociatedData())(item.associated_data),
            item.key_version,
        )
    except VaultError as exc:
        return exc


def _decrypt_item(
    item: BatchItem | EncryptBody, ad: _AssociatedData | None = None
) -> DecryptItem | VaultError:
    if not item.ciphertext:
        return BadRequest("missing ciphertext to decrypt")
    try:
        return DecryptItem(
            item.ciphertext, (ad or _AssociatedData())(item.associated_data), item.key_version
        )
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


def _batch_reply(
    call: Call,
    items: list[BatchItem],
    results: list[dict[str, Any]],
    *,
    failures_fail: bool,
    partial: int | None = None,
    secret: bool = False,
) -> Reply:
    """Vault's batch rules: ``reference`` always echoed; for encrypt and decrypt, any failed
    item makes the reply 400, or ``partial_failure_response_code`` when some succeeded (a
    code outside 2xx/4xx/5xx, or one that cannot carry a body, reverts to 400 with a
    warning, as Vault does)."""
    failed = 0
    for item, result in zip(items, results, strict=True):
        result["reference"] = item.reference or ""
        failed += "error" in result
    call.items = len(results) - failed
    status = 200
    warnings = None
    if failures_fail and failed:
        status = 400
        if partial is not None and failed < len(results):
            if partial in PARTIAL_FAILURE_STATUSES:
                status = partial
            else:
                warnings = [REVERTING]
    return ok({"batch_results": results}, status=status, secret=secret, warnings=warnings)


def _single(result: Any) -> Any:
    if isinstance(result, VaultError):
        raise result
    return result


def _encrypted(result: EncryptedItem | VaultError) -> dict[str, Any]:
    if isinstance(result, VaultError):
        return {"error": str(result)}
    return {"ciphertext": result.ciphertext, "key_version": result.key_version}


def _plaintext(result: bytes | VaultError) -> dict[str, Any]:
    if isinstance(result, VaultError):
        return {"plaintext": "", "error": str(result)}
    return {"plaintext": b64encode(result)}


def _used_version(call: Call, results: list[Any]) -> None:
    versions = {r.key_version for r in results if isinstance(r, EncryptedItem)}
    if len(versions) == 1:
        call.key_version = versions.pop()


async def _key_or_upsert(call: Call, name: str, type_name: str | None) -> None:
    """Vault creates a missing key on encrypt for a caller that may also create keys."""
    vault = call.vault
    try:
        await vault.registry.get(name)
    except NotFound:
        if not call.caller.service.allows("create", name):
            raise
        kind = type_name or "aes256-gcm96"
        if not key_type(kind).encryption:
            raise BadRequest(f"unknown key type {kind}") from None
        await vault.registry.call(vault.registry.create_sync, name, kind, by=authority(call))


class TransitController(Controller):
    path = "/v1/transit"

    # -- keys ------------------------------------------------------------------------------

    @post("/keys/{name:str}", opt=route("create"), responses=answers(KeyInfo))
    async def create_key(
        self, call: CallParam, name: FromPath[str], data: JSONBody[CreateKey | None] = None
    ) -> Reply:
        vault = call.vault
        body = data or CreateKey()
        if body.exportable or body.allow_plaintext_backup:
            raise BadRequest("keys in this vault are never exportable")
        if body.derived or body.convergent_encryption:
            raise BadRequest("derived and convergent keys are not supported")
        validate_name(name)
        key, _ = await vault.registry.call(
            vault.registry.create_sync,
            name,
            body.type or "aes256-gcm96",
            body.auto_rotate_period or 0,
            body.purpose,
            by=authority(call),
        )
        return ok(await key_view(vault, key))

    @get("/keys/{name:str}", opt=route("read"), responses=answers(KeyInfo))
    async def read_key(self, call: CallParam, name: FromPath[str]) -> Reply:
        vault = call.vault
        vault.registry.invalidate(name)
        return ok(await key_view(vault, await vault.registry.get(name)))

    @get("/keys", opt=route("list", key=None), responses=answers(KeyNames))
    async def list_keys(self, call: CallParam) -> Reply:
        service = call.caller.service
        names = [n for n in await call.vault.registry.names() if service.allows("list", n)]
        if not names:
            raise NotFound("no keys")
        return ok({"keys": names})

    @post("/keys/{name:str}/rotate", opt=route("rotate"), responses=answers(KeyInfo))
    async def rotate_key(self, call: CallParam, name: FromPath[str]) -> Reply:
        vault = call.vault
        key = await vault.registry.call(vault.registry.rotate_sync, name, by=authority(call))
        call.key_version = key.latest_version
        return ok(await key_view(vault, key))

    @post("/keys/{name:str}/config", opt=route("config"), responses=answers(KeyInfo))
    async def configure_key(
        self, call: CallParam, name: FromPath[str], data: JSONBody[ConfigKey | None] = None
    ) -> Reply:
        vault = call.vault
        body = data or ConfigKey()
        if body.exportable or body.allow_plaintext_backup:
            raise BadRequest("keys in this vault are never exportable")
        key = await vault.registry.call(
            vault.registry.configure_sync,
            name,
            min_decryption_version=body.min_decryption_version,
            min_encryption_version=body.min_encryption_version,
            deletion_allowed=body.deletion_allowed,
            auto_rotate_period=body.auto_rotate_period,
            by=authority(call),
        )
        return ok(await key_view(vault, key))

    @post("/keys/{name:str}/trim", opt=route("trim"), responses=answers(KeyInfo))
    async def trim_key(
        self, call: CallParam, name: FromPath[str], data: JSONBody[TrimKey | None] = None
    ) -> Reply:
        """Vault's trim: destroy the versions below ``min_available_version`` (their HSM
        objects too). Needs two officers' approval (``X-Vault-Approval``)."""
        vault = call.vault
        body = data or TrimKey()
        try:
            key, _ = await vault.registry.call(
                vault.registry.trim_sync, name, body.min_available_version, by=authority(call)
            )
        except NotFound:
            # Vault answers an unknown key's trim with 400 "invalid key name" (not 404).
            raise BadRequest("invalid key name") from None
        return ok(await key_view(vault, key))

    @delete("/keys/{name:str}", opt=route("delete"), status_code=204)
    async def delete_key(self, call: CallParam, name: FromPath[str]) -> None:
        """Needs ``deletion_allowed`` and two officers' approval (``X-Vault-Approval``)."""
        vault = call.vault
        await vault.registry.call(vault.registry.delete_sync, name, by=authority(call))

    # -- encryption ------------------------------------------------------------------------

    @post(
        "/encrypt/{name:str}",
        opt=route("encrypt"),
        responses=answers(Encrypted, BatchResults, batch_statuses=True),
    )
    async def encrypt(
        self, call: CallParam, name: FromPath[str], data: JSONBody[EncryptBody | None] = None
    ) -> Reply:
        if data is None:
            raise BadRequest("missing plaintext to encrypt")
        vault = call.vault
        batch = _batch(data, vault.settings.max_batch_items)
        if batch is None and data.plaintext is msgspec.UNSET:
            raise BadRequest("missing plaintext to encrypt")
        await _key_or_upsert(call, name, data.type)
        if batch is None:
            one = await vault.transit.encrypt(
                name, [_encrypt_item(data, single=True)], data.key_version
            )
            _used_version(call, one)
            return ok(_encrypted(_single(one[0])))
        ad = _AssociatedData()
        results = await vault.transit.encrypt(
            name, [_encrypt_item(i, ad=ad) for i in batch], data.key_version
        )
        _used_version(call, results)
        return _batch_reply(
            call,
            batch,
            [_encrypted(r) for r in results],
            failures_fail=True,
            partial=data.partial_failure_response_code,
        )

    @post(
        "/decrypt/{name:str}",
        opt=route("decrypt"),
        responses=answers(Plaintext, BatchResults, batch_statuses=True),
    )
    async def decrypt(
        self, call: CallParam, name: FromPath[str], data: JSONBody[EncryptBody | None] = None
    ) -> Reply:
        if data is None:
            raise BadRequest("missing ciphertext to decrypt")
        vault = call.vault
        batch = _batch(data, vault.settings.max_batch_items)
        if batch is None:
            result = await vault.transit.decrypt(name, [_decrypt_item(data)])
            return ok({"plaintext": b64encode(_single(result[0]))}, secret=True)
        ad = _AssociatedData()
        results = await vault.transit.decrypt(name, [_decrypt_item(i, ad) for i in batch])
        return _batch_reply(
            call,
            batch,
            [_plaintext(r) for r in results],
            failures_fail=True,
            partial=data.partial_failure_response_code,
            secret=True,
        )

    @post("/rewrap/{name:str}", opt=route("rewrap"), responses=answers(Encrypted, BatchResults))
    async def rewrap(
        self, call: CallParam, name: FromPath[str], data: JSONBody[EncryptBody | None] = None
    ) -> Reply:
        if data is None:
            raise BadRequest("missing ciphertext to decrypt")
        vault = call.vault
        key = await vault.registry.get(name)
        if key.type.otp:
            raise BadRequest(SEEDS_NOT_REWRAPPABLE)
        batch = _batch(data, vault.settings.max_batch_items)
        if batch is None:
            result = await vault.transit.rewrap(name, [_decrypt_item(data)], data.key_version)
            _used_version(call, result)
            return ok(_encrypted(_single(result[0])))
        ad = _AssociatedData()
        items = [_decrypt_item(i, ad) for i in batch]
        results = await vault.transit.rewrap(name, items, data.key_version)
        _used_version(call, results)
        return _batch_reply(call, batch, [_encrypted(r) for r in results], failures_fail=False)

    @post("/datakey/{kind:str}/{name:str}", opt=route("datakey:{kind}"), responses=answers(DataKey))
    async def datakey(
        self,
        call: CallParam,
        kind: FromPath[str],
        name: FromPath[str],
        data: JSONBody[DataKeyBody | None] = None,
    ) -> Reply:
        if kind not in ("plaintext", "wrapped"):
            raise BadRequest("Invalid path, must be 'plaintext' or 'wrapped'")
        body = data or DataKeyBody()
        made = await call.vault.transit.datakey(
            name,
            body.bits or 256,
            _decoded(body.associated_data, "associated_data"),
            body.key_version,
        )
        call.key_version = made.key_version
        result: dict[str, Any] = {"ciphertext": made.ciphertext, "key_version": made.key_version}
        if kind == "plaintext":
            result["plaintext"] = b64encode(made.plaintext)
        # Both kinds: a route whose answer may carry a data key is never cached.
        return ok(result, secret=True)

    @post(
        ["/random", "/random/{count:int}", "/random/{source:str}/{count:int}"],
        opt=route("random", key=None),
        responses=answers(RandomBytes),
    )
    async def random(
        self,
        call: CallParam,
        count: FromPath[int | None] = None,
        source: FromPath[str | None] = None,
        data: JSONBody[RandomBody | None] = None,
    ) -> Reply:
        body = data or RandomBody()
        chosen = source or body.source or "platform"
        if chosen not in ("platform", "all"):
            raise BadRequest("source must be 'platform' or 'all' (both are the HSM here)")
        fmt = body.format or "base64"
        if fmt not in ("base64", "hex"):
            raise BadRequest("format must be 'base64' or 'hex'")
        raw = await call.vault.transit.random(
            count if count is not None else body.bytes if body.bytes is not None else 32
        )
        return ok({"random_bytes": raw.hex() if fmt == "hex" else b64encode(raw)}, secret=True)

    @post(
        ["/hash", "/hash/{algorithm:path}"],
        opt=route("hash", key=None),
        responses=answers(HashSum),
    )
    async def hash_data(
        self,
        call: CallParam,
        algorithm: FromPath[str | None] = None,
        data: JSONBody[HashBody | None] = None,
    ) -> Reply:
        """Vault's keyless hash; the algorithm in the path (all of the rest of it, slashes
        included, as in Vault) wins over the body's."""
        body = data or HashBody()
        chosen = algorithm.removeprefix("/") if algorithm else body.algorithm
        return ok({"sum": hash_sum(body.input, chosen, body.format)})
