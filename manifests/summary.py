"""What a manifest says about each component, gathered from its command sequences.

A server needs this to file a release (vendor-id, class-id), and the verifier needs it for
reference values (image digests). Parameters are tracked the way a processor would (manifest-37
§6.4, §8.4.10.1 set-component-index); every option of a try-each is visited, so an A/B manifest
(Appendix B example 3) lists the digest of each slot as an acceptable image.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from .digest import Digest
from .model import (
    CommandSequence,
    ComponentId,
    Manifest,
    OverrideMultiple,
    Parameters,
    RunSequence,
    SetComponentIndex,
    SetParameters,
    TryEach,
    VendorId,
    VersionMatch,
)

__all__ = ["ComponentSummary", "integrated_uris", "summarize"]


@dataclass
class _Acc:
    vendor_ids: list[VendorId] = field(default_factory=list)
    class_ids: list[uuid.UUID] = field(default_factory=list)
    image_digests: list[Digest] = field(default_factory=list)
    image_sizes: list[int] = field(default_factory=list)
    uris: list[str] = field(default_factory=list)
    slots: list[int] = field(default_factory=list)
    use_before: list[int] = field(default_factory=list)
    versions: list[VersionMatch] = field(default_factory=list)


@dataclass(frozen=True)
class ComponentSummary:
    """The values a manifest sets for one component (each list in first-seen order)."""

    index: int
    component_id: ComponentId
    vendor_ids: tuple[VendorId, ...]
    class_ids: tuple[uuid.UUID, ...]
    image_digests: tuple[Digest, ...]
    image_sizes: tuple[int, ...]
    uris: tuple[str, ...]
    slots: tuple[int, ...]
    use_before: tuple[int, ...] = ()
    versions: tuple[VersionMatch, ...] = ()


def _add(acc: _Acc, params: Parameters) -> None:
    pairs: list[tuple[list[object], object]] = [
        (acc.vendor_ids, params.vendor_id),  # type: ignore[list-item]
        (acc.class_ids, params.class_id),  # type: ignore[list-item]
        (acc.image_digests, params.image_digest),  # type: ignore[list-item]
        (acc.image_sizes, params.image_size),  # type: ignore[list-item]
        (acc.uris, params.uri),  # type: ignore[list-item]
        (acc.slots, params.component_slot),  # type: ignore[list-item]
        (acc.use_before, params.use_before),  # type: ignore[list-item]
        (acc.versions, params.version),  # type: ignore[list-item]
    ]
    for target, value in pairs:
        if value is not None and value not in target:
            target.append(value)


def _walk(seq: CommandSequence, accs: list[_Acc], current: list[int]) -> list[int]:
    for step in seq.steps:
        if isinstance(step, SetComponentIndex):
            index = step.index
            if index is True:
                current = list(range(len(accs)))
            elif isinstance(index, tuple):
                current = [i for i in index if i < len(accs)]
            elif isinstance(index, int) and not isinstance(index, bool) and index < len(accs):
                current = [index]
        elif isinstance(step, SetParameters):
            for i in current:
                _add(accs[i], step.parameters)
        elif isinstance(step, OverrideMultiple):
            for i, params in step.by_component.items():
                if i < len(accs):
                    _add(accs[i], params)
        elif isinstance(step, TryEach):
            for option in step.sequences:
                _walk(option, accs, list(current))
        elif isinstance(step, RunSequence):
            current = _walk(step.sequence, accs, current)
    return current


def summarize(manifest: Manifest) -> tuple[ComponentSummary, ...]:
    """Per component, the identifiers, digests, sizes, URIs and slots the manifest sets."""
    components = manifest.common.components or ((),)
    accs = [_Acc() for _ in components]
    sequences = [
        manifest.common.shared_sequence,
        manifest.dependency_resolution,
        manifest.payload_fetch,
        manifest.install,
        manifest.candidate_verification,
        manifest.validate,
        manifest.load,
        manifest.invoke,
    ]
    for seq in sequences:
        if seq is not None:
            _walk(seq, accs, [0])
    return tuple(
        ComponentSummary(
            index=i,
            component_id=components[i],
            vendor_ids=tuple(acc.vendor_ids),
            class_ids=tuple(acc.class_ids),
            image_digests=tuple(acc.image_digests),
            image_sizes=tuple(acc.image_sizes),
            uris=tuple(acc.uris),
            slots=tuple(acc.slots),
            use_before=tuple(acc.use_before),
            versions=tuple(acc.versions),
        )
        for i, acc in enumerate(accs)
    )


_MAX_INDEX = 255


def _uris_walk(
    seq: CommandSequence, found: dict[int, set[str]], current: set[int], known: int
) -> set[int]:
    for step in seq.steps:
        if isinstance(step, SetComponentIndex):
            index = step.index
            if index is True:
                current = set(range(known))
            elif isinstance(index, tuple):
                current = {i for i in index if i <= _MAX_INDEX}
            elif not isinstance(index, bool) and index <= _MAX_INDEX:
                current = {index}
        elif isinstance(step, SetParameters) and step.parameters.uri is not None:
            for i in current:
                found.setdefault(i, set()).add(step.parameters.uri)
        elif isinstance(step, OverrideMultiple):
            for i, params in step.by_component.items():
                if params.uri is not None and i <= _MAX_INDEX:
                    found.setdefault(i, set()).add(params.uri)
        elif isinstance(step, TryEach):
            for option in step.sequences:
                _uris_walk(option, found, set(current), known)
        elif isinstance(step, RunSequence):
            current = _uris_walk(step.sequence, found, current, known)
    return current


def integrated_uris(manifest: Manifest) -> dict[int, set[str]]:
    """The ``#key`` URIs (integrated payloads or dependencies, manifest-37 §7.6 and
    trust-domains-12 §5.7) set for each component index, including indices that only
    ``suit-dependencies`` names (the published trust-domains examples use such an index)."""
    found: dict[int, set[str]] = {}
    known = max(len(manifest.common.components), 1)
    for seq in (
        manifest.common.shared_sequence,
        manifest.dependency_resolution,
        manifest.payload_fetch,
        manifest.install,
        manifest.candidate_verification,
        manifest.validate,
        manifest.load,
        manifest.invoke,
        manifest.uninstall,
    ):
        if seq is not None:
            _uris_walk(seq, found, {0}, known)
    return {i: {u for u in uris if u.startswith("#")} for i, uris in found.items()}
