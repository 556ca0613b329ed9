"""Doubles of the token's key objects, put in front of the real ones on the vault's live HSM
session: one counts the calls made on keys, one plays a module that picks its own GCM IV."""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from pkcs11 import Mechanism, ObjectClass

_OPERATIONS = ("encrypt", "decrypt", "sign", "verify", "derive_key", "wrap_key", "unwrap_key")
GCM_IV_BYTES = 12


@contextlib.contextmanager
def wrapped_keys(runtime: Any, wrap: Callable[[Any], Any]) -> Iterator[None]:
    """Every key object the vault's HSM session hands out while inside is ``wrap(key)``."""

    def install(ops: Any) -> None:
        original = ops._key

        def wrapped(key_id: bytes, object_class: ObjectClass = ObjectClass.SECRET_KEY) -> Any:
            return wrap(original(key_id, object_class))

        ops._key = wrapped

    runtime.hsm.run_sync(install)
    try:
        yield
    finally:
        runtime.hsm.run_sync(lambda ops: ops.__dict__.pop("_key", None))


class _Counted:
    """A key object whose operations are counted on their way to the token."""

    def __init__(self, key: Any, calls: Counter[str]) -> None:
        self._key = key
        self._calls = calls

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._key, name)
        if name in _OPERATIONS:
            self._calls[name] += 1
        return value


@contextlib.contextmanager
def token_calls(runtime: Any) -> Iterator[Counter[str]]:
    """Counts every operation on a key object the vault's HSM session makes while inside."""
    calls: Counter[str] = Counter()
    with wrapped_keys(runtime, lambda key: _Counted(key, calls)):
        yield calls


def _address(buffer: bytes | bytearray) -> int:
    """Where the bytes of ``buffer`` are: what python-pkcs11 puts in CK_GCM_PARAMS.pIv."""
    if isinstance(buffer, bytearray):
        return ctypes.addressof((ctypes.c_char * len(buffer)).from_buffer(buffer))
    address = ctypes.cast(ctypes.c_char_p(buffer), ctypes.c_void_p).value
    assert address is not None
    return address


class IvWritingKey:
    """A key of a module that ignores the GCM IV it is offered and writes its own into the
    caller's ``CK_GCM_PARAMS.pIv`` buffer, as AWS CloudHSM documents: the write happens
    before the real token reads the IV, so SoftHSM then encrypts under the module's IV."""

    def __init__(self, key: Any, chosen: list[bytes]) -> None:
        self._key = key
        self._chosen = chosen

    def __getattr__(self, name: str) -> Any:
        return getattr(self._key, name)

    def encrypt(self, data: bytes, *, mechanism: Any = None, mechanism_param: Any = None) -> Any:
        if mechanism is Mechanism.AES_GCM:
            own = os.urandom(GCM_IV_BYTES)
            ctypes.memmove(_address(mechanism_param.nonce), own, GCM_IV_BYTES)
            self._chosen.append(own)
        return self._key.encrypt(data, mechanism=mechanism, mechanism_param=mechanism_param)
