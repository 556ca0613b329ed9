"""The zero-trust parts of the policies: several token keys per service, source allowlists,
mutual-TLS names, single-use grants, structured associated data and quotas; every malformed
entry is a ConfigError naming the file and the rule broken."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import given
from hypothesis import strategies as st

from vault.errors import ConfigError
from vault.policy import Policies, jwk_thumbprint, load_policies
from vault.subjects import SubjectFormat


def pem(key: object) -> str:
    public: bytes = key.public_key().public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return public.decode()


OLD, NEW = ed25519.Ed25519PrivateKey.generate(), ec.generate_private_key(ec.SECP256R1())
KEY = '[keys.k]\ntype = "aes256-gcm96"\n'


def load(tmp_path: Path, text: str) -> Policies:
    directory = tmp_path / "policies"
    directory.mkdir(exist_ok=True)
    (directory / "p.toml").write_text(textwrap.dedent(text))
    return load_policies(directory, tmp_path)


def test_several_keys_allowlist_and_client_certificate(tmp_path: Path) -> None:
    (tmp_path / "new.pem").write_text(pem(NEW))
    policies = load(
        tmp_path,
        f'''
        [services.svc]
        public_key = """{pem(OLD)}"""
        public_keys = [{{ file = "{{var}}/new.pem", kid = "2026-11" }}]
        allow_from = ["10.1.0.0/16", "192.0.2.7", "2001:db8::/32"]
        client_cert_cn = "svc.example"
        client_cert_required = true
        grants = [{{ keys = ["k"], operations = ["decrypt"], single_use = true }},
                  {{ keys = ["k"], operations = ["encrypt"] }}]
        ''',
    )
    svc = policies.services["svc"]
    assert [(k.algorithm, k.kid) for k in svc.keys] == [
        ("EdDSA", jwk_thumbprint(OLD.public_key())),
        ("ES256", "2026-11"),
    ]
    assert svc.public_key is svc.keys[0].public_key  # the single form still reads the same
    assert [
        svc.admits(a) for a in ("10.1.200.3", "192.0.2.7", "::ffff:10.1.0.9", "2001:db8::1")
    ] == [True] * 4
    assert [svc.admits(a) for a in ("10.2.0.1", "192.0.2.8", "", "not-an-address")] == [False] * 4
    assert (svc.certificate_cn, svc.client_cert_required) == ("svc.example", True)
    assert svc.single_use("decrypt", "k")
    assert not svc.single_use("encrypt", "k")


def test_jwk_thumbprint_is_rfc_7638() -> None:
    """RFC 8037 Appendix A.3's Ed25519 key and its thumbprint."""
    x = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    key = ed25519.Ed25519PublicKey.from_public_bytes(x)
    assert jwk_thumbprint(key) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_structured_associated_data_and_quotas(tmp_path: Path) -> None:
    policies = load(
        tmp_path,
        """
        [keys.share]
        type = "aes256-gcm96"
        associated_data = { format = "kv", subject = "user_id", separator = "&" }

        [quotas.retrieval]
        keys = ["share"]
        operations = ["decrypt"]
        services = ["recovery-*"]
        per = "subject"
        limit = 3
        window = "24h"

        [quotas.store]
        operations = ["encrypt", "datakey"]
        limit = 5000
        window = 60
        kind = "fixed"
        """,
    )
    assert policies.subject_format("share") == SubjectFormat("kv", "user_id", "&")
    assert policies.subject_format("other") is None
    retrieval, store = policies.quotas["retrieval"], policies.quotas["store"]
    assert (retrieval.per, retrieval.limit, retrieval.window, retrieval.sliding) == (
        "subject",
        3,
        86400,
        True,
    )
    assert (store.per, store.window, store.sliding, store.keys) == ("service", 60, False, ("*",))
    assert policies.quotas_for("recovery-eu", "decrypt", "share") == (retrieval,)
    assert policies.quotas_for("backup", "decrypt", "share") == ()
    assert policies.quotas_for("backup", "datakey:wrapped", "x") == (store,)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[services.a]\npublic_keys = []\n", "public_keys must be a non-empty list"),
        (
            '[services.a]\npublic_keys = [{ pem = "x", colour = "red" }]\n',
            "a PEM string or a table",
        ),
        (
            f'[services.a]\npublic_keys = [{{ pem = """{pem(OLD)}""", kid = "x" }}, '
            f'{{ pem = """{pem(NEW)}""", kid = "x" }}]\n',
            "two public keys with kid 'x'",
        ),
        (
            f'[services.a]\npublic_key = """{pem(OLD)}"""\nallow_from = []\n',
            "must list at least one",
        ),
        (
            f'[services.a]\npublic_key = """{pem(OLD)}"""\nallow_from = ["10.0.0.300"]\n',
            "allow_from",
        ),
        (
            f'[services.a]\npublic_key = """{pem(OLD)}"""\nclient_cert_required = "yes"\n',
            "client_cert_required",
        ),
        (
            f'[services.a]\npublic_key = """{pem(OLD)}"""\n'
            'grants = [{ keys = ["k"], operations = ["decrypt"], single_use = 1 }]\n',
            "single_use must be true or false",
        ),
        (
            KEY + 'associated_data = { format = "xml", subject = "u" }\n',
            "format must be one of",
        ),
        (
            KEY + 'associated_data = { format = "json" }\n',
            "subject must name a field",
        ),
        (
            KEY + 'associated_data = { format = "json", subject = "u", separator = "," }\n',
            "separator is for format kv",
        ),
        (
            KEY + 'associated_data = { format = "kv", subject = "u", separator = "==" }\n',
            "one character",
        ),
        ('[quotas.q]\noperations = ["decrypt"]\nlimit = 3\n', "window must be"),
        ('[quotas.q]\noperations = ["decrypt"]\nlimit = 3\nwindow = "2w"\n', "window must be"),
        ('[quotas.q]\noperations = ["decrypt"]\nlimit = 3\nwindow = "400d"\n', "at most 366 days"),
        ('[quotas.q]\noperations = ["decrypt"]\nlimit = 0\nwindow = 1\n', "limit must be 1 to"),
        ('[quotas.q]\noperations = ["decrypt"]\nlimit = 5000\nwindow = 1\n', "kind = 'fixed'"),
        ('[quotas.q]\noperations = ["fly"]\nlimit = 1\nwindow = 1\n', "unknown operation"),
        ("[quotas.q]\noperations = []\nlimit = 1\nwindow = 1\n", "operations must be a list"),
        (
            '[quotas.q]\noperations = ["decrypt"]\nlimit = 1\nwindow = 1\nper = "user"\n',
            "per must be one of",
        ),
        (
            '[quotas.q]\noperations = ["decrypt"]\nlimit = 1\nwindow = 1\nkind = "leaky"\n',
            "kind must be",
        ),
        (
            '[quotas.q]\noperations = ["decrypt"]\nlimit = 1\nwindow = 1\nburst = 2\n',
            "unknown field",
        ),
    ],
)
def test_malformed_entries_are_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    assert "p.toml" in str(caught.value)
    assert message in str(caught.value)


# -- subjects -------------------------------------------------------------------------------

JSON = SubjectFormat("json", "user_id")
KV = SubjectFormat("kv", "user_id")
names = st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=20)
values = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters=";="), min_size=1, max_size=20
)


@given(user=names, extra=st.dictionaries(names, st.integers() | names, max_size=4))
def test_canonical_json_names_its_subject(user: str, extra: dict[str, object]) -> None:
    import json

    document = {**extra, "user_id": user}
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert JSON.subject(canonical.encode()) == user
    if len(document) > 1:  # any other spelling of the same object has no subject
        assert JSON.subject(json.dumps(document, sort_keys=False).encode()) in (None, user)
        assert JSON.subject(json.dumps(document, sort_keys=True).encode()) is None  # spaces


@pytest.mark.parametrize(
    ("data", "subject"),
    [
        (b'{"user_id":"u-42"}', "u-42"),
        (b'{"share":2,"user_id":42}', "42"),
        (b'{"user_id":"a","user_id":"b"}', None),  # duplicates: two readings
        (b'{"user_id": "u-42"}', None),  # not canonical
        (b'{"user_id":true}', None),
        (b'{"user_id":""}', None),
        (b'["user_id"]', None),
        (b"\xff", None),
        (b"", None),
    ],
)
def test_json_subjects(data: bytes, subject: str | None) -> None:
    assert JSON.subject(data) == subject


def test_a_reading_is_the_reading_of_that_format_and_value() -> None:
    """The same bytes read again, under another field or form, and a long value: each reading
    is that of its own format and value."""
    data = b'{"account":"a-1","user_id":"u-1"}'
    assert [JSON.subject(data) for _ in range(3)] == ["u-1"] * 3
    assert SubjectFormat("json", "account").subject(data) == "a-1"
    assert KV.subject(data) is None
    assert KV.subject(b"user_id=u-9;x=1") == "u-9"
    assert SubjectFormat("kv", "user_id", "&").subject(b"user_id=u-9;x=1") == "u-9;x=1"
    long = b'{"pad":"' + b"p" * 2048 + b'","user_id":"u-2"}'
    assert JSON.subject(long) == JSON.subject(long) == "u-2"


@given(
    user=values,
    pairs=st.dictionaries(
        names.filter(lambda n: "=" not in n and ";" not in n and n != "user_id"), values, max_size=3
    ),
)
def test_kv_names_its_subject(user: str, pairs: dict[str, str]) -> None:
    text = ";".join(f"{k}={v}" for k, v in {**pairs, "user_id": user}.items())
    assert KV.subject(text.encode()) == user


@pytest.mark.parametrize(
    ("data", "subject"),
    [
        (b"user_id=u-42;share=2", "u-42"),
        (b"user_id=a;user_id=b", None),
        (b"user_id=", None),
        (b"user_id", None),
        (b"share=2", None),
        (b"user_id=u;;", None),
    ],
)
def test_kv_subjects(data: bytes, subject: str | None) -> None:
    assert KV.subject(data) == subject
