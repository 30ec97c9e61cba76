"""attest._cbor: strict on structure, tolerant of serialization (RFC 9783), deterministic out."""

from __future__ import annotations

import contextlib

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attest._cbor import Tag, dumps, loads
from attest.errors import DecodeError

from .conftest import examples


@pytest.mark.parametrize(
    ("hex_", "value"),
    [
        ("a201020304", {1: 2, 3: 4}),
        ("a203040102", {3: 4, 1: 2}),  # any map order
        ("1801", 1),  # non-shortest heads
        ("190001", 1),
        ("5a00000001ff", b"\xff"),
        ("a1180a41aa", {10: b"\xaa"}),
        ("f93c00", 1.0),  # floats, any width (EAT location)
        ("fa3f800000", 1.0),
        ("f6", None),
        ("d28440a0f640", Tag(18, [b"", {}, None, b""])),  # COSE_Sign1
        ("d83d" + "d2" + "80", Tag(61, Tag(18, []))),  # CWT tag around COSE
        ("c24101", 1),  # bignum: an integer
    ],
)
def test_accepts(hex_: str, value: object) -> None:
    assert loads(bytes.fromhex(hex_), what="x") == value


@pytest.mark.parametrize(
    ("hex_", "message"),
    [
        ("a201020103", "duplicate map key"),
        ("a20102180103", "duplicate map key"),  # 1 and 0x18 0x01 are the same key
        ("a2616101616102", "duplicate map key"),
        ("a18101", "map key is not"),
        ("a1f401", "map key is not"),
        ("9f01ff", "indefinite-length"),
        ("5f4101ff", "indefinite-length"),
        ("0101", "trailing"),
        ("f7", "simple value"),
        ("f820", "simple value"),
        ("e0", "simple value"),
        ("c11a00000000", "tag 1 is not allowed"),
        ("d81c01", "tag 28 is not allowed"),  # shareable
        ("d9d9f701", "tag 55799 is not allowed"),  # cbor2 would strip it silently
        ("5820aa", "longer than the remaining"),
        ("9a0000ffff", "array longer"),
        ("bb00000000ffffffff", "map longer"),
        ("1c", "reserved additional information"),
        ("19", "truncated"),
        ("62c328", "unicode"),  # not UTF-8: cbor2's error, wrapped
        ("", "empty"),
    ],
)
def test_rejects(hex_: str, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        loads(bytes.fromhex(hex_), what="x")


def test_limits() -> None:
    with pytest.raises(DecodeError, match="nesting deeper than 16"):
        loads(b"\x81" * 17 + b"\x00", what="x")
    assert loads(b"\x81" * 16 + b"\x00", what="x") is not None
    with pytest.raises(DecodeError, match="exceeds the limit of 10"):
        loads(bytes.fromhex("4a") + bytes(10), what="x", max_size=10)
    with pytest.raises(DecodeError, match="expected bytes"):
        loads("a0", what="x")  # type: ignore[arg-type]


def test_dumps_sorts_keys_bytewise() -> None:
    # RFC 8949 §4.2.1: 10 (0a) < 100 (1864) < -1 (20) < h'' (40) < "a" (6161); cbor2's
    # canonical=True would put -1 before 100 (length first).
    sorted_hex = "a50a0418640320024005616101"
    assert dumps({"a": 1, -1: 2, 100: 3, 10: 4, b"": 5}).hex() == sorted_hex
    assert dumps(Tag(18, [b"", {2: 0, 1: 0}])).hex() == "d28240a201000200"
    with pytest.raises(RuntimeError):
        dumps(1.5)


values = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 64), (1 << 64) - 1) | st.binary() | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.integers(-30, 30) | st.text(max_size=3), inner, max_size=4)
        | st.builds(Tag, st.integers(6, 24) | st.sampled_from([18, 61, 602]), inner)
    ),
    max_leaves=12,
)


@given(values)
def test_round_trip(value: object) -> None:
    data = dumps(value)
    assert loads(data, what="x") == value
    assert dumps(loads(data, what="x")) == data


@given(values)
def test_tolerates_other_encoders(value: object) -> None:
    """cbor2's own (length-first, insertion-order) output decodes to the same value."""
    plain = cbor2.dumps(
        value, default=lambda enc, tag: enc.encode(cbor2.CBORTag(tag.number, tag.value))
    )
    assert loads(plain, what="x") == value


@settings(max_examples=examples(500))
@given(st.binary(max_size=64))
def test_fuzz_raises_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        loads(data, what="x")
