"""Vault Transit's export, backup and restore paths: refused by design, with a reason.

Keys are generated in the HSM, sensitive and never extractable, so there is no key material
to export, back up or restore through the API (back up the HSM token itself; see
docs/design.md). The paths exist so that Vault clients (hvac's ``export_key``,
``backup_key``, ``restore_key``) get a clear 400 instead of a 404 for an unknown path. The
one export Vault allows for any key, ``public-key`` of an asymmetric key, answers as in
Vault.
"""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from litestar import Controller, get, post
from litestar.params import FromPath

from api.call import CallParam, route
from api.documents import answers
from api.responses import Reply, ok
from api.schemas import ExportedKeys
from vault.errors import BadRequest
from vault.keys import Key, KeyVersion
from vault.signing import PublicKey

# Vault's export types (OpenBao 2.7's path_export.go).
EXPORT_TYPES = ("encryption-key", "signing-key", "hmac-key", "public-key", "certificate-chain")
NOT_EXPORTABLE = (
    "private key material is not exportable: keys are generated in the HSM and never leave it"
)
NO_BACKUP = (
    "backup is refused by design: key material never leaves the HSM, so a backup through "
    "the API could only be a copy of metadata (back up the HSM token instead)"
)
NO_RESTORE = (
    "restore is refused by design: keys are generated in the HSM and never imported "
    "(create a key instead)"
)
_ECHO = 64


def _versions(key: Key, version: str | None) -> list[KeyVersion]:
    """Every usable version, or the one the path names (``latest`` or a number)."""
    if version is None:
        return key.live_versions()
    if version == "latest":
        return [key.version_to_check(key.latest_version)]
    if not version.isascii() or not version.isdigit() or len(version) > 9:
        raise BadRequest("version does not exist or cannot be found")
    return [key.version_to_check(int(version))]


def _public_value(public: PublicKey) -> str:
    """As Vault exports it: Ed25519 as its raw 32 bytes in base64, others as PEM (without
    the final newline)."""
    if isinstance(public, ed25519.Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return base64.b64encode(raw).decode("ascii")
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem.decode("ascii").rstrip("\n")


class ExportController(Controller):
    path = "/v1/transit"

    @get(
        [
            "/export/{export_type:str}/{name:str}",
            "/export/{export_type:str}/{name:str}/{version:str}",
        ],
        opt=route("read"),
        responses=answers(ExportedKeys),
    )
    async def export_key(
        self,
        call: CallParam,
        export_type: FromPath[str],
        name: FromPath[str],
        version: FromPath[str | None] = None,
    ) -> Reply:
        if export_type not in EXPORT_TYPES:
            raise BadRequest(f"invalid export type: {export_type[:_ECHO]}")
        vault = call.vault
        key = await vault.registry.get(name)
        if export_type != "public-key":
            raise BadRequest(NOT_EXPORTABLE)
        if not key.type.asymmetric:
            raise BadRequest(f"key type {key.type.name} has no public key")
        versions = _versions(key, version)
        publics = await vault.signer.public_keys.of(versions)
        return ok(
            {
                "keys": {str(n): _public_value(p) for n, p in publics.items()},
                "name": key.name,
                "type": key.type.name,
            }
        )

    @get("/backup/{name:str}", opt=route("read"))
    async def backup_key(self, call: CallParam, name: FromPath[str]) -> Reply:
        await call.vault.registry.get(name)  # an unknown key is 404, as for any other path
        raise BadRequest(NO_BACKUP)

    @post(["/restore", "/restore/{name:str}"], opt=route("create"))
    async def restore_key(self, call: CallParam, name: FromPath[str | None] = None) -> Reply:
        raise BadRequest(NO_RESTORE)
