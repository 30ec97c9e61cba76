"""The service suite's download figures: a large payload fetched back to back on one keep-alive
connection from both servers, and a fresh server's peak RSS after concurrent downloads of a
small and a large payload."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import sys
import time
from pathlib import Path

import aiohttp
from bench_common import MIB, Report, Sample
from bench_fleet import Fleet, Plan
from bench_load import Load, _cores, _interleaved, _median
from bench_server import Server, candidate

RSS_STREAMS, RSS_REPEATS = 4, 3  # concurrent downloads, and how many times each


async def _download(
    url: str, headers: dict[str, str], seconds: float, expect: str | None = None
) -> tuple[int, float]:
    """Whole downloads back to back for at least ``seconds``: (bytes, seconds). With ``expect``,
    one download whose SHA-256 must be ``expect``."""
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        total, start = 0, time.perf_counter()
        while True:
            digest = hashlib.sha256()
            async with session.get(url, headers=headers) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"GET {url}: {resp.status} {await resp.text()}")
                async for chunk in resp.content.iter_chunked(MIB):
                    total += len(chunk)
                    if expect:
                        digest.update(chunk)
            if expect and digest.hexdigest() != expect:
                raise RuntimeError(f"GET {url} hashes to {digest.hexdigest()}, not {expect}")
            if expect or time.perf_counter() - start >= seconds:
                return total, time.perf_counter() - start


def _fetch_loop(
    port: int, target: str, headers: dict[str, str], seconds: float
) -> tuple[int, float]:
    """Whole 200 responses back to back on one keep-alive connection for at least ``seconds``,
    read into one reused buffer: (body bytes, seconds). A client this thin leaves its core
    half idle where aiohttp's used most of it, so the server and the kernel set the rate."""
    fields = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{fields}\r\n".encode()
    buffer = memoryview(bytearray(MIB))
    total = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        start = time.perf_counter()
        while True:
            sock.sendall(request)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(65536)
                if not chunk:
                    raise RuntimeError(f"GET {target}: connection closed in the headers")
                head += chunk
            status_and_fields, _, got_body = head.partition(b"\r\n\r\n")
            status, *lines = status_and_fields.split(b"\r\n")
            if not status.startswith(b"HTTP/1.1 200 "):
                raise RuntimeError(f"GET {target}: {status!r}")
            length = next(
                int(line.split(b":", 1)[1]) for line in lines
                if line.lower().startswith(b"content-length:")
            )  # fmt: skip
            got = len(got_body)
            while got < length:
                count = sock.recv_into(buffer, min(len(buffer), length - got))
                if not count:
                    raise RuntimeError(f"GET {target}: connection closed after {got} bytes")
                got += count
            total += got
            if time.perf_counter() - start >= seconds:
                return total, time.perf_counter() - start


def _downloads(ours: Server, bare: Server, fleet: Fleet, plan: Plan, report: Report) -> None:
    sha, _ = fleet.payloads[plan.payload_bytes]
    auth = {"Authorization": f"Bearer {fleet.download_token}"}
    sides = {ours.name: (f"/v1/payloads/{sha}", auth), bare.name: ("/file", {})}
    for server in (ours, bare):  # the bytes are right (aiohttp's client), the page cache warm
        target, headers = sides[server.name]
        asyncio.run(_download(server.url + target, headers, 0, expect=sha))
    print(
        f"  downloads: {plan.download_rounds} x {plan.download_seconds:g} s per side",
        file=sys.stderr,
    )

    def measure(server: Server) -> Load:
        target, headers = sides[server.name]
        cpu = time.process_time()
        size, seconds = _fetch_loop(server.port, target, headers, plan.download_seconds)
        return Load(size, seconds, 0, 0, 0, 0, (time.process_time() - cpu) / seconds)

    runs = _interleaved(plan.download_rounds, [ours, bare], measure, "MiB/s")
    a, b = runs[ours.name], runs[bare.name]
    report.samples.append(
        Sample(
            f"service.download {plan.payload_bytes // MIB} MiB payload (sendfile)",
            _median(a, "rate") / MIB,
            "MiB/s",
            "bare aiohttp web.FileResponse, same file",
            _median(b, "rate") / MIB,
            ">=0.8",
        )
    )
    report.notes.append(f"cores busy, downloads: suitsrv {_cores(a)}; bare {_cores(b)}")


async def _concurrent(url: str, headers: dict[str, str], sha: str) -> None:
    for _ in range(RSS_REPEATS):
        await asyncio.gather(*(_download(url, headers, 0, expect=sha) for _ in range(RSS_STREAMS)))


def _peak_rss(data_dir: Path, work: Path, fleet: Fleet, plan: Plan, report: Report) -> None:
    """VmHWM of a fresh server after the same concurrent downloads of a small and a large
    payload: streaming means the peak does not grow with the payload."""
    auth = {"Authorization": f"Bearer {fleet.download_token}"}
    peaks: dict[int, tuple[int, int]] = {}
    for size in (plan.small_payload_bytes, plan.payload_bytes):
        sha, _ = fleet.payloads[size]
        with candidate(data_dir, work / "suitsrv-rss.log") as server:
            start = server.peak_rss()
            url = f"{server.url}/v1/payloads/{sha}"

            asyncio.run(_concurrent(url, auth, sha))
            peaks[size] = (start, server.peak_rss())
    small, large = peaks[plan.small_payload_bytes], peaks[plan.payload_bytes]
    report.samples.append(
        Sample(
            f"service.download peak RSS, {RSS_STREAMS} streams x {RSS_REPEATS} of a "
            f"{plan.payload_bytes // MIB} MiB payload",
            large[1] / MIB,
            "MiB",
            f"same, {plan.small_payload_bytes // MIB} MiB payload",
            small[1] / MIB,
            "<=1.1 (flat)",
        )
    )
    report.method.append(
        f"peak RSS: VmHWM of a fresh `suitsrv serve` after {RSS_STREAMS} concurrent downloads, "
        f"{RSS_REPEATS} times; {small[0] / MIB:.1f} and {large[0] / MIB:.1f} MiB right after "
        "start-up"
    )
