"""Who may do what: services, their public keys and grants, and the keys that must exist.

Deny by default: a request is allowed only when one of the calling service's grants names
the operation and a pattern matching the key. Files are TOML under ``policies/``; an error
stops the service at start with the file and the problem.
"""

from __future__ import annotations

import base64
import datetime as dt
import fnmatch
import functools
import hashlib
import ipaddress
import json
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from vault.errors import BadRequest, ConfigError
from vault.keys import KEY_NAME, MIN_ROTATE_PERIOD
from vault.keytypes import KEY_TYPES
from vault.subjects import SUBJECT_FORMATS, SubjectFormat

# Operations a grant can name. "otp:*", "transit:*" and "*" are shorthands.
TRANSIT_KEY_ADMIN = frozenset({"create", "read", "list", "rotate", "config", "trim", "delete"})
TRANSIT_USE = frozenset(
    {
        "encrypt",
        "decrypt",
        "rewrap",
        "datakey:plaintext",
        "datakey:wrapped",
        "sign",
        "verify",
        "hmac",
        "random",
        "digest",
        "hash",
    }
)
OTP_OPERATIONS = frozenset(
    {
        "otp:create",
        "otp:import",
        "otp:verify",
        # Token management: a seed's ledger state, HOTP resynchronization, unlocking, and
        # deactivation for good (the kill switch).
        "otp:read",
        "otp:resync",
        "otp:unlock",
        "otp:deactivate",
    }
)
SEAL_OPERATIONS = frozenset({"seal", "open"})
OPERATIONS = TRANSIT_KEY_ADMIN | TRANSIT_USE | OTP_OPERATIONS | SEAL_OPERATIONS
_SHORTHANDS = {
    "*": OPERATIONS,
    "transit:*": TRANSIT_KEY_ADMIN | TRANSIT_USE,
    "otp:*": OTP_OPERATIONS,
    "datakey": frozenset({"datakey:plaintext", "datakey:wrapped"}),
    "configure": frozenset({"config"}),
}

DEFAULT_CLOCK_SKEW = 30
MAX_CLOCK_SKEW = 3600
DEFAULT_AUDIENCE = "hsm-vault"
PARTNER_KEY_MANAGEMENT = ("RSA-OAEP-256", "RSA-OAEP", "ECDH-ES+A256KW")

# The JWS algorithm each kind of service key signs with (RFC 8037, RFC 7518 §3.4).
_ALGORITHM_FOR_KEY = {ed25519.Ed25519PublicKey: "EdDSA", ec.EllipticCurvePublicKey: "ES256"}

# Quota windows: seconds, or a number with a unit ("30s", "1m", "24h", "1d").
_WINDOW = re.compile(r"^([1-9][0-9]{0,6})([smhd])$")
_WINDOW_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_QUOTA_WINDOW = 366 * 86400
MAX_SLIDING_LIMIT = 1000  # a sliding window keeps one time stamp per admitted request
MAX_QUOTA_LIMIT = 10**9
QUOTA_SCOPES = ("service", "subject")
_COVERING_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class Grant:
    keys: tuple[str, ...]
    operations: frozenset[str]
    single_use: bool = False  # each token may do these operations once (its jti is spent)

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - grants live as long as the process
    def allows(self, operation: str, key: str | None) -> bool:
        if operation not in self.operations:
            return False
        if key is None:
            return True
        return any(fnmatch.fnmatchcase(key, pattern) for pattern in self.keys)


@dataclass(frozen=True, slots=True)
class ServiceKey:
    """One of a service's token-signing public keys. A service may hold several at once, so
    that it can roll its key over: the new one is added, tokens move to it, the old one goes."""

    public_key: Any
    algorithm: str
    kid: str  # the `kid` a token names it by: configured, or its RFC 7638 JWK thumbprint


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    keys: tuple[ServiceKey, ...]
    grants: tuple[Grant, ...]
    dev: bool = False
    # False only for a dev service that runs Vault clients' own conformance tests: its key
    # deletions, trims and lowered min_decryption_version need no officers' approval.
    dual_control: bool = True
    # Source addresses tokens of this service are accepted from (None: any).
    allow_from: tuple[Network, ...] | None = None
    # Mutual TLS: the client certificate's subject CN must be this (default: the name);
    # ``client_cert_required``: a request without a client certificate is refused.
    client_cert_cn: str = ""
    client_cert_required: bool = False

    @property
    def public_key(self) -> Any:
        """The first public key (None when the dev key pair has not been made yet)."""
        return self.keys[0].public_key if self.keys else None

    @property
    def algorithm(self) -> str:
        return self.keys[0].algorithm if self.keys else ""

    @property
    def certificate_cn(self) -> str:
        return self.client_cert_cn or self.name

    def allows(self, operation: str, key: str | None) -> bool:
        return any(g.allows(operation, key) for g in self.grants)

    def single_use(self, operation: str, key: str | None) -> bool:
        """Whether a token may do ``operation`` on ``key`` only once (any grant says so)."""
        return any(g.single_use and g.allows(operation, key) for g in self.grants)

    def may_see(self, key: str) -> bool:
        return any(any(fnmatch.fnmatchcase(key, p) for p in g.keys) for g in self.grants)

    def admits(self, address: str) -> bool:
        """Whether a request from ``address`` may use this service's tokens."""
        if self.allow_from is None:
            return True
        return _address_in(address, self.allow_from)


@functools.lru_cache(maxsize=4096)
def _address_in(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False  # no address (a Unix socket) or an unparsable one: not in any network
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)


@dataclass(frozen=True, slots=True)
class DeclaredKey:
    name: str
    type: str
    auto_rotate_period: int = 0
    deletion_allowed: bool = False
    purpose: str | None = None  # None: the type's default (vault/keytypes.py)
    associated_data: SubjectFormat | None = None  # structured AD: which field names the subject


@dataclass(frozen=True, slots=True)
class Officer:
    """A security officer: the public half of the key pair they sign approvals with."""

    name: str
    public_key: Any  # Ed25519 or EC P-256; None for a dev officer whose key is not made yet
    dev: bool = False


@dataclass(frozen=True, slots=True)
class PartnerKey:
    """One of a partner's public keys, and when it may be used: from ``not_before`` (if set)
    until ``not_after`` (if set, exclusive), never once ``retired``. Times are seconds since
    the epoch."""

    pem: bytes
    kid: str = ""  # the JOSE ``kid`` (RFC 7515 §4.1.4) naming it; "" = none
    not_before: float | None = None
    not_after: float | None = None
    retired: bool = False

    def valid_at(self, now: float) -> bool:
        return (
            not self.retired
            and (self.not_before is None or now >= self.not_before)
            and (self.not_after is None or now < self.not_after)
        )


@dataclass(frozen=True, slots=True)
class QuotaRule:
    """At most ``limit`` operations per ``window`` seconds, per service or per subject."""

    name: str
    keys: tuple[str, ...]
    operations: frozenset[str]
    services: tuple[str, ...]
    per: str  # "service" or "subject"
    limit: int
    window: int
    sliding: bool

    def covers(self, service: str, operation: str, key: str | None) -> bool:
        return (
            operation in self.operations
            and any(fnmatch.fnmatchcase(service, p) for p in self.services)
            and (key is None or any(fnmatch.fnmatchcase(key, p) for p in self.keys))
        )


@dataclass(frozen=True, slots=True)
class Partner:
    name: str
    signing_key: str  # our key that signs what we seal to this partner
    decryption_key: str  # our key the partner encrypts to
    # The partner's keys, oldest first: every valid signing key verifies what it sends us; the
    # newest valid encryption key is the one we seal to.
    sig_keys: tuple[PartnerKey, ...] = ()
    enc_keys: tuple[PartnerKey, ...] = ()
    key_management: str = ""  # JWE alg the partner must use to us; "" = by our key's type
    max_clock_skew: int = DEFAULT_CLOCK_SKEW  # seconds either side of `iat`
    issuer: str = ""  # the partner's own id (`iss` of what it sends); "" = its name
    audience: str = DEFAULT_AUDIENCE  # our id as the partner knows us (`aud` it sends)
    dev: bool = False  # `make run` generates its key pairs under var/dev-partners/

    @property
    def partner_id(self) -> str:
        return self.issuer or self.name


@dataclass(slots=True)
class Policies:
    services: dict[str, Service] = field(default_factory=dict)
    keys: dict[str, DeclaredKey] = field(default_factory=dict)
    partners: dict[str, Partner] = field(default_factory=dict)
    officers: dict[str, Officer] = field(default_factory=dict)
    quotas: dict[str, QuotaRule] = field(default_factory=dict)
    dev_services: tuple[str, ...] = ()
    otp_max_failures: int = 5
    otp_lockout_seconds: int = 300
    _covering: dict[tuple[str, str, str | None], tuple[QuotaRule, ...]] = field(
        default_factory=dict, repr=False
    )

    def service(self, name: str) -> Service | None:
        return self.services.get(name)

    def subject_format(self, key: str | None) -> SubjectFormat | None:
        declared = self.keys.get(key) if key is not None else None
        return declared.associated_data if declared is not None else None

    def quotas_for(self, service: str, operation: str, key: str | None) -> tuple[QuotaRule, ...]:
        """The quota rules that cover a request (remembered: asked on every request)."""
        found = self._covering.get((service, operation, key))
        if found is None:
            found = tuple(r for r in self.quotas.values() if r.covers(service, operation, key))
            if len(self._covering) < _COVERING_LIMIT:
                self._covering[(service, operation, key)] = found
        return found


class _PolicyFileError(Exception):
    pass


def load_policies(directory: Path, var_dir: Path, *, require_keys: bool = True) -> Policies:
    """Read every ``*.toml`` under ``directory``. Any problem is a ``ConfigError`` naming it."""
    policies = Policies()
    files = sorted(directory.glob("*.toml"))
    if not files:
        raise ConfigError(f"no policy files in {directory}")
    dev: list[str] = []
    for path in files:
        try:
            with path.open("rb") as fh:
                doc = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        try:
            _merge(policies, doc, var_dir, require_keys, dev)
        except _PolicyFileError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    policies.dev_services = tuple(dev)
    return policies


def load_declared_keys(path: Path) -> dict[str, DeclaredKey]:
    """The ``[keys]`` of one policy file (the officers' ``keys create --file``)."""
    try:
        with path.open("rb") as fh:
            doc = tomllib.load(fh)
        return {name: _declared_key(name, spec) for name, spec in _table(doc, "keys").items()}
    except OSError:
        raise ConfigError(f"cannot read {path}") from None
    except (tomllib.TOMLDecodeError, _PolicyFileError) as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _merge(
    policies: Policies, doc: dict[str, Any], var_dir: Path, require_keys: bool, dev: list[str]
) -> None:
    unknown = set(doc) - {"services", "keys", "partners", "otp", "officers", "quotas"}
    if unknown:
        raise _PolicyFileError(f"unknown section(s) {sorted(unknown)}")
    otp = _table(doc, "otp")
    if set(otp) - {"max_failures", "lockout_seconds"}:
        raise _PolicyFileError("[otp] takes only max_failures and lockout_seconds")
    for field_name in ("max_failures", "lockout_seconds"):
        if field_name in otp:
            value = otp[field_name]
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise _PolicyFileError(f"[otp] {field_name} must be a positive integer")
            setattr(policies, f"otp_{field_name}", value)
    for name, spec in _table(doc, "keys").items():
        if name in policies.keys:
            raise _PolicyFileError(f"key {name!r} is declared twice")
        policies.keys[name] = _declared_key(name, spec)
    for name, spec in _table(doc, "services").items():
        if name in policies.services:
            raise _PolicyFileError(f"service {name!r} is declared twice")
        service = _service(name, spec, var_dir, require_keys)
        policies.services[name] = service
        if service.dev:
            dev.append(name)
    for name, spec in _table(doc, "partners").items():
        if name in policies.partners:
            raise _PolicyFileError(f"partner {name!r} is declared twice")
        policies.partners[name] = _partner(name, spec, var_dir, require_keys)
    for name, spec in _table(doc, "officers").items():
        if name in policies.officers:
            raise _PolicyFileError(f"officer {name!r} is declared twice")
        policies.officers[name] = _officer(name, spec, var_dir, require_keys)
    for name, spec in _table(doc, "quotas").items():
        if name in policies.quotas:
            raise _PolicyFileError(f"quota {name!r} is declared twice")
        policies.quotas[name] = _quota(name, spec)


def _table(doc: dict[str, Any], name: str) -> dict[str, Any]:
    value = doc.get(name, {})
    if not isinstance(value, dict):
        raise _PolicyFileError(f"[{name}] must be a table")
    return value


def _declared_key(name: str, spec: Any) -> DeclaredKey:
    if not isinstance(spec, dict) or not KEY_NAME.fullmatch(name):
        raise _PolicyFileError(f"key {name!r}: bad name or not a table")
    extra = set(spec) - {
        "type",
        "auto_rotate_period",
        "deletion_allowed",
        "purpose",
        "associated_data",
    }
    if extra:
        raise _PolicyFileError(f"key {name!r}: unknown field(s) {sorted(extra)}")
    kind = spec.get("type")
    if kind not in KEY_TYPES:
        raise _PolicyFileError(f"key {name!r}: type must be one of {sorted(KEY_TYPES)}")
    purpose = spec.get("purpose")
    try:
        if purpose is not None:
            KEY_TYPES[kind].purpose(purpose if isinstance(purpose, str) else repr(purpose))
    except BadRequest as exc:
        raise _PolicyFileError(f"key {name!r}: {exc}") from None
    period = spec.get("auto_rotate_period", 0)
    if (
        not isinstance(period, int)
        or isinstance(period, bool)
        or (period != 0 and period < MIN_ROTATE_PERIOD)
        or period < 0
    ):
        raise _PolicyFileError(
            f"key {name!r}: auto_rotate_period must be 0 or at least {MIN_ROTATE_PERIOD} seconds"
        )
    deletion_allowed = spec.get("deletion_allowed", False)
    if not isinstance(deletion_allowed, bool):
        raise _PolicyFileError(f"key {name!r}: deletion_allowed must be true or false")
    structure = spec.get("associated_data")
    return DeclaredKey(
        name,
        kind,
        period,
        deletion_allowed,
        purpose,
        None if structure is None else _subject_format(name, structure),
    )


def _subject_format(name: str, spec: Any) -> SubjectFormat:
    where = f"key {name!r} associated_data"
    if not isinstance(spec, dict) or set(spec) - {"format", "subject", "separator"}:
        raise _PolicyFileError(f"{where}: takes format, subject and (for kv) separator")
    kind, subject = spec.get("format"), spec.get("subject")
    if kind not in SUBJECT_FORMATS:
        raise _PolicyFileError(f"{where}: format must be one of {list(SUBJECT_FORMATS)}")
    if not isinstance(subject, str) or not subject or "=" in subject:
        raise _PolicyFileError(f"{where}: subject must name a field")
    separator = spec.get("separator", ";")
    if kind != "kv" and "separator" in spec:
        raise _PolicyFileError(f"{where}: separator is for format kv")
    if not isinstance(separator, str) or len(separator) != 1 or separator == "=":
        raise _PolicyFileError(f"{where}: separator must be one character other than '='")
    return SubjectFormat(kind, subject, separator)


def _window(value: Any, where: str) -> int:
    """A quota window: seconds, or "30s", "1m", "24h", "1d"."""
    seconds: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    elif isinstance(value, str) and (match := _WINDOW.fullmatch(value.strip())):
        seconds = int(match[1]) * _WINDOW_UNITS[match[2]]
    if seconds is None or not 1 <= seconds <= MAX_QUOTA_WINDOW:
        raise _PolicyFileError(
            f"{where}: window must be seconds or a duration like '1s', '1m', '24h', '1d' "
            "(at most 366 days)"
        )
    return seconds


def _patterns(spec: dict[str, Any], name: str, where: str, default: list[str]) -> tuple[str, ...]:
    value = spec.get(name, default)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise _PolicyFileError(f"{where}: {name} must be a list of names or patterns")
    return tuple(value)


def _quota(name: str, spec: Any) -> QuotaRule:
    where = f"quota {name!r}"
    fields = {"keys", "operations", "services", "per", "limit", "window", "kind"}
    if not isinstance(spec, dict) or not KEY_NAME.fullmatch(name):
        raise _PolicyFileError(f"{where}: bad name or not a table")
    if set(spec) - fields:
        raise _PolicyFileError(f"{where}: unknown field(s) {sorted(set(spec) - fields)}")
    operations = _expand(_patterns(spec, "operations", where, []), where)
    per = spec.get("per", "service")
    if per not in QUOTA_SCOPES:
        raise _PolicyFileError(f"{where}: per must be one of {list(QUOTA_SCOPES)}")
    kind = spec.get("kind", "sliding")
    if kind not in ("sliding", "fixed"):
        raise _PolicyFileError(f"{where}: kind must be sliding or fixed")
    limit = spec.get("limit")
    ceiling = MAX_SLIDING_LIMIT if kind == "sliding" else MAX_QUOTA_LIMIT
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= ceiling:
        raise _PolicyFileError(
            f"{where}: limit must be 1 to {ceiling}"
            + (" (a larger one takes kind = 'fixed')" if kind == "sliding" else "")
        )
    return QuotaRule(
        name=name,
        keys=_patterns(spec, "keys", where, ["*"]),
        operations=operations,
        services=_patterns(spec, "services", where, ["*"]),
        per=per,
        limit=limit,
        window=_window(spec.get("window"), where),
        sliding=kind == "sliding",
    )


def _expand(operations: Iterable[Any], where: str) -> frozenset[str]:
    result: set[str] = set()
    for op in operations:
        if not isinstance(op, str):
            raise _PolicyFileError(f"{where}: operations must be strings")
        if op in _SHORTHANDS:
            result |= _SHORTHANDS[op]
        elif op in OPERATIONS:
            result.add(op)
        else:
            raise _PolicyFileError(f"{where}: unknown operation {op!r}")
    return frozenset(result)


_SERVICE_FIELDS = {
    "public_key",
    "public_key_file",
    "public_keys",
    "grants",
    "dev",
    "dual_control",
    "allow_from",
    "client_cert_cn",
    "client_cert_required",
}


def _service(name: str, spec: Any, var_dir: Path, require_keys: bool) -> Service:
    if not isinstance(spec, dict):
        raise _PolicyFileError(f"service {name!r} must be a table")
    extra = set(spec) - _SERVICE_FIELDS
    if extra:
        raise _PolicyFileError(f"service {name!r}: unknown field(s) {sorted(extra)}")
    dual_control = spec.get("dual_control", True)
    if not isinstance(dual_control, bool):
        raise _PolicyFileError(f"service {name!r}: dual_control must be true or false")
    if not dual_control and spec.get("dev") is not True:
        raise _PolicyFileError(
            f"service {name!r}: only a dev service may be exempt from dual control"
        )
    grants = []
    for i, g in enumerate(spec.get("grants", [])):
        where = f"service {name!r} grant {i + 1}"
        if not isinstance(g, dict) or set(g) - {"keys", "operations", "single_use"}:
            raise _PolicyFileError(
                f"{where}: needs exactly 'keys' and 'operations' (and optionally 'single_use')"
            )
        keys = g.get("keys", [])
        if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
            raise _PolicyFileError(f"{where}: keys must be a list of names or patterns")
        single_use = g.get("single_use", False)
        if not isinstance(single_use, bool):
            raise _PolicyFileError(f"{where}: single_use must be true or false")
        grants.append(Grant(tuple(keys), _expand(g.get("operations", []), where), single_use))
    cn, required = spec.get("client_cert_cn", ""), spec.get("client_cert_required", False)
    if not isinstance(cn, str) or not isinstance(required, bool):
        raise _PolicyFileError(
            f"service {name!r}: client_cert_cn is a string, client_cert_required true or false"
        )
    return Service(
        name,
        _service_keys(name, spec, var_dir, require_keys),
        tuple(grants),
        bool(spec.get("dev", False)),
        dual_control,
        allow_from=_networks(name, spec.get("allow_from")),
        client_cert_cn=cn,
        client_cert_required=required,
    )


def _networks(name: str, value: Any) -> tuple[Network, ...] | None:
    if value is None:
        return None
    where = f"service {name!r} allow_from"
    if not isinstance(value, list) or not value:
        raise _PolicyFileError(f"{where}: must list at least one address or network")
    try:
        return tuple(ipaddress.ip_network(str(v), strict=False) for v in value)
    except ValueError as exc:
        raise _PolicyFileError(f"{where}: {exc}") from None


def _service_keys(
    name: str, spec: dict[str, Any], var_dir: Path, require_keys: bool
) -> tuple[ServiceKey, ...]:
    """The single ``public_key``/``public_key_file`` form and the ``public_keys`` list (each
    entry a PEM string, or a table with ``pem`` or ``file`` and an optional ``kid``)."""
    required = require_keys and not spec.get("dev", False)
    what = f"service {name!r}"
    entries: list[tuple[bytes, str]] = []
    listed = spec.get("public_keys")
    if "public_key" in spec or "public_key_file" in spec or listed is None:
        pem = _read_pem(spec, var_dir, what, required)
        if pem is not None:
            entries.append((pem, ""))
    if listed is not None:
        if not isinstance(listed, list) or not listed:
            raise _PolicyFileError(f"{what}: public_keys must be a non-empty list")
        for i, entry in enumerate(listed):
            found = _listed_pem(entry, var_dir, f"{what} public_keys[{i}]", required)
            if found is not None:
                entries.append(found)
    keys: list[ServiceKey] = []
    for pem, kid in entries:
        public, algorithm = _public_key(what, pem)
        key = ServiceKey(public, algorithm, kid or jwk_thumbprint(public))
        if any(k.kid == key.kid for k in keys):
            raise _PolicyFileError(f"{what}: two public keys with kid {key.kid!r}")
        keys.append(key)
    return tuple(keys)


def _listed_pem(entry: Any, var_dir: Path, what: str, required: bool) -> tuple[bytes, str] | None:
    if isinstance(entry, str):
        return entry.encode(), ""
    if not isinstance(entry, dict) or set(entry) - {"pem", "file", "kid"}:
        raise _PolicyFileError(f"{what}: a PEM string or a table with pem or file (and kid)")
    kid = entry.get("kid", "")
    if not isinstance(kid, str):
        raise _PolicyFileError(f"{what}: kid must be a string")
    spec = (
        {"public_key": entry["pem"]} if "pem" in entry else {"public_key_file": entry.get("file")}
    )
    pem = _read_pem(spec, var_dir, what, required)
    return None if pem is None else (pem, kid)


def jwk_thumbprint(public: Any) -> str:
    """RFC 7638: SHA-256 over the JWK's required members, in lexicographic order."""
    if isinstance(public, ed25519.Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        members = {"crv": "Ed25519", "kty": "OKP", "x": _b64url(raw)}
    else:
        numbers = public.public_numbers()
        members = {
            "crv": "P-256",
            "kty": "EC",
            "x": _b64url(numbers.x.to_bytes(32, "big")),
            "y": _b64url(numbers.y.to_bytes(32, "big")),
        }
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return _b64url(hashlib.sha256(canonical).digest())


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _officer(name: str, spec: Any, var_dir: Path, require_keys: bool) -> Officer:
    if not isinstance(spec, dict) or not KEY_NAME.fullmatch(name):
        raise _PolicyFileError(f"officer {name!r}: bad name or not a table")
    extra = set(spec) - {"public_key", "public_key_file", "dev"}
    if extra:
        raise _PolicyFileError(f"officer {name!r}: unknown field(s) {sorted(extra)}")
    what = f"officer {name!r}"
    pem = _read_pem(spec, var_dir, what, require_keys and not spec.get("dev", False))
    public_key = None if pem is None else _public_key(what, pem)[0]
    return Officer(name, public_key, bool(spec.get("dev", False)))


def _read_pem(
    spec: dict[str, Any], var_dir: Path, what: str, required: bool, prefix: str = ""
) -> bytes | None:
    if f"{prefix}public_key" in spec:
        return str(spec[f"{prefix}public_key"]).encode()
    path_text = spec.get(f"{prefix}public_key_file")
    if not isinstance(path_text, str):
        raise _PolicyFileError(f"{what}: needs {prefix}public_key or {prefix}public_key_file")
    path = Path(path_text.replace("{var}", str(var_dir)))
    try:
        return path.read_bytes()
    except OSError:
        if required:
            raise _PolicyFileError(f"{what}: cannot read {path}") from None
        return None


def _public_key(what: str, pem: bytes) -> tuple[Any, str]:
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        raise _PolicyFileError(f"{what}: public key is not a PEM public key") from None
    for cls, alg in _ALGORITHM_FOR_KEY.items():
        if isinstance(key, cls):
            if isinstance(key, ec.EllipticCurvePublicKey) and not isinstance(
                key.curve, ec.SECP256R1
            ):
                break
            return key, alg
    raise _PolicyFileError(f"{what}: public key must be Ed25519 or EC P-256")


_PARTNER_FIELDS = {
    "public_key",
    "public_key_file",
    "sig_public_key",
    "sig_public_key_file",
    "enc_public_key",
    "enc_public_key_file",
    "sig_keys",
    "enc_keys",
    "signing_key",
    "decryption_key",
    "key_management",
    "max_clock_skew",
    "issuer",
    "audience",
    "dev",
}
_PARTNER_KEY_FIELDS = {"public_key", "public_key_file", "kid", "not_before", "not_after", "retired"}


def _partner_pem(
    where: str, spec: dict[str, Any], var_dir: Path, prefix: str, required: bool
) -> bytes:
    """One of the partner's PEM public keys, or b"" when not declared (or not yet made)."""
    if f"{prefix}public_key" not in spec and f"{prefix}public_key_file" not in spec:
        return b""
    pem = _read_pem(spec, var_dir, where, required, prefix) or b""
    if pem:
        try:
            serialization.load_pem_public_key(pem)
        except ValueError:
            raise _PolicyFileError(f"{where}: {prefix}public_key is not a PEM public key") from None
    return pem


def _instant(where: str, name: str, value: Any) -> float | None:
    """A TOML offset date-time (``2027-01-31T00:00:00Z``) as seconds since the epoch."""
    if value is None:
        return None
    if not isinstance(value, dt.datetime) or value.utcoffset() is None:
        raise _PolicyFileError(
            f"{where}: {name} must be a date-time with a time zone, e.g. 2027-01-31T00:00:00Z"
        )
    return value.timestamp()


def _partner_key(where: str, spec: Any, var_dir: Path, required: bool) -> PartnerKey | None:
    if not isinstance(spec, dict):
        raise _PolicyFileError(f"{where} must be a table")
    extra = set(spec) - _PARTNER_KEY_FIELDS
    if extra:
        raise _PolicyFileError(f"{where}: unknown field(s) {sorted(extra)}")
    pem = _partner_pem(where, spec, var_dir, "", required)
    if not pem:
        if "public_key_file" in spec and not required:
            return None  # a dev partner's key, not made yet
        raise _PolicyFileError(f"{where}: needs public_key or public_key_file")
    kid, retired = spec.get("kid", ""), spec.get("retired", False)
    if not isinstance(kid, str) or not isinstance(retired, bool):
        raise _PolicyFileError(f"{where}: kid must be a string and retired true or false")
    not_before = _instant(where, "not_before", spec.get("not_before"))
    not_after = _instant(where, "not_after", spec.get("not_after"))
    if not_before is not None and not_after is not None and not_before >= not_after:
        raise _PolicyFileError(f"{where}: not_before must be earlier than not_after")
    return PartnerKey(pem, kid, not_before, not_after, retired)


def _partner_keys(
    name: str, spec: dict[str, Any], var_dir: Path, role: str, required: bool
) -> tuple[PartnerKey, ...]:
    """The partner's keys for one role (``sig`` or ``enc``): the ``<role>_keys`` list, or the
    older single-key forms (``<role>_public_key``, then ``public_key`` for both roles)."""
    listed = spec.get(f"{role}_keys")
    single = f"{role}_public_key" in spec or f"{role}_public_key_file" in spec
    where = f"partner {name!r}"
    if listed is None:
        pem = _partner_pem(where, spec, var_dir, f"{role}_" if single else "", required)
        return (PartnerKey(pem),) if pem else ()
    if single:
        raise _PolicyFileError(f"{where}: give {role}_keys or {role}_public_key, not both")
    if not isinstance(listed, list) or not listed:
        raise _PolicyFileError(f"{where}: {role}_keys must be a non-empty list of tables")
    keys = [
        _partner_key(f"{where} {role}_keys[{i}]", entry, var_dir, required)
        for i, entry in enumerate(listed)
    ]
    kids = [k.kid for k in keys if k is not None and k.kid]
    if len(kids) != len(set(kids)):
        raise _PolicyFileError(f"{where}: two {role}_keys have the same kid")
    return tuple(k for k in keys if k is not None)


def _partner(name: str, spec: Any, var_dir: Path, require_keys: bool = False) -> Partner:
    if not isinstance(spec, dict):
        raise _PolicyFileError(f"partner {name!r} must be a table")
    extra = set(spec) - _PARTNER_FIELDS
    if extra:
        raise _PolicyFileError(f"partner {name!r}: unknown field(s) {sorted(extra)}")
    dev = spec.get("dev", False)
    if not isinstance(dev, bool):
        raise _PolicyFileError(f"partner {name!r}: dev must be true or false")
    required = require_keys and not dev
    sig_keys = _partner_keys(name, spec, var_dir, "sig", required)
    enc_keys = _partner_keys(name, spec, var_dir, "enc", required)
    if not (dev or (sig_keys and enc_keys)) and required:
        raise _PolicyFileError(
            f"partner {name!r}: needs public_key, sig_public_key and enc_public_key, "
            "or sig_keys and enc_keys"
        )
    signing, decryption = spec.get("signing_key"), spec.get("decryption_key")
    if not isinstance(signing, str) or not isinstance(decryption, str):
        raise _PolicyFileError(f"partner {name!r}: needs signing_key and decryption_key")
    key_management = spec.get("key_management", "")
    if key_management and key_management not in PARTNER_KEY_MANAGEMENT:
        raise _PolicyFileError(
            f"partner {name!r}: key_management must be one of {list(PARTNER_KEY_MANAGEMENT)}"
        )
    skew = spec.get("max_clock_skew", DEFAULT_CLOCK_SKEW)
    if not isinstance(skew, int) or isinstance(skew, bool) or not 1 <= skew <= MAX_CLOCK_SKEW:
        raise _PolicyFileError(
            f"partner {name!r}: max_clock_skew must be 1 to {MAX_CLOCK_SKEW} seconds"
        )
    issuer, audience = spec.get("issuer", ""), spec.get("audience", DEFAULT_AUDIENCE)
    if not isinstance(issuer, str) or not isinstance(audience, str) or not audience:
        raise _PolicyFileError(f"partner {name!r}: issuer and audience must be strings")
    return Partner(
        name,
        signing,
        decryption,
        sig_keys=sig_keys,
        enc_keys=enc_keys,
        key_management=key_management,
        max_clock_skew=skew,
        issuer=issuer,
        audience=audience,
        dev=dev,
    )
