"""Strict CBOR for the manifest ring: the only module here that imports cbor2.

cbor2 accepts duplicate map keys (last wins), ignores trailing bytes and decodes indefinite
lengths and non-shortest heads without complaint (notes/suit-spec.md §5). A SUIT processor
must not: a signed manifest that two decoders read differently is an attack. So every item
is first walked here byte by byte and refused unless it is

* exactly one data item, with no trailing bytes (RFC 8949 §5.1 "well-formed");
* in preferred serialization: shortest integer and length heads, definite lengths only
  (RFC 8949 §4.1, §4.2.1 first two rules);
* free of duplicate map keys (RFC 8949 §5.6) and of boolean map keys (no SUIT or COSE CDDL
  uses them, and Python would read ``true`` as the key ``1``);
* built only from integers, byte and text strings, arrays, maps, false/true/null and the
  tags SUIT and COSE use (no floats, no undefined, no other simple values);
* no deeper than ``max_depth``, no longer than ``max_size`` and of at most ``max_items`` data
  items (a bound on the work done before anything is authenticated);
* when ``canonical``: every map's keys in the bytewise lexicographic order of their
  encodings (RFC 8949 §4.2.1; manifest-37 §8.1 "canonical CBOR ordering").

Only then is it handed to cbor2's C decoder for the values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import cbor2

from .errors import DecodeError

__all__ = ["MAX_DEPTH", "Tag", "dumps", "loads", "wrap_bstr"]

MAX_DEPTH: Final = 24
MAX_ITEMS: Final = 65_536
#: Tags that may appear anywhere in SUIT/COSE data handled by this ring.
#: 16/17/18 COSE_Encrypt0/Mac0/Sign1, 96/97/98 COSE_Encrypt/Mac/Sign (RFC 9052 §2),
#: 107/1070 SUIT_Envelope/SUIT_Manifest (manifest-37 §11), 111/112 OID/relative OID
#: (RFC 9090; a PEN vendor-id is #6.112, manifest-37 §8.4.8.2).
_ALLOWED_TAGS: Final = frozenset({16, 17, 18, 96, 97, 98, 107, 111, 112, 1070})


@dataclass(frozen=True, slots=True)
class Tag:
    """A CBOR tag from the allowed set, with its decoded content."""

    number: int
    value: object


def _tag_hook(_decoder: object, tag: Any) -> Tag:
    return Tag(int(tag.tag), tag.value)


def loads(
    data: bytes,
    *,
    what: str,
    canonical: bool = True,
    max_size: int = 1 << 24,
    max_depth: int = MAX_DEPTH,
    max_items: int = MAX_ITEMS,
    extra_tags: frozenset[int] = frozenset(),
) -> object:
    """Decode exactly one strictly encoded CBOR item; ``what`` names it in error messages.

    ``extra_tags`` admits tags beyond the SUIT/COSE set where a foreign document allows them
    (dates #6.1 and UUIDs #6.37 in update-management component metadata and CoSWID)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"{what}: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise DecodeError(f"{what}: empty input")
    if len(data) > max_size:
        raise DecodeError(f"{what}: {len(data)} bytes exceeds the limit of {max_size}")
    walker = _Walker(data, what, canonical, max_depth, max_items, _ALLOWED_TAGS | extra_tags)
    end = walker.item(0, 0)
    if end != len(data):
        raise DecodeError(f"{what}: {len(data) - end} trailing byte(s) after the CBOR item")
    try:
        return cbor2.loads(data, tag_hook=_tag_hook)
    except (cbor2.CBORDecodeError, ValueError, UnicodeDecodeError) as exc:
        raise DecodeError(f"{what}: {exc}") from exc


class _Walker:
    """Checks well-formedness and the strict rules without building values."""

    __slots__ = ("budget", "canonical", "data", "max_depth", "n", "tags", "what")

    def __init__(  # noqa: PLR0917 - private, called from one place
        self,
        data: bytes,
        what: str,
        canonical: bool,
        max_depth: int,
        max_items: int,
        tags: frozenset[int],
    ) -> None:
        self.data = data
        self.n = len(data)
        self.what = what
        self.canonical = canonical
        self.max_depth = max_depth
        self.budget = max_items
        self.tags = tags

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
        size = 1 << (ai - 24)
        end = pos + 1 + size
        if end > self.n:
            raise self.fail(pos, "truncated CBOR head")
        arg = int.from_bytes(self.data[pos + 1 : end], "big")
        # Preferred serialization: the shortest head that holds the argument (RFC 8949 §4.1).
        if major != 7 and arg < (24 if ai == 24 else 1 << (4 << (ai - 24))):
            raise self.fail(pos, "non-shortest integer or length encoding")
        return major, ai, arg, end

    def item(self, pos: int, depth: int) -> int:
        if depth > self.max_depth:
            raise self.fail(pos, f"nesting deeper than {self.max_depth}")
        self.budget -= 1
        if self.budget < 0:
            raise self.fail(pos, "too many data items")
        major, ai, arg, pos2 = self.head(pos)
        if major <= 1:
            return pos2
        if major <= 3:
            end = pos2 + arg
            if end > self.n:
                raise self.fail(pos, "string longer than the remaining input")
            return end
        if major == 4:
            if arg > self.n - pos2:
                raise self.fail(pos, "array longer than the remaining input")
            for _ in range(arg):
                pos2 = self.item(pos2, depth + 1)
            return pos2
        if major == 5:
            return self.map(pos, pos2, arg, depth)
        if major == 6:
            if arg not in self.tags:
                raise self.fail(pos, f"CBOR tag {arg} is not allowed here")
            return self.item(pos2, depth + 1)
        if ai in (20, 21, 22):  # false, true, null
            return pos2
        if ai in (25, 26, 27):
            raise self.fail(pos, "floating-point values are not allowed")
        raise self.fail(pos, f"simple value {arg} is not allowed")

    def map(self, start: int, pos: int, count: int, depth: int) -> int:
        if count > (self.n - pos) // 2:
            raise self.fail(start, "map longer than the remaining input")
        data = self.data
        prev = b""
        seen: set[bytes] = set()
        for i in range(count):
            if pos < self.n and data[pos] in (0xF4, 0xF5):
                raise self.fail(pos, "boolean map key")
            kend = self.item(pos, depth + 1)
            key = data[pos:kend]
            if self.canonical:
                if i and key <= prev:
                    kind = "duplicate map key" if key == prev else "map keys not in canonical order"
                    raise self.fail(pos, f"{kind} (RFC 8949 §4.2.1)")
                prev = key
            else:
                if key in seen:
                    raise self.fail(pos, "duplicate map key")
                seen.add(key)
            pos = self.item(kend, depth + 1)
        return pos


def _sorted_for_encoding(obj: object) -> object:
    """Deep copy with map keys in RFC 8949 §4.2.1 order (cbor2's canonical=True sorts
    length-first, the RFC 7049 rule, which differs for e.g. keys 24 and -1)."""
    if isinstance(obj, dict):
        items = [(_sorted_for_encoding(k), _sorted_for_encoding(v)) for k, v in obj.items()]
        keyed = sorted(((cbor2.dumps(k), k, v) for k, v in items), key=lambda t: t[0])
        return {k: v for _, k, v in keyed}
    if isinstance(obj, list):
        return [_sorted_for_encoding(v) for v in obj]
    if isinstance(obj, tuple):  # map keys must stay hashable; cbor2 encodes tuples as arrays
        return tuple(_sorted_for_encoding(v) for v in obj)
    if isinstance(obj, Tag):
        return cbor2.CBORTag(obj.number, _sorted_for_encoding(obj.value))
    return obj


def dumps(obj: object) -> bytes:
    """Encode deterministically (RFC 8949 §4.2.1): preferred heads, sorted map keys."""
    return bytes(cbor2.dumps(_sorted_for_encoding(obj)))


def wrap_bstr(data: bytes) -> bytes:
    """The CBOR encoding of ``data`` as a byte string: head plus content (``bstr .cbor``).

    Written out by hand (major type 2, shortest head, RFC 8949 §3.1): it is on the verify hot
    path, where a cbor2 call costs more than the hashing it feeds."""
    n = len(data)
    if n < 24:
        head = bytes((0x40 | n,))
    elif n < 0x100:
        head = bytes((0x58, n))
    elif n < 0x10000:
        head = b"\x59" + n.to_bytes(2, "big")
    elif n < 0x100000000:
        head = b"\x5a" + n.to_bytes(4, "big")
    else:
        head = b"\x5b" + n.to_bytes(8, "big")
    return head + bytes(data)
