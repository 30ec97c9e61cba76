"""`suitsrv serve` as a real child process on a free loopback port, for the crash and CLI tests.

The child runs the installed console script, so these tests see what an operator sees: its
stdout and stderr go to files next to the data directory (a pipe nobody drains would stall the
access log). Every wait is bounded; ``stop`` and the context manager always reap the child.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

SUITSRV = Path(sys.executable).with_name("suitsrv")
_TOKEN_LINE = re.compile(r"^operator token \(shown once, store it now\): (sst_\S+)$", re.M)


def free_port() -> int:
    """A loopback port nobody listens on right now (the kernel's pick for a bound socket)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def child_env() -> dict[str, str]:
    """This environment without ``SUITSRV_*``, so a developer's settings cannot leak in."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SUITSRV_")}


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run ``suitsrv ARGS`` to completion and capture its output."""
    return subprocess.run(
        [str(SUITSRV), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=child_env(),
        timeout=timeout,
        check=False,
    )


def accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def integrity_check(database: Path) -> list[str]:
    """``PRAGMA integrity_check`` and ``foreign_key_check`` over a read-only connection (WAL
    lets it run next to a live server); ``["ok"]`` when the file is sound."""
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)
    try:
        rows = [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
        rows += [repr(r) for r in conn.execute("PRAGMA foreign_key_check")]
        return rows
    finally:
        conn.close()


class _PortTaken(Exception):
    pass


class ServerProcess:
    """One ``suitsrv serve --data-dir DIR --listen 127.0.0.1:PORT`` child."""

    _started = 0

    def __init__(self, data_dir: Path, log_dir: Path, extra: Sequence[str] = ()) -> None:
        ServerProcess._started += 1
        self.data_dir = data_dir
        self.port = free_port()
        scheme = "https" if "--tls-cert" in extra else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        name = f"server-{ServerProcess._started}-{self.port}"
        self.stdout_path = log_dir / f"{name}.out"
        self.stderr_path = log_dir / f"{name}.err"
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [str(SUITSRV), "serve", "--data-dir", str(data_dir),
                 "--listen", f"127.0.0.1:{self.port}", *extra],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=child_env(),
            )  # fmt: skip

    @classmethod
    def start(
        cls, data_dir: Path, log_dir: Path, *, timeout: float = 20, extra: Sequence[str] = ()
    ) -> ServerProcess:
        """Start a server and return once it accepts connections (killed if it never does).
        Another process may take the free port before the child binds it: then try another."""
        for _ in range(3):
            server = cls(data_dir, log_dir, extra)
            try:
                server._wait_ready(timeout)
            except _PortTaken:
                continue
            except BaseException:
                server.stop(signal.SIGKILL)
                raise
            return server
        raise AssertionError("no free port found in three tries")

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if "address already in use" in self.stderr().lower():
                    raise _PortTaken
                raise AssertionError(f"suitsrv serve exited {self.proc.returncode}: {self.log()}")
            if "suitsrv serving" in self.stdout() and accepts_connections(self.port):
                return
            time.sleep(0.02)
        raise AssertionError(f"suitsrv serve not ready after {timeout} s: {self.log()}")

    def stdout(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8", errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def log(self) -> str:
        return f"\n--- stdout\n{self.stdout()}\n--- stderr\n{self.stderr()[-4000:]}"

    def operator_tokens(self) -> list[str]:
        """Every operator token the server printed (the first start prints exactly one)."""
        return _TOKEN_LINE.findall(self.stdout())

    def kill(self) -> None:
        """SIGKILL: no cleanup handler, no flush, no checkpoint runs."""
        self.stop(signal.SIGKILL)

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30) -> int:
        """Send ``sig`` (if still running) and reap the child; SIGKILL if it outlives
        ``timeout``. Returns the exit status (negative: killed by that signal)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise

    async def exited(self, timeout: float) -> int:
        """Wait for the child to exit without blocking the event loop; its exit status."""
        deadline = time.monotonic() + timeout
        while (code := self.proc.poll()) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"suitsrv serve still running after {timeout} s")
            await asyncio.sleep(0.02)
        return code

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc.poll() is None:
            self.stop(signal.SIGKILL, timeout=10)
