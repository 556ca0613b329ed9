"""Finding the token and logging in, with the retries several processes on one token need."""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import pkcs11
import pkcs11.exceptions as p11e

from hsm._attributes import MAPPER
from hsm._ops import Pkcs11Ops
from hsm.errors import LoginRefused, ModuleUnusable

log = logging.getLogger("hsm")

# While one process rewrites SoftHSM2's file store, another may see no token or a
# GeneralError (measured: 38-78% of attempts with three processes looping).
_TRANSIENT = (p11e.NoSuchToken, p11e.GeneralError, p11e.TokenNotPresent, p11e.DeviceError)
_LIBS: dict[str, Any] = {}


def library(module_path: str) -> Any:
    lib = _LIBS.get(module_path)
    if lib is None:
        try:
            lib = pkcs11.lib(module_path)
        except RuntimeError:
            raise ModuleUnusable("cannot load the PKCS#11 module") from None
        _LIBS[module_path] = lib
    return lib


class TokenSession(Pkcs11Ops):
    """A logged-in read-write session on the token with the configured label."""

    def __init__(self, session: Any, lib: Any, seed_cache: int = 0) -> None:
        super().__init__(session, seed_cache)
        self.session = session
        self.lib = lib

    def reinitialize(self) -> None:
        """``C_Finalize`` + ``C_Initialize``: every session of the process ends, and the
        token's object store is read afresh."""
        self.lib.reinitialize()

    def close(self) -> None:
        # Closing the session that logged in logs out the whole process: only done when the
        # session is being replaced or the process ends.
        try:
            self.session.close()
        except p11e.PKCS11Error:
            log.debug("closing the HSM session failed", exc_info=True)


def open_session(
    module_path: str, token_label: str, pin: str, attempts: int = 30, *, seed_cache: int = 0
) -> TokenSession:
    lib = library(module_path)
    delay = 0.02
    for attempt in range(attempts):
        try:
            # A no-op unless an earlier re-initialization failed half-way (C_Finalize done,
            # C_Initialize refused while the token's store was unreadable): the library
            # would otherwise answer CKR_CRYPTOKI_NOT_INITIALIZED for good.
            lib.initialize()
            token = lib.get_token(token_label=token_label)
            # MAPPER encodes CKA_ALLOWED_MECHANISMS and the templates keys are generated with.
            try:
                session = token.open(rw=True, user_pin=pin, attribute_mapper=MAPPER)
            except p11e.UserAlreadyLoggedIn:
                session = token.open(rw=True, attribute_mapper=MAPPER)
            return TokenSession(session, lib, seed_cache)
        except p11e.PinIncorrect:
            raise LoginRefused("HSM login refused: wrong PIN") from None
        except p11e.PinLocked:
            raise LoginRefused("HSM login refused: PIN locked") from None
        except _TRANSIENT as exc:
            if attempt == attempts - 1:
                raise
            log.debug("token not ready (%s), retrying", type(exc).__name__)
            time.sleep(delay * (1 + random.random()))  # noqa: S311 - jitter, not crypto
            delay = min(delay * 2, 0.5)
    raise ModuleUnusable("HSM token not found")
