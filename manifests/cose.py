"""COSE_Sign1 and COSE_Mac0 (RFC 9052/9053, RFC 9864): the only module here touching COSE.

Sign and verify call `cryptography` directly; python-cwt only imports COSE_Keys. The rules
live here, once (DESIGN.md): the protected ``alg`` must be one our key record lists and the
record's key type fixes the primitive (python-cwt does not check this); ``alg`` is never
read from the unprotected bucket; no label in both buckets (RFC 9052 §3); ``crit`` is
refused; an attached payload is refused where a detached one is required; the protected
header is verified as received, never re-encoded.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from types import MappingProxyType
from typing import Final, TypeAlias

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, utils

from . import _cbor
from .errors import DecodeError, UnsupportedError, VerificationError

__all__ = [
    "Algorithm",
    "CoseKind",
    "CoseMessage",
    "EncryptionInfo",
    "SigningKey",
    "TrustAnchor",
    "anchor_from_cose_key",
    "anchor_from_pem",
    "generate_signing_key",
    "hmac_anchor",
    "hmac_signing_key",
    "mac0",
    "parse_cose",
    "parse_encryption_info",
    "private_pem",
    "public_pem",
    "sign1",
    "signing_key_from_pem",
    "verify_cose",
]


class Algorithm(IntEnum):
    """COSE algorithms accepted here (RFC 9053 §2.1, §2.2, §3.1; RFC 9864 §2.1, §2.2)."""

    ES256 = -7
    EDDSA = -8
    ESP256 = -9
    ED25519 = -19
    HMAC_256_256 = 5


class CoseKind(StrEnum):
    """The COSE structures accepted here (RFC 9052 §4.2, §6.2)."""

    SIGN1 = "COSE_Sign1"
    MAC0 = "COSE_Mac0"


PublicKey: TypeAlias = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

_EC_ALGS: Final = frozenset({Algorithm.ES256, Algorithm.ESP256})
_ED_ALGS: Final = frozenset({Algorithm.EDDSA, Algorithm.ED25519})
_MAC_ALGS: Final = frozenset({Algorithm.HMAC_256_256})
_KIND_ALGS: Final = {CoseKind.SIGN1: _EC_ALGS | _ED_ALGS, CoseKind.MAC0: _MAC_ALGS}
_TAGS: Final = {18: CoseKind.SIGN1, 17: CoseKind.MAC0}
_MULTI: Final = {98: "COSE_Sign", 97: "COSE_Mac"}  # multi-signer structures: refused
_CONTEXT: Final = {CoseKind.SIGN1: "Signature1", CoseKind.MAC0: "MAC0"}
_KNOWN: Final = frozenset(int(a) for a in Algorithm)
_MIN_SECRET: Final = 32  # RFC 9053 §3.1: an HMAC key at least as long as the hash output
_ECDSA: Final = ec.ECDSA(hashes.SHA256())
_ALG, _CRIT, _KID = 1, 2, 4  # RFC 9052 §3.1 common header labels


def _key_algorithms(key: object) -> frozenset[Algorithm]:
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        if isinstance(key.curve, ec.SECP256R1):
            return _EC_ALGS
    elif isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return _ED_ALGS
    raise UnsupportedError(f"unsupported key {type(key).__name__}: P-256 or Ed25519 only")


def _check_record(
    key: object, secret: object, algorithms: Iterable[object], kid: object, types: tuple[type, ...]
) -> frozenset[Algorithm]:
    algs: set[Algorithm] = set()
    for alg in algorithms:
        if not isinstance(alg, int) or isinstance(alg, bool) or alg not in _KNOWN:
            raise UnsupportedError(f"unsupported algorithm {alg!r}")
        algs.add(Algorithm(alg))
    if not algs:
        raise UnsupportedError("a key record needs at least one algorithm")
    if (key is None) == (secret is None):
        raise UnsupportedError("a key record holds exactly one of a key or a secret")
    if key is not None and not isinstance(key, types):
        raise UnsupportedError(f"unsupported key type {type(key).__name__}")
    if secret is not None and (not isinstance(secret, bytes) or len(secret) < _MIN_SECRET):
        raise UnsupportedError(f"HMAC 256/256 needs a secret of at least {_MIN_SECRET} bytes")
    allowed = _MAC_ALGS if key is None else _key_algorithms(key)
    if not algs <= allowed:
        raise UnsupportedError(f"{sorted(a.name for a in algs - allowed)} do not fit this key")
    if kid is not None and not isinstance(kid, bytes):
        raise UnsupportedError("kid must be a byte string")
    return frozenset(algs)


@dataclass(frozen=True)
class TrustAnchor:
    """A trusted key record; UnsupportedError when its key and algorithms do not fit."""

    name: str
    algorithms: frozenset[Algorithm]
    public_key: PublicKey | None = None
    secret: bytes | None = field(default=None, repr=False)
    kid: bytes | None = None

    def __post_init__(self) -> None:
        types = (ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey)
        algs = _check_record(self.public_key, self.secret, self.algorithms, self.kid, types)
        object.__setattr__(self, "algorithms", algs)


def _load_pem_private(pem: bytes) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:  # TypeError: encrypted
        raise DecodeError(f"PEM key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise UnsupportedError(f"unsupported key type {type(key).__name__}")
    return key


def anchor_from_pem(
    pem: bytes,
    *,
    name: str,
    algorithms: Iterable[Algorithm] | None = None,
    kid: bytes | None = None,
) -> TrustAnchor:
    """A trust anchor from a public (SPKI) or private PEM (its public half); algorithms
    default to {ES256, ESP256} for P-256 and {EDDSA, ED25519} for Ed25519."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        key = _load_pem_private(pem).public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        raise UnsupportedError(f"unsupported key type {type(key).__name__}")
    algs = _key_algorithms(key) if algorithms is None else frozenset(algorithms)
    return TrustAnchor(name=name, algorithms=algs, public_key=key, kid=kid)


def anchor_from_cose_key(data: bytes, *, name: str) -> TrustAnchor:
    """A trust anchor from a COSE_Key (RFC 9052 §7) naming its alg (label 3), the only one
    it verifies; kid from label 2; a private COSE_Key yields its public half."""
    import cwt  # here only: importing a key is not on any hot path

    params = _cbor.loads(data, what="COSE_Key", canonical=False)
    if not isinstance(params, dict):
        raise DecodeError("COSE_Key: expected a map")
    alg, kid = params.get(3), params.get(2)
    if not isinstance(alg, int) or isinstance(alg, bool) or alg not in _KNOWN:
        raise UnsupportedError(f"COSE_Key: alg (label 3) must be a supported algorithm: {alg!r}")
    if kid is not None and not isinstance(kid, bytes):
        raise DecodeError("COSE_Key: kid (label 2) must be a byte string")
    if params.get(1) == 4 and not isinstance(params.get(-1), bytes):  # cwt would invent one
        raise DecodeError("COSE_Key: a symmetric key needs k (label -1)")
    try:
        key = cwt.COSEKey.new(dict(params)).key
    except (ValueError, TypeError, KeyError, cwt.CWTError) as exc:
        raise DecodeError(f"COSE_Key: {exc}") from exc
    if isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        key = key.public_key()
    public, secret = (None, key) if isinstance(key, bytes) else (key, None)
    return TrustAnchor(name, frozenset({Algorithm(alg)}), public, secret, kid)


def hmac_anchor(secret: bytes, *, name: str, kid: bytes | None = None) -> TrustAnchor:
    """A trust anchor for COSE_Mac0 with HMAC 256/256 (a secret of at least 32 bytes)."""
    return TrustAnchor(name, _MAC_ALGS, secret=secret, kid=kid)


@dataclass(frozen=True)
class SigningKey:
    """A manufacturer-side key: one algorithm, and a private key or an HMAC secret."""

    algorithm: Algorithm
    private_key: PrivateKey | None = field(default=None, repr=False)
    secret: bytes | None = field(default=None, repr=False)
    kid: bytes | None = None

    def __post_init__(self) -> None:
        types = (ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey)
        algs = _check_record(self.private_key, self.secret, (self.algorithm,), self.kid, types)
        object.__setattr__(self, "algorithm", next(iter(algs)))

    def public_anchor(self, name: str) -> TrustAnchor:
        """The trust anchor that verifies this key's output (HMAC: the same secret)."""
        public = None if self.private_key is None else self.private_key.public_key()
        return TrustAnchor(name, frozenset({self.algorithm}), public, self.secret, self.kid)


def signing_key_from_pem(
    pem: bytes, *, algorithm: Algorithm | None = None, kid: bytes | None = None
) -> SigningKey:
    """A signing key from an unencrypted private PEM; default ES256 (P-256) or EDDSA."""
    key = _load_pem_private(pem)
    if algorithm is None:  # max() picks ES256 or EDDSA, the widely deployed identifiers
        algorithm = max(_key_algorithms(key))
    return SigningKey(algorithm, private_key=key, kid=kid)


def hmac_signing_key(secret: bytes, *, kid: bytes | None = None) -> SigningKey:
    """A COSE_Mac0 key for HMAC 256/256 (a secret of at least 32 bytes)."""
    return SigningKey(Algorithm.HMAC_256_256, secret=secret, kid=kid)


def generate_signing_key(algorithm: Algorithm) -> SigningKey:
    """A fresh key for ``algorithm``, from OS randomness: for manufacturer-side tools only;
    nothing that parses or verifies draws randomness."""
    if algorithm in _EC_ALGS:
        return SigningKey(algorithm, private_key=ec.generate_private_key(ec.SECP256R1()))
    if algorithm in _ED_ALGS:
        return SigningKey(algorithm, private_key=ed25519.Ed25519PrivateKey.generate())
    return SigningKey(algorithm, secret=os.urandom(_MIN_SECRET))


def private_pem(key: SigningKey) -> bytes:
    """The private key as unencrypted PKCS#8 PEM (asymmetric keys only)."""
    if key.private_key is None:
        raise RuntimeError("PEM export is for asymmetric keys only")
    pkcs8, none = serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    return key.private_key.private_bytes(serialization.Encoding.PEM, pkcs8, none)


def public_pem(key: SigningKey) -> bytes:
    """The public key as SubjectPublicKeyInfo PEM (asymmetric keys only)."""
    if key.private_key is None:
        raise RuntimeError("PEM export is for asymmetric keys only")
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return key.private_key.public_key().public_bytes(serialization.Encoding.PEM, spki)


@dataclass(frozen=True)
class CoseMessage:
    """A parsed, not yet verified COSE_Sign1 or COSE_Mac0, with the bytes as received."""

    kind: CoseKind
    protected: bytes
    algorithm: int
    kid: bytes | None
    unprotected: Mapping[int, object]
    payload: bytes | None
    tag: bytes
    raw: bytes


def _header_map(obj: object, what: str) -> dict[int, object]:
    if not isinstance(obj, dict):
        raise DecodeError(f"{what}: header must be a map")
    if not all(isinstance(k, int) and not isinstance(k, bool) for k in obj):  # text: RFC 9052
        raise UnsupportedError(f"{what}: header labels must be integers")
    return obj


# RFC 9052 §4.2, §6.2 (tagged #6.18 / #6.17):
#   COSE_Sign1 = [protected: bstr .cbor header_map / bstr .size 0, unprotected: header_map,
#                 payload: bstr / nil, signature: bstr]
#   COSE_Mac0  = [protected, unprotected, payload: bstr / nil, tag: bstr]
def parse_cose(data: bytes, *, what: str = "COSE message") -> CoseMessage:
    """Parse a tagged COSE_Sign1 or COSE_Mac0 without verifying it."""
    item = _cbor.loads(data, what=what, canonical=False)
    if not isinstance(item, _cbor.Tag):
        raise DecodeError(f"{what}: expected a tagged COSE_Sign1 (18) or COSE_Mac0 (17)")
    if name := _MULTI.get(item.number):
        raise UnsupportedError(f"{what}: {name} (tag {item.number}) is not supported")
    kind = _TAGS.get(item.number)
    if kind is None:
        raise DecodeError(f"{what}: tag {item.number} is not COSE_Sign1 or COSE_Mac0")
    body = item.value
    if not isinstance(body, list) or len(body) != 4:
        raise DecodeError(f"{what}: {kind} must be an array of four elements")
    protected, unprotected, payload, tag = body
    if not isinstance(protected, bytes):
        raise DecodeError(f"{what}: protected header must be a byte string")
    phdr: dict[int, object] = {}
    if protected:  # RFC 9052 §3 asks no canonical order; duplicates are refused by _cbor
        phdr = _header_map(
            _cbor.loads(protected, what=f"{what} protected header", canonical=False), what
        )
    uhdr = _header_map(unprotected, what)
    if _ALG in uhdr:
        raise DecodeError(f"{what}: algorithm must not be in the unprotected header")
    if both := phdr.keys() & uhdr.keys():  # RFC 9052 §3
        raise DecodeError(f"{what}: header label(s) {sorted(both)} in both buckets")
    if _CRIT in phdr or _CRIT in uhdr:
        raise UnsupportedError(f"{what}: critical header parameters (crit) are not supported")
    alg = phdr.get(_ALG)
    if alg is None:
        raise DecodeError(f"{what}: algorithm (label 1) missing from the protected header")
    if not isinstance(alg, int) or isinstance(alg, bool):  # text names: RFC 9052 allows them
        raise UnsupportedError(f"{what}: algorithm must be an integer")
    kid = phdr.get(_KID, uhdr.get(_KID))
    if kid is not None and not isinstance(kid, bytes):
        raise DecodeError(f"{what}: kid must be a byte string")
    if not isinstance(payload, bytes | None) or not isinstance(tag, bytes):
        raise DecodeError(f"{what}: payload must be bstr or nil, signature or tag bstr")
    return CoseMessage(kind, protected, alg, kid, MappingProxyType(uhdr), payload, tag, bytes(data))


def _to_be_signed(kind: CoseKind, protected: bytes, aad: bytes, payload: bytes) -> bytes:
    # RFC 9052 §4.4 Sig_structure / §6.3 MAC_structure: [context, protected, aad, payload].
    return _cbor.dumps([_CONTEXT[kind], protected, aad, payload])


def _check(anchor: TrustAnchor, tbs: bytes, tag: bytes) -> bool:
    # Anchors here list the protected alg, and their algorithms fit their key type.
    key = anchor.public_key
    if key is None:  # RFC 9053 §3.1: HMAC 256/256, full 32-byte tag
        return hmac.compare_digest(hmac.digest(anchor.secret or b"", tbs, "sha256"), tag)
    if len(tag) != 64:  # RFC 9053 §2.1: r || s, 32 bytes each; RFC 8032 §5.1.6: 64 bytes
        return False
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            # ES256 and ESP256 compute the same on P-256 (RFC 9864 §2.1).
            r, s = int.from_bytes(tag[:32]), int.from_bytes(tag[32:])
            key.verify(utils.encode_dss_signature(r, s), tbs, _ECDSA)
        else:
            key.verify(tag, tbs)
    except InvalidSignature:
        return False
    return True


def verify_cose(
    msg: CoseMessage,
    anchors: Sequence[TrustAnchor],
    *,
    detached_payload: bytes | None = None,
    external_aad: bytes = b"",
) -> TrustAnchor:
    """Verify ``msg``; return the anchor that verified it. Candidates list the protected alg
    and, when both carry a kid, match it. With ``detached_payload`` an attached payload is
    refused; without it the payload must be attached."""
    payload = msg.payload if detached_payload is None else detached_payload
    if detached_payload is not None and msg.payload is not None:
        raise VerificationError(f"{msg.kind}: attached payload where a detached one is required")
    if payload is None:
        raise VerificationError(f"{msg.kind}: detached payload, but none was supplied")
    alg, kid = msg.algorithm, msg.kid
    if alg in _KNOWN and alg not in _KIND_ALGS[msg.kind]:  # e.g. a MAC alg in a COSE_Sign1
        raise VerificationError(f"{msg.kind}: algorithm {alg} cannot be used in a {msg.kind}")
    candidates = [
        a for a in anchors if alg in a.algorithms and (kid is None or a.kid is None or a.kid == kid)
    ]
    if not candidates:
        kid_text = "no kid" if kid is None else f"kid {kid.hex()}"
        raise VerificationError(f"{msg.kind}: no trusted key for algorithm {alg} ({kid_text})")
    tbs = _to_be_signed(msg.kind, msg.protected, external_aad, payload)
    for anchor in candidates:
        if _check(anchor, tbs, msg.tag):
            return anchor
    what = "signature" if msg.kind is CoseKind.SIGN1 else "MAC"
    raise VerificationError(f"{msg.kind}: {what} does not verify ({len(candidates)} key(s) tried)")


def _seal(kind: CoseKind, payload: bytes, key: SigningKey, detached: bool, aad: bytes) -> bytes:
    if key.algorithm not in _KIND_ALGS[kind]:
        raise RuntimeError(f"{kind} cannot be made with a {key.algorithm.name} key")
    header: dict[int, object] = {_ALG: int(key.algorithm)}
    if key.kid is not None:
        header[_KID] = key.kid
    protected = _cbor.dumps(header)
    tbs = _to_be_signed(kind, protected, aad, payload)
    if isinstance(key.private_key, ec.EllipticCurvePrivateKey):
        # RFC 6979 deterministic ECDSA: signing draws no randomness.
        der = key.private_key.sign(tbs, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
        r, s = utils.decode_dss_signature(der)
        tag = r.to_bytes(32) + s.to_bytes(32)
    elif key.private_key is not None:
        tag = key.private_key.sign(tbs)
    else:
        tag = hmac.digest(key.secret or b"", tbs, "sha256")
    body: list[object] = [protected, {}, None if detached else payload, tag]
    return _cbor.dumps(_cbor.Tag(18 if kind is CoseKind.SIGN1 else 17, body))


def sign1(payload: bytes, key: SigningKey, *, detached: bool, external_aad: bytes = b"") -> bytes:
    """A tagged COSE_Sign1 (#6.18) over ``payload``; protected {1: alg} plus {4: kid}."""
    return _seal(CoseKind.SIGN1, payload, key, detached, external_aad)


def mac0(payload: bytes, key: SigningKey, *, detached: bool, external_aad: bytes = b"") -> bytes:
    """A tagged COSE_Mac0 (#6.17) over ``payload`` with HMAC 256/256."""
    return _seal(CoseKind.MAC0, payload, key, detached, external_aad)


@dataclass(frozen=True, slots=True)
class EncryptionInfo:
    """SUIT_Encryption_Info = ``#6.96(COSE_Encrypt)`` with a detached ciphertext
    (firmware-encryption-26 §5). Kept as received; the summary fields are for display."""

    raw: bytes
    content_algorithm: int
    recipient_algorithms: tuple[int, ...]
    recipient_kids: tuple[bytes | None, ...]


def _bstr(value: object, what: str) -> bytes:
    if not isinstance(value, bytes):
        raise DecodeError(f"{what} must be a byte string")
    return value


def _is_label_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _encryption_headers(raw: bytes, what: str) -> dict[int, object]:
    value = _cbor.loads(raw, what=what)
    if not isinstance(value, dict) or not all(_is_label_int(k) for k in value):
        raise DecodeError(f"{what} must be a map with integer labels")
    return value


def parse_encryption_info(raw: bytes) -> EncryptionInfo:
    """SUIT_Encryption_Info = #6.96(COSE_Encrypt) (firmware-encryption-26 §5, RFC 9052 §5.1):
    ``[protected, unprotected, ciphertext (nil: detached), [+ COSE_recipient]]``."""
    # Written by COSE libraries (the ES-DH examples of encryption-26 are not canonical): strict
    # CBOR without the canonical-order rule (ADR 0003).
    value = _cbor.loads(raw, what="encryption-info", canonical=False)
    if not isinstance(value, _cbor.Tag) or value.number != 96:
        raise DecodeError("encryption-info must be a tagged COSE_Encrypt (#6.96)")
    body = value.value
    if not isinstance(body, list) or len(body) != 4:
        raise DecodeError("COSE_Encrypt must be an array of 4 elements")
    protected, unprotected, ciphertext, recipients = body
    # An empty protected bstr stands for no protected headers (RFC 9052 §3); AES-CTR, not
    # being an AEAD, must have none (RFC 9459 §4).
    prot = _bstr(protected, "protected header")
    headers = _encryption_headers(prot, "protected header") if prot else {}
    if not isinstance(unprotected, dict):
        raise DecodeError("COSE_Encrypt unprotected header must be a map")
    if ciphertext is not None:
        raise DecodeError("SUIT encryption-info must have a detached (nil) ciphertext")
    alg = headers.get(1, unprotected.get(1))
    if not _is_label_int(alg):
        raise DecodeError("COSE_Encrypt has no integer content algorithm")
    if not isinstance(recipients, list) or not recipients:
        raise DecodeError("COSE_Encrypt needs at least one recipient")
    algs: list[int] = []
    kids: list[bytes | None] = []
    for recipient in recipients:
        if not isinstance(recipient, list) or len(recipient) not in (3, 4):
            raise DecodeError("COSE_recipient must be an array of 3 or 4 elements")
        r_prot = recipient[0]
        r_unprot = recipient[1]
        r_prot = _bstr(r_prot, "recipient protected header")
        r_headers = _encryption_headers(r_prot, "recipient protected header") if r_prot else {}
        if not isinstance(r_unprot, dict):
            raise DecodeError("COSE_recipient unprotected header must be a map")
        r_alg = r_headers.get(1, r_unprot.get(1))
        if not _is_label_int(r_alg):
            raise DecodeError("COSE_recipient has no integer algorithm")
        kid = r_unprot.get(4, r_headers.get(4))
        algs.append(r_alg)  # type: ignore[arg-type]
        kids.append(kid if isinstance(kid, bytes) else None)
    return EncryptionInfo(raw, alg, tuple(algs), tuple(kids))  # type: ignore[arg-type]
