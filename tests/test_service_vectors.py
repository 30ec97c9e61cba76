"""The public example manifests through the service: upload, rollback, re-signature, poll and
the public SUIT_Report, read in place from SUITSRV_VECTORS."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from suitsrv import accounts
from suitsrv.store import Role

from .service_fixtures import Service, start_service

ARM_CLASS = "1492af14-2569-5e48-bf42-9b2d51f2ab45"  # manifest-37 Appendix B class-id


@pytest.fixture
async def arm(
    tmp_path: Path, aiohttp_client: Any, suit_vectors: Path
) -> AsyncIterator[tuple[Service, str, str]]:
    svc = await start_service(tmp_path, aiohttp_client)
    key = (suit_vectors / "keys" / "draft-example-p256.pub.pem").read_text()
    now = svc.clock()
    await accounts.add_vendor(
        svc.store, "arm", vendor_domains=["arm.com"], anchors=[{"pem": key}], now=now
    )
    vendor, _ = await accounts.issue_credential(svc.store, Role.VENDOR, "arm", now=now)
    _, device = await accounts.register_device(
        svc.store, "ex-dev", "arm", class_id=ARM_CLASS, now=now
    )
    yield svc, vendor, device
    svc.store.close()


async def test_public_examples(arm: tuple[Service, str, str], suit_vectors: Path) -> None:
    svc, vendor, device = arm
    example0 = (suit_vectors / "manifest-draft37" / "example0.signed.cbor").read_bytes()
    resp = await svc.upload_manifest(example0, vendor)
    assert resp.status == 201, await resp.text()
    release = await resp.json()
    assert release["digest"] == "6658ea560262696dd1f13b782239a064da7c6c5cbaf52fded428a6fc83c7e5af"
    assert release["published"] is True  # no payload to fetch in example 0

    # The same manifest re-signed with ESP256 (libcsuit) is the same release.
    esp256 = (suit_vectors / "libcsuit" / "suit_manifest_exp0.cbor").read_bytes()
    resp = await svc.upload_manifest(esp256, vendor)
    assert resp.status == 200 and (await resp.json())["digest"] == release["digest"]

    poll = await svc.client.get("/v1/device/update", headers=svc.auth(device))
    assert poll.status == 200 and await poll.read() == example0

    # Example 3 (sequence 3) waits for its payloads; example 1 (sequence 1) is then a rollback.
    example3 = (suit_vectors / "manifest-draft37" / "example3.signed.cbor").read_bytes()
    resp = await svc.upload_manifest(example3, vendor)
    assert resp.status == 201 and (await resp.json())["published"] is False
    example1 = (suit_vectors / "manifest-draft37" / "example1.signed.cbor").read_bytes()
    resp = await svc.upload_manifest(example1, vendor)
    assert resp.status == 409

    # The public SUIT_Report refers to example 0 by its digest.
    report = (suit_vectors / "reports" / "attestam-report-unsigned.cbor").read_bytes()
    resp = await svc.client.post(
        "/v1/device/reports",
        data=report,
        headers={**svc.auth(device), "Content-Type": "application/suit-report+cose"},
    )
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["digest"] == release["digest"]


@pytest.mark.parametrize(
    ("vector", "problem", "words"),
    [
        ("manifest-draft37/example0.unsigned.cbor", "verification-failed", "no authentication"),
        ("legacy/yuichitk-libcsuit/suit_manifest_exp1.cbor", "unsupported", "drafts -17..-27"),
        ("trust-domains/example0_dependent.cbor", "manifest-rejected", "vendor-id"),
    ],
)
async def test_public_rejects(
    arm: tuple[Service, str, str], suit_vectors: Path, vector: str, problem: str, words: str
) -> None:
    svc, vendor, _ = arm
    resp = await svc.upload_manifest((suit_vectors / vector).read_bytes(), vendor)
    assert 400 <= resp.status < 500
    body = await resp.json()
    assert body["type"].endswith(problem), body
    assert words in body["detail"]
