"""The hvac client, unchanged, against a real server: what a Vault user would do."""

from __future__ import annotations

import base64
import uuid

import hvac
import hvac.exceptions
import pytest

from tests.conftest import Server, mint

pytestmark = pytest.mark.e2e


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def vault(server: Server, settings) -> hvac.Client:  # type: ignore[no-untyped-def]
    return hvac.Client(url=server.url, token=mint(settings, "transit-conformance"))


def test_hvac_key_lifecycle_and_envelope(vault: hvac.Client) -> None:
    transit = vault.secrets.transit
    name = f"conformance-{uuid.uuid4().hex[:12]}"
    transit.create_key(name=name)
    info = transit.read_key(name=name)["data"]
    assert info["type"] == "aes256-gcm96"
    assert info["latest_version"] == 1
    assert info["exportable"] is False
    assert name in transit.list_keys()["data"]["keys"]

    ad = b64(b"user-7|02ab")
    ct = transit.encrypt_data(name=name, plaintext=b64(b"share three"), associated_data=ad)["data"][
        "ciphertext"
    ]
    assert ct.startswith("vault:v1:")
    pt = transit.decrypt_data(name=name, ciphertext=ct, associated_data=ad)["data"]["plaintext"]
    assert base64.b64decode(pt) == b"share three"

    rotated = transit.rotate_key(name=name)
    assert rotated["data"]["latest_version"] == 2
    # hvac's rewrap_data has no associated_data argument; its batch items carry it.
    rewrapped = transit.rewrap_data(
        name=name, ciphertext=None, batch_input=[{"ciphertext": ct, "associated_data": ad}]
    )["data"]["batch_results"][0]["ciphertext"]
    assert rewrapped.startswith("vault:v2:")
    bare = transit.encrypt_data(name=name, plaintext=b64(b"no ad"), key_version=1)["data"][
        "ciphertext"
    ]
    assert bare.startswith("vault:v1:")
    assert transit.rewrap_data(name=name, ciphertext=bare)["data"]["ciphertext"].startswith(
        "vault:v2:"
    )
    assert (
        base64.b64decode(
            transit.decrypt_data(name=name, ciphertext=rewrapped, associated_data=ad)["data"][
                "plaintext"
            ]
        )
        == b"share three"
    )

    batch = transit.encrypt_data(
        name=name,
        plaintext=None,
        batch_input=[
            {"plaintext": b64(b"a"), "reference": "r1"},
            {"plaintext": b64(b"b"), "reference": "r2"},
        ],
    )["data"]["batch_results"]
    assert [r["reference"] for r in batch] == ["r1", "r2"]
    decrypted = transit.decrypt_data(
        name=name, ciphertext=None, batch_input=[{"ciphertext": r["ciphertext"]} for r in batch]
    )["data"]["batch_results"]
    assert [base64.b64decode(r["plaintext"]) for r in decrypted] == [b"a", b"b"]

    plain_key = transit.generate_data_key(name=name, key_type="plaintext", bits=256)["data"]
    assert len(base64.b64decode(plain_key["plaintext"])) == 32
    again = transit.decrypt_data(name=name, ciphertext=plain_key["ciphertext"])["data"]["plaintext"]
    assert again == plain_key["plaintext"]
    wrapped_key = transit.generate_data_key(name=name, key_type="wrapped", bits=512)["data"]
    assert "plaintext" not in wrapped_key

    configured = transit.update_key_configuration(
        name=name, min_decryption_version=2, deletion_allowed=True
    )
    assert configured["data"]["min_decryption_version"] == 2
    with pytest.raises(hvac.exceptions.InvalidRequest):
        transit.decrypt_data(name=name, ciphertext=ct, associated_data=ad)  # v1 is now too old

    transit.delete_key(name=name)
    with pytest.raises(hvac.exceptions.InvalidPath):
        transit.read_key(name=name)


def test_hvac_random_bytes_from_the_hsm(vault: hvac.Client) -> None:
    data = vault.secrets.transit.generate_random_bytes(n_bytes=48)["data"]
    assert len(base64.b64decode(data["random_bytes"])) == 48


def test_hvac_sees_errors(vault: hvac.Client, server: Server, settings) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(hvac.exceptions.Forbidden):
        vault.secrets.transit.read_key(name="backup-share")  # not a conformance-* key
    anonymous = hvac.Client(url=server.url, token="not-a-jwt")
    with pytest.raises(hvac.exceptions.Unauthorized):
        anonymous.secrets.transit.list_keys()
