"""Crash safety of configuration backups in a real ``suitsrv serve`` process: SIGKILL while a
backup streams in leaves no row (the whole backup or none), acknowledged backups survive
SIGKILL and decrypt to exactly what was sent, and versions stay contiguous."""

from __future__ import annotations

import asyncio
import io
import os
import random
import re
import signal
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from suitsrv.vault import SealedBackup, associated_data, load_or_create_master_key, open_backup

from .server_process import ServerProcess, integrity_check, run_cli

TIMEOUT = aiohttp.ClientTimeout(total=20)
OCTET = {"Content-Type": "application/octet-stream"}
_DEVICE_TOKEN = re.compile(r"^device (\S+) .*\(shown once\): (sst_\S+)$", re.M)


@dataclass
class Site:
    data_dir: Path
    logs: Path
    tokens: dict[str, str] = field(default_factory=dict)

    def headers(self, device: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[device]}", **OCTET}

    def rows(self) -> dict[tuple[str, int], bytes]:
        """Every stored backup, decrypted with the master key the server keeps in the data
        directory (a row that does not decrypt raises VaultError)."""
        master = load_or_create_master_key(self.data_dir / "vault" / "master.key")
        conn = sqlite3.connect(f"file:{self.data_dir / 'suitsrv.sqlite3'}?mode=ro", uri=True)
        try:
            found = conn.execute(
                "SELECT device_id, version, wrapped_key, nonce, ciphertext, size "
                "FROM config_backups ORDER BY device_id, version"
            ).fetchall()
            entries = conn.execute("SELECT COUNT(*) FROM timeline WHERE kind = 'backup'")
            assert entries.fetchone()[0] == len(found), "row and timeline entry commit together"
        finally:
            conn.close()
        return {
            (d, v): open_backup(master, SealedBackup(k, n, c, s), aad=associated_data(d, v))
            for d, v, k, n, c, s in found
        }


def make_site(tmp_path: Path, devices: tuple[str, ...]) -> Site:
    """A vendor and its devices registered offline with ``suitsrv admin``, as an operator does."""
    site = Site(tmp_path / "data", tmp_path / "logs")
    site.logs.mkdir()

    def admin(*args: str) -> str:
        done = run_cli("admin", "--data-dir", str(site.data_dir), *args)
        assert done.returncode == 0, done.stderr
        return done.stdout

    admin("vendor", "add", "acme", "--vendor-domain", "acme.example")
    for name in devices:
        out = admin("device", "add", name, "--vendor", "acme", "--class-name", "thermostat-v2")
        site.tokens.update(_DEVICE_TOKEN.findall(out))
    assert set(site.tokens) == set(devices)
    return site


def queued_bytes(port: int) -> int | None:
    """Bytes sitting in the kernel's send and receive queues of the established loopback
    connections to ``port`` (proc(5) /proc/net/tcp); None while there is no such connection."""
    total, found = 0, False
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        ports = {int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16)}
        if port in ports and fields[3] == "01":  # ESTABLISHED
            found = True
            tx, rx = fields[4].split(":")
            total += int(tx, 16) + int(rx, 16)
    return total if found else None


async def test_sigkill_mid_backup_stores_nothing(tmp_path: Path) -> None:
    site = make_site(tmp_path, ("dev-1",))
    kept = os.urandom(200_000)
    large = os.urandom(960 << 10)  # under the 1 MiB limit
    half_sent, never = asyncio.Event(), asyncio.Event()
    chunk = 16 << 10

    async def stalls_half_way() -> AsyncIterator[bytes]:
        for offset in range(0, len(large), chunk):
            if offset >= len(large) // 2:
                half_sent.set()
                await never.wait()  # the server is killed before the rest could come
            yield large[offset : offset + chunk]

    with ServerProcess.start(site.data_dir, site.logs) as server:
        url = f"{server.url}/v1/device/config"
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            async with session.put(url, data=io.BytesIO(kept), headers=site.headers("dev-1")) as r:
                assert r.status == 201, await r.text()
                assert (await r.json())["version"] == 1

            async def upload() -> int:
                headers = site.headers("dev-1")
                async with session.put(url, data=stalls_half_way(), headers=headers) as resp:
                    return resp.status

            task = asyncio.create_task(upload())
            await asyncio.wait_for(half_sent.wait(), 10)
            # Nothing left in the sockets: the server has read the first half, far more than
            # aiohttp buffers before a handler consumes it, so the handler is mid-stream.
            empty_polls = 0
            async with asyncio.timeout(10):
                while empty_polls < 5:
                    empty_polls = empty_polls + 1 if queued_bytes(server.port) == 0 else 0
                    await asyncio.sleep(0.01)
            server.kill()
            try:
                status = await asyncio.wait_for(task, 10)
            except aiohttp.ClientError:
                pass  # the connection died with the server
            else:
                raise AssertionError(f"the backup answered {status} after the kill")
        assert server.proc.returncode == -signal.SIGKILL

    assert site.rows() == {("dev-1", 1): kept}
    assert integrity_check(site.data_dir / "suitsrv.sqlite3") == ["ok"]
    with ServerProcess.start(site.data_dir, site.logs) as server:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            url = f"{server.url}/v1/device/config"
            async with session.put(url, data=io.BytesIO(large), headers=site.headers("dev-1")) as r:
                assert r.status == 201, await r.text()
                assert (await r.json())["version"] == 2  # no gap left by the killed upload
        assert server.stop() == 0
    assert site.rows() == {("dev-1", 1): kept, ("dev-1", 2): large}


async def test_acknowledged_backups_survive_sigkill(tmp_path: Path) -> None:
    """Three writers race on one device (versions collide and are resealed), one on another,
    until SIGKILL at a random moment: every 2xx is stored intact, every row is something sent."""
    devices = ("dev-1", "dev-2")
    site = make_site(tmp_path, devices)
    sent: dict[str, set[bytes]] = {d: set() for d in devices}
    acked: dict[tuple[str, int], bytes] = {}
    unexpected: list[str] = []

    async def writer(session: aiohttp.ClientSession, url: str, device: str, seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(2000):
            body = rng.randbytes(rng.randint(1, 48 << 10))
            sent[device].add(body)
            try:
                async with session.put(url, data=body, headers=site.headers(device)) as resp:
                    if resp.status != 201:
                        unexpected.append(f"{device}: {resp.status} {await resp.text()}")
                        return
                    acked[(device, (await resp.json())["version"])] = body
            except aiohttp.ClientError:
                return  # killed under this request

    for round_, seed in enumerate((11, 12), start=1):
        delay = random.Random(seed).uniform(0.3, 0.8)
        with ServerProcess.start(site.data_dir, site.logs) as server:
            url = f"{server.url}/v1/device/config"
            async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
                owners = ("dev-1", "dev-1", "dev-1", "dev-2")
                writers = [writer(session, url, d, seed * 10 + n) for n, d in enumerate(owners)]
                running = asyncio.gather(*writers)
                await asyncio.sleep(delay)
                server.kill()
                await asyncio.wait_for(running, 20)
            assert server.proc.returncode == -signal.SIGKILL
        assert unexpected == [], f"round {round_}"

        rows = site.rows()  # every row decrypts: none is half-written
        assert len(acked) > 0 and all(rows.get(key) == body for key, body in acked.items())
        for device in devices:
            versions = sorted(v for d, v in rows if d == device)
            assert versions == list(range(1, len(versions) + 1)), f"round {round_}: {versions}"
            assert {b for (d, _), b in rows.items() if d == device} <= sent[device]
        assert integrity_check(site.data_dir / "suitsrv.sqlite3") == ["ok"], f"round {round_}"
