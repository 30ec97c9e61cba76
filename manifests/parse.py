"""parse_envelope and parse_manifest: bytes to the typed model, structure only.

Nothing here authenticates; ``verify.verify_envelope`` does. CDDL implemented (manifest-37
Appendix A; trust-domains-12 §5; update-management-12 §5)::

    SUIT_Envelope_Tagged = #6.107(SUIT_Envelope)
    SUIT_Envelope = {
      suit-authentication-wrapper(2) => bstr .cbor SUIT_Authentication,
      suit-manifest(3)               => bstr .cbor SUIT_Manifest,
      ? severable members (14, 15, 16, 18, 20, 23) => bstr .cbor member,
      * tstr => bstr,      ; integrated payload or integrated dependency (an envelope)
    }
    SUIT_Authentication = [ bstr .cbor SUIT_Digest, * bstr .cbor SUIT_Authentication_Block ]
    SUIT_Manifest = {
      1 => 1, 2 => uint, 3 => bstr .cbor SUIT_Common, ? 4 => tstr, ? 5 => SUIT_Component_Identifier,
      ? 6 => bstr .cbor [+int], ? 7/8/9/24 => bstr .cbor SUIT_Command_Sequence,
      ? 14/15/16/18/20/23 => SUIT_Digest / bstr .cbor member,
    }
"""

from __future__ import annotations

import dataclasses
import re
from typing import Final

from . import _cbor
from ._commands import parse_sequence
from .cose import CoseMessage, parse_cose
from .digest import Digest, parse_digest
from .errors import DecodeError, UnsupportedError
from .model import Common, ComponentId, Envelope, Manifest, TextMap
from .numbers import COMMAND_SEQUENCES, SEVERABLE, CommonKey, EnvelopeKey, ManifestKey
from .summary import integrated_uris

__all__ = ["MAX_ENVELOPE_SIZE", "parse_envelope", "parse_manifest"]

MAX_ENVELOPE_SIZE: Final = 16 * 1024 * 1024
_MAX_AUTH_BLOCKS: Final = 8
_MAX_DEPENDENCY_DEPTH: Final = 4
_TAG_ENVELOPE: Final = 107
_COSWID_TAGS: Final = frozenset({1, 37})  # RFC 9393 dates and UUIDs
_LTAG: Final = re.compile(r"[a-zA-Z]{1,8}(-[a-zA-Z0-9]{1,8})*")  # manifest-37 tag38-ltag
_TAG_MANIFEST: Final = 1070

# Pre-draft-28 numbering (manifest-spec history; notes/suit-spec.md §1.1): these keys are
# unknown today, and a manifest using them was written for an older draft.
_LEGACY_KEYS: Final = {
    17: "suit-install of drafts -17..-27 (install moved to key 20 in draft-28)",
    10: "suit-validate of drafts <= -16",
    11: "suit-load of drafts <= -16",
    12: "suit-invoke of drafts <= -16",
    13: "suit-text of drafts <= -16",
}

_FIELD_OF: Final = {
    ManifestKey.VALIDATE: "validate",
    ManifestKey.LOAD: "load",
    ManifestKey.INVOKE: "invoke",
    ManifestKey.UNINSTALL: "uninstall",
    ManifestKey.PAYLOAD_FETCH: "payload_fetch",
    ManifestKey.INSTALL: "install",
    ManifestKey.DEPENDENCY_RESOLUTION: "dependency_resolution",
    ManifestKey.CANDIDATE_VERIFICATION: "candidate_verification",
    ManifestKey.TEXT: "text",
    ManifestKey.COSWID: "coswid",
}


def _component_id(value: object, what: str) -> ComponentId:
    if not isinstance(value, list) or not all(isinstance(p, bytes) for p in value):
        raise DecodeError(f"{what} must be an array of byte strings")
    return tuple(value)


def _parse_common(raw: bytes) -> Common:
    value = _cbor.loads(raw, what="suit-common")
    if not isinstance(value, dict):
        raise DecodeError("suit-common must be a map")
    unknown = [k for k in value if k not in CommonKey.__members__.values()]
    if unknown:
        raise UnsupportedError(f"unknown suit-common keys {unknown}")
    components: tuple[ComponentId, ...] = ()
    if CommonKey.COMPONENTS in value:
        items = value[CommonKey.COMPONENTS]
        if not isinstance(items, list) or not items:
            raise DecodeError("suit-components must be a non-empty array")
        components = tuple(_component_id(c, "component identifier") for c in items)
    shared = None
    if CommonKey.SHARED_SEQUENCE in value:
        seq = value[CommonKey.SHARED_SEQUENCE]
        if not isinstance(seq, bytes):
            raise DecodeError("suit-shared-sequence must be a bstr-wrapped sequence")
        shared = parse_sequence(seq, what="suit-shared-sequence", shared=True)
    dependencies: dict[int, ComponentId | None] = {}
    if CommonKey.DEPENDENCIES in value:
        deps = value[CommonKey.DEPENDENCIES]
        if not isinstance(deps, dict) or not deps:
            raise DecodeError("suit-dependencies must be a non-empty map")
        for index, meta in deps.items():
            if not isinstance(index, int) or isinstance(index, bool) or index < 0:
                raise DecodeError("suit-dependencies keys must be component indices")
            if not isinstance(meta, dict) or any(k != 1 for k in meta):
                raise UnsupportedError(
                    "SUIT_Dependency_Metadata supports only suit-dependency-prefix (1)"
                )
            dependencies[index] = _component_id(meta[1], "dependency prefix") if 1 in meta else None
    return Common(components, shared, dependencies, raw)


def _parse_text(raw: bytes) -> TextMap:
    value = _cbor.loads(raw, what="suit-text")
    if not isinstance(value, dict) or not value:
        raise DecodeError("suit-text must be a non-empty map of language tags")
    languages: dict[str, dict[int, str]] = {}
    components: dict[str, dict[ComponentId, dict[int, str]]] = {}
    for lang, lmap in value.items():
        if not isinstance(lang, str) or not isinstance(lmap, dict) or not _LTAG.fullmatch(lang):
            raise DecodeError("suit-text must map language tags (tag38-ltag) to text maps")
        keys: dict[int, str] = {}
        per_component: dict[ComponentId, dict[int, str]] = {}
        for key, item in lmap.items():
            if isinstance(key, tuple):  # cbor2 decodes array map keys as tuples
                if not isinstance(item, dict) or not all(
                    isinstance(k, int) and isinstance(v, str) for k, v in item.items()
                ):
                    raise DecodeError("component text must map integers to text")
                per_component[_component_id(list(key), "text component id")] = item
            elif isinstance(key, int) and isinstance(item, str):
                keys[key] = item
            else:
                raise DecodeError(f"suit-text entry {key!r} must map an integer to text")
        languages[lang] = keys
        components[lang] = per_component
    return TextMap(languages, components, raw)


def _parse_member(key: ManifestKey, raw: bytes) -> object:
    what = f"suit-{key.name.lower().replace('_', '-')}"
    if key in COMMAND_SEQUENCES:
        return parse_sequence(raw, what=what)
    if key is ManifestKey.TEXT:
        return _parse_text(raw)
    # suit-coswid: bstr .cbor concise-swid-tag (RFC 9393), a document of its own kept as bytes:
    # strict CBOR, but its map order is CoSWID's business (libcsuit expU2 is not canonical).
    if not isinstance(_cbor.loads(raw, what=what, canonical=False, extra_tags=_COSWID_TAGS), dict):
        raise DecodeError("suit-coswid must be a CoSWID map")
    return raw


def parse_manifest(raw: bytes) -> Manifest:
    """SUIT_Manifest from the bstr content of the envelope's key 3 (or a tag-1070 item)."""
    value = _cbor.loads(raw, what="suit-manifest")
    if isinstance(value, _cbor.Tag):
        raise DecodeError("suit-manifest must be an untagged map inside the envelope")
    if not isinstance(value, dict):
        raise DecodeError("suit-manifest must be a map")
    known = set(ManifestKey.__members__.values())
    unknown = sorted((k for k in value if k not in known), key=repr)
    if unknown:
        legacy = [f"{k} = {_LEGACY_KEYS[k]}" for k in unknown if k in _LEGACY_KEYS]
        detail = (
            f": {'; '.join(legacy)}; this library implements draft-ietf-suit-manifest-37"
            if legacy
            else ""
        )
        raise UnsupportedError(f"unknown manifest keys {unknown}{detail}")
    version = value.get(ManifestKey.MANIFEST_VERSION)
    if version is None:
        raise DecodeError("suit-manifest-version is missing")
    if version != 1 or isinstance(version, bool):
        raise UnsupportedError(f"suit-manifest-version {version!r} is not supported (only 1)")
    seq = value.get(ManifestKey.MANIFEST_SEQUENCE_NUMBER)
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise DecodeError("suit-manifest-sequence-number must be an unsigned integer")
    common_raw = value.get(ManifestKey.COMMON)
    if not isinstance(common_raw, bytes):
        raise DecodeError("suit-common is missing or not a bstr")
    fields: dict[str, object] = {}
    severed: dict[ManifestKey, Digest] = {}
    if ManifestKey.REFERENCE_URI in value:
        uri = value[ManifestKey.REFERENCE_URI]
        if not isinstance(uri, str):
            raise DecodeError("suit-reference-uri must be text")
        fields["reference_uri"] = uri
    if ManifestKey.MANIFEST_COMPONENT_ID in value:
        fields["manifest_component_id"] = _component_id(
            value[ManifestKey.MANIFEST_COMPONENT_ID], "suit-manifest-component-id"
        )
    if ManifestKey.SET_VERSION in value:
        sv = value[ManifestKey.SET_VERSION]
        if not isinstance(sv, bytes):
            raise DecodeError("suit-set-version must be a bstr-wrapped [+int]")
        ints = _cbor.loads(sv, what="suit-set-version")
        if not isinstance(ints, list) or not ints or not all(type(i) is int for i in ints):
            raise DecodeError("suit-set-version must be [+int]")
        fields["set_version"] = tuple(ints)
    for key, name in _FIELD_OF.items():
        if key not in value:
            continue
        item = value[key]
        if key in SEVERABLE and isinstance(item, list):
            severed[key] = parse_digest(item, f"severed {name}")
        elif isinstance(item, bytes):
            fields[name] = _parse_member(key, item)
        else:
            raise DecodeError(f"manifest member {int(key)} ({name}) must be a bstr")
    return Manifest(
        raw=raw,
        version=1,
        sequence_number=seq,
        common=_parse_common(common_raw),
        severed=severed,
        **fields,  # type: ignore[arg-type]
    )


def _parse_auth_wrapper(
    raw: bytes,
) -> tuple[bytes, Digest, tuple[CoseMessage, ...], tuple[str, ...]]:
    value = _cbor.loads(raw, what="suit-authentication-wrapper")
    if not isinstance(value, list) or not value:
        raise DecodeError("suit-authentication-wrapper must be a non-empty array")
    if not all(isinstance(item, bytes) for item in value):
        raise DecodeError("suit-authentication-wrapper elements must be byte strings")
    digest = parse_digest(_cbor.loads(value[0], what="manifest digest"), "manifest digest")
    if len(value) - 1 > _MAX_AUTH_BLOCKS:
        raise DecodeError(f"more than {_MAX_AUTH_BLOCKS} authentication blocks")
    # A block we cannot read (COSE_Sign, a critical header, another tool's quirk) does not make
    # the envelope unreadable: verification reports it and relies on the others (ADR 0002).
    blocks: list[CoseMessage] = []
    unparsed: list[str] = []
    for i, item in enumerate(value[1:], 1):
        try:
            blocks.append(parse_cose(item, what=f"authentication block {i}"))
        except DecodeError as exc:
            unparsed.append(str(exc))
    return value[0], digest, tuple(blocks), tuple(unparsed)


def _may_be_envelope(data: bytes) -> bool:
    # Tag 107, or any definite-length map (the outer map's key order is free, ADR 0003).
    return data[:2] == b"\xd8\x6b" or (len(data) > 1 and 0xA0 <= data[0] <= 0xBB)


def parse_envelope(data: bytes, *, max_size: int = MAX_ENVELOPE_SIZE) -> Envelope:
    """Parse a SUIT_Envelope (tagged #6.107 or untagged) without authenticating it.

    Raises DecodeError (or its subclass UnsupportedError) naming what is wrong.
    """
    return _parse_envelope(bytes(data), max_size, 0)


def _parse_envelope(data: bytes, max_size: int, depth: int) -> Envelope:
    # The outer map need not be in canonical order: integrated payloads sit before key 3 in
    # published TEEP vectors (libcsuit expI). Everything signed is checked canonically.
    if data[:3] == b"\xd9\x04\x2e":
        raise DecodeError(
            "a bare SUIT_Manifest (tag 1070) is not an envelope: it has no authentication"
        )
    if not _may_be_envelope(data):
        raise DecodeError("not a SUIT_Envelope: expected tag 107 or a map")
    value = _cbor.loads(data, what="SUIT_Envelope", canonical=False, max_size=max_size)
    tagged = isinstance(value, _cbor.Tag)
    if isinstance(value, _cbor.Tag):
        if value.number == _TAG_MANIFEST:
            raise DecodeError(
                "a bare SUIT_Manifest (tag 1070) is not an envelope: it has no authentication"
            )
        if value.number != _TAG_ENVELOPE:
            raise DecodeError(f"CBOR tag {value.number} is not a SUIT_Envelope (107)")
        value = value.value
    if not isinstance(value, dict):
        raise DecodeError("SUIT_Envelope must be a map")
    auth_raw = value.get(EnvelopeKey.AUTHENTICATION_WRAPPER)
    manifest_raw = value.get(EnvelopeKey.MANIFEST)
    if not isinstance(auth_raw, bytes):
        raise DecodeError("suit-authentication-wrapper (2) is missing or not a bstr")
    if not isinstance(manifest_raw, bytes):
        raise DecodeError("suit-manifest (3) is missing or not a bstr")
    digest_raw, digest, blocks, unparsed = _parse_auth_wrapper(auth_raw)
    manifest = parse_manifest(manifest_raw)
    # Integrated dependencies (trust-domains-12 §5.7) are the "#key" entries the manifest names
    # for a component listed in suit-dependencies: they must be envelopes. Any other entry that
    # parses as an envelope is verified as one too, so a dependency cannot slip through as an
    # opaque payload; the rest are integrated payloads (manifest-37 §7.6).
    uris = integrated_uris(manifest)
    declared = {u for index in manifest.common.dependencies for u in uris.get(index, ())}
    members: dict[ManifestKey, bytes] = {}
    payloads: dict[str, bytes] = {}
    dependencies: dict[str, Envelope] = {}
    attach: dict[str, object] = {}
    for key, item in value.items():
        if key in (EnvelopeKey.AUTHENTICATION_WRAPPER, EnvelopeKey.MANIFEST):
            continue
        if isinstance(key, str):
            if not isinstance(item, bytes):
                raise DecodeError(f"integrated payload {key!r} must be a bstr")
            dependency = _dependency(key, item, key in declared, max_size, depth)
            if dependency is None:
                payloads[key] = item
            else:
                dependencies[key] = dependency
            continue
        if not isinstance(key, int) or isinstance(key, bool) or key not in SEVERABLE:
            raise UnsupportedError(f"unknown SUIT_Envelope key {key!r}")
        member = ManifestKey(key)
        if not isinstance(item, bytes):
            raise DecodeError(f"envelope member {key} must be a bstr")
        if member not in manifest.severed:
            raise DecodeError(
                f"envelope carries member {key} but the manifest holds no digest for it"
            )
        members[member] = item
        attach[_FIELD_OF[member]] = _parse_member(member, item)
    if attach:
        manifest = dataclasses.replace(manifest, **attach)  # type: ignore[arg-type]
    return Envelope(
        raw=data,
        tagged=tagged,
        digest=digest,
        auth_blocks=blocks,
        manifest_raw=manifest_raw,
        manifest=manifest,
        members=members,
        integrated_payloads=payloads,
        integrated_dependencies=dependencies,
        auth_wrapper_raw=auth_raw,
        digest_raw=digest_raw,
        unparsed_blocks=unparsed,
    )


def _dependency(
    key: str, item: bytes, declared: bool, max_size: int, depth: int
) -> Envelope | None:
    if not declared and not _may_be_envelope(item):
        return None
    if depth >= _MAX_DEPENDENCY_DEPTH:
        raise DecodeError(f"integrated dependencies nested deeper than {_MAX_DEPENDENCY_DEPTH}")
    try:
        return _parse_envelope(item, max_size, depth + 1)
    except DecodeError as exc:
        if declared:
            raise type(exc)(f"integrated dependency {key!r}: {exc}") from exc
        return None
