"""Strict JSON and base64url for the JOSE and EAT JSON forms of this ring.

JSON (RFC 8259): duplicate member names are refused (RFC 7515 §5.2 and RFC 7519 §7.2 let a
parser refuse them, and two readers choosing different duplicates is an attack), as are
NaN/Infinity and anything not UTF-8. base64url (RFC 4648 §5): no padding emitted, padding
tolerated on input; the standard alphabet's "+" and "/" and non-zero spare bits refused.
"""

from __future__ import annotations

import base64
import binascii
import json

from .errors import DecodeError

__all__ = ["b64url_decode", "b64url_encode", "loads"]


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate member name")
    return out


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def loads(data: bytes | str, *, what: str, max_size: int = 1 << 20) -> object:
    """Decode one JSON text under the rules above; DecodeError naming ``what`` otherwise."""
    if len(data) > max_size:
        raise DecodeError(f"{what}: {len(data)} bytes exceeds the limit of {max_size}")
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise DecodeError(f"{what}: not valid JSON: {exc}") from exc


def b64url_decode(value: object, what: str) -> bytes:
    """Decode base64url text; DecodeError naming ``what`` otherwise."""
    if not isinstance(value, str) or not value.isascii() or "+" in value or "/" in value:
        raise DecodeError(f"{what} must be base64url text")
    bare = value.rstrip("=")
    try:
        data = base64.b64decode(bare + "=" * (-len(bare) % 4), altchars=b"-_", validate=True)
    except binascii.Error as exc:
        raise DecodeError(f"{what}: {exc}") from exc
    if b64url_encode(data) != bare or (value != bare and len(value) % 4):  # one text per value
        raise DecodeError(f"{what} is not canonical base64url")
    return data


def b64url_encode(data: bytes) -> str:
    """base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
