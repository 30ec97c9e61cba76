"""Run atheris targets as child processes (fuzz/atheris_run.py) and read their outcome.

atheris ends its process when libFuzzer stops, so each target is its own child, at most
``jobs`` at a time, each with a hard timeout; every child is reaped. A run is clean when the
child exits 0, printed libFuzzer's ``Done N runs`` line and left no crash/timeout/oom file.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ROOT", "SELF_TEST", "AtherisResult", "run_targets", "target_names"]

ROOT = Path(__file__).resolve().parent.parent
_DONE = re.compile(r"^Done (\d+) runs in (\d+) second", re.M)
_COV = re.compile(r"\bcov: (\d+) ft: (\d+) corp: (\d+)")
SELF_TEST = "canary"  # fuzz/targets.py CANARY: a target with a planted finding
_ARTIFACTS = ("crash-", "timeout-", "oom-", "leak-", "slow-unit-")


@dataclass(frozen=True)
class AtherisResult:
    target: str
    returncode: int
    runs: int | None  # libFuzzer's "Done N runs", None when it never got there
    seconds: int | None
    coverage: int | None  # the last "cov:" figure (instrumented edges reached)
    corpus: int | None
    artifacts: tuple[Path, ...]
    log: Path

    @property
    def clean(self) -> bool:
        return self.returncode == 0 and self.runs is not None and not self.artifacts

    def summary(self) -> str:
        state = "clean" if self.clean else f"FINDING (exit {self.returncode})"
        found = "".join(f"\n    {p}" for p in self.artifacts)
        return (
            f"{self.target:15} {state}: {self.runs} runs in {self.seconds} s, "
            f"cov {self.coverage}, corpus {self.corpus}{found}"
        )

    def finding_text(self) -> str:
        """The stack atheris printed for a finding (the log's tail)."""
        return self.log.read_text(encoding="utf-8", errors="replace")[-6000:]


def target_names() -> list[str]:
    """Target names without importing our rings into this (uninstrumented) process."""
    text = (ROOT / "fuzz" / "targets.py").read_text(encoding="utf-8")
    return re.findall(r'^\s+Target\("([a-z0-9-]+)"', text, re.M)


def _run_one(
    name: str, work: Path, runs: int | None, seconds: int | None, seed: int
) -> AtherisResult:
    target_dir = work / name
    target_dir.mkdir(parents=True, exist_ok=True)
    for old in target_dir.glob("*-*"):
        if old.is_file() and old.name.startswith(_ARTIFACTS):
            old.unlink()  # a previous run's finding; a new one is written if it reproduces
    budget = ["--runs", str(runs)] if runs is not None else ["--seconds", str(seconds)]
    cmd = [sys.executable, "-m", "fuzz.atheris_run", name, "--work", str(target_dir),
           *budget, "--seed", str(seed)]  # fmt: skip
    # libFuzzer's own -max_total_time overshoots by the time of one input at most; the hard
    # limit only catches a wedged child (the 10 s per-input timeout fires long before).
    limit = 120 + (seconds or 0) + (runs or 0) / 50
    log = work / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        try:
            returncode = proc.wait(limit)
        except subprocess.TimeoutExpired:
            proc.kill()
            returncode = proc.wait()
    text = log.read_text(encoding="utf-8", errors="replace")
    done = _DONE.search(text)
    cov = _COV.findall(text)
    artifacts = tuple(sorted(p for p in target_dir.iterdir() if p.name.startswith(_ARTIFACTS)))
    return AtherisResult(
        target=name,
        returncode=returncode,
        runs=int(done.group(1)) if done else None,
        seconds=int(done.group(2)) if done else None,
        coverage=int(cov[-1][0]) if cov else None,
        corpus=int(cov[-1][2]) if cov else None,
        artifacts=artifacts,
        log=log,
    )


def run_targets(
    names: list[str],
    *,
    runs: int | None = None,
    seconds: int | None = None,
    work: Path | None = None,
    jobs: int = 1,
    seed: int = 0,
) -> list[AtherisResult]:
    """Fuzz each named target (``runs`` inputs or ``seconds``); results in ``names`` order.
    Without ``work`` the corpora live in a temporary folder removed afterwards."""
    if (runs is None) == (seconds is None):
        raise RuntimeError("give exactly one of runs and seconds")
    unknown = sorted(set(names) - {*target_names(), SELF_TEST})
    if unknown:
        raise RuntimeError(f"unknown fuzz targets {unknown}; known: {target_names()}")
    with tempfile.TemporaryDirectory(prefix="suitsrv-fuzz-") as tmp:
        base = work or Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            results = list(pool.map(lambda n: _run_one(n, base, runs, seconds, seed), names))
        if work is None:  # keep what a finding needs to be reproduced
            for r in results:
                if not r.clean:
                    _keep(r)
        return results


def _keep(result: AtherisResult) -> None:
    dest = Path(tempfile.mkdtemp(prefix=f"suitsrv-finding-{result.target}-"))
    for path in (result.log, *result.artifacts):
        (dest / path.name).write_bytes(path.read_bytes())
    object.__setattr__(result, "log", dest / result.log.name)
    object.__setattr__(result, "artifacts", tuple(dest / p.name for p in result.artifacts))
