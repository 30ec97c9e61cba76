"""Device configuration vault: back up (never from quarantine), restore in returning-to-service,
confirm the restore. The rules live in suitsrv/vault_service.py."""

from __future__ import annotations

from aiohttp import web

from suitsrv import devices, vault_service
from suitsrv.auth import Principal
from suitsrv.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from suitsrv.jsonbody import json_object
from suitsrv.lifecycle import RESTORABLE_BACKUP_STATES, State
from suitsrv.store import Role

from .app import CLOCK, CONFIG, STORE, Route, json_response, principal_of
from .bodies import read_body

__all__ = ["CONFIG_TYPE", "VERSION_HEADER", "routes"]

CONFIG_TYPE = "application/octet-stream"
VERSION_HEADER = "Suitsrv-Config-Version"
_CHUNK = 64 << 10
_CONFIRM_LIMIT = 1024


async def put_config(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    """Store the body as the device's next configuration backup (streamed, encrypted)."""
    store, config = request.app[STORE], request.app[CONFIG]
    device = await devices.device_of(store, principal_of(principal).scope)
    if request.content_type != CONFIG_TYPE:
        raise UnsupportedMediaType(f"send {CONFIG_TYPE}, not {request.content_type or 'nothing'}")
    limit = request.app[CONFIG].limits.config_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"backup of {request.content_length} bytes exceeds {limit}")
    backup = await vault_service.store_backup(
        store, config, device.device_id, request.content.iter_chunked(_CHUNK),
        now=request.app[CLOCK](), limit=limit,
    )  # fmt: skip
    restorable = State(backup.state) in RESTORABLE_BACKUP_STATES
    body = {"version": backup.version, "size": backup.size, "state": backup.state,
            "restorable": restorable}  # fmt: skip
    return json_response(body, status=201)


async def get_config(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    """The backup to restore (returning-to-service, after an affirming verdict)."""
    device_id = principal_of(principal).scope
    restored = await vault_service.fetch_restore(request.app[STORE], request.app[CONFIG], device_id)
    headers = {VERSION_HEADER: str(restored.version), "Cache-Control": "no-store"}
    return web.Response(body=restored.data, content_type=CONFIG_TYPE, headers=headers)


async def post_restored(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    """The device applied the backup it was served: ``{"version": N}``."""
    store, config = request.app[STORE], request.app[CONFIG]
    device = await devices.device_of(store, principal_of(principal).scope)
    body = json_object(await read_body(request, _CONFIRM_LIMIT, "application/json"))
    version = body.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InvalidRequest('send {"version": N}, the Suitsrv-Config-Version restored')
    after = await vault_service.confirm_restore(
        store, config, device, version, now=request.app[CLOCK]()
    )
    return json_response(
        {"version": version, "state": str(after.state), "verdict_affirmed": after.verdict_affirmed,
         "config_restored_or_none": after.config_restored_or_none}
    )  # fmt: skip


def routes() -> list[Route]:
    device = frozenset({Role.DEVICE})
    return [
        Route("PUT", "/v1/device/config", put_config, device,
              "Back up the device's configuration (versioned, encrypted at rest)", "device",
              request_type=CONFIG_TYPE,
              responses={201: "stored", 400: "empty", 403: "quarantined",
                         409: "decommissioned", 413: "too large", 415: "wrong media type"}),
        Route("GET", "/v1/device/config", get_config, device,
              "The configuration backup to restore after an incident", "device",
              responses={200: CONFIG_TYPE, 404: "no restorable backup",
                         409: "restore not allowed in this state or before an affirming verdict",
                         500: "stored backup failed its integrity check"},
              pinhole=True),
        Route("POST", "/v1/device/config/restored", post_restored, device,
              "Confirm the restore of the version served", "device",
              request_type="application/json",
              responses={200: "lifecycle after config-restored", 404: "no restorable backup",
                         409: "not allowed now, or not the version offered"},
              pinhole=True),
    ]  # fmt: skip
