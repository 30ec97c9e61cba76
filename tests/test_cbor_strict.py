"""The strict CBOR rules of manifests._cbor: one item, preferred serialization, no duplicates."""

from __future__ import annotations

import contextlib

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from manifests._cbor import Tag, dumps, loads, wrap_bstr
from manifests.errors import DecodeError


def test_accepts_canonical_map() -> None:
    assert loads(bytes.fromhex("a201020304"), what="x") == {1: 2, 3: 4}


@pytest.mark.parametrize(
    ("hex_", "message"),
    [
        ("a203040102", "canonical order"),  # {3:4, 1:2}
        ("a201020103", "duplicate map key"),
        ("9f01ff", "indefinite-length"),
        ("1801", "non-shortest"),
        ("190001", "non-shortest"),
        ("0101", "trailing"),
        ("f93c00", "floating-point"),
        ("f7", "simple value"),
        ("c11a00000000", "tag 1 is not allowed"),
        ("5820aa", "longer than the remaining"),
        ("", "empty"),
    ],
)
def test_rejects(hex_: str, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        loads(bytes.fromhex(hex_), what="x")


def test_duplicate_key_rejected_in_non_canonical_mode() -> None:
    with pytest.raises(DecodeError, match="duplicate map key"):
        loads(bytes.fromhex("a201020103"), what="x", canonical=False)
    # Order is free when canonical=False (the outer envelope map, see parse.py).
    assert loads(bytes.fromhex("a203040102"), what="x", canonical=False) == {3: 4, 1: 2}


def test_depth_limit() -> None:
    deep = b"\x81" * 30 + b"\x00"
    with pytest.raises(DecodeError, match="nesting deeper"):
        loads(deep, what="x")


def test_bytewise_key_order_not_length_first() -> None:
    # RFC 8949 §4.2.1: 24 (0x1818) sorts before -1 (0x20); cbor2's canonical=True does the opposite.
    encoded = dumps({-1: 0, 24: 0})
    assert encoded == bytes.fromhex("a21818002000")
    assert loads(encoded, what="x") == {24: 0, -1: 0}
    with pytest.raises(DecodeError, match="canonical order"):
        loads(bytes.fromhex("a22000181800"), what="x")


def test_tags_round_trip() -> None:
    value = Tag(18, [b"", {}, None, b"sig"])
    assert loads(dumps(value), what="x") == value
    assert wrap_bstr(b"ab") == b"\x42ab"


_values = st.recursive(
    st.integers(-(2**64), 2**64 - 1)
    | st.binary(max_size=40)
    | st.text(max_size=20)
    | st.booleans()
    | st.none(),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.integers(-30, 300) | st.text(max_size=4), children, max_size=5)
    ),
    max_leaves=30,
)


@given(_values)
def test_round_trip(value: object) -> None:
    assert loads(dumps(value), what="x") == value


@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        loads(data, what="x")


@given(
    st.binary(max_size=70000)
    | st.sampled_from([b"x" * n for n in (23, 24, 255, 256, 65535, 65536)])
)
def test_wrap_bstr_matches_cbor2(data: bytes) -> None:
    assert wrap_bstr(data) == cbor2.dumps(data)


@given(_values)
def test_agrees_with_cbor2_on_valid_input(value: object) -> None:
    assert loads(dumps(value), what="x") == cbor2.loads(dumps(value))


def test_boolean_map_keys_are_refused() -> None:
    # Python would read {true: x} as {1: x}; no SUIT or COSE CDDL uses boolean keys.
    with pytest.raises(DecodeError, match="boolean map key"):
        loads(bytes.fromhex("a1f501"), what="x")
    with pytest.raises(DecodeError, match="boolean map key"):
        loads(bytes.fromhex("a2f40101f5"), what="x", canonical=False)


def test_item_budget() -> None:
    many = b"\x99\x01\x00" + b"\x00" * 256
    assert loads(many, what="x", max_items=257) == [0] * 256
    with pytest.raises(DecodeError, match="too many data items"):
        loads(many, what="x", max_items=100)


def test_extra_tags_only_where_admitted() -> None:
    dated = bytes.fromhex("c11a6553f100")  # 1(1700000000)
    with pytest.raises(DecodeError, match="tag 1 is not allowed"):
        loads(dated, what="x")
    assert loads(dated, what="x", extra_tags=frozenset({1})) is not None
