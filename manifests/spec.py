"""The manufacturer's manifest description: a small TOML file, parsed into ManifestSpec.

Example (docs/manifests.md has the full reference)::

    vendor-domain = "example.com"      # vendor-id = UUID5(DNS, domain); or vendor-id = "<uuid>"
    class-name = "thermostat-v2"       # class-id = UUID5(vendor-id, name); or class-id = "<uuid>"
    sequence-number = 7
    version = "1.2.0"                  # suit-set-version and the component-version text
    severable = ["install", "text"]    # members carried in the envelope, digests in the manifest

    [text]
    description = "Thermostat firmware"

    [[component]]
    id = ["firmware"]                  # UTF-8 parts; or id-hex = ["00"]
    file = "firmware.bin"              # digest and size computed by the caller; or digest + size
    uri = "https://fw.example.com/thermostat/1.2.0.bin"

Reading the file and the payloads is the caller's job (the CLI): this module stays pure.
"""

from __future__ import annotations

import tomllib
import uuid
from dataclasses import dataclass
from typing import Any, Final

from .digest import Digest
from .errors import DecodeError
from .model import ComponentId, VendorId, VersionMatch
from .numbers import DigestAlg, ManifestKey, VersionComparison
from .uuids import class_id, vendor_id_from_domain

__all__ = ["ComponentSpec", "ManifestSpec", "SpecError", "load_spec", "parse_version"]


class SpecError(DecodeError):
    """The manifest description is invalid."""

    problem = "invalid-manifest-spec"


@dataclass(frozen=True)
class ComponentSpec:
    """One component: its identifier, the image it must hold and where to fetch it."""

    component_id: ComponentId
    file: str | None = None
    digest: Digest | None = None
    size: int | None = None
    uri: str | None = None
    integrated: bool = False
    slot: int | None = None
    invoke: bool = False
    requires_version: VersionMatch | None = None
    description: str | None = None


@dataclass(frozen=True)
class ManifestSpec:
    vendor_id: VendorId
    class_id: uuid.UUID
    sequence_number: int
    components: tuple[ComponentSpec, ...]
    version: tuple[int, ...] | None = None
    version_text: str | None = None
    reference_uri: str | None = None
    manifest_component_id: ComponentId | None = None
    use_before: int | None = None
    severable: frozenset[ManifestKey] = frozenset()
    digest_algorithm: DigestAlg = DigestAlg.SHA256
    description: str | None = None
    update_description: str | None = None
    vendor_domain: str | None = None
    class_name: str | None = None
    language: str = "en"


_TOP_KEYS: Final = {
    "vendor-domain", "vendor-id", "class-name", "class-id", "sequence-number", "version",
    "reference-uri", "manifest-component-id", "use-before", "severable", "digest-algorithm",
    "text", "component",
}  # fmt: skip
_COMPONENT_KEYS: Final = {
    "id", "id-hex", "file", "digest", "size", "uri", "integrated", "slot", "invoke",
    "requires-version", "description",
}  # fmt: skip
_SEVERABLE_NAMES: Final = {"install": ManifestKey.INSTALL, "text": ManifestKey.TEXT,
                           "payload-fetch": ManifestKey.PAYLOAD_FETCH}  # fmt: skip
_DIGEST_ALGS: Final = {"sha-256": DigestAlg.SHA256, "sha-384": DigestAlg.SHA384,
                       "sha-512": DigestAlg.SHA512}  # fmt: skip
_COMPARATORS: Final = {">=": VersionComparison.GREATER_EQUAL, ">": VersionComparison.GREATER,
                       "==": VersionComparison.EQUAL, "<=": VersionComparison.LESSER_EQUAL,
                       "<": VersionComparison.LESSER}  # fmt: skip
_PRE_RELEASE: Final = {"rc": -1, "beta": -2, "alpha": -3}


def parse_version(text: str) -> tuple[int, ...]:
    """ "1.2.0" -> (1, 2, 0); "2.0.0-rc.1" -> (2, 0, 0, -1, 1) (update-management-12 §6.4:
    release integers, then -1 rc / -2 beta / -3 alpha and its number)."""
    release, _, pre = text.strip().partition("-")
    try:
        ints = [int(p) for p in release.split(".")]
        if pre:
            kind, _, num = pre.partition(".")
            ints.append(_PRE_RELEASE[kind])
            if num:
                ints.append(int(num))
    except (ValueError, KeyError):
        raise SpecError(f"version {text!r} is not like 1.2.0 or 1.2.0-rc.1") from None
    if not 1 <= len([p for p in release.split(".")]) <= 3 or any(i < 0 for i in ints[:3]):
        raise SpecError(f"version {text!r} needs one to three non-negative release numbers")
    return tuple(ints)


def _require(table: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = table.get(key)
    if value is None or not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise SpecError(f"{where}: '{key}' is required and must be {_kind_name(kind)}")
    return value


def _optional(table: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in table:
        return None
    return _require(table, key, kind, where)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {int: "an integer", str: "a string", bool: "a boolean", list: "an array"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _uuid(text: str, where: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise SpecError(f"{where}: {text!r} is not a UUID") from None


def _component(table: Any, index: int) -> ComponentSpec:
    where = f"component {index}"
    if not isinstance(table, dict):
        raise SpecError(f"{where}: must be a table")
    unknown = set(table) - _COMPONENT_KEYS
    if unknown:
        raise SpecError(f"{where}: unknown keys {sorted(unknown)}")
    if ("id" in table) == ("id-hex" in table):
        raise SpecError(f"{where}: give exactly one of 'id' (text parts) or 'id-hex'")
    parts = _require(table, "id" if "id" in table else "id-hex", list, where)
    if not all(isinstance(p, str) for p in parts):
        raise SpecError(f"{where}: component id parts must be strings")
    try:
        cid = tuple(bytes.fromhex(p) if "id-hex" in table else p.encode() for p in parts)
    except ValueError:
        raise SpecError(f"{where}: 'id-hex' parts must be hexadecimal") from None
    digest = None
    if "digest" in table:
        try:
            digest = Digest(DigestAlg.SHA256, bytes.fromhex(_require(table, "digest", str, where)))
        except ValueError:
            raise SpecError(f"{where}: 'digest' must be hexadecimal SHA-256") from None
        if len(digest.value) != 32:
            raise SpecError(f"{where}: 'digest' must be 32 bytes of SHA-256")
    size = _optional(table, "size", int, where)
    if ("file" in table) == (digest is not None):
        raise SpecError(f"{where}: give either 'file' or 'digest' with 'size'")
    if digest is not None and size is None:
        raise SpecError(f"{where}: 'digest' needs 'size'")
    integrated = bool(_optional(table, "integrated", bool, where))
    if integrated and "file" not in table:
        raise SpecError(f"{where}: an integrated payload needs 'file'")
    requires = _optional(table, "requires-version", str, where)
    match = None
    if requires is not None:
        op = next((o for o in (">=", "<=", "==", ">", "<") if requires.startswith(o)), None)
        if op is None:
            raise SpecError(f"{where}: 'requires-version' must start with >=, >, ==, <= or <")
        match = VersionMatch(_COMPARATORS[op], parse_version(requires[len(op) :]))
    return ComponentSpec(
        component_id=cid,
        file=_optional(table, "file", str, where),
        digest=digest,
        size=size,
        uri=_optional(table, "uri", str, where),
        integrated=integrated,
        slot=_optional(table, "slot", int, where),
        invoke=bool(_optional(table, "invoke", bool, where)),
        requires_version=match,
        description=_optional(table, "description", str, where),
    )


def load_spec(text: str) -> ManifestSpec:
    """Parse the TOML description; SpecError names the first problem."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"manifest spec is not valid TOML: {exc}") from exc
    unknown = set(doc) - _TOP_KEYS
    if unknown:
        raise SpecError(f"manifest spec: unknown keys {sorted(unknown)}")
    where = "manifest spec"
    domain = _optional(doc, "vendor-domain", str, where)
    if (domain is None) == ("vendor-id" not in doc):
        raise SpecError(f"{where}: give exactly one of 'vendor-domain' or 'vendor-id'")
    vendor = vendor_id_from_domain(domain) if domain else _uuid(doc["vendor-id"], "vendor-id")
    class_name = _optional(doc, "class-name", str, where)
    if (class_name is None) == ("class-id" not in doc):
        raise SpecError(f"{where}: give exactly one of 'class-name' or 'class-id'")
    klass = class_id(vendor, class_name) if class_name else _uuid(doc["class-id"], "class-id")
    seq = _require(doc, "sequence-number", int, where)
    if not 0 <= seq <= 2**64 - 1:
        raise SpecError(f"{where}: 'sequence-number' must be within 0..2^64-1")
    components = doc.get("component")
    if not isinstance(components, list) or not components:
        raise SpecError(f"{where}: at least one [[component]] is required")
    severable = _optional(doc, "severable", list, where) or []
    if not all(s in _SEVERABLE_NAMES for s in severable):
        raise SpecError(f"{where}: 'severable' may list {sorted(_SEVERABLE_NAMES)}")
    alg_name = _optional(doc, "digest-algorithm", str, where) or "sha-256"
    if alg_name not in _DIGEST_ALGS:
        raise SpecError(f"{where}: 'digest-algorithm' must be one of {sorted(_DIGEST_ALGS)}")
    text = doc.get("text", {})
    if not isinstance(text, dict) or set(text) - {"description", "update-description", "language"}:
        raise SpecError(f"{where}: [text] may hold description, update-description, language")
    mcid = _optional(doc, "manifest-component-id", list, where)
    version = _optional(doc, "version", str, where)
    return ManifestSpec(
        vendor_id=vendor,
        class_id=klass,
        sequence_number=seq,
        components=tuple(_component(c, i) for i, c in enumerate(components)),
        version=parse_version(version) if version else None,
        version_text=version.strip() if version else None,
        reference_uri=_optional(doc, "reference-uri", str, where),
        manifest_component_id=tuple(str(p).encode() for p in mcid) if mcid else None,
        use_before=_optional(doc, "use-before", int, where),
        severable=frozenset(_SEVERABLE_NAMES[s] for s in severable),
        digest_algorithm=_DIGEST_ALGS[alg_name],
        description=_optional(text, "description", str, "[text]"),
        update_description=_optional(text, "update-description", str, "[text]"),
        vendor_domain=domain,
        class_name=class_name,
        language=_optional(text, "language", str, "[text]") or "en",
    )
