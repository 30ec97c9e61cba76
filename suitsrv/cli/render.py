"""Plain-data views of the SUIT model for ``manifest inspect`` (JSON and readable text).

Text in manifests is untrusted (update-management-12 §5.3: display-only, must be injection
safe): control characters are escaped before anything reaches a terminal.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import uuid
from collections.abc import Mapping
from typing import Any

from manifests.cose import CoseMessage
from manifests.digest import Digest
from manifests.model import (
    CommandSequence,
    CopyParams,
    CustomCommand,
    EncryptionInfo,
    Envelope,
    OverrideMultiple,
    Parameters,
    Pen,
    PolicyCommand,
    RunSequence,
    SetComponentIndex,
    SetParameters,
    Step,
    TextMap,
    TryEach,
)
from manifests.numbers import COMMAND_SEQUENCES, SEVERABLE, TextComponentKey, TextKey
from manifests.summary import summarize

__all__ = ["envelope_view", "safe_text", "to_text"]


def safe_text(text: str) -> str:
    """Escape control and other non-printable characters (keeps printable Unicode)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _plain(value: object) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, Pen):
        return {"pen_relative_oid": value.relative_oid.hex()}
    if isinstance(value, Digest):
        return {"algorithm": value.algorithm.name.lower(), "value": value.hex}
    if isinstance(value, EncryptionInfo):
        return {
            "content_algorithm": value.content_algorithm,
            "recipient_algorithms": list(value.recipient_algorithms),
            "recipient_kids": [k.hex() if k else None for k in value.recipient_kids],
        }
    if isinstance(value, enum.Enum):
        return value.name.lower()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {_key(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _key(key: object) -> str:
    if isinstance(key, tuple):
        return "/".join(p.hex() if isinstance(p, bytes) else str(p) for p in key)
    return safe_text(str(key.name.lower() if isinstance(key, enum.Enum) else key))


def _parameters(params: Parameters) -> dict[str, Any]:
    out = {
        f.name: _plain(getattr(params, f.name))
        for f in dataclasses.fields(params)
        if getattr(params, f.name) not in (None, {})
    }
    return out


def _step(step: Step) -> dict[str, Any]:
    if isinstance(step, PolicyCommand):
        return {step.command.name.lower(): {"policy": int(step.policy)}}
    if isinstance(step, SetComponentIndex):
        return {"set_component_index": _plain(step.index)}
    if isinstance(step, SetParameters):
        return {step.command.name.lower(): _parameters(step.parameters)}
    if isinstance(step, TryEach):
        options = [_sequence(s) for s in step.sequences]
        return {"try_each": {"options": options, "empty_allowed": step.empty_allowed}}
    if isinstance(step, RunSequence):
        return {"run_sequence": _sequence(step.sequence)}
    if isinstance(step, OverrideMultiple):
        return {"override_multiple": {str(i): _parameters(p) for i, p in step.by_component.items()}}
    if isinstance(step, CopyParams):
        return {"copy_params": {str(i): list(p) for i, p in step.by_component.items()}}
    assert isinstance(step, CustomCommand)
    return {f"custom_{step.number}": _plain(step.argument)}


def _sequence(seq: CommandSequence) -> list[dict[str, Any]]:
    return [_step(s) for s in seq.steps]


def _block(block: CoseMessage) -> dict[str, Any]:
    return {
        "type": str(block.kind),
        "algorithm": block.algorithm,
        "kid": block.kid.hex() if block.kid else None,
        "detached_payload": block.payload is None,
    }


def _named(keys: Mapping[int, str], names: type[enum.IntEnum]) -> dict[str, str]:
    known = {int(m): m.name.lower() for m in names}
    return {known.get(k, str(k)): safe_text(v) for k, v in keys.items()}


def _text_view(text: TextMap) -> dict[str, Any]:
    return {
        lang: {
            **_named(keys, TextKey),
            **{
                _key(cid): _named(ct, TextComponentKey) for cid, ct in text.components[lang].items()
            },
        }
        for lang, keys in text.languages.items()
    }


def envelope_view(envelope: Envelope) -> dict[str, Any]:
    """Every field of the envelope as JSON-ready data; severed members say so."""
    manifest = envelope.manifest
    members: dict[str, Any] = {}
    for key in sorted(COMMAND_SEQUENCES | SEVERABLE):
        name = key.name.lower()
        value = getattr(manifest, name)
        entry: dict[str, Any] = {}
        if key in manifest.severed:
            entry["severed_digest"] = _plain(manifest.severed[key])
            entry["state"] = "in envelope" if key in envelope.members else "severed (absent)"
        if isinstance(value, CommandSequence):
            entry["commands"] = _sequence(value)
        elif isinstance(value, TextMap):
            entry["value"] = _text_view(value)
        elif value is not None:
            entry["value"] = _plain(value)
        if entry:
            members[name] = entry
    common = manifest.common
    return {
        "tagged": envelope.tagged,
        "size": len(envelope.raw),
        "manifest_digest": _plain(envelope.digest),
        "authentication_blocks": [_block(b) for b in envelope.auth_blocks],
        "manifest_version": manifest.version,
        "sequence_number": manifest.sequence_number,
        "reference_uri": _plain(manifest.reference_uri),
        "manifest_component_id": _plain(manifest.manifest_component_id),
        "set_version": _plain(manifest.set_version),
        "common": {
            "components": _plain(common.components),
            "dependencies": {str(k): _plain(v) for k, v in common.dependencies.items()},
            "shared_sequence": _sequence(common.shared_sequence)
            if common.shared_sequence
            else None,
        },
        "members": members,
        "components": [
            {
                "component_id": _plain(s.component_id),
                "vendor_ids": _plain(s.vendor_ids),
                "class_ids": _plain(s.class_ids),
                "image_digests": _plain(s.image_digests),
                "image_sizes": list(s.image_sizes),
                "uris": _plain(s.uris),
            }
            for s in summarize(manifest)
        ],
        "integrated_payloads": {
            _key(k): {"size": len(v)} for k, v in envelope.integrated_payloads.items()
        },
        "integrated_dependencies": {
            _key(k): envelope_view(v) for k, v in envelope.integrated_dependencies.items()
        },
    }


def to_text(view: Mapping[str, Any], indent: int = 0) -> str:
    """An indented, readable rendering of a view (YAML-like, not YAML)."""
    lines: list[str] = []
    pad = "  " * indent
    for key, value in view.items():
        if value in (None, {}, []):
            continue
        if isinstance(value, Mapping):
            lines.append(f"{pad}{key}:")
            lines.append(to_text(value, indent + 1))
        elif isinstance(value, list) and any(isinstance(v, Mapping | list) for v in value):
            lines.append(f"{pad}{key}:")
            for item in value:
                if isinstance(item, Mapping):
                    body = to_text(item, indent + 2).lstrip()
                    lines.append(f"{pad}  - {body}")
                else:
                    lines.append(f"{pad}  - {json.dumps(item)}")
        else:
            shown = value if isinstance(value, str) else json.dumps(value)
            lines.append(f"{pad}{key}: {shown}")
    return "\n".join(line for line in lines if line)
