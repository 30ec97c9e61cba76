"""The embedded store: one SQLite file (WAL) through sqlite-utils, plus the blob folder.

One writer thread owns the only write connection and runs every write inside a BEGIN IMMEDIATE
transaction, the writes queued meanwhile in the same one (group commit, group_commit.py: each
write still all or nothing, acknowledged only after the COMMIT); reads run on a small pool of
read-only connections. Nothing touches SQLite on the
event loop (STYLE.md "Async and storage"). ``synchronous=FULL``: a commit that returned is on
disk, so an acknowledged write survives SIGKILL and power loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from sqlite_utils import Database

from suitsrv.errors import InsufficientStorage
from suitsrv.lifecycle import DeviceLifecycle, Event

from . import lifecycle_queries as lq
from . import poll_queries as pq
from . import queries as q
from .blobs import BlobStore
from .group_commit import GroupCommit
from .handoff import ReadPool
from .migrations import migrate
from .records import (
    AnchorRecord,
    DeviceRecord,
    InstallRecord,
    PayloadRecord,
    ReleaseRecord,
    ReportRecord,
    Role,
    TokenRecord,
    VendorRecord,
    VerdictRecord,
)

__all__ = ["SqliteStore"]

T = TypeVar("T")
P = ParamSpec("P")


def _connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=True, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    if readonly:
        conn.execute("PRAGMA query_only=ON")
    return conn


def _is_full(exc: BaseException | None) -> bool:
    """SQLITE_FULL (sqlite.org/rescode.html#full: "database or disk is full") anywhere in the
    chain: a ROLLBACK refused because SQLite already rolled the failed transaction back raises
    a second error with the first as its context."""
    for _ in range(8):
        if exc is None:
            return False
        if isinstance(exc, sqlite3.Error) and exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_FULL:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _full_disk_is_507(
    write: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """A write SQLite cannot store for lack of space answers 507 (InsufficientStorage), as a
    full blob folder does (blobs.py), not 500. Nothing of it is visible: the transaction was
    rolled back (by SQLite itself, or by the writer)."""

    @functools.wraps(write)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await write(*args, **kwargs)
        except sqlite3.Error as exc:
            if not _is_full(exc):
                raise
            raise InsufficientStorage("no space left to store the change") from exc

    return guarded


class SqliteStore:
    """The Store of a data directory (see suitsrv.store.Store for the interface)."""

    def __init__(self, data_dir: Path, *, readers: int = 2) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / "suitsrv.sqlite3"
        self.blobs = BlobStore(data_dir / "blobs")
        self._local = threading.local()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._readers = ReadPool(self._run_read, readers, "sqlite-reader")
        self._writer.submit(self._setup).result()
        self._releases = pq.ReleaseCache()
        self.group = GroupCommit(self._writer, lambda: self._db(readonly=False))

    # -- plumbing ---------------------------------------------------------------------------

    def _setup(self) -> None:
        conn = self._conn(readonly=False)
        migrate(conn)
        self.blobs.clean_temporary()

    def _conn(self, *, readonly: bool) -> sqlite3.Connection:
        return self._db(readonly=readonly).conn

    def _db(self, *, readonly: bool) -> Database:
        db: Database | None = getattr(self._local, "db", None)
        if db is None:
            conn = _connect(self.path, readonly=readonly)
            db = Database(conn)
            self._local.db = db
            with self._lock:
                self._connections.append(conn)
        return db

    def _run_read(self, fn: Callable[..., T], *args: Any) -> T:
        return fn(self._db(readonly=True), *args)

    @_full_disk_is_507
    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(db, *args)`` on the writer thread, all or nothing, durable when it returns."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self.group.submit(future, fn, *args)
        return await future

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(db, *args)`` on a read-only connection off the event loop."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._readers.submit(future, fn, *args)
        return await future

    def write_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """For the CLI (no event loop): same transaction rules."""
        future: Future[T] = Future()
        self.group.submit(future, fn, *args)
        return future.result()

    def read_sync(self, fn: Callable[..., T], *args: Any) -> T:
        future: Future[T] = Future()
        self._readers.submit(future, fn, *args)
        return future.result()

    # -- the Store interface (suitsrv.store.Store) ------------------------------------------

    async def add_token(self, token: TokenRecord) -> None:
        await self.write(q.add_token, token)

    async def token_by_hash(self, token_hash: bytes) -> TokenRecord | None:
        return await self.read(q.token_by_hash, token_hash)

    async def count_active_tokens(self, role: Role) -> int:
        return await self.read(q.count_active, role)

    async def revoke_token(self, token_id: str, now: float) -> bool:
        return await self.write(q.revoke_token, token_id, now)

    async def add_vendor(self, vendor: VendorRecord, anchors: Sequence[AnchorRecord]) -> None:
        await self.write(q.add_vendor_with_anchors, vendor, anchors)

    async def get_vendor(self, name: str) -> VendorRecord | None:
        return await self.read(q.get_vendor, name)

    async def list_vendors(self) -> list[VendorRecord]:
        return await self.read(q.list_vendors)

    async def add_anchor(self, anchor: AnchorRecord) -> None:
        await self.write(q.add_anchor, anchor)

    async def anchors_for(self, vendor: str) -> list[AnchorRecord]:
        return await self.read(q.anchors_for, vendor)

    async def vendor_of(self, vendor_id: str) -> str | None:
        return await self.read(q.vendor_of, vendor_id)

    async def add_devices(self, devices: Sequence[tuple[DeviceRecord, TokenRecord]]) -> None:
        """Devices with their tokens, all or none (one transaction)."""
        await self.write(q.add_devices, devices)

    async def get_device(self, device_id: str) -> DeviceRecord | None:
        return await self.read(q.get_device, device_id)

    async def insert_release(self, release: ReleaseRecord) -> tuple[ReleaseRecord, bool]:
        return await self.write(q.insert_release, release)

    async def get_release(self, digest: str) -> ReleaseRecord | None:
        return await self.read(q.get_release, digest)

    async def list_releases(
        self, vendor: str | None, limit: int, after: str | None
    ) -> list[ReleaseRecord]:
        return await self.read(q.list_releases, vendor, limit, after)

    async def add_payload(self, payload: PayloadRecord) -> list[str]:
        return await self.write(q.add_payload, payload)

    async def get_payload(self, sha256: str) -> PayloadRecord | None:
        return await self.read(q.get_payload, sha256)

    async def payload_vendors(self, sha256: str) -> set[str]:
        return await self.read(q.payload_vendors, sha256)

    async def payload_classes(self, sha256: str) -> set[tuple[str, str]]:
        return await self.read(q.payload_classes, sha256)

    async def installs_of(self, device_id: str) -> list[InstallRecord]:
        return await self.read(q.installs_of, device_id)

    async def poll_view(
        self, device_id: str, now: int, limit: int, satisfies: pq.VersionCheck
    ) -> pq.PollView | None:
        return await self.read(pq.poll_view, device_id, now, limit, satisfies, self._releases)

    async def transition(
        self, device_id: str, event: Event, actor: str, now: float, window: float,
        detail: Mapping[str, Any] | None = None, gateway: str | None = None,
        signals: lq.SignalRule | None = None,
    ) -> tuple[DeviceLifecycle, DeviceLifecycle]:  # fmt: skip
        return await self.write(
            lq.transition, device_id, event, actor, now, window, detail, gateway, signals
        )

    async def get_lifecycle(self, device_id: str) -> DeviceLifecycle:
        return await self.read(lq.get_lifecycle, device_id)

    async def append_timeline(
        self, device_id: str, at: float, kind: str, actor: str, detail: Mapping[str, Any]
    ) -> int:
        return await self.write(lq.append_timeline, device_id, at, kind, actor, detail)

    async def timeline(self, device_id: str, after: int, limit: int) -> list[lq.TimelineEntry]:
        return await self.read(lq.timeline_of, device_id, after, limit)

    async def add_signal(
        self, gateway: str, device_id: str, kind: str, payload: Mapping[str, Any], now: float
    ) -> int:
        return await self.write(lq.add_signal, gateway, device_id, kind, payload, now)

    async def signals_after(self, gateway: str, after: int, limit: int) -> list[lq.Signal]:
        return await self.read(lq.signals_after, gateway, after, limit)

    async def put_verdict(self, verdict: VerdictRecord) -> None:
        await self.write(q.put_verdict, verdict)

    async def get_verdict(self, device_id: str) -> VerdictRecord | None:
        return await self.read(q.get_verdict, device_id)

    async def record_report(self, report: ReportRecord, release: ReleaseRecord, raw: bytes) -> int:
        return await self.write(q.record_report, report, release, raw)

    def close(self) -> None:
        def _close() -> None:
            db = getattr(self._local, "db", None)
            if db is not None:
                db.conn.close()
                self._local.db = None

        self._writer.submit(_close).result()
        self._writer.shutdown(wait=True)
        self._readers.shutdown()
        with self._lock:
            for conn in self._connections:
                with contextlib.suppress(sqlite3.ProgrammingError):
                    conn.close()
