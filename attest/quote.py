"""TPM2_Quote verification: signature, type, freshness, PCR binding, clock (notes §2, §5).

``verify_quote`` checks, in this order: the signature scheme fits the AK and the algorithm policy;
the signature over the exact TPMS_ATTEST bytes; magic and type (a validly signed non-quote is
refused); the nonce; the supplied PCR values against the *signed* selection and pcrDigest; the
clock against the previous quote from the same AK. It returns the verified quote or raises:
``UnsupportedError`` for refused algorithms (SHA-1 by default), ``VerificationError`` for a bad
signature, key or PCR binding, ``FreshnessError`` for a wrong nonce or clock.
"""

from __future__ import annotations

import functools
import hmac
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from ._tpm_wire import pcrs_from_bitmap
from .errors import DecodeError, FreshnessError, UnsupportedError, VerificationError
from .tpm import (
    TPM_GENERATED_VALUE,
    AkKey,
    Attest,
    ClockInfo,
    PublicKey,
    Signature,
    StType,
    TpmAlg,
    digest_size,
    hash_bytes,
    parse_attest,
    parse_signature,
    require_ak,
)

__all__ = [
    "PcrValues",
    "VerifiedQuote",
    "parse_pcr_file",
    "pcr_values_from_mapping",
    "rebooted_since",
    "verify_attest_signature",
    "verify_quote",
]

_MAX_PCR = 31  # 4 pcrSelect bytes (the TSS's PCR_SELECT_MAX) address PCRs 0..31
_BANK_NAMES = {
    "sha1": TpmAlg.SHA1,
    "sha256": TpmAlg.SHA256,
    "sha384": TpmAlg.SHA384,
    "sha512": TpmAlg.SHA512,
}
_BANK_IDS = {int(bank): bank for bank in _BANK_NAMES.values()}
_CRYPTO_HASHES: dict[TpmAlg, type[hashes.HashAlgorithm]] = {
    TpmAlg.SHA1: hashes.SHA1,
    TpmAlg.SHA256: hashes.SHA256,
    TpmAlg.SHA384: hashes.SHA384,
    TpmAlg.SHA512: hashes.SHA512,
}
# The verify arguments per signature hash, built once (they are immutable parameter objects).
# PSS salt: FIPS TPMs use the digest length, older ones the maximum; AUTO reads it from the
# signature.
_ECDSA_VERIFY = {alg: ec.ECDSA(Prehashed(h())) for alg, h in _CRYPTO_HASHES.items()}
# Enum members as module constants: a class attribute lookup on an Enum costs a metaclass call.
_SHA1, _NULL, _ECDSA, _RSASSA = TpmAlg.SHA1, TpmAlg.NULL, TpmAlg.ECDSA, TpmAlg.RSASSA
_QUOTE = int(StType.ATTEST_QUOTE)
_HEAD = struct.Struct(">IH")
_PKCS1: dict[TpmAlg, tuple[padding.AsymmetricPadding, Prehashed]] = {
    alg: (padding.PKCS1v15(), Prehashed(h())) for alg, h in _CRYPTO_HASHES.items()
}
_PSS: dict[TpmAlg, tuple[padding.AsymmetricPadding, Prehashed]] = {
    alg: (padding.PSS(padding.MGF1(h()), padding.PSS.AUTO), Prehashed(h()))
    for alg, h in _CRYPTO_HASHES.items()
}


@dataclass(frozen=True)
class PcrValues:
    """PCR values claimed alongside a quote: bank → PCR index → digest (read-only mappings).

    Construction checks that every bank is a supported hash, every index is 0..31 and every
    value has the bank's digest length (``DecodeError`` otherwise).
    """

    banks: Mapping[TpmAlg, Mapping[int, bytes]]

    def __post_init__(self) -> None:
        frozen: dict[TpmAlg, Mapping[int, bytes]] = {}
        for bank, values in self.banks.items():
            size = digest_size(bank)
            for index, value in values.items():
                if not 0 <= index <= _MAX_PCR:
                    raise DecodeError(f"PCR index {index} is outside 0..{_MAX_PCR}")
                if len(value) != size:
                    raise DecodeError(f"{bank.name} PCR {index} is {len(value)} bytes, not {size}")
            frozen[bank] = MappingProxyType(dict(sorted(values.items())))
        object.__setattr__(self, "banks", MappingProxyType(frozen))


# tpm2-tools' `tpm2_quote -o` / `tpm2_pcrread -o` file: C structs as they sit in the memory of the
# (little-endian) host that wrote them, not TPM marshalling (vectors/attest/README.md):
#   TPML_PCR_SELECTION  count u32le (≤ 16)
#                       slot[16] {hash u16le, sizeofSelect u8 (≤ 4), pcrSelect[4], pad u8}
#   n u32le (≤ 64)      TPML_DIGEST[n] {count u32le (≤ 8), digest[8] {size u16le (≤ 64), buf[64]}}
# 132 + 4 + 532 n bytes in all. The values are the selected PCRs in selection order (bank by bank,
# ascending index), split across the TPML_DIGESTs. Slots past count, padding and unused buffer
# bytes are whatever the writer's memory held, so they are not checked.
_SLOTS = 16
_SELECTION = struct.Struct("<HB4sx")
_LIST = 132
_DIGEST_LIST = 4 + 8 * 66
_MAX_LISTS = 64  # 16 banks x 32 PCRs / 8 digests per list


def parse_pcr_file(data: bytes) -> PcrValues:
    """Parse a tpm2-tools PCR output file (``tpm2_quote -o``) into claimed PCR values.

    Memoised by the exact bytes (a device in one boot state sends the same file with every
    quote; the values are claims, checked against each quote's signed pcrDigest all the same).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"PCR file: expected bytes, got {type(data).__name__}")
    return _parse_pcr_file(bytes(data))


@functools.lru_cache(maxsize=256)
def _parse_pcr_file(data: bytes) -> PcrValues:
    if len(data) < _LIST + 4:
        raise DecodeError(f"PCR file: {len(data)} bytes is shorter than its header")
    (count,) = struct.unpack_from("<I", data)
    (lists,) = struct.unpack_from("<I", data, _LIST)
    if count > _SLOTS:
        raise DecodeError(f"PCR file: selection count {count} exceeds {_SLOTS}")
    if lists > _MAX_LISTS or len(data) != _LIST + 4 + lists * _DIGEST_LIST:
        raise DecodeError(f"PCR file: {len(data)} bytes do not hold {lists} digest lists")
    selection: list[tuple[TpmAlg, int]] = []
    seen: set[TpmAlg] = set()
    for slot in range(count):
        alg_id, size, bitmap = _SELECTION.unpack_from(data, 4 + 8 * slot)
        bank = _BANK_IDS.get(alg_id)
        if bank is None:
            raise UnsupportedError(f"PCR file: bank 0x{alg_id:04x} is not supported")
        if size > len(bitmap) or bank in seen:
            raise DecodeError(f"PCR file: bad selection for bank {bank.name}")
        seen.add(bank)
        selection.extend((bank, pcr) for pcr in pcrs_from_bitmap(bitmap[:size]))
    digests: list[bytes] = []
    for i in range(lists):
        base = _LIST + 4 + i * _DIGEST_LIST
        (n,) = struct.unpack_from("<I", data, base)
        if n > 8:
            raise DecodeError(f"PCR file: digest list {i} claims {n} digests (at most 8)")
        for j in range(n):
            (size,) = struct.unpack_from("<H", data, base + 4 + 66 * j)
            if size > 64:
                raise DecodeError(f"PCR file: digest size {size} exceeds 64")
            digests.append(data[base + 6 + 66 * j : base + 6 + 66 * j + size])
    if len(digests) != len(selection):
        raise DecodeError(f"PCR file: {len(digests)} values for {len(selection)} selected PCRs")
    banks: dict[TpmAlg, dict[int, bytes]] = {bank: {} for bank in seen}
    for (bank, pcr), value in zip(selection, digests, strict=True):
        banks[bank][pcr] = value
    return PcrValues(banks)


_INDEX = re.compile(r"0|[1-9][0-9]?")
_HEX = re.compile(r"[0-9a-fA-F]*")


def pcr_values_from_mapping(obj: Mapping[str, Mapping[str, str]]) -> PcrValues:
    """Claimed PCR values from JSON-like data: ``{"sha256": {"16": "<hex>"}, "sha1": {...}}``.

    Strict: bank names sha1/sha256/sha384/sha512, decimal indices without sign or leading zeros,
    hex values of exactly the bank's digest length; anything else is a ``DecodeError``.
    """
    if not isinstance(obj, Mapping):
        raise DecodeError("PCR values: expected an object of banks")
    banks: dict[TpmAlg, dict[int, bytes]] = {}
    for name, values in obj.items():
        bank = _BANK_NAMES.get(name) if isinstance(name, str) else None
        if bank is None:
            raise DecodeError(f"PCR values: unknown bank {name!r}")
        if not isinstance(values, Mapping):
            raise DecodeError(f"PCR values: bank {name} is not an object")
        banks[bank] = {}
        for index, value in values.items():
            if not isinstance(index, str) or not _INDEX.fullmatch(index):
                raise DecodeError(f"PCR values: {name} index {index!r} is not a PCR number")
            if not isinstance(value, str) or not _HEX.fullmatch(value):
                raise DecodeError(f"PCR values: {name} PCR {index} is not a hex string")
            banks[bank][int(index)] = bytes.fromhex(value)
    return PcrValues(banks)


@dataclass(frozen=True)
class VerifiedQuote:
    """A quote that passed ``verify_quote``.

    ``pcrs`` holds exactly the PCRs of the signed selection, with their verified values (empty
    when ``verify_quote`` was given no PCR values: then only ``attest.pcr_digest`` binds them).
    """

    attest: Attest
    pcrs: Mapping[TpmAlg, Mapping[int, bytes]]
    signature: Signature | None = field(default=None, compare=False)


def verify_attest_signature(
    attest: bytes, signature: bytes, ak: PublicKey | AkKey, *, allow_sha1: bool = False
) -> Signature:
    """Verify a TPMT_SIGNATURE over the exact TPMS_ATTEST bytes with the AK; return it parsed.

    The scheme must fit the key type (RSA: RSASSA or RSAPSS; ECC: ECDSA) and, when the AK pins a
    scheme, equal it and its hash; SHA-1 is refused unless ``allow_sha1``. A ``PublicKey`` must
    pass ``require_ak`` first: the magic proves TPM origin only under a restricted key (§2.1).
    """
    if isinstance(ak, PublicKey):
        require_ak(ak)
    sig = parse_signature(signature)
    key = ak.key
    sig_alg, hash_alg, scheme = sig.sig_alg, sig.hash_alg, ak.scheme
    if isinstance(key, rsa.RSAPublicKey) == (sig_alg is _ECDSA):
        kind = "an RSA" if isinstance(key, rsa.RSAPublicKey) else "an ECC"
        raise VerificationError(f"a {sig_alg.name} signature does not fit {kind} AK")
    if (
        scheme is not None
        and scheme is not _NULL
        and (sig_alg is not scheme or ak.scheme_hash not in (None, hash_alg))
    ):
        pinned = f"{scheme.name}/{ak.scheme_hash.name if ak.scheme_hash else '?'}"
        raise VerificationError(
            f"signature scheme {sig_alg.name}/{hash_alg.name} is not the AK's {pinned}"
        )
    if hash_alg is _SHA1 and not allow_sha1:
        raise UnsupportedError("SHA-1 signatures are refused by policy (allow_sha1 is off)")
    # The TPM signs H_sig(TPMS_ATTEST) (Part 3 §18.2): verify the prehashed digest of the raw bytes.
    digest = hash_bytes(hash_alg, attest)
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(sig.signature, digest, *(_PKCS1 if sig_alg is _RSASSA else _PSS)[hash_alg])
        else:
            key.verify(sig.signature, digest, _ECDSA_VERIFY[hash_alg])
    except InvalidSignature:
        raise VerificationError("the quote signature does not verify with the AK") from None
    return sig


def verify_quote(
    attest: bytes,
    signature: bytes,
    ak: PublicKey | AkKey,
    *,
    nonce: bytes,
    pcrs: PcrValues | None,
    previous: ClockInfo | None = None,
    allow_sha1: bool = False,
) -> VerifiedQuote:
    """Verify a TPM2_Quote (TPMS_ATTEST + TPMT_SIGNATURE) against an AK and the issued nonce.

    ``nonce`` is compared byte-exactly with extraData; an empty nonce on either side is a
    ``FreshnessError``. ``pcrs`` must cover exactly the signed selection (every selected PCR
    supplied, nothing else) and hash to pcrDigest with the signature's hash; None skips the
    values. ``previous`` is the clock of the last accepted quote from the same AK: counters must
    not go back, and the clock must grow unless a reset or restart happened in between (a clear
    ``safe`` flag is reported in the result, not refused). SHA-1 signatures and SHA-1 banks are
    refused unless ``allow_sha1``.
    """
    sig = verify_attest_signature(attest, signature, ak, allow_sha1=allow_sha1)
    # Signed, so magic and type decide what the TPM attested: refuse any other structure.
    magic, st_type = _HEAD.unpack_from(attest) if len(attest) >= 6 else (0, 0)
    if magic != TPM_GENERATED_VALUE:
        raise VerificationError("the signed data is not a TPM-generated structure (bad magic)")
    if st_type != _QUOTE:
        raise VerificationError(f"the signed structure is type 0x{st_type:04x}, not a quote")
    parsed = parse_attest(attest)
    if not allow_sha1:
        for selection in parsed.pcr_select:
            if selection.hash_alg is _SHA1:
                raise UnsupportedError("the quote selects a SHA-1 PCR bank (refused by policy)")
    _check_nonce(nonce, parsed.extra_data)
    verified = {} if pcrs is None else _check_pcrs(parsed, pcrs, sig.hash_alg)
    _check_clock(parsed.clock_info, previous)
    return VerifiedQuote(parsed, MappingProxyType(verified), sig)


def rebooted_since(previous: ClockInfo, current: ClockInfo) -> bool:
    """Whether the TPM was reset (the device rebooted) between two quotes of the same AK.

    resetCount grows on every TPM Reset (notes §2.4): a value above the one recorded before an
    update proves the device rebooted after it.
    """
    return current.reset_count > previous.reset_count


def _check_nonce(expected: bytes, actual: bytes) -> None:
    if not expected:
        raise FreshnessError("no nonce was issued: a quote cannot be fresh without one")
    if not actual:
        raise FreshnessError("the quote carries no nonce (empty extraData)")
    if not hmac.compare_digest(expected, actual):
        raise FreshnessError("the quote's extraData is not the issued nonce")


def _check_pcrs(
    attest: Attest, pcrs: PcrValues, sig_hash: TpmAlg
) -> dict[TpmAlg, Mapping[int, bytes]]:
    # Indices come from the signed pcrSelect only (notes §2.3): a supplied PCR outside it, or a
    # selected PCR not supplied, is refused even if the values happen to hash to pcrDigest.
    banks, select = pcrs.banks, attest.pcr_select
    # PcrValues keeps each bank's indices ascending, as pcrSelect lists them, so the supplied
    # indices equal the signed ones exactly when the key tuples are equal.
    exact = True
    selected = set()
    for s in select:
        selected.add(s.hash_alg)
        values = banks.get(s.hash_alg)
        if (tuple(values) if values else ()) != s.pcrs:
            exact = False
    for bank, values in banks.items():
        if values and bank not in selected:
            exact = False
    if not exact:
        signed = {(s.hash_alg, pcr) for s in select for pcr in s.pcrs}
        supplied = {(bank, pcr) for bank, values in banks.items() for pcr in values}
        if missing := sorted(signed - supplied):
            raise VerificationError(f"quoted PCRs not supplied: {_pcr_list(missing)}")
        if extra := sorted(supplied - signed):
            raise VerificationError(f"PCRs supplied but not quoted: {_pcr_list(extra)}")
    # pcrDigest = H_sig(values in TPML order, ascending index per bank) (Part 3 §18.4).
    verified: dict[TpmAlg, Mapping[int, bytes]] = {}
    ordered: list[bytes] = []
    for s in select:
        if s.pcrs:
            verified[s.hash_alg] = values = banks[s.hash_alg]
            ordered.extend(values.values())
    if not hmac.compare_digest(hash_bytes(sig_hash, b"".join(ordered)), attest.pcr_digest):
        raise VerificationError("the PCR values do not match the quote's pcrDigest")
    return verified


def _pcr_list(items: list[tuple[TpmAlg, int]]) -> str:
    return ", ".join(f"{bank.name.lower()}:{pcr}" for bank, pcr in items)


def _check_clock(current: ClockInfo, previous: ClockInfo | None) -> None:
    # Part 1 §36.6: Clock never goes back while safe is set; resetCount grows on TPM Reset and
    # zeroes restartCount; restartCount grows on Restart/Resume. A clear ``safe`` follows an
    # unorderly shutdown (power loss): the clock may repeat values, but that shutdown also
    # makes the next start a Reset, so the counters below still order the quotes, and the
    # nonce, not the clock, is what proves freshness. It is therefore not refused here.
    if previous is None:
        return
    if current.reset_count < previous.reset_count:
        raise FreshnessError(
            f"resetCount went back from {previous.reset_count} to {current.reset_count}"
        )
    if current.reset_count > previous.reset_count:
        return
    if current.restart_count < previous.restart_count:
        raise FreshnessError(
            f"restartCount went back from {previous.restart_count} to {current.restart_count}"
        )
    if current.restart_count == previous.restart_count and current.clock <= previous.clock:
        raise FreshnessError(
            f"clock did not advance ({previous.clock} → {current.clock} ms): a replayed quote"
        )
