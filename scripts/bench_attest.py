"""The ``attest`` suite: TPM quote appraisal on one core, offline and over HTTP, on real quotes.

A real swtpm (through tpm2-pytss, run as tests/swtpm.py runs it) measures two images into PCR 16
the way our devices do (extends plus a compact event log), then quotes a handful of nonces with
an ECC P-256 AK and an RSA-2048 AK, restricted signing keys under the endorsement hierarchy.

Offline, in this process on one core, interleaved rounds time ``attest.appraise_tpm`` (the quote
appraisal: signature, nonce, PCR digest, clock, log replay, reference images) and
``attest.verify_quote`` against cryptography's bare verify of the same signatures over the same
bytes; and, when Keylime is installed here or in a venv (``BENCH_KEYLIME_VENV``, by default one
under the temporary directory, created from PyPI on first use), bytes
to verdict against Keylime's ``tpm_util.checkquote`` on the same quotes, in a worker process
(of that venv) on the same core. Over HTTP, ``suitsrv serve`` on a fresh data directory (on
its own core) answers challenge + evidence from devices whose agent quotes each server-issued
nonce on the swtpm (client and swtpm on the other core), against bench_service's bare aiohttp
JSON route driven by the same aiohttp client. Nothing asserts a time (STYLE.md: benchmarks are
not tests).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench_attest_http import http
from bench_attest_offline import Rate, offline
from bench_common import GENERATOR_CPU, SERVER_CPU, Report, load_average, load_note
from bench_swtpm import Swtpm, _swtpm_version, make_quotes

PINNED = (
    f"offline: CPU 0 (the Keylime worker too); HTTP: servers on CPU {SERVER_CPU}, "
    f"client and swtpm on CPU {GENERATOR_CPU}"
)


@dataclass(frozen=True)
class Plan:
    quotes: int  # per AK, timed offline in rotation
    http_rounds: int
    http_seconds: int  # whole seconds, as bench_load's generators take them
    unloaded_seconds: int
    devices: int  # concurrent device loops when saturated, one connection each


FULL = Plan(quotes=8, http_rounds=3, http_seconds=5, unloaded_seconds=2, devices=32)
QUICK = Plan(quotes=8, http_rounds=2, http_seconds=2, unloaded_seconds=1, devices=32)


def run(quick: bool, rounds: int, seconds: float, rate: Rate) -> Report:
    """Quote on a swtpm, time offline (this process on CPU 0), then over HTTP (this process the
    client on the generator core); every subprocess is stopped before returning."""
    plan = QUICK if quick else FULL
    started = time.perf_counter()
    load_before = load_average()
    report = Report([], [], [])
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="suitsrv-attest-")))
        tpm = stack.enter_context(Swtpm(work / "swtpm", work / "swtpm.log"))
        quoted = make_quotes(tpm, plan.quotes)
        report.method.extend([
            f"quotes: swtpm {_swtpm_version()} through tpm2-pytss; PCR 16 (SHA-256) extended "
            "with 2 images, logged in a compact event log; per AK (ECC P-256 ECDSA-SHA256, "
            "RSA-2048 RSASSA-SHA256; restricted signing keys under the endorsement hierarchy) "
            f"{plan.quotes} quotes of 20-character nonces, timed in rotation, with the clock of "
            "an earlier quote as `previous`",
            f"offline: {rounds} interleaved rounds x {seconds:g} s per side, median per side, "
            "bench._rate's loop on both sides; every quote passes (affirming) before it is "
            "timed; appraise_tpm is the quote appraisal the targets apply to, verify_quote is "
            "shown for information",
        ])  # fmt: skip
        offline(quoted, rounds, seconds, rate, work, report)
        stack.callback(os.sched_setaffinity, 0, os.sched_getaffinity(0))
        os.sched_setaffinity(0, {GENERATOR_CPU})  # this process is the HTTP client now
        http(tpm, plan, work, report)
    report.method.append(f"wall time: {time.perf_counter() - started:.0f} s")
    report.notes.append(load_note(load_before))
    return report
