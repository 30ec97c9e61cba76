"""Key records for the attestation ring: which key may verify which COSE/JOSE algorithm.

A :class:`VerifierKey` binds a public key (EC P-256/384/521, Ed25519) or an HMAC secret to
the algorithms it may verify. The key type fixes the primitive and curve, so a record can
never verify under an algorithm its key does not fit: ES256/ESP256 only on P-256,
ES384/ESP384 on P-384, ES512/ESP512 on P-521 (RFC 9864 §2.1 "fully specified"),
EdDSA/Ed25519 on Ed25519, HMAC on a secret at least as long as the hash output
(RFC 9053 §3.1). ``_cose`` checks the protected header's ``alg`` against the record.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final, TypeAlias

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from ._json import b64url_decode
from .errors import DecodeError, UnsupportedError

__all__ = [
    "Algorithm",
    "PrivateKey",
    "PublicKey",
    "SigningKey",
    "VerifierKey",
    "hmac_key",
    "key_from_jwk",
    "key_from_pem",
    "signing_key_from_pem",
]


class Algorithm(IntEnum):
    """COSE algorithms accepted here (RFC 9053 §2.1, §2.2, §3.1; RFC 9864 §2.1, §2.2)."""

    ES256 = -7
    ES384 = -35
    ES512 = -36
    ESP256 = -9
    ESP384 = -51
    ESP512 = -52
    EDDSA = -8
    ED25519 = -19
    HMAC_256_256 = 5
    HMAC_384_384 = 6
    HMAC_512_512 = 7


PublicKey: TypeAlias = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

A = Algorithm
#: curve name -> (algorithms, hash, coordinate and scalar size in bytes)
CURVES: Final[dict[str, tuple[frozenset[Algorithm], type[hashes.HashAlgorithm], int]]] = {
    "secp256r1": (frozenset({A.ES256, A.ESP256}), hashes.SHA256, 32),
    "secp384r1": (frozenset({A.ES384, A.ESP384}), hashes.SHA384, 48),
    "secp521r1": (frozenset({A.ES512, A.ESP512}), hashes.SHA512, 66),
}
#: HMAC algorithm -> hashlib name (RFC 9053 §3.1: full-length tags, no truncation)
MAC_HASH: Final = {A.HMAC_256_256: "sha256", A.HMAC_384_384: "sha384", A.HMAC_512_512: "sha512"}
MAC_ALGS: Final = frozenset(MAC_HASH)
_MAC_LEN: Final = {A.HMAC_256_256: 32, A.HMAC_384_384: 48, A.HMAC_512_512: 64}
_ED_ALGS: Final = frozenset({A.EDDSA, A.ED25519})
_KNOWN: Final = frozenset(int(a) for a in Algorithm)
# JOSE names (RFC 7518 §3.1, RFC 8037 §3.1, RFC 9864 §2) for the same algorithms
_JOSE: Final = {
    "ES256": A.ES256, "ES384": A.ES384, "ES512": A.ES512, "ESP256": A.ESP256,
    "ESP384": A.ESP384, "ESP512": A.ESP512, "EdDSA": A.EDDSA, "Ed25519": A.ED25519,
    "HS256": A.HMAC_256_256, "HS384": A.HMAC_384_384, "HS512": A.HMAC_512_512,
}  # fmt: skip
_JWK_CURVES: Final[dict[str, ec.EllipticCurve]] = {
    "P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()
}  # fmt: skip


def _key_algorithms(key: object) -> frozenset[Algorithm]:
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        if key.curve.name in CURVES:
            return CURVES[key.curve.name][0]
    elif isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return _ED_ALGS
    raise UnsupportedError(f"unsupported key {type(key).__name__}: P-256/384/521 or Ed25519")


def _to_algs(algorithms: Iterable[object]) -> frozenset[Algorithm]:
    algs: set[Algorithm] = set()
    for alg in algorithms:
        if not isinstance(alg, int) or isinstance(alg, bool) or alg not in _KNOWN:
            raise UnsupportedError(f"unsupported algorithm {alg!r}")
        algs.add(Algorithm(alg))
    return frozenset(algs)


def _check_record(
    key: object, secret: object, algorithms: Iterable[object], types: tuple[type, ...]
) -> frozenset[A]:
    algs = _to_algs(algorithms)
    if not algs:
        raise UnsupportedError("a key record needs at least one algorithm")
    if (key is None) == (secret is None):
        raise UnsupportedError("a key record holds exactly one of a key or a secret")
    if key is not None and not isinstance(key, types):
        raise UnsupportedError(f"unsupported key type {type(key).__name__}")
    if secret is not None:
        if not isinstance(secret, bytes):
            raise UnsupportedError("an HMAC secret must be bytes")
        short = [a.name for a in algs & MAC_ALGS if len(secret) < _MAC_LEN[a]]
        if short:  # RFC 9053 §3.1: keys shorter than the hash output are refused here
            raise UnsupportedError(f"HMAC secret of {len(secret)} bytes is too short for {short}")
    allowed = MAC_ALGS if key is None else _key_algorithms(key)
    if not algs <= allowed:
        raise UnsupportedError(f"{sorted(a.name for a in algs - allowed)} do not fit this key")
    return algs


@dataclass(frozen=True)
class VerifierKey:
    """A trusted key record: the algorithms it may verify, and a public key or an HMAC
    secret. UnsupportedError when the key and the algorithms do not fit."""

    name: str
    algorithms: frozenset[Algorithm]
    public_key: PublicKey | None = None
    secret: bytes | None = field(default=None, repr=False)
    kid: bytes | None = None

    def __post_init__(self) -> None:
        if self.kid is not None and not isinstance(self.kid, bytes):
            raise UnsupportedError("kid must be a byte string")
        types = (ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey)
        algs = _check_record(self.public_key, self.secret, self.algorithms, types)
        object.__setattr__(self, "algorithms", algs)


def _load_private(pem: bytes) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:  # TypeError: encrypted
        raise DecodeError(f"PEM key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise UnsupportedError(f"unsupported key type {type(key).__name__}")
    return key


def key_from_pem(
    pem: bytes, *, name: str, algorithms: Iterable[int] | None = None, kid: bytes | None = None
) -> VerifierKey:
    """A key record from a public (SPKI) PEM, or a private PEM's public half; algorithms
    default to every algorithm the key type fits (e.g. {ES256, ESP256} for P-256)."""
    try:
        key: object = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        key = _load_private(pem).public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        raise UnsupportedError(f"unsupported key type {type(key).__name__}")
    algs = _key_algorithms(key) if algorithms is None else _to_algs(algorithms)
    return VerifierKey(name, algs, public_key=key, kid=kid)


def _b64url(value: object, what: str) -> bytes:
    return b64url_decode(value, f"JWK: {what}")


def _jwk_public(jwk: Mapping[str, object]) -> PublicKey:
    kty, crv = jwk.get("kty"), jwk.get("crv")
    try:
        if kty == "OKP" and crv == "Ed25519":
            return ed25519.Ed25519PublicKey.from_public_bytes(_b64url(jwk.get("x"), "x"))
        if kty != "EC" or not isinstance(crv, str) or crv not in _JWK_CURVES:
            raise UnsupportedError(f"JWK: unsupported key type {kty!r}/{crv!r}")
        curve = _JWK_CURVES[crv]
        size = (curve.key_size + 7) // 8
        x, y = _b64url(jwk.get("x"), "x"), _b64url(jwk.get("y"), "y")
        if len(x) != size or len(y) != size:  # RFC 7518 §6.2.1.2: full-length coordinates
            raise DecodeError(f"JWK: {crv} coordinates must be {size} bytes")
        return ec.EllipticCurvePublicNumbers(
            int.from_bytes(x), int.from_bytes(y), curve
        ).public_key()
    except ValueError as exc:  # not on the curve, wrong length
        raise DecodeError(f"JWK: {exc}") from exc


def key_from_jwk(
    jwk: Mapping[str, object], *, name: str | None = None, algorithms: Iterable[int] | None = None
) -> VerifierKey:
    """A key record from a JWK (RFC 7517/7518/8037): EC P-256/384/521, OKP Ed25519 or oct.
    Only the public part of an asymmetric JWK is used. Algorithms: the argument, else the
    JWK's ``alg``, else every algorithm the key type fits."""
    alg, kid = jwk.get("alg"), jwk.get("kid")
    label = name if name is not None else (kid if isinstance(kid, str) else "jwk")
    kid_bytes = kid.encode() if isinstance(kid, str) else None
    algs: frozenset[Algorithm] | None = None
    if algorithms is not None:
        algs = _to_algs(algorithms)
    elif alg is not None:
        if not isinstance(alg, str) or alg not in _JOSE:
            raise UnsupportedError(f"JWK: unsupported alg {alg!r}")
        algs = frozenset({_JOSE[alg]})
    if jwk.get("kty") == "oct":
        secret = _b64url(jwk.get("k"), "k")
        return VerifierKey(label, algs or MAC_ALGS, secret=secret, kid=kid_bytes)
    key = _jwk_public(jwk)
    return VerifierKey(label, algs or _key_algorithms(key), public_key=key, kid=kid_bytes)


def hmac_key(
    secret: bytes, algorithms: Iterable[int], *, name: str = "hmac", kid: bytes | None = None
) -> VerifierKey:
    """A key record for COSE_Mac0 with the given HMAC algorithms (RFC 9053 §3.1)."""
    return VerifierKey(name, _to_algs(algorithms), secret=secret, kid=kid)


@dataclass(frozen=True)
class SigningKey:
    """A signer's key: one algorithm, and a private key or an HMAC secret."""

    algorithm: Algorithm
    private_key: PrivateKey | None = field(default=None, repr=False)
    secret: bytes | None = field(default=None, repr=False)
    kid: bytes | None = None

    def __post_init__(self) -> None:
        types = (ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey)
        (alg,) = _check_record(self.private_key, self.secret, (self.algorithm,), types)
        object.__setattr__(self, "algorithm", alg)

    def verifier(self, name: str) -> VerifierKey:
        """The key record that verifies this key's output (HMAC: the same secret)."""
        public = None if self.private_key is None else self.private_key.public_key()
        return VerifierKey(name, frozenset({self.algorithm}), public, self.secret, self.kid)


def signing_key_from_pem(
    pem: bytes, *, algorithm: int | None = None, kid: bytes | None = None
) -> SigningKey:
    """A signing key from an unencrypted private PEM; default ES256/384/512 by curve, or
    EdDSA (the widely deployed identifier of each key type)."""
    key = _load_private(pem)
    algs = _key_algorithms(key) if algorithm is None else _to_algs((algorithm,))
    return SigningKey(max(algs), private_key=key, kid=kid)
