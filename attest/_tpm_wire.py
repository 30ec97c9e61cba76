"""TPM 2.0 wire basics shared by the structure parsers: algorithm ids, hashes, a bounded reader.

Everything the TPM marshals is big-endian with no padding (TPM 2.0 Part 1 §18 "Marshalling"); a
sized buffer (TPM2B) is a u16 length followed by that many bytes. ``attest.tpm`` re-exports the
public names; this module exists only so ``tpm`` and ``tpm_public`` can share it without a cycle.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from collections.abc import Callable
from enum import IntEnum

from .errors import DecodeError, UnsupportedError

__all__ = [
    "Reader",
    "StType",
    "TpmAlg",
    "alg_or_unsupported",
    "digest_size",
    "hash_bytes",
    "hash_of",
    "pcrs_from_bitmap",
]


class TpmAlg(IntEnum):
    """TPM_ALG_ID values (TPM 2.0 Part 2 §6.3) this verifier knows by name."""

    RSA = 0x0001
    SHA1 = 0x0004
    HMAC = 0x0005
    AES = 0x0006
    KEYEDHASH = 0x0008
    SHA256 = 0x000B
    SHA384 = 0x000C
    SHA512 = 0x000D
    NULL = 0x0010
    SM3_256 = 0x0012
    RSASSA = 0x0014
    RSAES = 0x0015
    RSAPSS = 0x0016
    OAEP = 0x0017
    ECDSA = 0x0018
    ECDH = 0x0019
    ECC = 0x0023
    SYMCIPHER = 0x0025
    CFB = 0x0043


class StType(IntEnum):
    """TPMI_ST_ATTEST: the structure tags a TPMS_ATTEST can carry (Part 2 §6.9, §10.12)."""

    ATTEST_NV = 0x8014
    ATTEST_COMMAND_AUDIT = 0x8015
    ATTEST_SESSION_AUDIT = 0x8016
    ATTEST_CERTIFY = 0x8017
    ATTEST_QUOTE = 0x8018
    ATTEST_TIME = 0x8019
    ATTEST_CREATION = 0x801A


_ALGS = {int(a): a for a in TpmAlg}
# SM3_256 is a TPM hash, but hashlib has no SM3 in the default OpenSSL build: refuse it.
_HASHES = {
    TpmAlg.SHA1: ("sha1", 20),
    TpmAlg.SHA256: ("sha256", 32),
    TpmAlg.SHA384: ("sha384", 48),
    TpmAlg.SHA512: ("sha512", 64),
}
_CONSTRUCTORS: dict[TpmAlg, Callable[[bytes], hashlib._Hash]] = {
    TpmAlg.SHA1: hashlib.sha1,
    TpmAlg.SHA256: hashlib.sha256,
    TpmAlg.SHA384: hashlib.sha384,
    TpmAlg.SHA512: hashlib.sha512,
}
MAX_DIGEST = 64  # sizeof(TPMU_HA) with SHA-512 as the largest hash (Part 2 §10.3.1)
MAX_RSA_BYTES = 512  # MAX_RSA_KEY_BYTES for 4096-bit keys (TPM2B_PUBLIC_KEY_RSA, §11.2.4.5)


def hash_of(alg: TpmAlg) -> str:
    """The hashlib name of a TPM hash (``hashlib.new(hash_of(alg), data)``).

    Only SHA-1 and SHA-2 are supported; anything else raises ``UnsupportedError``.
    """
    try:
        return _HASHES[alg][0]
    except KeyError:
        raise UnsupportedError(f"hash algorithm {_alg_text(alg)} is not supported") from None


def digest_size(alg: TpmAlg) -> int:
    """The digest length in bytes of a supported TPM hash (``UnsupportedError`` otherwise)."""
    try:
        return _HASHES[alg][1]
    except KeyError:
        raise UnsupportedError(f"hash algorithm {_alg_text(alg)} is not supported") from None


def hash_bytes(alg: TpmAlg, data: bytes) -> bytes:
    """``H_alg(data)`` for a supported TPM hash."""
    constructor = _CONSTRUCTORS.get(alg)
    if constructor is None:
        hash_of(alg)  # raises UnsupportedError naming it
        raise RuntimeError(f"no hashlib constructor for {alg!r}")
    return constructor(data).digest()


def alg_or_unsupported(value: int, what: str) -> TpmAlg:
    """The ``TpmAlg`` for a wire value, or ``UnsupportedError`` naming the field."""
    alg = _ALGS.get(value)
    if alg is None:
        raise UnsupportedError(f"{what}: algorithm 0x{value:04x} is not supported")
    return alg


def pcrs_from_bitmap(bitmap: bytes) -> tuple[int, ...]:
    """PCR indices, ascending, from a pcrSelect bitmap: byte i, bit j is PCR 8i+j (§10.6.2)."""
    return _pcrs_from_bitmap(bytes(bitmap))


@functools.lru_cache(maxsize=256)
def _pcrs_from_bitmap(bitmap: bytes) -> tuple[int, ...]:
    return tuple(8 * i + j for i, byte in enumerate(bitmap) for j in range(8) if byte >> j & 1)


def _alg_text(alg: int) -> str:
    return alg.name if isinstance(alg, TpmAlg) else f"0x{alg:04x}"


_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


class Reader:
    """A big-endian cursor over one marshalled structure; every read is bounds-checked.

    Errors name the structure and the field, so a ``DecodeError`` says where the bytes went wrong.
    """

    __slots__ = ("_data", "_pos", "_what")

    def __init__(self, data: bytes, what: str, pos: int = 0) -> None:
        self._data = data
        self._pos = pos
        self._what = what

    @property
    def pos(self) -> int:
        return self._pos

    def fail(self, message: str) -> DecodeError:
        return DecodeError(f"{self._what}: {message}")

    def take(self, n: int, field: str) -> bytes:
        end = self._pos + n
        if end > len(self._data):
            raise self.fail(f"{field} truncated at offset {self._pos} (needs {n} bytes)")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def u8(self, field: str) -> int:
        return self.take(1, field)[0]

    def u16(self, field: str) -> int:
        value: int = _U16.unpack(self.take(2, field))[0]
        return value

    def u32(self, field: str) -> int:
        value: int = _U32.unpack(self.take(4, field))[0]
        return value

    def u64(self, field: str) -> int:
        value: int = _U64.unpack(self.take(8, field))[0]
        return value

    def yes_no(self, field: str) -> bool:
        # TPMI_YES_NO (Part 2 §9.2): only 0 and 1 are valid.
        value = self.u8(field)
        if value > 1:
            raise self.fail(f"{field} is {value}, not a TPMI_YES_NO (0 or 1)")
        return value == 1

    def tpm2b(self, field: str, limit: int) -> bytes:
        """A TPM2B: u16 size, then ``size`` bytes; ``limit`` is the spec's maximum for the type."""
        size = self.u16(field)
        if size > limit:
            raise self.fail(f"{field} size {size} exceeds the maximum {limit}")
        return self.take(size, field)

    def alg(self, field: str) -> TpmAlg:
        return alg_or_unsupported(self.u16(field), f"{self._what} {field}")

    def end(self) -> None:
        # Strict parsing: a structure that does not consume every byte is refused (notes §2.1).
        if self._pos != len(self._data):
            extra = len(self._data) - self._pos
            raise self.fail(f"{extra} trailing bytes after offset {self._pos}")
