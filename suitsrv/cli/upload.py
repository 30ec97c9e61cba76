"""``suitsrv upload``: a manufacturer pushes payloads, then the signed envelope, to a server."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from .keys import UsageError

__all__ = ["add_upload"]

_CHUNK = 1 << 20


def _sha256(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


class _Progress:
    """A one-line progress bar on stderr (only when it is a terminal, or when forced)."""

    def __init__(self, name: str, total: int, enabled: bool) -> None:
        self.name, self.total, self.enabled = name, total, enabled
        self.done = 0
        self.started = time.monotonic()

    def advance(self, n: int) -> None:
        self.done += n
        if self.enabled:
            pct = 100 * self.done / self.total if self.total else 100.0
            rate = self.done / max(time.monotonic() - self.started, 1e-6) / (1 << 20)
            bar = "#" * int(pct / 5)
            sys.stderr.write(f"\r{self.name[:30]:30} [{bar:20}] {pct:5.1f}% {rate:7.1f} MiB/s")
            sys.stderr.flush()

    def finish(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


async def _file_chunks(path: Path, progress: _Progress) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    with path.open("rb") as fh:
        while chunk := await loop.run_in_executor(None, fh.read, _CHUNK):
            progress.advance(len(chunk))
            yield chunk


async def _check(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    text = await resp.text()
    try:
        body: dict[str, Any] = json.loads(text) if text else {}
    except ValueError:
        body = {"detail": text}
    if resp.status >= 400:
        raise _Rejected(resp.status, body.get("detail") or body.get("title") or text)
    return body


class _Rejected(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")


async def _upload(args: argparse.Namespace) -> dict[str, Any]:
    server = args.server.rstrip("/")
    headers = {"Authorization": f"Bearer {args.token}"}
    envelope = Path(args.manifest).read_bytes()
    results: dict[str, Any] = {"payloads": []}
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=300)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
        for name in args.payloads:
            path = Path(name)
            digest, size = await asyncio.get_running_loop().run_in_executor(None, _sha256, path)
            progress = _Progress(path.name, size, args.progress or sys.stderr.isatty())
            async with session.put(
                f"{server}/v1/vendor/payloads/{digest}",
                data=_file_chunks(path, progress),
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            ) as resp:
                body = await _check(resp)
            progress.finish()
            results["payloads"].append(body)
        async with session.post(
            f"{server}/v1/vendor/manifests",
            data=envelope,
            headers={"Content-Type": "application/suit-envelope+cose"},
        ) as resp:
            results["manifest"] = await _check(resp)
    return results


def _run(args: argparse.Namespace) -> int:
    for name in [args.manifest, *args.payloads]:
        if not Path(name).is_file():
            raise UsageError(f"no such file: {name}")
    try:
        results = asyncio.run(_upload(args))
    except _Rejected as exc:
        print(f"rejected: {exc}", file=sys.stderr)
        return 1
    except aiohttp.ClientError as exc:
        print(f"error: cannot reach {args.server}: {exc}", file=sys.stderr)
        return 1
    manifest = results["manifest"]
    state = "published" if manifest.get("published") else "waiting for payloads"
    print(f"manifest {manifest.get('digest')} sequence {manifest.get('sequence_number')}: {state}")
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


def add_upload(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("upload", help="upload payloads and a signed envelope to a server")
    parser.add_argument("--server", required=True, metavar="URL")
    parser.add_argument("--token", required=True, help="a vendor token")
    parser.add_argument("manifest", metavar="MANIFEST.suit")
    parser.add_argument("payloads", nargs="*", metavar="PAYLOAD")
    parser.add_argument("--progress", action="store_true", help="show progress even when piped")
    parser.add_argument("--json", action="store_true", help="print the server's answers")
    parser.set_defaults(run=_run)
