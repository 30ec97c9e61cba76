"""The store's threads on a real SQLite file: writes queued while the writer is busy share one
transaction (group_commit.py), each still all or nothing; reads are answered in batches
(handoff.py), each with its own result or error."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from sqlite_utils import Database

from suitsrv.store.sqlite import SqliteStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore(tmp_path / "data")
    store.write_sync(lambda db: db.execute("CREATE TABLE scratch (n INTEGER PRIMARY KEY)"))
    yield store
    store.close()


def _submit(store: SqliteStore, fn: Callable[..., Any], *args: Any) -> Future[Any]:
    future: Future[Any] = Future()
    store.group.submit(future, fn, *args)
    return future


def _insert(db: Database, n: int) -> int:
    db.execute("INSERT INTO scratch (n) VALUES (?)", [n])
    return n


def _rows(store: SqliteStore) -> list[int]:
    rows = store.read_sync(lambda db: db.execute("SELECT n FROM scratch ORDER BY n").fetchall())
    return [n for (n,) in rows]


def _hold(db: Database, started: threading.Event, release: threading.Event) -> None:
    started.set()
    release.wait(10)
    _insert(db, 0)


def _block_writer(store: SqliteStore) -> threading.Event:
    """Occupy the writer thread until the returned event is set; writes submitted meanwhile
    queue up for one group."""
    started, release = threading.Event(), threading.Event()
    _submit(store, _hold, started, release)
    assert started.wait(10)
    return release


def _fail_after_insert(db: Database, n: int) -> None:
    _insert(db, n)
    raise ValueError(f"write {n} refuses")


def test_queued_writes_share_one_transaction(store: SqliteStore) -> None:
    before = store.group.transactions
    release = _block_writer(store)
    futures = [_submit(store, _insert, n) for n in range(1, 51)]
    release.set()
    assert [f.result(10) for f in futures] == list(range(1, 51))
    assert store.group.transactions - before == 2  # the blocking write, then the other 50
    assert _rows(store) == list(range(51))


def test_a_failing_write_is_undone_alone(store: SqliteStore) -> None:
    release = _block_writer(store)
    ok_before = _submit(store, _insert, 1)
    failing = _submit(store, _fail_after_insert, 2)
    ok_after = _submit(store, _insert, 3)
    release.set()
    assert ok_before.result(10) == 1
    assert ok_after.result(10) == 3
    with pytest.raises(ValueError, match="write 2 refuses"):
        failing.result(10)
    assert _rows(store) == [0, 1, 3]


def _end_transaction(db: Database) -> None:
    _insert(db, 99)
    db.execute("ROLLBACK")  # what SQLite does by itself after some I/O or disk-full errors
    raise RuntimeError("transaction lost")


def test_a_lost_transaction_fails_every_write_of_the_group(store: SqliteStore) -> None:
    release = _block_writer(store)
    first = _submit(store, _insert, 1)
    losing = _submit(store, _end_transaction)
    release.set()
    for future in (first, losing):
        with pytest.raises(RuntimeError, match="transaction lost"):
            future.result(10)
    assert _rows(store) == [0]  # neither the first write nor the losing one is visible
    assert store.write_sync(_insert, 5) == 5  # and the writer goes on


async def test_concurrent_async_writes_all_land(store: SqliteStore) -> None:
    results = await asyncio.gather(*(store.write(_insert, n) for n in range(1, 301)))
    assert results == list(range(1, 301))
    assert _rows(store) == list(range(1, 301))
    assert store.group.writes >= 300


def _fail_read(db: Database) -> None:
    db.execute("SELECT * FROM no_such_table")


async def test_batched_reads_each_get_their_own_answer(store: SqliteStore) -> None:
    await asyncio.gather(*(store.write(_insert, n) for n in range(1, 11)))
    count = "SELECT count(*) FROM scratch WHERE n <= ?"

    async def read(n: int) -> int:
        (value,) = await store.read(lambda db: db.execute(count, [n]).fetchone())
        return int(value)

    failing = asyncio.ensure_future(store.read(_fail_read))
    assert await asyncio.gather(*(read(n % 10 + 1) for n in range(200))) == [
        n % 10 + 1 for n in range(200)
    ]
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        await failing
    assert store.read_sync(lambda db: db.execute("SELECT count(*) FROM scratch").fetchone()) == (
        10,
    )


async def test_a_cancelled_read_does_not_disturb_the_others(store: SqliteStore) -> None:
    release = threading.Event()
    blocker = asyncio.ensure_future(store.read(lambda db: release.wait(10)))
    cancelled = asyncio.ensure_future(store.read(lambda db: 1))
    others = [asyncio.ensure_future(store.read(lambda db, n=n: n)) for n in range(8)]
    await asyncio.sleep(0)
    cancelled.cancel()
    release.set()
    assert await blocker is True
    assert await asyncio.gather(*others) == list(range(8))
    assert cancelled.cancelled()
