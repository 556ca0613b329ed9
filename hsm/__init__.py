"""A self-contained PKCS#11 adapter: the only package that imports ``pkcs11``.

It offers a small interface (:mod:`hsm.interface`: value types, the operations a job may
call, the job runner), its own errors (:mod:`hsm.errors`), a runner that owns the logged-in
session (:func:`connect`), and token initialization. It knows nothing of its callers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from hsm import errors
from hsm.interface import (
    GeneratedSeed,
    HsmObserver,
    HsmOps,
    JobRunner,
    KeySpec,
    MacAlgorithm,
    ObjectInfo,
    SeedRef,
    SignScheme,
)

if TYPE_CHECKING:
    from hsm._thread import HsmThread

__all__ = [
    "GeneratedSeed",
    "HsmObserver",
    "HsmOps",
    "JobRunner",
    "KeySpec",
    "MacAlgorithm",
    "ObjectInfo",
    "SeedRef",
    "SignScheme",
    "connect",
    "errors",
    "init_token",
    "reset_user_pin",
    "set_pin",
    "token_exists",
]


def connect(
    module_path: str,
    token_label: str,
    pin: Callable[[], str],
    *,
    inline_budget: float = 150e-6,
    observer: HsmObserver | None = None,
    fault_file: str | None = None,
    seed_cache: int = 0,
) -> HsmThread:
    """A runner with a session on the token labelled ``token_label``, opened in the background
    and re-opened whenever it is lost. ``pin`` is asked each time the session is opened (a PIN
    file may change); a PIN the token refused is not tried again. ``observer`` hears of every
    job and session (metrics). ``seed_cache``: how many unwrapped OTP seeds each session keeps
    (session objects, least recently used dropped first; 0: none). ``fault_file`` is for tests
    only: see ``hsm/_faults.py``."""
    from hsm._faults import FaultSwitch  # noqa: PLC0415 - pkcs11 only where the HSM is used
    from hsm._thread import HsmThread  # noqa: PLC0415
    from hsm._token import open_session  # noqa: PLC0415

    return HsmThread(
        lambda: open_session(module_path, token_label, pin(), seed_cache=seed_cache),
        inline_budget=inline_budget,
        credential=lambda: hashlib.sha256(pin().encode()).digest(),
        observer=observer,
        faults=FaultSwitch(fault_file) if fault_file else None,
    )


def init_token(module_path: str, label: str, so_pin: str, user_pin: str) -> None:
    """Initialize a free slot's token with ``label`` and set its user PIN (PINs never in argv)."""
    from hsm._init_token import init_token as run  # noqa: PLC0415

    run(module_path, label, so_pin, user_pin)


def set_pin(module_path: str, label: str, old_pin: str, new_pin: str, *, so: bool = False) -> None:
    """Change the user's (or the security officer's) PIN, logged in with the current one."""
    from hsm._init_token import set_pin as run  # noqa: PLC0415

    _translated(lambda: run(module_path, label, old_pin, new_pin, so=so))


def reset_user_pin(module_path: str, label: str, so_pin: str, new_pin: str) -> None:
    """The security officer sets a new user PIN (``C_InitPIN``)."""
    from hsm._init_token import reset_user_pin as run  # noqa: PLC0415

    _translated(lambda: run(module_path, label, so_pin, new_pin))


def _translated(fn: Callable[[], None]) -> None:
    from hsm._errors import PKCS11Error, translate  # noqa: PLC0415

    try:
        fn()
    except PKCS11Error as exc:
        raise translate(exc) from None


def token_exists(module_path: str, label: str) -> bool:
    from hsm._init_token import token_exists as run  # noqa: PLC0415

    return run(module_path, label)
