"""A device's timeline over HTTP and through ``suitsrv admin timeline``, and the operator's
decisions (decommission, clearing an escalation), on a real service and SQLite file."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from suitsrv import accounts, vault_service
from suitsrv.cli.main import main
from suitsrv.cli.timeline_cmd import format_entry
from suitsrv.lifecycle import TRANSITIONS, DeviceLifecycle, Event, State
from suitsrv.store import Role, SqliteStore, TimelineEntry
from suitsrv.web.timeline import next_step

from .service_fixtures import CLASS_NAME, Service, start_service
from .test_mud_routes import serve_new_routes

WINDOW = 30 * 86400
QUARANTINED_STEP = (
    "waiting for the device to fetch a newer release (one the vendor may have to publish)"
)
# quarantined twice within the window: escalated (lifecycle "recidivism")
TO_ESCALATED = [Event.ENROLLED, Event.QUARANTINE_ORDERED, Event.UPDATE_FETCHED,
                Event.ATTESTATION_FAILED]  # fmt: skip


@pytest.fixture
async def svc(tmp_path: Path, aiohttp_client: Any) -> AsyncIterator[Service]:
    service = await start_service(tmp_path, aiohttp_client)
    await serve_new_routes(service, aiohttp_client)
    yield service
    service.store.close()


async def walk(store: SqliteStore, device_id: str, events: list[Event], start: float) -> None:
    for i, event in enumerate(events):
        await store.transition(device_id, event, f"operator:t{i}", start + 60 * i, WINDOW,
                               {"step": i})  # fmt: skip


def timeline_url(device_id: str) -> str:
    return f"/v1/operator/devices/{device_id}/timeline"


async def get_json(svc: Service, path: str, token: str, status: int = 200) -> Any:
    resp = await svc.client.get(path, headers=svc.auth(token))
    assert resp.status == status, await resp.text()
    if status >= 400:
        assert resp.content_type == "application/problem+json"
    return await resp.json(content_type=None)


async def post(svc: Service, path: str, token: str, status: int) -> Any:
    resp = await svc.client.post(path, headers=svc.auth(token))
    assert resp.status == status, await resp.text()
    if status >= 400:
        assert resp.content_type == "application/problem+json"
    return await resp.json(content_type=None)


@pytest.mark.parametrize(
    ("lc", "expected"),
    [
        (DeviceLifecycle(State.NEW), "waiting for enrolment"),
        (DeviceLifecycle(State.NOMINAL), "nothing: the device is in service"),
        (DeviceLifecycle(State.SUSPICIOUS), "waiting for the gateway"),
        (DeviceLifecycle(State.SUSPECT), "waiting for the device to fetch the update"),
        (DeviceLifecycle(State.QUARANTINED), QUARANTINED_STEP),
        (DeviceLifecycle(State.UPGRADING), "waiting for the device to report the update"),
        (DeviceLifecycle(State.RETURNING_TO_SERVICE), "waiting for an affirming attestation"),
        (DeviceLifecycle(State.RETURNING_TO_SERVICE, verdict_affirmed=True),
         "waiting for the configuration restore"),
        (DeviceLifecycle(State.RETURNING_TO_SERVICE, verdict_affirmed=True,
                         config_restored_or_none=True),
         "waiting for the gateway to acknowledge reinstatement"),
        (DeviceLifecycle(State.DECOMMISSIONED, escalated=True), "nothing: the device is decomm"),
    ],
)  # fmt: skip
def test_next_step(lc: DeviceLifecycle, expected: str) -> None:
    assert next_step(lc).startswith(expected)
    assert "escalation" not in next_step(lc)


def test_next_step_names_the_escalation() -> None:
    for state in (State.QUARANTINED, State.UPGRADING, State.RETURNING_TO_SERVICE):
        step = next_step(DeviceLifecycle(state, escalated=True))
        assert step.startswith(next_step(DeviceLifecycle(state)))
        assert step.endswith("an operator must clear the escalation before it can be reinstated")


async def test_timeline_lists_transitions_in_order_with_paging(svc: Service) -> None:
    events = [Event.ENROLLED, Event.QUARANTINE_ORDERED, Event.UPDATE_FETCHED,
              Event.UPDATE_REPORTED, Event.ATTESTATION_AFFIRMED]  # fmt: skip
    await walk(svc.store, "dev-1", events, svc.clock())
    await walk(svc.store, "dev-2", [Event.ENROLLED], svc.clock())  # not in dev-1's timeline
    body = await get_json(svc, timeline_url("dev-1"), svc.operator)
    assert (body["device_id"], body["state"], body["escalated"]) == (
        "dev-1", "returning-to-service", False)  # fmt: skip
    assert body["next_step"] == "waiting for the configuration restore"
    assert "next" not in body
    assert [e["event"] for e in body["events"]] == [str(e) for e in events]
    states = [State.NEW, State.NOMINAL, State.QUARANTINED, State.UPGRADING,
              State.RETURNING_TO_SERVICE, State.RETURNING_TO_SERVICE]  # fmt: skip
    moves = [(e["from_state"], e["to_state"]) for e in body["events"]]
    assert moves == list(itertools.pairwise(states))
    first = body["events"][0]
    assert set(first) == {"event_id", "at", "kind", "actor", "event", "from_state", "to_state",
                          "detail"}  # fmt: skip
    assert (first["kind"], first["actor"]) == ("transition", "operator:t0")
    assert first["at"] == svc.clock()
    assert first["detail"] == {"step": 0}

    pages, url = [], timeline_url("dev-1") + "?limit=2"
    while url:
        page = await get_json(svc, url, svc.operator)
        pages.append([e["event_id"] for e in page["events"]])
        url = page.get("next", "")
    assert [len(p) for p in pages] == [2, 2, 1]
    assert list(itertools.chain(*pages)) == [e["event_id"] for e in body["events"]]
    after = body["events"][3]["event_id"]
    rest = await get_json(svc, timeline_url("dev-1") + f"?after={after}", svc.operator)
    assert [e["event"] for e in rest["events"]] == ["attestation-affirmed"]


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "limit=x", "after=-1", "after=1.5"])
async def test_bad_paging_is_a_400_problem(svc: Service, query: str) -> None:
    await get_json(svc, timeline_url("dev-1") + f"?{query}", svc.operator, 400)


async def test_unknown_device_is_404(svc: Service) -> None:
    for path in (timeline_url("nope"), "/v1/operator/devices/nope/escalation/clear"):
        problem = await (get_json(svc, path, svc.operator, 404) if path.endswith("timeline")
                         else post(svc, path, svc.operator, 404))  # fmt: skip
        assert problem["status"] == 404
    await post(svc, "/v1/operator/devices/nope/decommission", svc.operator, 404)


async def test_gateway_sees_only_its_own_devices(svc: Service) -> None:
    now = svc.clock()
    await accounts.register_device(svc.store, "dev-gw", "acme", class_name=CLASS_NAME,
                                   gateway="gw-1", now=now)  # fmt: skip
    gateway, _ = await accounts.issue_credential(svc.store, Role.GATEWAY, "gw-1", now=now)
    rival, _ = await accounts.issue_credential(svc.store, Role.GATEWAY, "gw-2", now=now)
    await walk(svc.store, "dev-gw", [Event.ENROLLED], now)
    own = await get_json(svc, timeline_url("dev-gw"), gateway)
    assert [e["event"] for e in own["events"]] == ["enrolled"]
    assert own["events"][0]["actor"] == "operator"  # the role, not the token id behind it
    await get_json(svc, timeline_url("dev-1"), gateway, 404)  # registered, but not gw-1's
    await get_json(svc, timeline_url("dev-gw"), rival, 404)
    await get_json(svc, timeline_url("dev-gw"), svc.vendor_token, 403)
    # The decisions are the operator's alone.
    await post(svc, "/v1/operator/devices/dev-gw/decommission", gateway, 403)
    await post(svc, "/v1/operator/devices/dev-gw/escalation/clear", gateway, 403)


async def test_decommission_then_again_is_409(svc: Service) -> None:
    await walk(svc.store, "dev-1", [Event.ENROLLED], svc.clock())
    done = await post(svc, "/v1/operator/devices/dev-1/decommission", svc.operator, 200)
    assert (done["device_id"], done["state"], done["backups_purged"]) == (
        "dev-1", "decommissioned", 0)  # fmt: skip
    assert (await svc.store.get_lifecycle("dev-1")).state is State.DECOMMISSIONED
    # Its credentials are revoked at once: the device reaches nothing any more.
    resp = await svc.client.get("/v1/device/update", headers=svc.auth(svc.devices["dev-1"]))
    assert resp.status == 401
    problem = await post(svc, "/v1/operator/devices/dev-1/decommission", svc.operator, 409)
    assert problem["type"].endswith("/illegal-transition") and problem["state"] == "decommissioned"
    last = (await get_json(svc, timeline_url("dev-1"), svc.operator))["events"][-1]
    operator_id = svc.operator.split("_")[1]
    assert (last["event"], last["actor"]) == ("decommissioned", f"operator:{operator_id}")


async def test_decommission_purges_configuration_backups(svc: Service) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"wifi": "secret"}'

    for _ in range(2):
        await vault_service.store_backup(svc.store, svc.config, "dev-1", chunks(), now=svc.clock())
    await vault_service.store_backup(svc.store, svc.config, "dev-2", chunks(), now=svc.clock())
    done = await post(svc, "/v1/operator/devices/dev-1/decommission", svc.operator, 200)
    assert done["backups_purged"] == 2
    assert await vault_service.backups(svc.store, "dev-1") == []
    assert len(await vault_service.backups(svc.store, "dev-2")) == 1  # another device's stay


async def test_clearing_an_escalation_tells_the_gateway_it_may_acknowledge(svc: Service) -> None:
    now = svc.clock()
    await accounts.register_device(svc.store, "dev-gw", "acme", class_name=CLASS_NAME,
                                   gateway="gw-1", now=now)  # fmt: skip
    ready = [Event.UPDATE_FETCHED, Event.UPDATE_REPORTED, Event.ATTESTATION_AFFIRMED,
             Event.CONFIG_RESTORED]  # fmt: skip
    await walk(svc.store, "dev-gw", TO_ESCALATED + ready, now)
    lc = await svc.store.get_lifecycle("dev-gw")
    assert (lc.state, lc.escalated, lc.verdict_affirmed) == (State.RETURNING_TO_SERVICE, True, True)
    before = await svc.store.signals_after("gw-1", 0, 100)
    await post(svc, "/v1/operator/devices/dev-gw/escalation/clear", svc.operator, 200)
    new = [s for s in await svc.store.signals_after("gw-1", 0, 100) if s not in before]
    assert [s.kind for s in new] == ["reinstatement-ready"]


async def test_escalation_clear_follows_the_table(svc: Service) -> None:
    clear = "/v1/operator/devices/{}/escalation/clear"
    await walk(svc.store, "dev-1", TO_ESCALATED, svc.clock())
    assert (await svc.store.get_lifecycle("dev-1")).escalated
    body = await get_json(svc, timeline_url("dev-1"), svc.operator)
    assert body["escalated"] and "an operator must clear the escalation" in body["next_step"]
    done = await post(svc, clear.format("dev-1"), svc.operator, 200)
    assert done == {"device_id": "dev-1", "state": "quarantined", "escalated": False}
    assert not (await svc.store.get_lifecycle("dev-1")).escalated
    # Not escalated but quarantined: the table has the pair, so it is a harmless no-op.
    assert TRANSITIONS[(State.QUARANTINED, Event.ESCALATION_CLEARED)] is State.QUARANTINED
    await post(svc, clear.format("dev-1"), svc.operator, 200)
    # Nominal: no such pair, 409 and nothing recorded.
    assert (State.NOMINAL, Event.ESCALATION_CLEARED) not in TRANSITIONS
    await walk(svc.store, "dev-2", [Event.ENROLLED], svc.clock())
    problem = await post(svc, clear.format("dev-2"), svc.operator, 409)
    assert problem["event"] == "escalation-cleared" and problem["state"] == "nominal"
    assert len((await get_json(svc, timeline_url("dev-2"), svc.operator))["events"]) == 1


def test_admin_timeline_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    start = 1_800_000_000.0  # 2027-01-15T08:00:00Z

    async def prepare() -> None:
        store = SqliteStore(data)
        try:
            await accounts.add_vendor(store, "acme", vendor_domains=["acme.example"], now=start)
            await accounts.register_device(store, "dev-1", "acme", class_name=CLASS_NAME,
                                           now=start)  # fmt: skip
            await walk(store, "dev-1", TO_ESCALATED, start)
        finally:
            store.close()

    asyncio.run(prepare())
    assert main(["admin", "--data-dir", str(data), "timeline", "dev-1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "device dev-1: quarantined (escalated)"
    assert len(lines) == 2 + len(TO_ESCALATED)
    assert lines[1].startswith("2027-01-15T08:00:00Z  transition  enrolled ")
    assert "new → nominal" in lines[1] and lines[1].endswith("operator:t0  step=0")
    assert "attestation-failed" in lines[4] and "upgrading → quarantined" in lines[4]
    assert lines[-1] == (f"next: {QUARANTINED_STEP}; an operator must "
                         "clear the escalation before it can be reinstated")  # fmt: skip

    assert main(["admin", "--data-dir", str(data), "timeline", "dev-1", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert (body["state"], body["escalated"]) == ("quarantined", True)
    assert [e["event"] for e in body["events"]] == [str(e) for e in TO_ESCALATED]

    assert main(["admin", "--data-dir", str(data), "timeline", "nope"]) == 2
    assert "no device nope" in capsys.readouterr().err


def test_signal_lines_name_the_signal_kind() -> None:
    entry = TimelineEntry(7, "dev-1", 1_800_000_000.0, "signal", "service", None, None, None,
                          {"kind": "quarantined", "signal_id": 3, "gateway": "gw-1"})  # fmt: skip
    line = format_entry(entry)
    assert line.split() == ["2027-01-15T08:00:00Z", "signal", "quarantined", "service",
                            "signal_id=3", "gateway=gw-1"]  # fmt: skip
    long = TimelineEntry(8, "dev-1", 0.0, "transition", "device:x", "update-fetched",
                         "quarantined", "upgrading", {"digest": "ab" * 32})  # fmt: skip
    assert format_entry(long).endswith("…") and "quarantined → upgrading" in format_entry(long)


async def test_a_decommissioned_device_gets_no_new_credentials(svc: Service) -> None:
    await walk(svc.store, "dev-1", [Event.ENROLLED], svc.clock())
    await post(svc, "/v1/operator/devices/dev-1/decommission", svc.operator, 200)
    resp = await svc.client.post("/v1/operator/tokens", json={"role": "device", "scope": "dev-1"},
                                 headers=svc.auth(svc.operator))  # fmt: skip
    assert resp.status == 409
