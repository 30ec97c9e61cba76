"""suitsrv: firmware updates (IETF SUIT) and remote attestation (IETF RATS) for IoT devices."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from suitsrv import __version__
from suitsrv.agent.cli import add_agent
from suitsrv.gatewaysim import add_gateway_sim

from .attest_cmd import add_attest
from .keys import UsageError, add_keygen
from .manifest_cmd import add_manifest
from .serve import add_admin, add_serve
from .upload import add_upload


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="suitsrv", description=__doc__)
    parser.add_argument("--version", action="version", version=f"suitsrv {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_keygen(sub)
    add_manifest(sub)
    add_serve(sub)
    add_admin(sub)
    add_upload(sub)
    add_attest(sub)
    add_agent(sub)
    add_gateway_sim(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 rejected/failed, 2 usage error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    run: Callable[[argparse.Namespace], int] | None = getattr(args, "run", None)
    if run is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return run(args)
    except UsageError as exc:
        print(f"suitsrv: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
