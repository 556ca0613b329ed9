"""Transit semantics over HTTP, as OpenBao answers them (docs/transit-reference.md)."""

from __future__ import annotations

import base64
import uuid

import pytest

from tests.conftest import Server

pytestmark = pytest.mark.e2e


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def key(server: Server) -> str:
    name = f"conformance-{uuid.uuid4().hex[:10]}"
    with server.client("transit-conformance") as c:
        assert c.post(f"/v1/transit/keys/{name}", json={}).status_code == 200
    return name


def test_tampering_of_any_kind_is_one_400(server: Server, key: str) -> None:
    with server.client("transit-conformance") as c:
        ct = c.post(
            f"/v1/transit/encrypt/{key}",
            json={"plaintext": b64(b"x"), "associated_data": b64(b"ad")},
        ).json()["data"]["ciphertext"]
        other = f"conformance-{uuid.uuid4().hex[:10]}"
        c.post(f"/v1/transit/keys/{other}", json={})
        prefix, _, body = ct.rpartition(":")
        flipped = bytearray(base64.b64decode(body))
        flipped[-1] ^= 1
        attempts = [
            (key, {"ciphertext": f"{prefix}:{b64(bytes(flipped))}", "associated_data": b64(b"ad")}),
            (key, {"ciphertext": ct, "associated_data": b64(b"other")}),
            (key, {"ciphertext": ct}),
            (other, {"ciphertext": ct, "associated_data": b64(b"ad")}),
            (key, {"ciphertext": "vault:v1:not*base64", "associated_data": b64(b"ad")}),
        ]
        bodies = []
        for name, body_json in attempts:
            r = c.post(f"/v1/transit/decrypt/{name}", json=body_json)
            assert r.status_code == 400, r.text
            assert r.headers["content-type"] == "application/json"
            bodies.append(r.json())
        assert all(b == bodies[0] for b in bodies), bodies
        # A version the key does not have is a 400 that says so.
        r = c.post(
            f"/v1/transit/decrypt/{key}",
            json={
                "ciphertext": ct.replace("vault:v1:", "vault:v7:"),
                "associated_data": b64(b"ad"),
            },
        )
        assert (r.status_code, r.json()) == (400, {"errors": ["key version 7 does not exist"]})


def test_below_min_decryption_version_is_a_400(server: Server, key: str) -> None:
    with server.client("transit-conformance") as c:
        ct = c.post(f"/v1/transit/encrypt/{key}", json={"plaintext": b64(b"x")}).json()["data"][
            "ciphertext"
        ]
        c.post(f"/v1/transit/keys/{key}/rotate")
        assert (
            c.post(f"/v1/transit/keys/{key}/config", json={"min_decryption_version": 2}).status_code
            == 200
        )
        r = c.post(f"/v1/transit/decrypt/{key}", json={"ciphertext": ct})
        assert r.status_code == 400
        assert r.json() == {"errors": ["key version 1 is below min_decryption_version (too old)"]}
        info = c.get(f"/v1/transit/keys/{key}").json()["data"]
        assert list(info["keys"]) == ["2"]


def test_batch_rules(server: Server, key: str) -> None:
    with server.client("transit-conformance") as c:
        good = c.post(
            f"/v1/transit/encrypt/{key}",
            json={
                "plaintext": None,
                "batch_input": [
                    {"plaintext": b64(b"1"), "reference": "a"},
                    {"plaintext": b64(b"2")},
                ],
            },
        )
        assert good.status_code == 200
        results = good.json()["data"]["batch_results"]
        assert [r["reference"] for r in results] == ["a", ""]
        mixed = c.post(
            f"/v1/transit/decrypt/{key}",
            json={
                "batch_input": [
                    {"ciphertext": results[0]["ciphertext"]},
                    {"ciphertext": "vault:v1:AAAA", "reference": "bad"},
                ]
            },
        )
        assert mixed.status_code == 400  # Vault: any failed item fails an encrypt/decrypt batch
        items = mixed.json()["data"]["batch_results"]
        assert base64.b64decode(items[0]["plaintext"]) == b"1"
        assert items[1] == {
            "plaintext": "",
            "error": "invalid ciphertext: message authentication failed",
            "reference": "bad",
        }
        partial = c.post(
            f"/v1/transit/decrypt/{key}",
            json={
                "partial_failure_response_code": 207,
                "batch_input": [{"ciphertext": results[0]["ciphertext"]}, {"ciphertext": "nope"}],
            },
        )
        assert partial.status_code == 207
        rewrap = c.post(f"/v1/transit/rewrap/{key}", json={"batch_input": [{"ciphertext": "nope"}]})
        assert rewrap.status_code == 200  # rewrap batches are always 200
        assert "error" in rewrap.json()["data"]["batch_results"][0]
        empty = c.post(f"/v1/transit/encrypt/{key}", json={"batch_input": []})
        assert empty.status_code == 400


def test_a_batch_shares_one_data_key_and_each_item_decrypts_alone(server: Server, key: str) -> None:
    """Format 0x02 over HTTP: Vault's batch shape, references echoed, per-item associated
    data, and every item decryptable on its own or in a batch in another order."""
    plaintexts = [f"item {i}".encode() for i in range(5)]
    ads = [b"user-1", b"user-1", b"user-2", b"", b"user-1"]
    batch = []
    for i, (p, ad) in enumerate(zip(plaintexts, ads, strict=True)):
        item: dict[str, object] = {"plaintext": b64(p), "reference": f"r{i}"}
        if ad:
            item["associated_data"] = b64(ad)
        batch.append(item)
    with server.client("transit-conformance") as c:
        r = c.post(f"/v1/transit/encrypt/{key}", json={"batch_input": batch})
        assert r.status_code == 200, r.text
        results = r.json()["data"]["batch_results"]
        assert [sorted(x) for x in results] == [["ciphertext", "key_version", "reference"]] * 5
        assert [x["reference"] for x in results] == [f"r{i}" for i in range(5)]
        blobs = [base64.b64decode(x["ciphertext"].split(":")[2]) for x in results]
        assert {b[0] for b in blobs} == {0x02}
        assert len({b[1:61] for b in blobs}) == 1  # one wrapped data key for the batch
        for x, p, ad in zip(results, plaintexts, ads, strict=True):
            one = c.post(
                f"/v1/transit/decrypt/{key}",
                json={"ciphertext": x["ciphertext"], "associated_data": b64(ad)},
            )
            assert one.status_code == 200, one.text
            assert base64.b64decode(one.json()["data"]["plaintext"]) == p
        order = [4, 2, 0, 3, 1]
        back = c.post(
            f"/v1/transit/decrypt/{key}",
            json={
                "batch_input": [
                    {"ciphertext": results[i]["ciphertext"], "associated_data": b64(ads[i])}
                    for i in order
                ]
            },
        )
        assert back.status_code == 200, back.text
        got = back.json()["data"]["batch_results"]
        assert [base64.b64decode(x["plaintext"]) for x in got] == [plaintexts[i] for i in order]
        swapped = c.post(  # item 0's ciphertext with item 2's associated data
            f"/v1/transit/decrypt/{key}",
            json={"ciphertext": results[0]["ciphertext"], "associated_data": b64(ads[2])},
        )
        assert swapped.status_code == 400
        assert swapped.json() == {"errors": ["invalid ciphertext: message authentication failed"]}


def test_encrypt_creates_a_missing_key_for_a_caller_that_may_create(server: Server) -> None:
    name = f"conformance-{uuid.uuid4().hex[:10]}"
    with server.client("transit-conformance") as c:
        assert (
            c.post(f"/v1/transit/encrypt/{name}", json={"plaintext": b64(b"x")}).status_code == 200
        )
        assert c.get(f"/v1/transit/keys/{name}").json()["data"]["type"] == "aes256-gcm96"
    with server.client("identity-service") as c:  # may encrypt backup-share, may not create
        r = c.post(f"/v1/transit/encrypt/{name}", json={"plaintext": b64(b"x")})
        assert r.status_code == 403


def test_unknown_key_is_404(server: Server) -> None:
    with server.client("transit-conformance") as c:
        r = c.post(
            f"/v1/transit/decrypt/conformance-{uuid.uuid4().hex}",
            json={"ciphertext": "vault:v1:AAAA"},
        )
        assert r.status_code == 404
        assert r.json()["errors"]


def test_datakey_and_random(server: Server, key: str) -> None:
    with server.client("transit-conformance") as c:
        for bits in (128, 256, 512):
            data = c.post(f"/v1/transit/datakey/plaintext/{key}", json={"bits": bits}).json()[
                "data"
            ]
            assert len(base64.b64decode(data["plaintext"])) == bits // 8
        assert c.post(f"/v1/transit/datakey/plaintext/{key}", json={"bits": 100}).status_code == 400
        # An unknown data-key kind is an operation no policy grants: refused before anything.
        assert c.post(f"/v1/transit/datakey/other/{key}", json={}).status_code == 403
        assert (
            len(
                bytes.fromhex(
                    c.post("/v1/transit/random/16", json={"format": "hex"}).json()["data"][
                        "random_bytes"
                    ]
                )
            )
            == 16
        )
        assert c.post("/v1/transit/random", json={"bytes": 0}).status_code == 400
        assert c.post("/v1/transit/random", json={"bytes": 131073}).status_code == 400


def test_key_management_shapes(server: Server, key: str) -> None:
    with server.client("transit-conformance") as c:
        info = c.get(f"/v1/transit/keys/{key}").json()
        assert set(info) >= {"request_id", "data", "lease_id", "renewable", "lease_duration"}
        assert info["data"]["exportable"] is False
        assert c.request("LIST", "/v1/transit/keys").json()["data"]["keys"]
        assert c.get("/v1/transit/keys", params={"list": "true"}).status_code == 200
        assert c.delete(f"/v1/transit/keys/{key}").status_code == 400  # deletion not allowed yet
        c.post(f"/v1/transit/keys/{key}/config", json={"deletion_allowed": True})
        deleted = c.delete(f"/v1/transit/keys/{key}")
        assert deleted.status_code == 204
        assert c.get(f"/v1/transit/keys/{key}").status_code == 404
        assert c.post(f"/v1/transit/keys/{key}", json={"exportable": True}).status_code == 400
        bad = c.post(f"/v1/transit/keys/{key}x/config", json={"min_decryption_version": "abc"})
        assert bad.status_code == 400
        assert "Traceback" not in bad.text


def test_malformed_bodies_are_400_without_internals(server: Server, key: str) -> None:
    with server.client("transit-conformance") as c:
        for content in (b"{", b"[1,2]", b'{"plaintext": 5}', b'{"batch_input": "x"}'):
            r = c.post(
                f"/v1/transit/encrypt/{key}",
                content=content,
                headers={"content-type": "application/json"},
            )
            assert r.status_code == 400, (content, r.text)
            assert "errors" in r.json()
            assert "Traceback" not in r.text
            assert "/site-packages/" not in r.text


def test_openapi_is_served_to_authenticated_services(server: Server) -> None:
    with server.client(None) as c:
        assert c.get("/v1/sys/openapi/openapi.json").status_code == 401
    with server.client("identity-service") as c:
        r = c.get("/v1/sys/openapi/openapi.json")
        assert r.status_code == 200
        assert "/v1/transit/encrypt/{name}" in r.json()["paths"]
