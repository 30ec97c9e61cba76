"""The device lifecycle over HTTP with a real swtpm: a gateway claims a device, reports
incidents until it is quarantined, the device fetches and reports a fixed release through its
pinhole, attests, and the gateway reinstates it; a device attesting tampered firmware goes back
to quarantine; advisories only from the class's own vendor."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from tpm2_pytss import ESAPI
from tpm2_pytss import types as tss
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPMA_OBJECT

from attest.eventlog import Event, encode_compact_log
from attest.tpm import TpmAlg
from manifests import build_report, parse_envelope
from manifests.report import ReportResult
from suitsrv import accounts
from suitsrv.errors import Conflict
from suitsrv.store import Role

from .service_fixtures import Service, start_service
from .swtpm import running_swtpm

AK_ATTRS = (
    TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.USERWITHAUTH | TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.SIGN_ENCRYPT
)  # fmt: skip
FIXED = b"thermostat firmware 2.0 (fixed) " * 300
CLAIM = "K7QX-29FD-LL3P"  # the claim code on the camera's label
CLAIM_BODY = {"device_id": "cam-1", "claim_code": CLAIM}


@pytest.fixture(scope="module")
def tpm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ESAPI, ESYS_TR, bytes]]:
    with running_swtpm(tmp_path_factory.mktemp("swtpm")) as sw, ESAPI(sw.tcti) as esapi:
        template = tss.TPM2B_PUBLIC(tss.TPMT_PUBLIC.parse("ecc256:ecdsa-sha256:null", AK_ATTRS))
        handle, public = esapi.create_primary(None, template, ESYS_TR.ENDORSEMENT)[:2]
        try:
            yield esapi, handle, public.marshal()
        finally:
            esapi.flush_context(handle)


@pytest.fixture
async def story(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    aiohttp_client: Any,
    tpm: tuple[ESAPI, ESYS_TR, bytes],
) -> AsyncIterator[tuple[Service, str, str]]:
    """A service, a registered TPM device and a gateway; parametrized (indirect) with False,
    the service keeps the product default for images in PCR 16 (ADR 0006)."""
    allow = getattr(request, "param", True)
    svc = await start_service(tmp_path, aiohttp_client, allow_resettable_pcrs=allow)
    _, device = await accounts.register_device(
        svc.store, "cam-1", "acme", class_name="thermostat-v2", claim_code=CLAIM,
        keys={"ak_public": base64.b64encode(tpm[2]).decode()}, now=svc.clock(),
    )  # fmt: skip
    gateway, _ = await accounts.issue_credential(
        svc.store, Role.GATEWAY, "gw-home", now=svc.clock()
    )
    yield svc, device, gateway
    svc.store.close()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def _attest(
    svc: Service, device: str, tpm: tuple[ESAPI, ESYS_TR, bytes], image: bytes
) -> dict[str, Any]:
    esapi, ak, _ = tpm
    resp = await svc.client.post("/v1/device/attestation/challenge", headers=svc.auth(device))
    assert resp.status == 201, await resp.text()
    nonce_b64 = (await resp.json())["nonce"]
    nonce = base64.urlsafe_b64decode(nonce_b64 + "=" * (-len(nonce_b64) % 4))
    digest = hashlib.sha256(image).digest()
    esapi.pcr_reset(ESYS_TR.PCR16)
    esapi.pcr_extend(ESYS_TR.PCR16, tss.TPML_DIGEST_VALUES(
        [tss.TPMT_HA(hashAlg=TPM2_ALG.SHA256, digest=tss.TPMU_HA(sha256=digest))]))  # fmt: skip
    attest, signature = esapi.quote(ak, "sha256:16", nonce)
    _, _, values = esapi.pcr_read("sha256:16")
    log = encode_compact_log([Event(16, None, {TpmAlg.SHA256: digest}, b"", (b"firmware",))])
    evidence = {"format": "tpm2-quote", "nonce": nonce_b64, "quote": _b64(bytes(attest)),
                "signature": _b64(signature.marshal()), "event_log": _b64(log),
                "pcrs": {"sha256": {"16": bytes(values.digests[0]).hex()}}}  # fmt: skip
    resp = await svc.client.post("/v1/device/attestation/evidence", json=evidence,
                                 headers=svc.auth(device))  # fmt: skip
    assert resp.status == 200, await resp.text()
    result: dict[str, Any] = await resp.json()
    return result


async def _state(svc: Service, gateway: str) -> dict[str, Any]:
    resp = await svc.client.get("/v1/gateway/devices/cam-1", headers=svc.auth(gateway))
    assert resp.status == 200, await resp.text()
    view: dict[str, Any] = await resp.json()
    return view


async def _quarantine(svc: Service, gateway: str) -> None:
    resp = await svc.client.post("/v1/gateway/devices", json=CLAIM_BODY, headers=svc.auth(gateway))
    assert resp.status == 201 and (await resp.json())["state"] == "nominal"
    incident = {"kind": "scanning", "window_start": 1, "window_end": 2,
                "destinations": [{"name": "10.0.0.0/8", "port": 23, "count": 4000}]}  # fmt: skip
    url = "/v1/gateway/devices/cam-1/incidents"
    first = await (await svc.client.post(url, json=incident, headers=svc.auth(gateway))).json()
    assert first["state"] == "suspicious"
    second = await svc.client.post(url, json=incident, headers=svc.auth(gateway))
    view = await second.json()
    assert view["state"] == "quarantined"
    assert view["pinhole"]["enabled_ace_names"][0] == "fw0-frdev"
    assert view["pinhole"]["mud_url"].endswith(".json")


async def _upgrade(svc: Service, device: str, image: bytes) -> None:
    await svc.upload_payload(image)
    envelope = svc.envelope(10, image)
    assert (await svc.upload_manifest(envelope)).status == 201
    resp = await svc.client.get("/v1/device/update", headers=svc.auth(device))
    assert resp.status == 200 and await resp.read() == envelope
    report = build_report(reference_uri="", manifest_digest=parse_envelope(envelope).digest,
                          result=ReportResult(success=True))  # fmt: skip
    headers = {**svc.auth(device), "Content-Type": "application/suit-report+cose"}
    assert (await svc.client.post("/v1/device/reports", data=report, headers=headers)).status == 201


async def test_quarantine_upgrade_attest_reinstate(
    story: tuple[Service, str, str], tpm: tuple[ESAPI, ESYS_TR, bytes]
) -> None:
    svc, device, gateway = story
    await _quarantine(svc, gateway)
    # The device itself cannot reinstate itself, nor call gateway routes.
    resp = await svc.client.post(
        "/v1/gateway/devices/cam-1/reinstatement", headers=svc.auth(device)
    )
    assert resp.status == 403
    await _upgrade(svc, device, FIXED)
    assert (await _state(svc, gateway))["state"] == "returning-to-service"
    # Not yet: no verdict.
    resp = await svc.client.post(
        "/v1/gateway/devices/cam-1/reinstatement", headers=svc.auth(gateway)
    )
    assert resp.status == 409 and "verdict" in (await resp.json())["detail"]
    verdict = await _attest(svc, device, tpm, FIXED)
    assert verdict["status"] == "affirming", verdict["reasons"]
    view = await _state(svc, gateway)
    assert view["verdict_affirmed"] and view["config_restored"]  # no backup: nothing to restore
    signals = await svc.store.signals_after("gw-home", 0, 100)
    assert [s.kind for s in signals][-1] == "reinstatement-ready"
    assert "quarantined" in [s.kind for s in signals]
    resp = await svc.client.post(
        "/v1/gateway/devices/cam-1/reinstatement", headers=svc.auth(gateway)
    )
    assert resp.status == 200 and (await resp.json())["state"] == "nominal"
    kinds = [entry.kind for entry in await svc.store.timeline("cam-1", 0, 100)]
    assert kinds.count("transition") >= 7 and "signal" in kinds


async def test_tampered_firmware_stays_quarantined(
    story: tuple[Service, str, str], tpm: tuple[ESAPI, ESYS_TR, bytes]
) -> None:
    svc, device, gateway = story
    await _quarantine(svc, gateway)
    await _upgrade(svc, device, FIXED)
    verdict = await _attest(svc, device, tpm, FIXED + b"implant")
    assert verdict["status"] == "contraindicated"
    view = await _state(svc, gateway)
    # Back in quarantine within the recidivism window: escalated to an operator.
    assert view["state"] == "quarantined" and view["escalated"] is True
    # And it gets no configuration back.
    restore = await svc.client.get("/v1/device/config", headers=svc.auth(device))
    assert restore.status == 409
    resp = await svc.client.post(
        "/v1/gateway/devices/cam-1/reinstatement", headers=svc.auth(gateway)
    )
    assert resp.status == 409


@pytest.mark.parametrize("story", [False], indirect=True)
async def test_the_default_policy_reinstates_nothing_measured_in_pcr_16(
    story: tuple[Service, str, str], tpm: tuple[ESAPI, ESYS_TR, bytes]
) -> None:
    """Malware may reset PCR 16 and extend the expected digests: with the product default the
    right firmware there is a warning, which neither restores configuration nor reinstates."""
    svc, device, gateway = story
    await _quarantine(svc, gateway)
    await _upgrade(svc, device, FIXED)
    verdict = await _attest(svc, device, tpm, FIXED)
    assert verdict["status"] == "warning"
    assert any("PCR 16, which software can reset" in r for r in verdict["reasons"])
    view = await _state(svc, gateway)
    assert view["state"] == "returning-to-service" and not view["verdict_affirmed"]
    assert (await svc.client.get("/v1/device/config", headers=svc.auth(device))).status == 409
    resp = await svc.client.post(
        "/v1/gateway/devices/cam-1/reinstatement", headers=svc.auth(gateway)
    )
    assert resp.status == 409 and "verdict" in (await resp.json())["detail"]


async def test_claims_and_advisories_are_scoped(story: tuple[Service, str, str]) -> None:
    svc, _, gateway = story
    other, _ = await accounts.issue_credential(svc.store, Role.GATEWAY, "gw-other", now=svc.clock())
    claim = {"device_id": "cam-1", "claim_code": CLAIM}
    # Without the code printed on the device, nobody claims it; the answer is the same as for
    # a device that does not exist (no oracle).
    guess = await svc.client.post("/v1/gateway/devices", json={**claim, "claim_code": "wrong-code"},
                                  headers=svc.auth(other))  # fmt: skip
    nothing = await svc.client.post("/v1/gateway/devices", json={**claim, "device_id": "nope"},
                                    headers=svc.auth(other))  # fmt: skip
    assert guess.status == nothing.status == 404
    ok = await svc.client.post("/v1/gateway/devices", json=claim, headers=svc.auth(gateway))
    assert ok.status == 201
    resp = await svc.client.post("/v1/gateway/devices", json=claim, headers=svc.auth(other))
    assert resp.status == 404  # claimed by another gateway: the same answer
    resp = await svc.client.get("/v1/gateway/devices/cam-1", headers=svc.auth(other))
    assert resp.status == 404
    # A rival vendor cannot advise acme's class; acme can.
    await accounts.add_vendor(svc.store, "rival", vendor_domains=["rival.example"], now=svc.clock())
    rival, _ = await accounts.issue_credential(svc.store, Role.VENDOR, "rival", now=svc.clock())
    device = await svc.store.get_device("cam-1")
    assert device is not None
    body = {"class_id": device.class_id, "max_sequence_number": 5}
    resp = await svc.client.post("/v1/vendor/advisories", json={**body, "vendor": "acme"},
                                 headers=svc.auth(rival))  # fmt: skip
    assert resp.status == 403
    resp = await svc.client.post("/v1/vendor/advisories", json=body, headers=svc.auth(rival))
    assert resp.status == 201 and (await resp.json())["matched"] == []
    resp = await svc.client.post(
        "/v1/vendor/advisories", json=body, headers=svc.auth(svc.vendor_token)
    )
    assert resp.status == 201 and "cam-1" in (await resp.json())["matched"]
    assert (await _state(svc, gateway))["state"] == "suspect"


async def test_manufacturer_registers_devices_in_bulk(story: tuple[Service, str, str]) -> None:
    svc, _, _ = story
    body = {"devices": [
        {"device_id": "bulk-1", "class_name": "thermostat-v2", "keys": {"ek_public": "AAAA"}},
        {"device_id": "bulk-2", "class_name": "thermostat-v2"},
    ]}  # fmt: skip
    resp = await svc.client.post(
        "/v1/vendor/devices", json=body, headers=svc.auth(svc.vendor_token)
    )
    assert resp.status == 201, await resp.text()
    tokens = {d["device_id"]: d["token"] for d in (await resp.json())["devices"]}
    assert (
        await svc.client.get("/v1/device/update", headers=svc.auth(tokens["bulk-2"]))
    ).status == 204
    again = await svc.client.post(
        "/v1/vendor/devices", json=body, headers=svc.auth(svc.vendor_token)
    )
    assert again.status == 409
    # A bad entry anywhere refuses the whole batch: the good entries before it are not stored.
    for bad in ({"device_id": "bulk-4", "class_name": "x", "claim_code": "short"},
                {"device_id": "bulk-4", "class_id": "not-a-uuid"},
                {"device_id": "bulk-4", "class_name": "x", "gateway": "gw-home"},
                {"device_id": 4, "class_name": "x"}):  # fmt: skip
        batch = {"devices": [{"device_id": "bulk-3", "class_name": "thermostat-v2"}, bad]}
        resp = await svc.client.post(
            "/v1/vendor/devices", json=batch, headers=svc.auth(svc.vendor_token)
        )
        assert resp.status == 400 and "devices[1]" in (await resp.json())["detail"], bad
        assert await svc.store.get_device("bulk-3") is None
    # The store writes a batch in one transaction: a taken id found there (a registration
    # racing this one) stores none of it.
    vendor = await svc.store.get_vendor("acme")
    assert vendor is not None
    fresh, taken = (
        accounts.device_record(vendor, name, class_name="thermostat-v2", now=svc.clock())
        for name in ("bulk-5", "bulk-1")
    )
    with pytest.raises(Conflict):
        await accounts.add_devices(svc.store, [fresh, taken], svc.clock())
    assert await svc.store.get_device("bulk-5") is None


async def test_the_full_story_with_backup_restore_sse_and_webhook(
    story: tuple[Service, str, str], tpm: tuple[ESAPI, ESYS_TR, bytes], aiohttp_server: Any
) -> None:
    """enroll → back up config → incident → quarantined (pinhole only) → new manifest → update
    → report → attest (affirming) → restore (the pre-incident backup, not the one written while
    compromised) → signal on SSE and webhook → acknowledged → nominal."""
    import asyncio
    import hmac
    import json

    from aiohttp import web

    svc, device, gateway = story
    secret = "ab" * 32
    hooks: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        mac = hmac.new(bytes.fromhex(secret), request.headers["Suitsrv-Timestamp"].encode()
                       + b"." + body, hashlib.sha256).hexdigest()  # fmt: skip
        assert hmac.compare_digest(request.headers["Suitsrv-Signature"], f"sha256={mac}")
        hooks.append(json.loads(body))
        return web.Response(status=204)

    receiver = web.Application()
    receiver.router.add_post("/hook", hook)
    server = await aiohttp_server(receiver)
    hook_url = str(server.make_url("/hook"))
    resp = await svc.client.put(
        "/v1/gateway/webhook", headers=svc.auth(gateway), json={"url": hook_url, "secret": secret}
    )
    assert resp.status in (200, 201), await resp.text()

    async def backup(data: bytes) -> int:
        resp = await svc.client.put("/v1/device/config", data=data, headers={
            **svc.auth(device), "Content-Type": "application/octet-stream"})  # fmt: skip
        return resp.status

    # Enroll, back up while nominal, then an incident: a backup taken while suspicious is kept
    # but must never come back; the second incident quarantines.
    claim = await svc.client.post("/v1/gateway/devices", json=CLAIM_BODY, headers=svc.auth(gateway))
    assert claim.status == 201
    assert await backup(b"wifi=home\nadmin=alice\n") == 201
    incident = {"kind": "scanning", "window_start": 1, "window_end": 2}
    url = "/v1/gateway/devices/cam-1/incidents"
    assert (await svc.client.post(url, json=incident, headers=svc.auth(gateway))).status == 201
    assert await backup(b"wifi=home\nadmin=mallory\n") == 201  # written while compromised
    resp = await svc.client.post(url, json=incident, headers=svc.auth(gateway))
    assert (await resp.json())["state"] == "quarantined"
    assert await backup(b"anything") == 403  # outside the pinhole now

    await _upgrade(svc, device, FIXED)
    verdict = await _attest(svc, device, tpm, FIXED)
    assert verdict["status"] == "affirming"
    view = await _state(svc, gateway)
    assert view["verdict_affirmed"] and not view["config_restored"]  # a backup waits
    restore = await svc.client.get("/v1/device/config", headers=svc.auth(device))
    assert restore.status == 200 and await restore.read() == b"wifi=home\nadmin=alice\n"
    version = int(restore.headers["Suitsrv-Config-Version"])
    done = await svc.client.post("/v1/device/config/restored", json={"version": version},
                                 headers=svc.auth(device))  # fmt: skip
    assert done.status == 200, await done.text()

    # The gateway hears it on its event stream and its webhook, then acknowledges.
    events: list[str] = []
    stream = await svc.client.get("/v1/gateway/events", headers=svc.auth(gateway))
    async with asyncio.timeout(10):
        async for raw in stream.content:
            line = raw.decode().strip()
            if line.startswith("event:"):
                events.append(line.split(":", 1)[1].strip())
            if "reinstatement-ready" in events:
                break
    stream.close()
    assert events.index("quarantined") < events.index("reinstatement-ready")
    async with asyncio.timeout(10):
        while "reinstatement-ready" not in [h["kind"] for h in hooks]:
            await asyncio.sleep(0.05)
    ack = await svc.client.post(
        "/v1/gateway/devices/cam-1/reinstatement", headers=svc.auth(gateway)
    )
    assert ack.status == 200 and (await ack.json())["state"] == "nominal"
    async with asyncio.timeout(10):
        while "reinstated" not in [h["kind"] for h in hooks]:
            await asyncio.sleep(0.05)
    timeline = await svc.client.get("/v1/operator/devices/cam-1/timeline",
                                    headers=svc.auth(svc.operator))  # fmt: skip
    kinds = [(e["kind"], e["event"]) for e in (await timeline.json())["events"]]
    assert ("transition", "config-restored") in kinds and ("backup", None) in kinds


async def test_a_report_must_name_the_release_the_device_was_given(
    story: tuple[Service, str, str],
) -> None:
    """Review finding: a quarantined device reporting an older release it was never handed
    must not move on (it would then be appraised against that old release)."""
    svc, device, gateway = story
    old = b"old firmware " * 100
    await svc.upload_payload(old)
    old_envelope = svc.envelope(5, old)
    assert (await svc.upload_manifest(old_envelope)).status == 201
    await _quarantine(svc, gateway)
    await svc.upload_payload(FIXED)
    assert (await svc.upload_manifest(svc.envelope(10, FIXED))).status == 201
    assert (await svc.client.get("/v1/device/update", headers=svc.auth(device))).status == 200
    assert (await _state(svc, gateway))["state"] == "upgrading"
    report = build_report(reference_uri="", manifest_digest=parse_envelope(old_envelope).digest,
                          result=ReportResult(success=True))  # fmt: skip
    headers = {**svc.auth(device), "Content-Type": "application/suit-report+cose"}
    resp = await svc.client.post("/v1/device/reports", data=report, headers=headers)
    assert resp.status == 409
    assert (await _state(svc, gateway))["state"] == "upgrading"
