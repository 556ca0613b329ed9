"""Vault Transit paths added for full conformance, over HTTP against a real server: the
keyless ``hash``, ``hmac`` with every key type, and export/backup/restore refused by design."""

from __future__ import annotations

import base64
import uuid

import hvac
import hvac.exceptions
import pytest

from tests.conftest import Server, mint

pytestmark = pytest.mark.e2e

HELLO = base64.b64encode(b"hello world").decode()
SHA2_256 = "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
SHA2_512 = (
    "309ecc489c12d6eb4cc40f50c902f2b4d0ed77ee511a7c7a9bcd3ca86d4cd86f"
    "989dd35bc5ff499670da34255b45b0cfd830e81f605dcf7dc5542e93ae9cd76f"
)


def new_key(server: Server, type_name: str = "aes256-gcm96") -> str:
    name = f"conformance-{uuid.uuid4().hex[:10]}"
    with server.client("transit-conformance") as c:
        r = c.post(f"/v1/transit/keys/{name}", json={"type": type_name})
        assert r.status_code == 200, r.text
    return name


@pytest.fixture
def vault(server: Server, settings) -> hvac.Client:  # type: ignore[no-untyped-def]
    return hvac.Client(url=server.url, token=mint(settings, "transit-conformance"))


# -- hash -----------------------------------------------------------------------------------


def test_hash_as_openbao_answers(server: Server) -> None:
    with server.client("transit-conformance") as c:

        def answer(path: str, body: dict[str, object]) -> tuple[int, object]:
            r = c.post(f"/v1/transit/{path}", json=body)
            assert r.headers["content-type"] == "application/json"
            data = r.json()
            return r.status_code, data["data"]["sum"] if r.status_code == 200 else data

        assert answer("hash", {"input": HELLO}) == (200, SHA2_256)
        assert answer("hash", {"input": HELLO, "format": "base64"}) == (
            200,
            base64.b64encode(bytes.fromhex(SHA2_256)).decode(),
        )
        assert answer("hash/sha2-512", {"input": HELLO}) == (200, SHA2_512)
        # The path wins over the body.
        assert answer("hash/sha2-512", {"input": HELLO, "algorithm": "sha2-224"}) == (
            200,
            SHA2_512,
        )
        assert answer("hash", {"input": ""})[1] == (
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        )
        errors = [
            ("hash", {}, "input missing"),
            ("hash", {"input": None, "algorithm": "md5"}, "input missing"),
            (
                "hash",
                {"input": "aGk"},
                "unable to decode input as base64: illegal base64 data at input byte 0",
            ),
            (
                "hash",
                {"input": HELLO, "algorithm": "md5", "format": "bin"},
                'unsupported encoding format bin; must be "hex" or "base64"',
            ),
            ("hash/md5", {"input": HELLO}, "unsupported algorithm md5"),
            ("hash/sha2-256/extra", {"input": HELLO}, "unsupported algorithm sha2-256/extra"),
            ("hash", {"input": HELLO, "algorithm": ""}, "unsupported algorithm "),
            ("hash", {"batch_input": [{"input": HELLO}]}, "input missing"),
        ]
        for path, body, message in errors:
            assert answer(path, body) == (400, {"errors": [message]}), (path, body)
        assert c.put("/v1/transit/hash", json={"input": HELLO}).json()["data"]["sum"] == SHA2_256
        assert c.get("/v1/transit/hash").status_code == 405


def test_hash_needs_the_hash_grant(server: Server) -> None:
    with server.client(None) as anonymous:
        assert anonymous.post("/v1/transit/hash", json={"input": HELLO}).status_code == 401
    with server.client("payout-gateway") as c:  # no "hash" grant
        assert c.post("/v1/transit/hash", json={"input": HELLO}).status_code == 403


def test_hvac_hash_data(vault: hvac.Client) -> None:
    transit = vault.secrets.transit
    assert transit.hash_data(hash_input=HELLO)["data"]["sum"] == SHA2_256
    assert transit.hash_data(hash_input=HELLO, algorithm="sha2-512")["data"]["sum"] == SHA2_512
    answer = transit.hash_data(hash_input=HELLO, algorithm="sha2-256", output_format="base64")
    assert base64.b64decode(answer["data"]["sum"]) == bytes.fromhex(SHA2_256)


# -- hmac with every key type ---------------------------------------------------------------


def test_hvac_generate_hmac_with_an_aes_key(server: Server, vault: hvac.Client) -> None:
    name = new_key(server)
    transit = vault.secrets.transit
    mac = transit.generate_hmac(name=name, hash_input=HELLO)["data"]["hmac"]
    assert mac.startswith("vault:v1:")
    assert len(base64.b64decode(mac.split(":")[2])) == 32
    assert transit.verify_signed_data(name=name, hash_input=HELLO, hmac=mac)["data"]["valid"]
    other = base64.b64encode(b"hello worle").decode()
    assert not transit.verify_signed_data(name=name, hash_input=other, hmac=mac)["data"]["valid"]
    long_mac = transit.generate_hmac(name=name, hash_input=HELLO, algorithm="sha2-512")
    assert len(base64.b64decode(long_mac["data"]["hmac"].split(":")[2])) == 64
    # After a rotation the new version MACs, and the old MAC still verifies.
    transit.rotate_key(name=name)
    assert transit.generate_hmac(name=name, hash_input=HELLO)["data"]["hmac"].startswith(
        "vault:v2:"
    )
    assert transit.verify_signed_data(name=name, hash_input=HELLO, hmac=mac)["data"]["valid"]


@pytest.mark.parametrize("type_name", ["ecdsa-p256", "ed25519", "rsa-3072", "hmac"])
def test_hmac_with_other_key_types(server: Server, type_name: str) -> None:
    name = new_key(server, type_name)
    with server.client("transit-conformance") as c:
        r = c.post(f"/v1/transit/hmac/{name}/sha2-384", json={"input": HELLO})
        assert r.status_code == 200, r.text
        assert set(r.json()["data"]) == {"hmac"}  # as Vault: no key_version field
        mac = r.json()["data"]["hmac"]
        assert len(base64.b64decode(mac.split(":")[2])) == 48
        valid = c.post(
            f"/v1/transit/verify/{name}/sha2-384", json={"input": HELLO, "hmac": mac}
        ).json()["data"]["valid"]
        assert valid is True
        wrong = c.post(f"/v1/transit/verify/{name}", json={"input": HELLO, "hmac": mac})
        assert wrong.json()["data"]["valid"] is False  # sha2-256 of the same input differs


# -- export, backup, restore: refused by design ---------------------------------------------


def test_export_backup_and_restore_are_refused_with_a_reason(server: Server) -> None:
    name = new_key(server)
    with server.client("transit-conformance") as c:
        for path in (
            f"export/encryption-key/{name}",
            f"export/encryption-key/{name}/1",
            f"export/hmac-key/{name}/latest",
            f"export/signing-key/{name}",
        ):
            r = c.get(f"/v1/transit/{path}")
            assert r.status_code == 400, path
            assert "not exportable" in r.json()["errors"][0]
            assert "HSM" in r.json()["errors"][0]
        r = c.get(f"/v1/transit/export/bogus/{name}")
        assert (r.status_code, r.json()) == (400, {"errors": ["invalid export type: bogus"]})
        missing = f"conformance-{uuid.uuid4().hex[:10]}"
        assert c.get(f"/v1/transit/export/encryption-key/{missing}").status_code == 404
        r = c.get(f"/v1/transit/backup/{name}")
        assert r.status_code == 400
        assert r.json()["errors"][0].startswith("backup is refused by design")
        assert c.get(f"/v1/transit/backup/{missing}").status_code == 404
        for path in ("restore", f"restore/{missing}"):
            r = c.post(f"/v1/transit/{path}", json={"backup": "e30="})
            assert r.status_code == 400
            assert r.json()["errors"][0].startswith("restore is refused by design")
        assert c.get("/v1/transit/restore").status_code == 405
    with server.client("backup-service") as c:  # no read grant on the key
        assert c.get(f"/v1/transit/backup/{name}").status_code == 403


def test_public_keys_export_as_in_vault(server: Server) -> None:
    ec_key, ed_key = new_key(server, "ecdsa-p256"), new_key(server, "ed25519")
    with server.client("transit-conformance") as c:
        c.post(f"/v1/transit/keys/{ec_key}/rotate")
        data = c.get(f"/v1/transit/export/public-key/{ec_key}").json()["data"]
        assert data["name"] == ec_key
        assert data["type"] == "ecdsa-p256"
        assert sorted(data["keys"]) == ["1", "2"]
        assert data["keys"]["1"].startswith("-----BEGIN PUBLIC KEY-----\n")
        assert data["keys"]["1"].endswith("-----END PUBLIC KEY-----")
        info = c.get(f"/v1/transit/keys/{ec_key}").json()["data"]["keys"]
        assert info["2"]["public_key"].rstrip("\n") == data["keys"]["2"]
        latest = c.get(f"/v1/transit/export/public-key/{ec_key}/latest").json()["data"]
        assert list(latest["keys"]) == ["2"]
        ed = c.get(f"/v1/transit/export/public-key/{ed_key}/1").json()["data"]["keys"]["1"]
        assert len(base64.b64decode(ed)) == 32
        aes = new_key(server)
        r = c.get(f"/v1/transit/export/public-key/{aes}")
        assert (r.status_code, r.json()) == (
            400,
            {"errors": ["key type aes256-gcm96 has no public key"]},
        )
        assert c.get(f"/v1/transit/export/public-key/{ec_key}/9").status_code == 400


def test_hvac_export_backup_restore_get_proper_errors(server: Server, vault: hvac.Client) -> None:
    name = new_key(server)
    transit = vault.secrets.transit
    with pytest.raises(hvac.exceptions.InvalidRequest, match="not exportable"):
        transit.export_key(name=name, key_type="encryption-key")
    with pytest.raises(hvac.exceptions.InvalidRequest, match="backup is refused by design"):
        transit.backup_key(name=name)
    with pytest.raises(hvac.exceptions.InvalidRequest, match="restore is refused by design"):
        transit.restore_key(backup="e30=", name=f"conformance-{uuid.uuid4().hex[:10]}")
    with pytest.raises(hvac.exceptions.InvalidRequest, match="never exportable"):
        transit.update_key_configuration(name=name, exportable=True)
