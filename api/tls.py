"""Mutual TLS: hand the application the client's certificate (the ASGI TLS extension).

granian verifies client certificates (``ssl_ca``, ``ssl_client_verify``) but does not tell
the application which one a connection presented (emmett-framework/granian#788), and the
vault needs it: the certificate's subject must name the token's service
(``vault.auth``). With ``VAULT_TLS_CLIENT_CA`` set, ``hsm-vault serve`` runs uvicorn's h11
protocol (which, unlike httptools, takes Vault's ``LIST`` method) with this subclass, which
reads the verified peer certificate once per connection and puts it into every request's
scope as ``extensions.tls.client_cert_chain`` (PEM, leaf first), the form the extension
specifies.
"""

from __future__ import annotations

import ssl
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol


class ClientCertificateH11(H11Protocol):
    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("ssl_object")
        der = peer.getpeercert(binary_form=True) if peer is not None else None
        if der:
            self.app = _with_certificate(self.app, ssl.DER_cert_to_PEM_cert(der))


def _with_certificate(app: Any, pem: str) -> Any:
    tls = {
        "client_cert_chain": [pem],
        "client_cert_name": None,
        "client_cert_error": None,
        "tls_version": None,
        "cipher_suite": None,
        "server_cert": None,
    }

    async def with_certificate(scope: Any, receive: Any, send: Any) -> None:
        scope.setdefault("extensions", {})["tls"] = tls
        await app(scope, receive, send)

    return with_certificate
