"""The world a fault scenario runs in: a data directory prepared offline (a vendor with its
signing key, devices with their tokens, the operator), the evidence a device signs, and the one
result line each scenario prints.

Everything is created through the product's own account functions on the data directory, as
``suitsrv admin`` does, so the server's first start finds its credentials already stored and
prints none. The devices that attest use the token path (an EAT signed with a registered IAK,
docs/attestation.md), as tests/test_attestation_service.py does, so no TPM is needed.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from attest import _cbor
from attest._cose import sign1
from attest.keys import Algorithm as AttestAlgorithm
from attest.keys import SigningKey as AttestKey
from manifests import (
    Algorithm,
    SigningKey,
    build_manifest,
    generate_signing_key,
    load_spec,
    public_pem,
    sign,
)
from suitsrv import accounts
from suitsrv.store import Role, SqliteStore

VENDOR = "acme"
VENDOR_DOMAIN = "acme.example"
CLASS_NAME = "thermostat-v2"
ENVELOPE_TYPE = "application/suit-envelope+cose"
OCTET = "application/octet-stream"
PROBLEM_JSON = "application/problem+json"
#: Devices that back up their configuration; the first gets two racing writers.
BACKUP_DEVICES = ("cfg-1", "cfg-2")
#: Devices that attest (one sequential writer each, so their verdicts have an order).
ATTEST_DEVICES = ("att-1", "att-2")


@dataclass(frozen=True)
class Site:
    """A prepared data directory and the credentials of everyone who writes to it."""

    data_dir: Path
    logs: Path
    vendor_key: SigningKey
    vendor_token: str
    operator_token: str
    device_tokens: dict[str, str]
    iak: dict[str, AttestKey]

    @property
    def database(self) -> Path:
        return self.data_dir / "suitsrv.sqlite3"

    @property
    def blob_root(self) -> Path:
        return self.data_dir / "blobs"

    @staticmethod
    def auth(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    @property
    def vendor(self) -> dict[str, str]:
        return self.auth(self.vendor_token)

    @property
    def operator(self) -> dict[str, str]:
        return self.auth(self.operator_token)

    def device(self, name: str) -> dict[str, str]:
        return self.auth(self.device_tokens[name])

    def envelope(self, component: str, sequence: int, payload_sha: str, size: int) -> bytes:
        """A signed SUIT envelope for one component's image (its digest and size)."""
        spec = f"""
vendor-domain = "{VENDOR_DOMAIN}"
class-name = "{CLASS_NAME}"
sequence-number = {sequence}
[[component]]
id = ["{component}"]
digest = "{payload_sha}"
size = {size}
uri = "https://updates.example/v1/payloads/{payload_sha}"
"""
        return sign(build_manifest(load_spec(spec)), [self.vendor_key])

    def eat(self, device: str, nonce: bytes) -> bytes:
        """An EAT answering ``nonce`` (eat_nonce, claim 10; a measured component, claim 273 with
        a CoSWID-style entry as in tests/test_attestation_service.py), COSE_Sign1 with the
        device's IAK. No release is installed, so the verdict is a warning: stored, and no
        lifecycle change (suitsrv/devices.py after_verdict)."""
        component = _cbor.dumps({1: ["firmware", ["1.0.0"]], 2: [-16, bytes(32)]})
        return sign1(_cbor.dumps({10: nonce, 273: [[295, component]]}), self.iak[device])


async def make_site(root: Path, data_dir: Path | None = None) -> Site:
    """A vendor (with a trust anchor and a token), the operator token and the devices, stored
    offline in ``data_dir`` (default ``root/data``); server logs go to ``root/logs``."""
    data_dir = data_dir or root / "data"
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    key = generate_signing_key(Algorithm.ES256)
    now = time.time()
    store = SqliteStore(data_dir)
    try:
        operator = await accounts.init_operator(store, now)
        if operator is None:
            raise RuntimeError(f"{data_dir} already has an operator; start from an empty one")
        await accounts.add_vendor(
            store, VENDOR, vendor_domains=[VENDOR_DOMAIN],
            anchors=[{"pem": public_pem(key).decode()}], now=now,
        )  # fmt: skip
        vendor_token, _ = await accounts.issue_credential(store, Role.VENDOR, VENDOR, now=now)
        tokens: dict[str, str] = {}
        iaks: dict[str, AttestKey] = {}
        for name in BACKUP_DEVICES:
            _, tokens[name] = await accounts.register_device(
                store, name, VENDOR, class_name=CLASS_NAME, now=now
            )
        for name in ATTEST_DEVICES:
            private = ec.generate_private_key(ec.SECP256R1())
            public = private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            _, tokens[name] = await accounts.register_device(
                store, name, VENDOR, class_name=CLASS_NAME,
                keys={"iak_pem": public.decode()}, now=now,
            )  # fmt: skip
            iaks[name] = AttestKey(AttestAlgorithm.ES256, private_key=private)
    finally:
        store.close()
    return Site(data_dir, logs, key, vendor_token, operator, tokens, iaks)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class ScenarioResult:
    """One scenario's outcome, printed as one JSON line; ``problems`` empty means it passed."""

    scenario: str
    rounds: int
    requests_acknowledged: int
    verified: int
    problems: list[str]
    details: dict[str, object] = field(default_factory=dict)

    def json_line(self) -> str:
        line: dict[str, object] = {
            "scenario": self.scenario,
            "rounds": self.rounds,
            "requests_acknowledged": self.requests_acknowledged,
            "verified": self.verified,
            "problems": self.problems,
        }
        line.update(self.details)
        return json.dumps(line, sort_keys=False)


def unhandled_errors(logs: Path) -> list[str]:
    """Requests the servers answered 500 (problem_middleware logs each as "unhandled error")."""
    found = []
    for log in sorted(logs.glob("server-*.err")):
        text = log.read_text(encoding="utf-8", errors="replace")
        found += [f"{log.name}: {line.strip()}" for line in text.splitlines()
                  if "unhandled error" in line]  # fmt: skip
    return found
