"""Configuration vault over HTTP: versioned encrypted backups tagged with the lifecycle state,
restore only of a backup taken before the incident and only after an affirming verdict, the
device's confirmation recorded by the service, integrity failures answered without data, and
decommissioning's purge. The lifecycle is driven through the store's own transition API."""

from __future__ import annotations

import asyncio
import io
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlite_utils import Database

from suitsrv import vault_service
from suitsrv.errors import PROBLEM_BASE
from suitsrv.lifecycle import Event, State
from suitsrv.vault import SealedBackup, associated_data, load_or_create_master_key, open_backup
from suitsrv.web.routes import all_routes

from .service_fixtures import Service, start_service

OCTET = {"Content-Type": "application/octet-stream"}
TO_QUARANTINE = (Event.ENROLLED, Event.INCIDENT_REPORTED, Event.INCIDENT_REPORTED)
QUARANTINE_TO_RETURNING = (Event.UPDATE_FETCHED, Event.UPDATE_REPORTED)


@pytest.fixture
async def svc(tmp_path: Path, aiohttp_client: Any) -> AsyncIterator[Service]:
    registered = {(r.method, r.path) for r in all_routes()}
    assert ("PUT", "/v1/device/config") in registered, (
        "register suitsrv.web.config_vault.routes() in suitsrv/web/routes.py"
    )
    service = await start_service(tmp_path, aiohttp_client)
    yield service
    service.store.close()


async def drive(svc: Service, device_id: str, *events: Event) -> None:
    for event in events:
        await svc.store.transition(
            device_id, event, "test", svc.clock(), svc.config.recidivism_window
        )


async def put(svc: Service, data: bytes | AsyncIterator[bytes], device: str = "dev-1") -> Any:
    body = io.BytesIO(data) if isinstance(data, bytes) else data  # large bytes warn in aiohttp
    return await svc.client.put(
        "/v1/device/config", data=body, headers={**svc.auth(svc.devices[device]), **OCTET}
    )


async def get(svc: Service, device: str = "dev-1") -> Any:
    return await svc.client.get("/v1/device/config", headers=svc.auth(svc.devices[device]))


async def confirm(svc: Service, body: object, device: str = "dev-1") -> Any:
    return await svc.client.post(
        "/v1/device/config/restored", json=body, headers=svc.auth(svc.devices[device])
    )


async def problem(resp: Any, status: int, kind: str) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/problem+json"
    body: dict[str, Any] = await resp.json(content_type=None)
    assert body["type"] == PROBLEM_BASE + kind and body["status"] == status, body
    return body


async def test_restore_serves_the_last_backup_before_the_incident(svc: Service) -> None:
    old, last, compromised = b"cfg v1 " * 300, b"cfg v2 " * 500, b"EVIL ROUTES " * 50
    await drive(svc, "dev-1", Event.ENROLLED)
    for data, version in ((old, 1), (last, 2)):
        resp = await put(svc, data)
        assert resp.status == 201
        assert await resp.json() == {
            "version": version, "size": len(data), "state": "nominal", "restorable": True
        }  # fmt: skip
    await drive(svc, "dev-1", Event.INCIDENT_REPORTED)  # suspicious: still may back up
    resp = await put(svc, compromised)
    assert (resp.status, await resp.json()) == (
        201, {"version": 3, "size": len(compromised), "state": "suspicious", "restorable": False}
    )  # fmt: skip

    await drive(svc, "dev-1", Event.INCIDENT_REPORTED)  # quarantined
    await problem(await put(svc, b"from quarantine"), 403, "quarantined")
    # GET is in the pinhole: the guard lets it through, the lifecycle refuses it.
    body = await problem(await get(svc), 409, "restore-not-allowed")
    assert body["state"] == "quarantined" and "returning-to-service" in body["detail"]

    await drive(svc, "dev-1", *QUARANTINE_TO_RETURNING)
    body = await problem(await get(svc), 409, "restore-not-allowed")
    assert "verdict" in body["detail"] and body["verdict_affirmed"] is False
    await problem(await confirm(svc, {"version": 2}), 409, "restore-not-allowed")
    await problem(await put(svc, b"x"), 403, "quarantined")  # returning is in the pinhole too

    await drive(svc, "dev-1", Event.ATTESTATION_AFFIRMED)
    resp = await get(svc)
    assert resp.status == 200 and await resp.read() == last
    assert resp.headers["Suitsrv-Config-Version"] == "2"
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.content_type == "application/octet-stream"

    body = await problem(await confirm(svc, {"version": 3}), 409, "conflict")
    assert body["offered"] == 2
    await problem(await confirm(svc, {"version": True}), 400, "invalid-request")
    assert not (await svc.store.get_lifecycle("dev-1")).config_restored_or_none

    resp = await confirm(svc, {"version": 2})
    assert resp.status == 200
    assert await resp.json() == {
        "version": 2, "state": "returning-to-service", "verdict_affirmed": True,
        "config_restored_or_none": True,
    }  # fmt: skip
    assert (await svc.store.get_lifecycle("dev-1")).config_restored_or_none
    restored = [b.version for b in await vault_service.backups(svc.store, "dev-1") if b.restored_at]
    assert restored == [2]
    timeline = await svc.store.timeline("dev-1", 0, 100)
    assert [e.detail["version"] for e in timeline if e.kind == "backup"] == [1, 2, 3]
    (event,) = [e for e in timeline if e.event == "config-restored"]
    assert event.actor == "service:dev-1" and event.detail == {"version": 2}


async def test_restore_refused_outside_returning_to_service(svc: Service) -> None:
    assert (await put(svc, b"written while new")).status == 201
    await problem(await get(svc), 409, "restore-not-allowed")  # new
    await drive(svc, "dev-1", Event.ENROLLED)
    body = await problem(await get(svc), 409, "restore-not-allowed")
    assert body["state"] == "nominal"
    await problem(await confirm(svc, {"version": 1}), 409, "restore-not-allowed")
    # The other device's backups are its own.
    assert (await vault_service.backups(svc.store, "dev-2")) == []


async def test_only_backups_from_new_or_nominal_are_ever_offered(svc: Service) -> None:
    await drive(svc, "dev-1", Event.ENROLLED, Event.INCIDENT_REPORTED)
    assert (await put(svc, b"while suspicious")).status == 201
    assert not await vault_service.restore_needed(svc.store, "dev-1")
    await drive(svc, "dev-1", Event.INCIDENT_REPORTED, *QUARANTINE_TO_RETURNING)
    await drive(svc, "dev-1", Event.ATTESTATION_AFFIRMED)
    await problem(await get(svc), 404, "not-found")
    await problem(await confirm(svc, {"version": 1}), 404, "not-found")

    assert (await put(svc, b"written while new", device="dev-2")).status == 201
    assert await vault_service.restore_needed(svc.store, "dev-2")


def _raw_database(svc: Service) -> bytes:
    wal = svc.store.path.with_name(svc.store.path.name + "-wal")
    return svc.store.path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


@pytest.mark.parametrize("column", ["ciphertext", "nonce", "wrapped_key"])
async def test_encrypted_at_rest_and_integrity_checked(svc: Service, column: str) -> None:
    secret = b"wifi-psk=correct horse battery staple;" * 40
    await drive(svc, "dev-1", Event.ENROLLED)
    assert (await put(svc, secret)).status == 201
    key_file = svc.config.data_dir / "vault" / "master.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    raw = _raw_database(svc)
    (backup,) = await vault_service.backups(svc.store, "dev-1")
    assert backup.ciphertext in raw  # the check reads where the row is
    assert b"correct horse" not in raw and secret[:16] not in raw
    master = load_or_create_master_key(key_file)
    assert master not in raw and master.hex().encode() not in raw

    def flip(db: Database) -> None:
        value = bytearray(getattr(backup, column))
        value[len(value) // 2] ^= 0x01
        db.execute(f"UPDATE config_backups SET {column} = ?", [bytes(value)])

    await svc.store.write(flip)
    await drive(svc, "dev-1", Event.QUARANTINE_ORDERED, *QUARANTINE_TO_RETURNING)
    await drive(svc, "dev-1", Event.ATTESTATION_AFFIRMED)
    resp = await get(svc)
    body = await problem(resp, 500, "backup-integrity")
    assert b"correct horse" not in await resp.read()
    assert "Suitsrv-Config-Version" not in resp.headers
    assert "decrypt" in body["detail"]


async def test_size_limit_and_body_rules(svc: Service) -> None:
    limit = vault_service.BACKUP_LIMIT_BYTES
    await problem(await put(svc, b"x" * (limit + 1)), 413, "payload-too-large")

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: caught while streaming
        for _ in range(limit // (64 << 10) + 1):
            yield b"y" * (64 << 10)

    await problem(await put(svc, chunked()), 413, "payload-too-large")
    await problem(await put(svc, b""), 400, "invalid-request")
    resp = await svc.client.put(
        "/v1/device/config", data=b"{}", headers={**svc.auth(svc.devices["dev-1"]),
                                                  "Content-Type": "application/json"},
    )  # fmt: skip
    await problem(resp, 415, "unsupported-media-type")
    assert await vault_service.backups(svc.store, "dev-1") == []

    resp = await put(svc, b"z" * limit)
    assert resp.status == 201 and (await resp.json())["version"] == 1


async def test_state_is_taken_at_start_and_at_commit(svc: Service) -> None:
    """An upload that straddles an incident, or begins before the incident is cleared, is not
    restorable: the device was not trusted for all of it."""
    await drive(svc, "dev-1", Event.ENROLLED)

    def straddling(event: Event) -> AsyncIterator[bytes]:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"first half;"
            await drive(svc, "dev-1", event)
            yield b"second half"

        return chunks()

    now = svc.clock()
    store, config = svc.store, svc.config
    first = await vault_service.store_backup(
        store, config, "dev-1", straddling(Event.INCIDENT_REPORTED), now=now
    )
    second = await vault_service.store_backup(
        store, config, "dev-1", straddling(Event.INCIDENT_CLEARED), now=now
    )
    assert (first.state, second.state) == ("suspicious", "suspicious")
    assert (await store.get_lifecycle("dev-1")).state is State.NOMINAL
    assert not await vault_service.restore_needed(store, "dev-1")


async def test_concurrent_backups_get_distinct_versions(svc: Service) -> None:
    store, config = svc.store, svc.config
    await drive(svc, "dev-1", Event.ENROLLED)

    async def overtaken() -> AsyncIterator[bytes]:
        yield b"slow "
        # Another backup of the same device commits the version this one was sealed for.
        await vault_service.store_backup(store, config, "dev-1", _one(b"fast"), now=svc.clock())
        yield b"backup"

    slow = await vault_service.store_backup(store, config, "dev-1", overtaken(), now=svc.clock())
    assert slow.version == 2

    bodies = [f"parallel {i}".encode() * (i + 1) for i in range(8)]
    answers = await asyncio.gather(*(put(svc, body) for body in bodies))
    assert sorted([(await r.json())["version"] for r in answers]) == list(range(3, 11))

    master = load_or_create_master_key(svc.config.data_dir / "vault" / "master.key")
    stored = await vault_service.backups(store, "dev-1")
    plain = [
        open_backup(master, SealedBackup(b.wrapped_key, b.nonce, b.ciphertext,
                                                       b.size),
                    aad=associated_data("dev-1", b.version))
        for b in stored
    ]  # fmt: skip
    assert plain[:2] == [b"fast", b"slow backup"] and sorted(plain[2:]) == sorted(bodies)


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_decommissioning_purges_and_stops_backups(svc: Service) -> None:
    for data in (b"one", b"two", b"three"):
        assert (await put(svc, data)).status == 201
    assert (await put(svc, b"dev-2's", device="dev-2")).status == 201
    assert await vault_service.purge(svc.store, "dev-1") == 3
    assert await vault_service.backups(svc.store, "dev-1") == []
    assert not await vault_service.restore_needed(svc.store, "dev-1")
    assert len(await vault_service.backups(svc.store, "dev-2")) == 1
    assert await vault_service.purge(svc.store, "dev-1") == 0

    await drive(svc, "dev-1", Event.DECOMMISSIONED)
    await problem(await put(svc, b"after the end"), 409, "conflict")
    assert await vault_service.backups(svc.store, "dev-1") == []
