"""Strict parsers for the TPM 2.0 structures a verifier receives (TPM 2.0 Library, Part 2).

TPMS_ATTEST (what a quote signs), TPMT_SIGNATURE and, re-exported from ``tpm_public``, the public
area of an AK or EK. Everything is big-endian, every length is bounded by the spec's maximum for
its type, and no trailing bytes are accepted: bytes in, a frozen model out, or ``DecodeError``
(``UnsupportedError`` for well-formed input using an algorithm or type this verifier refuses).
Parsing checks form only; ``attest.quote.verify_quote`` checks signatures and meaning.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ._tpm_wire import (
    MAX_DIGEST,
    MAX_RSA_BYTES,
    Reader,
    StType,
    TpmAlg,
    alg_or_unsupported,
    digest_size,
    hash_bytes,
    hash_of,
    pcrs_from_bitmap,
)
from .errors import DecodeError, UnsupportedError
from .tpm_public import (
    AkKey,
    Hierarchy,
    ObjectAttr,
    PublicKey,
    parse_public,
    public_from_pem,
    qualified_name,
    require_ak,
)

__all__ = [
    "TPM_GENERATED_VALUE",
    "AkKey",
    "Attest",
    "ClockInfo",
    "Hierarchy",
    "ObjectAttr",
    "PcrSelection",
    "PublicKey",
    "Signature",
    "StType",
    "TpmAlg",
    "digest_size",
    "hash_bytes",
    "hash_of",
    "parse_attest",
    "parse_public",
    "parse_signature",
    "pcrs_from_bitmap",
    "public_from_pem",
    "qualified_name",
    "require_ak",
]

# "\xffTCG" (Part 2 §6.2): a restricted key signs only TPM-built structures that start with it.
TPM_GENERATED_VALUE = 0xFF544347
_MAX_NAME = 2 + MAX_DIGEST  # sizeof(TPMU_NAME): nameAlg + the largest digest (Part 2 §10.5.1)
_MAX_DATA = 2 + MAX_DIGEST  # TPM2B_DATA holds at most sizeof(TPMT_HA) (Part 2 §10.4.3)
_MAX_NV_BUFFER = 2048  # MAX_NV_BUFFER_SIZE as the TSS defines it (TPM2_MAX_NV_BUFFER_SIZE)
_MAX_BANKS = 16  # HASH_COUNT bound the TSS uses for TPML_PCR_SELECTION (TPM2_NUM_PCR_BANKS)
_MAX_SELECT = 4  # PCR_SELECT_MAX in the TSS: 32 PCRs; PC Client TPMs use 3 (24 PCRs)
_MAX_ECC_BYTES = 66  # P-521, the largest curve we accept (TPM2B_ECC_PARAMETER)


@dataclass(frozen=True)
class PcrSelection:
    """One TPMS_PCR_SELECTION: a bank and its selected PCR indices, ascending."""

    hash_alg: TpmAlg
    pcrs: tuple[int, ...]


@dataclass(frozen=True)
class ClockInfo:
    """TPMS_CLOCK_INFO (Part 2 §10.11.1).

    ``clock`` is in milliseconds; ``reset_count``/``restart_count`` (and the attest's
    ``firmware_version``) are obfuscated per key unless the signing key is in the endorsement or
    platform hierarchy, so compare them only between quotes of the same AK.
    """

    clock: int
    reset_count: int
    restart_count: int
    safe: bool


@dataclass(frozen=True)
class Attest:
    """A parsed TPMS_ATTEST; ``raw`` holds the exact bytes that were signed.

    For a quote, ``pcr_select`` and ``pcr_digest`` carry the TPMS_QUOTE_INFO and ``attested`` is
    empty. Other attestation types are parsed just as strictly; their TPMU_ATTEST members are kept
    in ``attested`` in the spec's field order (see ``_ATTESTED``), and the quote fields are empty.
    """

    raw: bytes
    type: StType
    qualified_signer: bytes
    extra_data: bytes
    clock_info: ClockInfo
    firmware_version: int
    pcr_select: tuple[PcrSelection, ...]
    pcr_digest: bytes
    attested: tuple[int | bytes, ...] = field(default=())


_STTYPES = {int(t): t for t in StType}
# TPMU_ATTEST members other than the quote (Part 2 §10.12), as field kinds in wire order:
#   CERTIFY  TPMS_CERTIFY_INFO:         name TPM2B_NAME | qualifiedName TPM2B_NAME
#   CREATION TPMS_CREATION_INFO:        objectName TPM2B_NAME | creationHash TPM2B_DIGEST
#   TIME     TPMS_TIME_ATTEST_INFO:     time TPMS_TIME_INFO {time u64, clockInfo (u64 u32 u32 u8)}
#                                       | firmwareVersion u64
#   NV       TPMS_NV_CERTIFY_INFO:      indexName TPM2B_NAME | offset u16
#                                       | nvContents TPM2B_MAX_NV_BUFFER
#   COMMAND_AUDIT TPMS_COMMAND_AUDIT_INFO: auditCounter u64 | digestAlg u16
#                                       | auditDigest TPM2B_DIGEST | commandDigest TPM2B_DIGEST
#   SESSION_AUDIT TPMS_SESSION_AUDIT_INFO: exclusiveSession TPMI_YES_NO | sessionDigest TPM2B_DIGEST
_ATTESTED: dict[StType, tuple[str, ...]] = {
    StType.ATTEST_CERTIFY: ("name", "name"),
    StType.ATTEST_CREATION: ("name", "digest"),
    StType.ATTEST_TIME: ("u64", "u64", "u32", "u32", "yes_no", "u64"),
    StType.ATTEST_NV: ("name", "u16", "nv_buffer"),
    StType.ATTEST_COMMAND_AUDIT: ("u64", "u16", "digest", "digest"),
    StType.ATTEST_SESSION_AUDIT: ("yes_no", "digest"),
}


# TPMS_ATTEST (Part 2 §10.12.12), the signed body of every TPM attestation:
#   magic u32 = TPM_GENERATED_VALUE 0xFF544347 | type u16 (TPMI_ST_ATTEST)
#   qualifiedSigner TPM2B_NAME (≤ 66) | extraData TPM2B_DATA (≤ 66)
#   clockInfo TPMS_CLOCK_INFO {clock u64, resetCount u32, restartCount u32, safe u8 (TPMI_YES_NO)}
#   firmwareVersion u64 | attested TPMU_ATTEST[type]
# TPMS_QUOTE_INFO (§10.12.3): pcrSelect TPML_PCR_SELECTION | pcrDigest TPM2B_DIGEST (≤ 64)
# TPML_PCR_SELECTION (§10.9.7): count u32 (≤ 16) | TPMS_PCR_SELECTION[count]
# TPMS_PCR_SELECTION (§10.6.2): hash u16 | sizeofSelect u8 (≤ 4) | pcrSelect[sizeofSelect]
#                               (byte i, bit j selects PCR 8i+j)
# The fixed runs between the sized fields are read with one precompiled struct each (a verifier
# parses a quote per appraisal); the variable tails of other types go through the Reader.
_HEAD = struct.Struct(">IH")  # magic | type
_U16 = struct.Struct(">H")
_CLOCK_FIRMWARE = struct.Struct(">QIIBQ")  # clockInfo {clock, resets, restarts, safe} | firmware
_U32 = struct.Struct(">I")
_SELECT_HEAD = struct.Struct(">HB")  # TPMS_PCR_SELECTION hash | sizeofSelect
_WHAT = "TPMS_ATTEST"
_QUOTE = StType.ATTEST_QUOTE  # an Enum class attribute lookup is a metaclass call: look it up once


def _truncated(field: str, pos: int, need: int) -> DecodeError:
    return DecodeError(f"{_WHAT}: {field} truncated at offset {pos} (needs {need} bytes)")


def _sized(data: bytes, pos: int, limit: int, field: str) -> tuple[bytes, int]:
    """A TPM2B at ``pos``: (its bytes, the position after it); bounded by ``limit``."""
    if pos + 2 > len(data):
        raise _truncated(field, pos, 2)
    (size,) = _U16.unpack_from(data, pos)
    if size > limit:
        raise DecodeError(f"{_WHAT}: {field} size {size} exceeds the maximum {limit}")
    end = pos + 2 + size
    if end > len(data):
        raise _truncated(field, pos + 2, size)
    return data[pos + 2 : end], end


def parse_attest(data: bytes) -> Attest:
    """Parse a TPMS_ATTEST (the bytes a TPM signs; a TPM2B_ATTEST without its size).

    Checks the magic and that the type is a TPMI_ST_ATTEST (``UnsupportedError`` for other
    tags); parses every TPMU_ATTEST member strictly. PCR banks must be distinct and supported.
    """
    if len(data) < _HEAD.size:
        return _parse_attest_reader(data)  # names the truncated field
    magic, raw_type = _HEAD.unpack_from(data)
    if magic != TPM_GENERATED_VALUE:
        raise DecodeError(f"{_WHAT}: magic 0x{magic:08x} is not TPM_GENERATED_VALUE 0xff544347")
    st_type = _STTYPES.get(raw_type)
    if st_type is None:
        raise UnsupportedError(f"{_WHAT}: type 0x{raw_type:04x} is not supported")
    qualified_signer, pos = _sized(data, 6, _MAX_NAME, "qualifiedSigner")
    extra_data, pos = _sized(data, pos, _MAX_DATA, "extraData")
    if pos + _CLOCK_FIRMWARE.size > len(data):
        return _parse_attest_reader(data)  # names the truncated field
    clock, resets, restarts, safe, firmware_version = _CLOCK_FIRMWARE.unpack_from(data, pos)
    if safe > 1:
        raise DecodeError(f"{_WHAT}: safe is {safe}, not a TPMI_YES_NO (0 or 1)")
    pos += _CLOCK_FIRMWARE.size
    pcr_select: tuple[PcrSelection, ...] = ()
    pcr_digest = b""
    attested: tuple[int | bytes, ...] = ()
    if st_type is _QUOTE:
        pcr_select, pos = _pcr_selection_list(data, pos)
        pcr_digest, pos = _sized(data, pos, MAX_DIGEST, "pcrDigest")
        if pos != len(data):
            raise DecodeError(f"{_WHAT}: {len(data) - pos} trailing bytes after offset {pos}")
    else:
        r = Reader(data, _WHAT, pos)
        attested = tuple(_read_kind(r, kind) for kind in _ATTESTED[st_type])
        r.end()
    clock_info = ClockInfo(clock, resets, restarts, safe == 1)
    return Attest(data, st_type, qualified_signer, extra_data, clock_info, firmware_version,
                  pcr_select, pcr_digest, attested)  # fmt: skip


def _parse_attest_reader(data: bytes) -> Attest:
    """The field-by-field reading of the header, used only to name where short input ends."""
    r = Reader(data, _WHAT)
    magic = r.u32("magic")
    if magic != TPM_GENERATED_VALUE:
        raise r.fail(f"magic 0x{magic:08x} is not TPM_GENERATED_VALUE 0xff544347")
    raw_type = r.u16("type")
    if raw_type not in _STTYPES:
        raise UnsupportedError(f"{_WHAT}: type 0x{raw_type:04x} is not supported")
    r.tpm2b("qualifiedSigner", _MAX_NAME)
    r.tpm2b("extraData", _MAX_DATA)
    _clock_info(r)
    r.u64("firmwareVersion")
    raise RuntimeError("_parse_attest_reader is only called on input too short to parse")


def _clock_info(r: Reader) -> ClockInfo:
    return ClockInfo(r.u64("clock"), r.u32("resetCount"), r.u32("restartCount"), r.yes_no("safe"))


def _read_kind(r: Reader, kind: str) -> int | bytes:
    if kind == "name":
        return r.tpm2b("TPM2B_NAME", _MAX_NAME)
    if kind == "digest":
        return r.tpm2b("TPM2B_DIGEST", MAX_DIGEST)
    if kind == "nv_buffer":
        return r.tpm2b("nvContents", _MAX_NV_BUFFER)
    if kind == "yes_no":
        return r.yes_no("TPMI_YES_NO")
    if kind == "u16":
        return r.u16("u16")
    if kind == "u32":
        return r.u32("u32")
    return r.u64("u64")


def _pcr_selection_list(data: bytes, pos: int) -> tuple[tuple[PcrSelection, ...], int]:
    if pos + 4 > len(data):
        raise _truncated("pcrSelect.count", pos, 4)
    (count,) = _U32.unpack_from(data, pos)
    if count > _MAX_BANKS:
        raise DecodeError(f"{_WHAT}: pcrSelect.count {count} exceeds {_MAX_BANKS}")
    pos += 4
    selections = []
    seen: set[TpmAlg] = set()
    for _ in range(count):
        if pos + 3 > len(data):
            return _pcr_selection_reader(data, pos), pos  # names the truncated field
        alg_id, size = _SELECT_HEAD.unpack_from(data, pos)
        bank = alg_or_unsupported(alg_id, f"{_WHAT} pcrSelect.hash")
        digest_size(bank)  # a bank whose hash we cannot compute is unusable: refuse it here
        if size > _MAX_SELECT:
            raise DecodeError(f"{_WHAT}: sizeofSelect {size} exceeds {_MAX_SELECT}")
        if bank in seen:
            raise DecodeError(f"{_WHAT}: PCR bank {bank.name} is selected twice")
        seen.add(bank)
        pos += 3
        if pos + size > len(data):
            raise _truncated("pcrSelect", pos, size)
        selections.append(_selection(bank, bytes(data[pos : pos + size])))
        pos += size
    return tuple(selections), pos


def _pcr_selection_reader(data: bytes, pos: int) -> tuple[PcrSelection, ...]:
    r = Reader(data, _WHAT, pos)
    digest_size(r.alg("pcrSelect.hash"))
    r.u8("sizeofSelect")
    raise RuntimeError("_pcr_selection_reader is only called on input too short to parse")


@functools.lru_cache(maxsize=256)
def _selection(bank: TpmAlg, bitmap: bytes) -> PcrSelection:
    # Immutable and drawn from a handful of (bank, bitmap) pairs: built once each.
    return PcrSelection(bank, pcrs_from_bitmap(bitmap))


@dataclass(frozen=True)
class Signature:
    """A parsed TPMT_SIGNATURE; ``raw`` holds the received bytes.

    ``signature`` is what ``cryptography`` verifies: the RSA signature for RSASSA/RSAPSS, the DER
    SEQUENCE{r, s} built from the TPM's r and s for ECDSA (``r``/``s`` are then set, else None).
    """

    raw: bytes
    sig_alg: TpmAlg
    hash_alg: TpmAlg
    signature: bytes
    r: int | None = None
    s: int | None = None


_SIG_HASHES = frozenset({TpmAlg.SHA1, TpmAlg.SHA256, TpmAlg.SHA384, TpmAlg.SHA512})


# TPMT_SIGNATURE (Part 2 §11.3.4): sigAlg u16 | signature TPMU_SIGNATURE[sigAlg]
#   RSASSA 0x0014, RSAPSS 0x0016: TPMS_SIGNATURE_RSA {hash u16, sig TPM2B_PUBLIC_KEY_RSA (≤ 512)}
#   ECDSA 0x0018: TPMS_SIGNATURE_ECC {hash u16, signatureR TPM2B_ECC_PARAMETER,
#                                     signatureS TPM2B_ECC_PARAMETER}   (each ≤ 66 here)
def parse_signature(data: bytes) -> Signature:
    """Parse a TPMT_SIGNATURE (tpm2-tools' "tss" signature format).

    RSASSA, RSAPSS and ECDSA with SHA-1/SHA-2 are supported; other schemes (HMAC, ECDAA, SM2,
    ECSCHNORR, NULL) and hashes raise ``UnsupportedError``. r and s are read as unsigned
    integers: a TPM may return them shorter than the curve size.
    """
    # sigAlg, hash and the first size (RSA sig, ECDSA r) in one read; the Reader below names
    # the field of anything that does not fit these bounds exactly.
    if len(data) >= _SIG_HEAD.size:
        sig_alg, hash_id, size = _SIG_HEAD.unpack_from(data)
        hash_alg = _SIG_HASH_IDS.get(hash_id)
        end = 6 + size
        if hash_alg is None:
            pass
        elif sig_alg == _ECDSA and size <= _MAX_ECC_BYTES and end + 2 <= len(data):
            (s_size,) = _U16.unpack_from(data, end)
            if s_size <= _MAX_ECC_BYTES and end + 2 + s_size == len(data):
                sig_r = int.from_bytes(data[6:end], "big")
                sig_s = int.from_bytes(data[end + 2 :], "big")
                der = encode_dss_signature(sig_r, sig_s)
                return Signature(data, _ECDSA, hash_alg, der, sig_r, sig_s)
        elif sig_alg in _RSA_SIG_ALGS and 0 < size <= MAX_RSA_BYTES and end == len(data):
            return Signature(data, _RSA_SIG_ALGS[sig_alg], hash_alg, bytes(data[6:]))
    return _parse_signature_reader(data)


_SIG_HEAD = struct.Struct(">HHH")
_ECDSA = TpmAlg.ECDSA
_SIG_HASH_IDS = {int(alg): alg for alg in _SIG_HASHES}
_RSA_SIG_ALGS = {int(TpmAlg.RSASSA): TpmAlg.RSASSA, int(TpmAlg.RSAPSS): TpmAlg.RSAPSS}


def _parse_signature_reader(data: bytes) -> Signature:
    """Field by field, each bound checked and named: what ``parse_signature`` falls back to."""
    r = Reader(data, "TPMT_SIGNATURE")
    sig_alg = r.alg("sigAlg")
    if sig_alg not in (TpmAlg.RSASSA, TpmAlg.RSAPSS, TpmAlg.ECDSA):
        raise UnsupportedError(f"TPMT_SIGNATURE: sigAlg {sig_alg.name} is not supported")
    hash_alg = r.alg("hash")
    if hash_alg not in _SIG_HASHES:
        raise UnsupportedError(f"TPMT_SIGNATURE: hash {hash_alg.name} is not supported")
    if sig_alg is TpmAlg.ECDSA:
        sig_r = int.from_bytes(r.tpm2b("signatureR", _MAX_ECC_BYTES), "big")
        sig_s = int.from_bytes(r.tpm2b("signatureS", _MAX_ECC_BYTES), "big")
        r.end()
        der = encode_dss_signature(sig_r, sig_s)
        return Signature(data, sig_alg, hash_alg, der, sig_r, sig_s)
    sig = r.tpm2b("sig", MAX_RSA_BYTES)
    if not sig:
        raise DecodeError("TPMT_SIGNATURE: empty RSA signature")
    r.end()
    return Signature(data, sig_alg, hash_alg, sig)
