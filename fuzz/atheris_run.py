"""The child process of one atheris campaign: ``python -m fuzz.atheris_run TARGET --work DIR
(--runs N | --seconds S)``. Run it through ``scripts/fuzz atheris`` (fuzz/campaign.py), which
parses its output; atheris ends the process itself when libFuzzer stops.

``DIR/corpus`` keeps what libFuzzer finds (reused by the next run with the same DIR),
``DIR/seeds`` is rewritten from the vectors and builders each run, and a finding is written
to ``DIR/crash-*`` (``timeout-*``, ``oom-*``) with its stack on stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import atheris

# Our three rings only: instrumenting cryptography or cbor2 would slow every run and guide
# the fuzzer into code whose errors we wrap anyway.
_INSTRUMENTED = ["manifests", "attest", "suitsrv"]


def _write_seeds(seeds: Path, inputs: list[bytes]) -> None:
    seeds.mkdir(parents=True, exist_ok=True)
    for old in seeds.iterdir():
        old.unlink()
    for data in inputs:
        (seeds / hashlib.sha1(data, usedforsecurity=False).hexdigest()).write_bytes(data)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="fuzz.atheris_run")
    parser.add_argument("target")
    parser.add_argument("--work", type=Path, required=True)
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument("--runs", type=int)
    budget.add_argument("--seconds", type=int)
    parser.add_argument("--seed", type=int, default=0, help="libFuzzer -seed (0: random)")
    args = parser.parse_args(argv[1:])

    with atheris.instrument_imports(include=_INSTRUMENTED):
        from fuzz.targets import CANARY, TARGETS
    target = CANARY if args.target == CANARY.name else TARGETS[args.target]
    corpus, seeds = args.work / "corpus", args.work / "seeds"
    corpus.mkdir(parents=True, exist_ok=True)
    _write_seeds(seeds, list(target.seeds()))
    budget_flag = (
        f"-runs={args.runs}" if args.runs is not None else f"-max_total_time={args.seconds}"
    )
    flags = [
        budget_flag,
        f"-max_len={target.max_len}",
        "-timeout=10",  # one input taking 10 s is a finding (a denial of service)
        "-rss_limit_mb=1536",
        f"-seed={args.seed}",
        f"-artifact_prefix={args.work}/",
        "-print_final_stats=1",
    ]
    atheris.Setup([argv[0], *flags, str(corpus), str(seeds)], target.check)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
