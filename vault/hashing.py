"""Transit's keyless ``hash``: a digest of the caller's bytes, computed on the host (there is
no key and nothing secret about the function), with Vault's algorithms, formats, order of
checks and messages (docs/transit-reference.md, OpenBao's ``pathHashWrite``)."""

from __future__ import annotations

import base64
import hashlib

from vault.encoding import go_b64decode
from vault.errors import BadRequest

DEFAULT_ALGORITHM = "sha2-256"
DEFAULT_FORMAT = "hex"
# Vault's names → hashlib's (FIPS 180-4 SHA-2, FIPS 202 SHA-3). Matching is case-sensitive.
ALGORITHMS = {
    "sha2-224": "sha224",
    "sha2-256": "sha256",
    "sha2-384": "sha384",
    "sha2-512": "sha512",
    "sha3-224": "sha3_224",
    "sha3-256": "sha3_256",
    "sha3-384": "sha3_384",
    "sha3-512": "sha3_512",
}
FORMATS = ("hex", "base64")
_ECHO = 128  # at most this much of a caller's value is echoed in a message


def hash_sum(input_b64: str | None, algorithm: str | None, output_format: str | None) -> str:
    """The digest of the base64 ``input`` as hex or base64. ``None`` means absent (the
    defaults); an empty string is a value, and is refused like any unknown one."""
    if input_b64 is None:
        raise BadRequest("input missing")
    try:
        data = go_b64decode(input_b64)
    except ValueError as exc:
        raise BadRequest(f"unable to decode input as base64: {exc}") from None
    chosen_format = DEFAULT_FORMAT if output_format is None else output_format
    if chosen_format not in FORMATS:
        raise BadRequest(
            f'unsupported encoding format {chosen_format[:_ECHO]}; must be "hex" or "base64"'
        )
    chosen = DEFAULT_ALGORITHM if algorithm is None else algorithm
    if chosen not in ALGORITHMS:
        raise BadRequest(f"unsupported algorithm {chosen[:_ECHO]}")
    digest = hashlib.new(ALGORITHMS[chosen], data).digest()
    return digest.hex() if chosen_format == "hex" else base64.b64encode(digest).decode("ascii")
