"""The end-to-end demo (``python -m suitsrv.demo``, docs/demo.md) as a user runs it: real
``suitsrv`` processes, a real swtpm per device, HTTP on 127.0.0.1. Nothing is faked."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from suitsrv.demo import SIMULATION_CONFIG

from .server_process import ServerProcess

pytestmark = pytest.mark.skipif(shutil.which("swtpm") is None, reason="swtpm is not installed")


def _env(tmp_path: Path) -> dict[str, str]:
    # The demo's temporary folder goes under tmp_path, so pytest cleans it up.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUITSRV_")}
    return {**env, "TMPDIR": str(tmp_path)}


def _demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "suitsrv.demo", *args],
        capture_output=True, text=True, env=_env(tmp_path), timeout=240, check=False,
    )  # fmt: skip


def _ours(tmp_path: Path) -> Iterator[int]:
    """Processes still running whose command line names a file under tmp_path."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(tmp_path).encode() in cmdline and state != "Z":
            yield int(proc.name)


def _outcome(out: str) -> None:
    assert re.search(r"device A thermostat-a\S*: nominal, configuration restored", out), out
    assert re.search(r"device B thermostat-b\S*: quarantined", out), out
    assert "attest: contraindicated" in out
    assert "lifted quarantine for thermostat-a" in out


def test_demo_reinstates_a_and_keeps_b_quarantined(tmp_path: Path) -> None:
    done = _demo(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    _outcome(done.stdout)
    assert "demo: both outcomes happened" in done.stdout
    assert "sst_" not in done.stdout.split("== release 1")[1]  # tokens shown by name after issue
    assert list(_ours(tmp_path)) == []  # the server, both swtpms and the follower are gone


def test_demo_against_another_server_sets_up_accounts_over_http(tmp_path: Path) -> None:
    config = tmp_path / "suitsrv.toml"
    config.write_text(SIMULATION_CONFIG)  # its devices are swtpm simulations (ADR 0006)
    with ServerProcess.start(
        tmp_path / "data", tmp_path, extra=("--config", str(config))
    ) as server:
        (token,) = server.operator_tokens()
        assert "warning: attestation.allow-resettable-pcrs is on" in server.stderr()
        done = _demo(tmp_path, "--server", server.url, "--operator-token", token)
        assert done.returncode == 0, done.stdout + done.stderr
        _outcome(done.stdout)
        assert "POST /v1/operator/devices" in done.stdout
        assert server.proc.poll() is None  # not ours to stop
        server.stop()


def test_keep_running_leaves_only_the_server(tmp_path: Path) -> None:
    done = _demo(tmp_path, "--keep-running")
    # The server outlives the demo even when the story failed: stop it whatever happens.
    started = re.findall(r"service: \S+ \(pid (\d+)", done.stdout)
    try:
        assert done.returncode == 0, done.stdout + done.stderr
        pid = int(re.findall(r"service left running: \S+ \(pid (\d+)", done.stdout)[0])
        assert list(_ours(tmp_path)) == [pid]
    finally:
        for pid_text in started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_text), signal.SIGTERM)


def test_sigterm_stops_every_process_it_started(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "suitsrv.demo"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, env=_env(tmp_path),
    )  # fmt: skip
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:  # up to device B's swtpm: the server and two swtpms are up
        seen.append(line)
        if "device-B/agent.toml identity" in line:
            break
    assert len(list(_ours(tmp_path))) >= 3, "".join(seen)
    proc.send_signal(signal.SIGTERM)
    rest = proc.communicate(timeout=60)[0]
    assert proc.returncode == 130, "".join(seen) + rest
    assert "demo: interrupted" in rest
    deadline = time.monotonic() + 5
    while list(_ours(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert list(_ours(tmp_path)) == []
