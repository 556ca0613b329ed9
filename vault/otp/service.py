"""OTP seed custody and verification: seeds are made, kept and used only inside the HSM.

Besides creating, importing and verifying seeds, the token-management service reads a seed's
ledger state, resynchronizes a HOTP counter (RFC 4226 §7.4), unlocks a locked seed and
deactivates one for good. Each of those names the seed by its ``encrypted_seed``, whose tag
the HSM checks first: only a genuine blob of this key acts on a seed's ledger row.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from hsm import GeneratedSeed, HsmOps, MacAlgorithm, SeedRef
from vault.errors import BadRequest, InvalidCiphertext, Unavailable
from vault.events import EventSink, LifecycleEvent, LogSink
from vault.hsm import Hsm
from vault.keys import Key, KeyVersion
from vault.otp import seeds
from vault.otp._errors import OtpBindingMismatch, OtpInputError
from vault.otp._ocra import OcraSuite
from vault.otp._plan import (
    ALGORITHMS,
    DEFAULT_RESYNC_WINDOW,
    VerifyPlan,
    check_code,
    is_code,
    match,
    match_consecutive,
    plan_hotp,
    plan_ocra,
    plan_resync,
    plan_totp,
)
from vault.otp._totp import time_step
from vault.otp.pskc import PskcKey
from vault.registry import KeyRegistry
from vault.store.otp_ledger import MAX_POSITION, UNREAD, LedgerState, Outcome, ReplayLedger

log = logging.getLogger("vault.otp")
T = TypeVar("T")

SEED_BYTES = {"sha1": 20, "sha256": 32, "sha512": 64}  # RFC 4226 §4 R6; RFC 6238 Appendix B
DEFAULT_WINDOW = {"hotp": 10, "totp": 1, "ocra": 0}
_MACS = {"sha1": MacAlgorithm.SHA1, "sha256": MacAlgorithm.SHA256, "sha512": MacAlgorithm.SHA512}
# What a verification usually costs the HSM: a cached seed's one MAC, or binding, unwrap and
# MAC (a wrong code costs every candidate's MAC; runner.run takes this as an estimate).
_EXPECTED_CALLS = 3
_PARSED_BLOBS = 4096
MIN_SEED_BYTES = 16  # RFC 4226 §4 R6: the shared secret MUST be at least 128 bits
MAX_SEED_BYTES = 128
SEEDS_NOT_REWRAPPABLE = (
    "encrypted seeds cannot be rewrapped: an otp-seed key unwraps a seed only into an HSM "
    "object that can never be extracted, so no seed can be wrapped again under another key "
    "version; provision the token again (POST /v1/otp/seeds/<key>) to move it to the latest "
    "version"
)


@dataclass(frozen=True, slots=True)
class TokenIdentity:
    token_serial: str
    app_id: str
    dfp_hash: str

    def __post_init__(self) -> None:
        if not self.token_serial:
            raise OtpInputError("token_serial", "must not be empty")

    @property
    def fields(self) -> tuple[str, str, str]:
        return self.token_serial, self.app_id, self.dfp_hash


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


@dataclass(frozen=True, slots=True)
class SeedState:
    """What the ledger knows of one seed. Positions are the last accepted counter (HOTP, OCRA
    suites with C) or time step (TOTP, OCRA suites with T and no C); None before any."""

    seed_id: str
    kind: str
    key_version: int
    failures: int
    locked_until: float | None
    deactivated_at: float | None
    counter: int | None = None
    next_counter: int | None = None
    time_step: int | None = None


@dataclass(frozen=True, slots=True)
class ImportedSeed:
    token_serial: str
    key_id: str
    kind: str
    encrypted_seed: str
    counter: int | None


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


def check_seed(seed: bytes, field: str = "seed") -> bytes:
    if not MIN_SEED_BYTES <= len(seed) <= MAX_SEED_BYTES:
        raise OtpInputError(
            field,
            f"must be {MIN_SEED_BYTES} to {MAX_SEED_BYTES} bytes (RFC 4226 §4: at least 128 bits)",
        )
    return seed


def _ordering(params: seeds.TokenParams) -> str | None:
    """What orders a token's codes: "counter", "time", or nothing (OCRA with neither)."""
    if params.kind == "hotp":
        return "counter"
    if params.kind == "totp":
        return "time"
    suite = OcraSuite.parse(params.ocra_suite or "")
    if suite.counter:
        return "counter"
    return "time" if suite.time_step is not None else None


def _within_ledger(plan: VerifyPlan) -> VerifyPlan:
    """The plan, if the ledger can record every position in it (a signed 64-bit integer)."""
    if plan.candidates[-1].position > MAX_POSITION:
        raise OtpInputError("counter", "counter plus window must be less than 2^63")
    return plan


def _bound_elsewhere(key_name: str, blob: seeds.EncryptedSeed) -> OtpBindingMismatch:
    log.warning(
        "otp seed presented with another token binding (key=%s seed=%s)",
        key_name,
        blob.seed_id.hex(),
    )
    return OtpBindingMismatch()


def _authenticate(
    key: Key, version: KeyVersion, blob: seeds.EncryptedSeed, identity: TokenIdentity | None
) -> Callable[[HsmOps], None]:
    """The HSM part of accepting a blob, before its seed is unwrapped. With ``identity``, a
    format-0x03 blob's binding, which authenticates the blob and its token in one MAC (the
    tag is asked only when it fails, to tell a blob of another token from a forged one);
    otherwise the tag, and for a format-0x02 blob its unkeyed binding, on the host."""
    return _prepare(key, version, blob, identity)[0]


def _blob_digest(key: Key, blob: seeds.EncryptedSeed) -> bytes:
    """Every byte the blob's tag covers, and the tag: what names it in the seed cache."""
    return hashlib.sha256(blob.tag_input(key.name) + blob.tag).digest()


def _prepare(
    key: Key, version: KeyVersion, blob: seeds.EncryptedSeed, identity: TokenIdentity | None
) -> tuple[Callable[[HsmOps], None], SeedRef | None]:
    """:func:`_authenticate`'s check, and how the HSM's seed cache names the blob with this
    identity (None where the cache must not be used: no identity, or a format-0x02 blob
    presented with other identifiers, which the full path refuses as before).

    A keyed blob's binding digest is that of the message its binding MACs: the cache uses
    a seed only for a blob whose binding the HSM verified for these very identifiers. A
    format-0x02 blob's identifiers are checked on the host on every request; what the HSM
    verified for it is its tag, named by the blob digest itself."""
    bind_id = version.object_id("bind")
    tag_input = blob.tag_input(key.name)
    binding: bytes | None = None
    elsewhere = False
    if identity is not None and blob.keyed:
        binding = blob.binding_input(key.name, *identity.fields)
    elif identity is not None:
        elsewhere = not blob.check_legacy_binding(*identity.fields)

    def genuine(ops: HsmOps) -> bool:
        return hmac.compare_digest(ops.mac(bind_id, MacAlgorithm.SHA256, tag_input), blob.tag)

    def check(ops: HsmOps) -> None:
        if binding is not None:
            if hmac.compare_digest(ops.mac(bind_id, MacAlgorithm.SHA256, binding), blob.binding):
                return
            raise _bound_elsewhere(key.name, blob) if genuine(ops) else InvalidCiphertext()
        if not genuine(ops):
            raise InvalidCiphertext()
        if elsewhere:
            raise _bound_elsewhere(key.name, blob)

    ref = None
    if identity is not None and not elsewhere:
        digest = _blob_digest(key, blob)
        verified = hashlib.sha256(binding).digest() if binding is not None else digest
        ref = SeedRef(version.object_id("wrap"), digest, verified)
    return check, ref


def _import_job(
    wrap_id: bytes, seed: bytes, seal: Callable[[HsmOps, bytes], str]
) -> Callable[[HsmOps], str]:
    def job(ops: HsmOps) -> str:
        return seal(ops, ops.seed_import(wrap_id, seed))

    return job


class OtpService:
    def __init__(
        self,
        registry: KeyRegistry,
        hsm: Hsm,
        ledger: ReplayLedger,
        clock: Callable[[], float] = time.time,
        events: EventSink | None = None,
    ) -> None:
        self.registry = registry
        self.hsm = hsm
        self.ledger = ledger
        self.clock = clock
        self.events: EventSink = events if events is not None else LogSink()
        # Blobs recently parsed (their public layout, nothing secret; the HSM still checks
        # each one's tag or binding): parsing costs more than the rest of a cached check's
        # host work. Oldest first out.
        self._parsed: dict[str, seeds.EncryptedSeed] = {}

    async def _ledger(self, fn: Callable[..., T], *args: Any) -> T:
        """A ledger call: inline on SQLite when no other writer is in the way (a local write
        costs less than a thread hop, which under load costs ~300 µs of GIL hand-overs), on
        a worker thread otherwise and for a database across the network."""
        return await self.ledger.call(fn, *args)

    async def _key(self, name: str, newest: int | None = None) -> Key:
        key = await self.registry.get(name, newest=newest)
        if not key.type.otp:
            raise BadRequest(f"key type {key.type.name} does not hold OTP seeds")
        return key

    async def _blob(
        self, name: str, encrypted_seed: str
    ) -> tuple[Key, KeyVersion, seeds.EncryptedSeed]:
        blob = self._parsed.get(encrypted_seed)
        if blob is None:
            blob = seeds.parse(encrypted_seed)
            self._parsed[encrypted_seed] = blob
            if len(self._parsed) > _PARSED_BLOBS:
                del self._parsed[next(iter(self._parsed))]
        key = await self._key(name, blob.version)
        return key, key.version_to_check(blob.version), blob

    @staticmethod
    def _seal(
        key: Key, version: KeyVersion, identity: TokenIdentity, params: seeds.TokenParams
    ) -> Callable[[HsmOps, bytes], str]:
        """Seal a wrapped seed into a blob (format 0x03), inside an HSM job."""
        bind_id = version.object_id("bind")
        seed_id = secrets.token_bytes(seeds.SEED_ID_BYTES)
        context = seeds.context(key.name, version.version)

        def seal(ops: HsmOps, wrapped: bytes) -> str:
            unbound = seeds.unbound(seed_id, params, wrapped)
            message = seeds.binding_message(key.name, version.version, unbound, *identity.fields)
            binding = ops.mac(bind_id, MacAlgorithm.SHA256, message)
            signed = seeds.body(seed_id, binding, params, wrapped)
            tag = ops.mac(bind_id, MacAlgorithm.SHA256, context + signed)
            return seeds.assemble(version.version, signed, tag)

        return seal

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
        seal = self._seal(key, version, identity, params)

        def job(ops: HsmOps) -> tuple[GeneratedSeed, str]:
            made = ops.seed_generate(wrap_id, length, device_public_key_der)
            return made, seal(ops, made.wrapped)

        made, blob = await self.hsm.run(job, calls=5)
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
        check_seed(seed)
        key = await self._key(name)
        return (await self._import(key, [(identity, params, seed)]))[0][0]

    async def _import(
        self, key: Key, tokens: list[tuple[TokenIdentity, seeds.TokenParams, bytes]]
    ) -> list[tuple[str, bytes]]:
        """Wrap and seal each seed: its blob and seed id, in order."""
        version = key.version_to_use()
        wrap_id = version.object_id("wrap")
        out = []
        for identity, params, seed in tokens:
            blob = await self.hsm.run(
                _import_job(wrap_id, seed, self._seal(key, version, identity, params)), calls=3
            )
            out.append((blob, seeds.parse(blob).seed_id))
        return out

    async def import_pskc(
        self, name: str, entries: Iterable[PskcKey], app_id: str, dfp_hash: str
    ) -> list[ImportedSeed]:
        """Import every key of a PSKC file, or none: all are checked before any is wrapped.
        A key's ``Counter`` (the next counter its token will use) goes to the replay ledger,
        so codes already used on the old system stay used here."""
        tokens = []
        for entry in entries:
            params = token_params(
                entry.kind.value,
                entry.algorithm,
                entry.digits,
                entry.period,
                entry.ocra_suite.text if entry.ocra_suite else None,
            )
            check_seed(entry.secret, f"Secret of key {entry.key_id!r}")
            if entry.counter is not None and entry.counter > MAX_POSITION + 1:
                raise OtpInputError(f"Counter of key {entry.key_id!r}", "must be at most 2^63")
            identity = TokenIdentity(entry.serial or entry.key_id, app_id, dfp_hash)
            tokens.append((entry, identity, params))
        key = await self._key(name)
        sealed = await self._import(key, [(i, p, e.secret) for e, i, p in tokens])
        used = [
            (seed_id, entry.counter - 1)
            for (entry, _, _), (_, seed_id) in zip(tokens, sealed, strict=True)
            if entry.counter
        ]
        if used:
            await self._ledger(self.ledger.start, used, key.name, self.clock())
        return [
            ImportedSeed(identity.token_serial, entry.key_id, params.kind, blob, entry.counter)
            for (entry, identity, params), (blob, _) in zip(tokens, sealed, strict=True)
        ]

    async def verify(self, name: str, request: VerifyInput) -> VerifyResult:
        key, version, blob = await self._blob(name, request.encrypted_seed)
        authenticate, ref = _prepare(key, version, blob, request.identity)
        params = blob.params
        now = self.clock()
        window = DEFAULT_WINDOW[params.kind] if request.window is None else request.window
        seen: LedgerState | None = UNREAD
        if params.kind == "hotp" and request.counter is None:
            # The next counter, and what the acceptance below need not read again.
            seen = await self.ledger.state_async(blob.seed_id)
        plan, current = await self._plan(params, request, seen, window, now)
        wrap_id = version.object_id("wrap")
        mac_alg = _MACS[plan.algorithm]
        messages = [c.message for c in plan.candidates]

        submitted = check_code(plan, request.otp)

        def accepted(mac: bytes) -> bool:
            return is_code(plan, mac, submitted)

        def job(ops: HsmOps) -> list[bytes]:
            # Candidates come in ascending position, so the first match is the lowest one and
            # the rest need not be computed; a wrong code still costs every MAC.
            if ref is not None:
                # A seed the HSM unwrapped before, for this very blob and these identifiers.
                cached = ops.cached_seed_macs(ref, mac_alg, messages, until=accepted)
                if cached is not None:
                    return cached
            authenticate(ops)
            return ops.seed_macs(wrap_id, blob.wrapped, mac_alg, messages, until=accepted, keep=ref)

        # A cached seed: the MACs alone, usually one (the code at the expected position).
        # Otherwise binding (or tag), unwrap, MACs (and destroy, when the cache is off).
        macs = await self.hsm.run(job, calls=_EXPECTED_CALLS)
        computed = VerifyPlan(plan.algorithm, plan.digits, plan.candidates[: len(macs)])
        found = match(computed, macs, request.otp)
        ordered = not (params.kind == "ocra" and current is None and request.counter is None)
        if found is None:
            outcome = await self.ledger.reject_async(blob.seed_id, key.name, now)
            return VerifyResult(False, reason=outcome.value)
        position = found.position if ordered else None
        outcome = await self.ledger.accept_async(blob.seed_id, key.name, position, now, seen)
        if outcome is not Outcome.ACCEPTED:
            return VerifyResult(False, reason=outcome.value)
        return _result(params, found.position, current, request.counter, ordered)

    async def _plan(
        self,
        params: seeds.TokenParams,
        request: VerifyInput,
        seen: LedgerState | None,
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
            return _within_ledger(plan), time_step(now, period)
        if params.kind == "hotp":
            counter = request.counter
            if counter is None:
                counter = seen.last_position + 1 if seen is not None else 0
            plan = plan_hotp(
                counter=counter, window=window, digits=params.digits, algorithm=params.algorithm
            )
            return _within_ledger(plan), None
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
        return _within_ledger(plan), current

    async def _next_counter(self, seed_id: bytes) -> int:
        state = await self.ledger.state_async(seed_id)
        return state.last_position + 1 if state is not None else 0

    # -- the token-management service's operations ------------------------------------------

    async def _genuine(
        self, name: str, encrypted_seed: str
    ) -> tuple[Key, KeyVersion, seeds.EncryptedSeed]:
        """The blob, once the HSM has checked its tag."""
        key, version, blob = await self._blob(name, encrypted_seed)
        await self.hsm.run(_authenticate(key, version, blob, None))
        return key, version, blob

    def _state(
        self, version: KeyVersion, blob: seeds.EncryptedSeed, state: LedgerState | None
    ) -> SeedState:
        now = self.clock()
        state = state or LedgerState(-1, 0, 0.0)
        last = state.last_position if state.last_position >= 0 else None
        ordering = _ordering(blob.params)
        return SeedState(
            seed_id=blob.seed_id.hex(),
            kind=blob.params.kind,
            key_version=version.version,
            failures=state.failures,
            locked_until=state.locked_until if state.locked(now) else None,
            deactivated_at=state.deactivated_at,
            counter=last if ordering == "counter" else None,
            next_counter=state.last_position + 1 if ordering == "counter" else None,
            time_step=last if ordering == "time" else None,
        )

    def _event(self, kind: str, actor: str, key: Key, blob: seeds.EncryptedSeed) -> None:
        self.events.emit(
            LifecycleEvent(
                kind,
                actor,
                key=key.name,
                version=blob.version,
                details={"seed": blob.seed_id.hex()},
            )
        )

    async def state(self, name: str, encrypted_seed: str) -> SeedState:
        _, version, blob = await self._genuine(name, encrypted_seed)
        return self._state(version, blob, await self.ledger.state_async(blob.seed_id))

    async def unlock(self, name: str, encrypted_seed: str, *, actor: str) -> SeedState:
        """Clear the failure count and the lock of a seed that is not deactivated."""
        key, version, blob = await self._genuine(name, encrypted_seed)
        state = await self._ledger(self.ledger.unlock, blob.seed_id, self.clock())
        if state is not None and state.deactivated_at is not None:
            raise BadRequest("the seed is deactivated for good and cannot be unlocked")
        self._event("otp.unlock", actor, key, blob)
        return self._state(version, blob, state)

    async def deactivate(self, name: str, encrypted_seed: str, *, actor: str) -> SeedState:
        """The kill switch: the seed never verifies again, on any replica (idempotent)."""
        key, version, blob = await self._genuine(name, encrypted_seed)
        state = await self._ledger(self.ledger.deactivate, blob.seed_id, key.name, self.clock())
        # The ledger refuses the seed on every worker and replica from now on; this process
        # also lets go of its unwrapped copy at once (others drop theirs as they evict it).
        ref = SeedRef(version.object_id("wrap"), _blob_digest(key, blob), b"")
        try:
            await self.hsm.run(lambda ops: ops.forget_seed(ref))
        except Unavailable:
            # Deactivated all the same (the ledger decides); the cached seed goes with the
            # session the HSM lost, or ages out.
            log.info("cached seed of a deactivated seed left to the HSM session's end")
        self._event("otp.deactivate", actor, key, blob)
        return self._state(version, blob, state)

    async def resync(
        self,
        name: str,
        encrypted_seed: str,
        otp: str,
        next_otp: str,
        window: int | None = None,
        *,
        actor: str,
    ) -> VerifyResult:
        """RFC 4226 §7.4: two consecutive codes found ahead of the next expected counter move
        it past both. A failed attempt counts like a failed verification."""
        key, version, blob = await self._blob(name, encrypted_seed)
        params = blob.params
        if params.kind != "hotp":
            raise OtpInputError("kind", "resynchronization applies to HOTP tokens")
        now = self.clock()
        plan = _within_ledger(
            plan_resync(
                counter=await self._next_counter(blob.seed_id),
                window=DEFAULT_RESYNC_WINDOW if window is None else window,
                digits=params.digits,
                algorithm=params.algorithm,
            )
        )
        check_code(plan, otp)
        check_code(plan, next_otp)
        authenticate = _authenticate(key, version, blob, None)
        wrap_id = version.object_id("wrap")
        messages = [c.message for c in plan.candidates]

        def job(ops: HsmOps) -> list[bytes]:
            authenticate(ops)
            return ops.seed_macs(wrap_id, blob.wrapped, _MACS[plan.algorithm], messages)

        macs = await self.hsm.run(job, calls=3 + len(messages))
        found = match_consecutive(plan, macs, otp, next_otp)
        if found is None:
            outcome = await self.ledger.reject_async(blob.seed_id, key.name, now)
            return VerifyResult(False, reason=outcome.value)
        position = found.position + 1
        outcome = await self.ledger.accept_async(blob.seed_id, key.name, position, now)
        if outcome is not Outcome.ACCEPTED:
            return VerifyResult(False, reason=outcome.value)
        self._event("otp.resync", actor, key, blob)
        return VerifyResult(True, counter=position, next_counter=position + 1)


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
