"""Attestation API: challenges, evidence (device-pushed or relayed by its gateway), verdicts,
and the verifier's public key as a JWKS."""

from __future__ import annotations

import base64
from typing import Any

from aiohttp import web

from suitsrv import attestation, devices
from suitsrv.auth import Principal
from suitsrv.errors import InvalidRequest, NotFound
from suitsrv.store import DeviceRecord, Role, VerdictRecord
from suitsrv.store import device_queries as dq

from .app import CLOCK, STORE, VERIFIER, Route, json_response, principal_of
from .bodies import read_body, read_json

__all__ = ["routes"]

_JSON_LIMIT = 4 << 20
EVIDENCE = tuple(
    attestation.EVIDENCE_TYPES
)  # quotes are small; compact event logs of a few components too


async def _json(request: web.Request) -> dict[str, Any]:
    return await read_json(request, _JSON_LIMIT)


def _wanted(caller: Principal, device_id: object) -> str:
    """The device a caller asks about: a device always itself, others the one they name."""
    if caller.role is Role.DEVICE:
        device_id = caller.scope
    if not isinstance(device_id, str) or not device_id:
        raise InvalidRequest("device_id is required")
    return device_id


def _yours(caller: Principal, device_id: str, device: DeviceRecord | None) -> DeviceRecord:
    """The device a caller may attest: a device itself; a gateway its own devices; operators any."""
    if device is None or (caller.role is Role.GATEWAY and device.gateway != caller.scope):
        raise NotFound(f"no device {device_id} of yours")
    return device


async def _target(
    request: web.Request, principal: Principal | None, device_id: object
) -> DeviceRecord:
    caller = principal_of(principal)
    wanted = _wanted(caller, device_id)
    return _yours(caller, wanted, await request.app[STORE].get_device(wanted))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _verdict_view(verdict: VerdictRecord) -> dict[str, object]:
    return {
        "device_id": verdict.device_id,
        "status": verdict.status,
        "ear": verdict.ear,
        "evidence": verdict.evidence,
        "reasons": list(verdict.reasons),
        "appraised_at": verdict.appraised_at,
        "expires_at": verdict.expires_at,
    }


async def post_challenge(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    caller = principal_of(principal)
    body = {} if caller.role is Role.DEVICE else await _json(request)
    device = await _target(request, principal, body.get("device_id"))
    nonces = request.app[VERIFIER].nonces
    challenge = nonces.issue(device.device_id, caller.token_id, request.app[CLOCK]())
    return json_response(
        {"device_id": device.device_id, "nonce": _b64(challenge.nonce),
         "expires_at": challenge.expires_at},
        status=201, headers={"Cache-Control": "no-store"},
    )  # fmt: skip


async def post_evidence(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    data = await read_body(request, _JSON_LIMIT)
    evidence, named = attestation.evidence_from_body(
        request.content_type, data, request.query.get("device_id")
    )
    caller = principal_of(principal)
    app = request.app
    device_id, verifier = _wanted(caller, named), app[VERIFIER]
    async with verifier.appraising.hold(device_id):  # read, appraise, store: one at a time
        # One store read for the device, its installed releases and its last verdict.
        subject = await attestation.read_subject(app[STORE], device_id)
        device = _yours(caller, device_id, subject.device if subject else None)
        assert subject is not None
        now = app[CLOCK]()
        verdict = await attestation.attest_device(app[STORE], verifier, subject, evidence, now)
        await devices.after_verdict(app[STORE], verifier.config, device, verdict.status, now,
                                    reasons=verdict.reasons, state=subject.state)  # fmt: skip
    return json_response(_verdict_view(verdict))


async def get_verdict(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    device = await _target(request, principal, request.match_info["device_id"])
    verdict = await request.app[STORE].get_verdict(device.device_id)
    if verdict is None:
        raise NotFound(f"device {device.device_id} has not been attested")
    return json_response(_verdict_view(verdict))


async def post_enroll(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    """Start AK enrollment: the credential challenge for TPM2_ActivateCredential."""
    body = await _json(request)
    device = await _target(request, principal, None)
    challenge = request.app[VERIFIER].enrollments.start(
        device, body.get("ek_public"), body.get("ak_public"), request.app[CLOCK]()
    )
    return json_response(challenge, status=201, headers={"Cache-Control": "no-store"})


async def post_activate(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    """Finish AK enrollment: the recovered secret proves the AK is in the EK's TPM."""
    body = await _json(request)
    device = await _target(request, principal, None)
    now = request.app[CLOCK]()
    ak = request.app[VERIFIER].enrollments.finish(
        device, body.get("enrollment_id"), body.get("secret"), now
    )
    store = request.app[STORE]
    await store.write(
        dq.set_device_key, device.device_id, "ak_public", base64.b64encode(ak).decode()
    )
    await store.append_timeline(
        device.device_id, now, "ak-enrolled", f"device:{device.device_id}", {}
    )
    return json_response({"device_id": device.device_id, "ak_enrolled": True})


async def get_jwks(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    jwks = request.app[VERIFIER].signer.jwks()
    return json_response(jwks, headers={"Cache-Control": "max-age=300"})


def routes() -> list[Route]:
    device = frozenset({Role.DEVICE})
    relays = frozenset({Role.GATEWAY, Role.OPERATOR})
    verdict_responses = {200: "the EAR and its status", 400: "malformed evidence",
                         404: "no such device of yours", 422: "stale or unknown nonce"}  # fmt: skip
    return [
        Route("POST", "/v1/device/attestation/challenge", post_challenge, device,
              "A single-use nonce for this device", "attestation",
              responses={201: "challenge"}, pinhole=True),
        Route("POST", "/v1/device/attestation/evidence", post_evidence, device,
              "Submit evidence answering a challenge; returns the signed EAR", "attestation",
              request_type=EVIDENCE, responses=verdict_responses, pinhole=True),
        Route("POST", "/v1/gateway/attestation/challenge", post_challenge, relays,
              "A single-use nonce for one of the gateway's devices", "attestation",
              request_type="application/json", responses={201: "challenge", 404: "not yours"}),
        Route("POST", "/v1/gateway/attestation/verify", post_evidence, relays,
              "Relay a device's evidence (background check); returns the signed EAR",
              "attestation", request_type=EVIDENCE, responses=verdict_responses),
        Route("GET", "/v1/gateway/devices/{device_id}/verdict", get_verdict, relays,
              "A device's latest attestation result", "attestation",
              responses={200: "verdict", 404: "none"}, parameters=("device_id",)),
        Route("POST", "/v1/device/attestation/enroll", post_enroll, device,
              "Start AK enrollment by credential activation (EK and AK public areas)",
              "attestation", request_type="application/json",
              responses={201: "credential challenge", 422: "EK not registered or AK unfit"}),
        Route("POST", "/v1/device/attestation/activate", post_activate, device,
              "Finish AK enrollment with the secret TPM2_ActivateCredential recovered",
              "attestation", request_type="application/json",
              responses={200: "AK enrolled", 422: "wrong or expired"}),
        Route("GET", "/.well-known/jwks.json", get_jwks, None,
              "The verifier's EAR signing key (JWKS)", "public", responses={200: "JWKS"}),
    ]  # fmt: skip
