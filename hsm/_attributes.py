"""Attribute handlers python-pkcs11 0.10.1 lacks: ``CKA_ALLOWED_MECHANISMS`` (an array of
``CK_MECHANISM_TYPE``) and ``CKA_{WRAP,UNWRAP,DERIVE}_TEMPLATE`` (arrays of ``CK_ATTRIBUTE``).

Without them the library refuses those attributes ("Can't handle attribute type"). Every
session the adapter opens gets :data:`MAPPER` (``token.open(attribute_mapper=...)``), so a
key template may name them like any other attribute. Measured on SoftHSM 2.6.1
(``softhsm/README.md``): the token enforces both.

How python-pkcs11 calls a handler (``AttributeList.from_template`` in ``_pkcs11.pyx``):
``pack(value) -> bytes`` runs for each template entry and the bytes are copied into a buffer
that lives until the C call returns. For a ``CK_ULONG`` array that copy is the whole value.
For a ``CK_ATTRIBUTE`` array the copy holds *pointers* (``pValue``) into buffers of ours,
which must outlive the call: they are interned by content (:class:`_TemplatePacker`), so
memory grows with the number of distinct templates a process uses, never per call.

Reading a template attribute back through python-pkcs11 is not supported (it hands the token
an uninitialised array); nothing here needs to.
"""

from __future__ import annotations

import ctypes
import struct
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from pkcs11 import Attribute, Mechanism
from pkcs11.attributes import AttributeMapper

__all__ = ["MAPPER", "make_attribute_mapper"]

# CK_ULONG is C ``unsigned long`` (PKCS#11 v2.40 §2.1): struct's native "L" and ctypes.c_ulong.
_CK_ULONG = ctypes.c_ulong
_ULONG_SIZE = struct.calcsize("L")


class _CkAttribute(ctypes.Structure):
    """``struct { CK_ATTRIBUTE_TYPE type; CK_VOID_PTR pValue; CK_ULONG ulValueLen; }``"""

    _fields_ = (
        ("type", _CK_ULONG),
        ("pValue", ctypes.c_void_p),
        ("ulValueLen", _CK_ULONG),
    )


_TEMPLATE_ATTRIBUTES = (
    Attribute.WRAP_TEMPLATE,
    Attribute.UNWRAP_TEMPLATE,
    Attribute.DERIVE_TEMPLATE,
)


def pack_mechanisms(mechanisms: Iterable[int]) -> bytes:
    values = [int(m) for m in mechanisms]
    return struct.pack(f"{len(values)}L", *values)


def unpack_mechanisms(raw: bytes) -> list[Mechanism | int]:
    """Known values become ``Mechanism`` members; vendor-defined ones stay ``int``."""
    if len(raw) % _ULONG_SIZE:
        raise ValueError(f"ALLOWED_MECHANISMS of {len(raw)} bytes is not a CK_ULONG array")
    out: list[Mechanism | int] = []
    for (value,) in struct.iter_unpack("L", raw):
        try:
            out.append(Mechanism(value))
        except ValueError:
            out.append(value)
    return out


class _TemplatePacker:
    """Packs ``{Attribute: value}`` into a ``CK_ATTRIBUTE`` array whose value buffers stay
    alive: each nested value is packed by the mapper's own handler for it (``CK_BBOOL`` is one
    byte, ``CK_ULONG`` native, ``ALLOWED_MECHANISMS`` an array), and the result is interned."""

    def __init__(self, mapper: AttributeMapper) -> None:
        self._mapper = mapper
        self._lock = threading.Lock()
        self._interned: dict[
            tuple[tuple[int, bytes], ...], tuple[bytes, list[ctypes.Array[ctypes.c_char]]]
        ] = {}

    def pack(self, template: Mapping[Attribute, Any]) -> bytes:
        entries = tuple(
            (int(attr), self._mapper.pack_attribute(attr, value))
            for attr, value in template.items()
        )
        with self._lock:
            hit = self._interned.get(entries)
            if hit is not None:
                return hit[0]
            array = (_CkAttribute * len(entries))()
            buffers: list[ctypes.Array[ctypes.c_char]] = []
            for i, (attr_type, value) in enumerate(entries):
                buf = ctypes.create_string_buffer(value, max(len(value), 1))
                buffers.append(buf)
                array[i].type = attr_type
                array[i].pValue = ctypes.cast(buf, ctypes.c_void_p).value if value else None
                array[i].ulValueLen = len(value)
            packed = bytes(array)  # its pointers refer to `buffers`, kept alive below
            self._interned[entries] = (packed, buffers)
            return packed

    @staticmethod
    def unpack(raw: bytes) -> dict[int, int]:
        """Types and sizes only: the pointers in what the library hands back are not ours."""
        size = ctypes.sizeof(_CkAttribute)
        count = len(raw) // size
        array = (_CkAttribute * count).from_buffer_copy(raw[: count * size])
        return {int(a.type): int(a.ulValueLen) for a in array}


def make_attribute_mapper() -> AttributeMapper:
    """python-pkcs11's mapper, plus ALLOWED_MECHANISMS and the three template attributes."""
    mapper = AttributeMapper()
    mapper.register_handler(Attribute.ALLOWED_MECHANISMS, pack_mechanisms, unpack_mechanisms)
    packer = _TemplatePacker(mapper)
    for attr in _TEMPLATE_ATTRIBUTES:
        mapper.register_handler(attr, packer.pack, packer.unpack)
    return mapper


MAPPER = make_attribute_mapper()
