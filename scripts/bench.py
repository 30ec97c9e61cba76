"""Benchmarks: each figure is a rate measured against a baseline in the same run, on one core.

Run through ``scripts/bench {manifests,all} [--quick] [--no-write] [--json-only]``. Every
figure prints as one JSON line, then a summary table; the figures replace this suite's block
in BENCHMARKS.md. Nothing here asserts a time (STYLE.md: benchmarks are not tests); targets
are printed for a reader to compare.

Candidate and baseline run in interleaved rounds (which goes first alternates) and each side
reports the median of its per-round rates, so drift in clock speed or load hits both alike.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

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
scripts/bench all            # every suite, ~1-2 min each; rewrites the blocks below
scripts/bench manifests --quick --no-write   # < 60 s, prints only
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


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    unit: str
    baseline: str
    baseline_value: float
    ratio: float
    target: str | None


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


def bench_manifests(settings: Settings) -> list[Figure]:
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
    return [
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


# Later suites (attest, service) register here; `all` runs them in this order.
SUITES: dict[str, Callable[[Settings], list[Figure]]] = {"manifests": bench_manifests}


def _machine() -> dict[str, str]:
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
        "pinned": f"CPU {CPU}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "openssl": backend.openssl_version_text(),
    }


def _section(suite: str, figures: list[Figure], command: str, settings: Settings) -> str:
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()
    lines = [
        f"## {suite}",
        "",
        f"- date: {now}",
        f"- command: `{command}`",
        f"- rounds: {settings.rounds} x {settings.seconds:g} s per side, median per side",
        *(f"- {k}: {v}" for k, v in _machine().items()),
        "",
        "| figure | ops/s | baseline | baseline ops/s | ratio | target |",
        "|---|---:|---|---:|---:|---|",
    ]
    for f in figures:
        lines.append(
            f"| {f.name} | {f.value:,.0f} | {f.baseline} | {f.baseline_value:,.0f}"
            f" | {f.ratio:.3f} | {f.target or '-'} |"
        )
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
    rows = [f"{'figure':<{width}}  {'ops/s':>10}  {'baseline/s':>10}  {'ratio':>7}  target"]
    for f in figures:
        rows.append(
            f"{f.name:<{width}}  {f.value:>10,.0f}  {f.baseline_value:>10,.0f}"
            f"  {f.ratio:>7.3f}  {f.target or '-'}"
        )
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.split("\n")[0])
    parser.add_argument("suite", choices=[*SUITES, "all"])
    parser.add_argument("--quick", action="store_true", help="a short run (< 60 s in all)")
    parser.add_argument("--no-write", action="store_true", help="leave BENCHMARKS.md alone")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON lines")
    args = parser.parse_args(argv)
    settings = Settings(rounds=5, seconds=0.2) if args.quick else Settings(rounds=7, seconds=1.0)
    # One core: the baseline and the candidate share it, and no thread migrates mid-round.
    os.sched_setaffinity(0, {CPU})
    print(f"bench: pinned to CPU {CPU} of {os.cpu_count()}", file=sys.stderr)
    command = shlex.join(["scripts/bench", *argv])
    for suite in SUITES if args.suite == "all" else [args.suite]:
        print(f"bench: {suite}", file=sys.stderr)
        figures = SUITES[suite](settings)
        for figure in figures:
            print(json.dumps(asdict(figure)), flush=True)
        if not args.json_only:
            print(_table(figures))
        if not args.no_write:
            _write(suite, _section(suite, figures, command, settings))
            print(f"bench: wrote the {suite} block of {REPORT.name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
