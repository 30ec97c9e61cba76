"""What the agent checks before it installs anything: a subset of a SUIT manifest processor
(draft-ietf-suit-manifest-37 §6), pure and synchronous. Bytes and the device's identity in,
an install plan out, or ManifestRefused naming the failed condition for the SUIT report.

Checked, in order:

1. The envelope parses and verifies against the vendor key the device was provisioned with
   (``manifests.verify_envelope``; §8.3) — not against anything the server says.
2. It is for this device: the manifest checks vendor-id and class-id (§8.4.9.1,
   condition-vendor-identifier / condition-class-identifier), and every component it sets
   them for sets ours (UUIDs from manifest-37 §8.4.8.2).
3. It is newer than what runs: its sequence number exceeds the installed one (§8.4.2,
   RFC 9124 REQ.SEC.SEQUENCE), unless it is the very manifest installed.
4. Every component to install has one SHA-256 image digest, one size and one URI (or an
   integrated payload, §7.6); use-before has not passed (update-management-12 §6.1).
   Dependencies and several digests per component (try-each over slots) are not supported.

The image itself is checked against digest and size after download (download.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from manifests import (
    DecodeError,
    Digest,
    TrustAnchor,
    UnsupportedError,
    VerificationError,
    VerifiedManifest,
    parse_envelope,
    summarize,
    verify_envelope,
)
from manifests.model import (
    CommandSequence,
    ComponentId,
    Manifest,
    PolicyCommand,
    RunSequence,
    TryEach,
)
from manifests.numbers import Command, DigestAlg, EnvelopeKey, ManifestKey, ReportReason

from .errors import ManifestRefused

__all__ = ["Component", "InstallPlan", "check_manifest"]


@dataclass(frozen=True)
class Component:
    """One image to fetch and install."""

    index: int
    component_id: ComponentId
    digest: Digest
    size: int
    uri: str
    integrated: bytes | None = None


@dataclass(frozen=True)
class InstallPlan:
    """An authentic manifest for this device and the images it installs."""

    verified: VerifiedManifest
    components: tuple[Component, ...]
    already_installed: bool

    @property
    def digest(self) -> Digest:
        return self.verified.digest

    @property
    def sequence_number(self) -> int:
        return self.verified.sequence_number

    @property
    def reference_uri(self) -> str:
        return self.verified.manifest.reference_uri or ""


def _sequences(manifest: Manifest) -> Iterator[CommandSequence]:
    for seq in (
        manifest.common.shared_sequence, manifest.dependency_resolution, manifest.payload_fetch,
        manifest.install, manifest.candidate_verification, manifest.validate, manifest.load,
        manifest.invoke,
    ):  # fmt: skip
        if seq is not None:
            yield seq


def _commands(seq: CommandSequence) -> Iterator[int]:
    for step in seq.steps:
        if isinstance(step, PolicyCommand):
            yield step.command
        elif isinstance(step, TryEach):
            for option in step.sequences:
                yield from _commands(option)
        elif isinstance(step, RunSequence):
            yield from _commands(step.sequence)


def _unsupported(
    digests: tuple[Digest, ...], sizes: tuple[int, ...], uris: tuple[str, ...]
) -> tuple[str, ReportReason] | None:
    if len(digests) != 1 or len(sizes) != 1:
        return "needs one image digest and one size", ReportReason.PARAMETER_UNSUPPORTED
    if digests[0].algorithm is not DigestAlg.SHA256:
        return "only SHA-256 image digests are supported", ReportReason.ALG_UNSUPPORTED
    if len(uris) != 1:
        return "needs exactly one URI", ReportReason.PARAMETER_UNSUPPORTED
    return None


def check_manifest(
    data: bytes,
    anchor: TrustAnchor,
    *,
    vendor_id: uuid.UUID,
    class_id: uuid.UUID,
    installed: bytes | None,
    now: float,
) -> InstallPlan:
    """Check the envelope ``data`` (see the module docstring); ``installed`` is the envelope
    the device runs (our own copy, verified when it was installed)."""
    try:
        envelope = parse_envelope(data)
    except UnsupportedError as exc:
        raise ManifestRefused(
            f"unsupported envelope: {exc}", code=ReportReason.COSE_UNSUPPORTED
        ) from exc
    except DecodeError as exc:
        raise ManifestRefused(
            f"envelope does not parse: {exc}", code=ReportReason.CBOR_PARSE
        ) from exc
    digest, manifest = envelope.digest, envelope.manifest

    def refuse(
        reason: str, code: ReportReason, *, command: int = 0, section: int = 0, component: int = 0
    ) -> ManifestRefused:
        return ManifestRefused(reason, code=code, command=command, section=section,
                               component=component, digest=digest,
                               reference_uri=manifest.reference_uri or "")  # fmt: skip

    try:
        verified = verify_envelope(envelope, [anchor])
    except VerificationError as exc:
        raise refuse(f"not authentic under the vendor key: {exc}", ReportReason.UNAUTHORISED,
                     section=EnvelopeKey.AUTHENTICATION_WRAPPER) from exc  # fmt: skip
    commands = {c for seq in _sequences(manifest) for c in _commands(seq)}
    for command, what in ((Command.VENDOR_IDENTIFIER, "vendor-id"),
                          (Command.CLASS_IDENTIFIER, "class-id")):  # fmt: skip
        if command not in commands:
            raise refuse(f"the manifest does not check the {what}", ReportReason.CONDITION_FAILED,
                         command=command, section=ManifestKey.COMMON)  # fmt: skip
    if manifest.common.dependencies or envelope.integrated_dependencies:
        raise refuse("manifests with dependencies are not supported",
                     ReportReason.COMPONENT_UNSUPPORTED, section=ManifestKey.COMMON)  # fmt: skip
    if installed is not None:
        current = parse_envelope(installed)
        if current.digest == digest:
            return InstallPlan(verified, (), already_installed=True)
        if manifest.sequence_number <= current.manifest.sequence_number:
            raise refuse(
                f"sequence number {manifest.sequence_number} does not exceed the installed "
                f"{current.manifest.sequence_number} (rollback)", ReportReason.CONDITION_FAILED,
                section=ManifestKey.MANIFEST_SEQUENCE_NUMBER,
            )  # fmt: skip
    components: list[Component] = []
    for summary in summarize(manifest):
        index = summary.index
        for values, ours, command, what in (
            (summary.vendor_ids, vendor_id, Command.VENDOR_IDENTIFIER, "vendor-id"),
            (summary.class_ids, class_id, Command.CLASS_IDENTIFIER, "class-id"),
        ):
            if values != (ours,):
                shown = ", ".join(str(v) for v in values) or "none"
                raise refuse(f"component {index}: {what} {shown} is not ours ({ours})",
                             ReportReason.CONDITION_FAILED, command=command, component=index,
                             section=ManifestKey.COMMON)  # fmt: skip
        if any(now > limit for limit in summary.use_before):
            raise refuse(f"component {index}: use-before has passed",
                         ReportReason.CONDITION_FAILED, command=Command.USE_BEFORE,
                         component=index, section=ManifestKey.COMMON)  # fmt: skip
        if not summary.image_digests:
            continue  # nothing to install for this component
        problem = _unsupported(summary.image_digests, summary.image_sizes, summary.uris)
        if problem is not None:
            raise refuse(f"component {index}: {problem[0]}", problem[1], component=index,
                         section=ManifestKey.INSTALL)  # fmt: skip
        (image,), (size,), (uri,) = summary.image_digests, summary.image_sizes, summary.uris
        integrated = envelope.integrated_payloads.get(uri) if uri.startswith("#") else None
        if uri.startswith("#") and integrated is None:
            raise refuse(f"component {index}: integrated payload {uri} is missing",
                         ReportReason.OPERATION_FAILED, command=Command.FETCH, component=index,
                         section=ManifestKey.INSTALL)  # fmt: skip
        components.append(Component(index, summary.component_id, image, size, uri, integrated))
    if not components:
        raise refuse("the manifest installs no image", ReportReason.COMPONENT_UNSUPPORTED)
    return InstallPlan(verified, tuple(components), already_installed=False)
