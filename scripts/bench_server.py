"""Server processes for the subprocess suites: a real ``suitsrv serve`` and the bare aiohttp
baseline, each a subprocess pinned to SERVER_CPU, with its CPU time and peak RSS from /proc.

The baseline runs as ``scripts/bench_service.py baseline PORT FILE`` (that entry point calls
_baseline_main here)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from aiohttp import web
from bench_common import BASELINE_JSON, SERVER_CPU, _free_port, _pinned


class Server:
    """A server subprocess pinned to one core; stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(self, name: str, argv: list[str], port: int, ready_path: str, log: Path) -> None:
        self.name, self.port, self.log = name, port, log
        self.url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SUITSRV_", "AIOHTTP_"))}
        env["SUITSRV_ACCESS_LOG"] = "0"
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                _pinned(argv, SERVER_CPU), stdout=out, stderr=subprocess.STDOUT, env=env,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        if not shutil.which("taskset"):
            os.sched_setaffinity(self.proc.pid, {SERVER_CPU})  # its later threads inherit it
        try:
            self._wait_ready(ready_path)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, path: str) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(self.url + path, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        tail = self.log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{self.name} did not start on {self.url}:\n{tail}")

    def cpu_seconds(self) -> float:
        """User + system time of every thread so far (/proc/PID/stat fields 14 and 15)."""
        stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss(self) -> int:
        """VmHWM: the largest resident set the process has had, in bytes."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmHWM in /proc/PID/status")

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def candidate(data_dir: Path, log: Path) -> Server:
    port = _free_port()
    exe = Path(sys.executable).with_name("suitsrv")
    argv = [str(exe), "serve", "--data-dir", str(data_dir), "--listen", f"127.0.0.1:{port}"]
    return Server("suitsrv serve", argv, port, "/healthz", log)


def baseline(payload: Path, log: Path) -> Server:
    port = _free_port()
    script = Path(__file__).resolve().with_name("bench_service.py")
    argv = [sys.executable, str(script), "baseline", str(port), str(payload)]
    return Server("bare aiohttp", argv, port, "/json", log)


def _baseline_main(port: int, payload: Path) -> None:
    async def json_route(request: web.Request) -> web.Response:
        return web.json_response(BASELINE_JSON)

    async def file_route(request: web.Request) -> web.FileResponse:
        return web.FileResponse(payload)

    app = web.Application()
    app.router.add_get("/json", json_route)
    app.router.add_get("/file", file_route)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)
