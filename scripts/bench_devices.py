"""The ``load`` suite: N simulated devices against a real ``suitsrv serve``, bounded in time.

Each device is a task of this process (aiohttp's client, on the generator core, loopback only)
that polls ``GET /v1/device/update`` every INTERVAL seconds +-JITTER, sending If-None-Match
once it holds an envelope. A share of the fleet (UPDATERS) installs what it is offered: it
downloads the payload in two Range requests (the second resumes with If-Range, as after a cut
connection), checks the SHA-256, and reports the install with a SUIT_Report; a smaller share
(ATTESTERS) then attests with an EAT (RFC 9711) signed by its registered key — challenge,
evidence, verdict — and again every ATTEST_EVERY polls. Every answer is checked (status and,
where there is one, the content): a wrong answer counts as an error like a failed request.

The same fleet, polling only, then runs against the bare aiohttp JSON route for a share of the
time: its latency percentiles are the baseline. The server's RSS and open files are sampled
throughout (/proc), so growth over the run shows.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import math
import os
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from bench_common import GENERATOR_CPU, SERVER_CPU, Report, Sample
from bench_fleet import Fleet, Plan, seed
from bench_server import Server, baseline, candidate

from attest import _cbor
from attest._cose import sign1
from attest.keys import signing_key_from_pem
from manifests import ReportResult, build_report, parse_envelope

INTERVAL, JITTER = 10.0, 0.2  # seconds between a device's polls (at most), +- share
UPDATERS, ATTESTERS = 0.05, 0.01  # shares of the fleet
ATTEST_EVERY = 6  # an attesting device attests again every this many polls
PAYLOAD_BYTES = 64 * 1024
CONNECTIONS = 256  # the generator's keep-alive pool (devices share it, as behind a NAT)
SAMPLE_SECONDS = 5.0
BASELINE_SHARE = 0.2  # of the run's duration, for the bare server (at least 10 s)


@dataclass
class Tally:
    """What the devices saw: latencies per kind of request, and errors with the first reasons."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    done: Counter[str] = field(default_factory=Counter)

    def ok(self, kind: str, seconds: float) -> None:
        self.latencies.setdefault(kind, []).append(seconds)

    def requests(self) -> int:
        return sum(len(v) for v in self.latencies.values()) + sum(self.errors.values())


class _Wrong(Exception):
    """An answer that is not what the device should get."""


@dataclass
class _Device:
    index: int
    token: str
    updater: bool
    attester: bool
    etag: str | None = None
    installed: bool = False
    polls: int = 0


class _Run:
    def __init__(
        self, session: aiohttp.ClientSession, url: str, fleet: Fleet, version: str, bare: bool
    ) -> None:
        self.session, self.url, self.fleet, self.bare = session, url, fleet, bare
        self.version = version  # of each class's newest release (bench_fleet: 1.<sequence>.0)
        self.tally = Tally()
        self.key = signing_key_from_pem(fleet.attestation_key)

    async def _get(
        self, kind: str, path: str, device: _Device, headers: dict[str, str], want: set[int]
    ) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {device.token}", **headers}
        start = time.perf_counter()
        async with self.session.get(self.url + path, headers=headers) as resp:
            body = await resp.read()
        self.tally.ok(kind, time.perf_counter() - start)
        if resp.status not in want:
            raise _Wrong(f"{kind} answered {resp.status}: {body[:120]!r}")
        return resp.status, body

    async def _post(
        self, kind: str, path: str, device: _Device, body: bytes | None, media: str | None
    ) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {device.token}"}
        if media:
            headers["Content-Type"] = media
        start = time.perf_counter()
        async with self.session.post(self.url + path, data=body, headers=headers) as resp:
            answer = await resp.read()
        self.tally.ok(kind, time.perf_counter() - start)
        if resp.status not in (200, 201):
            raise _Wrong(f"{kind} answered {resp.status}: {answer[:160]!r}")
        return resp.status, answer

    async def poll(self, device: _Device) -> bytes | None:
        if self.bare:
            await self._get("poll", "/json", device, {}, {200})
            return None
        headers = {"If-None-Match": f'"{device.etag}"'} if device.etag else {}
        # 204: nothing newer than what the device installed and reported
        want = {200, 204, 304} if device.installed else {200, 304}
        status, body = await self._get("poll", "/v1/device/update", device, headers, want)
        if status == 200:
            digest, _ = self.fleet.newest[device.index % len(self.fleet.newest)]
            if parse_envelope(body).digest.hex != digest:
                raise _Wrong("a poll handed out another envelope than the class's newest")
            device.etag = digest
            return body
        return None

    async def install(self, device: _Device, envelope: bytes) -> bytes:
        """Download with one resume, check the digest, report the install; the image."""
        _, sha = self.fleet.newest[device.index % len(self.fleet.newest)]
        half, path = PAYLOAD_BYTES // 2, f"/v1/payloads/{sha}"
        _, first = await self._get(
            "download", path, device, {"Range": f"bytes=0-{half - 1}"}, {206}
        )
        _, rest = await self._get(
            "download", path, device, {"Range": f"bytes={half}-", "If-Range": f'"{sha}"'}, {206}
        )
        image = first + rest
        if hashlib.sha256(image).hexdigest() != sha:
            raise _Wrong("a resumed download does not hash to the payload's digest")
        report = build_report(
            reference_uri="", manifest_digest=parse_envelope(envelope).digest,
            result=ReportResult(success=True),
        )  # fmt: skip
        await self._post("report", "/v1/device/reports", device, report,
                         "application/suit-report+cose")  # fmt: skip
        self.tally.done["installs"] += 1
        return image

    async def attest(self, device: _Device, image: bytes) -> None:
        _, body = await self._post("attest", "/v1/device/attestation/challenge", device, None, None)
        nonce_b64 = _json_field(body, "nonce")
        nonce = base64.urlsafe_b64decode(nonce_b64 + "=" * (-len(nonce_b64) % 4))
        digest = hashlib.sha256(image).digest()
        component = _cbor.dumps({1: ["firmware", [self.version]], 2: [-16, digest]})
        cwt = sign1(_cbor.dumps({10: nonce, 273: [[295, component]]}), self.key)
        _, verdict = await self._post(
            "attest", "/v1/device/attestation/evidence", device, cwt, "application/eat+cwt"
        )
        if _json_field(verdict, "status") != "affirming":
            raise _Wrong(f"attestation of the installed image gave {verdict[:200]!r}")
        self.tally.done["affirming verdicts"] += 1

    async def live(
        self, device: _Device, deadline: float, interval: float, rng: random.Random
    ) -> None:
        loop = asyncio.get_running_loop()

        async def pause(seconds: float) -> None:
            await asyncio.sleep(max(0.0, min(seconds, deadline - loop.time())))

        await pause(rng.uniform(0, interval))  # devices come online spread out
        image: bytes | None = None
        while loop.time() < deadline:
            try:
                envelope = await self.poll(device)
                device.polls += 1
                if envelope is not None and device.updater and not device.installed:
                    image = await self.install(device, envelope)
                    device.installed = True
                    if device.attester:
                        await self.attest(device, image)
                elif image is not None and device.attester and device.polls % ATTEST_EVERY == 0:
                    await self.attest(device, image)
            except (aiohttp.ClientError, TimeoutError, _Wrong) as exc:
                self.tally.errors[str(exc)[:160] or type(exc).__name__] += 1
            await pause(interval * rng.uniform(1 - JITTER, 1 + JITTER))


def _json_field(body: bytes, name: str) -> str:
    value = json.loads(body).get(name)
    if not isinstance(value, str):
        raise _Wrong(f"the answer has no {name!r}: {body[:160]!r}")
    return value


def _proc(pid: int) -> tuple[int, int]:
    """(RSS bytes, open file descriptors) of a process."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


async def _simulate(
    server: Server, fleet: Fleet, devices: int, seconds: float, releases: int, bare: bool
) -> tuple[Tally, list[tuple[float, int, int]], float]:
    rng = random.Random(2026)  # which devices update and attest, and their jitter
    fleet_devices = [
        _Device(i, fleet.tokens[i], updater=i < max(1, round(devices * UPDATERS)),
                attester=i < max(1, round(devices * ATTESTERS)))
        for i in range(devices)
    ]  # fmt: skip
    samples: list[tuple[float, int, int]] = []
    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        run = _Run(session, server.url, fleet, f"1.{releases}.0", bare)
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + seconds

        async def sample() -> None:
            while loop.time() < deadline:
                samples.append((loop.time() - start, *_proc(server.proc.pid)))
                await asyncio.sleep(SAMPLE_SECONDS)

        sampler = asyncio.create_task(sample())
        interval = _interval(seconds)
        await asyncio.gather(*(run.live(d, deadline, interval, rng) for d in fleet_devices))
        elapsed = loop.time() - start
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    samples.append((elapsed, *_proc(server.proc.pid)))
    return run.tally, samples, elapsed


def _interval(seconds: float) -> float:
    """INTERVAL, shortened for short runs so that every device polls several times."""
    return min(INTERVAL, seconds / 5)


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] * 1e3 if ordered else math.nan


def run(devices: int, seconds: float, quick: bool) -> Report:
    """Seed a fleet, run the devices against suitsrv, then (polling only) against the bare
    server; every subprocess is stopped before returning."""
    releases_per_class = 2
    plan = Plan(devices, 10, releases_per_class, 1, poll_seconds=1, paced_seconds=1,
                download_rounds=0, download_seconds=0, payload_bytes=2 << 20,
                small_payload_bytes=1 << 20, release_payload_bytes=PAYLOAD_BYTES,
                attesting=max(1, round(devices * ATTESTERS)))  # fmt: skip
    report = Report([], [], [])
    started = time.perf_counter()
    previous = os.sched_getaffinity(0)
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="suitsrv-load-")))
        stack.callback(os.sched_setaffinity, 0, previous)
        os.sched_setaffinity(0, {GENERATOR_CPU})
        print(f"  seeding {devices:,} devices", file=sys.stderr)
        fleet = seed(work / "data", plan)
        ours = stack.enter_context(candidate(work / "data", work / "suitsrv.log"))
        print(f"  {devices:,} devices for {seconds:g} s against {ours.name}", file=sys.stderr)
        tally, samples, elapsed = asyncio.run(
            _simulate(ours, fleet, devices, seconds, releases_per_class, bare=False)
        )
        ours.stop()
        bare_seconds = max(10.0, seconds * BASELINE_SHARE)
        _, big = fleet.payloads[plan.payload_bytes]
        bare = stack.enter_context(baseline(big, work / "baseline.log"))
        print(f"  polling only for {bare_seconds:g} s against {bare.name}", file=sys.stderr)
        bare_tally, _, _ = asyncio.run(
            _simulate(bare, fleet, devices, bare_seconds, releases_per_class, bare=True)
        )
    polls, bare_polls = tally.latencies.get("poll", []), bare_tally.latencies.get("poll", [])
    interval = _interval(seconds)
    offered = devices / interval
    requests = tally.requests()
    rss = [s[1] for s in samples]
    fds = [s[2] for s in samples]
    # The reference sample: the first taken after two poll intervals, when every device is
    # online and the generator's connection pool has grown (then the quick run's first sample).
    warm = next((x for x in samples if x[0] >= 2 * interval), samples[min(1, len(samples) - 1)])
    bare_name = "bare aiohttp JSON route, same devices polling"
    report.samples.extend([
        Sample("load: polls/s", len(polls) / elapsed, "req/s",
               f"offered ({devices:,} devices / {interval:g} s)", offered, "~1 (keeps up)"),
        *(Sample(f"load.poll {p}", _pct(polls, p), "ms", bare_name, _pct(bare_polls, p),
                 "value <25 ms" if p == 99 else None) for p in (50, 95, 99)),
        Sample("load: errors", sum(tally.errors.values()), "requests", "requests sent",
               requests, "0"),
        Sample("load: server RSS at the end", rss[-1] / (1 << 20), "MiB",
               f"RSS at {warm[0]:.0f} s", warm[1] / (1 << 20), "~1 (flat)"),
        Sample("load: server open files, most seen", max(fds), "files",
               f"its files at start ({fds[0]}) + one per client connection ({CONNECTIONS})",
               fds[0] + CONNECTIONS, "<=1 (bounded)"),
    ])  # fmt: skip
    kinds = ", ".join(
        f"{k} {len(v):,} (p99 {_pct(v, 99):.1f} ms)" for k, v in sorted(tally.latencies.items())
    )
    report.method.extend([
        f"fleet: {devices:,} devices seeded directly, 10 classes of {releases_per_class} signed "
        f"releases with {PAYLOAD_BYTES // 1024} KiB payloads; `suitsrv serve` (access log off) "
        f"on CPU {SERVER_CPU}, the devices as aiohttp tasks of one process on CPU "
        f"{GENERATOR_CPU} sharing {CONNECTIONS} keep-alive connections",
        f"devices: poll every {interval:g} s +-{JITTER:.0%} (If-None-Match once they hold "
        f"an envelope); {UPDATERS:.0%} install (two Range requests, the second resuming with "
        f"If-Range; SHA-256 checked; SUIT_Report), {ATTESTERS:.0%} also attest with an EAT "
        f"(challenge, evidence, affirming verdict checked), again every {ATTEST_EVERY} polls",
        f"ran {elapsed:.0f} s against suitsrv, then {bare_seconds:g} s of the same polls "
        f"against the bare route; requests: {kinds}",
        f"wall time: {time.perf_counter() - started:.0f} s",
    ])  # fmt: skip
    report.notes.append(
        f"completed: {', '.join(f'{k} {v:,}' for k, v in sorted(tally.done.items())) or 'none'}"
    )
    every = max(1, len(samples) // 12)
    shown = samples[::every] + ([samples[-1]] if (len(samples) - 1) % every else [])
    report.notes.append(
        "server RSS / open files over time: "
        + "; ".join(f"{t:.0f} s {r / (1 << 20):.0f} MiB {f}" for t, r, f in shown)
        + f" (open files include up to {CONNECTIONS} client connections)"
    )
    for reason, count in tally.errors.most_common(5):
        report.notes.append(f"error x{count}: {reason}")
    if quick:
        report.notes.append("quick run: too short for the RSS and open-file trend to mean much")
    return report
