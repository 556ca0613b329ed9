"""What each load test sends: the bodies, the headers, and what one request is worth."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import os
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec
import pyotp

from vault.bootstrap import load_dev_key, mint_token
from vault.config import Settings, load_settings

PLAINTEXT_BYTES = 1024
BATCH_ITEMS = 100
ASSOCIATED_DATA = b'{"pk":"bench-public-key","user_id":"user-1"}'  # canonical JSON: names a subject
INPUT_BYTES = 64
SKIP_STATUSES = (404, 405)  # the endpoint is not there (yet)

AES_KEY = "backup-share"
HMAC_KEY = "payout-digest"
ECDSA_KEY = "payout-signing"
OTP_KEY = "otp-seeds"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def encode(body: dict[str, Any]) -> bytes:
    return msgspec.json.encode(body)


@dataclass(frozen=True, slots=True)
class Payloads:
    """One set of random inputs, sent alike to every server."""

    plaintext: bytes = field(default_factory=lambda: os.urandom(PLAINTEXT_BYTES))
    batch: tuple[bytes, ...] = field(
        default_factory=lambda: tuple(os.urandom(PLAINTEXT_BYTES) for _ in range(BATCH_ITEMS))
    )
    input: bytes = field(default_factory=lambda: os.urandom(INPUT_BYTES))

    def _item(self, name: str, value: str, aad: bool) -> dict[str, str]:
        return {name: value, "associated_data": b64(ASSOCIATED_DATA)} if aad else {name: value}

    def encrypt(self, *, aad: bool = True) -> bytes:
        return encode(self._item("plaintext", b64(self.plaintext), aad))

    def decrypt(self, ciphertext: str, *, aad: bool = True) -> bytes:
        return encode(self._item("ciphertext", ciphertext, aad))

    def batch_encrypt(self, *, aad: bool = True) -> bytes:
        return encode({"batch_input": [self._item("plaintext", b64(p), aad) for p in self.batch]})

    def batch_decrypt(self, ciphertexts: list[str], *, aad: bool = True) -> bytes:
        return encode({"batch_input": [self._item("ciphertext", c, aad) for c in ciphertexts]})

    def hmac(self) -> bytes:
        return encode({"input": b64(self.input)})

    def sign(self) -> bytes:
        return encode({"input": b64(self.input)})

    def verify(self, signature: str) -> bytes:
        return encode({"input": b64(self.input), "signature": signature})


@dataclass(slots=True)
class Scenario:
    """One load test against one server."""

    name: str  # encrypt, decrypt, batch-encrypt, hmac, sign, otp-verify
    server: str  # hsm-vault, bare-granian, bare-uvicorn, openbao
    path: str
    bodies: list[bytes]
    headers: dict[str, str]
    items_per_request: int = 1
    ceiling: str | None = None  # the pkcs11_ceiling op behind one item
    verdicts: bool = False
    note: str = ""
    # What the warm-up sends, when it must not use up the measured bodies (OTP codes: each
    # is accepted once).
    warmup_bodies: list[bytes] | None = None


class Unavailable(Exception):
    """The server has no such endpoint (yet): skip the scenario, with this reason."""


class ProbeFailed(Exception):
    """The endpoint exists but refused the request: the scenario fails."""


def load_settings_for_bench() -> Settings:
    """The vault's settings from the environment (bench.servers.vault_env fills it in)."""
    return load_settings()


def token_header(settings: Settings, service: str) -> dict[str, str]:
    token = mint_token(load_dev_key(settings, service), service, settings.jwt_audience, 3600)
    return {"X-Vault-Token": token}


def probe(client: httpx.Client, path: str, body: bytes) -> dict[str, Any]:
    """Send ``body`` once; the decoded response, or why the scenario cannot run."""
    response = client.post(path, content=body, headers={"Content-Type": "application/json"})
    if response.status_code in SKIP_STATUSES:
        raise Unavailable(f"POST {path} answered {response.status_code}: endpoint not there yet")
    if not 200 <= response.status_code < 300:
        raise ProbeFailed(f"POST {path} answered {response.status_code}: {_errors(response)}")
    decoded: dict[str, Any] = response.json()
    return decoded


def _errors(response: httpx.Response) -> str:
    try:
        return "; ".join(str(e) for e in response.json().get("errors", []))[:300]
    except ValueError:
        return response.text[:300]


# -- OTP --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OtpToken:
    serial: str
    seed: bytes
    encrypted_seed: str


def _otp_identity(serial: str) -> dict[str, str]:
    return {
        "token_serial": serial,
        "app_id": "hsm-vault-bench",
        "dfp_hash": hashlib.sha256(f"device:{serial}".encode()).hexdigest(),
    }


async def _import_one(client: httpx.AsyncClient, serial: str) -> OtpToken:
    path = f"/v1/otp/seeds/{OTP_KEY}/import"
    seed = os.urandom(20)
    body = {
        **_otp_identity(serial),
        "kind": "hotp",
        "algorithm": "sha1",
        "digits": 6,
        "counter": 0,
        "seed_hex": seed.hex(),
    }
    response = await client.post(path, json=body)
    if response.status_code in SKIP_STATUSES:
        raise Unavailable(f"POST {path} answered {response.status_code}: endpoint not there yet")
    if not 200 <= response.status_code < 300:
        raise ProbeFailed(f"POST {path} answered {response.status_code}: {_errors(response)}")
    return OtpToken(serial, seed, response.json()["data"]["encrypted_seed"])


async def _import_tokens(
    url: str, headers: dict[str, str], count: int, deadline: float, concurrency: int = 16
) -> list[OtpToken]:
    run_id = secrets.token_hex(4)  # fresh serials each run: no replay state from earlier runs
    indexes = itertools.count(1)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
        # One alone first, so a missing endpoint is told before any concurrency.
        tokens = [await _import_one(client, f"bench-{run_id}-00000")]

        async def worker() -> None:
            while time.monotonic() < deadline and (i := next(indexes)) < count:
                tokens.append(await _import_one(client, f"bench-{run_id}-{i:05d}"))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return tokens


def import_otp_tokens(
    url: str, headers: dict[str, str], count: int, time_budget: float
) -> list[OtpToken]:
    """Import up to ``count`` distinct HOTP tokens (counter 0) within ``time_budget`` s."""
    deadline = time.monotonic() + time_budget
    return asyncio.run(_import_tokens(url, headers, count, deadline))


OTP_MAX_RATE = 15_000  # checks/s the bodies must last for, over the measured run


def otp_rounds(tokens: int, duration: float) -> int:
    """Codes per token so that wrk, at up to ``OTP_MAX_RATE``, never sends one twice."""
    return max(2, -(-int(OTP_MAX_RATE * duration) // tokens))


def otp_verify_bodies(tokens: list[OtpToken], rounds: int) -> list[bytes]:
    """``rounds`` valid codes per token, never one twice: round r carries every token's
    HOTP code for counter r (RFC 4226), so a token's next code comes ``len(tokens)``
    requests after its last one and the codes of a token arrive in order. Each body is a
    check of a valid code that the vault accepts (until wrk runs out and starts over)."""
    generators = [pyotp.HOTP(base64.b32encode(t.seed).decode(), digits=6) for t in tokens]
    return [
        encode(
            {
                "encrypted_seed": token.encrypted_seed,
                **_otp_identity(token.serial),
                "otp": hotp.at(counter),
            }
        )
        for counter in range(rounds)
        for token, hotp in zip(tokens, generators, strict=True)
    ]
