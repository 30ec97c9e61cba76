"""CBOR for the attestation ring: the only module here that imports cbor2.

Evidence comes from devices and other verifiers' encoders, so decoding is strict about
structure but tolerant about serialization (RFC 9783, token encoding: definite lengths,
and decoders tolerate non-preferred serialization; notes/attestation.md §2.8). cbor2 accepts
duplicate map keys (last wins), ignores trailing bytes and decodes indefinite lengths, so
every input is first walked here byte by byte and refused unless it is

* exactly one data item with no trailing bytes (RFC 8949 §5.1 "well-formed");
* definite-length only (RFC 8949 §3.2.2 indefinite lengths are refused, RFC 9783);
* free of duplicate map keys, compared by value so ``1`` and ``0x18 0x01`` collide
  (RFC 8949 §5.6); map keys are integers, byte strings or text strings;
* built from integers, byte and text strings, arrays, maps, false/true/null, floats and
  tags; tags that cbor2 would turn into Python objects (dates, UUIDs, shared references,
  string references, sets, ...) are refused, except bignums 2/3, which are integers;
* no deeper than ``max_depth`` and no longer than ``max_size``.

Not checked, on purpose: shortest heads and map key order (tolerated, RFC 9783).
Every other tag decodes to :class:`Tag`. :func:`dumps` is the deterministic encoder
(RFC 8949 §4.2.1): preferred heads and bytewise-sorted map keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import cbor2

from .errors import DecodeError

__all__ = ["Tag", "dumps", "loads"]

#: Tags cbor2 5.9 decodes into Python objects before any tag_hook runs (``_decoder.py``
#: ``semantic_decoders``, plus 55799 which it strips). 2 and 3 (bignums) are allowed.
_INTERPRETED_TAGS: Final = frozenset(
    {0, 1, 4, 5, 25, 28, 29, 30, 35, 36, 37, 100, 256, 258, 260, 261, 1004, 55799}
)


@dataclass(frozen=True, slots=True)
class Tag:
    """A CBOR tag (RFC 8949 §3.4) with its decoded content."""

    number: int
    value: object


def _tag_hook(_decoder: object, tag: Any) -> Tag:
    return Tag(int(tag.tag), tag.value)


def loads(data: bytes, *, what: str, max_size: int = 1 << 20, max_depth: int = 16) -> object:
    """Decode exactly one CBOR item under the rules above; ``what`` names it in errors."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"{what}: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise DecodeError(f"{what}: empty input")
    if len(data) > max_size:
        raise DecodeError(f"{what}: {len(data)} bytes exceeds the limit of {max_size}")
    end = _Walker(data, what, max_depth).item(0, 0)
    if end != len(data):
        raise DecodeError(f"{what}: {len(data) - end} trailing byte(s) after the CBOR item")
    try:
        return cbor2.loads(data, tag_hook=_tag_hook)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError) as exc:
        raise DecodeError(f"{what}: {exc}") from exc


class _Walker:
    """Checks well-formedness and the rules above without building values."""

    __slots__ = ("data", "max_depth", "n", "what")

    def __init__(self, data: bytes, what: str, max_depth: int) -> None:
        self.data = data
        self.n = len(data)
        self.what = what
        self.max_depth = max_depth

    def fail(self, pos: int, msg: str) -> DecodeError:
        return DecodeError(f"{self.what}: {msg} at byte {pos}")

    def head(self, pos: int) -> tuple[int, int, int, int]:
        """Return (major type, additional info, argument, position after the head)."""
        if pos >= self.n:
            raise self.fail(pos, "truncated CBOR item")
        ib = self.data[pos]
        major, ai = ib >> 5, ib & 0x1F
        if ai < 24:
            return major, ai, ai, pos + 1
        if ai > 27:
            if ai == 31:
                raise self.fail(pos, "indefinite-length item (not allowed)")
            raise self.fail(pos, f"reserved additional information {ai}")
        end = pos + 1 + (1 << (ai - 24))
        if end > self.n:
            raise self.fail(pos, "truncated CBOR head")
        return major, ai, int.from_bytes(self.data[pos + 1 : end], "big"), end

    def item(self, pos: int, depth: int) -> int:
        if depth > self.max_depth:
            raise self.fail(pos, f"nesting deeper than {self.max_depth}")
        major, ai, arg, pos2 = self.head(pos)
        if major <= 1:
            return pos2
        if major <= 3:
            if arg > self.n - pos2:
                raise self.fail(pos, "string longer than the remaining input")
            return pos2 + arg
        if major == 4:
            if arg > self.n - pos2:
                raise self.fail(pos, "array longer than the remaining input")
            for _ in range(arg):
                pos2 = self.item(pos2, depth + 1)
            return pos2
        if major == 5:
            return self.map(pos, pos2, arg, depth)
        if major == 6:
            if arg in _INTERPRETED_TAGS:
                raise self.fail(pos, f"CBOR tag {arg} is not allowed")
            return self.item(pos2, depth + 1)
        if ai in (20, 21, 22, 25, 26, 27):  # false, true, null, half/single/double float
            return pos2
        raise self.fail(pos, f"simple value {arg} is not allowed")

    def map(self, start: int, pos: int, count: int, depth: int) -> int:
        if count > (self.n - pos) // 2:
            raise self.fail(start, "map longer than the remaining input")
        seen: set[tuple[int, object]] = set()
        for _ in range(count):
            key = self.key(pos, depth + 1)
            if key[1] in seen:
                raise self.fail(pos, "duplicate map key")
            seen.add(key[1])
            pos = self.item(key[0], depth + 1)
        return pos

    def key(self, pos: int, depth: int) -> tuple[int, tuple[int, object]]:
        """A map key: (end position, value identity). Heads of any width compare equal."""
        major, _ai, arg, pos2 = self.head(pos)
        if major == 0:
            return pos2, (0, arg)
        if major == 1:
            return pos2, (0, -1 - arg)
        if major in (2, 3):
            end = self.item(pos, depth)
            return end, (major, self.data[pos2:end])
        raise self.fail(pos, "map key is not an integer, byte string or text string")


def _prepare(obj: object) -> object:
    """Deep copy for cbor2: map keys in RFC 8949 §4.2.1 order, Tag as CBORTag.

    cbor2's ``canonical=True`` sorts length-first (the old RFC 7049 rule, which differs
    for e.g. keys 24 and -1), so the keys are sorted here by their encoded bytes and the
    plain encoder, which keeps insertion order, writes them."""
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    if isinstance(obj, bytes | bytearray | memoryview):
        return bytes(obj)
    if isinstance(obj, dict):
        items = sorted(((cbor2.dumps(_prepare(k)), k, v) for k, v in obj.items()), key=_first)
        return {_prepare(k): _prepare(v) for _, k, v in items}
    if isinstance(obj, list | tuple):
        return [_prepare(v) for v in obj]
    if isinstance(obj, Tag):
        return cbor2.CBORTag(obj.number, _prepare(obj.value))
    # Floats have several preferred widths; nothing this ring encodes carries one.
    raise RuntimeError(f"cannot encode {type(obj).__name__} deterministically")


def _first(item: tuple[bytes, object, object]) -> bytes:
    return item[0]


def dumps(obj: object) -> bytes:
    """Encode deterministically (RFC 8949 §4.2.1): preferred heads, sorted map keys."""
    return bytes(cbor2.dumps(_prepare(obj)))
