"""TLS as a listener option, and mutual TLS: the client certificate's subject must name the
token's service (a stolen token is useless without the service's certificate)."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.certs import issue
from tests.conftest import Server
from tests.e2e.trust_support import b64, headers, record_of, share_ad, token

pytestmark = [pytest.mark.e2e, pytest.mark.first_pass_only]  # TLS: any database
ENCRYPT = "/v1/transit/encrypt/backup-share"
BODY = {"plaintext": b64(b"x"), "associated_data": share_ad("u-tls")}


def _write(directory: Path, name: str, cert: x509.Certificate, key: Any) -> tuple[str, str]:
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory = tmp_path_factory.mktemp("pki")
    ca_cert, ca_key = issue("hsm-vault test CA", ca=True)
    ca_path = directory / "ca.pem"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    made: dict[str, Any] = {"ca": str(ca_path)}
    for name in ("127.0.0.1", "backup-service", "identity-service"):
        cert, key = issue(name, (ca_cert.subject, ca_key), ip="127.0.0.1")
        made[name] = _write(directory, name.replace(".", "_"), cert, key)
    return made


def _context(pki: dict[str, Any], client: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki["ca"])
    if client is not None:
        context.load_cert_chain(*pki[client])
    return context


def test_tls_listener(settings, pki) -> None:  # type: ignore[no-untyped-def]
    cert, key = pki["127.0.0.1"]
    server = Server(
        settings,
        env={"VAULT_TLS_CERT": cert, "VAULT_TLS_KEY": key},
        tls={"verify": _context(pki, None)},
    )
    try:
        with server.client("backup-service") as c:
            assert c.post(ENCRYPT, json=BODY).status_code == 200
        with pytest.raises(httpx.HTTPError):  # no plain HTTP beside it
            httpx.get(server.url.replace("https", "http") + "/v1/sys/health", timeout=5)
    finally:
        server.stop()


def test_mutual_tls_binds_the_certificate_to_the_tokens_service(settings, pki) -> None:  # type: ignore[no-untyped-def]
    cert, key = pki["127.0.0.1"]
    env = {"VAULT_TLS_CERT": cert, "VAULT_TLS_KEY": key, "VAULT_TLS_CLIENT_CA": pki["ca"]}
    server = Server(settings, env=env, tls={"verify": _context(pki, "backup-service")})
    try:
        presented = headers(token(settings, "backup-service"))

        def post(client: str | None) -> httpx.Response:
            with httpx.Client(verify=_context(pki, client), timeout=10) as c:
                return c.post(f"{server.url}{ENCRYPT}", json=BODY, headers=presented)

        assert post("backup-service").status_code == 200
        stolen = post("identity-service")  # the token, with another service's certificate
        assert stolen.status_code == 401
        # The caller learns no more than for a bad signature; the audit trail says why.
        assert stolen.json()["errors"] == ["token signature or claims invalid"]
        record = record_of(settings.database_url, stolen, wait=2.0)
        assert (record["status"], record["claimed_service"]) == (401, "backup-service")
        assert "client certificate" in record["reason"]
        with pytest.raises(httpx.HTTPError):  # no certificate: no connection
            post(None).raise_for_status()
        with server.client(None) as c:  # LIST, which hvac sends, passes this server too
            assert c.request("LIST", "/v1/transit/keys").status_code == 401
    finally:
        server.stop()
