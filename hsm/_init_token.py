"""Token initialization (``C_InitToken`` + ``C_InitPIN``) without a PIN on any command line.

python-pkcs11 has no ``C_InitToken``, and ``softhsm2-util``/``pkcs11-tool`` only take PINs
as arguments or from a terminal. This calls the module through ``ctypes`` in a child
process (so its ``C_Initialize``/``C_Finalize`` never meet the service's own), then sets
the user PIN through python-pkcs11 as the security officer.
"""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
from typing import Any

import pkcs11
import pkcs11.exceptions as p11e

from hsm.errors import ModuleUnusable

CKR_OK = 0
CKF_TOKEN_INITIALIZED = 0x400
_LABEL_LEN = 32  # CK_TOKEN_INFO.label is 32 blank-padded bytes (PKCS#11 v2.40 §3.2)

CK_ULONG = ctypes.c_ulong


class _CkTokenInfo(ctypes.Structure):
    _fields_ = [
        ("label", ctypes.c_char * 32),
        ("manufacturerID", ctypes.c_char * 32),
        ("model", ctypes.c_char * 16),
        ("serialNumber", ctypes.c_char * 16),
        ("flags", CK_ULONG),
        ("rest", ctypes.c_byte * 256),
    ]


def _init_in_child(module_path: str, label: str, so_pin: str) -> str:
    lib = ctypes.CDLL(module_path)
    _check(lib.C_Initialize(None), "C_Initialize")
    try:
        count = CK_ULONG(0)
        _check(lib.C_GetSlotList(ctypes.c_ubyte(1), None, ctypes.byref(count)), "C_GetSlotList")
        slots = (CK_ULONG * count.value)()
        _check(lib.C_GetSlotList(ctypes.c_ubyte(1), slots, ctypes.byref(count)), "C_GetSlotList")
        for slot in slots[: count.value]:
            info = _CkTokenInfo()
            _check(lib.C_GetTokenInfo(slot, ctypes.byref(info)), "C_GetTokenInfo")
            if not info.flags & CKF_TOKEN_INITIALIZED:
                padded = label.encode().ljust(_LABEL_LEN, b" ")
                pin = so_pin.encode()
                rv = lib.C_InitToken(
                    slot, ctypes.c_char_p(pin), CK_ULONG(len(pin)), ctypes.c_char_p(padded)
                )
                _check(rv, "C_InitToken")
                return "ok"
        return "no free slot for a new token"
    finally:
        lib.C_Finalize(None)


def _check(rv: int, what: str) -> None:
    if rv != CKR_OK:
        raise RuntimeError(f"{what} returned 0x{rv:x}")


def token_exists(module_path: str, label: str) -> bool:
    lib = pkcs11.lib(module_path)
    lib.reinitialize()
    try:
        lib.get_token(token_label=label)
    except p11e.NoSuchToken:
        return False
    return True


def init_token(module_path: str, label: str, so_pin: str, user_pin: str) -> None:
    """Initialize a free slot's token with ``label`` and set its user PIN.

    The PINs travel to the child on its standard input, never in its argv.
    """
    request = json.dumps({"module": module_path, "label": label, "so_pin": so_pin})
    child = subprocess.run(
        [sys.executable, "-c", "from hsm._init_token import child_main; child_main()"],
        input=request,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    outcome = child.stdout.strip() or "token initialization failed"
    if child.returncode != 0 or outcome != "ok":
        raise ModuleUnusable(outcome)
    lib = pkcs11.lib(module_path)
    lib.reinitialize()
    token = lib.get_token(token_label=label)
    with token.open(rw=True, so_pin=so_pin) as session:
        session.init_pin(user_pin)


def set_pin(module_path: str, label: str, old_pin: str, new_pin: str, *, so: bool) -> None:
    """``C_SetPIN`` for the user (or, with ``so``, the security officer), logged in as that
    role with the current PIN."""
    token = _token(module_path, label)
    role = {"so_pin": old_pin} if so else {"user_pin": old_pin}
    with token.open(rw=True, **role) as session:
        session.set_pin(old_pin, new_pin)


def reset_user_pin(module_path: str, label: str, so_pin: str, new_pin: str) -> None:
    """``C_InitPIN``: the security officer sets a new user PIN (a forgotten or locked one)."""
    with _token(module_path, label).open(rw=True, so_pin=so_pin) as session:
        session.init_pin(new_pin)


def _token(module_path: str, label: str) -> Any:
    lib = pkcs11.lib(module_path)
    lib.reinitialize()
    try:
        return lib.get_token(token_label=label)
    except p11e.NoSuchToken:
        raise ModuleUnusable(f"no token labelled {label!r}") from None


def child_main() -> None:
    request = json.loads(sys.stdin.read())
    try:
        print(_init_in_child(request["module"], request["label"], request["so_pin"]))
    except (OSError, RuntimeError) as exc:
        print(f"token initialization failed: {exc}")
        sys.exit(1)
