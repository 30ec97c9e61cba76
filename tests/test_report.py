"""SUIT_Report (draft-ietf-suit-report-20): round trips, containers, strictness, the public
AttesTAM vector, and fuzzing."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from manifests._cbor import Tag, dumps
from manifests.cose import (
    Algorithm,
    CoseKind,
    SigningKey,
    generate_signing_key,
    hmac_signing_key,
    sign1,
)
from manifests.digest import Digest
from manifests.errors import DecodeError, UnsupportedError, VerificationError
from manifests.numbers import DigestAlg, ReportReason
from manifests.report import (
    Record,
    Report,
    ReportResult,
    SystemPropertyClaims,
    build_report,
    parse_report,
    sign_report,
    verify_report,
)

from .conftest import examples

DIGEST = Digest.of(b"manifest")
RECORD = Record((0, 1), 7, 2, 0, {3: b"\x01", -1: "custom"})
FAILED = ReportResult(False, 3, RECORD, ReportReason.CONDITION_FAILED)
CLAIMS = SystemPropertyClaims((b"\x00",), {14: 34768})


def report(**changes: object) -> bytes:
    fields: dict[str, object] = {
        "reference_uri": "coaps://fw.example/m.suit",
        "manifest_digest": DIGEST,
        "records": [CLAIMS, RECORD],
        "result": FAILED,
        "nonce": b"\x11" * 8,
    }
    return build_report(**(fields | changes))  # type: ignore[arg-type]


# Round trips ---------------------------------------------------------------------------

_UTF8 = st.characters(codec="utf-8")
_leaf = (
    st.integers(-(2**64), 2**64 - 1)
    | st.binary(max_size=12)
    | st.text(_UTF8, max_size=8)
    | st.booleans()
    | st.none()
)
_value = st.recursive(
    _leaf,
    lambda inner: (
        st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(st.integers(-30, 30), inner, max_size=3)
    ),
    max_leaves=8,
)
_uint = st.integers(0, 2**64 - 1)
_records = st.builds(
    Record,
    st.lists(_uint, max_size=3).map(tuple),
    st.integers(-(2**64), 2**64 - 1),
    _uint,
    _uint,
    st.dictionaries(st.integers(-(2**64), 2**64 - 1), _value, max_size=3),
)
_claims = st.builds(
    SystemPropertyClaims,
    st.lists(st.binary(max_size=8), max_size=3).map(tuple),
    st.dictionaries(st.integers(1, 2**64 - 1) | st.integers(-(2**64), -1), _value, min_size=1),
)
_results = st.just(ReportResult(True)) | st.builds(
    ReportResult,
    st.just(False),
    st.integers(-(2**64), 2**64 - 1),
    _records,
    st.sampled_from(ReportReason) | st.integers(-(2**64), 2**64 - 1),
)
_digests = st.builds(Digest.of, st.binary(max_size=8), st.sampled_from(DigestAlg))


@settings(max_examples=examples(200))
@given(
    uri=st.text(_UTF8, max_size=30),
    digest=_digests,
    records=st.lists(_records | _claims, max_size=4),
    result=_results,
    nonce=st.none() | st.binary(max_size=32),
)
def test_build_parse_round_trip(
    uri: str,
    digest: Digest,
    records: list[Record | SystemPropertyClaims],
    result: ReportResult,
    nonce: bytes | None,
) -> None:
    data = build_report(
        reference_uri=uri, manifest_digest=digest, records=records, result=result, nonce=nonce
    )
    parsed = parse_report(data)
    assert (parsed.reference_uri, parsed.manifest_digest, parsed.nonce) == (uri, digest, nonce)
    assert parsed.records == tuple(records)
    assert parsed.result == result
    assert (parsed.raw, parsed.report_bytes, parsed.cose) == (data, data, None)
    assert parsed.capability_report is None
    if not result.success and result.reason in set(ReportReason):
        assert isinstance(parsed.result.reason, ReportReason)


def test_parsed_values_are_immutable() -> None:
    parsed = parse_report(report())
    entry = parsed.records[1]
    assert isinstance(entry, Record)
    with pytest.raises(TypeError):
        entry.properties[3] = b"changed"  # type: ignore[index]


@pytest.mark.parametrize("alg", list(Algorithm), ids=lambda a: a.name)
def test_signed_round_trip_and_tampering(alg: Algorithm) -> None:
    key = generate_signing_key(alg)
    bare = report()
    signed = sign_report(bare, key)
    parsed = parse_report(signed)
    assert parsed.cose is not None and parsed.raw == signed and parsed.report_bytes == bare
    expected_kind = CoseKind.MAC0 if alg is Algorithm.HMAC_256_256 else CoseKind.SIGN1
    assert parsed.cose.kind is expected_kind and parsed.cose.payload == bare
    assert parsed.records == parse_report(bare).records
    anchor = key.public_anchor("device-7")
    assert verify_report(parsed, [anchor]) is anchor
    with pytest.raises(VerificationError):
        verify_report(parsed, [generate_signing_key(alg).public_anchor("someone-else")])
    # Change one nonce byte: the report still parses, the signature or MAC does not verify.
    tampered = signed.replace(b"\x11" * 8, b"\x11" * 7 + b"\x12")
    with pytest.raises(VerificationError):
        verify_report(parse_report(tampered), [anchor])
    tampered = signed[:-1] + bytes([signed[-1] ^ 1])
    with pytest.raises(VerificationError):
        verify_report(parse_report(tampered), [anchor])


def test_bare_report_is_unauthenticated() -> None:
    with pytest.raises(VerificationError, match="unauthenticated report"):
        verify_report(parse_report(report()), [hmac_signing_key(b"s" * 32).public_anchor("h")])


def test_report_not_the_container_payload() -> None:
    key = generate_signing_key(Algorithm.ES256)
    parsed = parse_report(sign_report(report(), key))
    forged = Report(**{**parsed.__dict__, "report_bytes": report(nonce=None)})
    with pytest.raises(VerificationError, match="not the container's payload"):
        verify_report(forged, [key.public_anchor("a")])


# Strictness ----------------------------------------------------------------------------

_DIGEST = DIGEST.to_cbor_value()
_REF = ["", _DIGEST]
_REC = [[0], 7, 2, 0, {}]
_ES256 = SigningKey(Algorithm.ES256, ec.derive_private_key(0x5EED, ec.SECP256R1()))  # fixed
_OK: dict[object, object] = {99: _REF, 3: [], 4: True}
_CAPS = {1: [[]], 2: [1], 3: [1], 4: [1]}


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (dumps(_OK | {1: 0}), UnsupportedError, "unknown key"),
        (dumps(_OK | {"x": 0}), UnsupportedError, "unknown key"),
        (dumps(_OK | {5: 0}), UnsupportedError, "unknown key"),
        (dumps({99: _REF, 3: []}), DecodeError, "missing key"),
        (dumps({3: [], 4: True}), DecodeError, "missing key"),
        (dumps({99: [b"", _DIGEST], 3: [], 4: True}), DecodeError, "uri must be a text"),
        (dumps({99: ["", [-16, b"short"]], 3: [], 4: True}), DecodeError, "SHA256 digest"),
        (dumps({99: ["", [-1, bytes(32)]], 3: [], 4: True}), UnsupportedError, "digest algo"),
        (dumps(_OK | {2: "nonce"}), DecodeError, "nonce"),
        (dumps(_OK | {3: {}}), DecodeError, "records must be an array"),
        (dumps(_OK | {3: [5]}), DecodeError, "SUIT_Record"),
        (dumps(_OK | {3: [[*_REC, 9]]}), UnsupportedError, "extensions"),
        (dumps(_OK | {3: [[[0], 7, -2, 0, {}]]}), DecodeError, "offset"),
        (dumps(_OK | {3: [[[-1], 7, 2, 0, {}]]}), DecodeError, "manifest-id"),
        (dumps(_OK | {3: [[[0], 7, 2, 0, {"a": 1}]]}), DecodeError, "labels"),
        (dumps(_OK | {3: [{0: [b"\0"]}]}), DecodeError, "at least one"),
        (dumps(_OK | {3: [{0: ["x"], 14: 1}]}), DecodeError, "component-id"),
        (dumps(_OK | {3: [{False: [b"\0"], 14: 1}]}), DecodeError, "boolean map key"),
        (dumps(_OK | {4: False}), DecodeError, "true or a map"),
        (dumps(_OK | {4: {5: 1, 6: _REC}}), DecodeError, "missing key"),
        (dumps(_OK | {4: {5: 1, 6: _REC, 7: "bad"}}), DecodeError, "integers"),
        (dumps(_OK | {4: {5: 1, 6: _REC, 7: 1, 8: 0}}), UnsupportedError, "unknown"),
        (dumps(_OK | {8: {1: [[]], 2: [1], 3: [1]}}), DecodeError, "missing"),
        (dumps(_OK | {8: _CAPS | {2: []}}), DecodeError, "non-empty"),
        (dumps(_OK | {8: _CAPS | {1: [["x"]]}}), DecodeError, "capability"),
        (dumps(_OK | {8: _CAPS | {11: [1]}}), UnsupportedError, "unsupported key"),
        (dumps([b"", {}, dumps(_OK), b""]), UnsupportedError, "untagged"),
        (dumps(Tag(98, [b"", {}, b"", []])), UnsupportedError, "COSE_Sign"),
        (
            sign1(dumps(Tag(16, [b"", {}, b""])), _ES256, detached=False),
            UnsupportedError,
            "Encrypt0",
        ),
        (sign1(dumps(_OK), _ES256, detached=True), DecodeError, "attached"),
        (dumps("text"), DecodeError, "expected a map"),
        (b"", DecodeError, "non-empty"),
    ],
)
def test_parse_rejects(data: bytes, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        parse_report(data)


def test_reasons_and_capabilities() -> None:
    for reason, expected in [(10, ReportReason.CONDITION_FAILED), (99, 99), (-1, -1)]:
        data = dumps({99: _REF, 3: [], 4: {5: 1, 6: _REC, 7: reason}})
        parsed = parse_report(data).result.reason
        assert parsed == expected and type(parsed) is type(expected)
    capabilities = {1: [[b"\0", True], [b"\1", b"\2"]], 2: [12, 18], 3: [3], 4: [-9], 6: [1]}
    parsed_caps = parse_report(dumps(_OK | {8: capabilities}))
    assert parsed_caps.capability_report == {
        1: ((b"\0", True), (b"\1", b"\2")),
        2: (12, 18),
        3: (3,),
        4: (-9,),
        6: (1,),
    }


def test_builder_and_signer_refuse_invalid_input() -> None:
    with pytest.raises(RuntimeError):
        ReportResult(False)
    with pytest.raises(RuntimeError):
        ReportResult(True, code=1)
    with pytest.raises(RuntimeError, match="not a valid SUIT_Report"):
        report(records=[Record((0,), 1, -5, 0, {})])
    with pytest.raises(RuntimeError, match="component id"):
        report(records=[SystemPropertyClaims((b"",), {0: 1})])
    with pytest.raises(RuntimeError, match="not a bare SUIT_Report"):
        sign_report(b"\xa0", _ES256)
    with pytest.raises(RuntimeError, match="not a bare SUIT_Report"):
        sign_report(sign_report(report(), _ES256), _ES256)


# The public vector (AttesTAM report_test.go; exact bytes, unsigned) ---------------------


def test_attestam_report_vector(suit_vectors: Path) -> None:
    data = (suit_vectors / "reports" / "attestam-report-unsigned.cbor").read_bytes()
    parsed = parse_report(data)
    assert parsed.manifest_digest.algorithm is DigestAlg.SHA256
    assert parsed.manifest_digest.hex == (
        "6658ea560262696dd1f13b782239a064da7c6c5cbaf52fded428a6fc83c7e5af"
    )
    assert parsed.result.success is True
    assert parsed.reference_uri == "" and parsed.nonce is None
    assert parsed.records == (SystemPropertyClaims((b"\x00",), {14: 34768}),)
    assert parsed.raw == parsed.report_bytes == data and parsed.cose is None
    with pytest.raises(VerificationError, match="unauthenticated"):
        verify_report(parsed, [_ES256.public_anchor("a")])


# Fuzzing -------------------------------------------------------------------------------


@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        parse_report(data)


_junk = st.recursive(
    st.integers(-3, 100) | st.binary(max_size=4) | st.text(max_size=2) | st.booleans(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.integers(-2, 99), inner),
    max_leaves=20,
)


@given(st.dictionaries(st.sampled_from([2, 3, 4, 8, 99]), _junk, min_size=1, max_size=5))
def test_structured_junk_raises_only_decode_error(obj: dict[int, object]) -> None:
    with contextlib.suppress(DecodeError):
        parse_report(dumps(obj))


_SIGNED = sign_report(report(), _ES256)


@settings(max_examples=examples(300), deadline=None)
@given(st.integers(0, len(_SIGNED) - 1), st.integers(0, 255))
def test_mutated_signed_report_raises_only_decode_or_verification_errors(
    pos: int, byte: int
) -> None:
    data = bytearray(_SIGNED)
    data[pos] = byte
    try:
        verify_report(parse_report(bytes(data)), [_ES256.public_anchor("a")])
    except (DecodeError, VerificationError):
        return
    assert bytes(data) == _SIGNED
