"""PKCS#11 behind the vault's small HSM interface. The only package that imports ``pkcs11``."""

from __future__ import annotations

from hsm._init_token import init_token, token_exists
from hsm._thread import HsmThread
from hsm._token import TokenSession, open_session

__all__ = ["HsmThread", "TokenSession", "connect", "init_token", "open_session", "token_exists"]


def connect(module_path: str, token_label: str, pin: str) -> HsmThread:
    """Start the HSM thread with a logged-in session on the token labelled ``token_label``."""
    return HsmThread(lambda: open_session(module_path, token_label, pin))
