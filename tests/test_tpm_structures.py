"""TPM structure parsers: round trips through an independent marshaller (tpm2-pytss), strictness
cases, and fuzzing (arbitrary or mutated bytes raise only ``DecodeError``)."""

from __future__ import annotations

import contextlib
import struct
from functools import cache
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st
from tpm2_pytss import types as tss
from tpm2_pytss.constants import TPM2_ALG, TPM2_GENERATED, TPM2_ST

from attest.errors import DecodeError, UnsupportedError
from attest.quote import PcrValues, parse_pcr_file, pcr_values_from_mapping
from attest.tpm import (
    ClockInfo,
    PcrSelection,
    StType,
    TpmAlg,
    parse_attest,
    parse_public,
    parse_signature,
    public_from_pem,
)

BANKS = [TpmAlg.SHA1, TpmAlg.SHA256, TpmAlg.SHA384, TpmAlg.SHA512]
SIZES = {TpmAlg.SHA1: 20, TpmAlg.SHA256: 32, TpmAlg.SHA384: 48, TpmAlg.SHA512: 64}
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
hash_algs = st.sampled_from(BANKS)


# TPMS_ATTEST


@st.composite
def _selections(draw: st.DrawFn) -> list[tuple[TpmAlg, bytes]]:
    chosen = draw(st.lists(hash_algs, unique=True, max_size=4))
    return [(bank, draw(st.binary(min_size=3, max_size=4))) for bank in chosen]


@st.composite
def _attests(draw: st.DrawFn) -> tuple[tss.TPMS_ATTEST, dict[str, Any]]:
    """A TPMS_ATTEST built by tpm2-pytss and the fields our parser must return."""
    st_type = draw(st.sampled_from(list(StType)))
    clock = ClockInfo(draw(u64), draw(u32), draw(u32), draw(st.booleans()))
    names, digest = st.binary(max_size=66), st.binary(max_size=64)  # TPM2B_NAME, TPM2B_DIGEST
    fields: dict[str, Any] = {
        "type": st_type,
        "qualified_signer": draw(names),
        "extra_data": draw(st.binary(max_size=66)),
        "clock_info": clock,
        "firmware_version": draw(u64),
        "pcr_select": (),
        "pcr_digest": b"",
        "attested": (),
    }
    union: tss.TPMU_ATTEST
    if st_type is StType.ATTEST_QUOTE:
        sels = draw(_selections())
        fields["pcr_digest"] = draw(digest)
        fields["pcr_select"] = tuple(PcrSelection(b, _indices(m)) for b, m in sels)
        pcr_list = tss.TPML_PCR_SELECTION(
            [tss.TPMS_PCR_SELECTION(hash=b, sizeofSelect=len(m), pcrSelect=m) for b, m in sels]
        )
        info: Any = tss.TPMS_QUOTE_INFO(pcrSelect=pcr_list, pcrDigest=fields["pcr_digest"])
        union = tss.TPMU_ATTEST(quote=info)
    elif st_type is StType.ATTEST_TIME:
        inner = ClockInfo(draw(u64), draw(u32), draw(u32), draw(st.booleans()))
        time, firmware = draw(u64), draw(u64)
        fields["attested"] = (time, *vars(inner).values(), firmware)
        info = tss.TPMS_TIME_INFO(time=time, clockInfo=_clock(inner))
        union = tss.TPMU_ATTEST(time=tss.TPMS_TIME_ATTEST_INFO(time=info, firmwareVersion=firmware))
    else:
        # The other TPMU_ATTEST members: (union member, structure, [(field, strategy)]).
        table: dict[StType, tuple[str, Any, list[tuple[str, st.SearchStrategy[Any]]]]] = {
            StType.ATTEST_CERTIFY: ("certify", tss.TPMS_CERTIFY_INFO,
                                   [("name", names), ("qualifiedName", names)]),
            StType.ATTEST_CREATION: ("creation", tss.TPMS_CREATION_INFO,
                                     [("objectName", names), ("creationHash", digest)]),
            StType.ATTEST_NV: ("nv", tss.TPMS_NV_CERTIFY_INFO,
                               [("indexName", names), ("offset", st.integers(0, 0xFFFF)),
                                ("nvContents", st.binary(max_size=2048))]),
            StType.ATTEST_COMMAND_AUDIT: ("commandAudit", tss.TPMS_COMMAND_AUDIT_INFO,
                                          [("auditCounter", u64), ("digestAlg", hash_algs),
                                           ("auditDigest", digest), ("commandDigest", digest)]),
            StType.ATTEST_SESSION_AUDIT: ("sessionAudit", tss.TPMS_SESSION_AUDIT_INFO,
                                          [("exclusiveSession", st.booleans()),
                                           ("sessionDigest", digest)]),
        }  # fmt: skip
        member, cls, spec = table[st_type]
        values = {name: draw(strategy) for name, strategy in spec}
        fields["attested"] = tuple(values.values())
        union = tss.TPMU_ATTEST(**{member: cls(**values)})
    attest = tss.TPMS_ATTEST(
        magic=TPM2_GENERATED.VALUE,
        type=TPM2_ST(int(st_type)),
        qualifiedSigner=fields["qualified_signer"],
        extraData=fields["extra_data"],
        clockInfo=_clock(clock),
        firmwareVersion=fields["firmware_version"],
        attested=union,
    )
    return attest, fields


def _indices(bitmap: bytes) -> tuple[int, ...]:
    return tuple(pcr for pcr in range(8 * len(bitmap)) if bitmap[pcr // 8] & (1 << pcr % 8))


def _clock(clock: ClockInfo) -> tss.TPMS_CLOCK_INFO:
    return tss.TPMS_CLOCK_INFO(
        clock=clock.clock,
        resetCount=clock.reset_count,
        restartCount=clock.restart_count,
        safe=int(clock.safe),
    )


@given(_attests())
def test_attest_round_trip(case: tuple[tss.TPMS_ATTEST, dict[str, Any]]) -> None:
    attest, fields = case
    raw = attest.marshal()
    parsed = parse_attest(raw)
    assert parsed.raw == raw
    assert {name: getattr(parsed, name) for name in fields} == fields


# TPMT_SIGNATURE


@st.composite
def _signatures(draw: st.DrawFn) -> tuple[tss.TPMT_SIGNATURE, dict[str, Any]]:
    hash_alg = draw(hash_algs)
    if draw(st.booleans()):
        r, s = draw(st.binary(max_size=66)), draw(st.binary(max_size=66))
        ecc = tss.TPMS_SIGNATURE_ECC(hash=hash_alg, signatureR=r, signatureS=s)
        sig = tss.TPMT_SIGNATURE(sigAlg=TPM2_ALG.ECDSA, signature=tss.TPMU_SIGNATURE(ecdsa=ecc))
        r_int, s_int = int.from_bytes(r, "big"), int.from_bytes(s, "big")
        return sig, {"sig_alg": TpmAlg.ECDSA, "hash_alg": hash_alg, "r": r_int, "s": s_int}
    sig_alg = draw(st.sampled_from([TpmAlg.RSASSA, TpmAlg.RSAPSS]))
    value = draw(st.binary(min_size=1, max_size=512))
    body = tss.TPMS_SIGNATURE_RSA(hash=hash_alg, sig=tss.TPM2B_PUBLIC_KEY_RSA(value))
    union = tss.TPMU_SIGNATURE(**{sig_alg.name.lower(): body})
    sig = tss.TPMT_SIGNATURE(sigAlg=TPM2_ALG(int(sig_alg)), signature=union)
    return sig, {"sig_alg": sig_alg, "hash_alg": hash_alg, "signature": value, "r": None}


@given(_signatures())
def test_signature_round_trip(case: tuple[tss.TPMT_SIGNATURE, dict[str, Any]]) -> None:
    sig, fields = case
    parsed = parse_signature(sig.marshal())
    assert parsed.raw == sig.marshal()
    assert {name: getattr(parsed, name) for name in fields} == fields


# TPMT_PUBLIC
_CURVES = {"ecc256": (0x0003, ec.SECP256R1()), "ecc384": (0x0004, ec.SECP384R1())}
_CURVES["ecc521"] = (0x0005, ec.SECP521R1())


@cache
def _rsa_key(exponent: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(exponent, 2048)


@st.composite
def _publics(draw: st.DrawFn) -> tuple[tss.TPMT_PUBLIC, dict[str, Any]]:
    kind = draw(st.sampled_from(["ecc256", "ecc384", "ecc521", "rsa2048"]))
    name_alg, hash_alg = draw(hash_algs), draw(hash_algs)
    if kind == "rsa2048":
        schemes = [TpmAlg.NULL, TpmAlg.RSASSA, TpmAlg.RSAPSS, TpmAlg.OAEP, TpmAlg.RSAES]
        scheme = draw(st.sampled_from(schemes))
    else:
        scheme = draw(st.sampled_from([TpmAlg.NULL, TpmAlg.ECDSA, TpmAlg.ECDH]))
    sym_bits = draw(st.sampled_from([0, 128, 192, 256]))
    sym = f"aes{sym_bits}cfb" if sym_bits else "null"
    with_hash = scheme not in (TpmAlg.NULL, TpmAlg.RSAES)  # RSAES has no scheme details
    scheme_text = f"{scheme.name.lower()}-{hash_alg.name}" if with_hash else scheme.name.lower()
    attributes = draw(u32)
    template = tss.TPMT_PUBLIC.parse(f"{kind}:{scheme_text}:{sym}", 0, name_alg.name)
    template.objectAttributes = attributes  # after parse(), which refuses odd combinations
    template.authPolicy = draw(st.binary(max_size=64))
    key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey
    if kind == "rsa2048":
        exponent = draw(st.sampled_from([3, 65537]))
        key = _rsa_key(exponent).public_key()
        numbers = key.public_numbers()
        template.unique.rsa = numbers.n.to_bytes(256, "big")
        # Part 2 §12.2.3.5: the TPM writes 0 for the default exponent; an explicit value is valid.
        wire_exponent = draw(st.sampled_from([0, 65537])) if exponent == 65537 else exponent
        template.parameters.rsaDetail.exponent = wire_exponent
        curve_id, effective_exponent = None, exponent
    else:
        (curve_id, curve), effective_exponent = _CURVES[kind], None
        key = ec.derive_private_key(draw(st.integers(1, 2**200)), curve).public_key()
        size = (curve.key_size + 7) // 8
        point = key.public_numbers()
        template.unique.ecc.x = tss.TPM2B_ECC_PARAMETER(point.x.to_bytes(size, "big"))
        template.unique.ecc.y = tss.TPM2B_ECC_PARAMETER(point.y.to_bytes(size, "big"))
    fields = {
        "type": TpmAlg.RSA if kind == "rsa2048" else TpmAlg.ECC,
        "name_alg": name_alg,
        "object_attributes": attributes,
        "auth_policy": bytes(template.authPolicy),
        "symmetric": TpmAlg.AES if sym_bits else None,
        "symmetric_bits": sym_bits,
        "symmetric_mode": TpmAlg.CFB if sym_bits else None,
        "scheme": scheme,
        "scheme_hash": hash_alg if with_hash else None,
        "curve_id": curve_id,
        "exponent": effective_exponent,
        "key": key,
        "name": bytes(template.get_name()),
    }
    return template, fields


@settings(deadline=None)  # the first example generates the RSA keys
@given(_publics(), st.booleans())
def test_public_round_trip(case: tuple[tss.TPMT_PUBLIC, dict[str, Any]], sized: bool) -> None:
    template, fields = case
    raw = tss.TPM2B_PUBLIC(template).marshal() if sized else template.marshal()
    parsed = parse_public(raw)
    assert parsed.raw == template.marshal()
    assert {name: getattr(parsed, name) for name in fields} == fields
    assert parsed.key_bits == fields["key"].key_size
    pem = fields["key"].public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert public_from_pem(pem).key == parsed.key


# tpm2-tools PCR file


def _pcr_file(banks: dict[TpmAlg, dict[int, bytes]]) -> bytes:
    """Write the tpm2-tools in-memory layout (vectors/attest/README.md) from scratch."""
    selection = struct.pack("<I", len(banks))
    values: list[bytes] = []
    for bank, pcrs in banks.items():
        bitmap = bytearray(4)
        for pcr in pcrs:
            bitmap[pcr // 8] |= 1 << pcr % 8
        selection += struct.pack("<HB4sx", bank, 3 if max(pcrs, default=0) < 24 else 4, bitmap)
        values += [pcrs[pcr] for pcr in sorted(pcrs)]
    selection += bytes(8 * (16 - len(banks)))
    chunks = [values[i : i + 8] for i in range(0, len(values), 8)]
    out = selection + struct.pack("<I", len(chunks))
    for chunk in chunks:
        out += struct.pack("<I", len(chunk))
        out += b"".join(struct.pack("<H", len(v)) + v.ljust(64, b"\0") for v in chunk)
        out += bytes(66 * (8 - len(chunk)))
    return out


@st.composite
def _pcr_banks(draw: st.DrawFn) -> dict[TpmAlg, dict[int, bytes]]:
    def values(bank: TpmAlg) -> st.SearchStrategy[bytes]:
        return st.binary(min_size=SIZES[bank], max_size=SIZES[bank])

    chosen = draw(st.lists(hash_algs, unique=True, max_size=4))
    pcrs = st.integers(0, 31)
    return {b: draw(st.dictionaries(pcrs, values(b), min_size=1, max_size=24)) for b in chosen}


@given(_pcr_banks())
def test_pcr_file_round_trip(banks: dict[TpmAlg, dict[int, bytes]]) -> None:
    parsed = parse_pcr_file(_pcr_file(banks))
    assert parsed == PcrValues(banks)
    as_json = {b.name.lower(): {str(i): v.hex() for i, v in p.items()} for b, p in banks.items()}
    assert pcr_values_from_mapping(as_json) == parsed


# strictness
_QUOTE = tss.TPMS_ATTEST(
    magic=TPM2_GENERATED.VALUE,
    type=TPM2_ST.ATTEST_QUOTE,
    extraData=b"nonce",
    clockInfo=tss.TPMS_CLOCK_INFO(clock=0, resetCount=0, restartCount=0, safe=1),
    attested=tss.TPMU_ATTEST(
        quote=tss.TPMS_QUOTE_INFO(
            pcrSelect=tss.TPML_PCR_SELECTION.parse("sha256:16"), pcrDigest=b"\x01" * 32
        )
    ),
).marshal()


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (_QUOTE + b"\0", DecodeError, "1 trailing bytes"),
        (_QUOTE[:-1], DecodeError, "pcrDigest truncated"),
        (b"\xff\x54\x43\x46" + _QUOTE[4:], DecodeError, "magic 0xff544346"),
        (_QUOTE[:4] + b"\x80\x1c" + _QUOTE[6:], UnsupportedError, "type 0x801c"),
        (_QUOTE.replace(b"\x00\x05nonce", b"\x00\x45nonce"), DecodeError, "extraData"),
        (_QUOTE.replace(b"nonce" + bytes(16) + b"\x01", b"nonce" + bytes(16) + b"\x02"),
         DecodeError, "safe is 2"),
        (_QUOTE.replace(b"\x00\x0b\x03\x00\x00\x01", b"\x00\x12\x03\x00\x00\x01"),
         UnsupportedError, "SM3_256"),
        (_QUOTE.replace(b"\x00\x0b\x03", b"\x00\x0b\x05"), DecodeError, "sizeofSelect 5"),
    ],
    ids=["trailing", "truncated", "magic", "type", "extra-too-long", "safe", "sm3", "select"],
)  # fmt: skip
def test_attest_strictness(data: bytes, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        parse_attest(data)


def test_duplicate_bank_refused() -> None:
    two = tss.TPML_PCR_SELECTION.parse("sha256:16+sha256:17").marshal()
    data = _QUOTE.replace(tss.TPML_PCR_SELECTION.parse("sha256:16").marshal(), two)
    with pytest.raises(DecodeError, match="selected twice"):
        parse_attest(data)


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (bytes.fromhex("0005000b0001ff"), UnsupportedError, "sigAlg HMAC"),
        (bytes.fromhex("0014000b0000"), DecodeError, "empty RSA signature"),
        (bytes.fromhex("0018000d00010100010200"), DecodeError, "1 trailing bytes"),
        (bytes.fromhex("00180012000101000102"), UnsupportedError, "hash SM3_256"),
        (bytes.fromhex("0018000b0043") + bytes(67) + bytes.fromhex("0000"), DecodeError, "67"),
    ],
    ids=["hmac", "empty-rsa", "trailing", "sm3", "r-too-long"],
)
def test_signature_strictness(data: bytes, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        parse_signature(data)


def test_pcr_values_strictness() -> None:
    good = {"sha256": {"16": "00" * 32}}
    assert pcr_values_from_mapping(good).banks[TpmAlg.SHA256][16] == bytes(32)
    for bad in (
        {"SHA256": {"16": "00" * 32}},
        {"sha256": {"016": "00" * 32}},
        {"sha256": {"+1": "00" * 32}},
        {"sha256": {"32": "00" * 32}},
        {"sha256": {"16": "00" * 31}},
        {"sha256": {"16": " " + "00" * 32}},
        {"sha256": {"16": "0x" + "00" * 31}},
        {"sha256": ["00" * 32]},
        ["sha256"],
    ):
        with pytest.raises(DecodeError):
            pcr_values_from_mapping(bad)  # type: ignore[arg-type]


# fuzz
_PARSERS = [parse_attest, parse_signature, parse_public, parse_pcr_file, public_from_pem]


@pytest.mark.parametrize("parser", _PARSERS, ids=[p.__name__ for p in _PARSERS])
@given(data=st.binary(max_size=1200))
def test_arbitrary_bytes_raise_only_decode_error(parser: Any, data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        parser(data)


def _mutate(draw: st.DrawFn, data: bytes) -> bytes:
    kind = draw(st.sampled_from(["flip", "truncate", "insert", "set"]))
    index = draw(st.integers(0, max(len(data) - 1, 0)))
    if kind == "truncate":
        return data[:index]
    if kind == "insert":
        return data[:index] + draw(st.binary(min_size=1, max_size=4)) + data[index:]
    value = (
        data[index] ^ (1 << draw(st.integers(0, 7)))
        if kind == "flip"
        else draw(st.integers(0, 255))
    )
    return data[:index] + bytes([value]) + data[index + 1 :]


@st.composite
def _mutated(draw: st.DrawFn) -> tuple[Any, bytes]:
    which = draw(st.sampled_from(["attest", "signature", "public", "pcr_file"]))
    if which == "attest":
        return parse_attest, _mutate(draw, draw(_attests())[0].marshal())
    if which == "signature":
        return parse_signature, _mutate(draw, draw(_signatures())[0].marshal())
    if which == "public":
        return parse_public, _mutate(draw, draw(_publics())[0].marshal())
    return parse_pcr_file, _mutate(draw, _pcr_file(draw(_pcr_banks())))


@settings(deadline=None)
@given(_mutated())
def test_mutated_structures_raise_only_decode_error(case: tuple[Any, bytes]) -> None:
    parser, data = case
    with contextlib.suppress(DecodeError):
        parser(data)
