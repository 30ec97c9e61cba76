"""A smoke run of each benchmark suite (``scripts/bench SUITE --quick``): it runs to the end,
prints its figures in the documented JSON shape, and the load suite's devices saw no error.

Nothing here looks at a rate or a time (STYLE.md: benchmarks are not tests); the suites check
the answers they time themselves (a fast wrong answer raises) and that is what is smoked here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KEYS = {"name", "value", "unit", "baseline", "baseline_value", "ratio", "target"}
SUITES = {
    "manifests": [],
    "service": [],
    "attest": [],
    "growth": [],
    "load": ["--devices", "100", "--seconds", "10"],
}


def _figures(suite: str) -> list[dict[str, object]]:
    argv = [sys.executable, str(ROOT / "scripts" / "bench.py"), suite, "--quick", "--no-write",
            "--json-only", *SUITES[suite]]  # fmt: skip
    done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-4000:]
    figures = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert figures, done.stdout
    for figure in figures:
        assert set(figure) == KEYS, figure
        assert isinstance(figure["value"], int | float)
    return figures


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_quick_suite_runs_and_prints_its_figures(suite: str) -> None:
    figures = _figures(suite)
    if suite == "load":
        errors = next(f for f in figures if f["name"] == "load: errors")
        assert errors["value"] == 0, figures
        polls = next(f for f in figures if f["name"] == "load: polls/s")
        assert isinstance(polls["value"], float) and polls["value"] > 0
