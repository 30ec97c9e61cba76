"""The demo's child processes (suitsrv/demo.py): free loopback ports, a clean environment,
start and stop in order, and waiting until a child serves."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DemoFailed", "Processes", "child_env", "free_port", "listening", "wait_for"]


class DemoFailed(Exception):
    """The story did not end as it should, or a step failed; the message says which."""


def free_port(pair: bool = False) -> int:
    """A loopback port free a moment ago (with ``pair``, port+1 too: swtpm's control port)."""
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if not pair:
            return port
        with socket.socket() as sock, contextlib.suppress(OSError):
            sock.bind(("127.0.0.1", port + 1))
            return port
    raise DemoFailed("no free loopback port")


def child_env() -> dict[str, str]:
    # The children are separate programs with their own configuration: a developer's SUITSRV_*
    # settings must not leak into them, and the TSS library's warnings only hide the story.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUITSRV_")}
    env["TSS2_LOG"] = "all+none"
    return env


@dataclass
class Processes:
    """Every long-running child, stopped in reverse order: SIGTERM, then SIGKILL after 10 s."""

    running: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, args: Sequence[str], log: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, env=child_env(),
                                    **kwargs)  # fmt: skip
        self.running.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if proc in self.running:
            self.running.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.running)):
            self.stop(proc)


def wait_for(
    what: str, ready: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path
) -> None:
    deadline = time.monotonic() + 20
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:]
            raise DemoFailed(f"{what} did not start:\n{tail}")
        time.sleep(0.05)


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False
