"""PKCS#11 exceptions become the adapter's own (:mod:`hsm.errors`), here and nowhere else."""

from __future__ import annotations

import logging

import pkcs11.exceptions as p11e

from hsm.errors import (
    HsmError,
    HsmUnavailable,
    InputRejected,
    LoginRefused,
    MechanismUnsupported,
    ModuleUnusable,
)

log = logging.getLogger("hsm")

PKCS11Error = p11e.PKCS11Error

# The session or the device is gone: the runner re-opens the session (see _thread.py).
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

# A caller's input the token refused: the caller's fault, never the device's.
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
_LOGIN: tuple[type[Exception], ...] = (
    p11e.PinIncorrect,
    p11e.PinLocked,
    p11e.PinInvalid,
    p11e.PinLenRange,
    p11e.PinExpired,
)
_MECHANISM: tuple[type[Exception], ...] = (
    p11e.MechanismInvalid,
    p11e.MechanismParamInvalid,
    p11e.KeyTypeInconsistent,
    p11e.FunctionNotSupported,
)


# Return values python-pkcs11 0.10 has no class for ("Unmapped error code 0x68"): the key's
# policy forbids the call (PKCS#11 v2.40 §5.1: CKR_KEY_FUNCTION_NOT_PERMITTED,
# CKR_ACTION_PROHIBITED).
_KEY_POLICY_CODES = ("0x68", "0x1b")


def translate(exc: BaseException) -> HsmError:
    """The adapter's error for one exception raised by python-pkcs11."""
    if isinstance(exc, HsmError):
        return exc
    if type(exc) is PKCS11Error and str(exc).endswith(_KEY_POLICY_CODES):
        log.error("the HSM refused a use the key was not made for")
        return MechanismUnsupported("the key may not be used this way")
    if isinstance(exc, _LOGIN):
        log.error("HSM login refused: %s", type(exc).__name__)
        return LoginRefused()
    if isinstance(exc, p11e.NoSuchToken):
        return ModuleUnusable("HSM token not found")
    if isinstance(exc, _BAD_INPUT):
        return InputRejected()
    if isinstance(exc, _MECHANISM):
        log.error("HSM refused the mechanism: %s", type(exc).__name__)
        return MechanismUnsupported()
    log.warning("HSM error: %s", type(exc).__name__)
    return HsmUnavailable()
