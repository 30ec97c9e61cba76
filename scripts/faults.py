"""Fault injection against a real ``suitsrv serve`` (issue 7, part 4): SIGKILL during writes,
SIGTERM with writes in flight, a full disk. Not a benchmark and not a test: it runs real server
processes on 127.0.0.1 for as many rounds as asked and prints one JSON line per scenario,

    {"scenario", "rounds", "requests_acknowledged", "verified", "problems": [...], "seed", ...}

and exits 0 only when no scenario found a problem (1 otherwise; 3 when the disk-full scenario
could not mount its size-limited filesystem and nothing else failed). docs/faults.md says what
each scenario checks. Run through ``scripts/faults [all|sigkill|drain|disk] [--rounds N]
[--seconds S] [--seed N] [--quick] [--work-dir DIR] [--write]``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import random
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "BENCHMARKS.md"
if str(ROOT) not in sys.path:
    # tests/server_process.py (the ServerProcess the crash tests use) lives in the repo's tests
    # package; this directory is on the path already, as for scripts/bench.py.
    sys.path.insert(1, str(ROOT))

from fault_disk import MountRefused, disk_full  # noqa: E402
from fault_drain import drain  # noqa: E402
from fault_kill import kill_loop  # noqa: E402
from fault_site import ScenarioResult  # noqa: E402

EXIT_PROBLEMS = 1
EXIT_NO_MOUNT = 3
SCENARIOS = ("sigkill", "drain", "disk")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scripts/faults", description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", nargs="?", choices=("all", *SCENARIOS), default="all")
    parser.add_argument("--rounds", type=int, help="SIGKILL rounds (default 10, --quick 3)")
    parser.add_argument("--seconds", type=float, help="start no SIGKILL round after this long")
    parser.add_argument("--seed", type=int, help="random seed (default: from the clock, printed)")
    parser.add_argument("--quick", action="store_true", help="CI-sized: 3 SIGKILL rounds")
    parser.add_argument("--disk-mib", type=int, default=4, help="tmpfs size (default 4 MiB)")
    parser.add_argument("--work-dir", type=Path, help="keep data and server logs here")
    parser.add_argument("--write", action="store_true",
                        help="rewrite the Faults block of BENCHMARKS.md with this run")  # fmt: skip
    return parser


async def _run(
    name: str, work: Callable[[], Awaitable[ScenarioResult]], seed: int
) -> tuple[ScenarioResult | None, str | None]:
    """The scenario's result, or None and why the disk could not be mounted. A scenario that
    fails outright (a server that does not start) is a result with that problem."""
    started = time.monotonic()
    try:
        result = await work()
    except MountRefused as exc:
        return None, str(exc)
    except Exception as exc:
        result = ScenarioResult(name, 0, 0, 0, [f"the scenario failed: {exc!r}"[:4000]])
    result.details.update(seed=seed, seconds=round(time.monotonic() - started, 1))
    return result, None


async def _main(args: argparse.Namespace, root: Path) -> int:
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    rounds = args.rounds if args.rounds is not None else (3 if args.quick else 10)
    chosen = SCENARIOS if args.scenario == "all" else (args.scenario,)
    plans: dict[str, Callable[[], Awaitable[ScenarioResult]]] = {
        "sigkill": lambda: kill_loop(root, rounds=rounds, seconds=args.seconds, seed=seed),
        "drain": lambda: drain(root, seed=seed),
        "disk": lambda: disk_full(root, seed=seed, size_mib=args.disk_mib),
    }
    failed, unmounted = False, False
    lines: list[str] = []
    started = time.monotonic()
    for name in chosen:
        result, refused = await _run(name, plans[name], seed)
        if result is None:
            unmounted = True
            lines.append(json.dumps({"scenario": "disk-full", "skipped": refused, "seed": seed}))
            print(f"disk-full NOT RUN: {refused} (needs root to mount a tmpfs)", file=sys.stderr)
        else:
            failed |= bool(result.problems)
            lines.append(result.json_line())
        print(lines[-1], flush=True)
    if args.write:
        _write_report(lines, time.monotonic() - started)
    if failed:
        return EXIT_PROBLEMS
    return EXIT_NO_MOUNT if unmounted else 0


def _write_report(lines: list[str], seconds: float) -> None:
    """Replace the block between the faults markers (appended when missing); the rest of the
    file belongs to scripts/bench and is left as it is."""
    start, end = "<!-- faults:start -->", "<!-- faults:end -->"
    command = shlex.join(["scripts/faults", *sys.argv[1:]])
    body = "\n".join([
        start,
        "## Faults",
        "",
        "Written by `scripts/faults --write` (docs/faults.md says what each scenario checks); a",
        "run passes when every line has no problems and `verified` equals",
        "`requests_acknowledged`. Not timings: counts of writes answered 2xx and found intact.",
        "",
        f"- date: {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}",
        f"- command: `{command}`",
        f"- code: {_code_version()}",
        f"- wall time: {seconds:.0f} s",
        f"- platform: {platform.platform()}, {os.cpu_count()} cores, "
        f"{platform.python_implementation()} {platform.python_version()}",
        "",
        "```json",
        *lines,
        "```",
        end,
    ])  # fmt: skip
    text = REPORT.read_text() if REPORT.exists() else "# Benchmarks\n"
    head, found, rest = text.partition(start)
    if found and end in rest:
        text = head + body + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + body + "\n"
    REPORT.write_text(text)
    print(f"faults: wrote the Faults block of {REPORT.name}", file=sys.stderr)


def _code_version() -> str:
    """The commit under test, and whether tracked files differ from it."""
    try:
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=30, check=True)  # fmt: skip
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "-uno"],
                               capture_output=True, text=True, timeout=30, check=True)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    changed = " with uncommitted changes" if dirty.stdout.strip() else ""
    return rev.stdout.strip() + changed


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.work_dir is not None:
        args.work_dir.mkdir(parents=True, exist_ok=True)
        return asyncio.run(_main(args, Path(tempfile.mkdtemp(dir=args.work_dir, prefix="faults-"))))
    with tempfile.TemporaryDirectory(prefix="suitsrv-faults-") as tmp:
        return asyncio.run(_main(args, Path(tmp)))


if __name__ == "__main__":
    sys.exit(main())
