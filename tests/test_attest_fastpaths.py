"""The appraisal hot path's shortcuts keep every check: memoised parses are the same values and
never skip what depends on the quote, and the one-read signature parser agrees with the
field-by-field one on any input (BENCHMARKS.md "attest" is what they are for)."""

from __future__ import annotations

import hashlib
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st
from tpm2_pytss import types as tss
from tpm2_pytss.constants import TPM2_GENERATED, TPM2_ST, TPMA_OBJECT

from attest import appraise, tpm
from attest.appraise import ExpectedImage, Policy, ReferenceValues, UnknownComponents
from attest.errors import AttestError, DecodeError, VerificationError
from attest.eventlog import Event, encode_compact_log, parse_event_log, verify_replay
from attest.tpm import TpmAlg, parse_attest, parse_public, parse_signature

SHA256 = TpmAlg.SHA256


def _outcome(parser: object, data: bytes) -> object:
    try:
        return parser(data)  # type: ignore[operator]
    except AttestError as exc:
        return (type(exc), str(exc))


_SIGNATURE_HEADS = st.sampled_from([0x0014, 0x0016, 0x0018, 0x0005, 0x0010]).flatmap(
    lambda alg: st.tuples(st.just(alg), st.sampled_from([0x0004, 0x000B, 0x000D, 0x0012]))
)


@st.composite
def _sized(draw: st.DrawFn) -> bytes:
    """A TPM2B near the bounds: a size of 0, at or past a limit, then as many bytes or not."""
    size = draw(st.sampled_from([0, 1, 32, 66, 67, 256, 512, 513]))
    exact = draw(st.booleans())
    body = draw(st.binary(min_size=size, max_size=size) if exact else st.binary(max_size=70))
    return struct.pack(">H", size) + body


@st.composite
def _signatures(draw: st.DrawFn) -> bytes:
    """TPMT_SIGNATURE-shaped bytes: known and unknown schemes and hashes, one or two TPM2Bs."""
    alg, hash_alg = draw(_SIGNATURE_HEADS)
    body = struct.pack(">HH", alg, hash_alg) + draw(_sized())
    if draw(st.booleans()):
        body += draw(_sized())
    return body + draw(st.sampled_from([b"", b"", b"\x00"]))


@given(st.one_of(_signatures(), st.binary(max_size=80)))
def test_signature_parser_agrees_with_the_field_reader(data: bytes) -> None:
    assert _outcome(parse_signature, data) == _outcome(tpm._parse_signature_reader, data)


@pytest.mark.parametrize(
    "data",
    [
        struct.pack(">HHH", 0x0018, 0x000B, 32) + b"r" * 32 + struct.pack(">H", 31) + b"s" * 31,
        struct.pack(">HHH", 0x0014, 0x000B, 256) + b"\x01" * 256,
        struct.pack(">HHH", 0x0016, 0x000D, 512) + b"\x02" * 512,
    ],
    ids=["ecdsa", "rsassa", "rsapss"],
)
def test_well_formed_signatures_parse_the_same_both_ways(data: bytes) -> None:
    parsed = parse_signature(data)
    assert parsed == tpm._parse_signature_reader(data)
    assert parsed.raw == data


_QUOTE = tss.TPMS_ATTEST(
    magic=TPM2_GENERATED.VALUE,
    type=TPM2_ST.ATTEST_QUOTE,
    qualifiedSigner=b"\x00\x0b" + bytes(32),
    extraData=b"nonce",
    clockInfo=tss.TPMS_CLOCK_INFO(clock=5, resetCount=1, restartCount=2, safe=1),
    attested=tss.TPMU_ATTEST(
        quote=tss.TPMS_QUOTE_INFO(
            pcrSelect=tss.TPML_PCR_SELECTION.parse("sha256:16"), pcrDigest=b"\x01" * 32
        )
    ),
).marshal()


def test_every_truncated_quote_names_where_it_ends() -> None:
    assert parse_attest(_QUOTE).pcr_select[0].pcrs == (16,)
    for end in range(len(_QUOTE)):
        with pytest.raises(DecodeError, match="truncated"):
            parse_attest(_QUOTE[:end])


def _ak_bytes() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
    attrs = (
        TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN
        | TPMA_OBJECT.USERWITHAUTH | TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.SIGN_ENCRYPT
    )  # fmt: skip
    public = tss.TPMT_PUBLIC.parse("ecc256:ecdsa-sha256:null", attrs)
    public.unique.ecc.x, public.unique.ecc.y = key.x.to_bytes(32), key.y.to_bytes(32)
    return bytes(tss.TPM2B_PUBLIC(public).marshal())


def test_parse_public_is_memoised_by_the_exact_bytes() -> None:
    data = _ak_bytes()
    first = parse_public(data)
    assert parse_public(bytes(data)) is first
    other = _ak_bytes()
    assert parse_public(other) is not first and parse_public(other).key != first.key
    bad = data[:-1]
    for _ in range(2):  # a refusal is not remembered as anything: it raises each time
        with pytest.raises(DecodeError):
            parse_public(bad)


def _log(*images: bytes) -> tuple[bytes, bytes]:
    """A compact log measuring ``images`` into PCR 16, and the PCR value it replays to."""
    pcr, events = bytes(32), []
    for image in images:
        digest = hashlib.sha256(image).digest()
        pcr = hashlib.sha256(pcr + digest).digest()
        events.append(Event(16, None, {SHA256: digest}, b"", (image[:4],)))
    return encode_compact_log(events), pcr


def test_a_memoised_log_is_still_replayed_against_each_quote() -> None:
    raw, pcr = _log(b"boot loader", b"firmware")
    log = parse_event_log(raw)
    assert parse_event_log(bytes(raw)) is log
    wrong = hashlib.sha256(b"something else").digest()
    for quoted, ok in ((pcr, True), (wrong, False), (pcr, True), (wrong, False)):
        if ok:
            assert verify_replay(parse_event_log(raw), {SHA256: {16: quoted}}) is log
        else:
            with pytest.raises(VerificationError, match="SHA256 PCR 16: quoted"):
                verify_replay(parse_event_log(raw), {SHA256: {16: quoted}})
    with pytest.raises(VerificationError, match="extended but not quoted"):
        verify_replay(log, {SHA256: {15: pcr}}, require_all=True)
    other_raw, other_pcr = _log(b"boot loader", b"other firmware")
    assert verify_replay(parse_event_log(other_raw), {SHA256: {16: other_pcr}}).raw == other_raw
    with pytest.raises(VerificationError):
        verify_replay(parse_event_log(other_raw), {SHA256: {16: pcr}})


def test_a_refused_log_raises_every_time() -> None:
    raw, _ = _log(b"firmware")
    bad = raw + b"\x00"
    for _ in range(2):
        with pytest.raises(DecodeError, match="trailing"):
            parse_event_log(bad)


def test_a_memoised_log_judgement_follows_the_reference_and_policy() -> None:
    raw, _ = _log(b"boot loader", b"firmware")
    log = parse_event_log(raw)

    def reference(firmware: bytes) -> ReferenceValues:
        images = [(b"boot", b"boot loader"), (b"firm", firmware)]
        return ReferenceValues(
            tuple(ExpectedImage((c,), (("sha256", hashlib.sha256(i).digest()),)) for c, i in images)
        )

    good, other = reference(b"firmware"), reference(b"other firmware")
    warn = Policy(mismatch=UnknownComponents.WARN)
    for _ in range(2):  # the second round is answered from the memo
        assert appraise._judge_log(log, good, Policy()).executables == appraise.APPROVED
        assert appraise._judge_log(log, other, Policy()).executables == appraise.CONTRAINDICATED
        assert appraise._judge_log(log, other, warn).executables == appraise.WARN_UNRECOGNIZED
        assert appraise._judge_log(log, None, Policy()).executables == appraise.WARN_UNRECOGNIZED
