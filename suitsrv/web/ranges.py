"""Conditional and byte-range GET for immutable, content-addressed blobs (RFC 9110 §13 to §15).

Policy, in the order RFC 9110 §13.2.2 evaluates it:

* ``If-None-Match`` (§13.1.2, weak comparison, ``*`` included) → 304.
* ``Range`` (§14.2) only on GET; HEAD answers as a plain GET would without ``Range``
  ("A server MUST ignore a Range header field received with a request method [other than]
  GET"). ``If-Range`` (§13.1.5) holds only for a strong match of our ETag; dates never match
  because we send no Last-Modified.
* A ``Range`` we do not understand (other unit, bad syntax, several ``Range`` fields) or one
  that still has more than ``MAX_RANGES`` parts after coalescing is ignored and the whole
  blob goes out as 200: §14.2 lets a server ignore the field, and a full answer is always
  correct for a client, where a 416 would strand one that sent an odd but harmless header.
* No satisfiable range (§14.1.1) → ``RangeNotSatisfiable`` carrying ``Content-Range:
  bytes */size`` (§15.5.17); the error middleware renders it.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import secrets
from pathlib import Path

from aiohttp import hdrs, web
from aiohttp.web_fileresponse import NOSENDFILE

from suitsrv.errors import RangeNotSatisfiable

__all__ = ["CACHE_CONTROL", "CHUNK_SIZE", "MAX_RANGES", "send_blob"]

#: Blobs are named by their digest, so a URL's content never changes (RFC 8246 immutable).
CACHE_CONTROL = "public, max-age=31536000, immutable"
#: Parts allowed after coalescing; more is treated as abuse and answered with the full blob.
MAX_RANGES = 16
#: Largest read handed to the executor when the body cannot go out with sendfile.
CHUNK_SIZE = 256 * 1024

# RFC 9110 §8.8.3: opaque-tag = DQUOTE *etagc DQUOTE; etagc = %x21 / %x23-7E / obs-text
_ETAGC = re.compile(r"[\x21\x23-\x7e]+")
# RFC 9110 §14.1.1: int-range = first-pos "-" [ last-pos ]; suffix-range = "-" suffix-length
_RANGE_SPEC = re.compile(r"([0-9]*)-([0-9]*)")
_OWS = " \t"


def _parse_range_set(field: str, size: int) -> list[range] | None:
    """The satisfiable ranges of a ``Range`` value, clamped to ``size``, in request order.

    None means "ignore the field" (not ``bytes``, or invalid syntax); an empty list means
    nothing is satisfiable.
    """
    unit, sep, range_set = field.partition("=")
    # §14.1: range units are compared case-insensitively.
    if not sep or unit.lower() != "bytes":
        return None
    spans: list[range] = []
    seen = False
    # §5.6.1.2: a recipient accepts empty list elements and OWS around the commas.
    for element in range_set.split(","):
        spec = element.strip(_OWS)
        if not spec:
            continue
        match = _RANGE_SPEC.fullmatch(spec)
        if match is None:
            return None
        seen = True
        try:
            first, last = (int(g) if g else None for g in match.groups())
        except ValueError:  # more digits than int() accepts: not a length we could serve
            return None
        if first is not None:
            if last is not None and last < first:
                return None  # §14.1.1: last-pos < first-pos makes the range-set invalid
            # §14.1.2: a last-pos at or past the end means "to the end".
            stop = size if last is None else min(last + 1, size)
            start = first
        elif last is not None:
            # §14.1.3: a suffix longer than the representation selects all of it.
            start, stop = max(size - last, 0), size
        else:
            return None  # a bare "-"
        # §14.1.1: unsatisfiable specs (start at/after the end, "-0", anything on an empty
        # blob) are dropped; the set is satisfiable if any spec survives.
        if start < stop:
            spans.append(range(start, stop))
    return spans if seen else None


def _coalesce(spans: list[range]) -> list[range]:
    """Merge overlapping or adjacent spans; each merged part keeps its earliest position.

    §14.2 allows coalescing; §15.3.7.2 asks that the parts otherwise keep the request order.
    """
    merged: list[tuple[int, int, int]] = []  # (start, stop, first index in the request)
    for start, stop, order in sorted((s.start, s.stop, i) for i, s in enumerate(spans)):
        if merged and start <= merged[-1][1]:
            m_start, m_stop, m_order = merged[-1]
            merged[-1] = (m_start, max(m_stop, stop), min(m_order, order))
        else:
            merged.append((start, stop, order))
    merged.sort(key=lambda part: part[2])
    return [range(start, stop) for start, stop, _ in merged]


def _not_modified(request: web.Request, etag: str) -> bool:
    # §13.1.2: If-None-Match uses the weak comparison, and "*" matches any representation.
    raw = request.headers.get(hdrs.IF_NONE_MATCH)
    if raw is None:
        return False
    if raw.strip(_OWS) == "*":
        return True
    return any(tag.value == etag for tag in request.if_none_match or ())


def _if_range_holds(request: web.Request, strong_tag: str) -> bool:
    # §13.1.5: only a strong entity-tag match counts (so W/"..." never does); an HTTP-date
    # would be compared with Last-Modified, which we never send, so it never matches either.
    value = request.headers.get(hdrs.IF_RANGE)
    return value is None or value.strip(_OWS) == strong_tag


def _selected_ranges(request: web.Request, size: int, strong_tag: str) -> list[range] | None:
    """The ranges to send as 206, or None for a full 200; raises when none is satisfiable."""
    # §14.2: range handling is defined for GET only.
    if request.method != hdrs.METH_GET:
        return None
    fields = request.headers.getall(hdrs.RANGE, [])
    # ranges-specifier is not a list, so two Range fields cannot be combined: ignore both.
    if len(fields) != 1 or not _if_range_holds(request, strong_tag):
        return None
    spans = _parse_range_set(fields[0], size)
    if spans is None:
        return None
    if not spans:
        # §15.5.17: a 416 carries the current length in an unsatisfied-range Content-Range.
        raise RangeNotSatisfiable(
            f"no range in {fields[0]!r} overlaps the {size}-byte blob",
            headers={hdrs.CONTENT_RANGE: f"bytes */{size}"},
        )
    spans = _coalesce(spans)
    return spans if len(spans) <= MAX_RANGES else None


def _content_range(span: range, size: int) -> str:
    # §14.4: Content-Range: bytes first-pos-last-pos/complete-length (last-pos inclusive).
    return f"bytes {span.start}-{span.stop - 1}/{size}"


def _open_exact(path: Path, size: int) -> io.BufferedReader:
    fobj = path.open("rb")
    actual = os.fstat(fobj.fileno()).st_size
    if actual != size:
        fobj.close()
        raise RuntimeError(f"{path} holds {actual} bytes, the caller promised {size}")
    return fobj


def _read_at(fobj: io.BufferedReader, offset: int, count: int) -> bytes:
    fobj.seek(offset)
    return fobj.read(count)


async def _copy(resp: web.StreamResponse, fobj: io.BufferedReader, span: range) -> None:
    """Stream ``span`` in ``CHUNK_SIZE`` reads off the event loop."""
    loop = asyncio.get_running_loop()
    offset = span.start
    while offset < span.stop:
        count = min(CHUNK_SIZE, span.stop - offset)
        chunk = await loop.run_in_executor(None, _read_at, fobj, offset, count)
        if not chunk:
            raise OSError(f"{fobj.name} ended at byte {offset} while being served")
        await resp.write(chunk)
        offset += len(chunk)


async def _send_span(
    request: web.Request, resp: web.StreamResponse, fobj: io.BufferedReader, span: range
) -> None:
    """Send one contiguous span with sendfile(2), or ``_copy`` it where that cannot work."""
    transport = request.transport
    if transport is None:
        raise ConnectionResetError("connection lost before the body was sent")
    # sendfile(2) bypasses TLS, and aiohttp's AIOHTTP_NOSENDFILE switch turns it off.
    if not NOSENDFILE and transport.get_extra_info("sslcontext") is None:
        loop = asyncio.get_running_loop()
        try:
            # Headers are already flushed: StreamResponse sends them at prepare() and asyncio
            # waits for the transport buffer to drain before handing the socket to sendfile.
            sent = await loop.sendfile(transport, fobj, span.start, len(span), fallback=False)
        except (asyncio.SendfileNotAvailableError, NotImplementedError):
            pass  # raised before any byte went out, so the copy below starts clean
        else:
            if sent != len(span):
                raise OSError(f"{fobj.name} ended after {sent} of {len(span)} bytes")
            return
    await _copy(resp, fobj, span)


async def send_blob(
    request: web.Request,
    path: Path,
    *,
    etag: str,
    size: int,
    content_type: str = "application/octet-stream",
) -> web.StreamResponse:
    """Answer a GET or HEAD for an immutable blob, honouring conditionals and byte ranges.

    ``etag`` is the blob's SHA-256 hex and goes out as the strong ETag ``"<etag>"``;
    ``size`` must be the file's length. The caller has authorised the request and knows the
    file exists. Answers 200 (whole blob), 206 (one range, or ``multipart/byteranges`` for
    several, RFC 9110 §14.6 / §15.3.7) or 304, and raises ``RangeNotSatisfiable`` (416) when
    no requested range overlaps the blob. Whole and single-range bodies go out with sendfile
    where the transport allows it; everything else streams in chunks read off the event
    loop. The returned response is already prepared and finished.
    """
    if request.method not in (hdrs.METH_GET, hdrs.METH_HEAD):
        raise RuntimeError(f"send_blob serves GET and HEAD, not {request.method}")
    if _ETAGC.fullmatch(etag) is None:
        raise RuntimeError(f"{etag!r} is not a valid entity-tag value")
    strong_tag = f'"{etag}"'
    resp = web.StreamResponse()
    resp.headers[hdrs.ETAG] = strong_tag
    resp.headers[hdrs.CACHE_CONTROL] = CACHE_CONTROL

    if _not_modified(request, etag):
        # §15.4.5: a 304 repeats the ETag and Cache-Control a 200 would have carried.
        resp.set_status(304)
        await resp.prepare(request)
        await resp.write_eof()
        return resp

    resp.headers[hdrs.ACCEPT_RANGES] = "bytes"
    spans = _selected_ranges(request, size, strong_tag)
    parts: list[tuple[bytes, range]] = []
    closing = b""
    if spans is None:
        spans = [range(size)]
        resp.headers[hdrs.CONTENT_TYPE] = content_type
        resp.content_length = size
    elif len(spans) == 1:
        resp.set_status(206)  # §15.3.7.1: a single part goes out as the body itself
        resp.headers[hdrs.CONTENT_TYPE] = content_type
        resp.headers[hdrs.CONTENT_RANGE] = _content_range(spans[0], size)
        resp.content_length = len(spans[0])
    else:
        # §14.6: each part is "--boundary CRLF headers CRLF CRLF data", the CRLF before the
        # next delimiter belongs to that delimiter, and "--boundary--" closes the body.
        # A random boundary cannot be forced into a firmware image by whoever built it.
        boundary = secrets.token_hex(16)
        resp.set_status(206)
        resp.headers[hdrs.CONTENT_TYPE] = f"multipart/byteranges; boundary={boundary}"
        for span in spans:
            part_head = (
                f"--{boundary}\r\n{hdrs.CONTENT_TYPE}: {content_type}\r\n"
                f"{hdrs.CONTENT_RANGE}: {_content_range(span, size)}\r\n\r\n"
            )
            parts.append((part_head.encode("ascii"), span))
        closing = f"--{boundary}--\r\n".encode("ascii")
        resp.content_length = sum(len(h) + len(s) + 2 for h, s in parts) + len(closing)

    if request.method == hdrs.METH_HEAD or size == 0:
        await resp.prepare(request)
        await resp.write_eof()
        return resp

    # Opened before prepare() so a missing or wrong-sized file is a 500, not a cut stream.
    loop = asyncio.get_running_loop()
    fobj = await loop.run_in_executor(None, _open_exact, path, size)
    with fobj:
        await resp.prepare(request)
        if parts:
            for head, span in parts:
                await resp.write(head)
                await _copy(resp, fobj, span)
                await resp.write(b"\r\n")
            await resp.write(closing)
        else:
            await _send_span(request, resp, fobj, spans[0])
    await resp.write_eof()
    return resp
