"""Group commit: the writer thread runs every write queued meanwhile in one transaction.

With ``synchronous=FULL`` each COMMIT is an fsync, and one fsync per write caps the service at
the disk's flush rate (a device poll that hands out a release records it: one write). Writes
that arrive while the writer is busy wait in a queue; the writer then takes them all (up to
``max_batch``) into one ``BEGIN IMMEDIATE`` ... ``COMMIT``, each inside its own SAVEPOINT, and
answers them only after the COMMIT returned (with one event-loop wake-up, handoff.py). So:

* a write is acknowledged only once it is durable, exactly as with one transaction per write;
* each write is still all or nothing: one that raises is rolled back to its savepoint and gets
  its exception, the others in the batch commit (they ran after it, on the state without it,
  as they would have run serially);
* when the transaction itself fails (COMMIT refused, disk full, SQLite rolled everything back
  after an I/O error), every write of the batch fails with that error and none is visible.

The writes run in queue order on the single writer thread, so the serial order of the
store's writes is unchanged; only the number of fsyncs shrinks under load.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlite_utils import Database

from .handoff import AnyFuture, Outcome, answer, start

__all__ = ["GroupCommit"]

_Write = tuple[Callable[..., Any], tuple[Any, ...], AnyFuture]


class GroupCommit:
    """Queues writes for one writer thread (``executor``, one worker) and commits in groups."""

    def __init__(
        self, executor: ThreadPoolExecutor, db: Callable[[], Database], max_batch: int = 256
    ) -> None:
        self._executor = executor
        self._db = db
        self._max_batch = max_batch
        self._pending: deque[_Write] = deque()
        self._lock = threading.Lock()
        self._draining = False
        #: How many transactions and writes ran (for tests and benchmarks).
        self.transactions = 0
        self.writes = 0

    def submit(self, future: AnyFuture, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(db, *args)``; ``future`` resolves after its transaction committed."""
        with self._lock:
            self._pending.append((fn, args, future))
            if self._draining:
                return
            self._draining = True
        self._executor.submit(self._drain)

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._draining = False
                    return
                count = min(len(self._pending), self._max_batch)
                batch = [self._pending.popleft() for _ in range(count)]
            self._run(batch)

    def _run(self, batch: list[_Write]) -> None:
        # A write whose caller went away before it started (cancelled) is skipped, as a
        # thread pool skips a cancelled task.
        live = [w for w in batch if start(w[2])]
        if not live:
            return
        outcomes: list[Outcome] = []
        conn = None
        try:
            db = self._db()
            conn = db.conn
            conn.execute("BEGIN IMMEDIATE")
            for fn, args, future in live:
                outcomes.append((future, *_one(db, fn, args)))
            conn.execute("COMMIT")
        except BaseException as exc:  # the transaction failed: nothing of it is visible
            if conn is not None and conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            # Every write of the group gets the error and the writer goes on with the next.
            answer([(future, None, exc) for _, _, future in live])
            return
        self.transactions += 1
        self.writes += len(live)
        answer(outcomes)


def _one(
    db: Database, fn: Callable[..., Any], args: tuple[Any, ...]
) -> tuple[Any, BaseException | None]:
    """Run one write inside a savepoint: (result, None), or (None, its error) rolled back."""
    conn = db.conn
    conn.execute("SAVEPOINT write")
    try:
        result = fn(db, *args)
    except Exception as error:
        if not conn.in_transaction:
            # SQLite ended the transaction itself (it does after some I/O and disk-full
            # errors): the earlier writes of the batch are gone too, so all of them fail.
            raise
        try:
            conn.execute("ROLLBACK TO write")
            conn.execute("RELEASE write")
        except sqlite3.Error:
            raise error from None
        return None, error
    conn.execute("RELEASE write")
    return result, None
