"""PKCS#11 exceptions become the vault's own, here and nowhere else."""

from __future__ import annotations

import logging

import pkcs11.exceptions as p11e

from vault.errors import BadRequest, ConfigError, HsmUnavailable, NotFound, VaultError

log = logging.getLogger("hsm")

# The session or the device is gone: the next job re-opens the session (see _thread.py).
SESSION_LOST: tuple[type[Exception], ...] = (
    p11e.SessionClosed,
    p11e.SessionHandleInvalid,
    p11e.UserNotLoggedIn,
    p11e.TokenNotPresent,
    p11e.TokenNotRecognised,
    p11e.DeviceRemoved,
    p11e.DeviceError,
    p11e.DeviceMemory,
    p11e.KeyHandleInvalid,
    p11e.ObjectHandleInvalid,
)

# A caller's input the token refused: a 400, never a 503.
_BAD_INPUT: tuple[type[Exception], ...] = (
    p11e.DataLenRange,
    p11e.DataInvalid,
    p11e.EncryptedDataInvalid,
    p11e.EncryptedDataLenRange,
    p11e.WrappedKeyInvalid,
    p11e.WrappedKeyLenRange,
    p11e.SignatureInvalid,
    p11e.SignatureLenRange,
)


def translate(exc: BaseException) -> VaultError:
    """Map one exception raised inside an HSM job to the error the caller sees."""
    if isinstance(exc, VaultError):
        return exc
    if isinstance(exc, p11e.NoSuchKey):
        return NotFound("key version has no HSM object")
    if isinstance(exc, p11e.PinIncorrect | p11e.PinLocked | p11e.PinInvalid | p11e.PinLenRange):
        log.error("HSM login refused: %s", type(exc).__name__)
        return ConfigError("HSM login refused")
    if isinstance(exc, _BAD_INPUT):
        return BadRequest("the HSM refused the input")
    if isinstance(exc, p11e.MechanismInvalid | p11e.MechanismParamInvalid):
        log.error("HSM mechanism refused: %s", type(exc).__name__)
        return HsmUnavailable("the HSM does not support this operation")
    if isinstance(exc, p11e.PKCS11Error):
        log.warning("HSM error: %s", type(exc).__name__)
        return HsmUnavailable()
    log.exception("unexpected error in an HSM job", exc_info=exc)
    return HsmUnavailable()
