"""The service suite's plan and its seeding: one vendor, signed releases over many classes,
devices with tokens and the download payloads, written straight into a data directory (SQLite
rows in one transaction each, envelopes accepted through ``releases.accept_manifest``)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench_common import DOMAIN, MIB, VENDOR
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlite_utils import Database

from manifests import (
    Algorithm,
    build_manifest,
    class_id,
    generate_signing_key,
    load_spec,
    public_pem,
    sign,
    vendor_id_from_domain,
)
from suitsrv import accounts, releases
from suitsrv.auth import hash_token, new_token
from suitsrv.config import Config
from suitsrv.store import PayloadRecord, ReleaseRecord, SqliteStore
from suitsrv.store import queries as q

DOWNLOAD_CLASS = "bench-download"


@dataclass(frozen=True)
class Plan:
    devices: int
    classes: int
    releases_per_class: int
    rounds: int
    poll_seconds: int  # wrk takes whole seconds
    paced_seconds: int
    download_rounds: int
    download_seconds: float
    payload_bytes: int = 64 * MIB
    small_payload_bytes: int = 1 * MIB
    release_payload_bytes: int = 4096  # the payload of each class's releases
    attesting: int = 0  # the first devices get an attestation key (Fleet.attestation_key)

    @property
    def manifests(self) -> int:
        return self.classes * self.releases_per_class


FULL = Plan(100_000, 100, 10, 3, poll_seconds=10, paced_seconds=5, download_rounds=5,
            download_seconds=2)  # fmt: skip
QUICK = Plan(10_000, 10, 10, 2, poll_seconds=3, paced_seconds=2, download_rounds=2,
             download_seconds=1)  # fmt: skip


@dataclass(frozen=True)
class Fleet:
    tokens: list[str]  # device tokens; a poll picks one at random
    probes: list[tuple[str, bytes]]  # (a device token, the envelope it must get) per class
    download_token: str  # a device of DOWNLOAD_CLASS
    payloads: dict[int, tuple[str, Path]]  # size -> (sha256, blob file)
    envelope_bytes: int
    newest: list[tuple[str, str]]  # per class index: (manifest digest, payload sha256)
    attestation_key: bytes  # PKCS#8 PEM of the EC key of the first ``plan.attesting`` devices


class _BatchingStore(SqliteStore):
    """accept_manifest's checks with its inserts held back, so that seeding writes the
    releases in one transaction (one fsync) instead of one per manifest."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir)
        self.pending: list[ReleaseRecord] = []

    async def insert_release(self, release: ReleaseRecord) -> tuple[ReleaseRecord, bool]:
        self.pending.append(release)
        return release, True


def _write_blob(store: SqliteStore, chunks: Iterator[bytes]) -> tuple[str, int, Path]:
    """A blob file written the way BlobStore names it, without its per-chunk executor hops."""
    digest, size = hashlib.sha256(), 0
    tmp = store.blobs.tmp / f"seed-{os.getpid()}"
    with tmp.open("wb") as fh:
        for chunk in chunks:
            digest.update(chunk)
            fh.write(chunk)
            size += len(chunk)
    final = store.blobs.path(digest.hexdigest())
    final.parent.mkdir(exist_ok=True)
    os.replace(tmp, final)
    return digest.hexdigest(), size, final


def _spec(class_name: str, sequence: int, sha256: str, size: int) -> str:
    return f"""
vendor-domain = "{DOMAIN}"
class-name = "{class_name}"
sequence-number = {sequence}
version = "1.{sequence}.0"
[[component]]
id = ["firmware"]
digest = "{sha256}"
size = {size}
uri = "https://updates.example/v1/payloads/{sha256}"
"""


def _insert_all(db: Database, releases_: list[ReleaseRecord]) -> None:
    for release in releases_:
        q.insert_release(db, release)


def _insert_payloads(db: Database, payloads: list[PayloadRecord]) -> None:
    for payload in payloads:
        q.add_payload(db, payload)


def _insert_fleet(
    db: Database, devices: list[tuple[object, ...]], tokens: list[tuple[object, ...]]
) -> None:
    db.conn.executemany(
        "INSERT INTO devices (device_id, vendor, class_id, gateway, keys, created_at) "
        "VALUES (?, ?, ?, NULL, ?, ?)",
        devices,
    )
    db.conn.executemany(
        "INSERT INTO tokens (token_id, token_hash, role, scope, label, created_at, revoked_at) "
        "VALUES (?, ?, 'device', ?, 'device', ?, NULL)",
        tokens,
    )


def seed(data_dir: Path, plan: Plan) -> Fleet:
    """A data directory with one vendor, ``plan.manifests`` published releases over
    ``plan.classes`` classes, ``plan.devices`` devices with tokens, and the download payloads."""
    now = time.time()
    key = generate_signing_key(Algorithm.ES256)
    store = _BatchingStore(data_dir)
    try:
        asyncio.run(
            accounts.add_vendor(
                store, VENDOR, vendor_domains=[DOMAIN],
                anchors=[{"pem": public_pem(key).decode()}], now=now,
            )
        )  # fmt: skip
        # Every release names a real stored payload, so every release is published.
        wanted: list[tuple[str, int, str, int]] = []  # (class, sequence, sha256, size)
        payloads: list[PayloadRecord] = []
        for c in range(plan.classes):
            for s in range(1, plan.releases_per_class + 1):
                payload = os.urandom(plan.release_payload_bytes)
                sha, size, _ = _write_blob(store, iter([payload]))
                payloads.append(PayloadRecord(sha, size, now))
                wanted.append((f"class-{c:03d}", s, sha, size))
        files: dict[int, tuple[str, Path]] = {}
        for s, wanted_size in enumerate((plan.small_payload_bytes, plan.payload_bytes), 1):
            chunks = (os.urandom(MIB) for _ in range(wanted_size // MIB))
            sha, size, path = _write_blob(store, chunks)
            payloads.append(PayloadRecord(sha, size, now))
            wanted.append((DOWNLOAD_CLASS, s, sha, size))
            files[size] = (sha, path)
        store.write_sync(_insert_payloads, payloads)

        envelopes = [sign(build_manifest(load_spec(_spec(*w))), [key]) for w in wanted]
        config = Config(data_dir=data_dir)

        async def accept() -> None:
            for envelope in envelopes:
                await releases.accept_manifest(store, config, VENDOR, envelope, now)

        asyncio.run(accept())
        store.write_sync(_insert_all, store.pending)
        newest = {r.class_id: r for r in store.pending}  # in sequence order
        vendor_id = vendor_id_from_domain(DOMAIN)
        classes = [str(class_id(vendor_id, f"class-{c:03d}")) for c in range(plan.classes)]

        attestation_key = ec.generate_private_key(ec.SECP256R1())
        attesting_keys = json.dumps({"iak_pem": _public_pem(attestation_key)})
        tokens: list[str] = []
        device_rows: list[tuple[object, ...]] = []
        token_rows: list[tuple[object, ...]] = []
        for i in range(plan.devices + 1):
            device_id = f"dev-{i:06d}" if i < plan.devices else "dev-download"
            klass = (
                classes[i % plan.classes]
                if i < plan.devices
                else str(class_id(vendor_id, DOWNLOAD_CLASS))
            )
            token, token_id = new_token()
            tokens.append(token)
            keys = attesting_keys if i < plan.attesting else "{}"
            device_rows.append((device_id, VENDOR, klass, keys, now))
            token_rows.append((token_id, hash_token(token), device_id, now))
        store.write_sync(_insert_fleet, device_rows, token_rows)
    finally:
        store.close()
    probes = [(tokens[c], newest[classes[c]].envelope) for c in range(plan.classes)]
    sizes = sorted(len(newest[k].envelope) for k in classes)
    private = attestation_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )  # fmt: skip
    return Fleet(
        tokens[:-1], probes, tokens[-1], files, sizes[len(sizes) // 2],
        [(newest[k].digest, newest[k].payloads[0]) for k in classes], private,
    )  # fmt: skip


def _public_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
