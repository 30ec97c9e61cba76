"""Authorization matrix: every route x every role, then own-versus-foreign scope.

The route table (suitsrv.web.routes) is the single statement of who may call what; this test
walks all of it, so a new route without roles, or with the wrong ones, shows up here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from suitsrv import accounts
from suitsrv.auth import TokenCache
from suitsrv.store import Role, SqliteStore, TokenRecord
from suitsrv.web.app import CREDENTIAL_POLL, TOKENS
from suitsrv.web.routes import all_routes

from .service_fixtures import CLASS_NAME, Service, random_payload, sha, start_service

DUMMY = {
    "sha256": "0" * 64,
    "digest": "1" * 64,
    "token_id": "abcdefabcdef",
    "device_id": "dev-2",  # not the device whose token the walk uses: operators decommission it
    "name": "acme",
    "vendor": "acme",
    "class_id": "00000000-0000-0000-0000-000000000000",
}


@pytest.fixture
async def svc(tmp_path: Path, aiohttp_client: Any) -> AsyncIterator[Service]:
    service = await start_service(tmp_path, aiohttp_client)
    yield service
    service.store.close()


async def _tokens(svc: Service) -> dict[str, str | None]:
    now = svc.clock()
    await accounts.add_vendor(svc.store, "rival", vendor_domains=["rival.example"], now=now)
    rival, _ = await accounts.issue_credential(svc.store, Role.VENDOR, "rival", now=now)
    gateway, _ = await accounts.issue_credential(svc.store, Role.GATEWAY, "gw-1", now=now)
    revoked, record = await accounts.issue_credential(svc.store, Role.OPERATOR, "*", now=now)
    await svc.store.revoke_token(record.token_id, now)
    return {
        "anonymous": None,
        "malformed": "not-a-token",
        "revoked": revoked,
        "operator": svc.operator,
        "vendor": svc.vendor_token,
        "rival-vendor": rival,
        "device": svc.devices["dev-1"],
        "gateway": gateway,
    }


_ROLE_OF = {
    "operator": Role.OPERATOR,
    "vendor": Role.VENDOR,
    "rival-vendor": Role.VENDOR,
    "device": Role.DEVICE,
    "gateway": Role.GATEWAY,
}


async def test_every_route_for_every_role(svc: Service) -> None:
    tokens = await _tokens(svc)
    checked = 0
    for route in all_routes():
        path = route.path.format(**DUMMY)
        for who, token in tokens.items():
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            if route.request_type:
                kind = route.request_type
                headers["Content-Type"] = kind if isinstance(kind, str) else kind[0]
            body = b"{}" if route.request_type == "application/json" else b"\xa0"
            resp = await svc.client.request(route.method, path, headers=headers, data=body)
            status = resp.status
            where = f"{route.method} {route.path} as {who}: {status}"
            if route.roles is None:
                assert status not in (401, 403), where
            elif who in ("anonymous", "malformed", "revoked"):
                assert status == 401, where
                assert "Bearer" in resp.headers.get("WWW-Authenticate", ""), where
            elif _ROLE_OF[who] in route.roles:
                assert status not in (401, 403), where
            else:
                assert status == 403, where
            if status >= 400 and route.method != "HEAD":
                assert resp.content_type == "application/problem+json", where
            checked += 1
    assert checked == len(all_routes()) * len(tokens)


async def test_vendors_see_only_their_own(svc: Service) -> None:
    tokens = await _tokens(svc)
    payload = random_payload(500)
    await svc.upload_payload(payload)
    release = await (await svc.upload_manifest(svc.envelope(1, payload))).json()
    rival = {"Authorization": f"Bearer {tokens['rival-vendor']}"}
    resp = await svc.client.get(f"/v1/vendor/manifests/{release['digest']}", headers=rival)
    assert resp.status == 404
    listing = await (await svc.client.get("/v1/vendor/manifests", headers=rival)).json()
    assert listing["manifests"] == []
    assert (await svc.client.get(f"/v1/payloads/{sha(payload)}", headers=rival)).status == 404
    own = svc.auth(svc.vendor_token)
    assert (await svc.client.get(f"/v1/payloads/{sha(payload)}", headers=own)).status == 200
    assert (
        await svc.client.get(f"/v1/vendor/manifests/{release['digest']}", headers=own)
    ).status == 200
    op = svc.auth(svc.operator)
    assert (
        await svc.client.get(f"/v1/vendor/manifests/{release['digest']}", headers=op)
    ).status == 200


async def test_devices_reach_only_their_class(svc: Service) -> None:
    payload = random_payload(500)
    await svc.upload_payload(payload)
    await svc.upload_manifest(svc.envelope(1, payload))
    _, other = await accounts.register_device(
        svc.store, "dev-other", "acme", class_name=CLASS_NAME + "-b", now=svc.clock()
    )
    headers = svc.auth(other)
    assert (await svc.client.get("/v1/device/update", headers=headers)).status == 204
    assert (await svc.client.get(f"/v1/payloads/{sha(payload)}", headers=headers)).status == 404
    mine = svc.auth(svc.devices["dev-2"])
    assert (await svc.client.get("/v1/device/update", headers=mine)).status == 200
    assert (await svc.client.get(f"/v1/payloads/{sha(payload)}", headers=mine)).status == 200


async def test_revoked_token_stops_working(svc: Service) -> None:
    token, record = await accounts.issue_credential(svc.store, Role.VENDOR, "acme", now=svc.clock())
    headers = {"Authorization": f"Bearer {token}"}
    assert (await svc.client.get("/v1/vendor/manifests", headers=headers)).status == 200
    resp = await svc.client.delete(
        f"/v1/operator/tokens/{record.token_id}", headers=svc.auth(svc.operator)
    )
    assert resp.status == 204
    assert (await svc.client.get("/v1/vendor/manifests", headers=headers)).status == 401


async def test_tokens_are_stored_hashed(svc: Service) -> None:
    wal = svc.store.path.with_name(svc.store.path.name + "-wal")
    raw = svc.store.path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
    assert b"acme" in raw  # the check reads where the rows are
    for token in [svc.operator, svc.vendor_token, *svc.devices.values()]:
        assert token.encode() not in raw
        assert token.split("_", 2)[2].encode() not in raw


async def test_revocation_by_another_process_takes_effect_within_the_credential_poll(
    svc: Service,
) -> None:
    token, record = await accounts.issue_credential(svc.store, Role.VENDOR, "acme", now=svc.clock())
    headers = {"Authorization": f"Bearer {token}"}
    assert (await svc.client.get("/v1/vendor/manifests", headers=headers)).status == 200
    cache = svc.client.app[TOKENS]
    assert cache.get(record.token_hash) == record  # the next request reads no token
    # As `suitsrv admin token revoke` does: its own store on the data directory.
    admin = SqliteStore(svc.config.data_dir)
    try:
        assert await admin.revoke_token(record.token_id, svc.clock())
    finally:
        admin.close()
    async with asyncio.timeout(3 * CREDENTIAL_POLL):  # the watcher reads the generation
        while (await svc.client.get("/v1/vendor/manifests", headers=headers)).status != 401:
            await asyncio.sleep(0.02)
    assert cache.get(record.token_hash) is None
    # The other credentials are looked up again and still work.
    vendor = svc.auth(svc.vendor_token)
    assert (await svc.client.get("/v1/vendor/manifests", headers=vendor)).status == 200


def test_token_cache_is_never_filled_from_a_read_older_than_a_revocation() -> None:
    now = [0.0]
    cache = TokenCache(max_age=3.0, clock=lambda: now[0])
    record = TokenRecord("t1", b"h" * 32, Role.DEVICE, "dev-1", "", 0.0)
    cache.put(record, cache.epoch)
    assert cache.get(record.token_hash) is None  # never synced: nothing is served
    cache.sync(3)
    epoch = cache.epoch  # a lookup reads the token...
    cache.forget("t1")  # ...while the token is revoked through this server
    cache.put(record, epoch)
    assert cache.get(record.token_hash) is None
    cache.put(record, cache.epoch)
    assert cache.get(record.token_hash) == record
    cache.sync(4)  # another generation: whatever was cached before is dropped
    assert cache.get(record.token_hash) is None
    cache.put(record, cache.epoch)
    cache.sync(4)  # unchanged: kept
    assert cache.get(record.token_hash) == record
    epoch = cache.epoch
    cache.sync(5)  # another process revoked or removed a token
    cache.put(record, epoch)
    assert cache.get(record.token_hash) is None and len(cache) == 0
    cache.put(record, cache.epoch)
    cache.sync(None)  # the generation could not be read: fail closed
    assert len(cache) == 0
    cache.sync(5)
    cache.put(record, cache.epoch)
    now[0] += 3.0
    assert cache.get(record.token_hash) == record
    now[0] += 0.1  # no sync for longer than max_age: the watcher is stuck or slow
    assert cache.get(record.token_hash) is None and len(cache) == 0


_HOSTILE_BODIES = [
    b"[" * 100_000 + b"]" * 100_000,  # deep enough to exhaust the JSON parser's recursion
    b'{"a": ' * 50_000 + b"1" + b"}" * 50_000,
    b"[1, 2]",
    b"\xff\xfe not utf-8",
    b'{"after": 99999999999999999999999, "url": 5, "secret": [], "kind": {}, "at": 1e400,'
    b' "devices": [{"device_id": 7, "class": [], "claim_code": null}], "algorithms": [1],'
    b' "vendor": 3, "evidence": "x", "nonce": 12, "format": [], "device_id": {}}',
]


async def test_hostile_bodies_get_problems_not_500s(svc: Service) -> None:
    """Every JSON route, called by every role it admits, answers malformed or mistyped bodies
    with a 4xx problem: none reaches an unhandled exception."""
    tokens = await _tokens(svc)
    walked = 0
    for route in all_routes():
        if route.request_type != "application/json" or route.roles is None:
            continue
        path = route.path.format(**DUMMY)
        for who, token in tokens.items():
            if who not in _ROLE_OF or _ROLE_OF[who] not in route.roles:
                continue
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            for body in _HOSTILE_BODIES:
                resp = await svc.client.request(route.method, path, headers=headers, data=body)
                where = f"{route.method} {route.path} as {who}: {resp.status} for {body[:40]!r}"
                assert 400 <= resp.status < 500, where
                assert resp.content_type == "application/problem+json", where
                walked += 1
    assert walked > 20
