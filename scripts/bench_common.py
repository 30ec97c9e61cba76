"""What the subprocess suites (bench_service, bench_attest) share: the cores servers and load
generators are pinned to, the vendor they seed, the bare route's answer, and the shape of their
results (Sample, Report), which bench.py turns into figures."""

from __future__ import annotations

import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

# The server on one core, the load generator on another; on a one-core machine they share it.
SERVER_CPU, GENERATOR_CPU = 0, (1 if (os.cpu_count() or 1) > 1 else 0)
MIB = 1 << 20
VENDOR, DOMAIN = "acme", "acme.example"
BASELINE_JSON = {"status": "ok"}


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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def load_average() -> str:
    """The 1-minute load average now (/proc/loadavg)."""
    return Path("/proc/loadavg").read_text().split()[0]


def load_note(before: str) -> str:
    """The machine's load around a subprocess suite, for its notes."""
    return (
        f"1-minute load average {before} before, {load_average()} after: pinning keeps our "
        "processes apart, not other processes off these cores ('its core busy' counts everyone)"
    )


def _pinned(argv: list[str], cpu: int) -> list[str]:
    taskset = shutil.which("taskset")
    return [taskset, "-c", str(cpu), *argv] if taskset else argv
