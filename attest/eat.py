"""Entity Attestation Tokens (RFC 9711): CWT evidence and its claims.

A CWT EAT is a COSE_Sign1 (or COSE_Mac0), optionally inside the CWT tag 61 (RFC 8392 §6).
Claims read: eat_nonce 10, ueid 256, oemid 258, hwmodel 259, dbgstat 263, eat_profile 265,
submods 266, swname 270, swversion 271, measurements 273, iat 6, exp 4, iss 1. Unknown
claims are ignored (RFC 9711 §4). Measurements in the measured-component format (CoAP C-F
295, draft-ietf-rats-eat-measured-component) are decoded; other formats stay bytes.
JSON claims-sets (for the JSON bundles in :mod:`attest.deb`) map the JSON names onto the
same model: byte claims are base64url text, eat_nonce is text (kept as its UTF-8 bytes),
and measurements are not read.
Detached EAT bundles live in :mod:`attest.deb`.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, TypeAlias

from . import _cbor, _cose
from ._json import b64url_decode
from .errors import DecodeError, FreshnessError
from .keys import VerifierKey

__all__ = [
    "MEASURED_COMPONENT_CBOR",
    "DetachedDigest",
    "EatClaims",
    "EatSubmod",
    "EatToken",
    "MeasuredComponent",
    "Measurement",
    "NestedToken",
    "VerifiedEat",
    "check_nonce",
    "digest_name",
    "parse_eat",
    "parse_eat_claims",
    "verify_eat",
]

MEASURED_COMPONENT_CBOR: Final = 295  # IANA CoAP C-F application/measured-component+cbor
_CWT_TAG: Final = 61
# COSE (RFC 9054), named-information (RFC 6920) and text names of the hashes accepted
_HASHES: Final[dict[int | str, str]] = {
    -16: "sha256", -43: "sha384", -44: "sha512", 1: "sha256", 7: "sha384", 8: "sha512",
    "sha-256": "sha256", "sha-384": "sha384", "sha-512": "sha512",
}  # fmt: skip
_DBGSTAT: Final = (
    "enabled", "disabled", "disabled-since-boot", "disabled-permanently",
    "disabled-fully-and-permanently",
)  # fmt: skip
_JSON_NAMES: Final = {
    "iss": 1, "exp": 4, "iat": 6, "eat_nonce": 10, "ueid": 256, "oemid": 258, "hwmodel": 259,
    "dbgstat": 263, "eat_profile": 265, "submods": 266, "swname": 270, "swversion": 271,
}  # fmt: skip


def digest_name(alg: int | str) -> str | None:
    """The hashlib name for a COSE (-16), named-information (1) or text ("sha-256") hash
    identifier, or None when it is not one accepted here."""
    return _HASHES.get(alg.lower() if isinstance(alg, str) else alg)


@dataclass(frozen=True)
class MeasuredComponent:
    """draft-ietf-rats-eat-measured-component: ``{1: [name, ? [version, ? scheme]],
    2: [alg, digest], ? 3: [+ signer]}``; alg is an int (COSE or named-information id) or
    text, see :func:`digest_name`."""

    name: str
    digest_alg: int | str
    digest: bytes
    version: str | None = None
    version_scheme: int | None = None
    signers: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class Measurement:
    """A measurements (273) entry ``[content-format, bytes]``; component when C-F 295."""

    content_format: int
    value: bytes
    component: MeasuredComponent | None = None


@dataclass(frozen=True)
class DetachedDigest:
    """A submodule given as a digest of a claims-set carried elsewhere (RFC 9711 §4.2.18.2)."""

    alg: int | str
    digest: bytes


@dataclass(frozen=True)
class NestedToken:
    """A submodule that is a nested token (bstr CWT, or a JSON selector); not verified here."""

    kind: str
    value: bytes | str


@dataclass(frozen=True)
class EatClaims:
    """The claims this verifier understands; absent claims are None or empty."""

    nonce: tuple[bytes, ...] = ()
    ueid: bytes | None = None
    oemid: bytes | int | None = None
    hwmodel: bytes | None = None
    dbgstat: int | None = None
    profile: str | bytes | None = None
    submods: Mapping[str, EatSubmod] = field(default_factory=lambda: MappingProxyType({}))
    swname: str | None = None
    swversion: tuple[str, int | None] | None = None
    measurements: tuple[Measurement, ...] = ()
    iat: int | None = None
    exp: int | None = None
    iss: str | None = None


EatSubmod: TypeAlias = EatClaims | DetachedDigest | NestedToken


@dataclass(frozen=True)
class EatToken:
    """A parsed, not yet verified CWT EAT."""

    message: _cose.CoseMessage
    claims: EatClaims


@dataclass(frozen=True)
class VerifiedEat:
    """Claims whose token verified under the key record named ``key_name``."""

    claims: EatClaims
    key_name: str


def _fail(msg: str) -> DecodeError:
    return DecodeError(f"EAT: {msg}")


def _int(value: object, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _fail(f"{name} must be an integer")
    return value


def _text(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise _fail(f"{name} must be text")
    return value


def _bytes(value: object, name: str, lo: int = 1, hi: int = 1 << 20) -> bytes:
    if not isinstance(value, bytes) or not lo <= len(value) <= hi:
        raise _fail(f"{name} must be a byte string of {lo}..{hi} bytes")
    return value


def _b64url(value: object, name: str) -> bytes:
    return b64url_decode(value, f"EAT: {name}")


def _nonces(value: object, as_json: bool) -> tuple[bytes, ...]:
    # RFC 9711 §4.1: nonce-type = JC< tstr .size (10..74), bstr .size (8..64) >, or an array
    items = value if isinstance(value, list) and value else [value]
    out: list[bytes] = []
    for item in items:
        if as_json:
            out.append(_text(item, "eat_nonce").encode())
            if not 10 <= len(out[-1]) <= 74:
                raise _fail("eat_nonce text must be 10..74 characters")
        else:
            out.append(_bytes(item, "eat_nonce", 8, 64))
    return tuple(out)


def _component(value: bytes) -> MeasuredComponent:
    mc = _cbor.loads(value, what="measured-component")
    if not isinstance(mc, dict):
        raise _fail("measured-component must be a map")
    ident, measurement, signers = mc.get(1), mc.get(2), mc.get(3, [])
    if not isinstance(ident, list) or not 1 <= len(ident) <= 2:
        raise _fail("measured-component id must be [name, ? version]")
    version: object = ident[1] if len(ident) == 2 else [None]
    if not isinstance(version, list) or not 1 <= len(version) <= 2:
        raise _fail("measured-component version must be [value, ? scheme]")
    if not isinstance(measurement, list) or len(measurement) != 2:
        raise _fail("measured-component measurement must be [alg, digest]")
    alg = measurement[0]
    if not _is_alg(alg):
        raise _fail("measured-component digest alg must be an integer or text")
    if not isinstance(signers, list) or not all(isinstance(s, bytes) for s in signers):
        raise _fail("measured-component signers must be byte strings")
    return MeasuredComponent(
        name=_text(ident[0], "component name"),
        digest_alg=alg,
        digest=_bytes(measurement[1], "measured-component digest"),
        version=None if version[0] is None else _text(version[0], "component version"),
        version_scheme=_int(version[1], "version scheme") if len(version) == 2 else None,
        signers=tuple(signers),
    )


def _measurements(value: object) -> tuple[Measurement, ...]:
    # RFC 9711 §4.2.16: measurements = [ + [ content-type: coap-content-format, bytes ] ]
    if not isinstance(value, list) or not value:
        raise _fail("measurements must be a non-empty array")
    out = []
    for entry in value:
        if not isinstance(entry, list) or len(entry) != 2:
            raise _fail("a measurement must be [content-format, bytes]")
        cf, body = _int(entry[0], "content-format"), _bytes(entry[1], "measurement", 0)
        out.append(
            Measurement(cf, body, _component(body) if cf == MEASURED_COMPONENT_CBOR else None)
        )
    return tuple(out)


def _is_alg(value: object) -> bool:
    return isinstance(value, int | str) and not isinstance(value, bool)


def _submod(value: object, as_json: bool, depth: int) -> EatSubmod:
    if isinstance(value, dict):
        return _claims(value, as_json, depth + 1)
    if as_json and isinstance(value, list) and len(value) == 2 and value[0] == "DIGEST":
        value = value[1]  # JSON selector ["DIGEST", [alg, b64url digest]]
        if isinstance(value, list) and len(value) == 2 and _is_alg(value[0]):
            return DetachedDigest(value[0], _b64url(value[1], "submod digest"))
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], int | str):
        if isinstance(value[1], str) and value[0] in ("JWT", "CBOR", "BUNDLE"):
            return NestedToken(value[0], value[1])  # RFC 9711 §4.2.18.1 JSON selector
        if not as_json and isinstance(value[1], bytes) and _is_alg(value[0]):
            return DetachedDigest(value[0], value[1])
    if not as_json and isinstance(value, bytes):
        return NestedToken("CBOR", value)
    raise _fail("a submodule must be a claims-set, a nested token or a detached digest")


# RFC 9711 §4 (CBOR key / JSON name), the claims read here:
#   ? eat_nonce 10 / "eat_nonce"   bstr .size (8..64) / [+ bstr]   (JSON: tstr .size (10..74))
#   ? ueid 256, ? hwmodel 259      bstr (7..33, 1..32)
#   ? oemid 258                    bstr (IEEE OUI / random) / int (PEN)
#   ? dbgstat 263                  0..4 (JSON: "enabled" .. "disabled-fully-and-permanently")
#   ? eat_profile 265              text URI / OID bytes
#   ? submods 266                  { + text => claims-set / nested token / [alg, digest] }
#   ? swname 270, ? swversion 271  text, [text, ? int]
#   ? measurements 273             [ + [content-format, bytes] ]
#   ? iat 6, ? exp 4, ? iss 1      int, int, text
def _claims(obj: object, as_json: bool, depth: int = 0) -> EatClaims:
    if not isinstance(obj, dict):
        raise _fail("the claims-set must be a map")
    if depth > 4:
        raise _fail("submodules nested too deeply")
    if as_json:  # JSON names onto the CBOR keys (RFC 9711 §4 tables); bytes are base64url
        obj = {_JSON_NAMES[k]: v for k, v in obj.items() if k in _JSON_NAMES}
        for key in (256, 259) + ((258,) if isinstance(obj.get(258), str) else ()):
            if key in obj:
                obj[key] = _b64url(obj[key], str(key))
        if isinstance(obj.get(263), str) and obj[263] in _DBGSTAT:
            obj[263] = _DBGSTAT.index(obj[263])
    get = obj.get
    submods = get(266, {})
    if not isinstance(submods, dict) or not all(isinstance(k, str) for k in submods):
        raise _fail("submods must be a map from text names")
    oemid, profile, swversion = get(258), get(265), get(271)
    if oemid is not None and not isinstance(oemid, bytes):
        oemid = _int(oemid, "oemid")
    if profile is not None and not isinstance(profile, str | bytes):
        raise _fail("eat_profile must be a URI (text) or an OID (bytes)")
    if swversion is not None:
        if not isinstance(swversion, list) or not 1 <= len(swversion) <= 2:
            raise _fail("swversion must be [version, ? scheme]")
        scheme = _int(swversion[1], "version scheme") if len(swversion) == 2 else None
        swversion = (_text(swversion[0], "swversion"), scheme)
    dbgstat = None if get(263) is None else _int(get(263), "dbgstat")
    if dbgstat is not None and not 0 <= dbgstat <= 4:
        raise _fail("dbgstat must be 0..4")
    return EatClaims(
        nonce=() if get(10) is None else _nonces(get(10), as_json),
        ueid=None if get(256) is None else _bytes(get(256), "ueid", 7, 33),
        oemid=oemid,
        hwmodel=None if get(259) is None else _bytes(get(259), "hwmodel", 1, 32),
        dbgstat=dbgstat,
        profile=profile,
        submods=MappingProxyType({n: _submod(v, as_json, depth) for n, v in submods.items()}),
        swname=None if get(270) is None else _text(get(270), "swname"),
        swversion=swversion,
        measurements=() if get(273) is None or as_json else _measurements(get(273)),
        iat=None if get(6) is None else _int(get(6), "iat"),
        exp=None if get(4) is None else _int(get(4), "exp"),
        iss=None if get(1) is None else _text(get(1), "iss"),
    )


def parse_eat_claims(obj: object, *, as_json: bool = False) -> EatClaims:
    """Read an already decoded claims-set (CBOR keys, or JSON names when ``as_json``)."""
    return _claims(obj, as_json)


def parse_eat(data: bytes) -> EatToken:
    """Parse a CWT EAT: ``61(18(...))``, ``18(...)`` or a COSE_Mac0, without verifying it."""
    item = _cbor.loads(data, what="EAT")
    if isinstance(item, _cbor.Tag) and item.number == _CWT_TAG:
        item = item.value  # RFC 8392 §6: the CWT tag is optional
    message = _cose.cose_from_item(item, what="EAT")
    return EatToken(message, _claims(_cbor.loads(message.payload, what="EAT claims"), False))


def check_nonce(claims: EatClaims, expected: bytes | None) -> None:
    """FreshnessError unless ``expected`` is None or equals one of the claims' nonces."""
    if expected is not None and not any(hmac.compare_digest(n, expected) for n in claims.nonce):
        raise FreshnessError("EAT: no eat_nonce matches the challenge")


def verify_eat(
    token: EatToken, keys: Iterable[VerifierKey], *, expected_nonce: bytes | None = None
) -> VerifiedEat:
    """Verify the token's signature with the algorithm bound to the key record
    (VerificationError), then, when given, that one eat_nonce equals the challenge."""
    key = _cose.verify_cose(token.message, keys)
    check_nonce(token.claims, expected_nonce)
    return VerifiedEat(token.claims, key.name)
