"""The ``service`` suite: a real ``suitsrv serve`` against a bare aiohttp server, on loopback.

(a) Device polls (``GET /v1/device/update``, a random one of the fleet's device tokens per
request) against one bare ``web.json_response`` route; (b) a 64 MiB payload download
(``GET /v1/payloads/{sha256}``) against a bare ``web.FileResponse`` of the same file, and the
server's peak RSS after downloads of a 1 MiB and a 64 MiB payload. The store is seeded
directly (SQLite rows in one transaction each, signed envelopes accepted through
``releases.accept_manifest``), then both servers run as subprocesses pinned to one core, the
load generator on another, in interleaved rounds. Nothing asserts a time (STYLE.md).

Run as a script, this module is the baseline server: ``bench_service.py baseline PORT FILE``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import math
import os
import random
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web
from sqlite_utils import Database

from manifests import (
    Algorithm,
    build_manifest,
    class_id,
    generate_signing_key,
    load_spec,
    public_pem,
    sign,
    vendor_id_from_domain,
)
from suitsrv import accounts, releases
from suitsrv.auth import hash_token, new_token
from suitsrv.config import Config
from suitsrv.store import PayloadRecord, ReleaseRecord, SqliteStore
from suitsrv.store import queries as q

# The server on one core, the load generator on another; on a one-core machine they share it.
SERVER_CPU, GENERATOR_CPU = 0, (1 if (os.cpu_count() or 1) > 1 else 0)
CONNECTIONS = 256
MIB = 1 << 20
VENDOR, DOMAIN = "acme", "acme.example"
DOWNLOAD_CLASS = "bench-download"
PACED_FRACTION = 0.5  # paced runs offer this share of the candidate's saturation rate
RSS_STREAMS, RSS_REPEATS = 4, 3  # concurrent downloads, and how many times each
BASELINE_JSON = {"status": "ok"}


@dataclass(frozen=True)
class Plan:
    devices: int
    classes: int
    releases_per_class: int
    rounds: int
    poll_seconds: int  # wrk takes whole seconds
    paced_seconds: int
    download_rounds: int
    download_seconds: float
    payload_bytes: int = 64 * MIB
    small_payload_bytes: int = 1 * MIB

    @property
    def manifests(self) -> int:
        return self.classes * self.releases_per_class


FULL = Plan(100_000, 100, 10, 3, poll_seconds=10, paced_seconds=5, download_rounds=5,
            download_seconds=2)  # fmt: skip
QUICK = Plan(10_000, 10, 10, 2, poll_seconds=3, paced_seconds=2, download_rounds=2,
             download_seconds=1)  # fmt: skip


@dataclass(frozen=True)
class Sample:
    """One comparison, in the shape of bench.Figure less the ratio (bench.py adds it)."""

    name: str
    value: float
    unit: str
    baseline: str
    baseline_value: float
    target: str | None


@dataclass(frozen=True)
class Report:
    samples: list[Sample]
    method: list[str]  # how it was measured, for the BENCHMARKS.md block
    notes: list[str]  # what limits the figures


# -- seeding ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fleet:
    tokens: list[str]  # device tokens; a poll picks one at random
    probes: list[tuple[str, bytes]]  # (a device token, the envelope it must get) per class
    download_token: str  # a device of DOWNLOAD_CLASS
    payloads: dict[int, tuple[str, Path]]  # size -> (sha256, blob file)
    envelope_bytes: int


class _BatchingStore(SqliteStore):
    """accept_manifest's checks with its inserts held back, so that seeding writes the
    releases in one transaction (one fsync) instead of one per manifest."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir)
        self.pending: list[ReleaseRecord] = []

    async def insert_release(self, release: ReleaseRecord) -> tuple[ReleaseRecord, bool]:
        self.pending.append(release)
        return release, True


def _write_blob(store: SqliteStore, chunks: Iterator[bytes]) -> tuple[str, int, Path]:
    """A blob file written the way BlobStore names it, without its per-chunk executor hops."""
    digest, size = hashlib.sha256(), 0
    tmp = store.blobs.tmp / f"seed-{os.getpid()}"
    with tmp.open("wb") as fh:
        for chunk in chunks:
            digest.update(chunk)
            fh.write(chunk)
            size += len(chunk)
    final = store.blobs.path(digest.hexdigest())
    final.parent.mkdir(exist_ok=True)
    os.replace(tmp, final)
    return digest.hexdigest(), size, final


def _spec(class_name: str, sequence: int, sha256: str, size: int) -> str:
    return f"""
vendor-domain = "{DOMAIN}"
class-name = "{class_name}"
sequence-number = {sequence}
version = "1.{sequence}.0"
[[component]]
id = ["firmware"]
digest = "{sha256}"
size = {size}
uri = "https://updates.example/v1/payloads/{sha256}"
"""


def _insert_all(db: Database, releases_: list[ReleaseRecord]) -> None:
    for release in releases_:
        q.insert_release(db, release)


def _insert_payloads(db: Database, payloads: list[PayloadRecord]) -> None:
    for payload in payloads:
        q.add_payload(db, payload)


def _insert_fleet(
    db: Database, devices: list[tuple[object, ...]], tokens: list[tuple[object, ...]]
) -> None:
    db.conn.executemany(
        "INSERT INTO devices (device_id, vendor, class_id, gateway, keys, created_at) "
        "VALUES (?, ?, ?, NULL, '{}', ?)",
        devices,
    )
    db.conn.executemany(
        "INSERT INTO tokens (token_id, token_hash, role, scope, label, created_at, revoked_at) "
        "VALUES (?, ?, 'device', ?, 'device', ?, NULL)",
        tokens,
    )


def seed(data_dir: Path, plan: Plan) -> Fleet:
    """A data directory with one vendor, ``plan.manifests`` published releases over
    ``plan.classes`` classes, ``plan.devices`` devices with tokens, and the download payloads."""
    now = time.time()
    key = generate_signing_key(Algorithm.ES256)
    store = _BatchingStore(data_dir)
    try:
        asyncio.run(
            accounts.add_vendor(
                store, VENDOR, vendor_domains=[DOMAIN],
                anchors=[{"pem": public_pem(key).decode()}], now=now,
            )
        )  # fmt: skip
        # Every release names a real stored payload, so every release is published.
        wanted: list[tuple[str, int, str, int]] = []  # (class, sequence, sha256, size)
        payloads: list[PayloadRecord] = []
        for c in range(plan.classes):
            for s in range(1, plan.releases_per_class + 1):
                sha, size, _ = _write_blob(store, iter([os.urandom(4096)]))
                payloads.append(PayloadRecord(sha, size, now))
                wanted.append((f"class-{c:03d}", s, sha, size))
        files: dict[int, tuple[str, Path]] = {}
        for s, wanted_size in enumerate((plan.small_payload_bytes, plan.payload_bytes), 1):
            chunks = (os.urandom(MIB) for _ in range(wanted_size // MIB))
            sha, size, path = _write_blob(store, chunks)
            payloads.append(PayloadRecord(sha, size, now))
            wanted.append((DOWNLOAD_CLASS, s, sha, size))
            files[size] = (sha, path)
        store.write_sync(_insert_payloads, payloads)

        envelopes = [sign(build_manifest(load_spec(_spec(*w))), [key]) for w in wanted]
        config = Config(data_dir=data_dir)

        async def accept() -> None:
            for envelope in envelopes:
                await releases.accept_manifest(store, config, VENDOR, envelope, now)

        asyncio.run(accept())
        store.write_sync(_insert_all, store.pending)
        newest = {r.class_id: r.envelope for r in store.pending}  # in sequence order
        vendor_id = vendor_id_from_domain(DOMAIN)
        classes = [str(class_id(vendor_id, f"class-{c:03d}")) for c in range(plan.classes)]

        tokens: list[str] = []
        device_rows: list[tuple[object, ...]] = []
        token_rows: list[tuple[object, ...]] = []
        for i in range(plan.devices + 1):
            device_id = f"dev-{i:06d}" if i < plan.devices else "dev-download"
            klass = (
                classes[i % plan.classes]
                if i < plan.devices
                else str(class_id(vendor_id, DOWNLOAD_CLASS))
            )
            token, token_id = new_token()
            tokens.append(token)
            device_rows.append((device_id, VENDOR, klass, now))
            token_rows.append((token_id, hash_token(token), device_id, now))
        store.write_sync(_insert_fleet, device_rows, token_rows)
    finally:
        store.close()
    probes = [(tokens[c], newest[classes[c]]) for c in range(plan.classes)]
    sizes = sorted(len(newest[k]) for k in classes)
    return Fleet(tokens[:-1], probes, tokens[-1], files, sizes[len(sizes) // 2])


# -- processes --------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pinned(argv: list[str], cpu: int) -> list[str]:
    taskset = shutil.which("taskset")
    return [taskset, "-c", str(cpu), *argv] if taskset else argv


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
    argv = [sys.executable, str(Path(__file__).resolve()), "baseline", str(port), str(payload)]
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


# -- load generators --------------------------------------------------------------------------


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
-- A random device token per request (rotating Authorization); the bare server ignores it.
local tokens = {}
function init(args)
  for line in io.lines(args[1]) do tokens[#tokens + 1] = line end
  math.randomseed(tonumber(args[2]))
end
function request()
  return wrk.format(nil, nil, {Authorization = "Bearer " .. tokens[math.random(#tokens)]})
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


# -- measuring --------------------------------------------------------------------------------


def _core_ticks(cpu: int) -> tuple[int, int]:
    """(busy, all) clock ticks of one core since boot, whoever used them (/proc/stat)."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            # user nice system idle iowait irq softirq steal (guest time is inside user)
            ticks = [int(x) for x in line.split()[1:9]]
            return sum(ticks) - ticks[3] - ticks[4], sum(ticks)
    raise RuntimeError(f"no cpu{cpu} in /proc/stat")


def _poll(load: Wrk | AiohttpLoad, url: str, seconds: int, think_ms: float = 0.0) -> Load:
    result = load.run(url, seconds, CONNECTIONS, think_ms)
    if result.requests == 0:
        raise RuntimeError(f"no request to {url} completed")
    return result


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


async def _download(
    url: str, headers: dict[str, str], seconds: float, expect: str | None = None
) -> tuple[int, float]:
    """Whole downloads back to back for at least ``seconds``: (bytes, seconds). With ``expect``,
    one download whose SHA-256 must be ``expect``."""
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        total, start = 0, time.perf_counter()
        while True:
            digest = hashlib.sha256()
            async with session.get(url, headers=headers) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"GET {url}: {resp.status} {await resp.text()}")
                async for chunk in resp.content.iter_chunked(MIB):
                    total += len(chunk)
                    if expect:
                        digest.update(chunk)
            if expect and digest.hexdigest() != expect:
                raise RuntimeError(f"GET {url} hashes to {digest.hexdigest()}, not {expect}")
            if expect or time.perf_counter() - start >= seconds:
                return total, time.perf_counter() - start


def _fetch_loop(
    port: int, target: str, headers: dict[str, str], seconds: float
) -> tuple[int, float]:
    """Whole 200 responses back to back on one keep-alive connection for at least ``seconds``,
    read into one reused buffer: (body bytes, seconds). A client this thin leaves its core
    half idle where aiohttp's used most of it, so the server and the kernel set the rate."""
    fields = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{fields}\r\n".encode()
    buffer = memoryview(bytearray(MIB))
    total = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        start = time.perf_counter()
        while True:
            sock.sendall(request)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(65536)
                if not chunk:
                    raise RuntimeError(f"GET {target}: connection closed in the headers")
                head += chunk
            status_and_fields, _, got_body = head.partition(b"\r\n\r\n")
            status, *lines = status_and_fields.split(b"\r\n")
            if not status.startswith(b"HTTP/1.1 200 "):
                raise RuntimeError(f"GET {target}: {status!r}")
            length = next(
                int(line.split(b":", 1)[1]) for line in lines
                if line.lower().startswith(b"content-length:")
            )  # fmt: skip
            got = len(got_body)
            while got < length:
                count = sock.recv_into(buffer, min(len(buffer), length - got))
                if not count:
                    raise RuntimeError(f"GET {target}: connection closed after {got} bytes")
                got += count
            total += got
            if time.perf_counter() - start >= seconds:
                return total, time.perf_counter() - start


async def _check(ours: Server, bare: Server, fleet: Fleet) -> None:
    """What the timed runs request answers as it should (a fast wrong answer means nothing)."""
    async with aiohttp.ClientSession() as session:
        for token, envelope in fleet.probes:
            auth = {"Authorization": f"Bearer {token}"}
            async with session.get(f"{ours.url}/v1/device/update", headers=auth) as resp:
                if resp.status != 200 or await resp.read() != envelope:
                    raise RuntimeError(f"a poll answered {resp.status}, not the newest envelope")
        async with session.get(f"{bare.url}/json") as resp:
            if resp.status != 200 or await resp.json() != BASELINE_JSON:
                raise RuntimeError(f"the bare JSON route answered {resp.status}")


def _median(loads: list[Load], attr: str) -> float:
    return statistics.median(float(getattr(x, attr)) for x in loads)


def _cores(loads: list[Load]) -> str:
    return (
        f"server {_median(loads, 'server_cpu'):.2f} (its core busy "
        f"{_median(loads, 'core_busy'):.2f}), generator {_median(loads, 'generator_cpu'):.2f}"
    )


def _polls(load: Wrk | AiohttpLoad, ours: Server, bare: Server, plan: Plan, report: Report) -> None:
    urls = {ours.name: f"{ours.url}/v1/device/update", bare.name: f"{bare.url}/json"}
    for server in (ours, bare):  # warm up SQLite's and the OS's caches and both servers
        _poll(load, urls[server.name], 1)
    print(f"  polls: {plan.rounds} x {plan.poll_seconds} s saturated per side", file=sys.stderr)
    sat = _interleaved(
        plan.rounds, [ours, bare], lambda s: _poll(load, urls[s.name], plan.poll_seconds)
    )
    a, b = sat[ours.name], sat[bare.name]
    offered = PACED_FRACTION * _median(a, "rate")
    think_ms = CONNECTIONS / offered * 1000
    print(f"  polls: paced at {offered:,.0f} req/s ({think_ms:.0f} ms think)", file=sys.stderr)
    paced = _interleaved(
        plan.rounds, [ours, bare],
        lambda s: _poll(load, urls[s.name], plan.paced_seconds, think_ms),
    )  # fmt: skip
    pa, pb = paced[ours.name], paced[bare.name]
    bare_json = "bare aiohttp web.json_response, same load"
    sat_name = f"service.poll {CONNECTIONS} connections, saturated"
    report.samples.extend([
        Sample(f"{sat_name}: rate", _median(a, "rate"), "req/s", bare_json, _median(b, "rate"),
               ">=0.5"),
        *(Sample(f"{sat_name}: {p}", _median(a, f"{p}_ms"), "ms", bare_json,
                 _median(b, f"{p}_ms"), "value <25 ms" if p == "p99" else None)
          for p in ("p50", "p95", "p99")),
        Sample(f"service.poll {CONNECTIONS} connections, paced at {PACED_FRACTION:.0%} of the "
               "saturated rate: p99", _median(pa, "p99_ms"), "ms", bare_json,
               _median(pb, "p99_ms"), "value <25 ms"),
    ])  # fmt: skip
    report.method.append(
        f"paced: an exponential think time per connection (mean {think_ms:.0f} ms) offers "
        f"~{offered:,.0f} req/s to both servers; achieved {_median(pa, 'rate'):,.0f} vs "
        f"{_median(pb, 'rate'):,.0f} req/s, p50 {_median(pa, 'p50_ms'):.2f} vs "
        f"{_median(pb, 'p50_ms'):.2f} ms"
    )
    report.notes.extend([
        f"cores busy, saturated polls: suitsrv {_cores(a)}; bare {_cores(b)}",
        f"cores busy, paced polls: suitsrv {_cores(pa)}; bare {_cores(pb)}",
        "saturated latency is a closed loop's: p50 is about connections / rate (Little's law), "
        "so it restates the rate; the paced p99 is the response time of a server not "
        "overloaded",
    ])  # fmt: skip
    errors = sum(x.errors for x in a + b + pa + pb)
    if errors:
        report.notes.append(f"{errors} poll requests failed or answered >= 400")
    for name, runs in ((ours.name, a), (bare.name, b)):
        if _median(runs, "generator_cpu") > 0.8:
            report.notes.append(
                f"the generator used most of its core against {name}: that rate is a floor"
            )


def _downloads(ours: Server, bare: Server, fleet: Fleet, plan: Plan, report: Report) -> None:
    sha, _ = fleet.payloads[plan.payload_bytes]
    auth = {"Authorization": f"Bearer {fleet.download_token}"}
    sides = {ours.name: (f"/v1/payloads/{sha}", auth), bare.name: ("/file", {})}
    for server in (ours, bare):  # the bytes are right (aiohttp's client), the page cache warm
        target, headers = sides[server.name]
        asyncio.run(_download(server.url + target, headers, 0, expect=sha))
    print(
        f"  downloads: {plan.download_rounds} x {plan.download_seconds:g} s per side",
        file=sys.stderr,
    )

    def measure(server: Server) -> Load:
        target, headers = sides[server.name]
        cpu = time.process_time()
        size, seconds = _fetch_loop(server.port, target, headers, plan.download_seconds)
        return Load(size, seconds, 0, 0, 0, 0, (time.process_time() - cpu) / seconds)

    runs = _interleaved(plan.download_rounds, [ours, bare], measure, "MiB/s")
    a, b = runs[ours.name], runs[bare.name]
    report.samples.append(
        Sample(
            f"service.download {plan.payload_bytes // MIB} MiB payload (sendfile)",
            _median(a, "rate") / MIB,
            "MiB/s",
            "bare aiohttp web.FileResponse, same file",
            _median(b, "rate") / MIB,
            ">=0.8",
        )
    )
    report.notes.append(f"cores busy, downloads: suitsrv {_cores(a)}; bare {_cores(b)}")


async def _concurrent(url: str, headers: dict[str, str], sha: str) -> None:
    for _ in range(RSS_REPEATS):
        await asyncio.gather(*(_download(url, headers, 0, expect=sha) for _ in range(RSS_STREAMS)))


def _peak_rss(data_dir: Path, work: Path, fleet: Fleet, plan: Plan, report: Report) -> None:
    """VmHWM of a fresh server after the same concurrent downloads of a small and a large
    payload: streaming means the peak does not grow with the payload."""
    auth = {"Authorization": f"Bearer {fleet.download_token}"}
    peaks: dict[int, tuple[int, int]] = {}
    for size in (plan.small_payload_bytes, plan.payload_bytes):
        sha, _ = fleet.payloads[size]
        with candidate(data_dir, work / "suitsrv-rss.log") as server:
            start = server.peak_rss()
            url = f"{server.url}/v1/payloads/{sha}"

            asyncio.run(_concurrent(url, auth, sha))
            peaks[size] = (start, server.peak_rss())
    small, large = peaks[plan.small_payload_bytes], peaks[plan.payload_bytes]
    report.samples.append(
        Sample(
            f"service.download peak RSS, {RSS_STREAMS} streams x {RSS_REPEATS} of a "
            f"{plan.payload_bytes // MIB} MiB payload",
            large[1] / MIB,
            "MiB",
            f"same, {plan.small_payload_bytes // MIB} MiB payload",
            small[1] / MIB,
            "<=1.1 (flat)",
        )
    )
    report.method.append(
        f"peak RSS: VmHWM of a fresh `suitsrv serve` after {RSS_STREAMS} concurrent downloads, "
        f"{RSS_REPEATS} times; {small[0] / MIB:.1f} and {large[0] / MIB:.1f} MiB right after "
        "start-up"
    )


def run(quick: bool, generator: str = "auto") -> Report:
    """Seed, start both servers, measure; every subprocess is stopped before returning."""
    plan = QUICK if quick else FULL
    started = time.perf_counter()
    load_before = Path("/proc/loadavg").read_text().split()[0]
    report = Report([], [], [])
    previous = os.sched_getaffinity(0)
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="suitsrv-bench-")))
        stack.callback(os.sched_setaffinity, 0, previous)
        os.sched_setaffinity(0, {GENERATOR_CPU})  # this process is a generator (downloads)
        data_dir = work / "data"
        print(f"  seeding {plan.devices:,} devices, {plan.manifests:,} manifests", file=sys.stderr)
        fleet = seed(data_dir, plan)
        seeded = time.perf_counter() - started
        wrk = find_wrk() if generator != "aiohttp" else None
        if generator == "wrk" and wrk is None:
            raise RuntimeError("wrk was asked for and is not installed")
        load: Wrk | AiohttpLoad = Wrk(wrk, work, fleet.tokens) if wrk else AiohttpLoad(fleet.tokens)
        print(f"  load generator: {load.name}", file=sys.stderr)
        ours = stack.enter_context(candidate(data_dir, work / "suitsrv.log"))
        _, big = fleet.payloads[plan.payload_bytes]
        bare = stack.enter_context(baseline(big, work / "baseline.log"))
        asyncio.run(_check(ours, bare, fleet))
        report.method.extend([
            f"fleet: {plan.devices:,} devices with tokens and {plan.manifests:,} signed ES256 "
            f"manifests over {plan.classes} classes, seeded directly in {seeded:.0f} s; a poll "
            f"answers 200 with its class's newest envelope ({fleet.envelope_bytes} bytes)",
            "servers: `suitsrv serve` (access log off) and a bare aiohttp app "
            "(`scripts/bench_service.py baseline`: one web.json_response route, one "
            f"web.FileResponse route), each pinned to CPU {SERVER_CPU}, default asyncio loop",
            f"polls: {load.name} on CPU {GENERATOR_CPU}, {CONNECTIONS} connections, a random "
            "device token per request to both servers; "
            f"{plan.rounds} interleaved rounds of {plan.poll_seconds} s saturated and "
            f"{plan.paced_seconds} s paced per side, median per side",
            f"downloads: one keep-alive connection from this process on CPU {GENERATOR_CPU}, "
            "whole responses back to back, read with recv_into a reused 1 MiB buffer (SHA-256 "
            "checked once per side with aiohttp's client, iter_chunked(1 MiB)); "
            f"{plan.download_rounds} interleaved rounds of {plan.download_seconds:g} s per side",
        ])  # fmt: skip
        _polls(load, ours, bare, plan, report)
        _downloads(ours, bare, fleet, plan, report)
        ours.stop()
        bare.stop()
        _peak_rss(data_dir, work, fleet, plan, report)
    report.method.append(f"wall time: {time.perf_counter() - started:.0f} s")
    report.notes.append(
        f"1-minute load average {load_before} before, "
        f"{Path('/proc/loadavg').read_text().split()[0]} after: pinning keeps our processes "
        "apart, not other processes off these cores ('its core busy' counts everyone)"
    )
    return report


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "baseline":
        sys.exit("usage: bench_service.py baseline PORT FILE")
    _baseline_main(int(sys.argv[2]), Path(sys.argv[3]))
