"""Build, sign, parse, verify, sever: our own envelopes end to end, and tampering with them."""

from __future__ import annotations

import contextlib
import dataclasses
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from manifests import _cbor
from manifests.build import build_manifest, encode_envelope, sign
from manifests.cose import (
    Algorithm,
    SigningKey,
    anchor_from_pem,
    generate_signing_key,
    public_pem,
)
from manifests.digest import Digest
from manifests.errors import DecodeError, UnsupportedError, VerificationError
from manifests.numbers import ManifestKey
from manifests.parse import parse_envelope, parse_manifest
from manifests.sever import reattach, sever
from manifests.spec import ComponentSpec, ManifestSpec, load_spec
from manifests.summary import summarize
from manifests.uuids import class_id, vendor_id_from_domain
from manifests.verify import verify_envelope

from .conftest import examples

IMAGE = b"firmware image v1" * 10
SPEC = """
vendor-domain = "example.com"
class-name = "thermostat-v2"
sequence-number = 7
version = "1.2.0"
severable = ["install", "text"]

[text]
description = "Thermostat firmware"

[[component]]
id = ["firmware"]
digest = "DIGEST"
size = SIZE
uri = "https://fw.example.com/thermostat/1.2.0.bin"
""".replace("DIGEST", Digest.of(IMAGE).hex).replace("SIZE", str(len(IMAGE)))


@pytest.fixture(scope="module")
def es256() -> SigningKey:
    return generate_signing_key(Algorithm.ES256)


def test_build_sign_verify(es256: SigningKey) -> None:
    spec = load_spec(SPEC)
    signed = sign(build_manifest(spec), [es256])
    verified = verify_envelope(parse_envelope(signed), [es256.public_anchor("acme")])
    assert verified.signers == ("acme",)
    assert verified.raw == signed
    assert verified.sequence_number == 7
    manifest = verified.manifest
    assert manifest.set_version == (1, 2, 0)
    assert manifest.install is not None and ManifestKey.INSTALL in manifest.severed
    (component,) = summarize(manifest)
    assert component.component_id == (b"firmware",)
    assert component.vendor_ids == (vendor_id_from_domain("example.com"),)
    assert component.class_ids == (class_id(vendor_id_from_domain("example.com"), "thermostat-v2"),)
    assert component.image_digests == (Digest.of(IMAGE),)
    assert component.image_sizes == (len(IMAGE),)
    assert component.uris == ("https://fw.example.com/thermostat/1.2.0.bin",)


@pytest.mark.parametrize("alg", list(Algorithm))
def test_every_algorithm(alg: Algorithm) -> None:
    key = generate_signing_key(alg)
    signed = sign(build_manifest(load_spec(SPEC)), [key])
    assert verify_envelope(parse_envelope(signed), [key.public_anchor("k")]).signers == ("k",)


def test_unsigned_envelope_is_rejected() -> None:
    with pytest.raises(VerificationError, match="no authentication block"):
        verify_envelope(parse_envelope(build_manifest(load_spec(SPEC))), [])


def test_resigning_keeps_identity(es256: SigningKey) -> None:
    other = generate_signing_key(Algorithm.EDDSA)
    once = sign(build_manifest(load_spec(SPEC)), [es256])
    twice = sign(once, [other])
    anchors = [es256.public_anchor("a"), other.public_anchor("b")]
    first = verify_envelope(parse_envelope(once), anchors)
    second = verify_envelope(parse_envelope(twice), anchors)
    assert first.identity == second.identity
    assert second.signers == ("a", "b")
    # Only the second signer trusted: at least one block verifies, the other is reported.
    only_b = verify_envelope(parse_envelope(twice), anchors[1:])
    assert only_b.signers == ("b",) and len(only_b.unverified_blocks) == 1


def test_algorithm_comes_from_the_key_record() -> None:
    key = generate_signing_key(Algorithm.ESP256)
    signed = sign(build_manifest(load_spec(SPEC)), [key])
    es256_only = anchor_from_pem(public_pem(key), name="r", algorithms=[Algorithm.ES256])
    with pytest.raises(VerificationError):
        verify_envelope(parse_envelope(signed), [es256_only])
    both = anchor_from_pem(public_pem(key), name="r")
    assert verify_envelope(parse_envelope(signed), [both]).signers == ("r",)


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def _locate(haystack: bytes, needle: bytes) -> int:
    at = haystack.find(needle)
    assert at >= 0
    return at


@pytest.mark.parametrize("part", ["manifest", "member", "signature", "digest"])
def test_tampering_is_rejected(es256: SigningKey, part: str) -> None:
    signed = sign(build_manifest(load_spec(SPEC)), [es256])
    env = parse_envelope(signed)
    block = env.auth_blocks[0]
    where = {
        "manifest": _locate(signed, env.manifest_raw) + len(env.manifest_raw) // 2,
        "member": _locate(signed, env.members[ManifestKey.INSTALL]) + 5,
        "signature": _locate(signed, block.tag) + 3,
        "digest": _locate(signed, env.digest.value) + 1,
    }[part]
    with pytest.raises((DecodeError, VerificationError)):
        verify_envelope(parse_envelope(_flip(signed, where)), [es256.public_anchor("a")])


def test_sever_and_reattach_keep_signed_bytes(es256: SigningKey) -> None:
    full = sign(build_manifest(load_spec(SPEC)), [es256])
    env = parse_envelope(full)
    severed = sever(full)
    small = parse_envelope(severed)
    assert not small.members and small.manifest.install is None and small.manifest.text is None
    anchors = [es256.public_anchor("a")]
    assert verify_envelope(small, anchors).identity == verify_envelope(env, anchors).identity
    restored = reattach(severed, env.members)
    assert restored == full
    with pytest.raises(VerificationError):
        reattach(severed, {ManifestKey.INSTALL: env.members[ManifestKey.INSTALL] + b"\x00"})


INTEGRATED_SPEC = """
vendor-domain = "example.com"
class-name = "thermostat-v2"
sequence-number = 1

[[component]]
id-hex = ["00"]
file = "build/fw.bin"
integrated = true
"""


def test_integrated_payload_round_trip(es256: SigningKey) -> None:
    spec = load_spec(INTEGRATED_SPEC)
    component = dataclasses.replace(spec.components[0], digest=Digest.of(IMAGE), size=len(IMAGE))
    spec = dataclasses.replace(spec, components=(component,))
    signed = sign(build_manifest(spec, {0: IMAGE}), [es256])
    env = parse_envelope(signed)
    assert env.integrated_payloads == {"#fw.bin": IMAGE}
    assert summarize(env.manifest)[0].uris == ("#fw.bin",)
    verify_envelope(env, [es256.public_anchor("a")])


def test_legacy_install_key_names_the_drafts() -> None:
    with pytest.raises(UnsupportedError, match=r"17 = suit-install of drafts -17\.\.-27"):
        parse_manifest(_cbor.dumps({1: 1, 2: 0, 3: _cbor.dumps({}), 17: b""}))


def test_manifest_version_must_be_1() -> None:
    with pytest.raises(UnsupportedError, match="manifest-version 2"):
        parse_manifest(_cbor.dumps({1: 2, 2: 0, 3: _cbor.dumps({})}))


def test_unknown_command_is_refused() -> None:
    seq = _cbor.dumps([99, 0])
    with pytest.raises(UnsupportedError, match="unknown SUIT command 99"):
        parse_manifest(_cbor.dumps({1: 1, 2: 0, 3: _cbor.dumps({}), 7: seq}))


def test_unknown_parameter_is_refused() -> None:
    seq = _cbor.dumps([20, {99: 1}])
    with pytest.raises(UnsupportedError, match="unknown SUIT parameter 99"):
        parse_manifest(_cbor.dumps({1: 1, 2: 0, 3: _cbor.dumps({}), 7: seq}))


def test_sequence_number_limits() -> None:
    assert (
        parse_manifest(_cbor.dumps({1: 1, 2: 2**64 - 1, 3: _cbor.dumps({})})).sequence_number
        == 2**64 - 1
    )
    with pytest.raises(DecodeError, match="sequence-number"):
        parse_manifest(_cbor.dumps({1: 1, 2: -1, 3: _cbor.dumps({})}))


def test_envelope_with_trailing_bytes_is_refused(es256: SigningKey) -> None:
    signed = sign(build_manifest(load_spec(SPEC)), [es256])
    with pytest.raises(DecodeError, match="trailing"):
        parse_envelope(signed + b"\x00")


_names = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=12)
_components = st.builds(
    ComponentSpec,
    component_id=st.lists(st.binary(max_size=8), min_size=1, max_size=3).map(tuple),
    digest=st.binary(min_size=32, max_size=32).map(lambda b: Digest(Digest.of(b"").algorithm, b)),
    size=st.integers(0, 2**32),
    uri=st.none() | _names.map(lambda n: f"https://example.com/{n}"),
    slot=st.none() | st.integers(0, 3),
    invoke=st.booleans(),
    description=st.none() | _names,
)
_specs = st.builds(
    ManifestSpec,
    vendor_id=st.uuids(),
    class_id=st.uuids(),
    sequence_number=st.integers(0, 2**64 - 1),
    components=st.lists(_components, min_size=1, max_size=3).map(tuple),
    version=st.none() | st.lists(st.integers(0, 99), min_size=1, max_size=3).map(tuple),
    reference_uri=st.none() | _names,
    description=st.none() | _names,
)


@settings(max_examples=examples(60), suppress_health_check=[HealthCheck.too_slow])
@given(_specs)
def test_build_parse_round_trip(spec: ManifestSpec) -> None:
    envelope = parse_envelope(build_manifest(spec))
    manifest = envelope.manifest
    assert manifest.sequence_number == spec.sequence_number
    assert manifest.reference_uri == spec.reference_uri
    assert manifest.set_version == spec.version
    summary = summarize(manifest)
    assert [s.component_id for s in summary] == [c.component_id for c in spec.components]
    for got, want in zip(summary, spec.components, strict=True):
        assert got.vendor_ids == (spec.vendor_id,)
        assert got.class_ids == (spec.class_id,)
        assert got.image_digests == (want.digest,)
        assert got.image_sizes == (want.size,)
        assert got.uris == ((want.uri,) if want.uri else ())
    assert envelope.digest.matches(_cbor.wrap_bstr(envelope.manifest_raw))


@settings(max_examples=examples(300))
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_our_errors(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        parse_envelope(data)


@pytest.fixture(scope="module")
def signed_example(es256: SigningKey) -> bytes:
    return sign(build_manifest(load_spec(SPEC)), [es256])


@settings(max_examples=examples(300), suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_mutated_envelopes_raise_only_our_errors(
    signed_example: bytes, es256: SigningKey, data: st.DataObject
) -> None:
    buf = bytearray(signed_example)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(buf) - 1))
        buf[at] = data.draw(st.integers(0, 255))
    with contextlib.suppress(DecodeError, VerificationError):
        verify_envelope(parse_envelope(bytes(buf)), [es256.public_anchor("a")])


def test_vendor_and_class_uuid_helpers() -> None:
    # manifest-37 Appendix B: vendor "arm.com", class "suit" (notes/suit-spec.md §1.1).
    vendor = vendor_id_from_domain("arm.com")
    assert vendor == uuid.UUID("fa6b4a53-d5ad-5fdf-be9d-e663e4d41ffe")
    assert class_id(vendor, "suit") == uuid.UUID("1492af14-2569-5e48-bf42-9b2d51f2ab45")


def _reordered(envelope: bytes) -> bytes:
    """The same envelope, untagged, with key 3 before key 2 (the outer order is free)."""
    env = parse_envelope(envelope)
    return (
        b"\xa2\x03"
        + _cbor.wrap_bstr(env.manifest_raw)
        + b"\x02"
        + _cbor.wrap_bstr(env.auth_wrapper_raw)
    )


def test_integrated_dependency_cannot_hide_as_payload(es256: SigningKey) -> None:
    untrusted = generate_signing_key(Algorithm.ES256)
    dependency = _reordered(sign(build_manifest(load_spec(SPEC)), [untrusted]))
    outer = parse_envelope(sign(build_manifest(load_spec(SPEC)), [es256]))
    smuggled = encode_envelope(
        tagged=True,
        auth_wrapper=list(_cbor.loads(outer.auth_wrapper_raw, what="w")),  # type: ignore[call-overload]
        manifest_raw=outer.manifest_raw,
        members=outer.members,
        integrated={"#dep": dependency},
    )
    env = parse_envelope(smuggled)
    assert list(env.integrated_dependencies) == ["#dep"]
    with pytest.raises(VerificationError, match="integrated dependency '#dep'"):
        verify_envelope(env, [es256.public_anchor("a")])


def test_payload_that_looks_like_a_map_stays_a_payload(es256: SigningKey) -> None:
    image = b"\xa2\x02\x00" + b"firmware" * 10  # a map head, but not an envelope
    spec = load_spec(INTEGRATED_SPEC)
    component = dataclasses.replace(spec.components[0], digest=Digest.of(image), size=len(image))
    spec = dataclasses.replace(spec, components=(component,))
    env = parse_envelope(sign(build_manifest(spec, {0: image}), [es256]))
    assert env.integrated_payloads == {"#fw.bin": image} and not env.integrated_dependencies
    verify_envelope(env, [es256.public_anchor("a")])


def test_an_unreadable_extra_block_does_not_spoil_a_good_one(es256: SigningKey) -> None:
    good = parse_envelope(sign(build_manifest(load_spec(SPEC)), [es256]))
    junk = _cbor.dumps(_cbor.Tag(98, [b"", {}, None, []]))  # a COSE_Sign we do not read
    wrapper = [good.digest_raw, *(b.raw for b in good.auth_blocks), junk]
    envelope = encode_envelope(
        tagged=True, auth_wrapper=wrapper, manifest_raw=good.manifest_raw,
        members=good.members, integrated={},
    )  # fmt: skip
    verified = verify_envelope(parse_envelope(envelope), [es256.public_anchor("a")])
    assert verified.signers == ("a",) and "COSE_Sign" in verified.unverified_blocks[0]


def test_component_metadata_may_carry_dates_and_uuids() -> None:
    metadata = _cbor.dumps({6: _cbor.Tag(1, 1_700_000_000), 8: _cbor.Tag(37, bytes(16))})
    seq = _cbor.dumps([20, {30: metadata}])
    manifest = parse_manifest(_cbor.dumps({1: 1, 2: 0, 3: _cbor.dumps({}), 7: seq}))
    assert manifest.validate is not None


def test_release_candidate_version_text(es256: SigningKey) -> None:
    spec = load_spec(SPEC.replace('version = "1.2.0"', 'version = "2.0.0-rc.1"'))
    manifest = parse_envelope(build_manifest(spec)).manifest
    assert manifest.set_version == (2, 0, 0, -1, 1)
    assert manifest.text is not None
    (component_text,) = manifest.text.components["en"].values()
    assert component_text[6] == "2.0.0-rc.1"
