"""CI smoke of the fuzzing harness (docs/fuzzing.md): every atheris target runs a fixed number
of inputs, and schemathesis sends a few cases per role to a real ``suitsrv serve`` child.
Each must find nothing new. Long campaigns are ``scripts/fuzz``; nothing here is timed.

The harness itself is checked too: a target that raises outside its ring's errors must be
reported as a finding, so a smoke that silently fuzzes nothing cannot pass.
"""

from __future__ import annotations

import pytest

from fuzz.api import Finding, findings_from_log, run_api, server_tracebacks
from fuzz.campaign import SELF_TEST, AtherisResult, run_targets, target_names

RUNS = 2000
NAMES = target_names()


@pytest.fixture(scope="module")
def atheris_results() -> dict[str, AtherisResult]:
    results = run_targets(NAMES, runs=RUNS, jobs=2)
    return {r.target: r for r in results}


def test_every_decoder_has_a_target() -> None:
    assert set(NAMES) >= {
        "suit-envelope", "suit-cose", "suit-report", "attest-cose", "tpms-attest",
        "tpmt-signature", "tpm2b-public", "eventlog", "psa-token", "eat", "json-body",
    }  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_atheris_target(name: str, atheris_results: dict[str, AtherisResult]) -> None:
    result = atheris_results[name]
    assert result.clean, f"{result.summary()}\n{result.finding_text()}"
    assert result.runs == RUNS
    assert result.coverage is not None and result.coverage > 0, "no instrumented code reached"


def test_atheris_reports_a_finding() -> None:
    """The canary target lets UnicodeDecodeError escape: the harness must call that a
    finding, keep the input and show the stack."""
    (result,) = run_targets([SELF_TEST], runs=RUNS)
    assert not result.clean
    assert result.returncode != 0
    assert [p.name.split("-")[0] for p in result.artifacts] == ["crash"]
    assert not result.artifacts[0].read_bytes()[:1].isascii()
    assert "UnicodeDecodeError" in result.finding_text()


def test_finding_detection_parses_schemathesis_output() -> None:
    text = (
        "=== FAILURES ===\n"
        "____ POST /v1/device/reports ____\n"
        "1. Test Case ID: abc\n\n- Server error\n\n[500] Internal Server Error:\n\n"
        "2. Test Case ID: def\n\n- ST103 Undocumented status code\n\n    Received: 415\n\n"
        "[415] Unsupported Media Type:\n"
        "=== WARNINGS ===\n"
    )
    assert set(findings_from_log(text)) == {
        Finding("POST /v1/device/reports", "Server error", 500),
        Finding("POST /v1/device/reports", "ST103 Undocumented status code", 415),
    }
    assert not Finding("POST /v1/device/reports", "Server error", 500).known
    log = (
        'Error handling request\nTraceback (most recent call last):\n  File "x"\n'
        "aiohttp.http_exceptions.BadHttpMessage: 400\n"
        '{"method": "GET"}\nError handling request\nTraceback (most recent call last):\n'
        "KeyError: 'x'\n"
    )
    assert len(server_tracebacks(log)) == 1


def test_api_roles_find_nothing_new() -> None:
    results = run_api(3, roles=("public", "device", "gateway", "vendor", "operator"))
    assert {r.role for r in results} >= {"device", "gateway", "vendor", "operator"}
    for result in results:
        assert result.clean, result.summary()
        if result.role != "server-log":
            assert result.generated > 0, f"{result.role}: schemathesis generated nothing"
