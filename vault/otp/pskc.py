"""Import token seeds from vendors' PSKC files (RFC 6030).

Supported: plain values (§4) and pre-shared-key protection (§6.1): ``EncryptionKey/KeyName``,
values encrypted with ``xmlenc#aes{128,192,256}-cbc`` (IV prepended) or ``xmlenc#kw-aes*``,
and a ``MACMethod`` whose ``MACKey`` is encrypted under the same key. Passphrase (§6.2) and
certificate (§6.3) protection are refused with a clear error. PIN keys (§10.2) are skipped:
they protect the device, they are not OTP seeds.

The parser is defusedxml's: no DTDs, no entities, no external references.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap,
    aes_key_unwrap_with_padding,
)
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, fromstring

from vault.otp._errors import OtpInputError
from vault.otp._hotp import COUNTER_MAX, MAX_DIGITS
from vault.otp._ocra import OcraSuite
from vault.otp._plan import MAX_PERIOD, MIN_HOTP_DIGITS, OtpKind

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

__all__ = ["MAX_KEY_PACKAGES", "PskcKey", "parse_pskc"]

_PSKC = "urn:ietf:params:xml:ns:keyprov:pskc"
_XENC = "http://www.w3.org/2001/04/xmlenc#"
_NS = {"pskc": _PSKC, "ds": "http://www.w3.org/2000/09/xmldsig#", "xenc": _XENC}

_HOTP_URI = f"{_PSKC}:hotp"  # §10.1
_PIN_URI = f"{_PSKC}:pin"  # §10.2
# TOTP and OCRA URIs come from the PSKC algorithm-profiles draft; vendors write both forms.
_TOTP_URIS = (f"{_PSKC}:totp", f"{_PSKC}#totp")
_OCRA_PREFIXES = (f"{_PSKC}#", f"{_PSKC}:")

_CBC_KEY_SIZES = {f"{_XENC}aes128-cbc": 16, f"{_XENC}aes192-cbc": 24, f"{_XENC}aes256-cbc": 32}
_KW_KEY_SIZES = {f"{_XENC}kw-aes128": 16, f"{_XENC}kw-aes192": 24, f"{_XENC}kw-aes256": 32}
_MAC_HASHES = {
    "http://www.w3.org/2000/09/xmldsig#hmac-sha1": "sha1",
    "http://www.w3.org/2001/04/xmldsig-more#hmac-sha224": "sha224",
    "http://www.w3.org/2001/04/xmldsig-more#hmac-sha256": "sha256",
    "http://www.w3.org/2001/04/xmldsig-more#hmac-sha384": "sha384",
    "http://www.w3.org/2001/04/xmldsig-more#hmac-sha512": "sha512",
}
_SUITE_HASHES = {"HMAC-SHA1": "sha1", "HMAC-SHA256": "sha256", "HMAC-SHA512": "sha512"}
_AES_BLOCK = 16
# Each key costs HSM work and a ledger row, all in one request: a file of more is split.
MAX_KEY_PACKAGES = 1000
_DEFAULT_DIGITS = 6
_DEFAULT_PERIOD = 30  # RFC 6238 §5.2


@dataclass(frozen=True, slots=True)
class PskcKey:
    """One OTP key from a PSKC file. ``repr`` leaves the secret out, so logging one is safe."""

    serial: str | None  # DeviceInfo/SerialNo
    key_id: str  # Key/@Id
    kind: OtpKind
    algorithm: str  # the HMAC hash: "sha1" | "sha256" | "sha512"
    digits: int
    counter: int | None  # HOTP, and OCRA suites with C
    period: int | None  # seconds per step: TOTP TimeInterval, or an OCRA suite's T
    ocra_suite: OcraSuite | None
    secret: bytes = field(repr=False)
    issuer: str | None = None
    time: int | None = None  # Data/Time, as the vendor wrote it (§4.3.4: vendor-defined)
    time_drift: int | None = None  # Data/TimeDrift, in time steps


def parse_pskc(document: bytes | str, *, preshared_key: bytes | None = None) -> list[PskcKey]:
    """Every OTP key in a PSKC ``KeyContainer``; ``preshared_key`` opens a §6.1 file."""
    root = _parse_xml(document)
    if root.tag != f"{{{_PSKC}}}KeyContainer":
        raise _error("the document is not a PSKC KeyContainer (RFC 6030 namespace)")
    if root.get("Version") != "1.0":
        raise _error("only PSKC version 1.0 is supported")
    packages = root.findall("pskc:KeyPackage", _NS)
    if len(packages) > MAX_KEY_PACKAGES:
        raise _error(f"at most {MAX_KEY_PACKAGES} KeyPackages per import; split the file")
    protection = _Protection.of(root, preshared_key)
    keys = []
    for number, package in enumerate(packages, start=1):
        key = _read_package(package, protection, f"KeyPackage {number}")
        if key is not None:
            keys.append(key)
    if not keys:
        raise _error("the file holds no OTP keys")
    return keys


def _parse_xml(document: bytes | str) -> Element:
    try:
        return fromstring(document, forbid_dtd=True)
    except DefusedXmlException:
        raise _error("DTDs, entities and external references are not allowed") from None
    except ParseError:
        raise _error("the document is not well-formed XML") from None


@dataclass(frozen=True, slots=True)
class _Protection:
    key: bytes | None = field(default=None, repr=False)
    mac_key: bytes | None = field(default=None, repr=False)
    mac_hash: str | None = None

    @classmethod
    def of(cls, root: Element, preshared_key: bytes | None) -> _Protection:
        encryption_key = root.find("pskc:EncryptionKey", _NS)
        mac_method = root.find("pskc:MACMethod", _NS)
        if encryption_key is None:
            if mac_method is not None:
                raise _error("MACMethod without EncryptionKey: the MAC key cannot be read")
            return cls()
        if encryption_key.find("ds:KeyName", _NS) is None:
            raise _error("only pre-shared-key protection (RFC 6030 §6.1) is supported")
        if preshared_key is None:
            raise _error("the file is encrypted: a pre-shared key is required")
        if mac_method is None:
            return cls(key=preshared_key)
        mac_hash = _MAC_HASHES.get(mac_method.get("Algorithm", ""))
        if mac_hash is None:
            raise _error("unsupported MACMethod algorithm")
        mac_key_element = mac_method.find("pskc:MACKey", _NS)
        if mac_key_element is None:
            raise _error("MACMethod must carry the MAC key as an encrypted MACKey")
        # §6.1.1: the MAC key travels encrypted under the pre-shared key, without a MAC of its
        # own; a wrong pre-shared key surfaces as a MAC mismatch on the first value.
        mac_key = _decrypt(mac_key_element, preshared_key, "MACKey")
        return cls(key=preshared_key, mac_key=mac_key, mac_hash=mac_hash)

    def value(self, element: Element, what: str) -> bytes | str:
        """The decrypted bytes of an EncryptedValue, or the text of a PlainValue."""
        plain = element.find("pskc:PlainValue", _NS)
        encrypted = element.find("pskc:EncryptedValue", _NS)
        if (plain is None) == (encrypted is None):
            raise _error(f"{what} needs exactly one of PlainValue and EncryptedValue")
        value_mac = element.find("pskc:ValueMAC", _NS)
        if plain is not None:
            return plain.text or ""
        assert encrypted is not None
        if self.key is None:
            raise _error(f"{what} is encrypted but the file has no EncryptionKey")
        ciphertext = _cipher_value(encrypted, what)
        if self.mac_key is not None and self.mac_hash is not None:
            if value_mac is None:
                raise _error(f"{what} has no ValueMAC")
            # §6.1.1: the MAC covers the CipherValue (IV and ciphertext); it is checked in
            # constant time, and before decryption, so a forged value never reaches the cipher.
            expected = hmac.new(self.mac_key, ciphertext, self.mac_hash).digest()
            if not hmac.compare_digest(expected, _base64(value_mac.text, f"{what} ValueMAC")):
                raise _error(f"{what}: MAC check failed (wrong pre-shared key or altered file)")
        elif value_mac is not None:
            raise _error(f"{what} has a ValueMAC but the file has no MACMethod")
        elif _method(encrypted, what) in _CBC_KEY_SIZES:
            # CBC alone does not authenticate; without a MAC a tampered seed would import.
            raise _error(f"{what} is CBC-encrypted without a MACMethod")
        return _decrypt(encrypted, self.key, what)

    def secret(self, element: Element, what: str) -> bytes:
        value = self.value(element, what)
        secret = _base64(value, what) if isinstance(value, str) else value
        if not secret:
            raise _error(f"{what} is empty")
        return secret

    def integer(self, element: Element | None, what: str) -> int | None:
        if element is None:
            return None
        value = self.value(element, what)
        if isinstance(value, bytes):
            # §4.3.4 / §6: an encrypted integer is its big-endian two's-complement bytes.
            return int.from_bytes(value, "big", signed=True)
        text = value.strip()
        digits = text.removeprefix("-")
        if not (digits.isascii() and digits.isdigit()):
            raise _error(f"{what} must be an integer")
        return int(text)


def _read_package(package: Element, protection: _Protection, where: str) -> PskcKey | None:
    keys = package.findall("pskc:Key", _NS)
    if len(keys) != 1:
        raise _error(f"{where} must hold exactly one Key")
    key = keys[0]
    uri = key.get("Algorithm", "")
    if uri == _PIN_URI:
        return None
    kind, suite = _kind(uri, where)
    key_id = key.get("Id")
    if not key_id:
        raise _error(f"{where}: the Key has no Id")
    data = key.find("pskc:Data", _NS)
    secret_element = data.find("pskc:Secret", _NS) if data is not None else None
    if data is None or secret_element is None:
        raise _error(f"{where}: the Key has no Data/Secret")
    params = key.find("pskc:AlgorithmParameters", _NS)
    length = _response_length(params, where)
    counter = protection.integer(data.find("pskc:Counter", _NS), f"{where} Counter")
    interval = protection.integer(data.find("pskc:TimeInterval", _NS), f"{where} TimeInterval")

    if suite is not None:
        if length is not None and length != suite.digits:
            raise _error(f"{where}: ResponseFormat Length differs from the OCRA suite")
        algorithm, digits, period = suite.algorithm, suite.digits, suite.time_step
        counter = (counter or 0) if suite.counter else None
    else:
        algorithm = _suite_hash(params, where)
        digits = _DEFAULT_DIGITS if length is None else length
        if not MIN_HOTP_DIGITS <= digits <= MAX_DIGITS:
            raise _error(f"{where}: ResponseFormat Length must be {MIN_HOTP_DIGITS}..{MAX_DIGITS}")
        if kind is OtpKind.HOTP:
            counter, period = counter or 0, None
        else:
            counter, period = None, _DEFAULT_PERIOD if interval is None else interval
            if not 1 <= period <= MAX_PERIOD:
                raise _error(f"{where}: TimeInterval must be 1..{MAX_PERIOD} seconds")
    if counter is not None and not 0 <= counter <= COUNTER_MAX:
        raise _error(f"{where}: Counter must be between 0 and 2^64-1")
    return PskcKey(
        serial=_text(package.find("pskc:DeviceInfo/pskc:SerialNo", _NS)),
        key_id=key_id,
        kind=kind,
        algorithm=algorithm,
        digits=digits,
        counter=counter,
        period=period,
        ocra_suite=suite,
        secret=protection.secret(secret_element, f"{where} Secret"),
        issuer=_text(key.find("pskc:Issuer", _NS)),
        time=protection.integer(data.find("pskc:Time", _NS), f"{where} Time"),
        time_drift=protection.integer(data.find("pskc:TimeDrift", _NS), f"{where} TimeDrift"),
    )


def _kind(uri: str, where: str) -> tuple[OtpKind, OcraSuite | None]:
    if uri == _HOTP_URI:
        return OtpKind.HOTP, None
    if uri in _TOTP_URIS:
        return OtpKind.TOTP, None
    for prefix in _OCRA_PREFIXES:
        if uri.startswith(prefix + "OCRA-"):
            try:
                return OtpKind.OCRA, OcraSuite.parse(uri.removeprefix(prefix))
            except OtpInputError as exc:
                raise _error(f"{where}: {exc}") from None
    raise _error(f"{where}: unsupported key algorithm (HOTP, TOTP and OCRA are)")


def _response_length(params: Element | None, where: str) -> int | None:
    response = params.find("pskc:ResponseFormat", _NS) if params is not None else None
    if response is None:
        return None
    if response.get("Encoding", "DECIMAL") != "DECIMAL":
        raise _error(f"{where}: only DECIMAL responses are supported")
    if response.get("CheckDigits", "false") not in ("false", "0"):
        raise _error(f"{where}: responses with a check digit are not supported")
    length = response.get("Length", "")
    if not (length.isascii() and length.isdigit()):
        raise _error(f"{where}: ResponseFormat Length must be an integer")
    return int(length)


def _suite_hash(params: Element | None, where: str) -> str:
    # HOTP and TOTP name their hash in AlgorithmParameters/Suite; HOTP's default is SHA-1.
    suite = _text(params.find("pskc:Suite", _NS)) if params is not None else None
    if suite is None:
        return "sha1"
    algorithm = _SUITE_HASHES.get(suite.upper())
    if algorithm is None:
        raise _error(f"{where}: Suite must be HMAC-SHA1, HMAC-SHA256 or HMAC-SHA512")
    return algorithm


def _method(encrypted: Element, what: str) -> str:
    method = encrypted.find("xenc:EncryptionMethod", _NS)
    algorithm = method.get("Algorithm") if method is not None else None
    if algorithm is None:
        raise _error(f"{what} has no EncryptionMethod")
    return algorithm


def _cipher_value(encrypted: Element, what: str) -> bytes:
    value = encrypted.find("xenc:CipherData/xenc:CipherValue", _NS)
    if value is None:
        raise _error(f"{what} has no CipherData/CipherValue")
    return _base64(value.text, what)


def _decrypt(encrypted: Element, key: bytes, what: str) -> bytes:
    method = _method(encrypted, what)
    data = _cipher_value(encrypted, what)
    if method in _CBC_KEY_SIZES:
        if len(key) != _CBC_KEY_SIZES[method]:
            raise _error("the pre-shared key's length does not fit the encryption algorithm")
        return _decrypt_cbc(data, key, what)
    if method in _KW_KEY_SIZES:
        if len(key) != _KW_KEY_SIZES[method]:
            raise _error("the pre-shared key's length does not fit the encryption algorithm")
        # xmlenc's kw-aes is RFC 3394, which needs whole 8-byte blocks; OTP seeds are often 20
        # bytes, so vendors use the RFC 5649 padded variant, told apart by its own IV.
        for unwrap in (aes_key_unwrap, aes_key_unwrap_with_padding):
            try:
                return unwrap(key, data)
            except (InvalidUnwrap, ValueError):
                continue
        raise _error(f"{what}: decryption failed (wrong pre-shared key?)")
    raise _error(f"{what}: unsupported encryption algorithm")


def _decrypt_cbc(data: bytes, key: bytes, what: str) -> bytes:
    # xmlenc §5.2: the IV is the first block of the CipherValue.
    if len(data) < 2 * _AES_BLOCK or len(data) % _AES_BLOCK:
        raise _error(f"{what}: malformed ciphertext")
    decryptor = Cipher(algorithms.AES(key), modes.CBC(data[:_AES_BLOCK])).decryptor()
    padded = decryptor.update(data[_AES_BLOCK:]) + decryptor.finalize()
    # xmlenc §5.2 padding: the last byte counts the padding bytes, whose values are arbitrary
    # (so PKCS#7 is one case of it, and stricter checks would reject valid files).
    pad = padded[-1]
    if not 1 <= pad <= _AES_BLOCK:
        raise _error(f"{what}: decryption failed (wrong pre-shared key?)")
    return padded[:-pad]


def _base64(text: str | None, what: str) -> bytes:
    try:
        return base64.b64decode("".join((text or "").split()), validate=True)
    except (binascii.Error, ValueError):
        raise _error(f"{what} is not valid base64") from None


def _text(element: Element | None) -> str | None:
    if element is None or element.text is None:
        return None
    return element.text.strip() or None


def _error(message: str) -> OtpInputError:
    return OtpInputError("pskc", message)
