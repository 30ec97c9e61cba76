"""Operator API: vendors and trust anchors, credentials, devices."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from suitsrv import accounts
from suitsrv.auth import Principal
from suitsrv.errors import InvalidRequest, NotFound
from suitsrv.store import AnchorRecord, DeviceRecord, Role, VendorRecord

from .app import CLOCK, STORE, TOKENS, Route, json_response, principal_of
from .bodies import read_json

__all__ = ["device_view", "routes"]

_JSON_LIMIT = 256 << 10


async def _json(request: web.Request) -> dict[str, Any]:
    return await read_json(request, _JSON_LIMIT)


def _list_of_str(body: dict[str, Any], key: str) -> list[str]:
    value = body.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidRequest(f"{key} must be a list of strings")
    return value


def _vendor_view(vendor: VendorRecord, anchors: list[AnchorRecord]) -> dict[str, object]:
    return {
        "name": vendor.name,
        "vendor_ids": list(vendor.vendor_ids),
        "anchors": [
            {"anchor_id": a.anchor_id, "kind": a.kind, "algorithms": list(a.algorithms)}
            for a in anchors
        ],
    }


def device_view(device: DeviceRecord) -> dict[str, object]:
    return {
        "device_id": device.device_id,
        "vendor": device.vendor,
        "class_id": device.class_id,
        "gateway": device.gateway,
        "keys": sorted(device.keys),
        "created_at": device.created_at,
    }


async def post_vendor(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    principal_of(principal)
    body = await _json(request)
    anchors = body.get("anchors", [])
    if not isinstance(anchors, list) or not all(isinstance(a, dict) for a in anchors):
        raise InvalidRequest("anchors must be a list of objects")
    vendor, records = await accounts.add_vendor(
        request.app[STORE],
        str(body.get("name", "")),
        vendor_ids=_list_of_str(body, "vendor_ids"),
        vendor_domains=_list_of_str(body, "vendor_domains"),
        anchors=anchors,
        now=request.app[CLOCK](),
    )
    return json_response(_vendor_view(vendor, records), status=201)


async def list_vendors(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    principal_of(principal)
    store = request.app[STORE]
    vendors = [_vendor_view(v, await store.anchors_for(v.name)) for v in await store.list_vendors()]
    return json_response({"vendors": vendors})


async def post_anchor(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    principal_of(principal)
    record = await accounts.add_anchor(
        request.app[STORE], request.match_info["name"], await _json(request), request.app[CLOCK]()
    )
    return json_response(
        {"anchor_id": record.anchor_id, "kind": record.kind, "algorithms": list(record.algorithms)},
        status=201,
    )


async def post_token(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    principal_of(principal)
    body = await _json(request)
    try:
        role = Role(str(body.get("role")))
    except ValueError:
        raise InvalidRequest(f"role must be one of {[str(r) for r in Role]}") from None
    token, record = await accounts.issue_credential(
        request.app[STORE], role, str(body.get("scope", "")), label=str(body.get("label", "")),
        now=request.app[CLOCK](),
    )  # fmt: skip
    return json_response(
        {"token": token, "token_id": record.token_id, "role": str(role), "scope": record.scope},
        status=201,
        headers={"Cache-Control": "no-store"},
    )


async def delete_token(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    principal_of(principal)
    token_id = request.match_info["token_id"]
    if not await request.app[STORE].revoke_token(token_id, request.app[CLOCK]()):
        raise NotFound(f"no active token {token_id}")
    request.app[TOKENS].forget(token_id)
    return web.Response(status=204)


async def post_device(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    principal_of(principal)
    body = await _json(request)
    keys = body.get("keys", {})
    if not isinstance(keys, dict):
        raise InvalidRequest("keys must be an object")
    device, token = await accounts.register_device(
        request.app[STORE],
        str(body.get("device_id", "")),
        str(body.get("vendor", "")),
        class_id=body.get("class_id"),
        class_name=body.get("class_name"),
        gateway=body.get("gateway"),
        keys=keys,
        claim_code=body.get("claim_code"),
        now=request.app[CLOCK](),
    )
    return json_response(
        {"device": device_view(device), "token": token},
        status=201,
        headers={"Cache-Control": "no-store"},
    )


async def get_device(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    principal_of(principal)
    store = request.app[STORE]
    device = await store.get_device(request.match_info["device_id"])
    if device is None:
        raise NotFound(f"no device {request.match_info['device_id']}")
    installs = [
        {"target": i.target, "digest": i.digest, "sequence_number": i.sequence_number,
         "reported_at": i.reported_at}
        for i in await store.installs_of(device.device_id)
    ]  # fmt: skip
    return json_response({**device_view(device), "installed": installs})


def routes() -> list[Route]:
    op = frozenset({Role.OPERATOR})
    return [
        Route("POST", "/v1/operator/vendors", post_vendor, op,
              "Register a vendor with trust anchors", "operator", request_type="application/json",
              responses={201: "registered", 400: "invalid", 409: "exists"}),
        Route("GET", "/v1/operator/vendors", list_vendors, op, "List vendors", "operator",
              responses={200: "vendors"}),
        Route("POST", "/v1/operator/vendors/{name}/anchors", post_anchor, op,
              "Add a trust anchor to a vendor", "operator", request_type="application/json",
              responses={201: "added", 400: "invalid", 404: "no vendor"}, parameters=("name",)),
        Route("POST", "/v1/operator/tokens", post_token, op, "Issue a credential (shown once)",
              "operator", request_type="application/json",
              responses={201: "issued", 400: "invalid", 404: "scope unknown"}),
        Route("DELETE", "/v1/operator/tokens/{token_id}", delete_token, op, "Revoke a credential",
              "operator", responses={204: "revoked", 404: "unknown"}, parameters=("token_id",)),
        Route("POST", "/v1/operator/devices", post_device, op,
              "Register a device and issue its token", "operator", request_type="application/json",
              responses={201: "registered", 400: "invalid", 404: "no vendor", 409: "exists"}),
        Route("GET", "/v1/operator/devices/{device_id}", get_device, op,
              "A device and what it installed", "operator",
              responses={200: "device", 404: "unknown"}, parameters=("device_id",)),
    ]  # fmt: skip
