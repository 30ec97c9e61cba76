"""Load generators and interleaved measuring: wrk (one thread, a Lua script rotating device
tokens, optionally paced) or aiohttp's client as the fallback, each run giving a Load; and
rounds that alternate which server goes first, recording how busy the server and its core were."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from bench_common import GENERATOR_CPU, MIB, SERVER_CPU, _pinned
from bench_server import Server

CONNECTIONS = 256


@dataclass(frozen=True)
class Load:
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    generator_cpu: float  # cores used by the generator
    server_cpu: float = 0.0  # cores used by the server process (from _interleaved)
    core_busy: float = 0.0  # share of the server's core busy with anything, kernel included

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


_WRK_LUA = """
-- A random device per request (rotating Authorization); the bare server ignores it. A line of
-- the tokens file is "TOKEN" or "TOKEN DIGEST": with a digest, the poll sends If-None-Match.
local tokens, etags = {}, {}
function init(args)
  for line in io.lines(args[1]) do
    local token, etag = line:match("^(%%S+)%%s*(%%S*)$")
    tokens[#tokens + 1] = token
    etags[#etags + 1] = etag
  end
  math.randomseed(tonumber(args[2]))
end
function request()
  local i = math.random(#tokens)
  local headers = {Authorization = "Bearer " .. tokens[i]}
  if etags[i] ~= "" then headers["If-None-Match"] = '"' .. etags[i] .. '"' end
  return wrk.format(nil, nil, headers)
end
%(delay)s
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %%d %%d %%d %%d %%d %%d %%d\\n", summary.requests,
    summary.duration, e.connect + e.read + e.write + e.timeout + e.status,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), summary.bytes))
end
"""


# wrk calls delay() before each request when the script defines it: an exponential think time
# per connection, mean %(think)s ms, so a paced run offers load like independent devices.
_WRK_DELAY = "function delay() return -math.log(1 - math.random()) * %(think)s end"


def find_wrk() -> str | None:
    """wrk from PATH; as root with apt-get, installed once (bounded in time) if missing."""
    if shutil.which("wrk") or os.geteuid() != 0 or not shutil.which("apt-get"):
        return shutil.which("wrk")
    print("bench: wrk is missing; apt-get install -y wrk", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}

    def apt(*args: str) -> None:
        subprocess.run(["apt-get", *args], check=True, timeout=300, env=env, capture_output=True)

    try:
        apt("install", "-y", "-q", "wrk")
    except (subprocess.SubprocessError, OSError):
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            apt("update", "-q")
            apt("install", "-y", "-q", "wrk")
    return shutil.which("wrk")


class Wrk:
    """wrk, one thread, on the generator core; latency percentiles from its HdrHistogram."""

    def __init__(self, exe: str, work: Path, tokens: list[str]) -> None:
        self.exe, self.work = exe, work
        self.tokens = work / "tokens.txt"
        self.tokens.write_text("\n".join(tokens) + "\n")
        version = subprocess.run(
            [exe, "-v"], check=False, capture_output=True, text=True, timeout=10
        )
        self.name = (version.stdout or version.stderr).split("[")[0].strip() or "wrk"

    def run(self, url: str, seconds: int, connections: int, think_ms: float = 0.0) -> Load:
        script = self.work / f"poll-{think_ms:.0f}.lua"
        delay = _WRK_DELAY % {"think": f"{think_ms:.3f}"} if think_ms else ""
        script.write_text(_WRK_LUA % {"delay": delay})
        seed = str(random.getrandbits(31))
        argv = [self.exe, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
                "-s", str(script), url, "--", str(self.tokens), seed]  # fmt: skip
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run(
            _pinned(argv, GENERATOR_CPU),
            check=False, capture_output=True, text=True, timeout=seconds + 60,
        )  # fmt: skip
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH ")), None)
        if done.returncode != 0 or line is None:
            raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}{done.stderr}")
        requests, micros, errors, p50, p95, p99, _ = (int(x) for x in line.split()[1:])
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        seconds_run = micros / 1e6
        return Load(
            requests, seconds_run, errors, p50 / 1e3, p95 / 1e3, p99 / 1e3, cpu / seconds_run
        )


def _percentile(ordered: list[float], p: float) -> float:
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] if ordered else math.nan


class AiohttpLoad:
    """The fallback generator: aiohttp's client in this process, one task per connection."""

    name = f"aiohttp {aiohttp.__version__} client (in-process fallback: wrk not found)"

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens

    def run(self, url: str, seconds: int, connections: int, think_ms: float = 0.0) -> Load:
        cpu = time.process_time()
        requests, elapsed, errors, latencies = asyncio.run(
            self._load(url, seconds, connections, think_ms)
        )
        cpu = time.process_time() - cpu
        ordered = sorted(latencies)
        p50, p95, p99 = (_percentile(ordered, p) * 1e3 for p in (50, 95, 99))
        return Load(requests, elapsed, errors, p50, p95, p99, cpu / elapsed)

    async def _load(
        self, url: str, seconds: int, connections: int, think_ms: float
    ) -> tuple[int, float, int, list[float]]:
        rng = random.Random()  # picks devices, not secrets
        latencies: list[float] = []
        errors = 0
        connector = aiohttp.TCPConnector(limit=connections)
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + seconds

            async def worker() -> None:
                nonlocal errors
                while loop.time() < deadline:
                    if think_ms:
                        await asyncio.sleep(rng.expovariate(1000 / think_ms))
                    auth = {"Authorization": f"Bearer {rng.choice(self.tokens)}"}
                    start = time.perf_counter()
                    try:
                        async with session.get(url, headers=auth) as resp:
                            await resp.read()
                            failed = resp.status >= 400
                    except (aiohttp.ClientError, TimeoutError):
                        failed = True
                    if failed:
                        errors += 1
                    else:
                        latencies.append(time.perf_counter() - start)

            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(connections)))
            return len(latencies), time.perf_counter() - start, errors, latencies


def _core_ticks(cpu: int) -> tuple[int, int]:
    """(busy, all) clock ticks of one core since boot, whoever used them (/proc/stat)."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            # user nice system idle iowait irq softirq steal (guest time is inside user)
            ticks = [int(x) for x in line.split()[1:9]]
            return sum(ticks) - ticks[3] - ticks[4], sum(ticks)
    raise RuntimeError(f"no cpu{cpu} in /proc/stat")


def _interleaved(
    rounds: int, sides: list[Server], measure: Callable[[Server], Load], unit: str = "req/s"
) -> dict[str, list[Load]]:
    """Run ``measure(server)`` for each side per round, alternating which side goes first,
    and record how busy the server and its core were (other processes share the machine)."""
    runs: dict[str, list[Load]] = {s.name: [] for s in sides}
    scale = MIB if unit == "MiB/s" else 1
    for i in range(rounds):
        for server in sides if i % 2 == 0 else sides[::-1]:
            cpu, (busy, ticks), start = server.cpu_seconds(), _core_ticks(SERVER_CPU), time.time()
            result = measure(server)
            wall, (busy_end, ticks_end) = time.time() - start, _core_ticks(SERVER_CPU)
            result = dataclasses.replace(
                result,
                server_cpu=(server.cpu_seconds() - cpu) / wall,
                core_busy=(busy_end - busy) / max(1, ticks_end - ticks),
            )
            runs[server.name].append(result)
            print(
                f"    {server.name}: {result.rate / scale:,.0f} {unit}"
                + (f", p99 {result.p99_ms:.1f} ms" if result.p99_ms else "")
                + f"; server {result.server_cpu:.2f} of CPU {SERVER_CPU}, busy"
                f" {result.core_busy:.2f}; generator {result.generator_cpu:.2f}",
                file=sys.stderr,
            )
    return runs


def _median(loads: list[Load], attr: str) -> float:
    return statistics.median(float(getattr(x, attr)) for x in loads)


def _cores(loads: list[Load]) -> str:
    return (
        f"server {_median(loads, 'server_cpu'):.2f} (its core busy "
        f"{_median(loads, 'core_busy'):.2f}), generator {_median(loads, 'generator_cpu'):.2f}"
    )
