"""The seed cache on the real token: a check of a seed unwrapped before costs its MACs alone,
the cached object is as locked down as the one-shot one, and nothing ever reaches it that the
HSM has not authenticated for the blob and identifiers presented (docs/design.md, OTP)."""

from __future__ import annotations

import asyncio
import base64
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pyotp
import pytest
from pkcs11 import Attribute
from pkcs11 import exceptions as p11e
from pkcs11.types import SignMixin

from hsm import _ops
from vault.approvals import Authority
from vault.errors import BadRequest, HsmUnavailable, InvalidCiphertext
from vault.otp import seeds
from vault.otp.service import OtpService, TokenIdentity, VerifyInput, _prepare, token_params

pytestmark = pytest.mark.hsm

KEY = "otp-seeds"
HOTP = token_params("hotp", "sha1", 6, None, None)


class Token:
    def __init__(self, runtime: Any, key: str = KEY) -> None:
        self.runtime = runtime
        self.key = key
        self.identity = TokenIdentity(f"cache-{uuid.uuid4().hex[:10]}", "app", "dfp")
        self.seed = os.urandom(20)
        self.blob = asyncio.run(runtime.otp.import_seed(key, self.identity, HOTP, self.seed))
        self.hotp = pyotp.HOTP(base64.b32encode(self.seed).decode())
        self.counter = 0

    def check(self, identity: TokenIdentity | None = None, blob: str | None = None) -> Any:
        request = VerifyInput(blob or self.blob, identity or self.identity, self.code())
        result = asyncio.run(self.runtime.otp.verify(self.key, request))
        if result.valid:
            self.counter += 1
        return result

    def code(self) -> str:
        return str(self.hotp.at(self.counter))

    def entry(self) -> Any:
        """The cache's entry for this blob, looked up the way a check does."""
        key = self.runtime.registry.get_sync(self.key)
        blob = seeds.parse(self.blob)
        _, ref = _prepare(key, key.version_to_check(blob.version), blob, self.identity)
        return self.runtime.hsm.run_sync(lambda ops: ops._seeds.get(ref.wrap_key_id, ref.blob))


@pytest.fixture
def pkcs11_calls(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """C_Sign (every MAC, as python-pkcs11 makes it) and C_UnwrapKey (the adapter's one
    call of it for verification)."""
    calls: Counter[str] = Counter()
    sign, unwrap = SignMixin.sign, _ops._unwrap_for_mac

    def counted_sign(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls["sign"] += 1
        return sign(self, *args, **kwargs)

    def counted_unwrap(wrapper: Any, wrapped: bytes) -> Any:
        calls["unwrap"] += 1
        return unwrap(wrapper, wrapped)

    monkeypatch.setattr(SignMixin, "sign", counted_sign)
    monkeypatch.setattr(_ops, "_unwrap_for_mac", counted_unwrap)
    return calls


def cached(runtime: Any) -> int:
    return int(runtime.hsm.run_sync(lambda ops: ops.cached_seed_count()))


def session_objects(runtime: Any) -> int:
    return int(runtime.hsm.run_sync(lambda ops: ops.session_object_count()))


def settled(runtime: Any, expected: Callable[[], int]) -> int:
    """The session objects once they equal ``expected()`` (or after 2 s): the session-scoped
    test server shares the token and may be creating a token object (an automatic rotation)
    that SoftHSM 2.6 shows this process, for an instant, before its attributes are written."""
    deadline = time.monotonic() + 2
    while (found := session_objects(runtime)) != expected() and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def test_a_cached_check_costs_one_hsm_call(runtime: Any, pkcs11_calls: Counter[str]) -> None:
    token = Token(runtime)
    pkcs11_calls.clear()
    assert token.check().valid is True
    # First check: the binding's MAC, the unwrap, the code's MAC.
    assert pkcs11_calls == Counter(sign=2, unwrap=1)
    pkcs11_calls.clear()
    assert token.check().valid is True
    assert pkcs11_calls == Counter(sign=1)  # the code's MAC, nothing else
    # A wrong code on a cached seed costs every candidate's MAC, still no unwrap.
    pkcs11_calls.clear()
    wrong = "000000" if token.code() != "000000" else "111111"
    request = VerifyInput(token.blob, token.identity, wrong)
    assert asyncio.run(runtime.otp.verify(KEY, request)).valid is False
    assert pkcs11_calls["unwrap"] == 0
    assert pkcs11_calls["sign"] == 11  # counter .. counter + the default window of 10


def test_the_cached_seed_is_a_sensitive_never_extractable_session_object(runtime: Any) -> None:
    token = Token(runtime)
    assert token.check().valid is True
    entry = token.entry()
    assert entry is not None

    def attributes(ops: Any) -> tuple[Any, ...]:
        seed = entry.handle
        with pytest.raises(p11e.AttributeSensitive):
            seed[Attribute.VALUE]
        return tuple(
            bool(seed[a])
            for a in (
                Attribute.TOKEN,
                Attribute.SENSITIVE,
                Attribute.EXTRACTABLE,
                Attribute.SIGN,
                Attribute.ENCRYPT,
                Attribute.DECRYPT,
                Attribute.WRAP,
                Attribute.UNWRAP,
                Attribute.DERIVE,
                Attribute.MODIFIABLE,
            )
        )

    token_, sensitive, extractable, sign, *others = runtime.hsm.run_sync(attributes)
    assert token_ is False
    assert sensitive is True
    assert extractable is False
    assert sign is True
    assert others == [False] * 6


def test_another_identity_on_a_cached_blob_is_refused_as_before(
    runtime: Any, pkcs11_calls: Counter[str]
) -> None:
    token = Token(runtime)
    assert token.check().valid is True
    pkcs11_calls.clear()
    other = TokenIdentity(token.identity.token_serial, "app", "another-device")
    with pytest.raises(BadRequest, match="bound to another"):
        token.check(identity=other)
    # The HSM was asked (binding, then tag), the cached seed was not used.
    assert pkcs11_calls == Counter(sign=2)
    entry = token.entry()
    assert len(entry.bindings) == 1
    assert token.check().valid is True


def test_a_tampered_blob_never_hits(runtime: Any, pkcs11_calls: Counter[str]) -> None:
    token = Token(runtime)
    assert token.check().valid is True
    value = seeds.parse(token.blob)
    before = cached(runtime)
    for offset in (17, 52, -40):  # the binding, the parameters, the wrapped seed
        raw = bytearray(value.signed + value.tag)
        raw[offset] ^= 0x01
        tampered = seeds.assemble(value.version, bytes(raw), b"")
        pkcs11_calls.clear()
        with pytest.raises(InvalidCiphertext):
            token.check(blob=tampered)
        # The binding's MAC refused it (the tag's told a forgery from another token's blob),
        # or the parameters did not parse; no seed was unwrapped or used.
        assert pkcs11_calls["sign"] == (2 if offset != 52 else 0)
        assert pkcs11_calls["unwrap"] == 0
    assert cached(runtime) == before
    assert token.check().valid is True


def test_eviction_destroys_the_object(runtime: Any) -> None:
    def resize(size: int) -> int:
        old = int(runtime.hsm.run_sync(lambda ops: ops._seeds.size))
        runtime.hsm.run_sync(lambda ops: setattr(ops._seeds, "size", size))
        return old

    old = resize(3)
    try:
        tokens = [Token(runtime) for _ in range(6)]
        for token in tokens:
            assert token.check().valid is True
            assert cached(runtime) <= 3
            # Every session object there is, is a cached seed: the evicted ones are gone.
            assert settled(runtime, lambda: cached(runtime)) == cached(runtime)
        assert cached(runtime) == 3
        assert tokens[0].entry() is None
        assert tokens[-1].entry() is not None
        # An evicted seed is simply unwrapped again.
        assert tokens[0].check().valid is True
    finally:
        runtime.hsm.run_sync(lambda ops: setattr(ops._seeds, "size", old))


def test_deactivation_drops_the_entry_and_later_checks_are_refused(runtime: Any) -> None:
    token = Token(runtime)
    assert token.check().valid is True
    assert token.entry() is not None
    asyncio.run(runtime.otp.deactivate(KEY, token.blob, actor="test"))
    assert token.entry() is None
    result = token.check()
    assert result.valid is False
    assert result.reason == "deactivated"


def test_a_trimmed_version_leaves_no_cached_seed(runtime: Any) -> None:
    name = f"otp-cache-{uuid.uuid4().hex[:8]}"
    runtime.registry.create_sync(name, "otp-seed")
    old = Token(runtime, name)
    assert old.check().valid is True
    wrap_id = runtime.registry.get_sync(name).versions[1].object_id("wrap")

    def entries_of_v1(ops: Any) -> int:
        return sum(1 for k in ops._seeds._entries if k[0] == wrap_id)

    assert runtime.hsm.run_sync(entries_of_v1) == 1
    runtime.registry.rotate_sync(name)
    new = Token(runtime, name)
    assert new.check().valid is True
    runtime.registry.configure_sync(name, min_decryption_version=2, min_encryption_version=2)
    runtime.registry.trim_sync(name, 2, by=Authority("test", exempt=True))
    assert runtime.hsm.run_sync(entries_of_v1) == 0
    assert settled(runtime, lambda: cached(runtime)) == cached(runtime)
    with pytest.raises(BadRequest):
        old.check()
    assert new.check().valid is True


def test_a_seed_gone_from_under_the_cache_is_unwrapped_again(
    runtime: Any, pkcs11_calls: Counter[str]
) -> None:
    token = Token(runtime)
    assert token.check().valid is True
    entry = token.entry()
    runtime.hsm.run_sync(lambda ops: entry.handle.destroy())
    pkcs11_calls.clear()
    assert token.check().valid is True
    assert pkcs11_calls["unwrap"] == 1
    assert settled(runtime, lambda: cached(runtime)) == cached(runtime)
    pkcs11_calls.clear()
    assert token.check().valid is True
    assert pkcs11_calls == Counter(sign=1)


def test_a_lost_session_clears_the_cache_and_checks_recover(runtime: Any) -> None:
    token = Token(runtime)
    assert token.check().valid is True
    assert cached(runtime) >= 1

    def lose_session(ops: Any) -> None:
        ops.session.close()  # C_CloseSession on the session that logged in: all objects go

    runtime.hsm.run_sync(lose_session)
    with pytest.raises(HsmUnavailable):
        token.check()
    assert runtime.hsm.healthy() is False
    # A new session: an empty cache, the seed unwrapped afresh, the same code still good
    # (the refused check never reached the ledger).
    assert token.check().valid is True
    assert runtime.hsm.healthy() is True
    assert cached(runtime) == 1
    assert settled(runtime, lambda: 1) == 1


def test_two_workers_with_their_own_cached_seed_never_accept_a_code_twice(runtime: Any) -> None:
    """Each worker's cache holds the seed; the ledger alone decides acceptance."""
    a = runtime.otp
    b = OtpService(runtime.registry, runtime.hsm, runtime.otp.ledger)
    token = Token(runtime)

    def check(service: OtpService, counter: int) -> Any:
        request = VerifyInput(token.blob, token.identity, str(token.hotp.at(counter)))
        return asyncio.run(service.verify(KEY, request))

    assert check(a, 0).valid is True
    assert check(b, 0).valid is False
    assert check(b, 1).valid is True
    assert check(a, 1).valid is False
    assert check(a, 2).valid is True
