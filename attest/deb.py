"""Detached EAT bundles (RFC 9711 §5): a main token plus claims-sets carried beside it.

Each detached claims-set must match the digest its name carries in the main token's
submods (RFC 9711 §4.2.18.2), so the main token's signature covers it.

* CBOR: tag 602 around ``[main token (bstr .cbor CWT), {name: bstr .cbor claims-set}]``;
  the digest covers the claims-set bytes.
* JSON: ``[["JWT", token], {name: base64url claims-set}]`` with an HS256 JWT, what the
  RFC 9711 A.2 example needs; the digest covers the base64url-decoded bytes.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Final

from . import _cbor, _json
from ._json import b64url_decode
from .eat import (
    DetachedDigest,
    EatClaims,
    EatToken,
    VerifiedEat,
    check_nonce,
    digest_name,
    parse_eat,
    parse_eat_claims,
    verify_eat,
)
from .errors import DecodeError, UnsupportedError, VerificationError
from .keys import VerifierKey

__all__ = [
    "EatBundle",
    "JsonEatBundle",
    "parse_deb",
    "parse_deb_json",
    "verify_deb",
    "verify_deb_json",
    "verify_detached_submods",
]

_DEB_TAG: Final = 602
_MIN_HS256_KEY: Final = 32  # RFC 7518 §3.2: a key at least as long as the hash output


@dataclass(frozen=True)
class EatBundle:
    """A parsed CBOR bundle: the main token and the detached claims-sets as received."""

    token: EatToken
    detached: Mapping[str, bytes]


@dataclass(frozen=True)
class JsonEatBundle:
    """A parsed JSON bundle: the JWT's parts and the detached claims-sets (decoded bytes)."""

    header: Mapping[str, object]
    claims: EatClaims
    signing_input: bytes
    signature: bytes
    detached: Mapping[str, bytes]


def _fail(msg: str) -> DecodeError:
    return DecodeError(f"EAT bundle: {msg}")


# RFC 9711 §5: Detached-EAT-Bundle = #6.602([ main-token: bstr .cbor CWT,
#              detached-claims-sets: { + tstr => bstr .cbor Claims-Set } ])
def parse_deb(data: bytes) -> EatBundle:
    """Parse a CBOR detached EAT bundle (tag 602) without verifying it."""
    item = _cbor.loads(data, what="EAT bundle")
    if not isinstance(item, _cbor.Tag) or item.number != _DEB_TAG:
        raise _fail("expected tag 602")
    body = item.value
    if not isinstance(body, list) or len(body) != 2 or not isinstance(body[0], bytes):
        raise _fail("a bundle is [main token (bstr), detached claims-sets]")
    detached = body[1]
    if not isinstance(detached, dict) or not detached:
        raise _fail("detached claims-sets must be a non-empty map")
    if not all(isinstance(k, str) and isinstance(v, bytes) for k, v in detached.items()):
        raise _fail("detached claims-sets map text names to byte strings")
    token = parse_eat(body[0])
    return EatBundle(token, MappingProxyType(detached))


def verify_detached_submods(
    claims: EatClaims, detached: Mapping[str, bytes], *, as_json: bool = False
) -> EatClaims:
    """Check each detached claims-set against the digest its name carries in ``claims``'
    submods and return ``claims`` with those submods decoded (VerificationError on a
    mismatch or a claims-set with no digest). This trusts ``claims`` only as far as the
    caller verified them: use verify_deb / verify_deb_json."""
    submods = dict(claims.submods)
    for name, raw in detached.items():
        entry = submods.get(name)
        if not isinstance(entry, DetachedDigest):
            raise VerificationError(
                f"EAT bundle: detached claims-set {name!r} has no digest in submods"
            )
        hash_name = digest_name(entry.alg)
        if hash_name is None:
            raise UnsupportedError(f"EAT bundle: unsupported digest algorithm {entry.alg!r}")
        if not hmac.compare_digest(hashlib.new(hash_name, raw).digest(), entry.digest):
            raise VerificationError(
                f"EAT bundle: detached claims-set {name!r} does not match its digest"
            )
        what = f"EAT bundle: detached claims-set {name!r}"
        obj = _json.loads(raw, what=what) if as_json else _cbor.loads(raw, what=what)
        submods[name] = parse_eat_claims(obj, as_json=as_json)
    return replace(claims, submods=MappingProxyType(submods))


def verify_deb(
    bundle: EatBundle, keys: Iterable[VerifierKey], *, expected_nonce: bytes | None = None
) -> VerifiedEat:
    """Verify the main token (signature, then nonce), then every detached claims-set."""
    verified = verify_eat(bundle.token, keys, expected_nonce=expected_nonce)
    claims = verify_detached_submods(verified.claims, bundle.detached)
    return VerifiedEat(claims, verified.key_name)


def parse_deb_json(data: bytes | str) -> JsonEatBundle:
    """Parse a JSON detached EAT bundle ``[["JWT", jwt], {name: base64url claims-set}]``."""
    obj = _json.loads(data, what="EAT bundle")
    if not isinstance(obj, list) or len(obj) != 2 or not isinstance(obj[1], dict) or not obj[1]:
        raise _fail('a JSON bundle is [["JWT", token], {name: claims-set}]')
    selector, detached = obj
    if not isinstance(selector, list) or len(selector) != 2 or selector[0] != "JWT":
        raise _fail('the JSON bundle\'s main token must be ["JWT", token]')
    parts = selector[1].split(".") if isinstance(selector[1], str) else []
    if len(parts) != 3:
        raise _fail("a JWT has three base64url parts")
    header_raw, payload_raw, signature = (b64url_decode(p, "EAT bundle: JWT part") for p in parts)
    header = _json.loads(header_raw, what="EAT bundle: JWT header")
    payload = _json.loads(payload_raw, what="EAT bundle: JWT claims")
    if not isinstance(header, dict):
        raise _fail("JWT header must be an object")
    return JsonEatBundle(
        header=MappingProxyType(header),
        claims=parse_eat_claims(payload, as_json=True),
        signing_input=f"{parts[0]}.{parts[1]}".encode(),
        signature=signature,
        detached=MappingProxyType(
            {k: b64url_decode(v, f"EAT bundle: claims-set {k!r}") for k, v in detached.items()}
        ),
    )


def verify_deb_json(
    bundle: JsonEatBundle,
    secret: bytes,
    *,
    expected_nonce: bytes | None = None,
    allow_short_key: bool = False,
) -> VerifiedEat:
    """Verify the JSON bundle's HS256 JWT (RFC 7518 §3.2; alg pinned, nothing else
    accepted), its nonce when given, then every detached claims-set. A secret shorter than
    32 bytes is refused unless ``allow_short_key`` (the RFC 9711 A.2 example uses 6)."""
    if bundle.header.get("alg") != "HS256" or "crit" in bundle.header:
        raise VerificationError("EAT bundle: the JSON bundle's JWT must be HS256 without crit")
    if len(secret) < _MIN_HS256_KEY and not allow_short_key:
        raise VerificationError(
            "EAT bundle: HS256 needs a key of at least 32 bytes (RFC 7518 §3.2)"
        )
    mac = hmac.digest(secret, bundle.signing_input, "sha256")
    if not hmac.compare_digest(mac, bundle.signature):
        raise VerificationError("EAT bundle: the JSON bundle's HS256 MAC does not verify")
    check_nonce(bundle.claims, expected_nonce)
    return VerifiedEat(
        verify_detached_submods(bundle.claims, bundle.detached, as_json=True), "hs256"
    )
