"""Request bodies (Vault Transit field names). A JSON ``null`` counts as absent, as in Vault."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta, Struct

Name = Annotated[str, Meta(min_length=1, max_length=128)]
Version = Annotated[int, Meta(ge=0, le=2**31 - 1)]
B64 = Annotated[str, Meta(max_length=16 * 1024 * 1024)]


class CreateKey(Struct, kw_only=True):
    type: str | None = None
    auto_rotate_period: int | str | None = None
    exportable: bool | None = None
    allow_plaintext_backup: bool | None = None
    derived: bool | None = None
    convergent_encryption: bool | None = None


class ConfigKey(Struct, kw_only=True):
    min_decryption_version: Version | None = None
    min_encryption_version: Version | None = None
    deletion_allowed: bool | None = None
    auto_rotate_period: int | str | None = None
    exportable: bool | None = None
    allow_plaintext_backup: bool | None = None


class BatchItem(Struct, kw_only=True):
    plaintext: B64 | None = None
    ciphertext: str | None = None
    associated_data: B64 | None = None
    context: B64 | None = None
    nonce: str | None = None
    reference: str | None = None
    key_version: Version | None = None


class EncryptBody(BatchItem, kw_only=True):
    """A single item's fields at the top level, or ``batch_input``."""

    type: str | None = None
    batch_input: list[BatchItem] | None = None
    partial_failure_response_code: int | None = None


class DataKeyBody(Struct, kw_only=True):
    bits: int | None = None
    associated_data: B64 | None = None
    context: B64 | None = None
    nonce: str | None = None
    key_version: Version | None = None


class RandomBody(Struct, kw_only=True):
    bytes: int | None = None
    format: str | None = None
    source: str | None = None
