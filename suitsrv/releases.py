"""Releases: accepting manifests and payloads from vendors, choosing a device's next update,
and recording what devices report (the update-service capability of the service layer).

Every check that decides whether a manifest is accepted lives here or in ``manifests``; the web
handlers only move bytes and principals in and results out.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from dataclasses import dataclass

from manifests import (
    Algorithm,
    Pen,
    TrustAnchor,
    UnsupportedError,
    VerificationError,
    anchor_from_cose_key,
    anchor_from_pem,
    hmac_anchor,
    parse_envelope,
    parse_report,
    summarize,
    verify_envelope,
    verify_report,
)
from manifests.numbers import DigestAlg, VersionComparison

from .config import Config
from .errors import Conflict, Forbidden, InvalidRequest, NotFound
from .store import (
    AnchorRecord,
    DeviceRecord,
    PayloadRecord,
    PollView,
    ReleaseRecord,
    ReportRecord,
    Store,
)
from .store import device_queries as dq

__all__ = [
    "UpdateDecision",
    "accept_manifest",
    "accept_payload_record",
    "accept_report",
    "poll_hint",
    "select_update",
    "trust_anchors",
    "version_satisfies",
]


class ManifestRejected(VerificationError):
    """The manifest is authentic but not acceptable from this vendor."""

    problem = "manifest-rejected"


def to_trust_anchor(record: AnchorRecord) -> TrustAnchor:
    name = f"{record.vendor}/{record.anchor_id}"
    if record.kind == "pem":
        algs = [Algorithm(a) for a in record.algorithms] or None
        return anchor_from_pem(record.key_data, name=name, algorithms=algs, kid=record.kid)
    if record.kind == "cose_key":
        return anchor_from_cose_key(record.key_data, name=name)
    return hmac_anchor(record.key_data, name=name, kid=record.kid)


async def trust_anchors(store: Store, vendor: str) -> list[TrustAnchor]:
    return [to_trust_anchor(r) for r in await store.anchors_for(vendor)]


def _target(
    manifest_component_id: tuple[bytes, ...] | None, components: Sequence[tuple[bytes, ...]]
) -> str:
    """The rollback key's component part: the manifest-component-id when the manifest has one
    (trust-domains-12 §5.2), else its component identifiers."""
    if manifest_component_id is not None:
        return "mcid:" + "/".join(p.hex() for p in manifest_component_id)
    return "components:" + ";".join("/".join(p.hex() for p in c) for c in components)


async def accept_manifest(
    store: Store, config: Config, vendor: str, data: bytes, now: float
) -> tuple[ReleaseRecord, bool]:
    """Verify an uploaded envelope against the vendor's own anchors and store it.

    Returns (release, created). Raises DecodeError/VerificationError (422) for bad envelopes,
    ManifestRejected for a vendor-id that is not the vendor's, Conflict (409) for a sequence
    number that does not exceed the newest of the same target.
    """
    envelope = parse_envelope(data, max_size=config.limits.envelope_bytes)
    anchors = await trust_anchors(store, vendor)
    if not anchors:
        raise ManifestRejected(f"vendor {vendor!r} has no trust anchors registered")
    verified = verify_envelope(envelope, anchors)
    manifest = verified.manifest
    summaries = summarize(manifest)
    record = await store.get_vendor(vendor)
    if record is None:
        raise NotFound(f"vendor {vendor!r} is not registered")
    vendor_ids = {v for s in summaries for v in s.vendor_ids}
    class_ids = [c for s in summaries for c in s.class_ids]
    if not vendor_ids or not class_ids:
        raise ManifestRejected(
            "the manifest sets no vendor-id and class-id: devices could not match it"
        )
    for vendor_id in vendor_ids:
        shown = (
            f"PEN {vendor_id.relative_oid.hex()}" if isinstance(vendor_id, Pen) else str(vendor_id)
        )
        if isinstance(vendor_id, Pen) or str(vendor_id) not in record.vendor_ids:
            raise ManifestRejected(f"vendor-id {shown} does not belong to vendor {vendor!r}")
    payloads: list[str] = []
    for summary in summaries:
        if any(not uri.startswith("#") for uri in summary.uris):
            payloads += [
                d.hex
                for d in summary.image_digests
                if d.algorithm is DigestAlg.SHA256 and d.hex not in payloads
            ]
    versions = [v for s in summaries for v in s.versions]
    use_before = [u for s in summaries for u in s.use_before]
    release = ReleaseRecord(
        digest=verified.identity,
        vendor=vendor,
        vendor_id=str(next(iter(sorted(str(v) for v in vendor_ids)))),
        class_id=str(class_ids[0]),
        target=_target(manifest.manifest_component_id, manifest.common.components),
        sequence_number=manifest.sequence_number,
        envelope=verified.raw,
        payloads=tuple(payloads),
        published=False,
        signers=verified.signers,
        created_at=now,
        use_before=min(use_before) if use_before else None,
        version=manifest.set_version,
        requires_version=(int(versions[0].comparison), versions[0].version) if versions else None,
    )
    return await store.insert_release(release)


async def accept_payload_record(store: Store, sha256: str, size: int, now: float) -> list[str]:
    """After the blob is durable: record it and publish the releases it completes."""
    return await store.add_payload(PayloadRecord(sha256, size, now))


def version_satisfies(current: tuple[int, ...], comparison: int, wanted: tuple[int, ...]) -> bool:
    """update-management-12 §6.4: compare only as many integers as the manifest gives
    ("= [1]" matches any 1.x); a missing integer in ``current`` counts as 0."""
    have = tuple(current[i] if i < len(current) else 0 for i in range(len(wanted)))
    return {
        VersionComparison.GREATER: have > wanted,
        VersionComparison.GREATER_EQUAL: have >= wanted,
        VersionComparison.EQUAL: have == wanted,
        VersionComparison.LESSER_EQUAL: have <= wanted,
        VersionComparison.LESSER: have < wanted,
    }[VersionComparison(comparison)]


@dataclass(frozen=True)
class UpdateDecision:
    view: PollView
    poll_after: int

    @property
    def release(self) -> ReleaseRecord | None:
        return self.view.release


def poll_hint(config: Config, rng: random.Random) -> int:
    """The poll interval with +-jitter, so a fleet does not poll in lockstep."""
    spread = config.poll_interval * config.poll_jitter
    return max(1, round(config.poll_interval + rng.uniform(-spread, spread)))


async def select_update(
    store: Store, config: Config, device_id: str, now: float, rng: random.Random
) -> UpdateDecision:
    """The newest applicable release above what the device installed, if any (one store read,
    poll_queries.py).

    Conditions a server can judge (update-management-12): use-before, and a version
    requirement against the version of the release the device last reported installing for
    the same target; when that version is unknown, the release is offered and the device
    judges for itself.
    """
    view = await store.poll_view(device_id, int(now), 16, version_satisfies)
    if view is None:
        raise Forbidden(f"device {device_id!r} is not registered")
    return UpdateDecision(view, poll_hint(config, rng))


async def accept_report(
    store: Store, config: Config, device: DeviceRecord, data: bytes, now: float
) -> ReportRecord:
    """Record a SUIT_Report (report-20) from an authenticated device.

    The request carries the device's token; a signed or MACed container is verified too when
    the device has a registered report key. The report must name a stored manifest (by its
    digest) released for this device's vendor and class.
    """
    if len(data) > config.limits.report_bytes:
        raise InvalidRequest(f"report exceeds {config.limits.report_bytes} bytes")
    report = parse_report(data)
    authenticated_by = "token"
    key_pem = device.keys.get("report_key")
    if report.cose is not None and key_pem:
        anchor = anchor_from_pem(key_pem.encode(), name=f"device/{device.device_id}")
        verify_report(report, [anchor])
        authenticated_by = f"token+{report.cose.kind}"
    elif report.cose is None and key_pem:
        raise VerificationError("this device signs its reports; an unsigned report is refused")
    release = await store.get_release(report.manifest_digest.hex)
    if release is None:
        raise NotFound(
            f"the report refers to manifest {report.manifest_digest.hex}, which is unknown"
        )
    served = await store.read(dq.served_digest, device.device_id)
    if not release.published or served != release.digest:
        # A device reports only what it was handed (issue 5 review: otherwise a quarantined
        # device could name an old release and be appraised against it).
        raise Conflict("the report names a release this device was not given by its last update")
    if (release.vendor, release.class_id) != (device.vendor, device.class_id):
        raise Conflict("the report refers to a manifest that was not released for this device")
    reference = parse_envelope(release.envelope).manifest.reference_uri
    if report.reference_uri and reference and report.reference_uri != reference:
        # report-20 §4: suit-reference's URI must be the manifest's reference-uri.
        raise UnsupportedError(
            f"the report's manifest URI {report.reference_uri!r} is not the manifest's "
            f"{reference!r}"
        )
    result = report.result
    record = ReportRecord(
        report_id=0,
        device_id=device.device_id,
        digest=release.digest,
        success=result.success,
        reason=int(result.reason) if result.reason is not None else None,
        authenticated_by=authenticated_by,
        received_at=now,
        records=tuple(repr(r) for r in report.records),
    )
    report_id = await store.record_report(record, release, data)
    return dataclasses.replace(record, report_id=report_id)
