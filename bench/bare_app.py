"""The framework ceiling: the vault's encrypt route with nothing behind it.

Same path, same JSON body decoded into a ``msgspec.Struct``, a Vault-shaped response through
``litestar.Response``; no authentication, no key lookup, no cryptography. bench/servers.py
serves it with the vault's own server settings (granian: 2 workers, uvloop, HTTP/1, no access
log) and, for comparison, with uvicorn as the vault was first served:

    granian --interface asgi --workers 2 --loop uvloop --http 1 --no-ws --backlog 4096 \
        --no-access-log bench.bare_app:app
    uvicorn bench.bare_app:app --workers 2 --loop uvloop --http httptools --no-access-log \
        --no-proxy-headers --no-server-header --no-date-header
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Litestar, Response, post


class EncryptRequest(msgspec.Struct):
    plaintext: str | None = None
    associated_data: str | None = None


@post("/v1/transit/encrypt/{name:str}", status_code=200)
async def encrypt(name: str, data: EncryptRequest) -> Response[dict[str, Any]]:
    ciphertext = f"vault:v1:{data.plaintext or ''}"
    return Response({"data": {"ciphertext": ciphertext, "key_version": 1}})


app = Litestar(route_handlers=[encrypt])
