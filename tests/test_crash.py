"""Crash safety of a real ``suitsrv serve`` process: SIGKILL mid-upload and mid-burst, SIGTERM
with requests in flight. The store promises (suitsrv/store/sqlite.py, blobs.py) that a write
acknowledged with a 2xx survives SIGKILL, that nothing half-written becomes visible, and that
interrupted uploads leave only temporary files, removed at the next start."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import random
import re
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from manifests import (
    Algorithm,
    SigningKey,
    build_manifest,
    generate_signing_key,
    load_spec,
    parse_envelope,
    public_pem,
    sign,
)
from suitsrv import accounts
from suitsrv.store import Role, SqliteStore

from .server_process import ServerProcess, accepts_connections, integrity_check

VENDOR = "acme"
VENDOR_DOMAIN = "acme.example"
ENVELOPE_TYPE = "application/suit-envelope+cose"
TIMEOUT = aiohttp.ClientTimeout(total=20)
_BLOB_NAME = re.compile(r"[0-9a-f]{64}")


@dataclass
class Site:
    """A data directory with a vendor and its signing key, and the operator token that the
    first start of the server printed."""

    data_dir: Path
    logs: Path
    key: SigningKey
    vendor_token: str
    operator_token: str = ""

    def auth(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    @property
    def vendor(self) -> dict[str, str]:
        return self.auth(self.vendor_token)

    @property
    def operator(self) -> dict[str, str]:
        return self.auth(self.operator_token)

    def envelope(self, component: str, sequence: int, payload: bytes) -> bytes:
        digest = hashlib.sha256(payload).hexdigest()
        spec = f"""
vendor-domain = "{VENDOR_DOMAIN}"
class-name = "thermostat-v2"
sequence-number = {sequence}
[[component]]
id = ["{component}"]
digest = "{digest}"
size = {len(payload)}
uri = "https://updates.example/v1/payloads/{digest}"
"""
        return sign(build_manifest(load_spec(spec)), [self.key])

    def start(self) -> ServerProcess:
        server = ServerProcess.start(self.data_dir, self.logs)
        tokens = server.operator_tokens()
        if not self.operator_token:
            assert len(tokens) == 1, server.log()
            self.operator_token = tokens[0]
        else:
            assert tokens == [], "a restart must not print another operator token"
        return server

    def tmp_files(self) -> list[Path]:
        return sorted((self.data_dir / "blobs" / "tmp").iterdir())

    def blob(self, sha256: str) -> Path:
        return self.data_dir / "blobs" / sha256[:2] / sha256


async def make_site(tmp_path: Path) -> Site:
    """The vendor and its token are created offline on the data directory, as ``suitsrv admin``
    does; the server's first start then creates the operator token."""
    data_dir, logs = tmp_path / "data", tmp_path / "logs"
    logs.mkdir()
    key = generate_signing_key(Algorithm.ES256)
    store = SqliteStore(data_dir)
    try:
        await accounts.add_vendor(
            store, VENDOR, vendor_domains=[VENDOR_DOMAIN],
            anchors=[{"pem": public_pem(key).decode()}], now=1.0,
        )  # fmt: skip
        token, _ = await accounts.issue_credential(store, Role.VENDOR, VENDOR, now=1.0)
    finally:
        store.close()
    return Site(data_dir, logs, key, token)


def check_blob_files(site: Site) -> None:
    """No temporary file survives a start, and every published blob file holds the bytes its
    name promises (a blob is renamed into place only after it was hashed and fsynced)."""
    assert site.tmp_files() == []
    for folder in (site.data_dir / "blobs").iterdir():
        if folder.name == "tmp":
            continue
        for blob in folder.iterdir():
            assert _BLOB_NAME.fullmatch(blob.name) and blob.name[:2] == folder.name, blob
            assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name, blob


async def poll_until(check: Callable[[], bool], timeout: float = 10) -> None:
    """Poll ``check()`` until it is true, for at most ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


async def kill_after(server: ServerProcess, delay: float) -> None:
    await asyncio.sleep(delay)
    server.kill()


async def test_sigkill_mid_upload_leaves_nothing_behind(tmp_path: Path) -> None:
    site = await make_site(tmp_path)
    payload = os.urandom(8 << 20)
    sha = hashlib.sha256(payload).hexdigest()
    half_sent = asyncio.Event()
    chunk = 64 << 10

    async def slowly() -> AsyncIterator[bytes]:
        for offset in range(0, len(payload), chunk):
            if offset >= len(payload) // 2:
                half_sent.set()
                await asyncio.sleep(0.05)  # the rest would take seconds: the kill comes first
            yield payload[offset : offset + chunk]

    with site.start() as server:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:

            async def upload() -> int:
                async with session.put(
                    f"{server.url}/v1/vendor/payloads/{sha}",
                    data=slowly(),
                    headers={**site.vendor, "Content-Type": "application/octet-stream"},
                ) as resp:
                    return resp.status

            task = asyncio.create_task(upload())
            await asyncio.wait_for(half_sent.wait(), 10)

            def partial_on_disk() -> bool:
                return any(f.stat().st_size >= 1 << 20 for f in site.tmp_files())

            # The server is mid-write: its temporary file holds part of the stream.
            await poll_until(partial_on_disk)
            server.kill()
            try:
                status = await asyncio.wait_for(task, 10)
            except aiohttp.ClientError:
                pass  # the connection died with the server, as it should
            else:
                raise AssertionError(f"the upload answered {status} although the server died")

    leftovers = site.tmp_files()
    assert len(leftovers) == 1 and 0 < leftovers[0].stat().st_size < len(payload)
    assert not site.blob(sha).exists()

    with site.start() as server:
        check_blob_files(site)  # the restart removed the partial file
        assert not site.blob(sha).exists()
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            url = f"{server.url}/v1/payloads/{sha}"
            async with session.get(url, headers=site.operator) as resp:
                assert resp.status == 404
            assert integrity_check(site.data_dir / "suitsrv.sqlite3") == ["ok"]
            # The store is usable: the same upload, sent whole, goes through.
            put = f"{server.url}/v1/vendor/payloads/{sha}"
            async with session.put(put, data=io.BytesIO(payload), headers=site.vendor) as resp:
                assert resp.status == 201, await resp.text()
            async with session.get(url, headers=site.operator) as resp:
                assert resp.status == 200
                assert hashlib.sha256(await resp.read()).hexdigest() == sha
        assert server.stop() == 0
    assert integrity_check(site.data_dir / "suitsrv.sqlite3") == ["ok"]


@dataclass
class Ledger:
    """What the clients sent, and what the server acknowledged with a 2xx."""

    payloads: dict[str, bytes] = field(default_factory=dict)
    acked_payloads: set[str] = field(default_factory=set)
    manifests: dict[str, bytes] = field(default_factory=dict)
    acked_manifests: set[str] = field(default_factory=set)
    unexpected: list[str] = field(default_factory=list)


async def burst(site: Site, url: str, ledger: Ledger, seed: int, round_: int, workers: int) -> int:
    """Workers upload payload then manifest, over and over, until the server goes away; each
    worker owns a component (its own rollback counter), so every answer should be a 201.
    Returns how many requests were acknowledged."""
    acked = 0

    async def worker(session: aiohttp.ClientSession, number: int) -> None:
        nonlocal acked
        rng = random.Random(f"{seed}/{number}")
        for i in range(1, 500):
            payload = rng.randbytes(rng.randint(1, 96 << 10))
            sha = hashlib.sha256(payload).hexdigest()
            envelope = site.envelope(f"fw-{number}", round_ * 10_000 + i, payload)
            digest = parse_envelope(envelope).digest.hex
            ledger.payloads[sha] = payload
            try:
                async with session.put(
                    f"{url}/v1/vendor/payloads/{sha}", data=payload, headers=site.vendor
                ) as resp:
                    if resp.status != 201:
                        ledger.unexpected.append(f"PUT {sha}: {resp.status} {await resp.text()}")
                        return
                    await resp.read()
                ledger.acked_payloads.add(sha)
                acked += 1
                ledger.manifests[digest] = envelope
                async with session.post(
                    f"{url}/v1/vendor/manifests",
                    data=envelope,
                    headers={**site.vendor, "Content-Type": ENVELOPE_TYPE},
                ) as resp:
                    body = await resp.json(content_type=None)
                    if resp.status != 201 or body.get("digest") != digest:
                        ledger.unexpected.append(f"POST {digest}: {resp.status} {body}")
                        return
                ledger.acked_manifests.add(digest)
                acked += 1
            except aiohttp.ClientError:
                return  # the server was killed under this request

    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        await asyncio.gather(*(worker(session, n) for n in range(workers)))
    return acked


async def audit(site: Site, url: str, ledger: Ledger, seed: int) -> None:
    """Every acknowledged write is intact; every other one is wholly there or wholly absent."""
    problems: list[str] = []

    async def payload(session: aiohttp.ClientSession, sha: str) -> None:
        async with session.get(f"{url}/v1/payloads/{sha}", headers=site.operator) as resp:
            body = await resp.read()
            if resp.status == 200 and body == ledger.payloads[sha]:
                return
            if resp.status == 404 and sha not in ledger.acked_payloads:
                return
            problems.append(f"payload {sha}: {resp.status}, {len(body)} bytes")

    async def manifest(session: aiohttp.ClientSession, digest: str) -> None:
        base = f"{url}/v1/vendor/manifests/{digest}"
        async with session.get(f"{base}/envelope", headers=site.vendor) as resp:
            body = await resp.read()
            status = resp.status
        if status == 404 and digest not in ledger.acked_manifests:
            return
        if status != 200 or body != ledger.manifests[digest]:
            problems.append(f"manifest {digest}: {status}, {len(body)} bytes")
            return
        async with session.get(base, headers=site.vendor) as resp:
            view = await resp.json()
        # Its payload was acknowledged before the manifest was sent.
        if digest in ledger.acked_manifests and view["published"] is not True:
            problems.append(f"manifest {digest} acknowledged but not published: {view}")

    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        await asyncio.gather(
            *(payload(session, sha) for sha in ledger.payloads),
            *(manifest(session, digest) for digest in ledger.manifests),
        )
        listed = f"{url}/v1/vendor/manifests?limit=1000"
        async with session.get(listed, headers=site.vendor) as resp:
            stored = {m["digest"] for m in (await resp.json())["manifests"]}
    assert stored <= set(ledger.manifests), "a manifest nobody sent is stored"
    assert problems == [], f"seed {seed}: {problems}"


async def test_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    site = await make_site(tmp_path)
    ledger = Ledger()
    for round_, seed in enumerate((1, 2, 3), start=1):
        rng = random.Random(seed)
        with site.start() as server:
            killer = asyncio.create_task(kill_after(server, rng.uniform(0.2, 0.8)))
            acked = await asyncio.wait_for(burst(site, server.url, ledger, seed, round_, 4), 20)
            await asyncio.wait_for(killer, 5)
            assert server.proc.returncode == -signal.SIGKILL
        assert ledger.unexpected == [], f"seed {seed}"
        assert acked > 0, f"seed {seed}: the kill came before any acknowledgement"

        with site.start() as server:
            check_blob_files(site)
            await audit(site, server.url, ledger, seed)
            assert integrity_check(site.data_dir / "suitsrv.sqlite3") == ["ok"], f"seed {seed}"
            assert server.stop() == 0


async def test_sigterm_drains_a_download_in_flight(tmp_path: Path) -> None:
    site = await make_site(tmp_path)
    # Far more than loopback socket buffers hold: the handler is still sending at SIGTERM.
    payload = os.urandom(32 << 20)
    sha = hashlib.sha256(payload).hexdigest()
    chunk = 256 << 10
    started, refused = asyncio.Event(), asyncio.Event()

    with site.start() as server:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            put = f"{server.url}/v1/vendor/payloads/{sha}"
            async with session.put(put, data=io.BytesIO(payload), headers=site.vendor) as resp:
                assert resp.status == 201

            async def slow_download() -> tuple[int, bytes]:
                url = f"{server.url}/v1/payloads/{sha}"
                async with session.get(url, headers=site.operator) as resp:
                    received = bytearray(await resp.content.read(chunk))
                    started.set()
                    await asyncio.wait_for(refused.wait(), 10)
                    while part := await resp.content.read(chunk):
                        received += part
                    return resp.status, bytes(received)

            downloading = asyncio.create_task(slow_download())
            try:
                await asyncio.wait_for(started.wait(), 10)
                server.proc.send_signal(signal.SIGTERM)
                await poll_until(lambda: not accepts_connections(server.port))
                assert server.proc.poll() is None, "exited before the download ended"
            finally:
                refused.set()
            status, received = await asyncio.wait_for(downloading, 20)
            assert status == 200 and hashlib.sha256(received).hexdigest() == sha
        assert await server.exited(30) == 0, server.log()
    assert not accepts_connections(server.port)
    assert integrity_check(site.data_dir / "suitsrv.sqlite3") == ["ok"]


async def test_sigterm_drains_an_upload_in_flight(tmp_path: Path) -> None:
    site = await make_site(tmp_path)
    payload = os.urandom(4 << 20)
    sha = hashlib.sha256(payload).hexdigest()
    chunk = 256 << 10
    half_sent, refused = asyncio.Event(), asyncio.Event()

    async def in_two_halves() -> AsyncIterator[bytes]:
        for offset in range(0, len(payload), chunk):
            if offset == len(payload) // 2:
                half_sent.set()
                await asyncio.wait_for(refused.wait(), 10)
            yield payload[offset : offset + chunk]

    with site.start() as server:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:

            async def slow_upload() -> tuple[int, dict[str, object]]:
                async with session.put(
                    f"{server.url}/v1/vendor/payloads/{sha}",
                    data=in_two_halves(),
                    headers={**site.vendor, "Content-Type": "application/octet-stream"},
                ) as resp:
                    return resp.status, await resp.json()

            uploading = asyncio.create_task(slow_upload())
            try:
                await asyncio.wait_for(half_sent.wait(), 10)
                await poll_until(lambda: site.tmp_files() != [])  # the handler is writing
                server.proc.send_signal(signal.SIGTERM)
                await poll_until(lambda: not accepts_connections(server.port))
                assert server.proc.poll() is None, "exited before the upload ended"
                refused.set()
                # A drained upload answers in milliseconds; the bound stays far below the
                # server's 30 s shutdown timeout so a stall shows as a TimeoutError.
                status, body = await asyncio.wait_for(uploading, 5)
            finally:
                refused.set()
                if not uploading.done():
                    server.kill()
                    with contextlib.suppress(aiohttp.ClientError, asyncio.CancelledError):
                        await asyncio.wait_for(uploading, 10)
        assert status == 201 and body["sha256"] == sha and body["size"] == len(payload)
        assert await server.exited(30) == 0, server.log()
