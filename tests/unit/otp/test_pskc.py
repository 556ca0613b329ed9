"""PSKC import (RFC 6030): the RFC's plain and pre-shared-key files, plus generated variants."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.keywrap import aes_key_wrap, aes_key_wrap_with_padding
from otp_support import VECTORS

from vault.otp import OcraSuite, OtpInputError, OtpKind
from vault.otp.pskc import MAX_KEY_PACKAGES, parse_pskc

PLAIN = (VECTORS / "pskc-rfc6030-figure5-plain.xml").read_bytes()
PROTECTED = (VECTORS / "pskc-rfc6030-figure6-psk-aes128cbc.xml").read_bytes()
RFC_PSK = bytes.fromhex("12345678901234567890123456789012")
RFC_SECRET = b"12345678901234567890"

XENC = "http://www.w3.org/2001/04/xmlenc#"
HOTP = "urn:ietf:params:xml:ns:keyprov:pskc:hotp"


def _error(document: bytes | str, **kwargs: bytes) -> str:
    with pytest.raises(OtpInputError) as caught:
        parse_pskc(document, **kwargs)
    assert caught.value.field == "pskc"
    return str(caught.value)


def test_rfc6030_figure5_plain_hotp_key() -> None:
    (key,) = parse_pskc(PLAIN)  # the second KeyPackage is the PIN key, which is skipped
    assert key.serial == "987654321"
    assert key.key_id == "12345678"
    assert key.kind is OtpKind.HOTP
    assert key.algorithm == "sha1"
    assert key.digits == 8
    assert key.counter == 0
    assert key.period is None
    assert key.ocra_suite is None
    assert key.issuer == "Issuer"
    assert key.secret == RFC_SECRET


def test_rfc6030_figure6_preshared_key() -> None:
    (key,) = parse_pskc(PROTECTED, preshared_key=RFC_PSK)
    assert (key.serial, key.key_id, key.kind, key.digits, key.counter) == (
        "987654321",
        "12345678",
        OtpKind.HOTP,
        8,
        0,
    )
    assert key.secret == RFC_SECRET


def test_repr_leaves_the_secret_out() -> None:
    (key,) = parse_pskc(PLAIN)
    assert RFC_SECRET.hex() not in repr(key)
    assert "secret" not in repr(key)


def test_encrypted_file_needs_the_key() -> None:
    assert "pre-shared key is required" in _error(PROTECTED)


def test_wrong_preshared_key_is_rejected() -> None:
    message = _error(PROTECTED, preshared_key=bytes(16))
    assert "pre-shared key" in message


def test_wrong_length_preshared_key_is_rejected() -> None:
    assert "length" in _error(PROTECTED, preshared_key=bytes(32))


def _tamper_base64(document: bytes, element: str, flip_at: int) -> bytes:
    pattern = re.compile(rb"(<" + element.encode() + rb">)\s*([A-Za-z0-9+/=]+)\s*(</)")
    found = pattern.search(document)
    assert found is not None
    raw = bytearray(base64.b64decode(found.group(2)))
    raw[flip_at] ^= 0x01
    start, end = found.span(2)
    return document[:start] + base64.b64encode(bytes(raw)) + document[end:]


def test_tampered_value_mac_is_rejected() -> None:
    tampered = _tamper_base64(PROTECTED, "ValueMAC", 0)
    assert "MAC check failed" in _error(tampered, preshared_key=RFC_PSK)


def test_tampered_ciphertext_is_rejected_before_decryption() -> None:
    # The Secret's CipherValue is the second one (the first is the MACKey's).
    first = PROTECTED.index(b"<xenc:CipherValue>") + 1
    head, tail = PROTECTED[:first], PROTECTED[first:]
    tampered = head + _tamper_base64(tail, "xenc:CipherValue", 20)
    assert "MAC check failed" in _error(tampered, preshared_key=RFC_PSK)


def test_missing_value_mac_is_rejected() -> None:
    stripped = re.sub(rb"<ValueMAC>.*?</ValueMAC>", b"", PROTECTED, flags=re.DOTALL)
    assert "no ValueMAC" in _error(stripped, preshared_key=RFC_PSK)


def test_cbc_without_mac_method_is_refused() -> None:
    stripped = re.sub(rb"<MACMethod.*?</MACMethod>", b"", PROTECTED, flags=re.DOTALL)
    stripped = re.sub(rb"<ValueMAC>.*?</ValueMAC>", b"", stripped, flags=re.DOTALL)
    assert "without a MACMethod" in _error(stripped, preshared_key=RFC_PSK)


# --- generated files: other ciphers, TOTP and OCRA keys, encrypted integers ------------------


def _cbc(key: bytes, plaintext: bytes, iv: bytes) -> bytes:
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return iv + encryptor.update(padded) + encryptor.finalize()


def _encrypted(method: str, ciphertext: bytes) -> str:
    return (
        f'<EncryptedValue><xenc:EncryptionMethod Algorithm="{XENC}{method}"/>'
        f"<xenc:CipherData><xenc:CipherValue>{base64.b64encode(ciphertext).decode()}"
        "</xenc:CipherValue></xenc:CipherData></EncryptedValue>"
    )


def _container(packages: str, protection: str = "") -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<KeyContainer Version="1.0" xmlns="urn:ietf:params:xml:ns:keyprov:pskc"'
        ' xmlns:ds="http://www.w3.org/2000/09/xmldsig#"'
        f' xmlns:xenc="{XENC}">{protection}{packages}</KeyContainer>'
    )


def _package(algorithm: str, data: str, params: str = "", serial: str = "SN1") -> str:
    return (
        f"<KeyPackage><DeviceInfo><SerialNo>{serial}</SerialNo></DeviceInfo>"
        f'<Key Id="k-{serial}" Algorithm="{algorithm}">'
        f"<AlgorithmParameters>{params}</AlgorithmParameters><Data>{data}</Data></Key>"
        "</KeyPackage>"
    )


def _plain_secret(secret: bytes) -> str:
    return f"<Secret><PlainValue>{base64.b64encode(secret).decode()}</PlainValue></Secret>"


def test_aes256_cbc_with_hmac_sha256_and_an_encrypted_counter() -> None:
    psk, mac_key, secret = bytes(range(32)), bytes(range(100, 132)), bytes(range(64))
    mac_key_ct = _cbc(psk, mac_key, b"\x01" * 16)
    secret_ct = _cbc(psk, secret, b"\x02" * 16)
    counter_ct = _cbc(psk, (42).to_bytes(8, "big"), b"\x03" * 16)

    def value_mac(ciphertext: bytes) -> str:
        return base64.b64encode(hmac.new(mac_key, ciphertext, hashlib.sha256).digest()).decode()

    protection = (
        "<EncryptionKey><ds:KeyName>transport</ds:KeyName></EncryptionKey>"
        '<MACMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#hmac-sha256"><MACKey>'
        f'<xenc:EncryptionMethod Algorithm="{XENC}aes256-cbc"/><xenc:CipherData>'
        f"<xenc:CipherValue>{base64.b64encode(mac_key_ct).decode()}</xenc:CipherValue>"
        "</xenc:CipherData></MACKey></MACMethod>"
    )
    data = (
        f"<Secret>{_encrypted('aes256-cbc', secret_ct)}"
        f"<ValueMAC>{value_mac(secret_ct)}</ValueMAC></Secret>"
        f"<Counter>{_encrypted('aes256-cbc', counter_ct)}"
        f"<ValueMAC>{value_mac(counter_ct)}</ValueMAC></Counter>"
    )
    params = '<Suite>HMAC-SHA512</Suite><ResponseFormat Length="6" Encoding="DECIMAL"/>'
    document = _container(_package(HOTP, data, params), protection)
    (key,) = parse_pskc(document.encode(), preshared_key=psk)
    assert (key.algorithm, key.digits, key.counter, key.secret) == ("sha512", 6, 42, secret)


@pytest.mark.parametrize("secret_length", [16, 20])
def test_kw_aes128_without_mac(secret_length: int) -> None:
    psk, secret = bytes(range(16)), bytes(range(1, secret_length + 1))
    # 16 bytes wrap as RFC 3394; 20-byte seeds need the RFC 5649 padded variant.
    wrap = aes_key_wrap if secret_length % 8 == 0 else aes_key_wrap_with_padding
    data = f"<Secret>{_encrypted('kw-aes128', wrap(psk, secret))}</Secret>"
    protection = "<EncryptionKey><ds:KeyName>transport</ds:KeyName></EncryptionKey>"
    document = _container(_package(HOTP, data), protection)
    (key,) = parse_pskc(document, preshared_key=psk)
    assert key.secret == secret
    assert key.digits == 6
    assert key.counter == 0


def test_kw_aes256_with_a_wrong_key_is_rejected() -> None:
    psk = bytes(range(32))
    data = f"<Secret>{_encrypted('kw-aes256', aes_key_wrap(psk, bytes(16)))}</Secret>"
    protection = "<EncryptionKey><ds:KeyName>transport</ds:KeyName></EncryptionKey>"
    document = _container(_package(HOTP, data), protection)
    assert "decryption failed" in _error(document, preshared_key=bytes(32))


@pytest.mark.parametrize(
    "uri", ["urn:ietf:params:xml:ns:keyprov:pskc:totp", "urn:ietf:params:xml:ns:keyprov:pskc#totp"]
)
def test_totp_key(uri: str) -> None:
    data = (
        _plain_secret(b"s" * 32)
        + "<Time><PlainValue>0</PlainValue></Time>"
        + "<TimeInterval><PlainValue>60</PlainValue></TimeInterval>"
        + "<TimeDrift><PlainValue>-2</PlainValue></TimeDrift>"
    )
    params = '<Suite>HMAC-SHA256</Suite><ResponseFormat Length="8" Encoding="DECIMAL"/>'
    (key,) = parse_pskc(_container(_package(uri, data, params)))
    assert (key.kind, key.algorithm, key.digits, key.period) == (OtpKind.TOTP, "sha256", 8, 60)
    assert (key.counter, key.time, key.time_drift) == (None, 0, -2)


def test_totp_period_defaults_to_30_seconds() -> None:
    (key,) = parse_pskc(
        _container(_package("urn:ietf:params:xml:ns:keyprov:pskc:totp", _plain_secret(b"k" * 20)))
    )
    assert key.period == 30


def test_ocra_key_takes_its_parameters_from_the_suite() -> None:
    uri = "urn:ietf:params:xml:ns:keyprov:pskc#OCRA-1:HOTP-SHA512-8:C-QN08"
    data = _plain_secret(b"k" * 64) + "<Counter><PlainValue>5</PlainValue></Counter>"
    params = '<ResponseFormat Length="8" Encoding="DECIMAL"/>'
    (key,) = parse_pskc(_container(_package(uri, data, params)))
    assert key.kind is OtpKind.OCRA
    assert key.ocra_suite == OcraSuite.parse("OCRA-1:HOTP-SHA512-8:C-QN08")
    assert (key.algorithm, key.digits, key.counter, key.period) == ("sha512", 8, 5, None)


def test_several_packages_keep_their_order() -> None:
    packages = "".join(
        _package(HOTP, _plain_secret(bytes([i]) * 20), serial=f"SN{i}") for i in range(3)
    )
    keys = parse_pskc(_container(packages))
    assert [k.serial for k in keys] == ["SN0", "SN1", "SN2"]
    assert [k.key_id for k in keys] == ["k-SN0", "k-SN1", "k-SN2"]


def test_a_file_of_more_key_packages_than_the_cap_is_refused_whole() -> None:
    def packages(count: int) -> str:
        return _container(
            "".join(_package(HOTP, _plain_secret(b"k" * 20), serial=f"SN{i}") for i in range(count))
        )

    assert len(parse_pskc(packages(MAX_KEY_PACKAGES))) == MAX_KEY_PACKAGES
    assert f"at most {MAX_KEY_PACKAGES} KeyPackages" in _error(packages(MAX_KEY_PACKAGES + 1))


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        (b"not xml", "not well-formed"),
        (b"<KeyContainer Version='1.0'/>", "not a PSKC KeyContainer"),
        (_container("").replace('Version="1.0"', 'Version="2.0"'), "version 1.0"),
        (_container(""), "no OTP keys"),
        (
            _container(_package("urn:example:securid", _plain_secret(b"k" * 16))),
            "unsupported key algorithm",
        ),
        (_container(_package(HOTP, "")), "no Data/Secret"),
        (
            _container(_package(HOTP, "<Secret><PlainValue>!!</PlainValue></Secret>")),
            "not valid base64",
        ),
        (_container(_package(HOTP, "<Secret><PlainValue></PlainValue></Secret>")), "is empty"),
        (_container(_package(HOTP, "<Secret/>")), "exactly one of PlainValue and EncryptedValue"),
        (
            _container(_package(HOTP, _plain_secret(b"k" * 20), '<ResponseFormat Length="4"/>')),
            "Length must be 6..10",
        ),
        (
            _container(
                _package(
                    HOTP,
                    _plain_secret(b"k" * 20),
                    '<ResponseFormat Length="6" Encoding="HEXADECIMAL"/>',
                )
            ),
            "DECIMAL",
        ),
        (
            _container(_package(HOTP, _plain_secret(b"k" * 20), "<Suite>HMAC-MD5</Suite>")),
            "Suite must be",
        ),
        (
            _container(
                _package(
                    HOTP, _plain_secret(b"k" * 20) + "<Counter><PlainValue>x</PlainValue></Counter>"
                )
            ),
            "Counter must be an integer",
        ),
        (
            _container(
                _package(
                    HOTP,
                    _plain_secret(b"k" * 20) + "<Counter><PlainValue>-1</PlainValue></Counter>",
                )
            ),
            "Counter must be between",
        ),
        (
            _container(
                _package(
                    "urn:ietf:params:xml:ns:keyprov:pskc:totp",
                    _plain_secret(b"k" * 20)
                    + "<TimeInterval><PlainValue>0</PlainValue></TimeInterval>",
                )
            ),
            "TimeInterval",
        ),
        (
            _container(
                _package(
                    "urn:ietf:params:xml:ns:keyprov:pskc#OCRA-1:HOTP-SHA1-6:QN99",
                    _plain_secret(b"k" * 20),
                )
            ),
            "invalid suite",
        ),
        (
            _container(
                _package(
                    "urn:ietf:params:xml:ns:keyprov:pskc#OCRA-1:HOTP-SHA1-6:QN08",
                    _plain_secret(b"k" * 20),
                    '<ResponseFormat Length="8"/>',
                )
            ),
            "differs from the OCRA suite",
        ),
        (
            _container(
                _package(HOTP, _encrypted("aes128-cbc", bytes(32)).join(("<Secret>", "</Secret>")))
            ),
            "no EncryptionKey",
        ),
        (
            _container(
                _package(HOTP, _plain_secret(b"k" * 20)),
                "<EncryptionKey><DerivedKey/></EncryptionKey>",
            ),
            "only pre-shared-key",
        ),
    ],
)
def test_malformed_files_are_rejected(document: bytes | str, fragment: str) -> None:
    assert fragment in _error(document, preshared_key=bytes(16))


def test_dtds_and_entities_are_refused() -> None:
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
        b'<KeyContainer Version="1.0" xmlns="urn:ietf:params:xml:ns:keyprov:pskc">&lol2;'
        b"</KeyContainer>"
    )
    assert "DTDs, entities and external references" in _error(bomb)
