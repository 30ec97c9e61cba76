"""The ``growth`` suite: does a poll cost the same with 10k, 100k and 1M registered devices?

One data directory per fleet size, each seeded directly (bench_fleet.seed: devices and their
tokens in one transaction), one ``suitsrv serve`` per directory, all pinned to the server core
and measured in interleaved rounds with wrk on the generator core. The baseline of every figure
is the smallest fleet measured in the same rounds, so a ratio near 1 means the cost stayed flat.

The poll is the steady state of a fleet: each device sends ``If-None-Match`` with the digest of
its class's newest release and gets 304 (authentication, the device's row, its installs and the
release choice; no write). Only the number of registered devices varies: every fleet polls with
the same number of active devices (SAMPLE, drawn at random from the whole fleet, so the reads
land all over its indexes), so the token cache (5 s) helps each fleet alike. With all devices
of the 10k fleet against a sample of the larger ones, the 10k fleet would be measured with its
tokens cached and the others without: a cache effect, not growth.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from bench_common import GENERATOR_CPU, MIB, SERVER_CPU, Report, Sample
from bench_fleet import Fleet, Plan, seed
from bench_load import CONNECTIONS, Wrk, _cores, _interleaved, _median, find_wrk
from bench_server import Server, candidate

from manifests.parse import parse_envelope

SAMPLE = 10_000
FULL_SIZES = (10_000, 100_000, 1_000_000)
QUICK_SIZES = (10_000, 50_000)


def _plan(devices: int, quick: bool) -> Plan:
    seconds = 2 if quick else 6
    return Plan(devices, 10, 10, 2 if quick else 5, poll_seconds=seconds, paced_seconds=seconds,
                download_rounds=0, download_seconds=0, payload_bytes=2 * MIB,
                small_payload_bytes=MIB)  # fmt: skip


def _etags(fleet: Fleet, classes: int) -> list[str]:
    """``token digest`` lines: device i is of class i % classes (bench_fleet.seed), and its
    class's newest envelope is the probe of that class."""
    digests = [parse_envelope(envelope).digest.hex for _, envelope in fleet.probes]
    rng = random.Random(7)  # picks sample devices, not secrets
    picked = sorted(rng.sample(range(len(fleet.tokens)), min(SAMPLE, len(fleet.tokens))))
    return [f"{fleet.tokens[i]} {digests[i % classes]}" for i in picked]


async def _check(server: Server, lines: list[str]) -> None:
    """A sampled device gets 304 for its class's newest digest (the timed answer is right)."""
    async with aiohttp.ClientSession() as session:
        for line in random.sample(lines, min(20, len(lines))):
            token, digest = line.split()
            headers = {"Authorization": f"Bearer {token}", "If-None-Match": f'"{digest}"'}
            async with session.get(f"{server.url}/v1/device/update", headers=headers) as resp:
                if resp.status != 304:
                    raise RuntimeError(f"{server.name}: a steady-state poll answered {resp.status}")


def run(quick: bool) -> Report:
    sizes = QUICK_SIZES if quick else FULL_SIZES
    report = Report([], [], [])
    started = time.perf_counter()
    wrk_exe = find_wrk()
    if wrk_exe is None:
        raise RuntimeError("the growth suite needs wrk (apt-get install wrk)")
    previous = os.sched_getaffinity(0)
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="suitsrv-growth-")))
        stack.callback(os.sched_setaffinity, 0, previous)
        os.sched_setaffinity(0, {GENERATOR_CPU})
        servers: list[Server] = []
        loads: dict[str, Wrk] = {}
        seeded: list[str] = []
        for size in sizes:
            plan = _plan(size, quick)
            data = work / f"fleet-{size}"
            print(f"  seeding {size:,} devices", file=sys.stderr)
            t0 = time.perf_counter()
            fleet = seed(data, plan)
            megabytes = (data / "suitsrv.sqlite3").stat().st_size / MIB
            seeded.append(f"{size:,} in {time.perf_counter() - t0:.0f} s ({megabytes:,.0f} MiB)")
            lines = _etags(fleet, plan.classes)
            del fleet
            server = stack.enter_context(candidate(data, work / f"suitsrv-{size}.log"))
            server.name = f"{size:,} devices"
            asyncio.run(_check(server, lines))
            wrk_dir = work / f"wrk-{size}"
            wrk_dir.mkdir()
            loads[server.name] = Wrk(wrk_exe, wrk_dir, lines)
            servers.append(server)
        plan = _plan(sizes[0], quick)
        url = "/v1/device/update"
        for server in servers:  # warm both the OS's and SQLite's caches
            loads[server.name].run(server.url + url, 1, CONNECTIONS)
        paced_ms = 0.0
        print(f"  polls: {plan.rounds} x {plan.poll_seconds} s per fleet", file=sys.stderr)
        sat = _interleaved(
            plan.rounds, servers,
            lambda s: loads[s.name].run(s.url + url, plan.poll_seconds, CONNECTIONS),
        )  # fmt: skip
        smallest = servers[0].name
        offered = 0.5 * min(_median(v, "rate") for v in sat.values())
        paced_ms = CONNECTIONS / offered * 1000
        print(f"  paced at {offered:,.0f} req/s", file=sys.stderr)
        paced = _interleaved(
            plan.rounds, servers,
            lambda s: loads[s.name].run(s.url + url, plan.paced_seconds, CONNECTIONS, paced_ms),
        )  # fmt: skip
        base = f"the same poll, {smallest} (same rounds)"
        for server in servers[1:]:
            a, b = sat[server.name], sat[smallest]
            pa, pb = paced[server.name], paced[smallest]
            report.samples.extend([
                Sample(f"growth.poll {server.name}, saturated: rate", _median(a, "rate"),
                       "req/s", base, _median(b, "rate"), ">=0.9 (flat)"),
                Sample(f"growth.poll {server.name}, paced: p99", _median(pa, "p99_ms"), "ms",
                       base, _median(pb, "p99_ms"), "value <25 ms"),
            ])  # fmt: skip
        for server in servers:
            report.notes.append(
                f"{server.name}: saturated {_median(sat[server.name], 'rate'):,.0f} req/s, "
                f"p99 {_median(sat[server.name], 'p99_ms'):.1f} ms; paced p99 "
                f"{_median(paced[server.name], 'p99_ms'):.1f} ms; {_cores(sat[server.name])}"
            )
        errors = sum(x.errors for runs in (*sat.values(), *paced.values()) for x in runs)
        if errors:
            report.notes.append(f"{errors} poll requests failed or answered >= 400")
    report.method.extend([
        f"fleets seeded directly: {'; '.join(seeded)}; 10 classes of 10 signed releases each",
        f"servers: one `suitsrv serve` per fleet (access log off), all on CPU {SERVER_CPU}; "
        f"wrk on CPU {GENERATOR_CPU}, {CONNECTIONS} connections; the same number of active "
        f"devices for every fleet, a random sample of {SAMPLE:,} of its devices (only the number "
        "registered varies)",
        "poll: If-None-Match with the class's newest digest -> 304 (a fleet's steady state); "
        f"{plan.rounds} interleaved rounds of {plan.poll_seconds} s saturated, then paced at "
        f"half the slowest fleet's saturated rate ({paced_ms:.0f} ms mean think time)",
        f"wall time: {time.perf_counter() - started:.0f} s",
    ])  # fmt: skip
    return report
