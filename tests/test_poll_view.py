"""The poll's read model (suitsrv/store/poll_queries.py): a release published by any process,
or published later when its payload arrives, reaches the next poll (the conditions of the
choice itself are in test_service.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from suitsrv import releases
from suitsrv.store import SqliteStore

from .service_fixtures import Service, random_payload, start_service


async def _polled_sequence(svc: Service, device: str = "dev-1") -> int | None:
    resp = await svc.client.get("/v1/device/update", headers=svc.auth(svc.devices[device]))
    if resp.status == 204:
        return None
    assert resp.status == 200, await resp.text()
    return int(resp.headers["Suit-Sequence-Number"])


async def test_releases_from_another_process_reach_the_next_poll(
    tmp_path: Path, aiohttp_client: Any
) -> None:
    svc = await start_service(tmp_path, aiohttp_client)
    first, second, third = random_payload(1000), random_payload(1000), random_payload(1000)
    for payload in (first, second):
        assert (await svc.upload_payload(payload)).status == 201
    assert (await svc.upload_manifest(svc.envelope(1, first))).status == 201
    assert await _polled_sequence(svc) == 1  # the class's releases are cached now

    other = SqliteStore(svc.config.data_dir)  # its own connections, as another process has
    try:
        await releases.accept_manifest(other, svc.config, "acme", svc.envelope(2, second),
                                       svc.clock())  # fmt: skip
        assert await _polled_sequence(svc) == 2
        # Unpublished until its payload arrives, then offered at once.
        await releases.accept_manifest(other, svc.config, "acme", svc.envelope(3, third),
                                       svc.clock())  # fmt: skip
        assert await _polled_sequence(svc) == 2
    finally:
        other.close()
    assert (await svc.upload_payload(third)).status == 201
    assert await _polled_sequence(svc) == 3
    assert await _polled_sequence(svc, "dev-2") == 3
