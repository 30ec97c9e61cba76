"""A real software TPM for tests: one swtpm process on free loopback ports, driven through
tpm2-pytss (notes/tpm-stack.md). Not a mock: the TPM is outside the product, as on a device."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

__all__ = ["Swtpm", "running_swtpm"]


def _free_port_pair() -> int:
    """A port p such that p and p+1 were both free a moment ago (swtpm server + control)."""
    for _ in range(50):
        with closing(socket.socket()) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port >= 65535:
            continue
        with closing(socket.socket()) as s2:
            try:
                s2.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return int(port)
    raise RuntimeError("no free port pair for swtpm")


class Swtpm:
    def __init__(self, state: Path, port: int, process: subprocess.Popen[bytes]) -> None:
        self.state = state
        self.port = port
        self.process = process

    @property
    def tcti(self) -> str:
        return f"swtpm:host=127.0.0.1,port={self.port}"


@contextmanager
def running_swtpm(state: Path) -> Iterator[Swtpm]:
    """Start swtpm with its state in ``state``; stopped (and waited for) on exit."""
    if shutil.which("swtpm") is None:
        pytest.fail("swtpm is not installed: run scripts/setup (it installs swtpm as root)")
    state.mkdir(parents=True, exist_ok=True)
    port = _free_port_pair()
    process = subprocess.Popen(
        ["swtpm", "socket", "--tpm2",
         "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
         "--ctrl", f"type=tcp,port={port + 1},bindaddr=127.0.0.1",
         "--tpmstate", f"dir={state}", "--flags", "not-need-init,startup-clear"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    err = process.stderr.read().decode() if process.stderr else ""
                    raise RuntimeError(f"swtpm did not start: {err}") from None
                time.sleep(0.02)
        yield Swtpm(state, port, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        if process.stderr:
            process.stderr.close()
