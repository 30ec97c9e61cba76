"""EAR attestation results (draft-ietf-rats-ear) with AR4SI trustworthiness vectors:
signed as JWT or CWT, and read back.

Naming decision (two generations of claim names exist, notes/attestation.md §2.9):

* We EMIT the draft HEAD names only, under profile ``tag:ietf.org,2026:rats/ear#03``:
  JSON (inside a JWT) ``eat_profile``, ``iat``, ``exp``, ``eat_nonce``, ``ear_verifier_id``
  ``{developer, build}``, ``ear_raw_evidence``, ``ear_status`` and ``submods`` whose entries
  carry ``ear_status``, ``ear_trustworthiness_vector`` and ``ear_appraisal_policy_ids`` (an
  array); CBOR (inside a CWT) keys 265 profile, 6 iat, 4 exp, 10 nonce, 266 submods,
  1000 status, 1001 vector, 1002 raw evidence, 1003 policy ids, 1004 verifier-id
  {0 developer, 1 build}; vector keys 0..7 in AR4SI order. An Ear with another profile is
  refused by the builders (its names would be mislabelled).
* We READ both the draft names and Veraison's deployed JSON names (``ear.status``,
  ``ear.trustworthiness-vector``, ``ear.appraisal-policy-id`` (one string),
  ``ear.verifier-id``, ``ear.raw-evidence``; profile ``tag:github.com,2023:veraison/ear``),
  whatever the profile says. An object carrying both spellings of one claim is refused.
* Status values: JSON names (``affirming`` ...), CBOR tiers (2, 32, 96, 0). A status better
  than its vector allows (AR4SI: no better than the worst claim; ``none`` claims nothing)
  is refused when read and is a RuntimeError when built.
* ``eat_nonce`` and ``ear_raw_evidence`` are bytes in the model: bstr in CBOR, base64url
  text in JSON (padding optional on read, never written).
* Extension claims of a submodule (``suitsrv.device_id``, ``suitsrv.reasons``,
  ``ear.veraison.*``) are kept by name in ``Submod.extra`` and written back as they are
  (JSON values; floats cannot go into the deterministic CBOR); unknown top-level claims are
  ignored (RFC 9711 §4).

Signing decision: ES256 only (P-256), both forms. The JWT header is {alg: ES256, kid,
typ: JWT} and never embeds a key; the CWT is a tagged COSE_Sign1 with protected
{1: -7, 4: kid}, written without the optional CWT tag 61 (accepted on read). ECDSA nonces
are RFC 6979 deterministic, so the ring draws no randomness. Readers pin ES256 and the key:
``alg`` none/HS256/anything else, ``crit``/``b64`` headers, and a header ``jwk`` other than
the pinned key are refused (a header key is never used); times are checked against the
``now`` the caller passes (iat not in the future, now before exp, nbf reached).

The model and the claims-set forms are in :mod:`attest.ear_claims` (re-exported here).
"""

from __future__ import annotations

import hmac
import json
from typing import Final

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from jwt.algorithms import ECAlgorithm
from jwt.utils import der_to_raw_signature

from . import _cbor, _cose, _json
from .ear_claims import (
    EAR_PROFILE,
    VERAISON_EAR_PROFILE,
    Ear,
    Status,
    Submod,
    TrustVector,
    VerifierId,
    build_ear_cbor,
    build_ear_json,
    parse_ear_claims,
    status_of,
    tier_of,
)
from .errors import DecodeError, FreshnessError, VerificationError
from .keys import Algorithm, SigningKey, VerifierKey, key_from_jwk

__all__ = [
    "EAR_PROFILE",
    "VERAISON_EAR_PROFILE",
    "Ear",
    "Status",
    "Submod",
    "TrustVector",
    "VerifierId",
    "build_ear_cbor",
    "build_ear_json",
    "parse_ear_claims",
    "public_jwk",
    "sign_ear_cwt",
    "sign_ear_jwt",
    "status_of",
    "tier_of",
    "verify_ear_cwt",
    "verify_ear_jwt",
]

_B64URL: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
_CWT_TAG: Final = 61
_NBF_JSON, _NBF_CBOR = "nbf", 5


class _DeterministicES256(ECAlgorithm):
    """PyJWT's ES256 with RFC 6979 nonces: the attestation ring draws no randomness."""

    def sign(self, msg: bytes, key: ec.EllipticCurvePrivateKey) -> bytes:
        der = key.sign(msg, ec.ECDSA(self.hash_alg(), deterministic_signing=True))
        return der_to_raw_signature(der, key.curve)


_JWS: Final = jwt.PyJWS(algorithms=[])  # nothing but the one algorithm registered here
_JWS.register_algorithm("ES256", _DeterministicES256(ECAlgorithm.SHA256, ec.SECP256R1))


def _private(key: bytes | ec.EllipticCurvePrivateKey) -> ec.EllipticCurvePrivateKey:
    loaded = load_pem_private_key(key, password=None) if isinstance(key, bytes) else key
    if not isinstance(loaded, ec.EllipticCurvePrivateKey) or loaded.curve.name != "secp256r1":
        raise RuntimeError("EARs are signed with ES256: a P-256 private key is needed")
    return loaded


def _public(key: VerifierKey | ec.EllipticCurvePublicKey) -> ec.EllipticCurvePublicKey:
    public: object = key
    if isinstance(key, VerifierKey):
        if Algorithm.ES256 not in key.algorithms:
            raise RuntimeError(f"key record {key.name!r} does not list ES256")
        public = key.public_key
    if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != "secp256r1":
        raise RuntimeError("EARs are verified with ES256: a P-256 public key is needed")
    return public


def public_jwk(public_key: ec.EllipticCurvePublicKey, kid: str) -> dict[str, str]:
    """The JWK (RFC 7517/7518 §6.2) of an EAR signing key, for the service's JWKS."""
    numbers = _public(public_key).public_numbers()
    x, y = (_json.b64url_encode(n.to_bytes(32)) for n in (numbers.x, numbers.y))
    return {"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "alg": "ES256", "use": "sig"}


def sign_ear_jwt(ear: Ear, private_key: bytes | ec.EllipticCurvePrivateKey, kid: str) -> str:
    """The EAR as a compact JWS: header {alg: ES256, kid, typ: JWT}, draft claim names."""
    claims = json.dumps(build_ear_json(ear), separators=(",", ":"), sort_keys=True)
    headers = {"kid": kid, "typ": "JWT"}
    return _JWS.encode(claims.encode(), _private(private_key), algorithm="ES256", headers=headers)


def sign_ear_cwt(
    ear: Ear, private_key: bytes | ec.EllipticCurvePrivateKey, kid: bytes | None = None
) -> bytes:
    """The EAR as a CWT: a tagged COSE_Sign1, protected {alg: ES256, kid}, draft CBOR keys."""
    key = SigningKey(Algorithm.ES256, private_key=_private(private_key), kid=kid)
    return _cose.sign1(_cbor.dumps(build_ear_cbor(ear)), key)


def _fresh(ear: Ear, nbf: object, now: int, leeway: int, expected_nonce: bytes | None) -> Ear:
    # RFC 7519 §4.1.4/§4.1.5 (RFC 8392 §3.1.4/§3.1.5): now before exp, not before nbf.
    if ear.iat > now + leeway:
        raise FreshnessError(f"EAR: issued in the future (iat {ear.iat}, now {now})")
    if ear.exp is not None and now >= ear.exp + leeway:
        raise FreshnessError(f"EAR: expired (exp {ear.exp}, now {now})")
    if nbf is not None and (not isinstance(nbf, int) or isinstance(nbf, bool)):
        raise DecodeError("EAR: nbf must be an integer")
    if nbf is not None and now < nbf - leeway:
        raise FreshnessError(f"EAR: not valid before {nbf} (now {now})")
    if expected_nonce is not None:
        nonces = [ear.nonce, *(s.nonce for s in ear.submods.values())]
        present = [n for n in nonces if n is not None]
        if not present or not all(hmac.compare_digest(n, expected_nonce) for n in present):
            raise FreshnessError("EAR: eat_nonce does not echo the challenge")
    return ear


def verify_ear_jwt(
    token: str | bytes,
    public_key: VerifierKey | ec.EllipticCurvePublicKey,
    *,
    now: int,
    expected_nonce: bytes | None = None,
    leeway: int = 0,
) -> Ear:
    """Verify an EAR JWT against a pinned P-256 key and return its claims.

    DecodeError: not three base64url segments, or claims malformed or missing.
    VerificationError: alg other than ES256, crit or b64 header, a header jwk other than the
    pinned key, or a bad signature. FreshnessError: iat in the future, expired exp, nbf not
    reached, or (when ``expected_nonce``) no echoed nonce or a different one."""
    key = _public(public_key)
    text = token.decode("ascii", "replace") if isinstance(token, bytes) else token
    parts = text.split(".")
    if len(parts) != 3 or not all(p and _B64URL.issuperset(p) for p in parts):
        raise DecodeError("EAR: a JWT is three non-empty base64url segments")
    header = _json.loads(_json.b64url_decode(parts[0], "EAR: JWT header"), what="EAR: JWT header")
    if not isinstance(header, dict) or header.get("alg") != "ES256":
        raise VerificationError("EAR: the JWT header must pin alg ES256")
    if "crit" in header or "b64" in header:
        raise VerificationError("EAR: crit and b64 JWT headers are not accepted")
    if "jwk" in header:  # never a source of trust; only the pinned key itself is tolerated
        embedded = header["jwk"]
        if not isinstance(embedded, dict) or _embedded(embedded) != key.public_numbers():
            raise VerificationError("EAR: the JWT header carries a key other than the pinned one")
    try:
        payload = _JWS.decode_complete(text, key, algorithms=["ES256"])["payload"]
    except jwt.PyJWTError as exc:
        raise VerificationError(f"EAR: JWT signature does not verify: {exc}") from exc
    claims = _json.loads(payload, what="EAR: JWT claims")
    if not isinstance(claims, dict):
        raise DecodeError("EAR: JWT claims must be a JSON object")
    return _fresh(parse_ear_claims(claims), claims.get(_NBF_JSON), now, leeway, expected_nonce)


def _embedded(jwk: dict[str, object]) -> ec.EllipticCurvePublicNumbers | None:
    try:
        public = key_from_jwk(jwk, algorithms=[Algorithm.ES256]).public_key
    except DecodeError:
        return None
    return public.public_numbers() if isinstance(public, ec.EllipticCurvePublicKey) else None


def verify_ear_cwt(
    data: bytes,
    public_key: VerifierKey | ec.EllipticCurvePublicKey,
    *,
    now: int,
    expected_nonce: bytes | None = None,
    leeway: int = 0,
) -> Ear:
    """Verify an EAR CWT (COSE_Sign1, optionally in tag 61) against a pinned key; errors as
    for :func:`verify_ear_jwt`."""
    if isinstance(public_key, VerifierKey):
        _public(public_key)
        record = public_key
    else:
        record = VerifierKey("ear", frozenset({Algorithm.ES256}), public_key=_public(public_key))
    item = _cbor.loads(data, what="EAR CWT")
    if isinstance(item, _cbor.Tag) and item.number == _CWT_TAG:
        item = item.value
    message = _cose.cose_from_item(item, what="EAR CWT")
    _cose.verify_cose(message, [record])
    claims = _cbor.loads(message.payload, what="EAR CWT claims")
    if not isinstance(claims, dict) or 265 not in claims:
        raise DecodeError("EAR: CWT claims must be a CBOR map with eat_profile (265)")
    return _fresh(parse_ear_claims(claims), claims.get(_NBF_CBOR), now, leeway, expected_nonce)
