"""Attribute encodings python-pkcs11 0.10.1 lacks: ``CKA_ALLOWED_MECHANISMS``.

Out of the box the library answers "Can't handle attribute type" for it. The value is a
``CK_MECHANISM_TYPE[]`` (PKCS#11 v2.40 §4.4, §10.2): an array of ``CK_ULONG`` in the
platform's own size and byte order, which is what ``struct``'s native ``L`` is. The mapper is
handed to ``Token.open``; python-pkcs11 copies the packed bytes into its own buffer for the
call, so nothing has to be kept alive here.

SoftHSM 2.6.1 enforces the list at ``C_*Init`` for secret and private keys and for public
verification; it fixes the list at creation (``AttributeReadOnly`` afterwards) and refuses an
empty one (``AttributeValueInvalid``): softhsm/README.md has the whole table.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from pkcs11 import Attribute, Mechanism
from pkcs11.attributes import AttributeMapper

_ULONG = "L"  # native unsigned long: CK_ULONG on every platform PKCS#11 supports
_ULONG_SIZE = struct.calcsize(_ULONG)


def pack_mechanisms(mechanisms: Iterable[int]) -> bytes:
    values = [int(m) for m in mechanisms]
    return struct.pack(f"{len(values)}{_ULONG}", *values)


def unpack_mechanisms(raw: bytes) -> list[Mechanism | int]:
    """Known values become ``Mechanism`` members; vendor-defined ones stay ``int``."""
    if len(raw) % _ULONG_SIZE:
        raise ValueError("CKA_ALLOWED_MECHANISMS is not a whole number of CK_ULONGs")
    out: list[Mechanism | int] = []
    for (value,) in struct.iter_unpack(_ULONG, raw):
        try:
            out.append(Mechanism(value))
        except ValueError:
            out.append(value)
    return out


def attribute_mapper() -> AttributeMapper:
    """python-pkcs11's mapper, taught ``CKA_ALLOWED_MECHANISMS``."""
    mapper = AttributeMapper()
    mapper.register_handler(Attribute.ALLOWED_MECHANISMS, pack_mechanisms, unpack_mechanisms)
    return mapper
