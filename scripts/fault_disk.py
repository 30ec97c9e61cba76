"""Disk full: the data directory on a small tmpfs, filled until the server refuses writes.

A real filesystem that runs out of space, not a simulated error: a tmpfs of ``size_mib`` MiB is
mounted (this needs root, or CAP_SYS_ADMIN; without it the scenario refuses with MountRefused
instead of pretending) and the server's data directory is created on it. Then:

1. writes of every kind are acknowledged while there is room;
2. a file that is not the product's fills most of the space, and payload uploads of shrinking
   sizes follow until even the smallest is refused: every answer must be a 2xx or 507 with an
   RFC 9457 problem+json body (suitsrv/store/blobs.py maps ENOSPC to InsufficientStorage);
3. with the blob side full, backups, manifests and verdicts (stored in SQLite, whose write-ahead
   log then cannot grow: SQLITE_FULL) are sent until each is refused, same rule;
4. everything acknowledged so far is audited on the full disk, the database passes
   ``PRAGMA integrity_check`` and no request was answered 500;
5. the filler is deleted and one write of each kind must succeed again; after a SIGTERM
   (exit 0) and a restart the whole ledger is audited once more.
"""

from __future__ import annotations

import functools
import json
import os
import random
import signal
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from fault_audit import audit
from fault_site import (
    ATTEST_DEVICES,
    BACKUP_DEVICES,
    PROBLEM_JSON,
    ScenarioResult,
    Site,
    make_site,
    sha256_hex,
    unhandled_errors,
)
from fault_workload import (
    TIMEOUT,
    Answer,
    Ledger,
    attest,
    payload_bytes,
    post_manifest,
    put_backup,
    put_payload,
    run_clients,
)

from tests.server_process import ServerProcess

#: Room left beside the filler before the uploads start filling the rest.
_HEADROOM = 768 << 10
#: Payload sizes uploaded in turn, each until refused.
_SIZES = (64 << 10, 8 << 10, 1 << 10, 16)
_ATTEMPTS = 200


class MountRefused(Exception):
    """The size-limited filesystem could not be mounted (not root, or no mount namespace)."""


def mount_tmpfs(path: Path, size_mib: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(path)],
                       check=True, capture_output=True, text=True, timeout=30)  # fmt: skip
    except subprocess.CalledProcessError as exc:
        raise MountRefused(f"mount -t tmpfs failed: {exc.stderr.strip()}") from exc
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MountRefused(f"mount -t tmpfs failed: {exc}") from exc


def unmount(path: Path) -> str | None:
    """Unmount ``path``; a problem text when that fails (then lazily detached)."""
    done = subprocess.run(["umount", str(path)], capture_output=True, text=True, timeout=30,
                          check=False)  # fmt: skip
    if done.returncode == 0:
        return None
    subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30, check=False)
    return f"umount {path} failed ({done.stderr.strip()}); detached lazily"


async def disk_full(root: Path, *, seed: int, size_mib: int = 4) -> ScenarioResult:
    mount = root / "disk-mount"
    mount_tmpfs(mount, size_mib)
    try:
        result = await _scenario(root / "disk", mount, seed)
    finally:
        trouble = unmount(mount)
    if trouble:
        result.problems.append(trouble)
    return result


class _Tally:
    """Answers by kind of write while the disk is full: 2xx, 507, anything else a problem."""

    def __init__(self) -> None:
        self.counts: dict[str, dict[str, int]] = {}
        self.problems: list[str] = []

    def add(self, kind: str, answer: Answer) -> bool:
        """Count the answer; True when it was a refusal for lack of space."""
        counts = self.counts.setdefault(kind, {"2xx": 0, "507": 0})
        if answer.ok:
            counts["2xx"] += 1
            return False
        if answer.status == 507 and answer.content_type == PROBLEM_JSON:
            try:
                problem = json.loads(answer.body)
            except ValueError:
                problem = {}
            if isinstance(problem, dict) and problem.get("status") == 507 and "type" in problem:
                counts["507"] += 1
                return True
        self.problems.append(f"disk full: {answer.describe()}")
        return True  # stop this kind: it failed another way


async def _until_refused(
    tally: _Tally, kind: str, send: Callable[[], Awaitable[Answer]], attempts: int = _ATTEMPTS
) -> None:
    for _ in range(attempts):
        if tally.add(kind, await send()):
            return


def _fill(path: Path, leave: int) -> None:
    """Grow ``path`` until only ``leave`` bytes are free on its filesystem (0: until ENOSPC)."""
    chunk = b"\xa5" * (64 << 10)
    with path.open("ab") as fh:
        try:
            while True:
                stat = os.statvfs(path.parent)
                free = stat.f_bavail * stat.f_frsize
                if free <= leave or free == 0:
                    break
                fh.write(chunk[: max(1, min(len(chunk), free - leave))])
                fh.flush()
        except OSError:
            pass  # ENOSPC: as full as it gets


async def _scenario(root: Path, mount: Path, seed: int) -> ScenarioResult:
    site = await make_site(root, data_dir=mount / "data")
    filler = mount / "filler.bin"  # not the product's: the scenario's own, deleted at step 5
    ledger = Ledger()
    rng = random.Random(seed)
    tally = _Tally()
    problems: list[str] = []
    server = ServerProcess.start(site.data_dir, site.logs)
    try:
        await run_clients(site, server.url, ledger, seed, per_worker=3, max_payload=32 << 10)
        problems += ledger.unexpected
        ledger.unexpected.clear()
        _fill(filler, _HEADROOM)
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            await _fill_up(session, server.url, site, ledger, rng, tally, filler)
            problems += tally.problems
            problems += [f"on the full disk: {p}" for p in await audit(site, server.url, ledger)]
            filler.unlink()
            problems += await _works_again(session, server.url, site, ledger, rng)
        if (status := server.stop()) != 0:
            problems.append(f"exit status {status} after SIGTERM")
        server = ServerProcess.start(site.data_dir, site.logs)
        problems += [f"after a restart: {p}" for p in await audit(site, server.url, ledger)]
        if (status := server.stop()) != 0:
            problems.append(f"exit status {status} after SIGTERM at the end")
    finally:
        if server.proc.poll() is None:
            server.stop(signal.SIGKILL, timeout=10)
    problems += ledger.unexpected + unhandled_errors(site.logs)
    if not tally.counts.get("payload", {}).get("507"):
        problems.append("no payload upload was refused: the disk never filled")
    return ScenarioResult("disk-full", 1, ledger.acknowledged(), ledger.verified(), problems,
                          {"answers_while_full": tally.counts})  # fmt: skip


async def _fill_up(
    session: aiohttp.ClientSession, url: str, site: Site, ledger: Ledger, rng: random.Random,
    tally: _Tally, filler: Path,
) -> None:  # fmt: skip
    """Steps 2 and 3: uploads of shrinking size until refused, then the database writes."""

    async def upload(size: int) -> Answer:
        return await put_payload(session, url, site, ledger, payload_bytes(ledger, rng, size))

    async def backup() -> Answer:
        data = payload_bytes(ledger, rng, 32 << 10)
        return await put_backup(session, url, site, ledger, BACKUP_DEVICES[0], data)

    async def manifest() -> Answer:
        return await post_manifest(session, url, site, ledger, "full", rng.choice(stored))

    async def verdict() -> Answer:
        return await attest(session, url, site, ledger, ATTEST_DEVICES[0])

    for size in _SIZES:
        await _until_refused(tally, "payload", functools.partial(upload, size))
    # Whatever the blobs left (less than a page) goes too, so SQLite cannot grow its files.
    _fill(filler, 0)
    stored = sorted(ledger.acked_payloads)
    await _until_refused(tally, "backup", backup)
    await _until_refused(tally, "manifest", manifest)
    await _until_refused(tally, "verdict", verdict)


async def _works_again(
    session: aiohttp.ClientSession, url: str, site: Site, ledger: Ledger, rng: random.Random
) -> list[str]:
    """Step 5: with the filler gone, one write of each kind goes through."""
    data = payload_bytes(ledger, rng, 64 << 10)
    answers = [await put_payload(session, url, site, ledger, data)]
    answers.append(await post_manifest(session, url, site, ledger, "freed", sha256_hex(data)))
    answers.append(await put_backup(session, url, site, ledger, BACKUP_DEVICES[1],
                                    payload_bytes(ledger, rng, 32 << 10)))  # fmt: skip
    answers.append(await attest(session, url, site, ledger, ATTEST_DEVICES[1]))
    return [f"after freeing space: {a.describe()}" for a in answers if not a.ok]
