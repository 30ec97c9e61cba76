"""Seed corpora: the public vectors, read in place from ``$SUITSRV_VECTORS`` at run time, plus
inputs built with our own builders and the fuzz keys (the shapes the test fixtures use), so
each target starts from inputs that reach past the first length check and verify.

Without vectors the built seeds alone still give every target a valid starting point.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import attest._cbor as acbor
import attest._cose as acose
from attest.eventlog import Event, encode_compact_log
from attest.tpm import TpmAlg
from manifests import (
    Digest,
    Record,
    ReportResult,
    SystemPropertyClaims,
    build_manifest,
    build_report,
    load_spec,
    sign,
    sign_report,
)
from manifests.cose import mac0, sign1

from .keys import ATTEST_HMAC, ATTEST_SIGNER, MANIFEST_HMAC, MANIFEST_SIGNER, vectors_root

__all__ = ["SEEDS", "vector_files"]

NONCE = bytes(range(32))
_SPEC = """
vendor-domain = "acme.example"
class-name = "thermostat-v2"
sequence-number = 7
version = "1.7.0"
[[component]]
id = ["firmware"]
digest = "{digest}"
size = 1024
uri = "https://updates.example/v1/payloads/{digest}"
"""


def vector_files(*patterns: str) -> Iterator[bytes]:
    """The bytes of every vector file matching a glob under the vectors folder."""
    root = vectors_root()
    if root is None:
        return
    seen: set[Path] = set()
    for pattern in patterns:
        for path in sorted(root.glob(pattern)):
            if path.is_file() and path not in seen:
                seen.add(path)
                yield path.read_bytes()


def _suit_index_files(fmt: str) -> Iterator[bytes]:
    root = vectors_root()
    index = root / "suit" / "index.json" if root else None
    if root is None or index is None or not index.is_file():
        return
    for case in json.loads(index.read_text(encoding="utf-8"))["vectors"]:
        if case["format"] == fmt and (root / "suit" / case["file"]).is_file():
            yield (root / "suit" / case["file"]).read_bytes()


def _envelopes() -> Iterator[bytes]:
    manifest = build_manifest(load_spec(_SPEC.format(digest=hashlib.sha256(b"fw").hexdigest())))
    yield manifest
    yield sign(manifest, [MANIFEST_SIGNER, MANIFEST_HMAC])
    yield from _suit_index_files("SUIT_Envelope")


def _suit_cose() -> Iterator[bytes]:
    for detached in (False, True):
        yield sign1(b"suit payload", MANIFEST_SIGNER, detached=detached)
        yield mac0(b"suit payload", MANIFEST_HMAC, detached=detached)
    yield from _suit_index_files("SUIT_Encryption_Info")


def _reports() -> Iterator[bytes]:
    record = Record((0, 1), 7, 2, 0, {3: b"\x01", -1: "custom"})
    report = build_report(
        reference_uri="coaps://fw.example/m.suit",
        manifest_digest=Digest.of(b"manifest"),
        records=[SystemPropertyClaims((b"\x00",), {14: 34768}), record],
        result=ReportResult(False, 3, record, 1),
        nonce=b"\x11" * 8,
    )
    yield report
    yield sign_report(report, MANIFEST_SIGNER)
    yield sign_report(report, MANIFEST_HMAC)
    yield from _suit_index_files("SUIT_Report")


def _psa_claims() -> bytes:
    # RFC 9783 §4 claims-set, the shape tests/token_helpers.psa_map encodes.
    return acbor.dumps({
        265: "tag:psacertified.org,2023:psa#tfm", 10: NONCE, 256: b"\x01" + bytes(32),
        2396: bytes(32), 2394: 1, 2395: 12288,
        2399: [{1: "BL", 2: hashlib.sha256(b"bl").digest(), 5: bytes(32), 4: "1.0"}],
    })  # fmt: skip


def _eat_claims() -> bytes:
    # RFC 9711 §4: eat_nonce (10), ueid (256), measurements (273) as CoSWID-less digests.
    return acbor.dumps({10: NONCE, 256: b"\x01" + bytes(16), 263: 3, 258: 64242})


def _attest_cose() -> Iterator[bytes]:
    for payload in (b"", _psa_claims(), _eat_claims()):
        yield acose.sign1(payload, ATTEST_SIGNER)
        yield acose.mac0(payload, ATTEST_HMAC)


def _psa() -> Iterator[bytes]:
    yield acose.sign1(_psa_claims(), ATTEST_SIGNER)
    yield acose.mac0(_psa_claims(), ATTEST_HMAC)
    yield from vector_files("attest/psa/*/*.cbor", "attest/psa/*/*/*.cbor", "attest/psa/*/*.cose")
    yield from vector_files("attest/psa/*/*sign1.bin")


def _eat() -> Iterator[bytes]:
    signed = acose.sign1(_eat_claims(), ATTEST_SIGNER)
    yield signed
    yield acbor.dumps(acbor.Tag(61, acbor.loads(signed, what="seed")))  # RFC 8392 CWT tag
    yield from vector_files("attest/eat/*/*.cbor")


def _compact_log() -> bytes:
    events = [
        Event(
            pcr,
            None,
            {TpmAlg.SHA256: hashlib.sha256(bytes([pcr])).digest()},
            b"",
            component_id=(b"firmware",),
            manifest_digest=bytes(32),
            sequence_number=7,
            description="fw",
        )
        for pcr in (0, 16)
    ]
    return encode_compact_log(events)


def _eventlogs() -> Iterator[bytes]:
    yield _compact_log()
    yield from vector_files("attest/tpm/*/eventlog*.bin", "attest/tpm/*/*.eventlog*")


def _tpm_evidence() -> Iterator[bytes]:
    quotes = list(vector_files("attest/tpm/*/quote.tpms_attest.bin")) or [b"\xffTCG\x80\x18"]
    sigs = list(vector_files("attest/tpm/*/quote.tpmt_signature.bin")) or [b"\x00\x18"]
    for quote, sig in zip(quotes, sigs, strict=False):
        yield acbor.dumps({
            "nonce": NONCE[:20], "quote": quote, "signature": sig, "device_id": "dev-1",
            "pcrs": {"sha256": {16: bytes(32)}}, "event_log": _compact_log(),
        })  # fmt: skip


def _json() -> Iterator[bytes]:
    yield b'{"device_id": "dev-1", "format": "psa-token", "nonce": "AAAA", "token": "AAAA"}'
    yield b'{"a": [1, 2.5, -3e400, null, true, "\\u00e9"], "b": {"c": {}}}'
    yield from vector_files("attest/*/*/expected.json", "attest/tpm/*/pcrs.json")


def _evidence_bodies() -> Iterator[bytes]:
    # First byte picks the media type (fuzz/targets.py EVIDENCE_TYPES order).
    for kind, seeds in enumerate((_json, _tpm_evidence, _psa, _eat)):
        for seed in seeds():
            yield bytes([kind]) + seed


SEEDS: dict[str, Callable[[], Iterator[bytes]]] = {
    "suit-envelope": _envelopes,
    "suit-cose": _suit_cose,
    "suit-report": _reports,
    "attest-cose": _attest_cose,
    "tpms-attest": lambda: vector_files("attest/tpm/*/*tpms_attest.bin", "attest/tpm/*/*/*.bin"),
    "tpmt-signature": lambda: vector_files("attest/tpm/*/*tpmt_signature.bin"),
    "tpm2b-public": lambda: vector_files(
        "attest/tpm/*/*.tpm2b_public.bin", "attest/tpm/*/*public.bin"
    ),
    "eventlog": _eventlogs,
    "psa-token": _psa,
    "eat": _eat,
    "tpm-evidence": _tpm_evidence,
    "pcr-file": lambda: vector_files("attest/tpm/*/*pcrs*"),
    "json-body": _json,
    "evidence-body": _evidence_bodies,
    "canary": lambda: iter([b"a"]),
}
