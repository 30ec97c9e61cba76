"""The manufacturer's side: build a manifest from a ManifestSpec, sign envelopes.

``build_manifest`` returns an *unsigned* envelope (authentication wrapper holding only the
SUIT_Digest); ``sign`` adds COSE blocks over that digest without touching the manifest bytes,
so signing again (another key, a new algorithm) keeps the manifest's identity.

The manifest follows the shape of manifest-37 Appendix B examples 1 and 5: the shared sequence
sets vendor-id, class-id, image digest and size per component and checks vendor and class
(§8.4.5: it SHOULD); install fetches each image from its URI and checks the image digest;
validate checks the image digest again; invoke boots the components marked ``invoke``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from . import _cbor
from .cose import Algorithm as CoseAlgorithm
from .cose import SigningKey, mac0, sign1
from .digest import Digest
from .errors import DecodeError
from .model import Envelope, Pen
from .numbers import (
    Command,
    CommonKey,
    EnvelopeKey,
    ManifestKey,
    Parameter,
    TextComponentKey,
    TextKey,
)
from .parse import parse_envelope
from .spec import ComponentSpec, ManifestSpec, SpecError

__all__ = ["build_manifest", "encode_envelope", "sign"]

#: suit-send-record-on-success | on-failure | sysinfo-success | sysinfo-failure
_REPORT_ALL: Final = 15
_RECORD_ON_FAILURE: Final = 2


def _integrated_key(component: ComponentSpec, index: int) -> str:
    name = (component.file or f"component-{index}").replace("\\", "/").rsplit("/", 1)[-1]
    return f"#{name}"


def _select(index: int, count: int) -> list[object]:
    # A single component is index 0 by default (manifest-37 §8.4.10.1); more need selecting.
    return [int(Command.SET_COMPONENT_INDEX), index] if count > 1 else []


def _shared_sequence(spec: ManifestSpec) -> list[object]:
    seq: list[object] = []
    count = len(spec.components)
    vendor = spec.vendor_id
    vendor_value = _cbor.Tag(112, vendor.relative_oid) if isinstance(vendor, Pen) else vendor.bytes
    for index, component in enumerate(spec.components):
        assert component.digest is not None and component.size is not None
        params: dict[int, object] = {
            Parameter.VENDOR_IDENTIFIER: vendor_value,
            Parameter.CLASS_IDENTIFIER: spec.class_id.bytes,
            Parameter.IMAGE_DIGEST: _cbor.dumps(component.digest.to_cbor_value()),
            Parameter.IMAGE_SIZE: component.size,
        }
        if component.slot is not None:
            params[Parameter.COMPONENT_SLOT] = component.slot
        if spec.use_before is not None:
            params[Parameter.USE_BEFORE] = spec.use_before
        if component.requires_version is not None:
            match = component.requires_version
            params[Parameter.VERSION] = _cbor.dumps([int(match.comparison), list(match.version)])
        seq += _select(index, count)
        seq += [int(Command.OVERRIDE_PARAMETERS), {int(k): v for k, v in params.items()}]
        seq += [
            int(Command.VENDOR_IDENTIFIER),
            _REPORT_ALL,
            int(Command.CLASS_IDENTIFIER),
            _REPORT_ALL,
        ]
        if spec.use_before is not None:
            seq += [int(Command.USE_BEFORE), _REPORT_ALL]
        if component.requires_version is not None:
            seq += [int(Command.VERSION), _REPORT_ALL]
    return seq


def _install(spec: ManifestSpec) -> list[object]:
    seq: list[object] = []
    count = len(spec.components)
    for index, component in enumerate(spec.components):
        uri = _integrated_key(component, index) if component.integrated else component.uri
        if uri is None:
            continue
        seq += _select(index, count)
        seq += [int(Command.OVERRIDE_PARAMETERS), {int(Parameter.URI): uri}]
        seq += [int(Command.FETCH), _RECORD_ON_FAILURE, int(Command.IMAGE_MATCH), _REPORT_ALL]
    return seq


def _validate(spec: ManifestSpec) -> list[object]:
    seq: list[object] = []
    for index in range(len(spec.components)):
        seq += [*_select(index, len(spec.components)), int(Command.IMAGE_MATCH), _REPORT_ALL]
    return seq


def _invoke(spec: ManifestSpec) -> list[object]:
    seq: list[object] = []
    for index, component in enumerate(spec.components):
        if component.invoke:
            seq += [*_select(index, len(spec.components)), int(Command.INVOKE), _REPORT_ALL]
    return seq


def _text(spec: ManifestSpec) -> dict[object, object]:
    lmap: dict[object, object] = {}
    if spec.description:
        lmap[int(TextKey.MANIFEST_DESCRIPTION)] = spec.description
    if spec.update_description:
        lmap[int(TextKey.UPDATE_DESCRIPTION)] = spec.update_description
    for component in spec.components:
        ctext: dict[int, str] = {}
        if spec.vendor_domain:
            ctext[TextComponentKey.VENDOR_DOMAIN] = spec.vendor_domain
        if spec.class_name:
            ctext[TextComponentKey.MODEL_NAME] = spec.class_name
        if component.description:
            ctext[TextComponentKey.COMPONENT_DESCRIPTION] = component.description
        if spec.version_text or spec.version:
            shown = spec.version_text or ".".join(str(v) for v in spec.version or ())
            ctext[TextComponentKey.COMPONENT_VERSION] = shown
        if ctext:
            lmap[component.component_id] = {int(k): v for k, v in ctext.items()}
    return {spec.language: lmap} if lmap else {}


def build_manifest(
    spec: ManifestSpec, integrated_payloads: Mapping[int, bytes] | None = None
) -> bytes:
    """Encode ``spec`` as an unsigned SUIT envelope (manifest-37 §8.2, deterministic CBOR).

    Every component needs its image digest and size (the caller hashes ``file`` payloads);
    ``integrated_payloads`` gives the bytes of components marked ``integrated``, by index.
    """
    payloads = dict(integrated_payloads or {})
    for index, component in enumerate(spec.components):
        if component.digest is None or component.size is None:
            raise SpecError(
                f"component {index}: image digest and size are unknown (hash its file first)"
            )
        if component.integrated and index not in payloads:
            raise SpecError(f"component {index}: integrated payload bytes are missing")
    manifest: dict[int, object] = {
        ManifestKey.MANIFEST_VERSION: 1,
        ManifestKey.MANIFEST_SEQUENCE_NUMBER: spec.sequence_number,
        ManifestKey.COMMON: _cbor.dumps(
            {
                CommonKey.COMPONENTS: [list(c.component_id) for c in spec.components],
                CommonKey.SHARED_SEQUENCE: _cbor.dumps(_shared_sequence(spec)),
            }
        ),
        ManifestKey.VALIDATE: _cbor.dumps(_validate(spec)),
    }
    if spec.reference_uri:
        manifest[ManifestKey.REFERENCE_URI] = spec.reference_uri
    if spec.manifest_component_id:
        manifest[ManifestKey.MANIFEST_COMPONENT_ID] = list(spec.manifest_component_id)
    if spec.version:
        manifest[ManifestKey.SET_VERSION] = _cbor.dumps(list(spec.version))
    members: dict[int, bytes] = {}
    optional = {
        ManifestKey.INSTALL: _install(spec),
        ManifestKey.INVOKE: _invoke(spec),
        ManifestKey.TEXT: _text(spec),
    }
    for key, value in optional.items():
        if not value:
            if key in spec.severable:
                raise SpecError(
                    f"'{key.name.lower()}' is marked severable but the manifest has none"
                )
            continue
        encoded = _cbor.dumps(value)
        if key in spec.severable:
            # manifest-37 §8.4.12: the manifest keeps the digest of the bstr-wrapped member.
            members[key] = encoded
            manifest[key] = Digest.of(
                _cbor.wrap_bstr(encoded), spec.digest_algorithm
            ).to_cbor_value()
        else:
            manifest[key] = encoded
    manifest_raw = _cbor.dumps({int(k): v for k, v in manifest.items()})
    digest = Digest.of(_cbor.wrap_bstr(manifest_raw), spec.digest_algorithm)
    integrated = {_integrated_key(spec.components[i], i): data for i, data in payloads.items()}
    return encode_envelope(
        tagged=True,
        auth_wrapper=[_cbor.dumps(digest.to_cbor_value())],
        manifest_raw=manifest_raw,
        members=members,
        integrated=integrated,
    )


def encode_envelope(
    *,
    tagged: bool,
    auth_wrapper: Sequence[bytes],
    manifest_raw: bytes,
    members: Mapping[ManifestKey, bytes] | Mapping[int, bytes],
    integrated: Mapping[str, bytes],
) -> bytes:
    """Assemble an envelope from parts that are each kept byte for byte."""
    body: dict[object, object] = {
        int(EnvelopeKey.AUTHENTICATION_WRAPPER): _cbor.dumps(list(auth_wrapper)),
        int(EnvelopeKey.MANIFEST): manifest_raw,
    }
    body.update({int(k): v for k, v in members.items()})
    body.update(integrated)
    return _cbor.dumps(_cbor.Tag(107, body) if tagged else body)


def _parts(envelope: Envelope) -> dict[str, bytes]:
    parts = dict(envelope.integrated_payloads)
    parts.update({name: dep.raw for name, dep in envelope.integrated_dependencies.items()})
    return parts


def sign(envelope: bytes | Envelope, keys: Sequence[SigningKey], *, replace: bool = False) -> bytes:
    """Add one authentication block per key (COSE_Sign1, or COSE_Mac0 for HMAC keys) over the
    envelope's SUIT_Digest. Existing blocks are kept unless ``replace``. Raises DecodeError
    when the envelope's digest does not match its manifest (nothing to sign)."""
    env = parse_envelope(envelope) if isinstance(envelope, bytes | bytearray) else envelope
    if not keys:
        raise RuntimeError("sign() needs at least one key")
    if not env.digest.matches(_cbor.wrap_bstr(env.manifest_raw)):
        raise DecodeError(
            "the envelope's SUIT_Digest does not match its manifest; refusing to sign"
        )
    blocks = [] if replace else [block.raw for block in env.auth_blocks]
    for key in keys:
        make = mac0 if key.algorithm is CoseAlgorithm.HMAC_256_256 else sign1
        blocks.append(make(env.digest_raw, key, detached=True))
    return encode_envelope(
        tagged=env.tagged,
        auth_wrapper=[env.digest_raw, *blocks],
        manifest_raw=env.manifest_raw,
        members=env.members,
        integrated=_parts(env),
    )
