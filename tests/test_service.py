"""The update service over real HTTP on 127.0.0.1: upload, poll, download, report."""

from __future__ import annotations

import hashlib
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from manifests import build_report, parse_envelope
from manifests.report import ReportResult
from suitsrv.store import Role
from suitsrv.store.queries import installs_of

from .service_fixtures import Service, random_payload, sha, start_service

ENVELOPE = "application/suit-envelope+cose"
REPORT = "application/suit-report+cose"


@pytest.fixture
async def svc(tmp_path: Path, aiohttp_client: Any) -> AsyncIterator[Service]:
    service = await start_service(tmp_path, aiohttp_client)
    yield service
    service.store.close()


async def _problem(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/problem+json"
    body: dict[str, Any] = await resp.json()
    assert body["status"] == status and body["type"].startswith("https://") and body["detail"]
    return body


async def test_upload_poll_download_report(svc: Service) -> None:
    payload = random_payload()
    envelope = svc.envelope(5, payload)
    resp = await svc.upload_manifest(envelope)
    assert resp.status == 201, await resp.text()
    release = await resp.json()
    assert release["published"] is False and release["payloads"] == [sha(payload)]

    device = svc.auth(svc.devices["dev-1"])
    resp = await svc.client.get("/v1/device/update", headers=device)
    assert resp.status == 204 and int(resp.headers["Poll-Interval"]) in range(540, 661)

    resp = await svc.upload_payload(payload)
    assert resp.status == 201
    assert (await resp.json())["published"] == [release["digest"]]
    resp = await svc.upload_payload(payload)  # idempotent
    assert resp.status == 200
    # Knowing a stored digest is not enough to learn it is stored: the bytes must hash to it.
    resp = await svc.client.put(
        f"/v1/vendor/payloads/{sha(payload)}", data=b"guess", headers=svc.auth(svc.vendor_token)
    )
    assert resp.status == 400 and "hashes to" in (await resp.json())["detail"]

    resp = await svc.client.get("/v1/device/update", headers=device)
    assert resp.status == 200 and resp.content_type == ENVELOPE
    assert await resp.read() == envelope  # exact stored bytes
    etag = resp.headers["ETag"]
    assert etag == f'"{release["digest"]}"'
    resp = await svc.client.get("/v1/device/update", headers={**device, "If-None-Match": etag})
    assert resp.status == 304

    resp = await svc.client.get(f"/v1/payloads/{sha(payload)}", headers=device)
    assert resp.status == 200 and await resp.read() == payload
    # An interrupted download resumed with Range gives identical bytes.
    first = await (
        await svc.client.get(
            f"/v1/payloads/{sha(payload)}", headers={**device, "Range": "bytes=0-65535"}
        )
    ).read()
    resp = await svc.client.get(
        f"/v1/payloads/{sha(payload)}",
        headers={
            **device,
            "Range": f"bytes={len(first)}-",
            "If-Range": etag.replace(release["digest"], sha(payload)),
        },
    )
    assert resp.status == 206
    assert hashlib.sha256(first + await resp.read()).hexdigest() == sha(payload)

    digest = parse_envelope(envelope).digest
    report = build_report(
        reference_uri="", manifest_digest=digest, result=ReportResult(success=True)
    )
    resp = await svc.client.post(
        "/v1/device/reports", data=report, headers={**device, "Content-Type": REPORT}
    )
    assert resp.status == 201, await resp.text()
    installs = await svc.store.read(installs_of, "dev-1")
    assert [(i.digest, i.sequence_number) for i in installs] == [(release["digest"], 5)]
    resp = await svc.client.get("/v1/device/update", headers=device)
    assert resp.status == 204  # nothing newer than what it installed

    newer = random_payload(1000)
    assert (await svc.upload_payload(newer)).status == 201
    assert (await svc.upload_manifest(svc.envelope(6, newer))).status == 201
    resp = await svc.client.get("/v1/device/update", headers=device)
    assert resp.status == 200 and resp.headers["Suit-Sequence-Number"] == "6"


async def test_rollback_and_replay_are_refused(svc: Service) -> None:
    payload = random_payload(100)
    assert (await svc.upload_manifest(svc.envelope(7, payload))).status == 201
    body = await _problem(await svc.upload_manifest(svc.envelope(3, payload)), 409)
    assert "rollback" in body["detail"] and body["newest_sequence_number"] == 7
    await _problem(await svc.upload_manifest(svc.envelope(7, random_payload(10))), 409)


async def test_same_manifest_resigned_is_idempotent(svc: Service) -> None:
    from manifests import Algorithm, generate_signing_key, public_pem, sign
    from suitsrv import accounts

    payload = random_payload(100)
    envelope = svc.envelope(9, payload)
    first = await (await svc.upload_manifest(envelope)).json()
    second_key = generate_signing_key(Algorithm.EDDSA)
    await accounts.add_anchor(
        svc.store, "acme", {"pem": public_pem(second_key).decode()}, svc.clock()
    )
    resigned = sign(envelope, [second_key], replace=True)
    assert resigned != envelope
    resp = await svc.upload_manifest(resigned)
    assert resp.status == 200
    assert (await resp.json())["digest"] == first["digest"]


@pytest.mark.parametrize(
    ("mutate", "status", "problem"),
    [
        (lambda e: e[:-1], 400, "malformed"),
        (lambda e: b"\x00\x01garbage", 400, "malformed"),
        (lambda e: e[:60] + bytes([e[60] ^ 1]) + e[61:], 422, "verification-failed"),
    ],
)
async def test_bad_envelopes_get_problems(
    svc: Service, mutate: Any, status: int, problem: str
) -> None:
    body = await _problem(await svc.upload_manifest(mutate(svc.envelope(1, b"x"))), status)
    assert body["type"].endswith(problem)


async def test_unsigned_and_foreign_uploads(svc: Service) -> None:
    from manifests import build_manifest, load_spec
    from suitsrv import accounts

    unsigned = build_manifest(load_spec(svc.spec(1, b"abc")))
    body = await _problem(await svc.upload_manifest(unsigned), 422)
    assert "no authentication block" in body["detail"]
    # A competitor holding the same key cannot publish for acme's vendor-id.
    from manifests import public_pem

    await accounts.add_vendor(
        svc.store,
        "rival",
        vendor_domains=["rival.example"],
        anchors=[{"pem": public_pem(svc.vendor_key).decode()}],
        now=svc.clock(),
    )
    rival, _ = await accounts.issue_credential(svc.store, Role.VENDOR, "rival", now=svc.clock())
    body = await _problem(await svc.upload_manifest(svc.envelope(1, b"abc"), rival), 422)
    assert "does not belong to vendor 'rival'" in body["detail"]


async def test_media_type_and_size_limits(svc: Service) -> None:
    headers = {**svc.auth(svc.vendor_token), "Content-Type": "application/cbor"}
    await _problem(
        await svc.client.post("/v1/vendor/manifests", data=b"\xa0", headers=headers), 415
    )
    headers["Content-Type"] = ENVELOPE
    big = b"\x00" * (svc.config.limits.envelope_bytes + 1)
    resp = await svc.client.post("/v1/vendor/manifests", data=io.BytesIO(big), headers=headers)
    await _problem(resp, 413)
    wrong = random_payload(100)
    resp = await svc.client.put(
        f"/v1/vendor/payloads/{sha(b'other')}", data=wrong, headers=svc.auth(svc.vendor_token)
    )
    body = await _problem(resp, 400)
    assert "hashes to" in body["detail"]
    assert not svc.store.blobs.exists(sha(b"other")) and not list(svc.store.blobs.tmp.iterdir())


async def test_unknown_routes_and_methods_are_problems(svc: Service) -> None:
    await _problem(await svc.client.get("/nope"), 404)
    body = await _problem(await svc.client.delete("/healthz"), 405)
    assert body["title"]


async def test_openapi_describes_every_route(svc: Service) -> None:
    doc = await (await svc.client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    described = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    served = {
        (r.method, r.resource.canonical)
        for r in svc.client.app.router.routes()
        if r.resource is not None
    }
    assert served == described


async def test_report_for_unknown_or_foreign_manifest(svc: Service) -> None:
    from manifests import Digest

    device = {**svc.auth(svc.devices["dev-1"]), "Content-Type": REPORT}
    report = build_report(
        reference_uri="", manifest_digest=Digest.of(b"nothing"), result=ReportResult(success=True)
    )
    await _problem(await svc.client.post("/v1/device/reports", data=report, headers=device), 404)
    await _problem(await svc.client.post("/v1/device/reports", data=b"\xa0", headers=device), 400)


async def test_use_before_and_version_conditions(svc: Service) -> None:
    device = svc.auth(svc.devices["dev-1"])
    base = random_payload(300)
    assert (await svc.upload_payload(base)).status == 201
    assert (await svc.upload_manifest(svc.envelope(1, base))).status == 201  # version 1.1.0
    assert (await svc.client.get("/v1/device/update", headers=device)).status == 200
    digest = parse_envelope(svc.envelope(1, base)).digest
    report = build_report(
        reference_uri="", manifest_digest=digest, result=ReportResult(success=True)
    )
    headers = {**device, "Content-Type": REPORT}
    assert (await svc.client.post("/v1/device/reports", data=report, headers=headers)).status == 201

    # Release 2 needs version >= 1.5 while the device runs 1.1.0: not offered.
    needs = random_payload(300)
    await svc.upload_payload(needs)
    spec = svc.spec(2, needs).replace(
        "[[component]]\n", '[[component]]\nrequires-version = ">=1.5"\n'
    )
    from manifests import build_manifest, load_spec, sign

    env2 = sign(build_manifest(load_spec(spec)), [svc.vendor_key])
    assert (await svc.upload_manifest(env2)).status == 201
    assert (await svc.client.get("/v1/device/update", headers=device)).status == 204

    # Release 3 accepts >= 1.0 but expires: offered until its use-before passes.
    late = random_payload(300)
    await svc.upload_payload(late)
    deadline = int(svc.clock()) + 3600
    spec3 = svc.spec(3, late, extra=f"use-before = {deadline}").replace(
        "[[component]]\n", '[[component]]\nrequires-version = ">=1.0"\n'
    )
    env3 = sign(build_manifest(load_spec(spec3)), [svc.vendor_key])
    assert (await svc.upload_manifest(env3)).status == 201
    resp = await svc.client.get("/v1/device/update", headers=device)
    assert resp.status == 200 and await resp.read() == env3
    svc.clock.now = deadline + 1
    assert (await svc.client.get("/v1/device/update", headers=device)).status == 204


async def test_a_damaged_payload_file_is_named_not_served(svc: Service, caplog: Any) -> None:
    payload = random_payload(4096)
    assert (await svc.upload_payload(payload)).status == 201
    blob = svc.store.blobs.path(sha(payload))
    operator = svc.auth(svc.operator)
    assert (await svc.client.get(f"/v1/payloads/{sha(payload)}", headers=operator)).status == 200
    with blob.open("r+b") as fh:  # cut short outside the service, as a disk fault would
        fh.truncate(100)
    resp = await svc.client.get(f"/v1/payloads/{sha(payload)}", headers=operator)
    assert resp.status == 500 and resp.content_type == "application/problem+json"
    problem = await resp.json()
    assert problem["type"].endswith("/damaged-blob") and sha(payload) in problem["detail"]
    assert "100 bytes on disk, 4096 recorded" in caplog.text
    blob.unlink()
    resp = await svc.client.get(f"/v1/payloads/{sha(payload)}", headers=operator)
    assert resp.status == 500 and (await resp.json())["type"].endswith("/damaged-blob")
