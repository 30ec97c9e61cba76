"""Device API: poll for the next update, download payloads, send SUIT reports."""

from __future__ import annotations

import logging

from aiohttp import web

from suitsrv import devices, releases
from suitsrv.auth import Principal
from suitsrv.errors import DamagedBlob, Forbidden, InvalidRequest, NotFound
from suitsrv.lifecycle import Event
from suitsrv.store import DeviceRecord, Role, is_sha256_hex
from suitsrv.store import device_queries as dq

from .app import CLOCK, CONFIG, RNG, STORE, Route, json_response, principal_of
from .bodies import read_body
from .ranges import send_blob
from .vendor import ENVELOPE_TYPE

__all__ = ["REPORT_TYPE", "routes"]

REPORT_TYPE = "application/suit-report+cose"
log = logging.getLogger("suitsrv")


async def _device(request: web.Request, principal: Principal | None) -> DeviceRecord:
    caller = principal_of(principal)
    device = await request.app[STORE].get_device(caller.scope)
    if device is None:
        raise Forbidden(f"device {caller.scope!r} is not registered")
    return device


def _etag_matches(header: str | None, digest: str) -> bool:
    if not header:
        return False
    tags = [t.strip().removeprefix("W/").strip('"') for t in header.split(",")]
    return "*" in tags or digest in tags


async def get_update(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    """The newest applicable envelope (exact stored bytes), 304 when the device has it already,
    204 when there is none. ``Poll-Interval`` says when to ask again (jittered)."""
    caller = principal_of(principal)
    decision = await releases.select_update(
        request.app[STORE],
        request.app[CONFIG],
        caller.scope,
        request.app[CLOCK](),
        request.app[RNG],
    )
    headers = {"Poll-Interval": str(decision.poll_after), "Cache-Control": "no-store"}
    release = decision.release
    if release is None:
        return web.Response(status=204, headers=headers)
    headers["ETag"] = f'"{release.digest}"'
    headers["Suit-Sequence-Number"] = str(release.sequence_number)
    if _etag_matches(request.headers.get("If-None-Match"), release.digest):
        return web.Response(status=304, headers=headers)
    view, now = decision.view, request.app[CLOCK]()
    if view.served != release.digest:  # the report must name it; unchanged: nothing to write
        await request.app[STORE].write(dq.record_served, view.device.device_id, release.digest, now)
    # A quarantined or suspect device fetching its fix is the lifecycle's update-fetched.
    await devices.record_if_allowed(
        request.app[STORE], request.app[CONFIG], view.device, Event.UPDATE_FETCHED,
        role="device", actor=caller.token_id, now=now, state=view.state,
        detail={"digest": release.digest, "sequence_number": release.sequence_number},
    )  # fmt: skip
    return web.Response(body=release.envelope, content_type=ENVELOPE_TYPE, headers=headers)


async def get_payload(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    """A payload by SHA-256: Range (single and multi), If-Range, HEAD, sendfile (ranges.py).
    A device may fetch what a published release for its vendor and class references; a vendor
    what its own releases reference; an operator anything stored."""
    caller = principal_of(principal)
    sha256 = request.match_info["sha256"]
    if not is_sha256_hex(sha256):
        raise InvalidRequest(f"{sha256!r} is not a lowercase hex SHA-256")
    store = request.app[STORE]
    payload = await store.get_payload(sha256)
    allowed = payload is not None and caller.role is Role.OPERATOR
    if payload is not None and caller.role is Role.DEVICE:
        device = await _device(request, principal)
        allowed = (device.vendor, device.class_id) in await store.payload_classes(sha256)
    elif payload is not None and caller.role is Role.VENDOR:
        allowed = caller.scope in await store.payload_vendors(sha256)
    if payload is None or not allowed:
        # One answer for "absent" and "not yours": existence is not disclosed.
        raise NotFound(f"no payload {sha256} available to you")
    path = store.blobs.path(sha256)
    try:
        on_disk = path.stat().st_size
    except FileNotFoundError:
        on_disk = -1
    if on_disk != payload.size:
        log.error("payload %s: %d bytes on disk, %d recorded", sha256, on_disk, payload.size)
        raise DamagedBlob(f"the stored payload {sha256} is damaged; the operator must restore it")
    return await send_blob(request, path, etag=sha256, size=payload.size)


async def post_report(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    device = await _device(request, principal)
    config = request.app[CONFIG]
    data = await read_body(request, config.limits.report_bytes, REPORT_TYPE)
    now = request.app[CLOCK]()
    record = await releases.accept_report(request.app[STORE], config, device, data, now)
    if record.success:
        await devices.record_if_allowed(
            request.app[STORE], config, device, Event.UPDATE_REPORTED, role="device",
            actor=principal_of(principal).token_id, now=now, detail={"digest": record.digest},
        )  # fmt: skip
    return json_response(
        {
            "report_id": record.report_id,
            "device_id": record.device_id,
            "digest": record.digest,
            "success": record.success,
            "reason": record.reason,
            "authenticated_by": record.authenticated_by,
        },
        status=201,
    )


def routes() -> list[Route]:
    device = frozenset({Role.DEVICE})
    readers = frozenset({Role.DEVICE, Role.VENDOR, Role.OPERATOR})
    payload_responses = {200: "payload", 206: "range(s)", 304: "not modified", 404: "unknown",
                         416: "range not satisfiable"}  # fmt: skip
    return [
        Route("GET", "/v1/device/update", get_update, device,
              "The newest applicable SUIT envelope for this device", "device",
              responses={200: ENVELOPE_TYPE, 204: "no update", 304: "already has it"},
              pinhole=True),
        Route("GET", "/v1/payloads/{sha256}", get_payload, readers,
              "Download a payload (Range, If-Range, immutable)", "device",
              responses=payload_responses, parameters=("sha256",), pinhole=True),
        Route("HEAD", "/v1/payloads/{sha256}", get_payload, readers,
              "Payload headers only", "device", responses=payload_responses,
              parameters=("sha256",), pinhole=True),
        Route("POST", "/v1/device/reports", post_report, device,
              "Report what the device installed (SUIT_Report)", "device", request_type=REPORT_TYPE,
              responses={201: "recorded", 404: "unknown manifest", 409: "not for this device",
                         415: "wrong media type", 422: "not authentic"}, pinhole=True),
    ]  # fmt: skip
