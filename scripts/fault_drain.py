"""SIGTERM with writes in flight: the server stops accepting connections, lets the requests it
is handling finish, exits 0, and what it acknowledged is intact after a restart.

``suitsrv serve`` drains on SIGTERM (suitsrv/cli/serve.py ``_run``: site stopped, then it waits
for the in-flight middleware's count to reach zero, for up to DRAIN_SECONDS). One write of each
kind is sent with half of its body held back; once each handler is reading its body (the
payload's temporary file exists, nothing is left queued in the sockets) the server gets
SIGTERM. The scenario waits for the listening socket to close, checks the process is still
there, releases the second halves and expects every one of the four to be answered 2xx.
tests/test_crash.py checks the same for a single upload and a single download.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
from fault_audit import audit
from fault_site import ATTEST_DEVICES, BACKUP_DEVICES, ScenarioResult, make_site, unhandled_errors
from fault_workload import (
    TIMEOUT,
    Answer,
    Ledger,
    Stream,
    challenge,
    payload_bytes,
    post_evidence,
    post_manifest,
    put_backup,
    put_payload,
    run_clients,
)

from tests.server_process import ServerProcess, accepts_connections
from tests.test_crash_backup import queued_bytes

_CHUNK = 64 << 10


class _Halves:
    """Bodies sent up to their middle, then held until ``release``."""

    def __init__(self) -> None:
        self.halfway: list[asyncio.Event] = []
        self._gate = asyncio.Event()

    def stream(self) -> Stream:
        halfway = asyncio.Event()
        self.halfway.append(halfway)

        async def body(data: bytes) -> AsyncIterator[bytes]:
            middle = len(data) // 2
            for offset in range(0, middle, _CHUNK):
                yield data[offset : min(offset + _CHUNK, middle)]
            halfway.set()
            await self._gate.wait()
            for offset in range(middle, len(data), _CHUNK):
                yield data[offset : offset + _CHUNK]

        return body

    async def all_halfway(self) -> None:
        await asyncio.gather(*(event.wait() for event in self.halfway))

    def release(self) -> None:
        self._gate.set()


async def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.01)


async def _bodies_consumed(port: int, timeout: float) -> None:
    """Nothing queued in the loopback sockets for five polls in a row: the server has read
    every first half, more than aiohttp buffers before a handler consumes it."""
    quiet = 0

    def settled() -> bool:
        nonlocal quiet
        quiet = quiet + 1 if queued_bytes(port) == 0 else 0
        return quiet >= 5

    await _until(settled, timeout, "the server reads the first halves")


async def drain(root: Path, *, seed: int) -> ScenarioResult:
    site = await make_site(root / "drain")
    ledger = Ledger()
    rng = random.Random(seed)
    problems: list[str] = []
    halves = _Halves()
    server = ServerProcess.start(site.data_dir, site.logs)
    try:
        # Some writes acknowledged whole first, so the manifest in flight has its payload.
        await run_clients(site, server.url, ledger, seed, per_worker=2)
        problems += ledger.unexpected
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            url = server.url
            device = ATTEST_DEVICES[0]
            _, nonce = await challenge(session, url, site, device)
            payload_sha = min(ledger.acked_payloads)
            flights: dict[str, asyncio.Task[Answer]] = {
                "payload": asyncio.create_task(put_payload(
                    session, url, site, ledger, payload_bytes(ledger, rng, 4 << 20),
                    halves.stream())),
                "manifest": asyncio.create_task(post_manifest(
                    session, url, site, ledger, "drained", payload_sha, halves.stream())),
                "backup": asyncio.create_task(put_backup(
                    session, url, site, ledger, BACKUP_DEVICES[1],
                    payload_bytes(ledger, rng, 512 << 10), halves.stream())),
                "verdict": asyncio.create_task(post_evidence(
                    session, url, site, ledger, device, nonce, halves.stream())),
            }  # fmt: skip
            try:
                await asyncio.wait_for(halves.all_halfway(), 20)
                tmp = site.blob_root / "tmp"
                await _until(lambda: any(tmp.iterdir()), 20, "the payload handler writes")
                await _bodies_consumed(server.port, 20)
                server.proc.send_signal(signal.SIGTERM)
                await _until(lambda: not accepts_connections(server.port), 20, "the port closes")
                if server.proc.poll() is not None:
                    problems.append(f"exited ({server.proc.returncode}) with requests in flight")
            finally:
                halves.release()
            answers = await asyncio.wait_for(
                asyncio.gather(*flights.values(), return_exceptions=True), 30
            )
        for name, answer in zip(flights, answers, strict=True):
            if isinstance(answer, BaseException):
                problems.append(f"in-flight {name} got no answer: {answer!r}")
            elif not answer.ok:
                problems.append(f"in-flight {name}: {answer.describe()}")
        status = await server.exited(30)
        if status != 0:
            problems.append(f"exit status {status} after SIGTERM, not 0")
        server = ServerProcess.start(site.data_dir, site.logs)
        problems += await audit(site, server.url, ledger)
        problems += ledger.unexpected
        if (status := server.stop()) != 0:
            problems.append(f"exit status {status} after SIGTERM at the end")
    finally:
        if server.proc.poll() is None:
            server.stop(signal.SIGKILL, timeout=10)
    problems += unhandled_errors(site.logs)
    return ScenarioResult("sigterm-drain", 1, ledger.acknowledged(), ledger.verified(), problems,
                          {"in_flight_at_sigterm": len(flights)})  # fmt: skip
