"""Resumable payload download (RFC 9110 §14): the bytes go to a partial file that survives a
cut connection or a restart; the next request asks for the rest with ``Range: bytes=N-`` and
``If-Range: "<sha256>"``, so a server whose blob changed answers the whole (200) instead of a
part that would not fit (§13.1.5). The file is accepted only with the manifest's size and
SHA-256 image digest."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

import aiohttp

from .errors import AgentError, DownloadError

__all__ = ["DownloadStats", "ImageMismatch", "download", "store_integrated"]

_CHUNK: Final = 64 << 10
_ATTEMPTS: Final = 4  # requests in a row that may make no progress
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class ImageMismatch(AgentError):
    """The downloaded image does not have the manifest's size or digest."""


@dataclass(frozen=True)
class DownloadStats:
    """What a download took: (offset asked for, bytes received) per request."""

    sha256: str
    size: int
    requests: tuple[tuple[int, int], ...]

    @property
    def resumed(self) -> bool:
        return any(offset > 0 for offset, _ in self.requests)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


async def _accept(partial: Path, sha256: str, size: int) -> None:
    have = partial.stat().st_size
    digest = await asyncio.to_thread(_sha256_file, partial)
    if have != size or not hmac.compare_digest(digest, sha256):
        partial.unlink(missing_ok=True)  # a wrong image is not worth resuming
        raise ImageMismatch(f"image is {have} bytes with SHA-256 {digest}; the manifest says "
                            f"{size} bytes, {sha256}")  # fmt: skip


def store_integrated(partial: Path, payload: bytes) -> None:
    """An integrated payload (manifest-37 §7.6) goes where a download would."""
    partial.write_bytes(payload)


def _start(resp: aiohttp.ClientResponse, have: int, size: int) -> int:
    """Where the body of ``resp`` goes in the file: ``have`` for a matching 206, 0 for 200."""
    if resp.status == 200:
        if resp.content_length is not None and resp.content_length != size:
            raise ImageMismatch(f"the server sends {resp.content_length} bytes, not {size}")
        return 0
    match = _CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", ""))
    if match is None or int(match[1]) != have:
        raise DownloadError(f"unexpected Content-Range {resp.headers.get('Content-Range')!r}")
    if match[3] != "*" and int(match[3]) != size:
        raise ImageMismatch(f"the server's image is {match[3]} bytes, not {size}")
    return have


async def _copy(resp: aiohttp.ClientResponse, fh: BinaryIO, room: int, limit: int | None) -> int:
    loop = asyncio.get_running_loop()
    got = 0
    while got < room and (limit is None or got < limit):
        want = min(_CHUNK, room - got, (limit - got) if limit is not None else _CHUNK)
        chunk = await resp.content.read(want)
        if not chunk:
            break
        await loop.run_in_executor(None, fh.write, chunk)
        got += len(chunk)
    return got


async def download(
    session: aiohttp.ClientSession,
    url: str,
    partial: Path,
    *,
    sha256: str,
    size: int,
    max_bytes_per_request: int | None = None,
) -> DownloadStats:
    """Fetch ``url`` into ``partial`` until it holds ``size`` bytes, then check the digest.

    ``max_bytes_per_request`` drops the connection after that many bytes of each answer (for
    tests and demos of resuming). DownloadError after several requests without progress (the
    partial file stays); ImageMismatch when the image is not the manifest's (it is deleted).
    """
    requests: list[tuple[int, int]] = []
    stalled = 0
    partial.touch(exist_ok=True)
    if partial.stat().st_size > size:
        partial.write_bytes(b"")  # longer than the image: not a prefix of it
    while (have := partial.stat().st_size) < size:
        headers = {"Range": f"bytes={have}-", "If-Range": f'"{sha256}"'} if have else {}
        start, failure = have, ""
        try:
            async with session.get(url, headers=headers) as resp:
                if resp.status not in (200, 206, 416):
                    raise DownloadError(f"GET {url}: HTTP {resp.status} {resp.reason}")
                # 416: our partial file is not a prefix of theirs, so start over.
                start = 0 if resp.status == 416 else _start(resp, have, size)
                with partial.open("r+b") as fh:
                    fh.truncate(start)
                    fh.seek(start)
                    if resp.status != 416:
                        await _copy(resp, fh, size - start, max_bytes_per_request)
        except (aiohttp.ClientError, TimeoutError) as exc:
            failure = f"{type(exc).__name__}: {exc}"
        received = max(partial.stat().st_size - start, 0)
        requests.append((have, received))
        stalled = 0 if received else stalled + 1
        if stalled >= _ATTEMPTS:
            why = failure or "no bytes received"
            raise DownloadError(f"GET {url}: {why} ({stalled} tries at byte {have})")
        if not received:
            await asyncio.sleep(0.2 * stalled)
    await _accept(partial, sha256, size)
    return DownloadStats(sha256, size, tuple(requests))
