"""Which scenarios run against which server, and how each is prepared.

A step's ``prepare`` runs right before its load test, against the live server: it sends
the request once (a ciphertext to decrypt, OTP tokens to import, ...) and returns the
:class:`Scenario`; it raises ``Unavailable`` (skip) or ``ProbeFailed`` (fail).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import httpx

from bench import scenarios
from bench.procs import ServerProcess
from bench.report import OPENBAO, VAULT
from bench.scenarios import BATCH_ITEMS, Payloads, ProbeFailed, Scenario
from bench.servers import OpenBao


class Live(Protocol):
    """A started server: ServerProcess, or OpenBao around one."""

    @property
    def url(self) -> str: ...

    @property
    def process(self) -> ServerProcess: ...

    def stop(self) -> None: ...


S = TypeVar("S", bound=Live)


@dataclass(frozen=True, slots=True)
class Step(Generic[S]):
    name: str
    prepare: Callable[[S], Scenario]


@dataclass(frozen=True, slots=True)
class Plan(Generic[S]):
    label: str
    server: str  # the name results are filed under
    start: Callable[[], S]
    steps: list[Step[S]]


def _client(url: str, headers: dict[str, str]) -> httpx.Client:
    return httpx.Client(base_url=url, headers=headers, timeout=30)


def _batch_decrypt(c: httpx.Client, enc_path: str, dec_path: str, p: Payloads, aad: bool) -> bytes:
    """A batch-decrypt body for the ciphertexts of one batch encrypt (which share one data
    key on the vault, format 0x02); checked to decrypt item by item."""
    made = _batch_results(scenarios.probe(c, enc_path, p.batch_encrypt(aad=aad)))
    body = p.batch_decrypt([str(r["ciphertext"]) for r in made], aad=aad)
    opened = _batch_results(scenarios.probe(c, dec_path, body))
    if [base64.b64decode(str(r["plaintext"])) for r in opened] != list(p.batch):
        raise ProbeFailed("a batch decrypt did not give back the plaintexts")
    return body


def _batch_results(answer: dict[str, object]) -> list[dict[str, object]]:
    data = answer["data"]
    assert isinstance(data, dict)
    results: list[dict[str, object]] = data["batch_results"]
    failed = [r for r in results if r.get("error")]
    if len(results) != BATCH_ITEMS or failed:
        raise ProbeFailed(f"batch answered {len(results)} items, {len(failed)} with errors")
    return results


# -- the bare endpoint ------------------------------------------------------------------------


def bare(payloads: Payloads, headers: dict[str, str]) -> list[Step[ServerProcess]]:
    """The vault's encrypt request, token header included (for the same request bytes)."""
    path = "/v1/transit/encrypt/bench"
    body = payloads.encrypt()

    def encrypt(server: ServerProcess) -> Scenario:
        with _client(server.url, headers) as c:
            scenarios.probe(c, path, body)
        return Scenario("encrypt", server.name, path, [body], headers)

    return [Step("encrypt", encrypt)]


# -- hsm-vault --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VaultTokens:
    backup: dict[str, str]  # backup-service: encrypt, decrypt on backup-share
    payout: dict[str, str]  # payout-gateway: hmac, sign on payout-*
    otp: dict[str, str]  # token-management: otp:* on otp-seeds


def vault(
    payloads: Payloads,
    tokens: VaultTokens,
    otp_tokens: int,
    otp_import_seconds: float,
    duration: float,
    warmup: float,
) -> list[Step[ServerProcess]]:
    p = payloads
    enc_path = f"/v1/transit/encrypt/{scenarios.AES_KEY}"
    dec_path = f"/v1/transit/decrypt/{scenarios.AES_KEY}"
    hmac_path = f"/v1/transit/hmac/{scenarios.HMAC_KEY}"
    sign_path = f"/v1/transit/sign/{scenarios.ECDSA_KEY}"
    verify_path = f"/v1/transit/verify/{scenarios.ECDSA_KEY}"

    def single(
        name: str, path: str, body: bytes, headers: dict[str, str], ceiling: str
    ) -> Step[ServerProcess]:
        def prepare(server: ServerProcess) -> Scenario:
            with _client(server.url, headers) as c:
                scenarios.probe(c, path, body)
            return Scenario(name, VAULT, path, [body], headers, ceiling=ceiling)

        return Step(name, prepare)

    def decrypt(server: ServerProcess) -> Scenario:
        with _client(server.url, tokens.backup) as c:
            ciphertext = scenarios.probe(c, enc_path, p.encrypt())["data"]["ciphertext"]
            body = p.decrypt(ciphertext)
            scenarios.probe(c, dec_path, body)
        return Scenario("decrypt", VAULT, dec_path, [body], tokens.backup, ceiling="decrypt")

    def batch(server: ServerProcess) -> Scenario:
        body = p.batch_encrypt()
        with _client(server.url, tokens.backup) as c:
            _batch_results(scenarios.probe(c, enc_path, body))
        return Scenario(
            "batch-encrypt",
            VAULT,
            enc_path,
            [body],
            tokens.backup,
            items_per_request=BATCH_ITEMS,
            ceiling="encrypt",
        )

    def batch_decrypt(server: ServerProcess) -> Scenario:
        with _client(server.url, tokens.backup) as c:
            body = _batch_decrypt(c, enc_path, dec_path, p, True)
        return Scenario(
            "batch-decrypt",
            VAULT,
            dec_path,
            [body],
            tokens.backup,
            items_per_request=BATCH_ITEMS,
            ceiling="decrypt",
        )

    def verify(server: ServerProcess) -> Scenario:
        with _client(server.url, tokens.payout) as c:
            signature = scenarios.probe(c, sign_path, p.sign())["data"]["signature"]
            body = p.verify(signature)
            if scenarios.probe(c, verify_path, body)["data"].get("valid") is not True:
                raise ProbeFailed("the vault does not verify its own signature")
        return Scenario("verify", VAULT, verify_path, [body], tokens.payout, ceiling="sign")

    def otp(server: ServerProcess) -> Scenario:
        # Distinct tokens for the warm-up, so that the measured run finds every code fresh
        # (and every measured token's first check pays the seed's first unwrap).
        warm = max(1, otp_tokens // 10)
        started = time.monotonic()
        imported = scenarios.import_otp_tokens(
            server.url, tokens.otp, otp_tokens + warm, otp_import_seconds
        )
        took = time.monotonic() - started
        if len(imported) < 2 * warm:
            raise ProbeFailed(f"only {len(imported)} OTP tokens imported in {took:.0f} s")
        measured, warming = imported[warm:], imported[:warm]
        rounds = scenarios.otp_rounds(len(measured), duration)
        bodies = scenarios.otp_verify_bodies(measured, rounds)
        path = f"/v1/otp/verify/{scenarios.OTP_KEY}"
        with _client(server.url, tokens.otp) as c:  # a warm-up token's first code
            answer = scenarios.probe(c, path, scenarios.otp_verify_bodies(warming, 1)[0])["data"]
        if answer.get("valid") is not True:
            raise ProbeFailed(f"a fresh HOTP code was not accepted: {answer}")
        return Scenario(
            "otp-verify",
            VAULT,
            path,
            bodies,
            tokens.otp,
            ceiling="otp",
            verdicts=True,
            warmup_bodies=scenarios.otp_verify_bodies(
                warming, 1 + scenarios.otp_rounds(len(warming), warmup)
            )[len(warming) :],
            note=f"{len(imported):,} HOTP tokens imported in {took:.1f} s "
            f"({len(imported) / took:,.0f}/s); the measured run checks {rounds} fresh codes "
            f"of each of {len(measured):,} tokens in turn, the warm-up {len(warming):,} others",
        )

    return [
        single("encrypt", enc_path, p.encrypt(), tokens.backup, "encrypt"),
        Step("decrypt", decrypt),
        Step("batch-encrypt", batch),
        Step("batch-decrypt", batch_decrypt),
        single("hmac", hmac_path, p.hmac(), tokens.payout, "hmac"),
        single("sign", sign_path, p.sign(), tokens.payout, "sign"),
        Step("verify", verify),
        Step("otp-verify", otp),
    ]


# -- OpenBao ----------------------------------------------------------------------------------


def openbao_aad(bao: OpenBao, p: Payloads) -> tuple[bool, str]:
    """Does OpenBao take (and check) associated_data on a plain aes256-gcm96 key?"""
    with bao.client() as c:
        made = c.post(f"/v1/transit/encrypt/{OpenBao.AES_KEY}", content=p.encrypt())
        if made.status_code != 200:
            return False, "associated_data refused on aes256-gcm96: sent without it"
        wrong = scenarios.encode(
            {"ciphertext": made.json()["data"]["ciphertext"], "associated_data": "eA=="}
        )
        checked = c.post(f"/v1/transit/decrypt/{OpenBao.AES_KEY}", content=wrong).status_code
    if checked == 200:
        return True, "associated_data accepted but NOT authenticated on aes256-gcm96"
    return True, "associated_data accepted and authenticated on aes256-gcm96: same bodies"


def openbao(payloads: Payloads, notes: list[str]) -> list[Step[OpenBao]]:
    """The same requests to OpenBao's Transit (keys bench, bench-hmac, bench-ecdsa)."""
    p = payloads
    enc_path = f"/v1/transit/encrypt/{OpenBao.AES_KEY}"
    dec_path = f"/v1/transit/decrypt/{OpenBao.AES_KEY}"
    aad: dict[str, bool] = {}

    def with_aad(bao: OpenBao) -> bool:
        if "aad" not in aad:
            aad["aad"], note = openbao_aad(bao, p)
            notes.append(f"openbao: {note}")
        return aad["aad"]

    def encrypt(bao: OpenBao) -> Scenario:
        body = p.encrypt(aad=with_aad(bao))
        with bao.client() as c:
            scenarios.probe(c, enc_path, body)
        return Scenario("encrypt", OPENBAO, enc_path, [body], bao.headers())

    def decrypt(bao: OpenBao) -> Scenario:
        a = with_aad(bao)
        with bao.client() as c:
            ct = scenarios.probe(c, enc_path, p.encrypt(aad=a))["data"]["ciphertext"]
            body = p.decrypt(ct, aad=a)
            scenarios.probe(c, dec_path, body)
        return Scenario("decrypt", OPENBAO, dec_path, [body], bao.headers())

    def batch(bao: OpenBao) -> Scenario:
        body = p.batch_encrypt(aad=with_aad(bao))
        with bao.client() as c:
            _batch_results(scenarios.probe(c, enc_path, body))
        return Scenario(
            "batch-encrypt",
            OPENBAO,
            enc_path,
            [body],
            bao.headers(),
            items_per_request=BATCH_ITEMS,
        )

    def batch_decrypt(bao: OpenBao) -> Scenario:
        with bao.client() as c:
            body = _batch_decrypt(c, enc_path, dec_path, p, with_aad(bao))
        return Scenario(
            "batch-decrypt",
            OPENBAO,
            dec_path,
            [body],
            bao.headers(),
            items_per_request=BATCH_ITEMS,
        )

    def single(name: str, path: str, body: bytes) -> Step[OpenBao]:
        def prepare(bao: OpenBao) -> Scenario:
            with bao.client() as c:
                scenarios.probe(c, path, body)
            return Scenario(name, OPENBAO, path, [body], bao.headers())

        return Step(name, prepare)

    def verify(bao: OpenBao) -> Scenario:
        path = f"/v1/transit/verify/{OpenBao.ECDSA_KEY}"
        with bao.client() as c:
            made = scenarios.probe(c, f"/v1/transit/sign/{OpenBao.ECDSA_KEY}", p.sign())
            body = p.verify(made["data"]["signature"])
            if scenarios.probe(c, path, body)["data"].get("valid") is not True:
                raise ProbeFailed("OpenBao does not verify its own signature")
        return Scenario("verify", OPENBAO, path, [body], bao.headers())

    return [
        Step("encrypt", encrypt),
        Step("decrypt", decrypt),
        Step("batch-encrypt", batch),
        Step("batch-decrypt", batch_decrypt),
        single("hmac", f"/v1/transit/hmac/{OpenBao.HMAC_KEY}", p.hmac()),
        single("sign", f"/v1/transit/sign/{OpenBao.ECDSA_KEY}", p.sign()),
        Step("verify", verify),
    ]
