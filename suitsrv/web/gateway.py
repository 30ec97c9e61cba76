"""Gateway API: claim devices, report incidents, order quarantine, acknowledge reinstatement;
and advisories, the manufacturer's (or an operator's) "class C up to sequence N is suspect"."""

from __future__ import annotations

import hmac
from typing import Any

from aiohttp import web

from suitsrv import accounts, devices
from suitsrv.auth import Principal
from suitsrv.errors import Forbidden, InvalidRequest, NotFound
from suitsrv.jsonbody import unix_time
from suitsrv.lifecycle import PINHOLE_STATES, Event
from suitsrv.store import DeviceRecord, Role
from suitsrv.store import device_queries as dq

from .app import CLOCK, CONFIG, STORE, Route, json_response, principal_of
from .bodies import read_json

__all__ = ["routes"]

_JSON_LIMIT = 256 << 10
_INCIDENT_KINDS = frozenset({"mud-violation", "scanning", "exfiltration", "malware", "other"})


async def _json(request: web.Request) -> dict[str, Any]:
    return await read_json(request, _JSON_LIMIT)


async def _own_device(request: web.Request, principal: Principal | None) -> DeviceRecord:
    caller = principal_of(principal)
    device = await request.app[STORE].get_device(request.match_info["device_id"])
    if device is None or (caller.role is Role.GATEWAY and device.gateway != caller.scope):
        raise NotFound(f"no device {request.match_info['device_id']} of yours")
    return device


async def _state_view(request: web.Request, device: DeviceRecord) -> dict[str, Any]:
    lc = await request.app[STORE].get_lifecycle(device.device_id)
    view: dict[str, Any] = {
        "device_id": device.device_id, "state": str(lc.state), "escalated": lc.escalated,
        "verdict_affirmed": lc.verdict_affirmed, "config_restored": lc.config_restored_or_none,
    }  # fmt: skip
    if lc.state in PINHOLE_STATES:
        view["pinhole"] = devices.pinhole(request.app[CONFIG], device)
    return view


async def claim(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    """A gateway claims a device it sees, proving possession with the claim code printed on the
    device; the identifiers it saw must match the registration. An unknown device, a wrong code
    and a device claimed by another gateway all get the same answer (no existence oracle)."""
    caller = principal_of(principal)
    body = await _json(request)
    device_id, code = body.get("device_id"), body.get("claim_code")
    if not isinstance(device_id, str) or not isinstance(code, str):
        raise InvalidRequest("device_id and claim_code are required")
    store, config = request.app[STORE], request.app[CONFIG]
    found = await store.get_device(device_id)
    expected = found.keys.get("claim_code_sha256") if found else None
    if (
        found is None
        or expected is None
        or not hmac.compare_digest(expected, accounts.claim_code_hash(code))
        or found.gateway not in (None, caller.scope)
    ):
        raise NotFound(f"no device {device_id} with that claim code is waiting to be claimed")
    device = found
    for field, have in (("vendor", device.vendor), ("class_id", device.class_id)):
        if field in body and body[field] != have:
            raise InvalidRequest(f"{field} {body[field]!r} does not match the registered device")
    if "mud_url" in body and body["mud_url"] != devices.pinhole(config, device)["mud_url"]:
        raise InvalidRequest("mud_url does not match the device's class")
    await store.write(dq.claim, device_id, caller.scope)
    device = await devices.device_of(store, device_id)
    now = request.app[CLOCK]()
    await devices.record_if_allowed(store, config, device, Event.ENROLLED, role="gateway",
                                    actor=caller.token_id, now=now)  # fmt: skip
    return json_response(await _state_view(request, device), status=201)


async def get_device(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    return json_response(await _state_view(request, await _own_device(request, principal)))


async def report_incident(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    """An incident summary (no payloads): kind, time window, destination names/ports/counts."""
    caller = principal_of(principal)
    device = await _own_device(request, principal)
    body = await _json(request)
    kind = body.get("kind")
    if not isinstance(kind, str) or kind not in _INCIDENT_KINDS:
        raise InvalidRequest(f"kind must be one of {sorted(_INCIDENT_KINDS)}")
    start = unix_time(body.get("window_start"), "window_start")
    end = unix_time(body.get("window_end"), "window_end")
    destinations = body.get("destinations", [])
    if (
        not isinstance(destinations, list)
        or len(destinations) > 1000
        or not all(
            isinstance(d, dict) and set(d) <= {"name", "port", "count"} for d in destinations
        )
    ):
        raise InvalidRequest("destinations: up to 1000 objects of name, port, count (no payloads)")
    store, config, now = request.app[STORE], request.app[CONFIG], request.app[CLOCK]()
    summary = {"destinations": destinations}
    incident_id = await store.write(
        dq.insert_incident, device.device_id, caller.scope, kind, (start, end), summary, now
    )
    await devices.record(store, config, device, Event.INCIDENT_REPORTED, role="gateway",
                         actor=caller.token_id, now=now,
                         detail={"incident_id": incident_id, "kind": kind})  # fmt: skip
    return json_response({**await _state_view(request, device), "incident_id": incident_id},
                         status=201)  # fmt: skip


def _event_route(event: Event) -> Any:
    async def handler(request: web.Request, principal: Principal | None) -> web.StreamResponse:
        caller = principal_of(principal)
        device = await _own_device(request, principal)
        await devices.record(request.app[STORE], request.app[CONFIG], device, event,
                             role=str(caller.role), actor=caller.token_id,
                             now=request.app[CLOCK]())  # fmt: skip
        return json_response(await _state_view(request, device))

    handler.__name__ = f"post_{event.name.lower()}"
    return handler


async def post_advisory(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    """Devices of a class running sequence numbers <= N are suspect until upgraded. Only the
    class's own vendor (or an operator) may say so: a competitor cannot take devices offline."""
    caller = principal_of(principal)
    body = await _json(request)
    vendor = caller.scope if caller.role is Role.VENDOR else body.get("vendor")
    class_id, max_seq = body.get("class_id"), body.get("max_sequence_number")
    if not isinstance(vendor, str) or not isinstance(class_id, str):
        raise InvalidRequest("class_id (and vendor, for an operator) are required")
    if not isinstance(max_seq, int) or isinstance(max_seq, bool) or not 0 <= max_seq < 2**64:
        raise InvalidRequest("max_sequence_number must be an unsigned integer")
    if caller.role is Role.VENDOR and body.get("vendor", vendor) != vendor:
        raise Forbidden("a vendor issues advisories for its own classes only")
    store, config, now = request.app[STORE], request.app[CONFIG], request.app[CLOCK]()
    targets = await store.read(dq.advisory_targets, vendor, class_id, max_seq)
    note = str(body.get("note", ""))[:1000]
    advisory_id = await store.write(dq.insert_advisory, vendor, class_id, max_seq,
                                    caller.token_id, note, now)  # fmt: skip
    matched: list[str] = []
    unchanged: list[str] = []
    for device_id in targets:
        device = await devices.device_of(store, device_id)
        after = await devices.record_if_allowed(
            store, config, device, Event.ADVISORY_MATCHED, role=str(caller.role),
            actor=caller.token_id, now=now, detail={"advisory_id": advisory_id},
        )  # fmt: skip
        (matched if after is not None else unchanged).append(device_id)
    return json_response({"advisory_id": advisory_id, "matched": matched, "unchanged": unchanged},
                         status=201)  # fmt: skip


def routes() -> list[Route]:
    gw = frozenset({Role.GATEWAY})
    gw_op = frozenset({Role.GATEWAY, Role.OPERATOR})
    js = "application/json"
    own = {200: "device state", 404: "not yours", 409: "not allowed in this state"}
    return [
        Route("POST", "/v1/gateway/devices", claim, gw, "Claim a device the gateway sees",
              "gateway", request_type=js,
              responses={201: "claimed", 400: "mismatch", 404: "unknown", 409: "claimed"}),
        Route("GET", "/v1/gateway/devices/{device_id}", get_device, gw_op,
              "A device's lifecycle state (and its pinhole while quarantined)", "gateway",
              responses=own, parameters=("device_id",)),
        Route("POST", "/v1/gateway/devices/{device_id}/incidents", report_incident, gw,
              "Report an incident (summary only)", "gateway", request_type=js,
              responses={201: "recorded", 400: "invalid", 404: "not yours", 409: "state"},
              parameters=("device_id",)),
        Route("POST", "/v1/gateway/devices/{device_id}/incidents/clear",
              _event_route(Event.INCIDENT_CLEARED), gw_op, "Clear a suspicion", "gateway",
              responses=own, parameters=("device_id",)),
        Route("POST", "/v1/gateway/devices/{device_id}/quarantine",
              _event_route(Event.QUARANTINE_ORDERED), gw_op, "Quarantine a device", "gateway",
              responses=own, parameters=("device_id",)),
        Route("POST", "/v1/gateway/devices/{device_id}/reinstatement",
              _event_route(Event.REINSTATEMENT_ACKNOWLEDGED), gw,
              "Acknowledge reinstatement (after an affirming verdict and the restore)",
              "gateway", responses=own, parameters=("device_id",)),
        Route("POST", "/v1/vendor/advisories", post_advisory,
              frozenset({Role.VENDOR, Role.OPERATOR}),
              "Devices of a class up to a sequence number are suspect until upgraded", "vendor",
              request_type=js, responses={201: "issued", 400: "invalid", 403: "not your class"}),
    ]  # fmt: skip
