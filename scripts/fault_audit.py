"""The audit after a fault: every acknowledged write is intact, nothing partial is visible.

Through the API of a restarted server: every acknowledged payload is served with the bytes its
digest names, every acknowledged manifest is listed and served byte-exact (published, since its
payload was acknowledged first), every device's latest verdict is its newest acknowledged one or
one it sent later, signed by the verifier's published key. In the data directory: no temporary
upload file, every blob file hashes to its name, no payload row without its blob, every backup
row decrypts with the vault key to something a device sent (the acknowledged ones to exactly
that), versions without gaps, and ``PRAGMA integrity_check`` says ok.

Writes that were in flight when the fault struck may be wholly there or wholly absent: the audit
accepts either and flags anything in between. A configuration backup is served back over HTTP
only in returning-to-service (docs/lifecycle.md), so backups are retrieved the way the vault
does it: the stored row, opened with the master key in the data directory.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import sqlite3
from collections.abc import Awaitable
from pathlib import Path

import aiohttp
from fault_site import ATTEST_DEVICES, Site
from fault_workload import TIMEOUT, Ledger

from attest import AttestError
from attest.ear import verify_ear_jwt
from attest.keys import key_from_jwk
from suitsrv.vault import SealedBackup, VaultError, associated_data, open_backup
from tests.server_process import integrity_check

_BLOB_NAME = re.compile(r"[0-9a-f]{64}")


async def audit(site: Site, url: str, ledger: Ledger) -> list[str]:
    """Every problem found, through ``url`` (a server on ``site``) and in its files; each
    acknowledged write found broken is also added to ``ledger.failed``."""
    problems: list[str] = []
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        limit = asyncio.Semaphore(8)

        async def bounded(check: Awaitable[None]) -> None:
            async with limit:
                await check

        await asyncio.gather(
            *(bounded(_payload(session, url, site, ledger, sha, problems))
              for sha in ledger.payloads),
            *(bounded(_manifest(session, url, site, ledger, digest, problems))
              for digest in ledger.manifests),
            *(bounded(_verdict(session, url, site, ledger, device, problems))
              for device in ATTEST_DEVICES),
        )  # fmt: skip
        await _listing(session, url, site, ledger, problems)
    problems += check_files(site, ledger)
    problems += _backups(site, ledger)
    integrity = integrity_check(site.database)
    if integrity != ["ok"]:
        problems.append(f"integrity_check: {integrity[:5]}")
    return problems


def _fail(ledger: Ledger, key: str, acked: bool, problems: list[str], text: str) -> None:
    problems.append(text)
    if acked:
        ledger.failed.add(key)


async def _payload(
    session: aiohttp.ClientSession, url: str, site: Site, ledger: Ledger, sha: str,
    problems: list[str],
) -> None:  # fmt: skip
    acked = sha in ledger.acked_payloads
    async with session.get(f"{url}/v1/payloads/{sha}", headers=site.operator) as resp:
        digest, size = hashlib.sha256(), 0
        async for chunk in resp.content.iter_chunked(1 << 20):
            digest.update(chunk)
            size += len(chunk)
        status = resp.status
    if status == 200 and digest.hexdigest() == sha and size == ledger.payloads[sha]:
        return
    if status == 404 and not acked:
        return  # in flight at the fault and never stored: wholly absent
    _fail(ledger, f"payload:{sha}", acked, problems,
          f"payload {sha} (acknowledged: {acked}): {status}, {size} bytes")  # fmt: skip


async def _manifest(
    session: aiohttp.ClientSession, url: str, site: Site, ledger: Ledger, digest: str,
    problems: list[str],
) -> None:  # fmt: skip
    acked = digest in ledger.acked_manifests
    base = f"{url}/v1/vendor/manifests/{digest}"
    async with session.get(f"{base}/envelope", headers=site.vendor) as resp:
        body, status = await resp.read(), resp.status
    if status == 404 and not acked:
        return
    key = f"manifest:{digest}"
    if status != 200 or body != ledger.manifests[digest]:
        text = f"manifest {digest} (acknowledged: {acked}): {status}, {len(body)} bytes"
        _fail(ledger, key, acked, problems, text)
        return
    async with session.get(base, headers=site.vendor) as resp:
        view = await resp.json() if resp.status == 200 else {}
    payload_acked = ledger.manifest_payload[digest] in ledger.acked_payloads
    if acked and payload_acked and view.get("published") is not True:
        _fail(ledger, key, acked, problems, f"manifest {digest} is not published: {view}")


async def _listing(
    session: aiohttp.ClientSession, url: str, site: Site, ledger: Ledger, problems: list[str]
) -> None:
    listed: set[str] = set()
    page: str | None = "/v1/vendor/manifests?limit=1000"
    while page:
        async with session.get(url + page, headers=site.vendor) as resp:
            if resp.status != 200:
                problems.append(f"GET {page}: {resp.status}")
                return
            body = await resp.json()
        listed |= {m["digest"] for m in body["manifests"]}
        page = body.get("next")
    if stray := listed - set(ledger.manifests):
        problems.append(f"{len(stray)} listed manifest(s) nobody sent, e.g. {min(stray)}")
    for digest in sorted(ledger.acked_manifests - listed):
        _fail(ledger, f"manifest:{digest}", True, problems, f"manifest {digest} is not listed")


async def _verdict(
    session: aiohttp.ClientSession, url: str, site: Site, ledger: Ledger, device: str,
    problems: list[str],
) -> None:  # fmt: skip
    """The stored verdict answers the newest acknowledged evidence or later evidence (a newer
    verdict replaces the older by design); acknowledged ones after the stored one were lost."""
    sent = ledger.nonces.get(device, [])
    acked = sorted(i for d, i in ledger.acked_verdicts if d == device)
    async with session.get(f"{url}/v1/gateway/devices/{device}/verdict",
                           headers=site.operator) as resp:  # fmt: skip
        status = resp.status
        view = await resp.json() if status == 200 else {}
    stored = -1
    if status == 200:
        async with session.get(f"{url}/.well-known/jwks.json") as resp:
            jwks = await resp.json()
        try:
            key = key_from_jwk(jwks["keys"][0], name="suitsrv")
            ear = verify_ear_jwt(view["ear"], key, now=int(view["appraised_at"]))
        except (AttestError, KeyError, TypeError, ValueError) as exc:
            problems.append(f"verdict of {device} does not verify: {exc}")
            ear = None
        if ear is not None:
            stored = sent.index(ear.nonce) if ear.nonce in sent else -2
        if stored == -2:
            problems.append(f"verdict of {device} answers a nonce no evidence sent")
        elif stored in acked and view["ear"] != ledger.acked_verdicts[(device, stored)]:
            problems.append(f"verdict {stored} of {device} is not the EAR acknowledged")
            ledger.failed.add(f"verdict:{device}:{stored}")
    elif status != 404 or acked:
        problems.append(f"verdict of {device}: {status} with {len(acked)} acknowledged")
    for index in acked:
        if index > stored or stored < 0:
            _fail(ledger, f"verdict:{device}:{index}", True, problems,
                  f"acknowledged verdict {index} of {device} lost (stored: {stored})")  # fmt: skip


def check_files(site: Site, ledger: Ledger) -> list[str]:
    """No temporary upload file (a start removes them), every blob file holds the bytes its
    name promises, every payload row has its blob, every release payload has its row."""
    problems: list[str] = []
    tmp = site.blob_root / "tmp"
    if leftovers := sorted(p.name for p in tmp.iterdir()) if tmp.exists() else []:
        problems.append(f"temporary upload files visible after a start: {leftovers[:3]}")
    for folder in sorted(site.blob_root.iterdir()):
        if folder.name == "tmp" or not folder.is_dir():
            continue
        for blob in folder.iterdir():
            if not _BLOB_NAME.fullmatch(blob.name) or blob.name[:2] != folder.name:
                problems.append(f"unexpected file among the blobs: {blob}")
            elif _file_sha256(blob) != blob.name:
                problems.append(f"blob {blob.name} does not hash to its name")
    conn = sqlite3.connect(f"file:{site.database}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute("SELECT sha256, size FROM payloads").fetchall()
        linked = conn.execute(
            "SELECT rp.digest, rp.sha256 FROM release_payloads rp JOIN releases r "
            "ON r.digest = rp.digest WHERE r.published = 1 AND rp.sha256 NOT IN "
            "(SELECT sha256 FROM payloads)"
        ).fetchall()
    finally:
        conn.close()
    for sha, size in rows:
        blob = site.blob_root / sha[:2] / sha
        if not blob.is_file() or blob.stat().st_size != size:
            problems.append(f"payload row {sha} names a missing or short blob")
        if sha not in ledger.payloads:
            problems.append(f"payload row {sha} that nobody sent")
    problems += [f"published release {d} names payload {s} without a row" for d, s in linked]
    return problems


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _backups(site: Site, ledger: Ledger) -> list[str]:
    problems: list[str] = []
    conn = sqlite3.connect(f"file:{site.database}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute(
            "SELECT device_id, version, wrapped_key, nonce, ciphertext, size "
            "FROM config_backups ORDER BY device_id, version"
        ).fetchall()
        entries = conn.execute("SELECT COUNT(*) FROM timeline WHERE kind = 'backup'").fetchone()
    finally:
        conn.close()
    if entries[0] != len(rows):
        problems.append(f"{len(rows)} backup rows but {entries[0]} backup timeline entries")
    key_file = site.data_dir / "vault" / "master.key"
    if rows and not key_file.is_file():
        return [*problems, "backups are stored but the vault master key is missing"]
    master = bytes.fromhex(key_file.read_text().strip()) if rows else b""
    stored: dict[tuple[str, int], str] = {}
    for device, version, wrapped, nonce, ciphertext, size in rows:
        try:
            plain = open_backup(master, SealedBackup(wrapped, nonce, ciphertext, size),
                                aad=associated_data(device, version))  # fmt: skip
        except VaultError as exc:
            problems.append(f"backup {device} v{version}: {exc}")
            continue
        stored[(device, version)] = hashlib.sha256(plain).hexdigest()
        if stored[(device, version)] not in ledger.backups_sent.get(device, set()):
            problems.append(f"backup {device} v{version} is nothing the device sent")
    for (device, version), sha in ledger.acked_backups.items():
        if stored.get((device, version)) != sha:
            _fail(ledger, f"backup:{device}:{version}", True, problems,
                  f"acknowledged backup {device} v{version} is missing or different")  # fmt: skip
    for device in {d for d, _ in stored}:
        versions = sorted(v for d, v in stored if d == device)
        if versions != list(range(1, len(versions) + 1)):
            problems.append(f"backup versions of {device} have gaps: {versions[:20]}")
    return problems
