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
import os
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from bench_common import (
    BASELINE_JSON,
    GENERATOR_CPU,
    SERVER_CPU,
    Report,
    Sample,
    load_average,
    load_note,
)
from bench_download import _downloads, _peak_rss
from bench_fleet import FULL, QUICK, Fleet, Plan, seed
from bench_load import CONNECTIONS, AiohttpLoad, Load, Wrk, _cores, _interleaved, _median, find_wrk
from bench_server import Server, _baseline_main, baseline, candidate

PACED_FRACTION = 0.5  # paced runs offer this share of the candidate's saturation rate


def _poll(load: Wrk | AiohttpLoad, url: str, seconds: int, think_ms: float = 0.0) -> Load:
    result = load.run(url, seconds, CONNECTIONS, think_ms)
    if result.requests == 0:
        raise RuntimeError(f"no request to {url} completed")
    return result


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


def run(quick: bool, generator: str = "auto") -> Report:
    """Seed, start both servers, measure; every subprocess is stopped before returning."""
    plan = QUICK if quick else FULL
    started = time.perf_counter()
    load_before = load_average()
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
    report.notes.append(load_note(load_before))
    return report


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "baseline":
        sys.exit("usage: bench_service.py baseline PORT FILE")
    _baseline_main(int(sys.argv[2]), Path(sys.argv[3]))
