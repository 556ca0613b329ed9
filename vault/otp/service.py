"""OTP seed custody and verification: seeds are made, kept and used only inside the HSM."""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import secrets
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from hsm import GeneratedSeed, HsmOps, MacAlgorithm
from vault.errors import BadRequest, InvalidCiphertext
from vault.hsm import Hsm
from vault.keys import Key
from vault.otp import seeds
from vault.otp._errors import OtpBindingMismatch, OtpInputError
from vault.otp._ocra import OcraSuite
from vault.otp._plan import (
    ALGORITHMS,
    VerifyPlan,
    check_code,
    is_code,
    match,
    plan_hotp,
    plan_ocra,
    plan_totp,
)
from vault.otp._totp import time_step
from vault.registry import KeyRegistry
from vault.store.otp_ledger import Outcome, ReplayLedger

log = logging.getLogger("vault.otp")
T = TypeVar("T")

SEED_BYTES = {"sha1": 20, "sha256": 32, "sha512": 64}  # RFC 4226 §4 R6; RFC 6238 Appendix B
DEFAULT_WINDOW = {"hotp": 10, "totp": 1, "ocra": 0}
_MACS = {"sha1": MacAlgorithm.SHA1, "sha256": MacAlgorithm.SHA256, "sha512": MacAlgorithm.SHA512}
_MAX_SEED_BYTES = 128


@dataclass(frozen=True, slots=True)
class TokenIdentity:
    token_serial: str
    app_id: str
    dfp_hash: str

    def __post_init__(self) -> None:
        if not self.token_serial:
            raise OtpInputError("token_serial", "must not be empty")

    @property
    def binding(self) -> bytes:
        return seeds.binding(self.token_serial, self.app_id, self.dfp_hash)


@dataclass(frozen=True, slots=True)
class VerifyInput:
    encrypted_seed: str
    identity: TokenIdentity
    otp: str
    challenge: str | None = None
    challenge2: str | None = None
    counter: int | None = None
    window: int | None = None
    password: str | None = None
    password_hash: str | None = None
    session_info: bytes | None = None


@dataclass(frozen=True, slots=True)
class VerifyResult:
    valid: bool
    reason: str | None = None
    counter: int | None = None
    time_step: int | None = None
    next_counter: int | None = None
    drift: int | None = None


def token_params(
    kind: str, algorithm: str | None, digits: int | None, period: int | None, ocra_suite: str | None
) -> seeds.TokenParams:
    """Validate what a token is before a seed is made or taken for it."""
    if kind not in DEFAULT_WINDOW:
        raise OtpInputError("kind", "must be hotp, totp or ocra")
    if kind == "ocra":
        if not ocra_suite:
            raise OtpInputError("ocra_suite", "required for kind ocra")
        suite = OcraSuite.parse(ocra_suite)
        return seeds.TokenParams("ocra", suite.algorithm, suite.digits, None, suite.text)
    algorithm = algorithm or "sha1"
    if algorithm not in ALGORITHMS:
        raise OtpInputError("algorithm", "must be sha1, sha256 or sha512")
    digits = 6 if digits is None else digits
    if not 6 <= digits <= 10:
        raise OtpInputError("digits", "must be between 6 and 10")
    if kind == "totp":
        period = 30 if period is None else period
        if period not in (30, 60):
            raise OtpInputError("period", "must be 30 or 60 seconds")
        return seeds.TokenParams("totp", algorithm, digits, period)
    return seeds.TokenParams("hotp", algorithm, digits)


class OtpService:
    def __init__(
        self,
        registry: KeyRegistry,
        hsm: Hsm,
        ledger: ReplayLedger,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry
        self.hsm = hsm
        self.ledger = ledger
        self.clock = clock

    async def _ledger(self, fn: Callable[..., T], *args: Any) -> T:
        """A ledger call: inline on SQLite (a local write costs less than a thread hop,
        which under load costs ~300 µs of GIL hand-overs), on a worker thread for a
        database across the network."""
        if self.ledger.local:
            return fn(*args)
        return await asyncio.to_thread(fn, *args)

    async def _key(self, name: str, newest: int | None = None) -> Key:
        key = await self.registry.get(name, newest=newest)
        if not key.type.otp:
            raise BadRequest(f"key type {key.type.name} does not hold OTP seeds")
        return key

    @staticmethod
    def _seal_job(
        key: Key, version: int, identity: TokenIdentity, params: seeds.TokenParams, wrapped: bytes
    ) -> Callable[[HsmOps], str]:
        bind_id = key.versions[version].object_id("bind")
        signed = seeds.body(
            secrets.token_bytes(seeds.SEED_ID_BYTES), identity.binding, params, wrapped
        )

        def job(ops: HsmOps) -> str:
            tag = ops.mac(bind_id, MacAlgorithm.SHA256, seeds.context(key.name, version) + signed)
            return seeds.assemble(version, signed, tag)

        return job

    async def create(
        self,
        name: str,
        identity: TokenIdentity,
        params: seeds.TokenParams,
        *,
        device_public_key_der: bytes | None = None,
        issuer: str | None = None,
        account: str | None = None,
    ) -> tuple[str, dict[str, object]]:
        """A new seed, generated in the HSM. Its plaintext leaves once, for provisioning —
        or never, when the device's public key is given (then it is wrapped to the device)."""
        key = await self._key(name)
        version = key.version_to_use()
        wrap_id = version.object_id("wrap")
        length = SEED_BYTES[params.algorithm]

        def job(ops: HsmOps) -> GeneratedSeed:
            return ops.seed_generate(wrap_id, length, device_public_key_der)

        made = await self.hsm.run(job)
        blob = await self.hsm.run(
            self._seal_job(key, version.version, identity, params, made.wrapped)
        )
        if made.device_wrapped is not None:
            return blob, {
                "device_wrapped_seed": base64.b64encode(made.device_wrapped).decode(),
                "wrapping": made.device_wrapping,
            }
        assert made.plaintext is not None
        return blob, _provisioning(params, made.plaintext, identity, issuer, account)

    async def import_seed(
        self, name: str, identity: TokenIdentity, params: seeds.TokenParams, seed: bytes
    ) -> str:
        if not 1 <= len(seed) <= _MAX_SEED_BYTES:
            raise OtpInputError("seed", f"must be 1 to {_MAX_SEED_BYTES} bytes")
        key = await self._key(name)
        version = key.version_to_use()
        wrap_id = version.object_id("wrap")
        wrapped = await self.hsm.run(lambda ops: ops.seed_import(wrap_id, seed))
        return await self.hsm.run(self._seal_job(key, version.version, identity, params, wrapped))

    async def rewrap(
        self, name: str, encrypted_seed: str, key_version: int | None = None
    ) -> tuple[str, int]:
        """Move a seed to the latest (or given) version; it never leaves the HSM."""
        blob = seeds.parse(encrypted_seed)
        key = await self._key(name, blob.version)
        old = key.version_to_check(blob.version)
        new = key.version_to_use(key_version)
        new_context = seeds.context(key.name, new.version)
        tag_input = blob.tag_input(key.name)
        old_bind, old_wrap = old.object_id("bind"), old.object_id("wrap")
        new_bind, new_wrap = new.object_id("bind"), new.object_id("wrap")

        def job(ops: HsmOps) -> str:
            if not hmac.compare_digest(ops.mac(old_bind, MacAlgorithm.SHA256, tag_input), blob.tag):
                raise InvalidCiphertext()
            wrapped = ops.seed_rewrap(old_wrap, new_wrap, blob.wrapped)
            signed = seeds.body(blob.seed_id, blob.binding, blob.params, wrapped)
            tag = ops.mac(new_bind, MacAlgorithm.SHA256, new_context + signed)
            return seeds.assemble(new.version, signed, tag)

        return await self.hsm.run(job), new.version

    async def verify(self, name: str, request: VerifyInput) -> VerifyResult:
        blob = seeds.parse(request.encrypted_seed)
        key = await self._key(name, blob.version)
        version = key.version_to_check(blob.version)
        if not blob.check_binding(
            request.identity.token_serial, request.identity.app_id, request.identity.dfp_hash
        ):
            log.warning(
                "otp seed presented with another token binding (key=%s seed=%s)",
                name,
                blob.seed_id.hex(),
            )
            raise OtpBindingMismatch()
        params = blob.params
        now = self.clock()
        window = DEFAULT_WINDOW[params.kind] if request.window is None else request.window
        plan, current = await self._plan(params, request, blob.seed_id, window, now)
        tag_input = blob.tag_input(key.name)
        bind_id, wrap_id = version.object_id("bind"), version.object_id("wrap")
        mac_alg = _MACS[plan.algorithm]
        messages = [c.message for c in plan.candidates]

        submitted = check_code(plan, request.otp)

        def accepted(mac: bytes) -> bool:
            return is_code(plan, mac, submitted)

        def job(ops: HsmOps) -> list[bytes]:
            if not hmac.compare_digest(ops.mac(bind_id, MacAlgorithm.SHA256, tag_input), blob.tag):
                raise InvalidCiphertext()
            # Candidates come in ascending position, so the first match is the lowest one and
            # the rest need not be computed; a wrong code still costs every MAC.
            return ops.seed_macs(wrap_id, blob.wrapped, mac_alg, messages, until=accepted)

        macs = await self.hsm.run(job, calls=3 + len(messages))  # tag, unwrap, MACs, destroy
        computed = VerifyPlan(plan.algorithm, plan.digits, plan.candidates[: len(macs)])
        found = match(computed, macs, request.otp)
        ordered = not (params.kind == "ocra" and current is None and request.counter is None)
        if found is None:
            outcome = await self._ledger(self.ledger.reject, blob.seed_id, key.name, now)
            return VerifyResult(False, reason=outcome.value)
        position = found.position if ordered else None
        outcome = await self._ledger(self.ledger.accept, blob.seed_id, key.name, position, now)
        if outcome is not Outcome.ACCEPTED:
            return VerifyResult(False, reason=outcome.value)
        return _result(params, found.position, current, request.counter, ordered)

    async def _plan(
        self,
        params: seeds.TokenParams,
        request: VerifyInput,
        seed_id: bytes,
        window: int,
        now: float,
    ) -> tuple[VerifyPlan, int | None]:
        """The candidates to MAC, and the current time step where time is a factor."""
        if params.kind == "totp":
            period = params.period or 30
            plan = plan_totp(
                now=now,
                period=period,
                window=window,
                digits=params.digits,
                algorithm=params.algorithm,
            )
            return plan, time_step(now, period)
        if params.kind == "hotp":
            counter = request.counter
            if counter is None:
                state = await self._ledger(self.ledger.state, seed_id)
                counter = state.last_position + 1 if state is not None else 0
            plan = plan_hotp(
                counter=counter, window=window, digits=params.digits, algorithm=params.algorithm
            )
            return plan, None
        suite = OcraSuite.parse(params.ocra_suite or "")
        if not request.challenge:
            raise OtpInputError("challenge", "required by the OCRA suite (Q)")
        plan = plan_ocra(
            suite=suite,
            challenge=request.challenge,
            challenge2=request.challenge2,
            counter=request.counter,
            window=window,
            password=request.password,
            password_hash=request.password_hash,
            session_info=request.session_info,
            now=now,
        )
        current = (
            time_step(now, suite.time_step)
            if suite.time_step is not None and not suite.counter
            else None
        )
        return plan, current


def _result(
    params: seeds.TokenParams,
    position: int,
    current: int | None,
    counter: int | None,
    ordered: bool,
) -> VerifyResult:
    if params.kind == "totp" or current is not None:
        return VerifyResult(True, time_step=position, drift=position - (current or 0))
    if params.kind == "hotp" or (ordered and counter is not None):
        return VerifyResult(
            True,
            counter=position,
            next_counter=position + 1,
            drift=position - counter if counter is not None else None,
        )
    return VerifyResult(True)


def _provisioning(
    params: seeds.TokenParams,
    seed: bytes,
    identity: TokenIdentity,
    issuer: str | None,
    account: str | None,
) -> dict[str, object]:
    """What the device needs, once: a Key URI (Google Authenticator's format) or the OCRA seed."""
    if params.kind == "ocra":
        return {"seed_hex": seed.hex(), "ocra_suite": params.ocra_suite}
    secret = base64.b32encode(seed).decode().rstrip("=")
    label = account or identity.token_serial
    if issuer:
        label = f"{issuer}:{label}"
    query: dict[str, str | int] = {
        "secret": secret,
        "algorithm": params.algorithm.upper(),
        "digits": params.digits,
    }
    if issuer:
        query["issuer"] = issuer
    if params.kind == "totp":
        query["period"] = params.period or 30
    else:
        query["counter"] = 0
    uri = f"otpauth://{params.kind}/{urllib.parse.quote(label)}?{urllib.parse.urlencode(query)}"
    return {"otpauth_uri": uri, "seed_base32": secret}
