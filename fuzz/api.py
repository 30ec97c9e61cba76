"""schemathesis against a real ``suitsrv serve`` child, once per role, with valid credentials.

The service is seeded the way an operator would (the ``suitsrv`` CLI: ``admin init``, a vendor
with a trust anchor, two devices behind a gateway, a token per role, a signed release uploaded
over HTTP), so the generated requests get past authentication and, with the known ids mixed
into the path parameters, past "not found". Each role runs on its own paths; an anonymous pass
covers every operation (each must document its 401).

Findings: any 5xx (``not_a_server_error``), any status the OpenAPI document does not list for
the operation (``status_code_conformance``), a schemathesis error (e.g. a media type it cannot
send), and any traceback in the server's log.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.server_process import ServerProcess, run_cli

from .campaign import ROOT
from .known_findings import KNOWN_UNDOCUMENTED

__all__ = ["ROLES", "ApiResult", "Finding", "findings_from_log", "run_api", "server_tracebacks"]

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
CHECKS = "not_a_server_error,status_code_conformance"
# An SSE stream answers 200 and then stays open: schemathesis would wait out its request
# timeout on every case. tests/test_gateway_events.py covers the stream.
EXCLUDED = ("/v1/gateway/events",)
_OTHERS = r"^/(?!v1/(operator|vendor|device|gateway|payloads)/)"
# role -> the paths it owns (regex on the OpenAPI path)
ROLES: dict[str, str] = {
    "anonymous": r"^/",
    "public": _OTHERS,
    "device": r"^/v1/(device|payloads)/",
    "gateway": r"^/v1/gateway/",
    "vendor": r"^/v1/vendor/",
    "operator": r"^/v1/operator/",  # last: it may decommission the seeded devices
}
_SHOWN = re.compile(r"\(shown once[^)]*\): (sst_\S+)")
_SPEC = """vendor-domain = "acme.example"
class-name = "thermostat-v2"
sequence-number = 3
version = "1.3.0"
[[component]]
id = ["firmware"]
file = "fw.bin"
uri = "https://updates.example/v1/payloads/{sha256}"
"""


@dataclass(frozen=True)
class Finding:
    operation: str  # "POST /v1/vendor/devices"
    check: str  # schemathesis' title, e.g. "ST103 Undocumented status code"
    status: int | None

    @property
    def known(self) -> bool:
        """Reported and waiting for a fix elsewhere (fuzz/known_findings.py); never a 5xx."""
        return (
            self.status is not None
            and self.status < 500
            and (self.operation, self.status) in KNOWN_UNDOCUMENTED
        )

    def __str__(self) -> str:
        return f"{self.operation}: {self.check} -> {self.status}" + (" (known)" * self.known)


def findings_from_log(text: str) -> tuple[Finding, ...]:
    """The failures section of schemathesis' output: one block per operation, one segment
    per test case with its check lines ("- ST103 ...") and the response line ("[415] ...")."""
    section = text.partition("= FAILURES =")[2].partition("= WARNINGS =")[0]
    section = section.partition("= SUMMARY =")[0]
    found: set[Finding] = set()
    for operation, block in re.findall(r"^_{3,} (\S+ \S+) _{3,}\n(.*?)(?=^_{3,} |\Z)", section,
                                       re.M | re.S):  # fmt: skip
        for case in re.split(r"^\d+\. Test Case ID:", block, flags=re.M)[1:]:
            status = re.search(r"^\[(\d{3})\]", case, re.M)
            for check in re.findall(r"^- (.+)$", case, re.M):
                found.add(
                    Finding(operation, check.strip(), int(status.group(1)) if status else None)
                )
    return tuple(sorted(found, key=str))


@dataclass(frozen=True)
class ApiResult:
    role: str
    generated: int
    failures: tuple[Finding, ...]
    errors: tuple[str, ...]
    report: Path
    reported: int = 0  # unique failures in schemathesis' own JSON report

    @property
    def new(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.failures if not f.known)

    @property
    def clean(self) -> bool:
        """No finding that is not already reported, no error, and the log accounts for every
        failure the JSON report counted (so a change in the log format cannot hide one)."""
        parsed_all = self.reported == 0 or bool(self.failures)
        return not self.new and not self.errors and parsed_all

    def summary(self) -> str:
        state = (
            "clean" if self.clean else f"{len(self.new)} new findings, {len(self.errors)} errors"
        )
        known = len(self.failures) - len(self.new)
        lines = [f"{self.role:10} {self.generated} cases: {state}; {known} known findings"]
        lines += [f"    {line}" for line in (*self.failures, *self.errors)]
        return "\n".join(lines)


def _cli(*args: str | Path, cwd: Path) -> str:
    done = run_cli(*map(str, args), cwd=cwd, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"suitsrv {' '.join(map(str, args))}: {done.stdout}{done.stderr}")
    return done.stdout


def _token(output: str) -> str:
    match = _SHOWN.search(output)
    if match is None:
        raise RuntimeError(f"no token in {output!r}")
    return match.group(1)


def _seed(work: Path) -> tuple[dict[str, str], Path]:
    """Accounts through the admin CLI; returns the role tokens and the data directory."""
    data = work / "data"
    admin = ("admin", "--data-dir", data)
    tokens = {"operator": _token(_cli(*admin, "init", cwd=work))}
    _cli("keygen", "-o", "vendor", cwd=work)
    _cli(*admin, "vendor", "add", "acme", "--vendor-domain", "acme.example",
         "--trust", "vendor.pub.pem", cwd=work)  # fmt: skip
    tokens["vendor"] = _token(_cli(*admin, "token", "issue", "--role", "vendor", "--scope", "acme",
                                   cwd=work))  # fmt: skip
    for device in ("dev-1", "dev-2"):
        out = _cli(*admin, "device", "add", device, "--vendor", "acme", "--class-name",
                   "thermostat-v2", "--gateway", "gw-1", "--claim-code", f"claim-{device}-code",
                   cwd=work)  # fmt: skip
        tokens.setdefault("device", _token(out))
    tokens["gateway"] = _token(_cli(*admin, "token", "issue", "--role", "gateway", "--scope",
                                    "gw-1", cwd=work))  # fmt: skip
    return tokens, data


def _release(server: ServerProcess, work: Path, vendor_token: str) -> dict[str, str]:
    """Upload a signed release over HTTP; the ids schemathesis should sometimes use."""
    (work / "fw.bin").write_bytes(os.urandom(4096))
    import hashlib

    sha = hashlib.sha256((work / "fw.bin").read_bytes()).hexdigest()
    (work / "spec.toml").write_text(_SPEC.format(sha256=sha), encoding="utf-8")
    _cli("manifest", "build", "spec.toml", "--key", "vendor.priv.pem", "-o", "fw.suit", cwd=work)
    _cli("upload", "--server", server.url, "--token", vendor_token, "fw.suit", "fw.bin", cwd=work)
    request = urllib.request.Request(
        f"{server.url}/v1/vendor/manifests", headers={"Authorization": f"Bearer {vendor_token}"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # loopback only
        listing: dict[str, Any] = json.load(response)
    manifest = listing["manifests"][0]
    digest = next(v for k, v in manifest.items() if k in ("digest", "manifest_digest"))
    class_id = next((v for k, v in manifest.items() if k == "class_id"), "")
    return {"digest": str(digest), "sha256": sha, "class_id": str(class_id)}


def _config(work: Path, ids: dict[str, str]) -> Path:
    """schemathesis.toml: known ids mixed into generated path parameters (probability 0.5)."""
    values = {
        "device_id": ["dev-1", "dev-2"],
        "digest": [ids["digest"]],
        "sha256": [ids["sha256"]],
        "vendor": ["acme"],
        "name": ["acme"],
        "class_id": [v for v in (ids["class_id"],) if v] or ["none"],
    }
    lines = ["[dictionaries]"]
    lines += [f"{name} = {{ values = {json.dumps(v)} }}" for name, v in values.items()]
    lines.append("[parameters]")
    lines += [f'"path.{name}" = {{ dictionary = "{name}", probability = 0.5 }}' for name in values]
    path = work / "schemathesis.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _run_role(role: str, url: str, token: str | None, config: Path, work: Path, examples: int,
              seed: int, timeout: float) -> ApiResult:  # fmt: skip
    report = work / f"schemathesis-{role}.json"
    cmd = [str(SCHEMATHESIS), "--no-color", "--config-file", str(config), "run",
           f"{url}/openapi.json", "--include-path-regex", ROLES[role], "-c", CHECKS,
           "-n", str(examples), "-w", "1", "--phases", "examples,coverage,fuzzing",
           "--seed", str(seed), "--request-timeout", "30", "--continue-on-failure",
           "--report", "json", "--report-json-path", str(report)]  # fmt: skip
    for path in EXCLUDED:
        cmd += ["--exclude-path", path]
    if token is not None:
        cmd += ["-H", f"Authorization: Bearer {token}"]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "fuzz.st_hooks", "PYTHONPATH": str(ROOT)}
    log = work / f"schemathesis-{role}.log"
    with log.open("wb") as out:
        subprocess.run(cmd, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT,
                       stdin=subprocess.DEVNULL, timeout=timeout, check=False)  # fmt: skip
    text = log.read_text(encoding="utf-8", errors="replace")
    if not report.is_file():
        return ApiResult(role, 0, (), (f"no report; log: {text[-3000:]}",), log)
    data: dict[str, Any] = json.loads(report.read_text(encoding="utf-8"))
    errors = tuple(f"{e.get('title')} x{e.get('count')}" for e in data.get("errors", []))
    generated = int(data["test_cases"]["generated"])
    reported = len(data.get("failures", []))
    return ApiResult(role, generated, findings_from_log(text), errors, log, reported)


def server_tracebacks(log: str) -> list[str]:
    """Tracebacks in the server's stderr, without aiohttp's own report of a request line or
    header it refused before any of our code ran (schemathesis probes with a NUL byte in a
    header; aiohttp answers 400 and logs the parser's exception)."""
    blocks = log.split("Traceback (most recent call last):")[1:]
    return [b for b in blocks if "aiohttp.http_exceptions." not in b.split("\n{", 1)[0]]


def run_api(
    examples: int,
    *,
    seed: int = 0,
    work: Path | None = None,
    roles: tuple[str, ...] = tuple(ROLES),
    timeout: float = 600,
) -> list[ApiResult]:
    """Seed a fresh service, run schemathesis once per role, stop and reap the server. A
    traceback in the server's log is reported as one more failing result ("server-log")."""
    with tempfile.TemporaryDirectory(prefix="suitsrv-api-fuzz-") as tmp:
        base = work or Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        tokens, data = _seed(base)
        with ServerProcess.start(data, base) as server:
            ids = _release(server, base, tokens["vendor"])
            config = _config(base, ids)
            results = [
                _run_role(role, server.url, tokens.get(role), config, base, examples, seed, timeout)
                for role in roles
            ]
            server.stop()
            log = server.stderr()
        tracebacks = server_tracebacks(log)
        if tracebacks:
            shown = tuple(f"server traceback:{t[:3000]}" for t in tracebacks[:5])
            results.append(ApiResult("server-log", 0, (), shown, server.stderr_path))
        if work is None and not all(r.clean for r in results):
            keep = Path(tempfile.mkdtemp(prefix="suitsrv-api-finding-"))
            for pattern in ("*.log", "*.json", "server-*"):
                for path in base.glob(pattern):
                    (keep / path.name).write_bytes(path.read_bytes())
            print(f"api fuzz: logs and reports kept in {keep}", file=sys.stderr)
        return results
