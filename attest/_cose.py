"""COSE_Sign1 and COSE_Mac0 for evidence and results (RFC 9052/9053, RFC 9864): the only
module of the attestation ring that touches COSE.

Sign and verify call `cryptography` directly (python-cwt verifies with the key's algorithm
and never compares it with the protected header, DESIGN.md). The rules live here, once:

* the protected ``alg`` must be listed by the key record (:mod:`attest.keys`), whose key
  type fixes the primitive and curve; unknown algorithms (and "none") are refused;
* ``alg`` is never read from the unprotected bucket, and a label in both buckets is refused
  (RFC 9052 §3); ``crit`` is refused;
* the signature covers the protected header as received, never a re-encoding;
* payloads are attached (evidence and results carry their claims inline).

RFC 9783 §5 requires PSA receivers to accept ES256/384/512 and HMAC 256/384/512.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, utils

from . import _cbor
from .errors import DecodeError, UnsupportedError, VerificationError
from .keys import (
    CURVES,
    MAC_ALGS,
    MAC_HASH,
    Algorithm,
    SigningKey,
    VerifierKey,
    hmac_key,
    key_from_jwk,
    key_from_pem,
    signing_key_from_pem,
)

__all__ = [  # key records live in attest.keys; re-exported for callers of this module
    "Algorithm",
    "CoseKind",
    "CoseMessage",
    "SigningKey",
    "VerifierKey",
    "cose_from_item",
    "hmac_key",
    "key_from_jwk",
    "key_from_pem",
    "mac0",
    "parse_cose",
    "sign1",
    "signing_key_from_pem",
    "verify_cose",
]


class CoseKind(StrEnum):
    """The COSE structures accepted here (RFC 9052 §4.2, §6.2)."""

    SIGN1 = "COSE_Sign1"
    MAC0 = "COSE_Mac0"


_KIND_ALGS: Final = {CoseKind.SIGN1: frozenset(Algorithm) - MAC_ALGS, CoseKind.MAC0: MAC_ALGS}
_TAGS: Final = {18: CoseKind.SIGN1, 17: CoseKind.MAC0}
_CONTEXT: Final = {CoseKind.SIGN1: "Signature1", CoseKind.MAC0: "MAC0"}
_KNOWN: Final = frozenset(int(a) for a in Algorithm)
_ALG, _CRIT, _KID = 1, 2, 4  # RFC 9052 §3.1 common header labels


@dataclass(frozen=True)
class CoseMessage:
    """A parsed, not yet verified COSE_Sign1 or COSE_Mac0; ``protected`` is the header bstr
    exactly as received and is what the signature covers."""

    kind: CoseKind
    protected: bytes
    algorithm: Algorithm
    kid: bytes | None
    unprotected: Mapping[int | str, object]
    payload: bytes
    signature: bytes


def _header_map(obj: object, what: str) -> dict[int | str, object]:
    if not isinstance(obj, dict):
        raise DecodeError(f"{what}: header must be a map")
    if not all(isinstance(k, int | str) and not isinstance(k, bool) for k in obj):
        raise DecodeError(f"{what}: header labels must be integers or text (RFC 9052 §3)")
    return obj


# RFC 9052 §4.2, §6.2 (tagged #6.18 / #6.17):
#   COSE_Sign1 = [protected: bstr .cbor header_map / bstr .size 0, unprotected: header_map,
#                 payload: bstr / nil, signature: bstr]
#   COSE_Mac0  = [protected, unprotected, payload: bstr / nil, tag: bstr]
def cose_from_item(item: object, *, what: str = "COSE message") -> CoseMessage:
    """Read an already decoded tagged COSE_Sign1 or COSE_Mac0 (e.g. from inside a CWT tag
    61); the byte strings in it are the bytes received."""
    if not isinstance(item, _cbor.Tag) or item.number not in _TAGS:
        raise DecodeError(f"{what}: expected a tagged COSE_Sign1 (18) or COSE_Mac0 (17)")
    kind = _TAGS[item.number]
    body = item.value
    if not isinstance(body, list) or len(body) != 4:
        raise DecodeError(f"{what}: {kind} must be an array of four elements")
    protected, unprotected, payload, signature = body
    if not isinstance(protected, bytes):
        raise DecodeError(f"{what}: protected header must be a byte string")
    phdr: dict[int | str, object] = {}
    if protected:
        phdr = _header_map(_cbor.loads(protected, what=f"{what} protected header"), what)
    uhdr = _header_map(unprotected, what)
    if _ALG in uhdr:
        raise DecodeError(f"{what}: algorithm must not be in the unprotected header")
    if both := phdr.keys() & uhdr.keys():  # RFC 9052 §3
        raise DecodeError(f"{what}: header label(s) {sorted(map(str, both))} in both buckets")
    if _CRIT in phdr or _CRIT in uhdr:
        raise UnsupportedError(f"{what}: critical header parameters (crit) are not supported")
    alg = phdr.get(_ALG)
    if alg is None:
        raise DecodeError(f"{what}: algorithm (label 1) missing from the protected header")
    if not isinstance(alg, int) or isinstance(alg, bool) or alg not in _KNOWN:
        raise UnsupportedError(f"{what}: unsupported algorithm {alg!r}")
    if alg not in _KIND_ALGS[kind]:  # e.g. an HMAC algorithm in a COSE_Sign1
        raise UnsupportedError(f"{what}: algorithm {alg} cannot be used in a {kind}")
    kid = phdr.get(_KID, uhdr.get(_KID))
    if kid is not None and not isinstance(kid, bytes):
        raise DecodeError(f"{what}: kid must be a byte string")
    if payload is None:
        raise UnsupportedError(f"{what}: detached payload where an attached one is required")
    if not isinstance(payload, bytes) or not isinstance(signature, bytes):
        raise DecodeError(f"{what}: payload and signature/tag must be byte strings")
    return CoseMessage(
        kind, protected, Algorithm(alg), kid, MappingProxyType(uhdr), payload, signature
    )


def parse_cose(data: bytes, *, what: str = "COSE message") -> CoseMessage:
    """Parse a tagged COSE_Sign1 or COSE_Mac0 without verifying it."""
    return cose_from_item(_cbor.loads(data, what=what), what=what)


def _to_be_signed(kind: CoseKind, protected: bytes, aad: bytes, payload: bytes) -> bytes:
    # RFC 9052 §4.4 Sig_structure / §6.3 MAC_structure: [context, protected, aad, payload].
    return _cbor.dumps([_CONTEXT[kind], protected, aad, payload])


def _check(key: VerifierKey, alg: Algorithm, tbs: bytes, sig: bytes) -> bool:
    public = key.public_key
    if public is None:  # RFC 9053 §3.1: full-length tags only (no truncation)
        return hmac.compare_digest(hmac.digest(key.secret or b"", tbs, MAC_HASH[alg]), sig)
    try:
        if isinstance(public, ec.EllipticCurvePublicKey):
            _algs, hash_cls, size = CURVES[public.curve.name]
            if len(sig) != 2 * size:  # RFC 9053 §2.1: r || s, each the curve's size
                return False
            r, s = int.from_bytes(sig[:size]), int.from_bytes(sig[size:])
            public.verify(utils.encode_dss_signature(r, s), tbs, ec.ECDSA(hash_cls()))
        else:
            public.verify(sig, tbs)
    except InvalidSignature:
        return False
    return True


def verify_cose(
    msg: CoseMessage, keys: Iterable[VerifierKey], *, external_aad: bytes = b""
) -> VerifierKey:
    """Verify ``msg`` and return the key record that verified it. Candidates list the
    protected algorithm and, when both carry a kid, match it."""
    alg, kid = msg.algorithm, msg.kid
    candidates = [
        k for k in keys if alg in k.algorithms and (kid is None or k.kid is None or k.kid == kid)
    ]
    if not candidates:
        kid_text = "no kid" if kid is None else f"kid {kid.hex()}"
        raise VerificationError(f"{msg.kind}: no trusted key for {alg.name} ({kid_text})")
    tbs = _to_be_signed(msg.kind, msg.protected, external_aad, msg.payload)
    for key in candidates:
        if _check(key, alg, tbs, msg.signature):
            return key
    what = "signature" if msg.kind is CoseKind.SIGN1 else "MAC"
    raise VerificationError(f"{msg.kind}: {what} does not verify ({len(candidates)} key(s) tried)")


def _seal(kind: CoseKind, payload: bytes, key: SigningKey, aad: bytes) -> bytes:
    if key.algorithm not in _KIND_ALGS[kind]:
        raise RuntimeError(f"{kind} cannot be made with a {key.algorithm.name} key")
    header: dict[int, object] = {_ALG: int(key.algorithm)}
    if key.kid is not None:
        header[_KID] = key.kid
    protected = _cbor.dumps(header)
    tbs = _to_be_signed(kind, protected, aad, payload)
    private = key.private_key
    if isinstance(private, ec.EllipticCurvePrivateKey):
        _algs, hash_cls, size = CURVES[private.curve.name]
        # RFC 6979 deterministic ECDSA: this ring draws no randomness.
        der = private.sign(tbs, ec.ECDSA(hash_cls(), deterministic_signing=True))
        r, s = utils.decode_dss_signature(der)
        tag = r.to_bytes(size) + s.to_bytes(size)
    elif private is not None:
        tag = private.sign(tbs)
    else:
        tag = hmac.digest(key.secret or b"", tbs, MAC_HASH[key.algorithm])
    return _cbor.dumps(
        _cbor.Tag(18 if kind is CoseKind.SIGN1 else 17, [protected, {}, payload, tag])
    )


def sign1(payload: bytes, key: SigningKey, *, external_aad: bytes = b"") -> bytes:
    """A tagged COSE_Sign1 (#6.18) with ``payload`` attached; protected {1: alg, 4: kid}."""
    return _seal(CoseKind.SIGN1, payload, key, external_aad)


def mac0(payload: bytes, key: SigningKey, *, external_aad: bytes = b"") -> bytes:
    """A tagged COSE_Mac0 (#6.17) with ``payload`` attached."""
    return _seal(CoseKind.MAC0, payload, key, external_aad)
