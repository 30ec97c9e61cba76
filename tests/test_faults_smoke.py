"""CI smoke of the fault-injection loop (issue 7, part 6): ``scripts/faults --quick`` runs its
three scenarios against real ``suitsrv serve`` processes and must find no problem, with every
acknowledged write verified. Nothing here measures time; the timeout only bounds a hang.

Without the right to mount a tmpfs the script says so and exits 3 (the disk-full scenario did
not run); the smoke then still checks the other two scenarios and reports the skip."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "faults.py"
EXIT_NO_MOUNT = 3


def test_quick_fault_run_finds_no_problem() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--seed", "7"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    by_name = {line["scenario"]: line for line in lines}
    assert set(by_name) == {"sigkill", "sigterm-drain", "disk-full"}, done.stdout + done.stderr
    ran = [line for line in lines if "skipped" not in line]
    for line in ran:
        assert line["problems"] == [], line
        assert line["requests_acknowledged"] > 0, line
        assert line["verified"] == line["requests_acknowledged"], line
    assert by_name["sigkill"]["rounds"] == 3
    if "skipped" in by_name["disk-full"]:
        assert done.returncode == EXIT_NO_MOUNT, done.stderr
        pytest.skip(f"disk-full not run: {by_name['disk-full']['skipped']}")
    assert done.returncode == 0, done.stderr
    full = by_name["disk-full"]["answers_while_full"]
    assert full["payload"]["507"] > 0, full  # the disk did fill, and the answer was a 507
