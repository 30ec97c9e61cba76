"""Benchmarks: each figure is a rate measured against a baseline in the same run, on one core.

Run through ``scripts/bench {manifests,service,attest,growth,load,all} [--quick] [--no-write]
[--json-only] [--devices N --seconds S]``. Every figure prints as one JSON line, then a summary
table; the figures replace this suite's block in BENCHMARKS.md. Nothing here asserts a time
(STYLE.md: benchmarks are not tests); targets are printed for a reader to compare.

Candidate and baseline run in interleaved rounds (which goes first alternates) and each side
reports the median of its per-round rates, so drift in clock speed or load hits both alike.
The service suite (bench_service.py) runs servers as subprocesses: server on one core, load
generator on another.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

from manifests.build import build_manifest, sign
from manifests.cose import (
    Algorithm,
    CoseMessage,
    generate_signing_key,
    parse_cose,
    public_pem,
    verify_cose,
)
from manifests.digest import Digest
from manifests.parse import parse_envelope
from manifests.spec import load_spec
from manifests.verify import verify_envelope

if TYPE_CHECKING:
    from bench_common import Report

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "BENCHMARKS.md"
CPU = 0
INTRO = """# Benchmarks

Figures written by `scripts/bench`. Each is a rate (operations per second, one process pinned
to one core) next to a **baseline measured in the same run**, interleaved round by round, so
the ratio means something across machines even where the absolute rates do not. A target, where
there is one, applies to the ratio. These figures are never asserted in tests (STYLE.md:
benchmarks are not tests); rerun and compare.

```sh
scripts/bench all            # every suite; rewrites the blocks below (load alone: 5 min)
scripts/bench manifests --quick --no-write   # < 60 s, prints only
scripts/bench growth         # poll cost with 10k, 100k and 1M registered devices
scripts/bench load --devices 10000 --seconds 300   # simulated devices: poll, resume, attest
```
"""

# The envelope of tests/test_manifests.py: one component, install and text severed.
IMAGE = b"firmware image v1" * 10
SPEC = f"""
vendor-domain = "example.com"
class-name = "thermostat-v2"
sequence-number = 7
version = "1.2.0"
severable = ["install", "text"]

[text]
description = "Thermostat firmware"

[[component]]
id = ["firmware"]
digest = "{Digest.of(IMAGE).hex}"
size = {len(IMAGE)}
uri = "https://fw.example.com/thermostat/1.2.0.bin"
"""


@dataclass(frozen=True)
class Settings:
    rounds: int
    seconds: float  # per side per round
    quick: bool = False  # suites with their own durations take their short plan
    generator: str = "auto"  # service suite: auto (wrk if found or installable), wrk, aiohttp
    devices: int | None = None  # load suite: simulated devices (default 10k; quick 200)
    duration: float | None = None  # load suite: seconds (default 300; quick 15)


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    unit: str
    baseline: str
    baseline_value: float
    ratio: float
    target: str | None


@dataclass(frozen=True)
class Outcome:
    """A suite's figures and how they were taken, for its block of BENCHMARKS.md."""

    figures: list[Figure]
    method: list[str]  # "- " lines after the command
    pinned: str = f"CPU {CPU}"
    notes: list[str] = field(default_factory=list)  # "- " lines after the table


Op = Callable[[], object]


def _rate(op: Op, seconds: float) -> float:
    """Operations per second of ``op`` over about ``seconds``, timed in batches of ~10 ms."""
    batch, elapsed = 1, 0.0
    while True:  # calibrate: grow the batch until one takes ~10 ms
        start = time.perf_counter()
        for _ in range(batch):
            op()
        elapsed = time.perf_counter() - start
        if elapsed >= 0.01:
            break
        batch *= 2
    done, total = 0, 0.0
    while total < seconds:
        start = time.perf_counter()
        for _ in range(batch):
            op()
        total += time.perf_counter() - start
        done += batch
    return done / total


def _compare(
    name: str, op: Op, baseline: str, base: Op, settings: Settings, target: str | None
) -> Figure:
    for fn in (op, base):  # warm up caches, the allocator and lazy imports
        _rate(fn, min(0.2, settings.seconds))
    ours: list[float] = []
    theirs: list[float] = []
    for i in range(settings.rounds):
        order = [(op, ours), (base, theirs)]
        for fn, rates in order if i % 2 == 0 else order[::-1]:
            gc.collect()
            rates.append(_rate(fn, settings.seconds))
    value, base_value = statistics.median(ours), statistics.median(theirs)
    print(f"  {name}: {value:,.0f}/s vs {base_value:,.0f}/s", file=sys.stderr)
    return Figure(name, value, "ops/s", baseline, base_value, value / base_value, target)


def bench_manifests(settings: Settings) -> Outcome:
    key = generate_signing_key(Algorithm.ES256)
    anchors = [key.public_anchor("bench")]
    signed = sign(build_manifest(load_spec(SPEC)), [key])
    envelope = parse_envelope(signed)
    verify_envelope(envelope, anchors)  # a benchmark of a failing path would mean nothing
    (block,) = envelope.auth_blocks
    payload = envelope.digest_raw

    # The pure crypto floor: the signature already in DER, over the exact Sig_structure
    # (RFC 9052 §4.4) our block signs; verify() raising here would mean the bytes differ.
    public = anchors[0].public_key
    assert isinstance(public, ec.EllipticCurvePublicKey)
    tbs = cbor2.dumps(["Signature1", block.protected, b"", payload])
    der = utils.encode_dss_signature(
        int.from_bytes(block.tag[:32], "big"), int.from_bytes(block.tag[32:], "big")
    )
    ecdsa = ec.ECDSA(hashes.SHA256())
    public.verify(der, tbs, ecdsa)
    raw_name = "cryptography ECDSA P-256 verify (DER sig, Sig_structure)"

    def raw() -> None:
        public.verify(der, tbs, ecdsa)

    def ours_cose() -> object:
        message: CoseMessage = parse_cose(block.raw)
        return verify_cose(message, anchors, detached_payload=payload)

    # pycose is the independent oracle of the tests; it verifies ES256 with python-ecdsa.
    from pycose.keys.cosekey import CoseKey
    from pycose.messages.sign1message import Sign1Message

    pycose_key = CoseKey.from_pem_public_key(public_pem(key).decode())

    def pycose_verify() -> None:
        message = Sign1Message.decode(block.raw)
        message.key = pycose_key
        if not message.verify_signature(detached_payload=payload):
            raise RuntimeError("pycose does not verify our block")

    pycose_verify()
    method = [f"rounds: {settings.rounds} x {settings.seconds:g} s per side, median per side"]
    figures = [
        _compare(
            "manifests.verify_envelope (ES256, parsed envelope)",
            lambda: verify_envelope(envelope, anchors),
            raw_name,
            raw,
            settings,
            ">=0.7",
        ),
        _compare(
            "manifests.parse_envelope+verify_envelope (bytes to verified)",
            lambda: verify_envelope(parse_envelope(signed), anchors),
            raw_name,
            raw,
            settings,
            None,
        ),
        _compare(
            "manifests.parse_envelope",
            lambda: parse_envelope(signed),
            "cbor2.loads (same bytes, no strict checks)",
            lambda: cbor2.loads(signed),
            settings,
            None,
        ),
        _compare(
            "manifests.cose parse_cose+verify_cose (detached)",
            ours_cose,
            "pycose Sign1Message.decode+verify_signature (detached)",
            pycose_verify,
            settings,
            None,
        ),
    ]
    return Outcome(figures, method)


def _outcome(report: Report, pinned: str) -> Outcome:
    """A subprocess suite's samples as figures (ratio NaN where the baseline is zero)."""
    figures = [
        Figure(s.name, s.value, s.unit, s.baseline, s.baseline_value,
               s.value / s.baseline_value if s.baseline_value else math.nan, s.target)
        for s in report.samples
    ]  # fmt: skip
    return Outcome(figures, report.method, pinned, report.notes)


def bench_service(settings: Settings) -> Outcome:
    """A running ``suitsrv serve`` against bare aiohttp: polls, downloads, peak RSS."""
    import bench_common
    import bench_service  # scripts/ is on sys.path; aiohttp and the servers only load here

    report = bench_service.run(settings.quick, settings.generator)
    server, generator = bench_common.SERVER_CPU, bench_common.GENERATOR_CPU
    return _outcome(report, f"servers on CPU {server}, load generator on CPU {generator}")


def bench_attest(settings: Settings) -> Outcome:
    """TPM quotes from a swtpm: appraisal offline (vs cryptography, Keylime) and over HTTP."""
    import bench_attest  # tpm2-pytss, swtpm and the servers load only here

    report = bench_attest.run(settings.quick, settings.rounds, settings.seconds, _rate)
    return _outcome(report, bench_attest.PINNED)


def bench_load(settings: Settings) -> Outcome:
    """N simulated devices polling, downloading with resume, reporting and attesting."""
    import bench_common
    import bench_devices

    devices = settings.devices or (200 if settings.quick else 10_000)
    seconds = settings.duration or (15.0 if settings.quick else 300.0)
    report = bench_devices.run(devices, seconds, settings.quick)
    server, generator = bench_common.SERVER_CPU, bench_common.GENERATOR_CPU
    return _outcome(report, f"server on CPU {server}, simulated devices on CPU {generator}")


def bench_growth(settings: Settings) -> Outcome:
    """Poll rate and p99 with 10k, 100k and 1M registered devices (quick: 10k and 50k)."""
    import bench_common
    import bench_growth

    report = bench_growth.run(settings.quick)
    server, generator = bench_common.SERVER_CPU, bench_common.GENERATOR_CPU
    return _outcome(report, f"servers on CPU {server}, load generator on CPU {generator}")


# Later suites register here; `all` runs them in this order.
SUITES: dict[str, Callable[[Settings], Outcome]] = {
    "manifests": bench_manifests,
    "service": bench_service,
    "attest": bench_attest,
    "growth": bench_growth,
    "load": bench_load,
}


def _machine(pinned: str) -> dict[str, str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from cryptography.hazmat.backends.openssl.backend import backend

    return {
        "platform": platform.platform(),
        "cpu": model,
        "cores": str(os.cpu_count()),
        "pinned": pinned,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "openssl": backend.openssl_version_text(),
    }


def _rates_only(figures: list[Figure]) -> bool:
    return all(f.unit == "ops/s" for f in figures)


def _number(value: float, unit: str) -> str:
    """Rates without decimals; small values (ms, MiB) with enough digits to compare."""
    text = f"{value:,.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"
    return f"{text} {unit}"


def _section(suite: str, outcome: Outcome, command: str) -> str:
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()
    rates = _rates_only(outcome.figures)
    lines = [
        f"## {suite}",
        "",
        f"- date: {now}",
        f"- command: `{command}`",
        *(f"- {line}" for line in outcome.method),
        *(f"- {k}: {v}" for k, v in _machine(outcome.pinned).items()),
        "",
        "| figure | ops/s | baseline | baseline ops/s | ratio | target |"
        if rates
        else "| figure | value | baseline | baseline value | ratio | target |",
        "|---|---:|---|---:|---:|---|",
    ]
    for f in outcome.figures:
        value, base = (
            (f"{f.value:,.0f}", f"{f.baseline_value:,.0f}")
            if rates
            else (_number(f.value, f.unit), _number(f.baseline_value, f.unit))
        )
        lines.append(
            f"| {f.name} | {value} | {f.baseline} | {base} | {f.ratio:.3f} | {f.target or '-'} |"
        )
    if outcome.notes:
        lines += ["", *(f"- {note}" for note in outcome.notes)]
    return "\n".join(lines)


def _write(suite: str, body: str) -> None:
    start, end = f"<!-- bench:{suite}:start -->", f"<!-- bench:{suite}:end -->"
    text = REPORT.read_text() if REPORT.exists() else INTRO
    block = f"{start}\n{body}\n{end}"
    head, found, rest = text.partition(start)
    if found and end in rest:
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    REPORT.write_text(text)


def _table(figures: list[Figure]) -> str:
    width = max(len(f.name) for f in figures)
    if _rates_only(figures):
        rows = [f"{'figure':<{width}}  {'ops/s':>10}  {'baseline/s':>10}  {'ratio':>7}  target"]
        for f in figures:
            rows.append(
                f"{f.name:<{width}}  {f.value:>10,.0f}  {f.baseline_value:>10,.0f}"
                f"  {f.ratio:>7.3f}  {f.target or '-'}"
            )
        return "\n".join(rows)
    rows = [f"{'figure':<{width}}  {'value':>14}  {'baseline':>14}  {'ratio':>7}  target"]
    for f in figures:
        rows.append(
            f"{f.name:<{width}}  {_number(f.value, f.unit):>14}"
            f"  {_number(f.baseline_value, f.unit):>14}  {f.ratio:>7.3f}  {f.target or '-'}"
        )
    return "\n".join(rows)


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive whole number")
    return value


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.split("\n")[0])
    parser.add_argument("suite", choices=[*SUITES, "all"])
    parser.add_argument("--quick", action="store_true", help="a short run (each suite under 60 s)")
    parser.add_argument("--no-write", action="store_true", help="leave BENCHMARKS.md alone")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON lines")
    parser.add_argument(
        "--generator", choices=["auto", "wrk", "aiohttp"], default="auto",
        help="service suite's load generator (auto: wrk, installed with apt-get as root if "
        "missing, else aiohttp's client)",
    )  # fmt: skip
    parser.add_argument("--devices", type=_positive, help="load suite: simulated devices")
    parser.add_argument("--seconds", type=_positive, help="load suite: how long they run")
    args = parser.parse_args(argv)
    if (args.devices or args.seconds) and args.suite not in ("load", "all"):
        parser.error("--devices and --seconds are for the load suite")
    rounds, seconds = (5, 0.2) if args.quick else (7, 1.0)
    settings = Settings(
        rounds, seconds, quick=args.quick, generator=args.generator, devices=args.devices,
        duration=args.seconds,
    )  # fmt: skip
    # One core: the baseline and the candidate share it, and no thread migrates mid-round.
    os.sched_setaffinity(0, {CPU})
    print(f"bench: pinned to CPU {CPU} of {os.cpu_count()}", file=sys.stderr)
    command = shlex.join(["scripts/bench", *argv])
    for suite in SUITES if args.suite == "all" else [args.suite]:
        print(f"bench: {suite}", file=sys.stderr)
        outcome = SUITES[suite](settings)
        for line in outcome.method:
            print(f"  {line}", file=sys.stderr)
        for figure in outcome.figures:
            print(json.dumps(asdict(figure)), flush=True)
        if not args.json_only:
            print(_table(outcome.figures))
            for note in outcome.notes:
                print(f"note: {note}")
        if not args.no_write:
            _write(suite, _section(suite, outcome, command))
            print(f"bench: wrote the {suite} block of {REPORT.name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
