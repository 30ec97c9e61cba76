"""SUIT_Report (draft-ietf-suit-report-20): parse, verify, build and sign.

A device reports what it did with a manifest. The report names the manifest by its digest
(report-20 §4: the SUIT_Digest of the authentication wrapper, the manifest's identity), so
the service maps reports to manifests by digest, never by sequence number.

Containers (report-20 CDDL ``SUIT_Report_Protected``): a bare SUIT_Report map, or a tagged
COSE_Sign1 / COSE_Mac0 with the report ATTACHED as payload. Only a report in a container
verifies; a bare one parses (for inspection) but ``verify_report`` refuses it. Refused:
untagged containers (the CDDL allows them, but Sign1 and Mac0 then cannot be told apart)
and COSE_Encrypt0 payloads. The report map need not be canonical: report-20 does not ask
for it, the only public report bytes (AttesTAM) put key 99 first, and we keep and verify
the bytes as received, never a re-encoding. Extension sockets ($$SUIT_Report_Extensions,
$$SUIT_Record_Extensions, capability-report extensions and ``[+int]`` keys) are refused
as UnsupportedError; parameters inside records and claims are kept as received.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from . import _cbor
from .cose import Algorithm, CoseMessage, SigningKey, TrustAnchor, mac0, parse_cose, sign1
from .cose import verify_cose as _verify_cose
from .digest import Digest, parse_digest
from .errors import DecodeError, UnsupportedError, VerificationError
from .numbers import ReportKey, ReportReason

__all__ = [
    "Record",
    "Report",
    "ReportResult",
    "SystemPropertyClaims",
    "build_report",
    "parse_report",
    "sign_report",
    "verify_report",
]


@dataclass(frozen=True)
class Record:
    """A SUIT_Record: where in which manifest the processor was, and what it saw."""

    manifest_id: tuple[int, ...]
    section: int
    offset: int
    component_index: int
    properties: Mapping[int, object]


@dataclass(frozen=True)
class SystemPropertyClaims:
    """Parameters the device claims for one of its components."""

    component_id: tuple[bytes, ...]
    properties: Mapping[int, object]


_REASONS: Final = frozenset(int(r) for r in ReportReason)


@dataclass(frozen=True)
class ReportResult:
    """``true``, or a failure with its code, record and reason (unknown reasons stay ints)."""

    success: bool
    code: int | None = None
    record: Record | None = None
    reason: ReportReason | int | None = None

    def __post_init__(self) -> None:
        present = [d is not None for d in (self.code, self.record, self.reason)]
        if any(present) if self.success else not all(present):
            raise RuntimeError("a failed result needs code, record and reason; success none")
        if self.reason in _REASONS:
            object.__setattr__(self, "reason", ReportReason(self.reason))


@dataclass(frozen=True)
class Report:
    """A parsed SUIT_Report, with the bytes received and the COSE container, if any."""

    reference_uri: str
    manifest_digest: Digest
    nonce: bytes | None
    records: tuple[Record | SystemPropertyClaims, ...]
    result: ReportResult
    capability_report: Mapping[int, object] | None
    raw: bytes
    report_bytes: bytes
    cose: CoseMessage | None


def _is_int(obj: object) -> bool:
    return isinstance(obj, int) and not isinstance(obj, bool)


def _is_uint(obj: object) -> bool:
    return isinstance(obj, int) and not isinstance(obj, bool) and obj >= 0


def _freeze(obj: object) -> object:
    if isinstance(obj, list):
        return tuple(_freeze(v) for v in obj)
    if isinstance(obj, dict):
        return MappingProxyType({k: _freeze(v) for k, v in obj.items()})
    if isinstance(obj, _cbor.Tag):
        return _cbor.Tag(obj.number, _freeze(obj.value))
    return obj


def _thaw(obj: object) -> object:
    if isinstance(obj, Mapping):
        return {k: _thaw(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_thaw(v) for v in obj]
    if isinstance(obj, _cbor.Tag):
        return _cbor.Tag(obj.number, _thaw(obj.value))
    return obj


def _params(obj: object, what: str) -> Mapping[int, object]:
    if not isinstance(obj, dict):
        raise DecodeError(f"{what}: expected a map")
    if not all(_is_int(k) for k in obj):
        raise DecodeError(f"{what}: parameter labels must be integers")
    return MappingProxyType({k: _freeze(v) for k, v in obj.items()})


# SUIT_Record = [
#     suit-record-manifest-id        : [* uint ],
#     suit-record-manifest-section   : int,
#     suit-record-section-offset     : uint,
#     suit-record-component-index    : uint,
#     suit-record-properties         : {*$$SUIT_Parameters},
#     $$SUIT_Record_Extensions
# ]
def _record(obj: object, what: str) -> Record:
    if not isinstance(obj, list) or len(obj) < 5:
        raise DecodeError(f"{what}: SUIT_Record must be an array of five elements")
    if len(obj) > 5:
        raise UnsupportedError(f"{what}: SUIT_Record extensions are not supported")
    manifest_id, section, offset, index, properties = obj
    if not isinstance(manifest_id, list) or not all(_is_uint(i) for i in manifest_id):
        raise DecodeError(f"{what}: manifest-id must be an array of unsigned integers")
    if not _is_int(section) or not _is_uint(offset) or not _is_uint(index):
        raise DecodeError(f"{what}: section must be an int, offset and component-index uints")
    props = _params(properties, f"{what} properties")
    return Record(tuple(manifest_id), section, offset, index, props)


# system-property-claims = {
#   system-component-id => SUIT_Component_Identifier,
#   + $$SUIT_Parameters,
# }
# system-component-id = 0
# SUIT_Component_Identifier =  [* bstr]                       ; manifest-37
def _claims(obj: object, what: str) -> SystemPropertyClaims:
    params = _params(obj, what)  # integer labels first: False must not pass for key 0
    component_id = params.get(0)
    if not isinstance(component_id, tuple) or not all(isinstance(c, bytes) for c in component_id):
        raise DecodeError(f"{what}: system-component-id (0) must be an array of byte strings")
    if len(params) < 2:
        raise DecodeError(f"{what}: system-property-claims need at least one parameter")
    props = MappingProxyType({k: v for k, v in params.items() if k != 0})
    return SystemPropertyClaims(component_id, props)


#   suit-report-result          => true / {
#     suit-report-result-code   => int,
#     suit-report-result-record => SUIT_Record,
#     suit-report-result-reason => SUIT_Report_Reasons,
#   },
# suit-report-result-code = 5, suit-report-result-record = 6, suit-report-result-reason = 7
# SUIT_Report_Reasons: 0 (ok) .. 12 (invoke-pending); later values are kept as ints.
_RESULT_KEYS: Final = (ReportKey.RESULT_CODE, ReportKey.RESULT_RECORD, ReportKey.RESULT_REASON)


def _result(obj: object) -> ReportResult:
    what = "SUIT_Report result"
    if obj is True:
        return ReportResult(True)
    if not isinstance(obj, dict):
        raise DecodeError(f"{what}: must be true or a map of code, record and reason")
    if unknown := [k for k in obj if not _is_int(k) or k not in _RESULT_KEYS]:
        raise UnsupportedError(f"{what}: unknown key(s) {unknown!r}")
    if missing := [int(k) for k in _RESULT_KEYS if k not in obj]:
        raise DecodeError(f"{what}: missing key(s) {missing}")
    code, record, reason = (obj[k] for k in _RESULT_KEYS)
    if not _is_int(code) or not _is_int(reason):
        raise DecodeError(f"{what}: result-code and result-reason must be integers")
    return ReportResult(False, code, _record(record, f"{what} record"), reason)


# SUIT_Capability_Report = {
#   suit-component-capabilities  => [+ SUIT_Component_Capability]
#   suit-command-capabilities          => [+ int],
#   suit-parameters-capabilities       => [+ int],
#   suit-crypt-algo-capabilities       => [+ int],
#   ? suit-envelope-capabilities       => [+ int],
#   ? suit-manifest-capabilities       => [+ int],
#   ? suit-common-capabilities         => [+ int],
#   ? suit-text-capabilities           => [+ int],
#   ? suit-text-component-capabilities => [+ int],
#   ? suit-dependency-capabilities     => [+ int],
#   * [+int]                           => [+ int],
#   $$SUIT_Capability_Report_Extensions
# }
# SUIT_Component_Capability = [*bstr,?true]
# suit-component-capabilities = 1 ... suit-dependency-capabilities = 10
def _capabilities(obj: object) -> Mapping[int, object]:
    what = "SUIT_Report capability-report"
    if not isinstance(obj, dict):
        raise DecodeError(f"{what}: expected a map")
    if unknown := [k for k in obj if not _is_int(k) or not 1 <= k <= 10]:
        raise UnsupportedError(f"{what}: unsupported key(s) {unknown!r}")
    if missing := [k for k in (1, 2, 3, 4) if k not in obj]:
        raise DecodeError(f"{what}: missing key(s) {missing}")
    for key, value in obj.items():
        if not isinstance(value, list) or not value:
            raise DecodeError(f"{what}: entry {key} must be a non-empty array")
        for item in value:
            if key != 1 and not _is_int(item):
                raise DecodeError(f"{what}: entry {key} must hold integers")
            if key == 1 and not (
                isinstance(item, list)
                and all(isinstance(p, bytes) for p in item[:-1])
                and (not item or isinstance(item[-1], bytes) or item[-1] is True)
            ):
                raise DecodeError(f"{what}: a component capability is [* bstr, ? true]")
    return _params(obj, what)


# SUIT_Report = {
#   suit-reference              => SUIT_Reference,
#   ? suit-report-nonce         => bstr,
#   suit-report-records         => [
#     * SUIT_Record / system-property-claims ],
#   suit-report-result          => true / { ... see above },
#   ? suit-report-capability-report => SUIT_Capability_Report,
#   $$SUIT_Report_Extensions
# }
# SUIT_Reference = [
#     suit-report-manifest-uri : tstr,
#     suit-report-manifest-digest : SUIT_Digest
# ]
# suit-report-nonce = 2, suit-report-records = 3, suit-report-result = 4,
# suit-report-capability-report = 8, suit-reference = 99
_TOP_KEYS: Final = frozenset(ReportKey) - frozenset(_RESULT_KEYS)
_REQUIRED: Final = (ReportKey.REFERENCE, ReportKey.RECORDS, ReportKey.RESULT)


def _parse_body(report_bytes: bytes, raw: bytes, cose: CoseMessage | None) -> Report:
    obj = _cbor.loads(report_bytes, what="SUIT_Report", canonical=False)
    if isinstance(obj, _cbor.Tag) and obj.number == 16:
        raise UnsupportedError("SUIT_Report: encrypted reports (COSE_Encrypt0) are not supported")
    if not isinstance(obj, dict):
        raise DecodeError("SUIT_Report: expected a map")
    if unknown := [k for k in obj if not _is_int(k) or k not in _TOP_KEYS]:
        raise UnsupportedError(f"SUIT_Report: unknown key(s) {unknown!r}")
    if missing := [int(k) for k in _REQUIRED if k not in obj]:
        raise DecodeError(f"SUIT_Report: missing key(s) {missing}")
    reference = obj[ReportKey.REFERENCE]
    if not isinstance(reference, list) or len(reference) != 2:
        raise DecodeError("SUIT_Report: suit-reference must be [uri, SUIT_Digest]")
    uri, digest = reference
    if not isinstance(uri, str):
        raise DecodeError("SUIT_Report: suit-report-manifest-uri must be a text string")
    nonce = obj.get(ReportKey.NONCE)
    if nonce is not None and not isinstance(nonce, bytes):
        raise DecodeError("SUIT_Report: suit-report-nonce must be a byte string")
    records = obj[ReportKey.RECORDS]
    if not isinstance(records, list):
        raise DecodeError("SUIT_Report: suit-report-records must be an array")
    parsed: list[Record | SystemPropertyClaims] = []
    for n, item in enumerate(records):
        what = f"SUIT_Report records[{n}]"
        parsed.append(_claims(item, what) if isinstance(item, dict) else _record(item, what))
    capabilities = obj.get(ReportKey.CAPABILITY_REPORT)
    return Report(
        reference_uri=uri,
        manifest_digest=parse_digest(digest, "SUIT_Report suit-report-manifest-digest"),
        nonce=nonce,
        records=tuple(parsed),
        result=_result(obj[ReportKey.RESULT]),
        capability_report=None if capabilities is None else _capabilities(capabilities),
        raw=raw,
        report_bytes=report_bytes,
        cose=cose,
    )


def parse_report(data: bytes) -> Report:
    """Parse a bare SUIT_Report, or one attached in a tagged COSE_Sign1 or COSE_Mac0.

    Parsing does not authenticate: call ``verify_report`` before trusting the content.
    """
    if not isinstance(data, bytes | bytearray | memoryview) or not data:
        raise DecodeError("SUIT_Report: expected non-empty bytes")
    data = bytes(data)
    major = data[0] >> 5
    cose: CoseMessage | None = None
    if major == 6:  # a tag: the COSE container (SUIT_Report_Protected)
        cose = parse_cose(data, what="SUIT_Report container")
        if cose.payload is None:
            raise DecodeError("SUIT_Report container: the report must be attached")
        report_bytes = cose.payload
    elif major == 4:
        raise UnsupportedError("SUIT_Report: untagged COSE containers are not supported")
    else:
        report_bytes = data
    return _parse_body(report_bytes, data, cose)


def verify_report(report: Report, anchors: Sequence[TrustAnchor]) -> TrustAnchor:
    """Authenticate a parsed report's container; return the trust anchor that verified it.

    A bare report is refused: RFC 9124 REQ.SEC.REPORTING wants reports authenticated, and
    the container is the only proof of which device sent this one.
    """
    if report.cose is None:
        raise VerificationError("unauthenticated report: no COSE_Sign1 or COSE_Mac0 container")
    if report.cose.payload != report.report_bytes:
        raise VerificationError("SUIT_Report: the report is not the container's payload")
    return _verify_cose(report.cose, anchors)


def _record_value(record: Record) -> list[object]:
    return [
        list(record.manifest_id),
        record.section,
        record.offset,
        record.component_index,
        _thaw(record.properties),
    ]


def _entry_value(entry: Record | SystemPropertyClaims) -> object:
    if isinstance(entry, Record):
        return _record_value(entry)
    if 0 in entry.properties:
        raise RuntimeError("system-property-claims: key 0 is the component id, not a parameter")
    value: dict[int, object] = {0: list(entry.component_id)}
    value.update((k, _thaw(v)) for k, v in entry.properties.items())
    return value


def build_report(
    *,
    reference_uri: str,
    manifest_digest: Digest,
    records: Sequence[Record | SystemPropertyClaims] = (),
    result: ReportResult,
    nonce: bytes | None = None,
) -> bytes:
    """A bare SUIT_Report, deterministically encoded (RFC 8949 §4.2.1).

    Raises RuntimeError when the values would make a report that ``parse_report`` refuses.
    """
    report: dict[int, object] = {
        ReportKey.REFERENCE: [reference_uri, manifest_digest.to_cbor_value()],
        ReportKey.RECORDS: [_entry_value(entry) for entry in records],
        ReportKey.RESULT: True,
    }
    if nonce is not None:
        report[ReportKey.NONCE] = nonce
    if not result.success:
        if result.record is None or result.reason is None:
            raise RuntimeError("a failed ReportResult needs its record and reason")
        report[ReportKey.RESULT] = {
            ReportKey.RESULT_CODE: result.code,
            ReportKey.RESULT_RECORD: _record_value(result.record),
            ReportKey.RESULT_REASON: int(result.reason),
        }
    try:
        data = _cbor.dumps(report)
        _parse_body(data, data, None)  # the builder never emits what the parser would refuse
    except (DecodeError, TypeError, ValueError) as exc:
        raise RuntimeError(f"build_report: not a valid SUIT_Report: {exc}") from exc
    return data


def sign_report(report_bytes: bytes, key: SigningKey) -> bytes:
    """Put ``report_bytes`` (a bare SUIT_Report) attached in a COSE_Sign1, or in a COSE_Mac0
    for an HMAC key."""
    try:
        _parse_body(report_bytes, report_bytes, None)
    except DecodeError as exc:
        raise RuntimeError(f"sign_report: not a bare SUIT_Report: {exc}") from exc
    seal = mac0 if key.algorithm is Algorithm.HMAC_256_256 else sign1
    return seal(report_bytes, key, detached=False)
