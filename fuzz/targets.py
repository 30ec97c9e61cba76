"""One fuzz target per decoder, and the property every target checks.

Property (STYLE.md "Tests"): for any bytes, the decoder — and the verify step the service runs
right after it — returns, or raises its own ring's typed error. ``manifests`` raises
``ManifestError`` (DecodeError, UnsupportedError, VerificationError), ``attest`` raises
``AttestError``, the service's body parsers raise ``ServiceError`` (a 4xx problem). Anything
else (IndexError, RecursionError, a library's own exception, ...) escapes ``check`` and is a
finding: atheris stops, prints the stack and writes the input to a ``crash-*`` file.

Import this module inside ``atheris.instrument_imports()`` so the decoders are instrumented.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import attest._cose as acose
from attest.deb import parse_deb, verify_deb
from attest.eat import parse_eat, verify_eat
from attest.errors import AttestError
from attest.eventlog import parse_event_log, replay, verify_replay
from attest.evidence import parse_tpm_evidence
from attest.psa import parse_psa_token, verify_psa_token
from attest.quote import parse_pcr_file, verify_attest_signature
from attest.tpm import TpmAlg, parse_attest, parse_signature
from attest.tpm_public import parse_public, require_ak
from manifests.cose import parse_cose, parse_encryption_info, verify_cose
from manifests.errors import ManifestError
from manifests.parse import parse_envelope
from manifests.report import parse_report, verify_report
from manifests.summary import summarize
from manifests.verify import verify_envelope
from suitsrv.attestation import EVIDENCE_TYPES, evidence_from_body
from suitsrv.errors import ServiceError
from suitsrv.jsonbody import json_object

from .keys import ak_keys, attest_keys, manifest_anchors
from .seeds import SEEDS

__all__ = ["CANARY", "TARGETS", "Target"]

# A fixed TPMS_ATTEST for the signature target: the signature covers these bytes as given.
_QUOTED = b"\xff\x54\x43\x47\x80\x18" + bytes(64)
_MEDIA_TYPES = tuple(EVIDENCE_TYPES)  # insertion order: json, cbor, psa, eat (fuzz/seeds.py)


@dataclass(frozen=True)
class Target:
    """A decoder under test: ``run`` takes any bytes; ``allowed`` is its ring's error tree."""

    name: str
    run: Callable[[bytes], object]
    allowed: tuple[type[Exception], ...]
    max_len: int = 4096

    def check(self, data: bytes) -> None:
        """The property: ``run`` returns or raises one of ``allowed``; anything else escapes."""
        with contextlib.suppress(*self.allowed):
            self.run(data)

    def seeds(self) -> Iterable[bytes]:
        return SEEDS[self.name]()


def _suit_envelope(data: bytes) -> None:
    envelope = parse_envelope(data)
    summarize(envelope.manifest)  # the service and the agent read components from it
    verify_envelope(envelope, manifest_anchors())


def _suit_cose(data: bytes) -> None:
    with contextlib.suppress(ManifestError):
        parse_encryption_info(data)
    msg = parse_cose(data)
    verify_cose(msg, manifest_anchors(), detached_payload=b"p" if msg.payload is None else None)


def _suit_report(data: bytes) -> None:
    verify_report(parse_report(data), manifest_anchors())


def _attest_cose(data: bytes) -> None:
    acose.verify_cose(acose.parse_cose(data), attest_keys())


def _tpms_attest(data: bytes) -> None:
    parse_attest(data)


def _tpmt_signature(data: bytes) -> None:
    parse_signature(data)
    for ak in ak_keys():
        with contextlib.suppress(AttestError):
            verify_attest_signature(_QUOTED, data, ak, allow_sha1=True)


def _tpm2b_public(data: bytes) -> None:
    require_ak(parse_public(data))


def _eventlog(data: bytes) -> None:
    log = parse_event_log(data)
    replay(log, [TpmAlg.SHA1, TpmAlg.SHA256])
    verify_replay(log, {}, require_all=True)


def _psa_token(data: bytes) -> None:
    token = parse_psa_token(data)
    verify_psa_token(token, attest_keys(), expected_nonce=token.claims.nonce)


def _eat(data: bytes) -> None:
    with contextlib.suppress(AttestError):
        token = parse_eat(data)
        verify_eat(token, attest_keys(), expected_nonce=next(iter(token.claims.nonce), None))
    verify_deb(parse_deb(data), attest_keys())


def _tpm_evidence(data: bytes) -> None:
    parse_tpm_evidence(data)


def _pcr_file(data: bytes) -> None:
    parse_pcr_file(data)


def _json_body(data: bytes) -> None:
    json_object(data)


def _evidence_body(data: bytes) -> None:
    # What POST /v1/device/attestation/evidence decodes: the first byte picks the media type.
    if data:
        evidence_from_body(_MEDIA_TYPES[data[0] % len(_MEDIA_TYPES)], data[1:], None)


_M, _A, _S = (ManifestError,), (AttestError,), (ServiceError,)
TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("suit-envelope", _suit_envelope, _M, max_len=16384),
        Target("suit-cose", _suit_cose, _M),
        Target("suit-report", _suit_report, _M),
        Target("attest-cose", _attest_cose, _A),
        Target("tpms-attest", _tpms_attest, _A, max_len=1024),
        Target("tpmt-signature", _tpmt_signature, _A, max_len=1024),
        Target("tpm2b-public", _tpm2b_public, _A, max_len=1024),
        Target("eventlog", _eventlog, _A, max_len=65536),
        Target("psa-token", _psa_token, _A),
        Target("eat", _eat, _A),
        Target("tpm-evidence", _tpm_evidence, _A, max_len=8192),
        Target("pcr-file", _pcr_file, _A),
        Target("json-body", _json_body, _S),
        Target("evidence-body", _evidence_body, _S + _A, max_len=8192),
    )
}


def _canary(data: bytes) -> None:
    # The harness's self-test (tests/test_fuzz_smoke.py): an "ASCII decoder" that lets
    # UnicodeDecodeError escape, which atheris must report as a finding within a few inputs.
    data[:1].decode("ascii")


CANARY = Target("canary", _canary, _A)  # not in TARGETS: never part of a campaign
