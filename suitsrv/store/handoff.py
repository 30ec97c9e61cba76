"""Handing SQLite work to the store's threads and the answers back, in batches.

``loop.run_in_executor`` costs one thread wake-up and one event-loop wake-up per call; on the
one core a server gets, with the GIL passed back and forth, that was most of a device poll's
CPU (about 90 us per call, measured with four reader threads; about 10 us batched). Here a
thread takes every call queued meanwhile, runs them one after another, and answers all those
of one event loop with a single ``call_soon_threadsafe``. Callers outside an event loop (the
CLI) pass a ``concurrent.futures.Future`` instead.

``ReadPool`` is the readers' half; ``group_commit.py`` is the writer's, using ``answer``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

__all__ = ["AnyFuture", "Outcome", "ReadPool", "answer", "start"]

AnyFuture = asyncio.Future[Any] | Future[Any]
#: A finished call: its future, and its result or the exception it raised.
Outcome = tuple[AnyFuture, Any, BaseException | None]


def start(future: AnyFuture) -> bool:
    """Whether the call behind ``future`` should still run (its caller did not cancel it).
    An asyncio future is only read here, never changed, off its loop."""
    if isinstance(future, Future):
        return future.set_running_or_notify_cancel()
    return not future.done()


def _settle(outcomes: Sequence[Outcome]) -> None:
    for future, result, error in outcomes:
        if future.done():  # an asyncio caller that gave up meanwhile
            continue
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)


def answer(outcomes: Sequence[Outcome]) -> None:
    """Resolve finished calls: thread futures at once, asyncio futures with one wake-up of
    each loop (on that loop's thread, as asyncio requires)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Outcome]] = {}
    for outcome in outcomes:
        future = outcome[0]
        if isinstance(future, Future):
            _settle([outcome])
        else:
            by_loop.setdefault(future.get_loop(), []).append(outcome)
    for loop, batch in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop closed: nobody waits any more
            loop.call_soon_threadsafe(_settle, batch)


_Call = tuple[Callable[..., Any], tuple[Any, ...], AnyFuture]


class ReadPool:
    """``threads`` reader threads over one queue; ``run(fn, *args)`` does one read (on the
    thread's own connection)."""

    def __init__(
        self, run: Callable[..., Any], threads: int, name: str, max_batch: int = 64
    ) -> None:
        self._run = run
        self._max_batch = max_batch
        self._pending: deque[_Call] = deque()
        self._ready = threading.Condition()
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._serve, name=f"{name}_{n}", daemon=True)
            for n in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, future: AnyFuture, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)`` (through ``run``); ``future`` gets its result."""
        with self._ready:
            if self._stopping:
                raise RuntimeError("the store is closed")
            self._pending.append((fn, args, future))
            if len(self._pending) == 1:  # a thread already awake takes later ones with it
                self._ready.notify()

    def _serve(self) -> None:
        while True:
            with self._ready:
                while not self._pending and not self._stopping:
                    self._ready.wait()
                if not self._pending:
                    return
                count = min(len(self._pending), self._max_batch)
                batch = [self._pending.popleft() for _ in range(count)]
                if self._pending:  # more than one batch waits: wake another thread for it
                    self._ready.notify()
            outcomes: list[Outcome] = []
            for fn, args, future in batch:
                if not start(future):
                    continue
                try:
                    outcomes.append((future, self._run(fn, *args), None))
                except BaseException as error:  # the caller's to handle, as an executor does
                    outcomes.append((future, None, error))
            answer(outcomes)

    def shutdown(self) -> None:
        """Finish what is queued, then stop the threads."""
        with self._ready:
            self._stopping = True
            self._ready.notify_all()
        for thread in self._threads:
            thread.join()
