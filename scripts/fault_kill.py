"""SIGKILL at a random moment of a write burst, restart, audit; round after round.

The store promises (suitsrv/store/sqlite.py, blobs.py) that a write acknowledged with a 2xx
survives SIGKILL and that nothing half-written becomes visible. Each round starts clients doing
all four kinds of write (fault_workload.run_clients), kills the server after a random delay
(no cleanup handler, no flush, no checkpoint runs), starts it again on the same data directory
and audits everything acknowledged in every round so far (fault_audit.audit): a later kill must
not damage an earlier write either. tests/test_crash.py and tests/test_crash_backup.py run the
same kind of burst for a few fixed seeds as tests; this loop runs as many rounds as asked.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from pathlib import Path

from fault_audit import audit
from fault_site import ScenarioResult, make_site, unhandled_errors
from fault_workload import Ledger, run_clients

from tests.server_process import ServerProcess

#: Seconds between the server accepting connections and the kill (uniform).
KILL_WINDOW = (0.1, 1.2)
MAX_PROBLEMS = 50


async def kill_loop(root: Path, *, rounds: int, seconds: float | None, seed: int) -> ScenarioResult:
    """At most ``rounds`` rounds, and none started after ``seconds`` (when given)."""
    site = await make_site(root / "kill")
    ledger = Ledger()
    rng = random.Random(seed)
    problems: list[str] = []
    deadline = time.monotonic() + seconds if seconds is not None else None
    done, in_flight = 0, 0
    server = ServerProcess.start(site.data_dir, site.logs)
    try:
        while done < rounds and (deadline is None or time.monotonic() < deadline):
            done += 1
            sent_before = _sent(ledger) - ledger.acknowledged()
            clients = asyncio.create_task(
                run_clients(site, server.url, ledger, rng.getrandbits(32))
            )
            await asyncio.sleep(rng.uniform(*KILL_WINDOW))
            if clients.done():
                problems.append(f"round {done}: the clients stopped before the kill")
            server.kill()
            await asyncio.wait_for(clients, 60)
            if server.proc.returncode != -signal.SIGKILL:
                problems.append(f"round {done}: exit status {server.proc.returncode}, not SIGKILL")
            in_flight += _sent(ledger) - ledger.acknowledged() - sent_before
            try:
                server = ServerProcess.start(site.data_dir, site.logs)
            except AssertionError as exc:  # how ServerProcess reports a start that failed
                problems.append(f"round {done}: the server did not start again: {exc}"[:4000])
                break
            found = await audit(site, server.url, ledger)
            found += ledger.unexpected
            ledger.unexpected.clear()
            problems += [f"round {done}: {p}" for p in found]
            if len(problems) >= MAX_PROBLEMS:
                break  # the store is broken already; further rounds only repeat it
        if server.proc.returncode != -signal.SIGKILL and (status := server.stop()) != 0:
            problems.append(f"exit status {status} after SIGTERM at the end")
    finally:
        if server.proc.poll() is None:
            server.stop(signal.SIGKILL, timeout=10)
    problems += unhandled_errors(site.logs)
    return ScenarioResult(
        "sigkill", done, ledger.acknowledged(), ledger.verified(), problems[:MAX_PROBLEMS],
        {"unacknowledged_at_kills": in_flight},
    )  # fmt: skip


def _sent(ledger: Ledger) -> int:
    """Writes sent so far, answered or not."""
    return (
        len(ledger.payloads) + len(ledger.manifests)
        + sum(len(s) for s in ledger.backups_sent.values())
        + sum(len(n) for n in ledger.nonces.values())
    )  # fmt: skip
