"""``suitsrv agent``: run one step of the device agent, or its loop (docs/agent.md).

Exit status: 0 done (attest: the verdict is affirming), 1 failed or refused, 2 usage error
(bad arguments, unusable agent.toml or a file it names). One line per step on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp

from .config import load_agent_config
from .errors import AgentConfigError, AgentError

if TYPE_CHECKING:
    from .agent import Agent

__all__ = ["add_agent"]

Step = Callable[["Agent", argparse.Namespace], Awaitable[bool]]


async def _identity(agent: Agent, args: argparse.Namespace) -> bool:
    keys = await agent.identity()
    ek, ak = base64.b64encode(keys.ek_public).decode(), base64.b64encode(keys.ak_public).decode()
    if args.json:
        print(json.dumps({"device_id": agent.config.device_id, "ek_public": ek, "ak_public": ak}))
    else:
        print(f"ek_public {ek}")
        print(f"ak_public {ak}  (SHA-256 {hashlib.sha256(keys.ak_public).hexdigest()[:16]}…)")
    return True


async def _enroll(agent: Agent, args: argparse.Namespace) -> bool:
    await agent.enroll(force=args.force)
    return True


async def _boot(agent: Agent, args: argparse.Namespace) -> bool:
    await agent.boot()
    return True


async def _poll(agent: Agent, args: argparse.Namespace) -> bool:
    from .update import PollStatus

    return (await agent.poll_once()).status is not PollStatus.REFUSED


async def _attest(agent: Agent, args: argparse.Namespace) -> bool:
    return (await agent.attest()).status == "affirming"


async def _backup(agent: Agent, args: argparse.Namespace) -> bool:
    await agent.backup_config()
    return True


async def _restore(agent: Agent, args: argparse.Namespace) -> bool:
    await agent.restore_config()
    return True


async def _loop(agent: Agent, args: argparse.Namespace) -> bool:
    task = asyncio.current_task()
    if task is not None and not args.once:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await agent.run(once=args.once, max_interval=args.max_interval,
                               attest_always=args.attest)  # fmt: skip
    except asyncio.CancelledError:
        agent.say("run: stopped")
        return True


async def _main(args: argparse.Namespace, step: Step) -> bool:
    from .agent import Agent  # tpm2-pytss is needed from here on

    config = load_agent_config(Path(args.config), need_token=step is not _identity)
    async with Agent(config, max_bytes_per_request=args.max_bytes_per_request) as agent:
        return await step(agent, args)


def _run(args: argparse.Namespace) -> int:
    step: Step | None = getattr(args, "step", None)
    if step is None:
        print("suitsrv agent: error: name a command (see --help)", file=sys.stderr)
        return 2
    try:
        return 0 if asyncio.run(_main(args, step)) else 1
    except KeyboardInterrupt:
        return 0 if step is _loop else 1  # Ctrl-C is how one stops `run`
    except AgentConfigError as exc:
        print(f"suitsrv agent: error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        print(f"suitsrv agent: error: the agent needs tpm2-pytss and libtss2: {exc}",
              file=sys.stderr)  # fmt: skip
        return 2
    except (AgentError, aiohttp.ClientError, TimeoutError, OSError) as exc:
        print(f"{args.step_name}: failed: {exc or type(exc).__name__}")
        return 1


def add_agent(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("agent", help="run the device agent (docs/agent.md)")
    parser.add_argument("--config", required=True, metavar="agent.toml")
    parser.add_argument("--max-bytes-per-request", type=int, metavar="N",
                        help="cut each download answer after N bytes (shows resuming)")  # fmt: skip
    parser.set_defaults(run=_run)
    steps = parser.add_subparsers(dest="step_name", metavar="COMMAND")

    def step(name: str, func: Step, text: str) -> argparse.ArgumentParser:
        p = steps.add_parser(name, help=text, description=text)
        p.set_defaults(step=func)
        return p

    step("identity", _identity, "print the TPM's EK and AK public areas (base64 TPM2B_PUBLIC)"
         ).add_argument("--json", action="store_true")  # fmt: skip
    step("enroll", _enroll, "enroll the AK by credential activation").add_argument(
        "--force", action="store_true", help="enroll again even if done before"
    )
    step("boot", _boot, "measure the boot slot into the PCR and the event log")
    step("poll", _poll, "poll once; install, boot and report an update for this device")
    step("attest", _attest, "challenge, quote, evidence; exit 0 only when affirming")
    step("backup", _backup, "back up the configuration file")
    step("restore", _restore, "restore the configuration backup on offer and confirm it")
    run = step("run", _loop, "boot, enroll if needed, then poll in a loop")
    run.add_argument("--once", action="store_true", help="one cycle, then exit")
    run.add_argument("--max-interval", type=float, metavar="S",
                     help="sleep at most S seconds between polls (demos)")  # fmt: skip
    run.add_argument("--attest", action="store_true", help="attest on every cycle")
