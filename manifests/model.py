"""The typed SUIT model: frozen dataclasses with the specs' names.

Every object built from received bytes keeps those bytes (``raw``) so that digests and
signatures are checked over what arrived, never over a re-encoding (manifest-37 §8.3).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntFlag

from .cose import CoseMessage, EncryptionInfo
from .digest import Digest
from .numbers import Command, ManifestKey, VersionComparison

__all__ = [
    "CommandSequence",
    "Common",
    "ComponentId",
    "CopyParams",
    "CustomCommand",
    "EncryptionInfo",
    "Envelope",
    "Manifest",
    "OverrideMultiple",
    "Parameters",
    "Pen",
    "PolicyCommand",
    "ReportingPolicy",
    "RunSequence",
    "SetComponentIndex",
    "SetParameters",
    "Step",
    "TextMap",
    "TryEach",
    "VendorId",
    "VersionMatch",
]

#: SUIT_Component_Identifier = [* bstr] (manifest-37 §8.4.5.1)
ComponentId = tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Pen:
    """A vendor-id given as an IANA Private Enterprise Number: ``#6.112(bstr)``, the relative
    OID below 1.3.6.1.4.1 (manifest-37 §8.4.8.2, RFC 9090)."""

    relative_oid: bytes


VendorId = uuid.UUID | Pen


@dataclass(frozen=True, slots=True)
class VersionMatch:
    """SUIT_Parameter_Version_Match (update-management-12 §6.4)."""

    comparison: VersionComparison
    version: tuple[int, ...]


@dataclass(frozen=True)
class Parameters:
    """SUIT_Parameters (manifest-37 §8.4.8, update-management-12 §6, encryption-26 §7)."""

    vendor_id: VendorId | None = None
    class_id: uuid.UUID | None = None
    image_digest: Digest | None = None
    use_before: int | None = None
    component_slot: int | None = None
    strict_order: bool | None = None
    soft_failure: bool | None = None
    image_size: int | None = None
    content: bytes | None = None
    encryption_info: EncryptionInfo | None = None
    uri: str | None = None
    source_component: int | None = None
    invoke_args: bytes | None = None
    device_id: uuid.UUID | None = None
    fetch_arguments: bytes | None = None
    minimum_battery: int | None = None
    update_priority: int | None = None
    version: VersionMatch | None = None
    wait_info: Mapping[int, object] | None = None
    component_metadata: Mapping[int, object] | None = None
    custom: Mapping[int, int | bool | str | bytes] = field(default_factory=dict)


class ReportingPolicy(IntFlag):
    """SUIT_Rep_Policy bits (manifest-37 §8.4.7; names as renamed in -36)."""

    SEND_RECORD_ON_SUCCESS = 1
    SEND_RECORD_ON_FAILURE = 2
    SEND_SYSINFO_SUCCESS = 4
    SEND_SYSINFO_FAILURE = 8


@dataclass(frozen=True, slots=True)
class PolicyCommand:
    """A condition or directive whose argument is a reporting policy (most of them)."""

    command: Command
    policy: ReportingPolicy


@dataclass(frozen=True, slots=True)
class SetComponentIndex:
    """suit-directive-set-component-index (12): an index, ``True`` (all) or a list."""

    index: int | bool | tuple[int, ...]
    command: Command = Command.SET_COMPONENT_INDEX


@dataclass(frozen=True, slots=True)
class SetParameters:
    """override-parameters (20) or set-parameters (19, trust-domains-12 §6.4)."""

    command: Command
    parameters: Parameters


@dataclass(frozen=True, slots=True)
class TryEach:
    """suit-directive-try-each (15): two or more sequences, optionally a trailing nil
    meaning "none of them passing is not a failure" (manifest-37 §8.4.10.2)."""

    sequences: tuple[CommandSequence, ...]
    empty_allowed: bool
    command: Command = Command.TRY_EACH


@dataclass(frozen=True, slots=True)
class RunSequence:
    """suit-directive-run-sequence (32)."""

    sequence: CommandSequence
    command: Command = Command.RUN_SEQUENCE


@dataclass(frozen=True, slots=True)
class OverrideMultiple:
    """suit-directive-override-multiple (34, update-management-12 §7.6)."""

    by_component: Mapping[int, Parameters]
    command: Command = Command.OVERRIDE_MULTIPLE


@dataclass(frozen=True, slots=True)
class CopyParams:
    """suit-directive-copy-params (35, update-management-12 §7.7): per source component, the
    parameter numbers copied into the current component."""

    by_component: Mapping[int, tuple[int, ...]]
    command: Command = Command.COPY_PARAMS


@dataclass(frozen=True, slots=True)
class CustomCommand:
    """suit-command-custom: a negative command number with a bstr/tstr/int/nil argument."""

    number: int
    argument: bytes | str | int | None


Step = (
    PolicyCommand
    | SetComponentIndex
    | SetParameters
    | TryEach
    | RunSequence
    | OverrideMultiple
    | CopyParams
    | CustomCommand
)


@dataclass(frozen=True, slots=True)
class CommandSequence:
    """A SUIT_Command_Sequence or SUIT_Shared_Sequence with the bytes it was parsed from."""

    steps: tuple[Step, ...]
    raw: bytes


@dataclass(frozen=True)
class TextMap:
    """SUIT_Text_Map (manifest-37 §8.4.4): per language tag, the manifest-wide text keys and
    per-component text. Values are display-only and untrusted for rendering."""

    languages: Mapping[str, Mapping[int, str]]
    components: Mapping[str, Mapping[ComponentId, Mapping[int, str]]]
    raw: bytes


@dataclass(frozen=True)
class Common:
    """SUIT_Common (manifest-37 §8.4.5; dependencies from trust-domains-12 §5.1)."""

    components: tuple[ComponentId, ...]
    shared_sequence: CommandSequence | None
    dependencies: Mapping[int, ComponentId | None]
    raw: bytes


@dataclass(frozen=True)
class Manifest:
    """SUIT_Manifest (manifest-37 §8.4) as received.

    A severable member is either held inline (its field is set) or severed: then only its
    digest is in ``severed`` and the member may travel in the envelope.
    """

    raw: bytes
    version: int
    sequence_number: int
    common: Common
    reference_uri: str | None = None
    manifest_component_id: ComponentId | None = None
    set_version: tuple[int, ...] | None = None
    validate: CommandSequence | None = None
    load: CommandSequence | None = None
    invoke: CommandSequence | None = None
    uninstall: CommandSequence | None = None
    payload_fetch: CommandSequence | None = None
    install: CommandSequence | None = None
    dependency_resolution: CommandSequence | None = None
    candidate_verification: CommandSequence | None = None
    text: TextMap | None = None
    coswid: bytes | None = None
    severed: Mapping[ManifestKey, Digest] = field(default_factory=dict)


@dataclass(frozen=True)
class Envelope:
    """SUIT_Envelope (manifest-37 §8.2), parsed but not yet authenticated.

    ``members`` holds the severable members carried in the envelope (the bstr contents as
    received); ``manifest`` has them re-attached where the envelope carried them, so a reader
    sees one manifest whichever way it travelled.
    """

    raw: bytes
    tagged: bool
    digest: Digest
    auth_blocks: tuple[CoseMessage, ...]
    manifest_raw: bytes
    manifest: Manifest
    members: Mapping[ManifestKey, bytes]
    integrated_payloads: Mapping[str, bytes]
    integrated_dependencies: Mapping[str, Envelope]
    auth_wrapper_raw: bytes = b""
    #: The encoded SUIT_Digest as received: the detached COSE payload (manifest-37 §8.3).
    digest_raw: bytes = b""
    #: Authentication blocks that could not be read, with the reason (never trusted).
    unparsed_blocks: tuple[str, ...] = ()
