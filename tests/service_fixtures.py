"""A running service on 127.0.0.1 for tests: real HTTP, a real SQLite file in tmp_path, real
signatures. Nothing of ours is mocked; the clock and the jitter source are injected."""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from manifests import (
    Algorithm,
    Digest,
    SigningKey,
    build_manifest,
    generate_signing_key,
    load_spec,
    public_pem,
    sign,
)
from suitsrv import accounts
from suitsrv.config import Config, Limits
from suitsrv.store import Role, SqliteStore

VENDOR_DOMAIN = "acme.example"
CLASS_NAME = "thermostat-v2"


class FakeClock:
    """Test time source (outside the product): starts at a fixed instant, moves when told."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Service:
    client: TestClient[Any, Any]
    store: SqliteStore
    config: Config
    clock: FakeClock
    operator: str
    vendor_key: SigningKey
    vendor: str = "acme"
    vendor_token: str = ""
    devices: dict[str, str] = field(default_factory=dict)

    def auth(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def spec(self, sequence: int, payload: bytes, *, uri: bool = True, extra: str = "") -> str:
        digest = hashlib.sha256(payload).hexdigest()
        uri_line = f'uri = "https://updates.example/v1/payloads/{digest}"' if uri else ""
        return f"""
vendor-domain = "{VENDOR_DOMAIN}"
class-name = "{CLASS_NAME}"
sequence-number = {sequence}
version = "1.{sequence}.0"
{extra}
[[component]]
id = ["firmware"]
digest = "{digest}"
size = {len(payload)}
{uri_line}
"""

    def envelope(self, sequence: int, payload: bytes, **kwargs: Any) -> bytes:
        return sign(
            build_manifest(load_spec(self.spec(sequence, payload, **kwargs))), [self.vendor_key]
        )

    async def upload_payload(self, payload: bytes, token: str | None = None) -> Any:
        digest = hashlib.sha256(payload).hexdigest()
        return await self.client.put(
            f"/v1/vendor/payloads/{digest}",
            data=payload,
            headers=self.auth(token or self.vendor_token),
        )

    async def upload_manifest(self, envelope: bytes, token: str | None = None) -> Any:
        headers = {
            **self.auth(token or self.vendor_token),
            "Content-Type": "application/suit-envelope+cose",
        }
        return await self.client.post("/v1/vendor/manifests", data=envelope, headers=headers)


async def start_service(
    tmp_path: Path,
    aiohttp_client: Any,
    *,
    allow_resettable_pcrs: bool = True,
    measurement_pcr: int = 16,
    **limits: int,
) -> Service:
    """The app on a fresh data directory. Its TPM devices are swtpm simulations measuring into
    PCR 16, so images there may affirm unless a test asks for the product default (ADR 0006)."""
    from suitsrv.web import create_app

    config = Config(
        data_dir=tmp_path / "data",
        public_base_url="https://updates.example",
        poll_interval=600,
        poll_jitter=0.1,
        limits=Limits(**limits) if limits else Limits(),
        allow_resettable_pcrs=allow_resettable_pcrs,
        measurement_pcr=measurement_pcr,
    )
    store = SqliteStore(config.data_dir)
    clock = FakeClock()
    app = create_app(config, store, clock=clock, rng=random.Random(7))
    client = await aiohttp_client(app)
    operator = await accounts.init_operator(store, clock())
    assert operator is not None
    key = generate_signing_key(Algorithm.ES256)
    service = Service(client, store, config, clock, operator, key)
    await accounts.add_vendor(
        store,
        "acme",
        vendor_domains=[VENDOR_DOMAIN],
        anchors=[{"pem": public_pem(key).decode()}],
        now=clock(),
    )
    token, _ = await accounts.issue_credential(store, Role.VENDOR, "acme", now=clock())
    service.vendor_token = token
    for name in ("dev-1", "dev-2"):
        _, device_token = await accounts.register_device(
            store, name, "acme", class_name=CLASS_NAME, now=clock()
        )
        service.devices[name] = device_token
    return service


def random_payload(size: int = 200_000) -> bytes:
    return os.urandom(size)


def sha(data: bytes) -> str:
    return Digest.of(data).hex
