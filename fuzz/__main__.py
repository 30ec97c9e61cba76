"""``scripts/fuzz``: the fuzzing entry point (docs/fuzzing.md).

    scripts/fuzz props --examples N [-k EXPR]            hypothesis properties, N examples each
    scripts/fuzz atheris TARGET|all --runs N|--seconds S  coverage-guided, one child per target
    scripts/fuzz api --examples N                         schemathesis per role, live service
    scripts/fuzz all --quick                              a smoke of all three (what CI runs)
    scripts/fuzz list                                     the atheris targets

Exit status 0 when nothing was found, 1 on a finding, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from .campaign import ROOT, run_targets, target_names

QUICK_RUNS = 2000
QUICK_API_EXAMPLES = 5
QUICK_PROPS_EXAMPLES = 200


def _props(examples: int, select: str | None) -> int:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "fuzz.props_plugin", "--examples",
           str(examples), "-p", "no:cacheprovider"]  # fmt: skip
    if select:
        cmd += ["-k", select]
    print("+", " ".join(cmd[2:]), flush=True)
    return 0 if subprocess.run(cmd, cwd=ROOT, check=False).returncode == 0 else 1


def _atheris(names: list[str], runs: int | None, seconds: int | None, work: Path | None,
             jobs: int, seed: int) -> int:  # fmt: skip
    results = run_targets(names, runs=runs, seconds=seconds, work=work, jobs=jobs, seed=seed)
    for result in results:
        print(result.summary())
        if not result.clean:
            print(result.finding_text())
    total = sum(r.runs or 0 for r in results)
    print(f"atheris: {total} inputs over {len(results)} targets; "
          f"{sum(not r.clean for r in results)} with findings")  # fmt: skip
    return 0 if all(r.clean for r in results) else 1


def _api(examples: int, seed: int, work: Path | None, roles: list[str] | None) -> int:
    from .api import ROLES, run_api

    chosen = tuple(roles) if roles else tuple(ROLES)
    results = run_api(examples, seed=seed, work=work, roles=chosen)
    for result in results:
        print(result.summary())
    print(f"api: {sum(r.generated for r in results)} cases over {len(chosen)} roles; "
          f"{sum(not r.clean for r in results)} with findings")  # fmt: skip
    return 0 if all(r.clean for r in results) else 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/fuzz",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    props = sub.add_parser("props", help="hypothesis properties with N examples each")
    props.add_argument("--examples", type=int, required=True)
    props.add_argument("-k", dest="select", help="pytest -k expression")
    ath = sub.add_parser("atheris", help="atheris targets (coverage-guided)")
    ath.add_argument("target", help="a target name (scripts/fuzz list) or 'all'")
    budget = ath.add_mutually_exclusive_group(required=True)
    budget.add_argument("--runs", type=int)
    budget.add_argument("--seconds", type=int)
    ath.add_argument("--work", type=Path, help="keep corpora and findings here (reused)")
    ath.add_argument("--jobs", type=int, default=1, help="targets fuzzed at once")
    ath.add_argument("--seed", type=int, default=0)
    api = sub.add_parser("api", help="schemathesis against a live service, once per role")
    api.add_argument("--examples", type=int, required=True)
    api.add_argument("--role", action="append", help="only these roles (repeatable)")
    api.add_argument("--work", type=Path)
    api.add_argument("--seed", type=int, default=0)
    everything = sub.add_parser("all", help="props, atheris and api")
    everything.add_argument("--quick", action="store_true", required=True,
                            help="the CI-sized smoke (long runs: use the subcommands)")  # fmt: skip
    sub.add_parser("list", help="the atheris targets")
    args = parser.parse_args(argv)

    if args.command == "list":
        print("\n".join(target_names()))
        return 0
    if args.command == "props":
        return _props(args.examples, args.select)
    if args.command == "atheris":
        names = target_names() if args.target == "all" else [args.target]
        if args.target != "all" and args.target not in target_names():
            parser.error(f"unknown target {args.target}; see scripts/fuzz list")
        return _atheris(names, args.runs, args.seconds, args.work, args.jobs, args.seed)
    if args.command == "api":
        return _api(args.examples, args.seed, args.work, args.role)
    statuses = [
        _props(QUICK_PROPS_EXAMPLES, None),
        _atheris(target_names(), QUICK_RUNS, None, None, 2, 0),
        _api(QUICK_API_EXAMPLES, 0, None, None),
    ]
    return max(statuses)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
