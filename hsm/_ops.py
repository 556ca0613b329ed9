"""``HsmOps`` over python-pkcs11: one logged-in session, used by the HSM thread only."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any, cast

import pkcs11
import pkcs11.exceptions as p11e
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from pkcs11 import MGF, Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.mechanisms import GCMParams
from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters
from pkcs11.util.rsa import encode_rsa_public_key

from hsm._seed_cache import SeedCache
from hsm.errors import (
    AuthenticationFailed,
    DecryptionFailed,
    HsmUnavailable,
    InputRejected,
    ObjectMissing,
)
from hsm.interface import GeneratedSeed, KeySpec, MacAlgorithm, ObjectInfo, SeedRef, SignScheme

log = logging.getLogger("hsm")

GCM_TAG_BITS = 128  # NIST SP 800-38D §5.2.1.2: the full 128-bit tag
GCM_IV_BYTES = 12  # SP 800-38D §8.2: 96-bit IVs
_CANARY_AAD = b"hsm-vault/canary/v1"
_CANARY_PLAINTEXT = bytes(16)

_ID_ED25519 = "1.3.101.112"  # RFC 8410 §3
_EC_P256 = "secp256r1"
_DER_OCTET_STRING = 0x04

# RFC 2104 §3: a key of at least the hash's output length (SoftHSM refuses shorter ones).
_HMAC_KEY_BITS = {KeySpec.HMAC256: 256, KeySpec.HMAC512: 512}
_MAC_MECHANISMS = {
    MacAlgorithm.SHA1: Mechanism.SHA_1_HMAC,
    MacAlgorithm.SHA224: Mechanism.SHA224_HMAC,
    MacAlgorithm.SHA256: Mechanism.SHA256_HMAC,
    MacAlgorithm.SHA384: Mechanism.SHA384_HMAC,
    MacAlgorithm.SHA512: Mechanism.SHA512_HMAC,
}
# RSA-PSS and RSA-OAEP parameters; the library's own defaults are SHA-1.
# RSA-OAEP to a device: SHA-256 (JOSE "RSA-OAEP-256") where the token can; SoftHSM 2.6 wraps
# only with SHA-1 (JOSE "RSA-OAEP"), which RFC 8017 §7.1 still allows.
_OAEP_FOR_DEVICES = (
    ("RSA-OAEP-256", (Mechanism.SHA256, MGF.SHA256, None)),
    ("RSA-OAEP", (Mechanism.SHA_1, MGF.SHA1, None)),
)
_HASH_PARAMS = {
    "sha256": (Mechanism.SHA256, MGF.SHA256, 32),
    "sha384": (Mechanism.SHA384, MGF.SHA384, 48),
    "sha512": (Mechanism.SHA512, MGF.SHA512, 64),
}
# RSA-OAEP decryption (RFC 8017 §7.1): the OAEP hash and MGF1 hash are one and the same.
_OAEP_PARAMS = {
    "sha1": (Mechanism.SHA_1, MGF.SHA1, None),
    "sha256": (Mechanism.SHA256, MGF.SHA256, None),
    "sha384": (Mechanism.SHA384, MGF.SHA384, None),
    "sha512": (Mechanism.SHA512, MGF.SHA512, None),
}
# Every long-lived key: usable, never readable.
_SECRET_POLICY = {
    Attribute.TOKEN: True,
    Attribute.PRIVATE: True,
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False,
}
# ... and never changed or copied (PKCS#11 v2.40 §4.4): no one holding the PIN can add a
# capability to a key, or copy it into an object with other attributes. Last in a template:
# SoftHSM 2.6 applies CKA_MODIFIABLE as it reads the template (softhsm/README.md).
_FIXED = {Attribute.COPYABLE: False, Attribute.MODIFIABLE: False}
# Every capability an object of each class can carry, off; each spec turns on its own.
_SECRET_USES_OFF = dict.fromkeys(
    (
        Attribute.ENCRYPT,
        Attribute.DECRYPT,
        Attribute.WRAP,
        Attribute.UNWRAP,
        Attribute.SIGN,
        Attribute.VERIFY,
        Attribute.DERIVE,
    ),
    False,
)
_PRIVATE_USES_OFF = dict.fromkeys(
    (Attribute.SIGN, Attribute.SIGN_RECOVER, Attribute.DECRYPT, Attribute.UNWRAP, Attribute.DERIVE),
    False,
)
_PUBLIC_USES_OFF = dict.fromkeys(
    (Attribute.VERIFY, Attribute.VERIFY_RECOVER, Attribute.ENCRYPT, Attribute.WRAP), False
)
_PUBLIC_POLICY = {Attribute.TOKEN: True, Attribute.PRIVATE: False, Attribute.MODIFIABLE: False}
_RSA_SIGNATURES = (Mechanism.RSA_PKCS_PSS, Mechanism.RSA_PKCS)
_SHA2_HMACS = (Mechanism.SHA256_HMAC, Mechanism.SHA384_HMAC, Mechanism.SHA512_HMAC)
# Per spec: (what the secret or private key may do, what the public key may do, the only
# mechanisms either may be used with).
_JOBS: dict[KeySpec, tuple[tuple[Attribute, ...], tuple[Attribute, ...], tuple[Mechanism, ...]]] = {
    KeySpec.AES256_GCM: ((Attribute.ENCRYPT, Attribute.DECRYPT), (), (Mechanism.AES_GCM,)),
    KeySpec.HMAC512: ((Attribute.SIGN, Attribute.VERIFY), (), _SHA2_HMACS),
    KeySpec.EC_P256: ((Attribute.SIGN,), (Attribute.VERIFY,), (Mechanism.ECDSA,)),
    KeySpec.EC_P256_ECDH: ((Attribute.DERIVE,), (), (Mechanism.ECDH1_DERIVE,)),
    KeySpec.ED25519: ((Attribute.SIGN,), (Attribute.VERIFY,), (Mechanism.EDDSA,)),
    KeySpec.RSA3072: ((Attribute.SIGN,), (Attribute.VERIFY,), _RSA_SIGNATURES),
    # The public half encrypts only for the canary (key_works); partners encrypt on their own.
    KeySpec.RSA3072_OAEP: ((Attribute.DECRYPT,), (Attribute.ENCRYPT,), (Mechanism.RSA_PKCS_OAEP,)),
}


def _template(
    policy: dict[Attribute, Any],
    off: dict[Attribute, bool],
    uses: tuple[Attribute, ...],
    mechanisms: tuple[Mechanism, ...],
    fixed: dict[Attribute, bool],
) -> dict[Attribute, Any]:
    return {
        **policy,
        **off,
        **dict.fromkeys(uses, True),
        Attribute.ALLOWED_MECHANISMS: list(mechanisms),
        **fixed,
    }


# A key that computes MACs and nothing else.
_MAC_ONLY = {
    Attribute.SIGN: True,
    Attribute.VERIFY: False,
    Attribute.ENCRYPT: False,
    Attribute.DECRYPT: False,
    Attribute.WRAP: False,
    Attribute.UNWRAP: False,
    Attribute.DERIVE: False,
}
# A seed unwrapped for verification: a session object that can only MAC, is never
# readable, and is destroyed within the job or, when the seed cache keeps it, on eviction
# (it dies with the session in any case). CKA_PRIVATE only hides an object from this
# application's sessions that have not logged in (PKCS#11 v2.40 §4.4); a session object of
# a few microseconds gains nothing from it, while SoftHSM2 spends ~60 µs per verification
# encrypting and decrypting a private object's attributes in its own memory.
# It is also the OTP wrap key's CKA_UNWRAP_TEMPLATE. SoftHSM 2.6.1 enforces that template
# but does not apply it: C_UnwrapKey must be sent every entry with a byte-identical value
# (else CKR_TEMPLATE_INCONSISTENT), and CKA_MODIFIABLE=false must come last, or the
# attributes after it are refused as read-only (softhsm/README.md).
_SEED_TEMPLATE: dict[Attribute, Any] = {
    Attribute.CLASS: ObjectClass.SECRET_KEY,
    Attribute.KEY_TYPE: KeyType.GENERIC_SECRET,
    Attribute.TOKEN: False,
    Attribute.PRIVATE: False,
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False,
    **_MAC_ONLY,
    Attribute.ALLOWED_MECHANISMS: [
        _MAC_MECHANISMS[MacAlgorithm.SHA1],
        _MAC_MECHANISMS[MacAlgorithm.SHA256],
        _MAC_MECHANISMS[MacAlgorithm.SHA512],
    ],
    Attribute.MODIFIABLE: False,
}
# The OTP keys of one key version. The wrap key cannot encrypt or decrypt (with C_Decrypt
# and AES-ECB a key-encryption key is an unwrap oracle on the host), wraps and unwraps only
# with AES key wrap with padding (RFC 5649), and unwraps only into _SEED_TEMPLATE. The bind
# key only computes HMAC-SHA-256. Neither can be changed after generation.
_OTP_KEYS: dict[KeySpec, tuple[KeyType, int, dict[Attribute, Any]]] = {
    KeySpec.OTP_WRAP: (
        KeyType.AES,
        256,
        {
            **_SECRET_POLICY,
            Attribute.ENCRYPT: False,
            Attribute.DECRYPT: False,
            Attribute.SIGN: False,
            Attribute.VERIFY: False,
            Attribute.DERIVE: False,
            Attribute.WRAP: True,
            Attribute.UNWRAP: True,
            Attribute.ALLOWED_MECHANISMS: [Mechanism.AES_KEY_WRAP_PAD],
            Attribute.UNWRAP_TEMPLATE: _SEED_TEMPLATE,
            Attribute.MODIFIABLE: False,
        },
    ),
    KeySpec.OTP_BIND: (
        KeyType.GENERIC_SECRET,
        256,
        {
            **_SECRET_POLICY,
            **_MAC_ONLY,
            Attribute.ALLOWED_MECHANISMS: [_MAC_MECHANISMS[MacAlgorithm.SHA256]],
            Attribute.MODIFIABLE: False,
        },
    ),
}
_CANARY_SEED_BITS = 160  # RFC 4226 §4 R6's recommended seed length


def _wrappable_seed(sensitive: bool) -> dict[Attribute, Any]:
    """A seed that exists only long enough to be wrapped (it must be extractable for that)."""
    return {
        Attribute.TOKEN: False,
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: sensitive,
        Attribute.EXTRACTABLE: True,
        Attribute.SIGN: True,
    }


class Pkcs11Ops:
    """The token session plus a cache of key handles.

    Keys are used as the token objects they are, never through session copies: a copy would
    live on in this process after another one deleted the key, and SoftHSM 2.6 refuses to
    copy a ``CKA_MODIFIABLE=false`` key into a session object anyway. SoftHSM re-reads its
    file store on each use of a token object, which costs ~15 µs per call (docs/design.md).
    """

    def __init__(self, session: pkcs11.Session, seed_cache: int = 0) -> None:
        self._session = session
        self._handles: dict[tuple[bytes, ObjectClass], Any] = {}
        self._canaries: dict[bytes, Any] = {}
        # Seeds unwrapped in this session and kept for later checks (docs/design.md, OTP):
        # session objects, so they die with the session, and so with this object.
        self._seeds: SeedCache[Any] = SeedCache(seed_cache)

    # -- objects -----------------------------------------------------------------------

    def _key(self, key_id: bytes, object_class: ObjectClass = ObjectClass.SECRET_KEY) -> Any:
        handle = self._handles.get((key_id, object_class))
        if handle is None:
            found = list(
                self._session.get_objects(
                    {Attribute.ID: key_id, Attribute.CLASS: object_class, Attribute.TOKEN: True}
                )
            )
            if not found:
                raise ObjectMissing()
            handle = self._handles[(key_id, object_class)] = found[0]
        return handle

    def _private(self, key_id: bytes) -> Any:
        return self._key(key_id, ObjectClass.PRIVATE_KEY)

    def _public_key(self, key_id: bytes) -> Any:
        return self._key(key_id, ObjectClass.PUBLIC_KEY)

    def forget(self, key_id: bytes) -> None:
        for object_class in (
            ObjectClass.SECRET_KEY,
            ObjectClass.PRIVATE_KEY,
            ObjectClass.PUBLIC_KEY,
        ):
            self._handles.pop((key_id, object_class), None)
        for slot in [s for s in self._canaries if s[: len(key_id)] == key_id]:
            del self._canaries[slot]
        self.forget_seeds(key_id)

    def generate(self, spec: KeySpec, key_id: bytes, label: str) -> None:
        s = self._session
        if spec in _OTP_KEYS:
            self._generate_otp_key(spec, key_id, label)
            return
        if spec is KeySpec.AES256:
            s.generate_key(
                KeyType.AES,
                256,
                id=key_id,
                label=label,
                store=True,
                template={
                    **_SECRET_POLICY,
                    Attribute.ENCRYPT: True,
                    Attribute.DECRYPT: True,
                    Attribute.WRAP: True,
                    Attribute.UNWRAP: True,
                    Attribute.SIGN: False,
                    Attribute.VERIFY: False,
                    Attribute.DERIVE: False,
                },
            )
        elif spec is KeySpec.HMAC256:
            s.generate_key(
                KeyType.GENERIC_SECRET,
                _HMAC_KEY_BITS[spec],
                id=key_id,
                label=label,
                store=True,
                template={
                    **_SECRET_POLICY,
                    Attribute.SIGN: True,
                    Attribute.VERIFY: True,
                    Attribute.ENCRYPT: False,
                    Attribute.DECRYPT: False,
                    Attribute.WRAP: False,
                    Attribute.UNWRAP: False,
                    Attribute.DERIVE: False,
                },
            )
        elif spec in (KeySpec.AES256_GCM, KeySpec.HMAC512):
            uses, _, mechanisms = _JOBS[spec]
            key_type, bits = (
                (KeyType.AES, 256)
                if spec is KeySpec.AES256_GCM
                else (KeyType.GENERIC_SECRET, _HMAC_KEY_BITS[spec])
            )
            s.generate_key(
                key_type,
                bits,
                id=key_id,
                label=label,
                store=True,
                template=_template(_SECRET_POLICY, _SECRET_USES_OFF, uses, mechanisms, _FIXED),
            )
        else:
            self._generate_pair(spec, key_id, label)

    def _generate_otp_key(self, spec: KeySpec, key_id: bytes, label: str) -> None:
        key_type, bits, template = _OTP_KEYS[spec]
        self._session.generate_key(
            key_type, bits, id=key_id, label=label, store=True, template=template
        )

    def _generate_pair(self, spec: KeySpec, key_id: bytes, label: str) -> None:
        s = self._session
        private_uses, public_uses, mechanisms = _JOBS[spec]
        public_template = _template(_PUBLIC_POLICY, _PUBLIC_USES_OFF, public_uses, mechanisms, {})
        private_template = _template(
            _SECRET_POLICY, _PRIVATE_USES_OFF, private_uses, mechanisms, _FIXED
        )
        if spec in (KeySpec.RSA3072, KeySpec.RSA3072_OAEP):
            s.generate_keypair(
                KeyType.RSA,
                3072,
                id=key_id,
                label=label,
                store=True,
                public_template=public_template,
                private_template=private_template,
            )
            return
        if spec is KeySpec.ED25519:
            key_type, mechanism = KeyType.EC_EDWARDS, Mechanism.EC_EDWARDS_KEY_PAIR_GEN
            params = encode_named_curve_parameters(_ID_ED25519)
        else:
            key_type, mechanism = KeyType.EC, Mechanism.EC_KEY_PAIR_GEN
            params = encode_named_curve_parameters(_EC_P256)
        domain = s.create_domain_parameters(key_type, {Attribute.EC_PARAMS: params}, local=True)
        domain.generate_keypair(
            id=key_id,
            label=label,
            store=True,
            mechanism=mechanism,
            public_template=public_template,
            private_template=private_template,
        )

    def destroy(self, key_id: bytes) -> int:
        self.forget(key_id)
        count = 0
        for obj in list(self._session.get_objects({Attribute.ID: key_id})):
            obj.destroy()
            count += 1
        return count

    def objects(self) -> list[ObjectInfo]:
        result = []
        for obj in self._session.get_objects({Attribute.TOKEN: True}):
            cls = obj[Attribute.CLASS]
            secret = cls in (ObjectClass.SECRET_KEY, ObjectClass.PRIVATE_KEY)
            result.append(
                ObjectInfo(
                    key_id=bytes(obj[Attribute.ID]),
                    label=str(obj[Attribute.LABEL]),
                    object_class=cls.name,
                    key_type=obj[Attribute.KEY_TYPE].name,
                    sensitive=bool(obj[Attribute.SENSITIVE]) if secret else False,
                    extractable=bool(obj[Attribute.EXTRACTABLE]) if secret else True,
                    token=True,
                )
            )
        return result

    def session_object_count(self) -> int:
        """Session objects: the seeds the seed cache keeps (and, inside a job, a seed being
        used for one verification with the cache off). SoftHSM 2.6 may also find, for an
        instant, a token object another process is still creating (its attributes not all
        written yet): what does not read as a session object now is not counted."""
        count = 0
        for obj in self._session.get_objects({Attribute.TOKEN: False}):
            with contextlib.suppress(p11e.PKCS11Error):
                count += obj[Attribute.TOKEN] is False
        return count

    # -- symmetric -------------------------------------------------------------------------

    def random(self, length: int) -> bytes:
        return bytes(self._session.generate_random(length * 8))

    def encrypt_gcm(
        self, key_id: bytes, iv: bytes, plaintext: bytes, aad: bytes
    ) -> tuple[bytes, bytes]:
        # python-pkcs11 points CK_GCM_PARAMS.pIv at this very buffer (_pkcs11.pyx), so a
        # module that writes its own IV there (AWS CloudHSM, FIPS-mode modules) leaves it in
        # ``used``: what is returned is the IV the token used, not the one offered.
        # (GCMParams is typed for bytes; at run time the library takes any byte buffer.)
        used = bytearray(iv)
        ciphertext = self._key(key_id).encrypt(
            plaintext,
            mechanism=Mechanism.AES_GCM,
            mechanism_param=GCMParams(cast(bytes, used), aad, GCM_TAG_BITS),
        )
        if len(used) != GCM_IV_BYTES:
            raise HsmUnavailable("the HSM reported an IV of the wrong length")
        return bytes(used), bytes(ciphertext)

    def decrypt_gcm(self, key_id: bytes, iv: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        key = self._key(key_id)
        try:
            return bytes(
                key.decrypt(
                    ciphertext,
                    mechanism=Mechanism.AES_GCM,
                    mechanism_param=GCMParams(iv, aad, GCM_TAG_BITS),
                )
            )
        except (p11e.EncryptedDataInvalid, p11e.EncryptedDataLenRange, p11e.GeneralError):
            # SoftHSM 2.6 reports a failed tag as GeneralError, the same as a device fault:
            # the caller asks key_works, on every failure alike (docs/envelope.md).
            raise DecryptionFailed() from None

    def key_works(self, key_id: bytes, oaep_hash: str | None = None) -> bool:
        """A known-good ciphertext (made once per key and process) decrypts again."""
        try:
            if oaep_hash is None:
                key, mechanism = self._key(key_id), Mechanism.AES_GCM
                param, sealed = self._gcm_canary(key_id)
            else:
                key, mechanism = self._private(key_id), Mechanism.RSA_PKCS_OAEP
                param, sealed = self._oaep_canary(key_id, oaep_hash)
            opened = key.decrypt(sealed, mechanism=mechanism, mechanism_param=param)
            return bytes(opened) == _CANARY_PLAINTEXT
        except p11e.PKCS11Error:
            return False

    def _gcm_canary(self, key_id: bytes) -> tuple[Any, bytes]:
        """Under a random IV like any other wrap."""
        canary = self._canaries.get(key_id)
        if canary is None:
            iv, sealed = self.encrypt_gcm(
                key_id, os.urandom(GCM_IV_BYTES), _CANARY_PLAINTEXT, _CANARY_AAD
            )
            canary = self._canaries[key_id] = (GCMParams(iv, _CANARY_AAD, GCM_TAG_BITS), sealed)
        return canary

    def _oaep_canary(self, key_id: bytes, oaep_hash: str) -> tuple[Any, bytes]:
        slot = key_id + b"\x00oaep:" + oaep_hash.encode()
        canary = self._canaries.get(slot)
        if canary is None:
            param = _OAEP_PARAMS[oaep_hash]
            public = self._public_key(key_id)
            sealed = public.encrypt(
                _CANARY_PLAINTEXT, mechanism=Mechanism.RSA_PKCS_OAEP, mechanism_param=param
            )
            canary = self._canaries[slot] = (param, bytes(sealed))
        return canary

    def mac(self, key_id: bytes, algorithm: MacAlgorithm, data: bytes) -> bytes:
        return bytes(self._key(key_id).sign(data, mechanism=_MAC_MECHANISMS[algorithm]))

    # -- asymmetric ------------------------------------------------------------------------

    def sign(self, key_id: bytes, scheme: SignScheme, data: bytes, hash_name: str) -> bytes:
        key = self._private(key_id)
        if scheme is SignScheme.ECDSA:
            return bytes(key.sign(data, mechanism=Mechanism.ECDSA))
        if scheme is SignScheme.EDDSA:
            return bytes(key.sign(data, mechanism=Mechanism.EDDSA))
        if scheme is SignScheme.RSA_PSS:
            return bytes(
                key.sign(
                    data, mechanism=Mechanism.RSA_PKCS_PSS, mechanism_param=_hash_params(hash_name)
                )
            )
        return bytes(key.sign(data, mechanism=Mechanism.RSA_PKCS))

    def public_key_der(self, key_id: bytes) -> bytes:
        pub = self._public_key(key_id)
        key_type = pub[Attribute.KEY_TYPE]
        if key_type == KeyType.EC:
            return bytes(encode_ec_public_key(pub))
        if key_type == KeyType.RSA:
            pkcs1 = encode_rsa_public_key(pub)
            loaded = serialization.load_der_public_key(_pkcs1_to_spki(pkcs1))
            return loaded.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        point = bytes(pub[Attribute.EC_POINT])
        raw = _unwrap_octet_string(point)
        return ed25519.Ed25519PublicKey.from_public_bytes(raw).public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def rsa_oaep_decrypt(self, key_id: bytes, ciphertext: bytes, hash_name: str) -> bytes:
        try:
            param = _OAEP_PARAMS[hash_name]
        except KeyError:
            raise InputRejected(f"unsupported hash algorithm {hash_name!r}") from None
        key = self._private(key_id)
        try:
            return bytes(
                key.decrypt(ciphertext, mechanism=Mechanism.RSA_PKCS_OAEP, mechanism_param=param)
            )
        except (p11e.ArgumentsBad, p11e.MechanismParamInvalid, p11e.MechanismInvalid):
            # SoftHSM 2.6 takes only SHA-1 (and MGF1-SHA-1) for OAEP decryption.
            log.error("HSM refused RSA-OAEP with %s", hash_name)
            raise HsmUnavailable("the HSM does not support RSA-OAEP with this hash") from None
        except (
            p11e.EncryptedDataInvalid,
            p11e.EncryptedDataLenRange,
            p11e.DataLenRange,
            p11e.GeneralError,
        ):
            # SoftHSM 2.6 reports a block that does not decrypt as GeneralError, the same as
            # a device fault; and which of the two it was must not show in what the caller
            # sees or how long it takes (Manger's attack on OAEP): key_works decides, on
            # every failure alike.
            raise DecryptionFailed() from None

    def ecdh(self, key_id: bytes, peer_point: bytes) -> bytes:
        secret = self._private(key_id).derive_key(
            KeyType.GENERIC_SECRET,
            256,
            mechanism=Mechanism.ECDH1_DERIVE,
            mechanism_param=(pkcs11.KDF.NULL, None, peer_point),
            store=False,
            template={
                Attribute.SENSITIVE: False,
                Attribute.EXTRACTABLE: True,
                Attribute.TOKEN: False,
            },
        )
        try:
            return bytes(secret[Attribute.VALUE])
        finally:
            secret.destroy()

    # -- OTP seeds -------------------------------------------------------------------------

    def seed_generate(
        self, wrap_key_id: bytes, length: int, device_public_key_der: bytes | None
    ) -> GeneratedSeed:
        wrapper = self._key(wrap_key_id)
        seed = self._session.generate_key(
            KeyType.GENERIC_SECRET,
            length * 8,
            store=False,
            template=_wrappable_seed(sensitive=device_public_key_der is not None),
        )
        try:
            wrapped = bytes(wrapper.wrap_key(seed, mechanism=Mechanism.AES_KEY_WRAP_PAD))
            if device_public_key_der is None:
                return GeneratedSeed(wrapped, bytes(seed[Attribute.VALUE]))
            device = self._device_key(device_public_key_der)
            try:
                for wrapping, param in _OAEP_FOR_DEVICES:
                    try:
                        for_device = device.wrap_key(
                            seed, mechanism=Mechanism.RSA_PKCS_OAEP, mechanism_param=param
                        )
                    except (p11e.ArgumentsBad, p11e.MechanismParamInvalid):
                        continue
                    return GeneratedSeed(wrapped, None, bytes(for_device), wrapping)
                raise HsmUnavailable("the HSM cannot wrap to the device key")
            finally:
                device.destroy()
        finally:
            seed.destroy()

    def _device_key(self, der: bytes) -> Any:
        try:
            public = serialization.load_der_public_key(der)
        except ValueError:
            raise InputRejected("device_public_key is not a valid public key") from None
        if not isinstance(public, rsa.RSAPublicKey) or public.key_size < 2048:
            raise InputRejected("device_public_key must be an RSA key of 2048 bits or more")
        numbers = public.public_numbers()
        return self._session.create_object(
            {
                Attribute.CLASS: ObjectClass.PUBLIC_KEY,
                Attribute.KEY_TYPE: KeyType.RSA,
                Attribute.TOKEN: False,
                Attribute.WRAP: True,
                Attribute.ENCRYPT: True,
                Attribute.MODULUS: numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big"),
                Attribute.PUBLIC_EXPONENT: numbers.e.to_bytes(
                    (numbers.e.bit_length() + 7) // 8, "big"
                ),
            }
        )

    def seed_import(self, wrap_key_id: bytes, seed: bytes) -> bytes:
        wrapper = self._key(wrap_key_id)
        obj = self._session.create_object(
            {
                Attribute.CLASS: ObjectClass.SECRET_KEY,
                Attribute.KEY_TYPE: KeyType.GENERIC_SECRET,
                Attribute.VALUE: seed,
                **_wrappable_seed(sensitive=True),
            }
        )
        try:
            return bytes(wrapper.wrap_key(obj, mechanism=Mechanism.AES_KEY_WRAP_PAD))
        finally:
            obj.destroy()

    def seed_macs(
        self,
        wrap_key_id: bytes,
        wrapped: bytes,
        algorithm: MacAlgorithm,
        messages: Sequence[bytes],
        until: Callable[[bytes], bool] | None = None,
        keep: SeedRef | None = None,
    ) -> list[bytes]:
        if keep is not None and self._seeds.size:
            entry = self._seeds.get(keep.wrap_key_id, keep.blob)
            if entry is not None:
                macs = self._cached_macs(keep, entry.handle, algorithm, messages, until)
                if macs is not None:
                    entry.add(keep.binding)  # the caller had the HSM verify it in this job
                    return macs
        seed = self._unwrap_seed(wrap_key_id, wrapped)
        kept = False
        try:
            macs = _macs(seed, algorithm, messages, until)
            if keep is not None and self._seeds.size:
                evicted = self._seeds.put(keep.wrap_key_id, keep.blob, seed, keep.binding)
                kept = True
                self._destroy_seeds(evicted)
            return macs
        finally:
            if not kept:
                seed.destroy()

    def cached_seed_macs(
        self,
        ref: SeedRef,
        algorithm: MacAlgorithm,
        messages: Sequence[bytes],
        until: Callable[[bytes], bool] | None = None,
    ) -> list[bytes] | None:
        entry = self._seeds.get(ref.wrap_key_id, ref.blob) if self._seeds.size else None
        if entry is None or not entry.verified(ref.binding):
            return None
        return self._cached_macs(ref, entry.handle, algorithm, messages, until)

    def _cached_macs(
        self,
        ref: SeedRef,
        seed: Any,
        algorithm: MacAlgorithm,
        messages: Sequence[bytes],
        until: Callable[[bytes], bool] | None,
    ) -> list[bytes] | None:
        """The MACs with a cached seed; None, and the entry dropped, when its object is gone
        (then the caller takes the full path; a lost session shows there and is re-opened)."""
        try:
            return _macs(seed, algorithm, messages, until)
        except (p11e.KeyHandleInvalid, p11e.ObjectHandleInvalid):
            log.info("a cached OTP seed is gone from the session; unwrapping it again")
            self._seeds.drop(ref.wrap_key_id, ref.blob)
            return None

    def forget_seed(self, ref: SeedRef) -> None:
        handle = self._seeds.drop(ref.wrap_key_id, ref.blob)
        if handle is not None:
            self._destroy_seeds([handle])

    def forget_seeds(self, wrap_key_id: bytes) -> int:
        handles = self._seeds.drop_wrap_key(wrap_key_id)
        self._destroy_seeds(handles)
        return len(handles)

    def cached_seed_count(self) -> int:
        return len(self._seeds)

    def _destroy_seeds(self, handles: list[Any]) -> None:
        for handle in handles:
            # One already gone (with whatever removed it) needs nothing more.
            with contextlib.suppress(p11e.KeyHandleInvalid, p11e.ObjectHandleInvalid):
                handle.destroy()

    def _unwrap_seed(self, wrap_key_id: bytes, wrapped: bytes) -> Any:
        wrapper = self._key(wrap_key_id)
        try:
            return _unwrap_for_mac(wrapper, wrapped)
        except (p11e.WrappedKeyInvalid, p11e.WrappedKeyLenRange, p11e.EncryptedDataInvalid):
            raise AuthenticationFailed() from None
        except p11e.GeneralError:
            # SoftHSM 2.6 reports a failed integrity check (RFC 5649 §3) as GeneralError, the
            # same as a device fault: a known-good blob of the same key tells them apart.
            if self._seed_canary_ok(wrap_key_id, wrapper):
                raise AuthenticationFailed() from None
            raise HsmUnavailable() from None

    def _seed_canary_ok(self, wrap_key_id: bytes, wrapper: Any) -> bool:
        """Whether a seed this key wrapped (made once per key and process) still unwraps,
        into the very template verification uses: if so, the key and the device work."""
        try:
            canary = self._canaries.get(wrap_key_id)
            if canary is None:
                seed = self._session.generate_key(
                    KeyType.GENERIC_SECRET,
                    _CANARY_SEED_BITS,
                    store=False,
                    template=_wrappable_seed(sensitive=True),
                )
                try:
                    canary = bytes(wrapper.wrap_key(seed, mechanism=Mechanism.AES_KEY_WRAP_PAD))
                finally:
                    seed.destroy()
                self._canaries[wrap_key_id] = canary
            _unwrap_for_mac(wrapper, canary).destroy()
            return True
        except p11e.PKCS11Error:
            return False


def _macs(
    seed: Any,
    algorithm: MacAlgorithm,
    messages: Sequence[bytes],
    until: Callable[[bytes], bool] | None,
) -> list[bytes]:
    mechanism = _MAC_MECHANISMS[algorithm]
    macs = []
    for message in messages:
        macs.append(bytes(seed.sign(message, mechanism=mechanism)))
        if until is not None and until(macs[-1]):
            break
    return macs


def _unwrap_for_mac(wrapper: Any, wrapped: bytes) -> Any:
    # capabilities=0: python-pkcs11 adds no flags of its own; _SEED_TEMPLATE sets them all.
    return wrapper.unwrap_key(
        ObjectClass.SECRET_KEY,
        KeyType.GENERIC_SECRET,
        wrapped,
        mechanism=Mechanism.AES_KEY_WRAP_PAD,
        store=False,
        capabilities=0,
        template=_SEED_TEMPLATE,
    )


def _hash_params(hash_name: str) -> tuple[Mechanism, MGF, int]:
    try:
        return _HASH_PARAMS[hash_name]
    except KeyError:
        raise InputRejected(f"unsupported hash algorithm {hash_name!r}") from None


def _unwrap_octet_string(point: bytes) -> bytes:
    """CKA_EC_POINT is a DER OCTET STRING around the raw point (PKCS#11 v2.40 §2.3.3)."""
    if len(point) >= 2 and point[0] == _DER_OCTET_STRING and point[1] == len(point) - 2:
        return point[2:]
    return point


def _pkcs1_to_spki(pkcs1: bytes) -> bytes:
    from asn1crypto.keys import PublicKeyInfo, RSAPublicKey  # noqa: PLC0415

    info = PublicKeyInfo(
        {"algorithm": {"algorithm": "rsa"}, "public_key": RSAPublicKey.load(pkcs1)}
    )
    return bytes(info.dump())
