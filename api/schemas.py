"""Request bodies (Vault Transit's field names) and the shapes of the answers, for decoding
and for the OpenAPI document. A JSON ``null`` counts as absent, as in Vault."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta, Struct

Name = Annotated[str, Meta(min_length=1, max_length=128)]
Version = Annotated[int, Meta(ge=0, le=2**31 - 1)]
B64 = Annotated[str, Meta(max_length=16 * 1024 * 1024)]
Reference = Annotated[str, Meta(max_length=1024)] | int | None
# Seconds (a number) or a duration string ("24h"); the domain checks the range.
Period = int | float | Annotated[str, Meta(max_length=64)] | None
# An integer status code; out of range means "revert to 400", as Vault does.
StatusCode = Annotated[int, Meta(ge=-(2**31), le=2**31 - 1)]


class CreateKey(Struct, kw_only=True):
    type: Annotated[str, Meta(max_length=64)] | None = None
    # The one job the key is for (README: "One key, one purpose"); the type's default if absent.
    purpose: Annotated[str, Meta(max_length=64)] | None = None
    auto_rotate_period: Period = None
    exportable: bool | None = None
    allow_plaintext_backup: bool | None = None
    derived: bool | None = None
    convergent_encryption: bool | None = None


class ConfigKey(Struct, kw_only=True):
    min_decryption_version: Version | None = None
    min_encryption_version: Version | None = None
    deletion_allowed: bool | None = None
    auto_rotate_period: Period = None
    exportable: bool | None = None
    allow_plaintext_backup: bool | None = None


class TrimKey(Struct, kw_only=True):
    # Any integer: the domain answers a negative or zero one in Vault's words.
    min_available_version: StatusCode | None = None


class _Item(Struct, kw_only=True):
    ciphertext: B64 | None = None
    associated_data: B64 | None = None
    context: B64 | None = None
    nonce: Annotated[str, Meta(max_length=1024)] | None = None
    reference: Reference = None
    key_version: Version | None = None


class BatchItem(_Item, kw_only=True):
    plaintext: B64 | None = None


class EncryptBody(_Item, kw_only=True):
    """A single item's fields at the top level, or ``batch_input``. As in Vault, a single
    encrypt with ``"plaintext": null`` is the empty message, and one without ``plaintext``
    at all is an error."""

    plaintext: B64 | msgspec.UnsetType | None = msgspec.UNSET
    type: Annotated[str, Meta(max_length=64)] | None = None
    batch_input: list[BatchItem] | None = None
    partial_failure_response_code: StatusCode | None = None


class DataKeyBody(Struct, kw_only=True):
    bits: Annotated[int, Meta(ge=0, le=2**31 - 1)] | None = None
    associated_data: B64 | None = None
    context: B64 | None = None
    nonce: Annotated[str, Meta(max_length=1024)] | None = None
    key_version: Version | None = None


class RandomBody(Struct, kw_only=True):
    bytes: Annotated[int, Meta(ge=0, le=2**31 - 1)] | None = None
    format: Annotated[str, Meta(max_length=16)] | None = None
    source: Annotated[str, Meta(max_length=16)] | None = None


class HashBody(Struct, kw_only=True):
    input: B64 | None = None
    algorithm: Annotated[str, Meta(max_length=1024)] | None = None
    format: Annotated[str, Meta(max_length=1024)] | None = None


# -- answers ---------------------------------------------------------------------------------


class Error(Struct):
    """Every error: the reasons (the request id is in the ``X-Request-Id`` header)."""

    errors: list[str]


def envelope(name: str, data: Any) -> type[Struct]:
    """Vault's success envelope around ``data``."""
    return msgspec.defstruct(
        name,
        [
            ("request_id", str),
            ("lease_id", str),
            ("renewable", bool),
            ("lease_duration", int),
            ("data", data),
            ("wrap_info", None),
            ("warnings", list[str] | None),
            ("auth", None),
        ],
    )


class Encrypted(Struct):
    ciphertext: str
    key_version: int


class BatchResult(Struct, kw_only=True, omit_defaults=True):
    """One item of a batch answer: its result fields, or ``error``; ``reference`` echoed."""

    reference: str | int | None = None
    error: str | None = None
    ciphertext: str | None = None
    plaintext: str | None = None
    key_version: int | None = None
    signature: str | None = None
    hmac: str | None = None
    valid: bool | None = None
    digest: str | None = None
    blind_index: str | None = None


class BatchResults(Struct):
    batch_results: list[BatchResult]


class Plaintext(Struct):
    plaintext: str


class DataKey(Struct, kw_only=True):
    ciphertext: str
    key_version: int
    plaintext: str | None = None


class RandomBytes(Struct):
    random_bytes: str


class HashSum(Struct):
    sum: str


class ExportedKeys(Struct):
    keys: dict[str, str]
    name: str
    type: str


class KeyNames(Struct):
    keys: list[str]


class KeyInfo(Struct, kw_only=True):
    name: str
    type: str
    purpose: str
    latest_version: int
    min_available_version: int
    min_decryption_version: int
    min_encryption_version: int
    deletion_allowed: bool
    exportable: bool
    auto_rotate_period: int
    keys: dict[str, Any] | None = None
    supports_encryption: bool
    supports_decryption: bool
    supports_signing: bool
    supports_derivation: bool
    allow_plaintext_backup: bool
    derived: bool
    imported_key: bool
    key_size: int | None = None


class Valid(Struct):
    valid: bool
