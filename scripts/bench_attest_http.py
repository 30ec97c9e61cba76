"""The attest suite over HTTP: ``suitsrv serve`` on a fresh data directory answering challenge +
evidence from devices whose agent quotes each nonce on the swtpm, against the bare aiohttp JSON
route driven by the same aiohttp client."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import bench_common
import bench_load
import bench_server
from bench_common import GENERATOR_CPU, SERVER_CPU, Report, Sample
from bench_load import Load
from bench_server import Server
from bench_swtpm import AK_TEMPLATES, PCR, Swtpm

from attest.ear import verify_ear_jwt
from attest.ear_claims import Status
from attest.keys import key_from_jwk
from manifests import (
    Algorithm,
    SigningKey,
    build_manifest,
    build_report,
    generate_signing_key,
    load_spec,
    parse_envelope,
    public_pem,
    sign,
)
from manifests.report import ReportResult
from suitsrv import accounts
from suitsrv.store import Role, SqliteStore

if TYPE_CHECKING:  # bench_attest imports this module
    from bench_attest import Plan

# HTTP: one release of one image, published, which every device reports installing.
HTTP_FIRMWARE = b"thermostat firmware 1.5.0 " * 400
CLASS_NAME = "thermostat-v2"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


async def _seed(data_dir: Path, ak: bytes, devices: int) -> tuple[str, list[str], SigningKey]:
    """A vendor with an ES256 anchor and a token, and ``devices`` devices enrolled with the AK
    (one swtpm, so one AK for all; the server parses a device's AK per request all the same)."""
    now, vendor = time.time(), bench_common.VENDOR
    key = generate_signing_key(Algorithm.ES256)
    store = SqliteStore(data_dir)
    try:
        await accounts.add_vendor(store, vendor, vendor_domains=[bench_common.DOMAIN],
                                  anchors=[{"pem": public_pem(key).decode()}], now=now)  # fmt: skip
        token, _ = await accounts.issue_credential(store, Role.VENDOR, vendor, now=now)
        keys = {"ak_public": base64.b64encode(ak).decode()}
        devices_ = [
            await accounts.register_device(store, f"tpm-{i:03d}", vendor, class_name=CLASS_NAME,
                                           keys=keys, now=now)
            for i in range(devices)
        ]  # fmt: skip
    finally:
        store.close()
    return token, [t for _, t in devices_], key


async def _publish(url: str, vendor: str, key: SigningKey, devices: list[str]) -> str:
    """The payload and a signed manifest naming it over the vendor API, then a success report
    from every device, so the server has reference values; returns the manifest digest."""
    sha = hashlib.sha256(HTTP_FIRMWARE).hexdigest()
    spec = f"""
vendor-domain = "{bench_common.DOMAIN}"
class-name = "{CLASS_NAME}"
sequence-number = 4
version = "1.4.0"
[[component]]
id = ["firmware"]
digest = "{sha}"
size = {len(HTTP_FIRMWARE)}
uri = "https://updates.example/v1/payloads/{sha}"
"""
    envelope = sign(build_manifest(load_spec(spec)), [key])
    digest = parse_envelope(envelope).digest
    report = build_report(reference_uri="", manifest_digest=digest,
                          result=ReportResult(success=True))  # fmt: skip
    posts = [(f"/v1/vendor/payloads/{sha}", vendor, HTTP_FIRMWARE, "application/octet-stream"),
             ("/v1/vendor/manifests", vendor, envelope, "application/suit-envelope+cose"),
             *(("/v1/device/reports", t, report, "application/suit-report+cose")
               for t in devices)]  # fmt: skip
    async with aiohttp.ClientSession() as session:
        for path, token, body, kind in posts:
            method = "PUT" if path.startswith("/v1/vendor/payloads/") else "POST"
            if path == "/v1/device/reports":  # a device reports what its update poll handed it
                auth = {"Authorization": f"Bearer {token}"}
                async with session.get(url + "/v1/device/update", headers=auth) as poll:
                    if poll.status != 200:
                        raise RuntimeError(f"poll: {poll.status} {await poll.text()}")
            headers = {"Authorization": f"Bearer {token}", "Content-Type": kind}
            async with session.request(method, url + path, data=body, headers=headers) as resp:
                if resp.status not in (200, 201):
                    raise RuntimeError(f"{method} {path}: {resp.status} {await resp.text()}")
    return digest.hex


class Agent:
    """The device side of one challenge: quote the nonce on the swtpm, build the evidence."""

    def __init__(self, tpm: Swtpm, handle: Any, log: bytes, pcr16: bytes) -> None:
        self.tpm, self.handle, self.log = tpm, handle, _b64(log)
        self.pcrs = {"sha256": {str(PCR): pcr16.hex()}}

    def evidence(self, nonce: str) -> bytes:
        attest, signature = self.tpm.quote(self.handle, _unb64(nonce))
        return json.dumps({
            "format": "tpm2-quote", "nonce": nonce, "quote": _b64(attest),
            "signature": _b64(signature), "pcrs": self.pcrs, "event_log": self.log,
        }).encode()  # fmt: skip


@dataclass
class Tally:
    """What one run of device loops saw, in seconds (Load keeps only the evidence request's)."""

    evidence: list[float] = field(default_factory=list)
    challenge: list[float] = field(default_factory=list)
    quote: list[float] = field(default_factory=list)  # client side: the swtpm and its queue
    failed: list[str] = field(default_factory=list)


async def _device_loops(
    url: str, tokens: list[str], seconds: int, agent: Agent, tpm: ThreadPoolExecutor
) -> tuple[Tally, float]:
    """Each token is a device looping challenge → quote → evidence until the deadline; an
    attestation counts when its evidence is answered 200 and affirming."""
    loop = asyncio.get_running_loop()
    tally = Tally()
    connector = aiohttp.TCPConnector(limit=len(tokens))
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        deadline = loop.time() + seconds

        async def device(token: str) -> None:
            auth = {"Authorization": f"Bearer {token}"}
            as_json = {**auth, "Content-Type": "application/json"}
            while loop.time() < deadline:
                t0 = time.perf_counter()
                try:
                    async with session.post(f"{url}/v1/device/attestation/challenge",
                                            headers=auth) as resp:  # fmt: skip
                        if resp.status != 201:
                            raise RuntimeError(f"challenge answered {resp.status}")
                        nonce = (await resp.json())["nonce"]
                    t1 = time.perf_counter()
                    body = await loop.run_in_executor(tpm, agent.evidence, nonce)
                    t2 = time.perf_counter()
                    async with session.post(f"{url}/v1/device/attestation/evidence", data=body,
                                            headers=as_json) as resp:  # fmt: skip
                        answer, status = await resp.read(), resp.status
                    t3 = time.perf_counter()
                except (aiohttp.ClientError, TimeoutError, RuntimeError) as exc:
                    tally.failed.append(repr(exc))
                    continue
                verdict = json.loads(answer) if status == 200 else {}
                if verdict.get("status") != "affirming":
                    tally.failed.append(f"{status} {verdict.get('reasons') or answer[:200]!r}")
                    continue
                tally.challenge.append(t1 - t0)
                tally.quote.append(t2 - t1)
                tally.evidence.append(t3 - t2)

        start = time.perf_counter()
        await asyncio.gather(*(device(t) for t in tokens))
        return tally, time.perf_counter() - start


def _per_cpu(loads: list[Load]) -> float:
    """Operations per second of the server process's own CPU time (median over the runs)."""
    return statistics.median(x.rate / x.server_cpu for x in loads if x.server_cpu > 0)


def _ms(values: list[float], p: float) -> float:
    return bench_load._percentile(sorted(values), p) * 1e3


@dataclass
class Candidate:
    """The attesting devices as a bench_load measure; keeps what Load has no room for."""

    url: str
    agent: Agent
    tpm: Swtpm
    executor: ThreadPoolExecutor
    extra: list[tuple[float, float, float]] = field(default_factory=list)  # per run
    failed: list[str] = field(default_factory=list)

    def run(self, tokens: list[str], seconds: int) -> Load:
        cpu, swtpm, start = time.process_time(), self.tpm.cpu_seconds(), time.perf_counter()
        tally, elapsed = asyncio.run(
            _device_loops(self.url, tokens, seconds, self.agent, self.executor)
        )
        wall = time.perf_counter() - start
        if not tally.evidence:
            raise RuntimeError(f"no attestation was affirmed: {tally.failed[:3]}")
        self.failed += tally.failed
        swtpm_cores = (self.tpm.cpu_seconds() - swtpm) / wall
        self.extra.append((_ms(tally.challenge, 50), _ms(tally.quote, 50), swtpm_cores))
        return Load(len(tally.evidence), elapsed, len(tally.failed), _ms(tally.evidence, 50),
                    _ms(tally.evidence, 95), _ms(tally.evidence, 99),
                    (time.process_time() - cpu) / wall)  # fmt: skip


async def _check(ours: Server, bare: Server, token: str, agent: Agent) -> int:
    """One attestation end to end, its EAR verified with the published JWKS (a fast wrong answer
    means nothing), and the bare route's JSON; returns the EAR's length."""
    auth = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as session:
        url = f"{ours.url}/v1/device/attestation/challenge"
        async with session.post(url, headers=auth) as resp:
            nonce = (await resp.json())["nonce"]
        url = f"{ours.url}/v1/device/attestation/evidence"
        headers = {**auth, "Content-Type": "application/json"}
        async with session.post(url, data=agent.evidence(nonce), headers=headers) as resp:
            verdict = await resp.json()
        if verdict.get("status") != "affirming":
            raise RuntimeError(f"the first attestation was not affirmed: {verdict}")
        async with session.get(f"{ours.url}/.well-known/jwks.json") as resp:
            key = key_from_jwk((await resp.json())["keys"][0], name="suitsrv")
        now, nonce_bytes = int(time.time()), _unb64(nonce)
        ear = verify_ear_jwt(verdict["ear"], key, now=now, expected_nonce=nonce_bytes)
        (submod,) = ear.submods.values()
        if submod.status is not Status.AFFIRMING or submod.vector.executables != 2:
            raise RuntimeError(f"the EAR does not affirm the firmware: {submod}")
        async with session.get(f"{bare.url}/json") as resp:
            if resp.status != 200 or await resp.json() != bench_common.BASELINE_JSON:
                raise RuntimeError(f"the bare JSON route answered {resp.status}")
    return len(verdict["ear"])


def _serve(data_dir: Path, work: Path) -> Server:
    """``suitsrv serve`` as bench_server.candidate starts it, with the access log turned off in
    a config file: ``--data-dir`` alone makes serve read no SUITSRV_* variable but that one, so
    the SUITSRV_ACCESS_LOG=0 that bench_server.Server sets is lost."""
    config = work / "suitsrv.toml"
    # The swtpm devices measure into PCR 16 (resettable): let the images affirm (ADR 0006).
    config.write_text(
        f"data-dir = {json.dumps(str(data_dir))}\naccess-log = false\n"
        "[attestation]\nallow-resettable-pcrs = true\n"
    )
    port = bench_common._free_port()
    argv = [str(Path(sys.executable).with_name("suitsrv")), "serve", "--config", str(config),
            "--listen", f"127.0.0.1:{port}"]  # fmt: skip
    return Server("suitsrv serve", argv, port, "/healthz", work / "suitsrv.log")


def http(tpm: Swtpm, plan: Plan, work: Path, report: Report) -> None:
    handle, ak = tpm.create_ak(AK_TEMPLATES["ECC P-256"])
    data_dir, payload = work / "data", work / "payload.bin"
    vendor, tokens, key = asyncio.run(_seed(data_dir, ak, plan.devices))
    payload.write_bytes(HTTP_FIRMWARE)
    rounds, med = plan.http_rounds, bench_load._median
    with contextlib.ExitStack() as stack:
        stack.callback(tpm.tpm.flush_context, handle)
        executor = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="swtpm"))
        ours = stack.enter_context(_serve(data_dir, work))
        bare = stack.enter_context(bench_server.baseline(payload, work / "baseline.log"))
        manifest = asyncio.run(_publish(ours.url, vendor, key, tokens))
        agent = Agent(tpm, handle, tpm.measure([(b"firmware", HTTP_FIRMWARE)], None), tpm.pcr16())
        ear_length = asyncio.run(_check(ours, bare, tokens[0], agent))
        devices = Candidate(ours.url, agent, tpm, executor)
        generator = bench_load.AiohttpLoad(tokens)
        bare_url = f"{bare.url}/json"

        def measure(clients: list[str], seconds: int) -> Callable[[Server], Load]:
            def run(server: Server) -> Load:
                if server is ours:
                    return devices.run(clients, seconds)
                return generator.run(bare_url, seconds, len(clients))

            return run

        for server in (ours, bare):  # warm up both servers, SQLite's and the OS's caches
            measure(tokens, 1)(server)
        devices.extra.clear()
        print(f"  HTTP: {rounds} x {plan.http_seconds} s per side, {plan.devices} devices",
              file=sys.stderr)  # fmt: skip
        sat = bench_load._interleaved(
            rounds, [ours, bare], measure(tokens, plan.http_seconds), "/s"
        )
        print(f"  HTTP: {rounds} x {plan.unloaded_seconds} s per side, 1 device", file=sys.stderr)
        one = bench_load._interleaved(
            rounds, [ours, bare], measure(tokens[:1], plan.unloaded_seconds), "/s"
        )
        # The same route under wrk, only to tell a client-bound baseline from a server-bound one.
        wrk, wrk_rate = shutil.which("wrk"), 0.0
        if wrk and med(sat[bare.name], "generator_cpu") > 0.8:
            load = bench_load.Wrk(wrk, work, tokens)
            wrk_rate = load.run(bare_url, plan.http_seconds, plan.devices).rate
    a, b, a1, b1 = sat[ours.name], sat[bare.name], one[ours.name], one[bare.name]
    bare_name = f"bare aiohttp GET /json, same aiohttp client, {plan.devices} connections"
    sat_name = f"service.attest {plan.devices} devices, saturated"
    one_name, one_bare = "service.attest 1 device", "same, 1 connection"
    report.samples.extend([
        Sample(f"{sat_name}: attestations/s (challenge + evidence + EAR) vs requests/s",
               med(a, "rate"), "ops/s", bare_name, med(b, "rate"), ">=0.25"),
        # What the server could do on its core alone: the rate above is capped by the client
        # core (swtpm quotes, tpm2-pytss, the aiohttp client; docs/adr/0007).
        Sample(f"{sat_name}: attestations per server CPU second vs requests per server CPU "
               "second", _per_cpu(a), "ops/s", bare_name, _per_cpu(b), None),
        *(Sample(f"{sat_name}: evidence request {p}", med(a, f"{p}_ms"), "ms", bare_name,
                 med(b, f"{p}_ms"), None) for p in ("p50", "p99")),
        Sample(f"{one_name}: attestations/s vs requests/s", med(a1, "rate"), "ops/s", one_bare,
               med(b1, "rate"), None),
        *(Sample(f"{one_name}: evidence request {p}", med(a1, f"{p}_ms"), "ms", one_bare,
                 med(b1, f"{p}_ms"), None) for p in ("p50", "p99")),
    ])  # fmt: skip
    report.method.extend([
        f"HTTP: `suitsrv serve` (access log off) on a fresh data directory: {plan.devices} "
        "devices enrolled with the swtpm's ECC P-256 AK (`ak_public`), one release of one image "
        f"published over HTTP (manifest {manifest[:12]}…) and reported installed by every device; "
        "the baseline is bench_service's bare aiohttp app (its web.json_response route); both "
        f"pinned to CPU {SERVER_CPU}",
        f"HTTP client: aiohttp {aiohttp.__version__} in this process on CPU {GENERATOR_CPU}, one "
        "connection per device; a device loops POST challenge → quote of that nonce on the swtpm "
        f"(on CPU {GENERATOR_CPU}, one quote at a time, in a worker thread) → POST evidence, and "
        "an attestation counts when that answers 200 affirming; latency is the evidence "
        "request's (appraise_tpm, an ES256 EAR signed, the verdict stored in SQLite); "
        f"{rounds} interleaved rounds of {plan.http_seconds} s ({plan.devices} devices) and "
        f"{plan.unloaded_seconds} s (1 device) per side, median per side; the first "
        f"attestation checked end to end: affirming, its {ear_length}-character EAR verified "
        "with the JWKS",
    ])  # fmt: skip
    # devices.extra: (challenge p50 ms, quote p50 ms, swtpm cores) per run, saturated runs first
    busy = [statistics.median(x[i] for x in devices.extra[:rounds]) for i in range(3)]
    idle = [statistics.median(x[i] for x in devices.extra[rounds:]) for i in range(2)]
    report.notes.extend([
        f"cores busy, {plan.devices} devices: suitsrv {bench_load._cores(a)}, swtpm "
        f"{busy[2]:.2f}; bare {bench_load._cores(b)}",
        f"cores busy, 1 device: suitsrv {bench_load._cores(a1)}; "
        f"bare {bench_load._cores(b1)}",
        f"per attestation, medians: {plan.devices} devices, challenge request p50 "
        f"{busy[0]:.2f} ms, quote p50 {busy[1]:.2f} ms (client side: the swtpm and the queue "
        f"for it); 1 device, challenge p50 {idle[0]:.2f} ms, quote p50 {idle[1]:.2f} ms",
        "the rate ratio compares unlike operations on purpose: an attestation is two requests, "
        "an appraisal, an ES256 EAR and a SQLite write, the baseline one bare request",
        "saturated latency is a closed loop's: p50 is about devices / rate (Little's law)",
    ])  # fmt: skip
    if wrk_rate:
        report.notes.append(
            f"the aiohttp client used {med(b, 'generator_cpu'):.2f} of its core against the bare "
            f"route, so that baseline is the client's limit: wrk (1 thread, {plan.devices} "
            f"connections) drove the same route at {wrk_rate:,.0f} req/s, which would make the "
            f"rate ratio {med(a, 'rate') / wrk_rate:.3f}"
        )
    if devices.failed:
        report.notes.append(
            f"{len(devices.failed)} attestations failed or were not affirmed, e.g. "
            f"{devices.failed[0][:200]}"
        )
