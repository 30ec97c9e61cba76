"""Attestation over HTTP with a real swtpm device: challenge, quote of the installed firmware,
signed EAR checked with the published JWKS, replay refused, tampering contraindicated, and the
gateway relaying evidence for its own devices only."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tpm2_pytss import ESAPI
from tpm2_pytss import types as tss
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPMA_OBJECT

from attest.ear import verify_ear_jwt
from attest.ear_claims import Status
from attest.eventlog import Event, encode_compact_log
from attest.keys import key_from_jwk
from attest.tpm import TpmAlg, parse_attest
from manifests import build_report, parse_envelope
from manifests.report import ReportResult
from suitsrv import accounts
from suitsrv.store import Role
from suitsrv.web.app import VERIFIER

from .service_fixtures import Service, start_service
from .swtpm import running_swtpm

AK_ATTRS = (
    TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.USERWITHAUTH | TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.SIGN_ENCRYPT
)  # fmt: skip
FIRMWARE = b"thermostat firmware 1.5.0 " * 400


@dataclass
class Tpm:
    esapi: ESAPI
    ak: ESYS_TR
    ak_public: bytes


@pytest.fixture(scope="module")
def tpm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tpm]:
    with running_swtpm(tmp_path_factory.mktemp("swtpm")) as sw, ESAPI(sw.tcti) as esapi:
        template = tss.TPM2B_PUBLIC(tss.TPMT_PUBLIC.parse("ecc256:ecdsa-sha256:null", AK_ATTRS))
        handle, public = esapi.create_primary(None, template, ESYS_TR.ENDORSEMENT)[:2]
        try:
            yield Tpm(esapi, handle, public.marshal())
        finally:
            esapi.flush_context(handle)


@pytest.fixture
async def svc(
    request: pytest.FixtureRequest, tmp_path: Path, aiohttp_client: Any, tpm: Tpm
) -> AsyncIterator[Service]:
    """The service with tpm-dev registered; parametrized (indirect) with a measurement PCR, it
    keeps the product policy (images in PCRs 16-23 at most warn, ADR 0006)."""
    pcr = getattr(request, "param", None)
    if pcr is None:
        service = await start_service(tmp_path, aiohttp_client)
    else:
        service = await start_service(
            tmp_path, aiohttp_client, allow_resettable_pcrs=False, measurement_pcr=pcr
        )
    _, token = await accounts.register_device(
        service.store, "tpm-dev", "acme", class_name="thermostat-v2", gateway="gw-1",
        keys={"ak_public": base64.b64encode(tpm.ak_public).decode()}, now=service.clock(),
    )  # fmt: skip
    service.devices["tpm-dev"] = token
    yield service
    service.store.close()


async def _install(svc: Service, image: bytes) -> None:
    """Publish a release of ``image`` and have tpm-dev report installing it."""
    await svc.upload_payload(image)
    envelope = svc.envelope(4, image)
    assert (await svc.upload_manifest(envelope)).status == 201
    poll = await svc.client.get("/v1/device/update", headers=svc.auth(svc.devices["tpm-dev"]))
    assert poll.status == 200  # a device reports only what its update poll handed it
    report = build_report(
        reference_uri="", manifest_digest=parse_envelope(envelope).digest,
        result=ReportResult(success=True),
    )  # fmt: skip
    headers = {**svc.auth(svc.devices["tpm-dev"]), "Content-Type": "application/suit-report+cose"}
    assert (await svc.client.post("/v1/device/reports", data=report, headers=headers)).status == 201


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _evidence(tpm: Tpm, nonce_b64: str, image: bytes, pcr: int = 16) -> dict[str, Any]:
    """What the device agent does at boot and when challenged: measure, log, quote. PCR 16 and
    23 are reset first (software may); PCR 9 cannot be, so one test of this module uses it."""
    nonce = base64.urlsafe_b64decode(nonce_b64 + "=" * (-len(nonce_b64) % 4))
    digest, handle = hashlib.sha256(image).digest(), getattr(ESYS_TR, f"PCR{pcr}")
    if pcr in (16, 23):
        tpm.esapi.pcr_reset(handle)
    tpm.esapi.pcr_extend(handle, tss.TPML_DIGEST_VALUES(
        [tss.TPMT_HA(hashAlg=TPM2_ALG.SHA256, digest=tss.TPMU_HA(sha256=digest))]))  # fmt: skip
    log = encode_compact_log([Event(pcr, None, {TpmAlg.SHA256: digest}, b"", (b"firmware",))])
    attest, signature = tpm.esapi.quote(tpm.ak, f"sha256:{pcr}", nonce)
    # Keep the TPML_DIGEST alive while reading it: tpm2-pytss frees its C memory with the object.
    _, _, values = tpm.esapi.pcr_read(f"sha256:{pcr}")
    value = bytes(values.digests[0])
    return {
        "format": "tpm2-quote", "nonce": nonce_b64, "quote": _b64(bytes(attest)),
        "signature": _b64(signature.marshal()), "pcrs": {"sha256": {str(pcr): value.hex()}},
        "event_log": _b64(log),
    }  # fmt: skip


async def _challenge(
    svc: Service, token: str, body: dict[str, str] | None = None, path: str = "device"
) -> str:
    headers = svc.auth(token)
    url = f"/v1/{path}/attestation/challenge"
    resp = (
        await svc.client.post(url, json=body, headers=headers)
        if body
        else await svc.client.post(url, headers=headers)
    )
    assert resp.status == 201, await resp.text()
    nonce: str = (await resp.json())["nonce"]
    return nonce


async def test_device_attests_the_installed_firmware(svc: Service, tpm: Tpm) -> None:
    await _install(svc, FIRMWARE)
    token = svc.devices["tpm-dev"]
    nonce = await _challenge(svc, token)
    evidence = _evidence(tpm, nonce, FIRMWARE)
    resp = await svc.client.post(
        "/v1/device/attestation/evidence", json=evidence, headers=svc.auth(token)
    )
    assert resp.status == 200, await resp.text()
    verdict = await resp.json()
    assert verdict["status"] == "affirming", verdict["reasons"]
    # A gateway checks the EAR itself with the published key.
    jwks = await (await svc.client.get("/.well-known/jwks.json")).json()
    key = key_from_jwk(jwks["keys"][0], name="suitsrv")
    nonce_bytes = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
    ear = verify_ear_jwt(verdict["ear"], key, now=int(svc.clock()), expected_nonce=nonce_bytes)
    (submod,) = ear.submods.values()
    assert submod.status is Status.AFFIRMING and submod.vector.executables == 2
    # The EAR says that images in the resettable PCR 16 were allowed to affirm (ADR 0006).
    assert submod.policy_ids == ("suitsrv/allow-resettable-pcrs",)
    # The same evidence again: the nonce was single-use.
    again = await svc.client.post(
        "/v1/device/attestation/evidence", json=evidence, headers=svc.auth(token)
    )
    assert again.status == 422 and (await again.json())["type"].endswith("evidence-not-fresh")


@pytest.mark.parametrize(
    ("svc", "status"),
    [(9, "affirming"), (16, "warning"), (23, "warning")],
    indirect=["svc"],
)
async def test_the_configured_measurement_pcr_and_the_product_policy(
    svc: Service, tpm: Tpm, status: str
) -> None:
    """The product default: only images measured into a PCR software cannot reset affirm."""
    pcr = svc.config.measurement_pcr
    await _install(svc, FIRMWARE)
    token = svc.devices["tpm-dev"]
    evidence = _evidence(tpm, await _challenge(svc, token), FIRMWARE, pcr)
    resp = await svc.client.post(
        "/v1/device/attestation/evidence", json=evidence, headers=svc.auth(token)
    )
    verdict = await resp.json()
    assert (resp.status, verdict["status"]) == (200, status), verdict
    resettable = [r for r in verdict["reasons"] if f"PCR {pcr}, which software can reset" in r]
    assert len(resettable) == (status == "warning")
    # Measured into the wrong PCR, the images are not found at all.
    evidence = _evidence(tpm, await _challenge(svc, token), FIRMWARE, 16 if pcr != 16 else 23)
    resp = await svc.client.post(
        "/v1/device/attestation/evidence", json=evidence, headers=svc.auth(token)
    )
    assert (await resp.json())["status"] == "contraindicated"


async def test_concurrent_evidence_of_one_device_is_appraised_in_turn(
    svc: Service, tpm: Tpm
) -> None:
    """Two quotes taken one after the other, sent at once newest first: each appraisal must see
    the clock the other stored, so the older one can never be stored last (rewinding the
    clock the next quote is checked against)."""
    await _install(svc, FIRMWARE)
    token = svc.devices["tpm-dev"]
    url = "/v1/device/attestation/evidence"
    for _ in range(4):
        older = _evidence(tpm, await _challenge(svc, token), FIRMWARE)
        await asyncio.sleep(0.02)  # the TPM clock counts milliseconds
        newer = _evidence(tpm, await _challenge(svc, token), FIRMWARE)
        answers = await asyncio.gather(
            *(svc.client.post(url, json=body, headers=svc.auth(token)) for body in (newer, older))
        )
        verdicts = [await resp.json() for resp in answers]
        assert [resp.status for resp in answers] == [200, 200], verdicts
        stored = await svc.store.get_verdict("tpm-dev")
        assert stored is not None and stored.clock is not None
        newest = max(_quote_clock(body) for body in (newer, older))
        assert stored.clock[0] == newest, [v["status"] for v in verdicts]
    assert len(svc.client.app[VERIFIER].appraising) == 0  # a lock lives while in use


def _quote_clock(evidence: dict[str, Any]) -> int:
    """TPMS_ATTEST.clockInfo.clock of a JSON evidence body's quote."""
    quote = base64.urlsafe_b64decode(evidence["quote"] + "=" * (-len(evidence["quote"]) % 4))
    return parse_attest(quote).clock_info.clock


async def test_tampered_firmware_is_a_stored_contraindicated_verdict(
    svc: Service, tpm: Tpm
) -> None:
    await _install(svc, FIRMWARE)
    gateway, _ = await accounts.issue_credential(svc.store, Role.GATEWAY, "gw-1", now=svc.clock())
    nonce = await _challenge(svc, gateway, {"device_id": "tpm-dev"}, path="gateway")
    evidence = {**_evidence(tpm, nonce, FIRMWARE + b"!"), "device_id": "tpm-dev"}
    resp = await svc.client.post(
        "/v1/gateway/attestation/verify", json=evidence, headers=svc.auth(gateway)
    )
    assert resp.status == 200
    verdict = await resp.json()
    assert verdict["status"] == "contraindicated"
    assert any(hashlib.sha256(FIRMWARE).hexdigest() in r for r in verdict["reasons"])
    stored = await svc.client.get("/v1/gateway/devices/tpm-dev/verdict", headers=svc.auth(gateway))
    assert (await stored.json())["ear"] == verdict["ear"]


async def test_gateways_reach_only_their_own_devices(svc: Service) -> None:
    other, _ = await accounts.issue_credential(svc.store, Role.GATEWAY, "gw-2", now=svc.clock())
    url = "/v1/gateway/attestation/challenge"
    resp = await svc.client.post(url, json={"device_id": "tpm-dev"}, headers=svc.auth(other))
    assert resp.status == 404
    resp = await svc.client.get("/v1/gateway/devices/tpm-dev/verdict", headers=svc.auth(other))
    assert resp.status == 404


async def test_malformed_evidence_is_a_problem(svc: Service) -> None:
    token = svc.devices["tpm-dev"]
    headers = svc.auth(token)
    for body in ({"format": "x"}, {"format": "tpm2-quote", "nonce": "AA"}, {"format": "eat"}):
        resp = await svc.client.post("/v1/device/attestation/evidence", json=body, headers=headers)
        assert resp.status == 400 and resp.content_type == "application/problem+json"


async def test_cbor_tpm_evidence(svc: Service, tpm: Tpm) -> None:
    import cbor2

    await _install(svc, FIRMWARE)
    token = svc.devices["tpm-dev"]
    nonce = await _challenge(svc, token)
    json_form = _evidence(tpm, nonce, FIRMWARE)

    def raw(key: str) -> bytes:
        value = json_form[key]
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))

    body = cbor2.dumps({
        "nonce": raw("nonce"), "quote": raw("quote"), "signature": raw("signature"),
        "event_log": raw("event_log"),
        "pcrs": {"sha256": {16: bytes.fromhex(json_form["pcrs"]["sha256"]["16"])}},
    })  # fmt: skip
    headers = {**svc.auth(token), "Content-Type": "application/cbor"}
    resp = await svc.client.post("/v1/device/attestation/evidence", data=body, headers=headers)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["status"] == "affirming"


async def test_eat_token_evidence(svc: Service) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from attest import _cbor
    from attest._cose import sign1
    from attest.keys import signing_key_from_pem

    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())  # fmt: skip
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _, token = await accounts.register_device(
        svc.store, "eat-dev", "acme", class_name="thermostat-v2",
        keys={"iak_pem": public.decode()}, now=svc.clock(),
    )  # fmt: skip
    await svc.upload_payload(FIRMWARE)
    envelope = svc.envelope(4, FIRMWARE)
    assert (await svc.upload_manifest(envelope)).status == 201
    assert (await svc.client.get("/v1/device/update", headers=svc.auth(token))).status == 200
    report = build_report(reference_uri="", manifest_digest=parse_envelope(envelope).digest,
                          result=ReportResult(success=True))  # fmt: skip
    headers = {**svc.auth(token), "Content-Type": "application/suit-report+cose"}
    assert (await svc.client.post("/v1/device/reports", data=report, headers=headers)).status == 201

    async def submit(image: bytes) -> dict[str, Any]:
        nonce_b64 = await _challenge(svc, token)
        nonce = base64.urlsafe_b64decode(nonce_b64 + "=" * (-len(nonce_b64) % 4))
        component = _cbor.dumps(
            {1: ["firmware", ["1.4.0"]], 2: [-16, hashlib.sha256(image).digest()]}
        )
        claims = _cbor.dumps({10: nonce, 273: [[295, component]]})
        cwt = sign1(claims, signing_key_from_pem(pem))
        headers = {**svc.auth(token), "Content-Type": "application/eat+cwt"}
        resp = await svc.client.post("/v1/device/attestation/evidence", data=cwt, headers=headers)
        assert resp.status == 200, await resp.text()
        result: dict[str, Any] = await resp.json()
        return result

    assert (await submit(FIRMWARE))["status"] == "affirming"
    assert (await submit(b"other firmware"))["status"] == "contraindicated"
