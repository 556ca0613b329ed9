"""The HSM adapter's own errors: what went wrong at the token, in the token's terms.

PKCS#11 return values become one of these in one place (``hsm/_errors.py``); callers see
nothing of ``pkcs11`` and translate these into their own errors. Messages never carry key
material, data or PINs.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationFailed",
    "DecryptionFailed",
    "HsmError",
    "HsmUnavailable",
    "InputRejected",
    "LoginRefused",
    "MechanismUnsupported",
    "ModuleUnusable",
    "ObjectMissing",
]


class HsmError(Exception):
    default_message = "HSM error"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.default_message)


class HsmUnavailable(HsmError):
    """The session, the token or the device cannot be used now; a later call may succeed
    (the runner re-opens the session by itself)."""

    default_message = "HSM unavailable"


class ObjectMissing(HsmUnavailable):
    """An object the caller named is not on the token, even after the token was read afresh
    (SoftHSM 2.6 can lose sight of other processes' objects). Never a wrong answer: the
    operation cannot be done."""

    default_message = "key object not found on the token"


class AuthenticationFailed(HsmError):
    """The data does not authenticate under the key (a GCM tag or a key-wrap integrity check
    failed) and the key itself is known to work: the input is at fault, not the device."""

    default_message = "data does not authenticate"


class DecryptionFailed(HsmError):
    """The data did not decrypt under the key, and the token did not say whether the data or
    the device is at fault (SoftHSM 2.6 reports a bad GCM tag and an internal fault alike, as
    ``CKR_GENERAL_ERROR``). ``HsmOps.key_works`` decides; a caller that does not ask must
    treat it as the device's fault."""

    default_message = "data did not decrypt"


class InputRejected(HsmError):
    """The token refused the caller's input (length, encoding, a parameter out of range)."""

    default_message = "the HSM refused the input"


class MechanismUnsupported(HsmError):
    """The token does not offer this mechanism or parameter (or the key's
    ``CKA_ALLOWED_MECHANISMS`` forbids it)."""

    default_message = "the HSM does not support this operation"


class LoginRefused(HsmError):
    """Wrong or locked PIN. Not retried with the same PIN: a real HSM locks the user after a
    few wrong attempts."""

    default_message = "HSM login refused"


class ModuleUnusable(HsmError):
    """The PKCS#11 module cannot be loaded, or the token is not there: configuration."""

    default_message = "PKCS#11 module or token unusable"
