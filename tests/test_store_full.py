"""A database that cannot grow (SQLITE_FULL, "database or disk is full") answers 507 problem+json
like a full blob folder does, stores nothing of the refused write, and works again once there is
room. The limit is SQLite's own ``PRAGMA max_page_count`` on the writer connection
(sqlite.org/pragma.html#pragma_max_page_count), which fails a write with SQLITE_FULL exactly as
a full disk does; scripts/faults fills a real size-limited filesystem."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlite_utils import Database

from suitsrv.errors import InsufficientStorage
from suitsrv.store import SqliteStore

from .service_fixtures import start_service

OCTET = {"Content-Type": "application/octet-stream"}


def _cap_at_current_size(db: Database) -> int:
    """No page beyond the ones the file has now (the cap is per connection: the writer's)."""
    pages = int(db.execute("PRAGMA page_count").fetchone()[0])
    db.execute(f"PRAGMA max_page_count = {pages}")
    return pages


def _lift_cap(db: Database) -> None:
    db.execute("PRAGMA max_page_count = 1073741823")


def _insert_large(db: Database, size: int) -> None:
    db.execute("CREATE TABLE IF NOT EXISTS filler (data BLOB)")
    db.execute("INSERT INTO filler VALUES (?)", [os.urandom(size)])


async def test_sqlite_full_is_insufficient_storage_and_rolls_back(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "data")
    try:
        await store.write(_insert_large, 10)
        await store.write(_cap_at_current_size)
        with pytest.raises(InsufficientStorage) as caught:
            await store.write(_insert_large, 1 << 20)
        assert caught.value.status == 507
        assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
        # The writer is not left inside the failed transaction: the next write commits.
        await store.write(_lift_cap)
        await store.write(_insert_large, 1 << 20)
        count = await store.read(lambda db: db.execute("SELECT COUNT(*) FROM filler").fetchone())
        assert count == (2,)
    finally:
        store.close()


async def test_a_full_database_answers_507_problem_and_recovers(
    tmp_path: Path, aiohttp_client: Any
) -> None:
    svc = await start_service(tmp_path, aiohttp_client)
    headers = {**svc.auth(svc.devices["dev-1"]), **OCTET}
    backup = os.urandom(200_000)  # stored in the database: needs many new pages
    try:
        await svc.store.write(_cap_at_current_size)
        resp = await svc.client.put("/v1/device/config", data=backup, headers=headers)
        assert resp.status == 507, await resp.text()
        assert resp.content_type == "application/problem+json"
        problem = await resp.json()
        assert problem["status"] == 507
        assert problem["type"].endswith("/insufficient-storage")

        await svc.store.write(_lift_cap)
        resp = await svc.client.put("/v1/device/config", data=backup, headers=headers)
        assert resp.status == 201, await resp.text()
        assert (await resp.json())["version"] == 1  # the refused backup left no row behind
    finally:
        svc.store.close()
