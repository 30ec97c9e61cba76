"""Event logs: the go-attestation GCP vector (T5), hand-built crypto-agile logs, the compact
log of our own devices, and a real swtpm extending PCR16 as a device does at boot."""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attest.errors import DecodeError, UnsupportedError, VerificationError
from attest.eventlog import (
    EV_NO_ACTION,
    Event,
    EventLog,
    encode_compact_log,
    parse_event_log,
    replay,
    verify_replay,
)
from attest.tpm import TpmAlg

from .conftest import VECTORS_ENV, examples, vectors_root
from .swtpm import running_swtpm

SHA1, SHA256 = TpmAlg.SHA1, TpmAlg.SHA256
T5 = Path("attest/tpm/T5_goattestation_gcp_vtpm_sha1")


def extend(pcr: bytes, digest: bytes, alg: str) -> bytes:
    return hashlib.new(alg, pcr + digest).digest()


# --- T5: real GCP vTPM, legacy SHA-1 log ------------------------------------------------


@pytest.fixture(scope="module")
def t5() -> Path:
    root = vectors_root()
    if root is None:
        pytest.skip(f"{VECTORS_ENV} is not set")
    path = root / T5
    assert path.is_dir(), f"{VECTORS_ENV} is set but {path} is missing"
    return path


def t5_quoted(t5: Path) -> dict[TpmAlg, dict[int, bytes]]:
    pcrs: dict[str, dict[str, str]] = json.loads((t5 / "pcrs.json").read_text())
    return {SHA1: {int(i): bytes.fromhex(v) for i, v in pcrs["sha1"].items()}}


def test_t5_parses_and_replays_the_quoted_pcrs(t5: Path) -> None:
    expected: dict[str, Any] = json.loads((t5 / "expected.json").read_text())["eventlog"]
    log = parse_event_log((t5 / "eventlog.tcg_sha1.bin").read_bytes())
    assert log.format == "tcg-sha1"
    assert len(log.events) == expected["events"]
    assert log.raw == (t5 / "eventlog.tcg_sha1.bin").read_bytes()
    replayed = replay(log, [SHA1])[SHA1]
    assert sorted(replayed) == expected["replayed_pcrs_match"]
    quoted = t5_quoted(t5)[SHA1]
    assert {pcr: quoted[pcr] for pcr in replayed} == replayed
    assert verify_replay(log, t5_quoted(t5), require_all=True) is log


def test_t5_tampered_event_digest_breaks_the_replay(t5: Path) -> None:
    raw = bytearray((t5 / "eventlog.tcg_sha1.bin").read_bytes())
    raw[8] ^= 1  # first byte of event 0's SHA-1 digest (PCR0, EV_S_CRTM_VERSION)
    log = parse_event_log(bytes(raw))
    with pytest.raises(VerificationError, match=r"SHA1 PCR 0: quoted 51c323de.*replays to"):
        verify_replay(log, t5_quoted(t5))


def test_t5_truncated_or_padded_is_refused(t5: Path) -> None:
    raw = (t5 / "eventlog.tcg_sha1.bin").read_bytes()
    # 32 more zero bytes would be a well-formed (if odd) event; 31 are garbage.
    for bad in (raw[:-1], raw[:40], raw + b"\x00", raw + bytes(31)):
        with pytest.raises(DecodeError):
            parse_event_log(bad)


def test_unquoted_pcrs_are_ignored_unless_required(t5: Path) -> None:
    log = parse_event_log((t5 / "eventlog.tcg_sha1.bin").read_bytes())
    only_pcr7 = {SHA1: {7: t5_quoted(t5)[SHA1][7]}}
    verify_replay(log, only_pcr7)
    with pytest.raises(VerificationError, match="SHA1 PCR 0 is extended but not quoted"):
        verify_replay(log, only_pcr7, require_all=True)
    with pytest.raises(VerificationError, match="covers none of the PCRs"):
        verify_replay(log, {SHA256: {7: bytes(32)}})


# --- crypto-agile, built by hand -------------------------------------------------------

SM3 = 0x0012  # a bank this verifier cannot hash: stepped over by its table size


def legacy_event(pcr: int, event_type: int, digest: bytes, data: bytes) -> bytes:
    return struct.pack("<II20sI", pcr, event_type, digest, len(data)) + data


def spec_id_event(algs: list[tuple[int, int]]) -> bytes:
    body = b"Spec ID Event03\0" + struct.pack("<IBBBBI", 0, 0, 2, 0, 2, len(algs))
    body += b"".join(struct.pack("<HH", alg, size) for alg, size in algs) + b"\x00"
    return legacy_event(0, EV_NO_ACTION, bytes(20), body)


def event2(pcr: int, event_type: int, digests: list[tuple[int, bytes]], data: bytes) -> bytes:
    out = struct.pack("<III", pcr, event_type, len(digests))
    out += b"".join(struct.pack("<H", alg) + d for alg, d in digests)
    return out + struct.pack("<I", len(data)) + data


def agile_log(locality: int | None = 3) -> tuple[bytes, dict[TpmAlg, dict[int, bytes]]]:
    """Spec ID (SHA-1, SHA-256, SM3), StartupLocality, three measurements, one
    EV_NO_ACTION with junk digests; and the PCR values it must replay to."""
    banks = [(0x0004, 20), (0x000B, 32), (SM3, 32)]
    raw = spec_id_event(banks)
    if locality is not None:
        raw += event2(0, EV_NO_ACTION, [(a, bytes(s)) for a, s in banks],
                      b"StartupLocality\0" + bytes((locality,)))  # fmt: skip
    expected: dict[TpmAlg, dict[int, bytes]] = {SHA1: {}, SHA256: {}}
    start0 = bytes((locality,)) if locality else b"\0"
    for bank, size in ((SHA1, 20), (SHA256, 32)):
        expected[bank][0] = bytes(size - 1) + start0
        expected[bank][7] = bytes(size)
    for pcr, text in ((0, b"crtm"), (7, b"secure boot"), (0, b"firmware")):
        d1, d256 = hashlib.sha1(text).digest(), hashlib.sha256(text).digest()
        raw += event2(pcr, 0x80000001, [(0x0004, d1), (0x000B, d256), (SM3, bytes(32))], text)
        expected[SHA1][pcr] = extend(expected[SHA1][pcr], d1, "sha1")
        expected[SHA256][pcr] = extend(expected[SHA256][pcr], d256, "sha256")
    raw += event2(5, EV_NO_ACTION, [(0x000B, b"\xee" * 32)], b"not extended")
    return raw, expected


@pytest.mark.parametrize("locality", [None, 0, 3, 4])
def test_crypto_agile_log_replays_both_banks(locality: int | None) -> None:
    raw, expected = agile_log(locality)
    log = parse_event_log(raw)
    assert log.format == "tcg-crypto-agile"
    assert len(log.events) == (6 if locality is not None else 5)
    assert set(log.events[-2].digests) == {SHA1, SHA256}  # SM3 stepped over
    assert replay(log, [SHA1, SHA256]) == expected
    verify_replay(log, expected, require_all=True)
    wrong = {SHA1: expected[SHA1], SHA256: {**expected[SHA256], 7: bytes(32)}}
    with pytest.raises(VerificationError, match="SHA256 PCR 7"):
        verify_replay(log, wrong)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda raw: raw + b"\x00", "truncated"),
        (lambda raw: raw[:-3], "truncated"),
        (lambda raw: raw.replace(b"\x0b\x00\x20\x00", b"\x0b\x00\x21\x00", 1), "Spec ID"),
        (lambda raw: raw.replace(b"StartupLocality\0\x03", b"StartupLocality\0\x02"),
         "StartupLocality"),
    ],
)  # fmt: skip
def test_crypto_agile_malformed(mutate: Any, message: str) -> None:
    raw, _ = agile_log(3)
    with pytest.raises(DecodeError, match=message):
        parse_event_log(mutate(raw))


def test_startup_locality_after_a_pcr0_extend_is_refused() -> None:
    banks = [(0x000B, 32)]
    raw = spec_id_event(banks) + event2(0, 1, [(0x000B, bytes(32))], b"")
    raw += event2(0, EV_NO_ACTION, [(0x000B, bytes(32))], b"StartupLocality\0\x03")
    with pytest.raises(DecodeError, match="StartupLocality"):
        parse_event_log(raw)


def test_event_data_and_pcr_bounds() -> None:
    with pytest.raises(DecodeError, match="exceeds the limit"):
        parse_event_log(struct.pack("<II20sI", 0, 1, bytes(20), (1 << 20) + 1))
    with pytest.raises(DecodeError, match="PCR 24"):
        parse_event_log(legacy_event(24, 1, bytes(20), b""))


# --- compact log ----------------------------------------------------------------------

_DIGEST_SIZES = {SHA1: 20, SHA256: 32, TpmAlg.SHA384: 48, TpmAlg.SHA512: 64}


@st.composite
def compact_events(draw: st.DrawFn) -> Event:
    alg = draw(st.sampled_from(sorted(_DIGEST_SIZES)))
    size = _DIGEST_SIZES[alg]
    return Event(
        pcr=draw(st.integers(0, 23)),
        event_type=None,
        digests={alg: draw(st.binary(min_size=size, max_size=size))},
        data=b"",
        component_id=draw(st.none() | st.lists(st.binary(max_size=8), max_size=3).map(tuple)),
        manifest_digest=draw(st.none() | st.binary(max_size=64)),
        sequence_number=draw(st.none() | st.integers(0, (1 << 64) - 1)),
        description=draw(st.none() | st.text(max_size=20)),
    )


@given(st.lists(compact_events(), max_size=8))
def test_compact_round_trip(events: list[Event]) -> None:
    raw = encode_compact_log(events)
    log = parse_event_log(raw)
    assert log == EventLog("compact", tuple(events), raw)
    assert encode_compact_log(log.events) == raw


def image_event(pcr: int, image: bytes, seq: int) -> Event:
    return Event(
        pcr, None, {SHA256: hashlib.sha256(image).digest()}, b"",
        component_id=(b"fw", image[:2]), manifest_digest=bytes(32), sequence_number=seq,
    )  # fmt: skip


def test_compact_replay_is_one_extend_per_image_digest() -> None:
    events = [image_event(16, b"boot", 3), image_event(16, b"app1", 3)]
    log = parse_event_log(encode_compact_log(events))
    pcr16 = bytes(32)
    for image in (b"boot", b"app1"):
        pcr16 = extend(pcr16, hashlib.sha256(image).digest(), "sha256")
    assert replay(log, [SHA256, SHA1]) == {SHA256: {16: pcr16}, SHA1: {}}
    verify_replay(log, {SHA256: {16: pcr16}, SHA1: {16: bytes(20)}}, require_all=True)


def test_compact_encoding_is_deterministic_and_decoding_tolerant() -> None:
    raw = encode_compact_log([Event(16, None, {SHA1: bytes(20)}, b"", description="x")])
    assert raw == bytes.fromhex("81a4011002040354") + bytes(20) + bytes.fromhex("076178")
    # Keys out of order and a non-shortest head for the PCR: still the same log.
    loose = bytes.fromhex("81a40761780354") + bytes(20) + bytes.fromhex("0204011810")
    assert parse_event_log(loose).events == parse_event_log(raw).events


@pytest.mark.parametrize(
    ("hex_", "message"),
    [
        ("8101", "not a map"),
        ("81a2011002" + "0b", "missing key 3"),
        ("81a4011002040354" + "00" * 20 + "0800", "unknown key"),
        ("81a3011818020b035820" + "00" * 32, "out of range"),
        ("81a301f5020b035820" + "00" * 32, "not an unsigned integer"),
        ("81a3011002190123035820" + "00" * 32, "0x0123 is not supported"),
        ("81a3011002040355" + "00" * 21, "not a 20-byte SHA1 digest"),
        ("81a4011002040354" + "00" * 20 + "0481" + "01", "component-id"),
        ("81a4011002040354" + "00" * 20 + "0501", "manifest-digest"),
        ("81a4011002040354" + "00" * 20 + "0620", "sequence-number"),
        ("81a4011002040354" + "00" * 20 + "0740", "description"),
        ("81a3011001100354" + "00" * 20, "duplicate map key"),
        ("9f" + "ff", "indefinite-length"),
        ("80" + "00", "trailing"),
        ("", "empty"),
    ],
)
def test_compact_malformed(hex_: str, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        parse_event_log(bytes.fromhex(hex_))


def test_unsupported_bank_is_an_unsupported_error() -> None:
    with pytest.raises(UnsupportedError):
        parse_event_log(bytes.fromhex("81a3011002120354") + bytes(20))
    with pytest.raises(UnsupportedError):
        replay(parse_event_log(b"\x80"), [TpmAlg.SM3_256])


def test_encode_refuses_events_that_are_not_compact() -> None:
    for bad in (
        Event(0, 1, {SHA1: bytes(20)}, b""),
        Event(0, None, {SHA1: bytes(20)}, b"data"),
        Event(0, None, {SHA1: bytes(20), SHA256: bytes(32)}, b""),
        Event(0, None, {SHA1: bytes(32)}, b""),
        Event(24, None, {SHA1: bytes(20)}, b""),
    ):
        with pytest.raises(RuntimeError):
            encode_compact_log([bad])


# --- fuzz -----------------------------------------------------------------------------


@settings(max_examples=examples(400))
@given(
    st.binary(max_size=300)
    | st.binary(max_size=300).map(lambda b: b"\x81" + b)
    | st.binary(max_size=200).map(lambda b: agile_log(3)[0][:120] + b)
)
def test_fuzz_raises_only_decode_error(data: bytes) -> None:
    try:
        log = parse_event_log(data)
    except DecodeError:
        return
    replay(log, [SHA1, SHA256])


# --- a real TPM: what a device does at boot ------------------------------------------


@pytest.fixture(scope="module")
def esapi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tpm2_pytss import ESAPI

    with running_swtpm(tmp_path_factory.mktemp("swtpm")) as tpm, ESAPI(tpm.tcti) as ectx:
        yield ectx


def test_swtpm_pcr16_matches_the_compact_log(esapi: Any) -> None:
    from tpm2_pytss import ESYS_TR, TPM2_ALG, TPML_DIGEST_VALUES, TPMT_HA, TPMU_HA

    images = [b"bootloader image", b"application image"]
    events = [image_event(16, image, 7) for image in images]
    esapi.pcr_reset(ESYS_TR.PCR16)  # resettable at locality 0 (notes/tpm-stack.md)
    for ev in events:
        digest = TPMU_HA(sha256=ev.digests[SHA256])
        esapi.pcr_extend(
            ESYS_TR.PCR16, TPML_DIGEST_VALUES([TPMT_HA(hashAlg=TPM2_ALG.SHA256, digest=digest)])
        )
    _, _, values = esapi.pcr_read("sha256:16")
    quoted = {SHA256: {16: bytes(values[0])}}

    log = parse_event_log(encode_compact_log(events))
    assert verify_replay(log, quoted, require_all=True) is log
    reordered = parse_event_log(encode_compact_log(events[::-1]))
    with pytest.raises(VerificationError, match="SHA256 PCR 16"):
        verify_replay(reordered, quoted)
    tampered = [events[0], image_event(16, b"application imagf", 7)]
    with pytest.raises(VerificationError, match="SHA256 PCR 16"):
        verify_replay(parse_event_log(encode_compact_log(tampered)), quoted)
