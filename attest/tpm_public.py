"""TPM public areas: TPMT_PUBLIC / TPM2B_PUBLIC → a ``cryptography`` key plus the TPM Name.

Also the AK attribute policy (notes/attestation.md §2.5) and qualified names (Part 1 §16).
Re-exported by ``attest.tpm``; import from there.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ._tpm_wire import MAX_DIGEST, MAX_RSA_BYTES, Reader, TpmAlg, hash_bytes
from .errors import DecodeError, UnsupportedError, VerificationError

__all__ = [
    "AkKey",
    "Hierarchy",
    "ObjectAttr",
    "PublicKey",
    "parse_public",
    "public_from_pem",
    "qualified_name",
    "require_ak",
]

AsymmetricKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


class ObjectAttr(IntFlag):
    """TPMA_OBJECT bits (TPM 2.0 Part 2 §8.3)."""

    FIXED_TPM = 1 << 1
    ST_CLEAR = 1 << 2
    FIXED_PARENT = 1 << 4
    SENSITIVE_DATA_ORIGIN = 1 << 5
    USER_WITH_AUTH = 1 << 6
    ADMIN_WITH_POLICY = 1 << 7
    NO_DA = 1 << 10
    ENCRYPTED_DUPLICATION = 1 << 11
    RESTRICTED = 1 << 16
    DECRYPT = 1 << 17
    SIGN = 1 << 18


class Hierarchy(IntEnum):
    """Permanent hierarchy handles (Part 2 §7.4); a hierarchy's qualified name is its handle."""

    OWNER = 0x40000001
    NULL = 0x40000007
    ENDORSEMENT = 0x4000000B
    PLATFORM = 0x4000000C

    @property
    def qualified_name(self) -> bytes:
        return self.value.to_bytes(4, "big")


@dataclass(frozen=True)
class PublicKey:
    """A parsed TPMT_PUBLIC of an RSA or ECC key.

    ``raw`` is the TPMT_PUBLIC bytes (no TPM2B size); ``name`` = u16 nameAlg || H_nameAlg(raw).
    ``symmetric`` is None for signing keys, else the storage/EK cipher with ``symmetric_bits`` and
    ``symmetric_mode`` (e.g. AES, 128, CFB). ``scheme`` is NULL when the key leaves the scheme to
    the command (``scheme_hash`` is then None). ``exponent`` is the effective RSA exponent (a wire
    value of 0 means 65537); ``curve_id`` is the TPM_ECC_CURVE of an ECC key.
    """

    raw: bytes
    type: TpmAlg
    name_alg: TpmAlg
    object_attributes: int
    auth_policy: bytes
    symmetric: TpmAlg | None
    symmetric_bits: int
    symmetric_mode: TpmAlg | None
    scheme: TpmAlg
    scheme_hash: TpmAlg | None
    key_bits: int
    curve_id: int | None
    exponent: int | None
    name: bytes
    key: AsymmetricKey = field(compare=False)  # derived from raw, which is compared: hashable


@dataclass(frozen=True)
class AkKey:
    """An AK known only by its public key (PEM SubjectPublicKeyInfo).

    It has no TPM Name and its objectAttributes are unknown (None), so ``require_ak`` cannot be
    applied: trust in it comes from enrolment. ``scheme``/``scheme_hash`` pin the signature
    scheme when the caller knows it; None accepts any scheme that fits the key type.
    """

    key: AsymmetricKey
    scheme: TpmAlg | None = None
    scheme_hash: TpmAlg | None = None
    object_attributes: int | None = None


# TPM_ECC_CURVE (Part 2 §6.4) → curve; BN and SM2 curves are refused.
_CURVES: dict[int, ec.EllipticCurve] = {
    0x0003: ec.SECP256R1(),
    0x0004: ec.SECP384R1(),
    0x0005: ec.SECP521R1(),
}
_RSA_BITS = frozenset({1024, 2048, 3072, 4096})
# Schemes whose TPMU_ASYM_SCHEME details are a TPMS_SCHEME_HASH (a u16 hash); RSAES has none.
_RSA_SCHEMES = frozenset({TpmAlg.RSASSA, TpmAlg.RSAPSS, TpmAlg.OAEP})
_ECC_SCHEMES = frozenset({TpmAlg.ECDSA, TpmAlg.ECDH})
_HASHES = frozenset({TpmAlg.SHA1, TpmAlg.SHA256, TpmAlg.SHA384, TpmAlg.SHA512})


# TPM2B_PUBLIC (Part 2 §12.2.5):  size u16 (must equal the rest) | TPMT_PUBLIC
# TPMT_PUBLIC (Part 2 §12.2.4):
#   type u16 (RSA 0x0001 | ECC 0x0023) | nameAlg u16 | objectAttributes u32 (TPMA_OBJECT)
#   authPolicy TPM2B_DIGEST | parameters TPMU_PUBLIC_PARMS[type] | unique TPMU_PUBLIC_ID[type]
# TPMS_RSA_PARMS (§12.2.3.5): symmetric TPMT_SYM_DEF_OBJECT | scheme TPMT_RSA_SCHEME
#                             | keyBits u16 | exponent u32 (0 = 2^16+1)
# TPMS_ECC_PARMS (§12.2.3.6): symmetric TPMT_SYM_DEF_OBJECT | scheme TPMT_ECC_SCHEME
#                             | curveID u16 | kdf TPMT_KDF_SCHEME (only NULL accepted)
# TPMT_SYM_DEF_OBJECT (§11.1.7): algorithm u16 | [keyBits u16 | mode u16]   (absent when NULL)
# TPMT_RSA_SCHEME / TPMT_ECC_SCHEME (§11.2.4.2, §11.2.5.6): scheme u16 | [hashAlg u16]
# TPMU_PUBLIC_ID (§12.2.3.2): RSA: TPM2B_PUBLIC_KEY_RSA
#                             ECC: TPMS_ECC_POINT {x TPM2B_ECC_PARAMETER, y TPM2B_ECC_PARAMETER}
def parse_public(data: bytes) -> PublicKey:
    """Parse a TPM2B_PUBLIC or a bare TPMT_PUBLIC of an RSA or ECC key.

    The input is taken as a TPM2B_PUBLIC only when its u16 size prefix equals the length of the
    rest exactly; otherwise the whole input is a TPMT_PUBLIC (go-attestation stores AKs that way).
    The two cannot be confused for a real key: a TPMT_PUBLIC starts with its type (1 or 0x23),
    and no RSA or P-256+ key area is 3 or 37 bytes long. No trailing bytes are accepted.

    The result is a pure function of the bytes and immutable, so it is memoised by the exact
    bytes (a verifier sees the same few enrolled AKs again and again; loading the key into
    OpenSSL is most of the cost). Refused input is not remembered: it raises every time.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"TPMT_PUBLIC: expected bytes, got {type(data).__name__}")
    return _parse_public(bytes(data))


@functools.lru_cache(maxsize=1024)
def _parse_public(data: bytes) -> PublicKey:
    if len(data) >= 2 and struct.unpack_from(">H", data)[0] == len(data) - 2:
        data = data[2:]
    r = Reader(data, "TPMT_PUBLIC")
    key_type = r.alg("type")
    if key_type not in (TpmAlg.RSA, TpmAlg.ECC):
        raise UnsupportedError(f"TPMT_PUBLIC: key type {key_type.name} is not supported")
    name_alg = r.alg("nameAlg")
    if name_alg not in _HASHES:
        raise UnsupportedError(f"TPMT_PUBLIC: nameAlg {name_alg.name} is not supported")
    attributes = r.u32("objectAttributes")
    auth_policy = r.tpm2b("authPolicy", MAX_DIGEST)
    symmetric, sym_bits, sym_mode = _sym_def_object(r)
    scheme = r.alg("scheme")
    allowed = _RSA_SCHEMES | {TpmAlg.RSAES} if key_type is TpmAlg.RSA else _ECC_SCHEMES
    if scheme is not TpmAlg.NULL and scheme not in allowed:
        raise UnsupportedError(f"TPMT_PUBLIC: scheme {scheme.name} is not supported")
    scheme_hash = None
    if scheme in _RSA_SCHEMES or scheme in _ECC_SCHEMES:
        scheme_hash = r.alg("scheme hashAlg")
        if scheme_hash not in _HASHES:
            raise UnsupportedError(f"TPMT_PUBLIC: scheme hash {scheme_hash.name} not supported")
    key: AsymmetricKey
    if key_type is TpmAlg.RSA:
        key, curve_id = _rsa_key(r), None
        key_bits, exponent = key.key_size, key.public_numbers().e
    else:
        curve_id, key = _ecc_key(r)
        key_bits, exponent = key.curve.key_size, None
    r.end()
    return PublicKey(
        raw=data,
        type=key_type,
        name_alg=name_alg,
        object_attributes=attributes,
        auth_policy=auth_policy,
        symmetric=symmetric,
        symmetric_bits=sym_bits,
        symmetric_mode=sym_mode,
        scheme=scheme,
        scheme_hash=scheme_hash,
        key_bits=key_bits,
        curve_id=curve_id,
        exponent=exponent,
        key=key,
        name=struct.pack(">H", name_alg) + hash_bytes(name_alg, data),
    )


def _sym_def_object(r: Reader) -> tuple[TpmAlg | None, int, TpmAlg | None]:
    algorithm = r.alg("symmetric.algorithm")
    if algorithm is TpmAlg.NULL:
        return None, 0, None
    # Storage keys and EKs use AES in CFB mode (Part 1 §25: a parent's symmetric mode is CFB).
    if algorithm is not TpmAlg.AES:
        raise UnsupportedError(f"TPMT_PUBLIC: symmetric {algorithm.name} is not supported")
    bits = r.u16("symmetric.keyBits")
    if bits not in (128, 192, 256):
        raise r.fail(f"AES key size {bits} is not 128, 192 or 256")
    mode = r.alg("symmetric.mode")
    if mode is not TpmAlg.CFB:
        raise UnsupportedError(f"TPMT_PUBLIC: symmetric mode {mode.name} is not supported")
    return algorithm, bits, mode


def _rsa_key(r: Reader) -> rsa.RSAPublicKey:
    bits = r.u16("keyBits")
    if bits not in _RSA_BITS:
        raise UnsupportedError(f"TPMT_PUBLIC: RSA key size {bits} is not supported")
    exponent = r.u32("exponent") or 65537  # Part 2 §12.2.3.5: zero means the default 2^16+1
    modulus = r.tpm2b("unique.rsa", MAX_RSA_BYTES)
    if len(modulus) * 8 != bits:
        raise r.fail(f"RSA modulus is {len(modulus)} bytes but keyBits is {bits}")
    n = int.from_bytes(modulus, "big")
    if n.bit_length() != bits or exponent < 3 or exponent % 2 == 0:
        raise r.fail("not a valid RSA public key")
    try:
        return rsa.RSAPublicNumbers(exponent, n).public_key()
    except ValueError as exc:
        raise r.fail(f"not a valid RSA public key: {exc}") from exc


def _ecc_key(r: Reader) -> tuple[int, ec.EllipticCurvePublicKey]:
    curve_id = r.u16("curveID")
    curve = _CURVES.get(curve_id)
    if curve is None:
        raise UnsupportedError(f"TPMT_PUBLIC: ECC curve 0x{curve_id:04x} is not supported")
    kdf = r.alg("kdf.scheme")
    if kdf is not TpmAlg.NULL:
        raise UnsupportedError(f"TPMT_PUBLIC: KDF scheme {kdf.name} is not supported")
    size = (curve.key_size + 7) // 8
    x = int.from_bytes(r.tpm2b("unique.ecc.x", size), "big")
    y = int.from_bytes(r.tpm2b("unique.ecc.y", size), "big")
    try:
        return curve_id, ec.EllipticCurvePublicNumbers(x, y, curve).public_key()
    except ValueError as exc:
        raise r.fail(f"the ECC point is not on {curve.name}") from exc


def public_from_pem(
    pem: bytes, *, scheme: TpmAlg | None = None, scheme_hash: TpmAlg | None = None
) -> AkKey:
    """An AK from a PEM SubjectPublicKeyInfo (RSA or EC P-256/384/521).

    Its attributes are unknown; pass ``scheme``/``scheme_hash`` to pin the signature scheme.
    """
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise DecodeError(f"AK PEM: {exc}") from exc
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not any(isinstance(key.curve, type(c)) for c in _CURVES.values()):
            raise UnsupportedError(f"AK PEM: curve {key.curve.name} is not supported")
    elif not isinstance(key, rsa.RSAPublicKey):
        raise UnsupportedError(f"AK PEM: {type(key).__name__} keys are not supported")
    return AkKey(key=key, scheme=scheme, scheme_hash=scheme_hash)


# The bits an AK must have, spelled as in Part 2 §8.3 for the error message.
_AK_REQUIRED = {
    ObjectAttr.FIXED_TPM: "fixedTPM",
    ObjectAttr.FIXED_PARENT: "fixedParent",
    ObjectAttr.SENSITIVE_DATA_ORIGIN: "sensitiveDataOrigin",
    ObjectAttr.RESTRICTED: "restricted",
    ObjectAttr.SIGN: "sign",
}


def require_ak(pub: PublicKey) -> None:
    """Refuse a key that is not a TPM-resident restricted signing key (notes §2.5).

    Required: fixedTPM, fixedParent, sensitiveDataOrigin, restricted, sign; decrypt must be clear.
    Only a restricted key guarantees that a signed structure starting with TPM_GENERATED_VALUE
    was produced by the TPM itself (Part 1 §36.2), so without these bits a quote proves nothing.
    Raises ``VerificationError`` naming the missing or forbidden bits.
    """
    problems = _ak_problems(pub.object_attributes)
    if problems:
        raise VerificationError(problems)


@functools.lru_cache(maxsize=64)
def _ak_problems(attributes: int) -> str:
    """Why ``attributes`` are not an AK's ("" when they are); few distinct values exist."""
    missing = [spec for bit, spec in _AK_REQUIRED.items() if not attributes & bit]
    problems = [f"lacks {', '.join(missing)}"] if missing else []
    if attributes & ObjectAttr.DECRYPT:
        problems.append("has decrypt set")
    if not problems:
        return ""
    return f"not an attestation key: objectAttributes 0x{attributes:08x} " + " and ".join(problems)


def qualified_name(parent_qualified_name: bytes, name: bytes, name_alg: TpmAlg) -> bytes:
    """QN = u16 nameAlg || H_nameAlg(QN_parent || Name) (Part 1 §16).

    The qualified name of a hierarchy is its 4-byte handle (``Hierarchy.X.qualified_name``), so
    an AK under an EK under the endorsement hierarchy has the QN
    ``qualified_name(qualified_name(Hierarchy.ENDORSEMENT.qualified_name, ek.name, alg),
    ak.name, alg)``.
    """
    return struct.pack(">H", name_alg) + hash_bytes(name_alg, parent_qualified_name + name)
