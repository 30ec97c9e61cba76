"""Vendor API: payload and manifest uploads, listing and inspecting the vendor's releases."""

from __future__ import annotations

from aiohttp import web

from suitsrv import accounts, releases
from suitsrv.auth import Principal
from suitsrv.errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
)
from suitsrv.store import ReleaseRecord, Role, is_sha256_hex

from .app import CLOCK, CONFIG, STORE, Route, json_response, principal_of
from .bodies import read_body, read_json

__all__ = ["ENVELOPE_TYPE", "release_view", "routes"]

ENVELOPE_TYPE = "application/suit-envelope+cose"
_CHUNK = 1 << 20


def release_view(release: ReleaseRecord) -> dict[str, object]:
    return {
        "digest": release.digest,
        "vendor": release.vendor,
        "vendor_id": release.vendor_id,
        "class_id": release.class_id,
        "target": release.target,
        "sequence_number": release.sequence_number,
        "published": release.published,
        "payloads": list(release.payloads),
        "signers": list(release.signers),
        "size": len(release.envelope),
        "use_before": release.use_before,
        "version": list(release.version) if release.version else None,
        "created_at": release.created_at,
        "envelope_url": f"/v1/vendor/manifests/{release.digest}/envelope",
    }


async def put_payload(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    principal_of(principal)
    sha256 = request.match_info["sha256"]
    if not is_sha256_hex(sha256):
        raise InvalidRequest(f"{sha256!r} is not a lowercase hex SHA-256")
    config, store = request.app[CONFIG], request.app[STORE]
    limit = config.limits.payload_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(
            f"payload of {request.content_length} bytes exceeds the limit of {limit}"
        )
    # The body is read and hashed even when the payload is stored already: answering "have it"
    # to a bare digest would tell any vendor which firmware (and its size) others uploaded.
    size, _ = await store.blobs.write(sha256, request.content.iter_chunked(_CHUNK), max_size=limit)
    if await store.get_payload(sha256) is not None:  # idempotent: same name, same bytes
        return json_response({"sha256": sha256, "size": size, "created": False, "published": []})
    published = await releases.accept_payload_record(store, sha256, size, request.app[CLOCK]())
    return json_response(
        {"sha256": sha256, "size": size, "created": True, "published": published}, status=201
    )


async def post_manifest(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    vendor = principal_of(principal).scope
    config = request.app[CONFIG]
    data = await read_body(request, config.limits.envelope_bytes, ENVELOPE_TYPE)
    release, created = await releases.accept_manifest(
        request.app[STORE], config, vendor, data, request.app[CLOCK]()
    )
    if release.vendor != vendor:
        raise Forbidden("this manifest is registered to another vendor")
    location = f"/v1/vendor/manifests/{release.digest}"
    return json_response(
        release_view(release), status=201 if created else 200, headers={"Location": location}
    )


async def _own_release(request: web.Request, principal: Principal | None) -> ReleaseRecord:
    caller = principal_of(principal)
    digest = request.match_info["digest"]
    release = await request.app[STORE].get_release(digest)
    if release is None or (caller.role is Role.VENDOR and release.vendor != caller.scope):
        raise NotFound(f"no manifest {digest} of yours")
    return release


async def get_manifest(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    return json_response(release_view(await _own_release(request, principal)))


async def get_envelope(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    release = await _own_release(request, principal)
    return web.Response(
        body=release.envelope, content_type=ENVELOPE_TYPE, headers={"ETag": f'"{release.digest}"'}
    )


async def list_manifests(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    caller = principal_of(principal)
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        raise InvalidRequest("limit must be an integer") from None
    if not 1 <= limit <= 1000:
        raise InvalidRequest("limit must be within 1..1000")
    after = request.query.get("after")
    vendor = caller.scope if caller.role is Role.VENDOR else request.query.get("vendor")
    found = await request.app[STORE].list_releases(vendor, limit, after)
    body: dict[str, object] = {"manifests": [release_view(r) for r in found]}
    if len(found) == limit:
        body["next"] = f"/v1/vendor/manifests?limit={limit}&after={found[-1].digest}"
    return json_response(body)


_MAX_BULK = 1000
_BULK_FIELDS = frozenset({"device_id", "class_id", "class_name", "keys", "claim_code"})


async def post_devices(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    """A manufacturer registers its devices in bulk with their keys (EK, IAK, ...); each gets a
    token, shown once. Checked whole before anything is written."""
    vendor = principal_of(principal).scope
    body = await read_json(request, 4 << 20)
    entries = body.get("devices")
    if not isinstance(entries, list) or not 1 <= len(entries) <= _MAX_BULK:
        raise InvalidRequest(f'send {{"devices": [...]}} with 1..{_MAX_BULK} entries')
    store, now = request.app[STORE], request.app[CLOCK]()
    account = await store.get_vendor(vendor)
    if account is None:
        raise NotFound(f"no vendor {vendor!r}")
    records, seen = [], set()
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict) or set(entry) - _BULK_FIELDS:
            raise InvalidRequest(
                f"devices[{n}] must be an object with fields {sorted(_BULK_FIELDS)}"
            )
        try:
            fields = {k: v for k, v in entry.items() if k != "device_id"}
            device = accounts.device_record(account, entry.get("device_id"), now=now, **fields)
        except InvalidRequest as exc:
            raise InvalidRequest(f"devices[{n}]: {exc}") from exc
        if device.device_id in seen:  # one already registered: a 409 from add_devices
            raise Conflict(f"device {device.device_id} is listed twice")
        seen.add(device.device_id)
        records.append(device)
    added = await accounts.add_devices(store, records, now)  # one transaction
    registered = [{"device_id": d.device_id, "class_id": d.class_id, "token": token}
                  for d, token in added]  # fmt: skip
    return json_response({"devices": registered}, status=201, headers={"Cache-Control": "no-store"})


def routes() -> list[Route]:
    vendor = frozenset({Role.VENDOR})
    reader = frozenset({Role.VENDOR, Role.OPERATOR})
    return [
        Route("PUT", "/v1/vendor/payloads/{sha256}", put_payload, vendor,
              "Upload a payload under its SHA-256 (streamed, idempotent)", "vendor",
              request_type="application/octet-stream",
              responses={200: "already stored", 201: "stored", 400: "digest mismatch",
                         413: "too large", 507: "disk full"}, parameters=("sha256",)),
        Route("POST", "/v1/vendor/manifests", post_manifest, vendor,
              "Upload a signed SUIT envelope", "vendor", request_type=ENVELOPE_TYPE,
              responses={200: "same manifest digest already stored", 201: "accepted",
                         400: "malformed", 409: "rollback", 413: "too large",
                         415: "wrong media type", 422: "not authentic or not acceptable"}),
        Route("GET", "/v1/vendor/manifests", list_manifests, reader,
              "List manifests (a vendor sees its own)", "vendor", responses={200: "list"}),
        Route("GET", "/v1/vendor/manifests/{digest}", get_manifest, reader,
              "Inspect a manifest", "vendor", responses={200: "release", 404: "unknown"},
              parameters=("digest",)),
        Route("POST", "/v1/vendor/devices", post_devices, vendor,
              "Register devices in bulk with their keys (tokens shown once)", "vendor",
              request_type="application/json",
              responses={201: "registered", 400: "invalid", 409: "already registered"}),
        Route("GET", "/v1/vendor/manifests/{digest}/envelope", get_envelope, reader,
              "The stored envelope bytes", "vendor", responses={200: ENVELOPE_TYPE, 404: "unknown"},
              parameters=("digest",)),
    ]  # fmt: skip
