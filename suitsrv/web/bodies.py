"""Request bodies for every audience: read whole under a size limit, JSON by one parser."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from suitsrv.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from suitsrv.jsonbody import json_object

__all__ = ["read_body", "read_json"]


async def read_body(request: web.Request, limit: int, media_type: str | None = None) -> bytes:
    """The request body, refused before reading when its declared length is over ``limit``."""
    if media_type is not None and request.content_type != media_type:
        raise UnsupportedMediaType(f"send {media_type}, not {request.content_type or 'nothing'}")
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(
            f"body of {request.content_length} bytes exceeds the limit of {limit}"
        )
    data = bytearray()
    async for chunk in request.content.iter_chunked(64 << 10):
        data += chunk
        if len(data) > limit:
            raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes")
    if not data:
        raise InvalidRequest("empty request body")
    return bytes(data)


async def read_json(request: web.Request, limit: int) -> dict[str, Any]:
    """A JSON object body (suitsrv.jsonbody rules), refused before reading when too large."""
    return json_object(await read_body(request, limit, "application/json"))
