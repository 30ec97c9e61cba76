"""SUIT_Digest (manifest-37 §8.3, §10): ``[algorithm-id, digest-bytes]``."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from .errors import DecodeError, UnsupportedError
from .numbers import DigestAlg

__all__ = ["Digest", "hash_bytes", "parse_digest"]


def hash_bytes(algorithm: DigestAlg, data: bytes) -> bytes:
    """Hash ``data`` with a suit-cose-hash-alg (SHAKE lengths per RFC 9054 §2)."""
    if algorithm is DigestAlg.SHA256:
        return hashlib.sha256(data).digest()
    if algorithm is DigestAlg.SHA384:
        return hashlib.sha384(data).digest()
    if algorithm is DigestAlg.SHA512:
        return hashlib.sha512(data).digest()
    if algorithm is DigestAlg.SHAKE128:
        return hashlib.shake_128(data).digest(32)
    return hashlib.shake_256(data).digest(64)


_LENGTHS = {
    DigestAlg.SHA256: 32,
    DigestAlg.SHAKE128: 32,
    DigestAlg.SHA384: 48,
    DigestAlg.SHA512: 64,
    DigestAlg.SHAKE256: 64,
}


@dataclass(frozen=True, slots=True)
class Digest:
    """A SUIT_Digest: the algorithm and the digest bytes."""

    algorithm: DigestAlg
    value: bytes

    @classmethod
    def of(cls, data: bytes, algorithm: DigestAlg = DigestAlg.SHA256) -> Digest:
        return cls(algorithm, hash_bytes(algorithm, data))

    def matches(self, data: bytes) -> bool:
        """Whether ``data`` hashes to this digest (constant-time comparison)."""
        return hmac.compare_digest(hash_bytes(self.algorithm, data), self.value)

    def to_cbor_value(self) -> list[object]:
        return [int(self.algorithm), self.value]

    @property
    def hex(self) -> str:
        return self.value.hex()


def parse_digest(obj: object, what: str) -> Digest:
    """SUIT_Digest from its decoded CBOR value. Trailing ``$$SUIT_Digest-extensions`` are
    allowed by the CDDL and ignored here: matching uses the algorithm and the bytes, and the
    digest's received encoding is what gets signed and compared (never a re-encoding)."""
    if not isinstance(obj, list) or len(obj) < 2:
        raise DecodeError(f"{what}: SUIT_Digest must be [algorithm-id, digest-bytes, *ext]")
    alg, value = obj[0], obj[1]
    if not isinstance(alg, int) or isinstance(alg, bool):
        raise DecodeError(f"{what}: digest algorithm-id must be an integer")
    try:
        algorithm = DigestAlg(alg)
    except ValueError:
        raise UnsupportedError(f"{what}: unsupported digest algorithm {alg}") from None
    if not isinstance(value, bytes):
        raise DecodeError(f"{what}: digest-bytes must be a byte string")
    if len(value) != _LENGTHS[algorithm]:
        raise DecodeError(
            f"{what}: {algorithm.name} digest must be {_LENGTHS[algorithm]} bytes, got {len(value)}"
        )
    return Digest(algorithm, value)
