"""The gateway simulator (suitsrv/gatewaysim.py): its SSE parser and device records on their
own, then its coroutines against a real service on 127.0.0.1 (claim, repeated incident →
quarantined with the pinhole recorded, following the stream to reinstatement, resuming with
Last-Event-ID), and the console script's exit codes against a `suitsrv serve` process."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from suitsrv import accounts, devices
from suitsrv.cli.main import main
from suitsrv.gatewaysim import (
    Device,
    GatewaySim,
    SimError,
    SseEvent,
    SseParser,
    incident_summary,
    parse_device,
)
from suitsrv.lifecycle import Event
from suitsrv.store import Role, SqliteStore
from suitsrv.web.events import stop_streams

from .server_process import ServerProcess, run_cli
from .service_fixtures import Service, start_service

CODE = "QX7K-29FD-LL3P"  # the claim code on the device's label
ACES = ("fw0-frdev", "fw0-todev", "dns0-frdev", "dns0-todev", "ntp0-frdev", "ntp0-todev")


def feed(parser: SseParser, text: str) -> list[SseEvent]:
    """Feed ``text`` line by line as the simulator does (terminator stripped)."""
    events = [parser.feed(line.rstrip("\r")) for line in text.split("\n")]
    return [e for e in events if e is not None]


# -- pure helpers ------------------------------------------------------------------------------


def test_sse_parser_reads_the_service_framing() -> None:
    doc = '{"id":5,"kind":"quarantined"}'
    parser = SseParser()
    text = f"retry: 2000\n\n: keep-alive\n\nid: 5\nevent: quarantined\ndata: {doc}\n\n"
    assert feed(parser, text) == [SseEvent("quarantined", doc, "5")]
    assert parser.last_id == "5"


def test_sse_parser_follows_the_whatwg_rules() -> None:
    parser = SseParser("3")
    text = (
        "data: one\r\ndata:  two\r\ndata\r\n\r\n"  # CRLF; one leading space stripped; bare field
        "id: 9\n\n"  # no data: nothing dispatched, but the id counts
        "id: bad\0id\nevent: x\nfoo: bar\ndata: y\n\n"  # an id with NUL is ignored
    )
    assert feed(parser, text) == [SseEvent("message", "one\n two\n", "3"), SseEvent("x", "y", "9")]
    assert parser.last_id == "9"


def test_sse_parser_moves_the_resume_id_only_on_dispatch() -> None:
    parser = SseParser("3")
    assert feed(parser, "id: 7\nevent: reinstated\ndata: {}") == []  # cut before the blank line
    assert parser.last_id == "3"  # a reconnect asks for event 7 again
    assert feed(parser, "\n") == [SseEvent("reinstated", "{}", "7")]
    assert parser.last_id == "7"


def test_sse_parser_drops_oversized_events() -> None:
    parser = SseParser()
    huge = "data: " + "x" * 40_000 + "\n"
    events = feed(parser, f"id: 1\n{huge}{huge}\nid: 2\ndata: ok\n\n")
    assert events == [SseEvent("message", "ok", "2")]


def test_device_record_and_pinhole_line() -> None:
    pinhole = {"mud_url": "https://u.example/mud/a.json", "enabled_ace_names": list(ACES)}
    view = {"device_id": "cam-1", "state": "quarantined", "escalated": False, "pinhole": pinhole}
    device = parse_device(view)
    assert device == Device("cam-1", "quarantined", False, "https://u.example/mud/a.json", ACES)
    assert device.policy == "pinhole"
    assert device.pinhole() == (
        "pinhole: https://u.example/mud/a.json aces: fw0-frdev, fw0-todev, dns0-frdev, "
        "dns0-todev, ntp0-frdev, ntp0-todev"
    )
    assert parse_device(device.as_json()) == device
    reinstated = parse_device({"device_id": "cam-1", "state": "nominal", "mud_url": "https://m"})
    assert (reinstated.policy, reinstated.mud_url, reinstated.aces) == ("full", "https://m", ())


@pytest.mark.parametrize(
    "doc",
    [
        None,
        [],
        {"state": "nominal"},
        {"device_id": 7, "state": "nominal"},
        {"device_id": "d", "state": "quarantined", "pinhole": "open"},
        {"device_id": "d", "state": "quarantined", "pinhole": {"enabled_ace_names": [1]}},
        {"device_id": "d", "state": "quarantined", "pinhole": {"mud_url": 5}},
    ],
)
def test_parse_device_refuses_malformed_documents(doc: object) -> None:
    with pytest.raises(SimError):
        parse_device(doc)


def test_incident_summary_holds_no_payloads() -> None:
    summary = incident_summary("scanning", 1000.0)
    assert summary["kind"] == "scanning"
    assert (summary["window_start"], summary["window_end"]) == (700.0, 1000.0)
    destinations = summary["destinations"]
    assert isinstance(destinations, list) and destinations
    assert all(set(d) == {"name", "port", "count"} for d in destinations)


# -- against a real service --------------------------------------------------------------------


@pytest.fixture
async def gw(tmp_path: Path, aiohttp_client: Any) -> AsyncIterator[tuple[Service, GatewaySim]]:
    svc = await start_service(tmp_path, aiohttp_client)
    await accounts.register_device(svc.store, "cam-9", "acme", class_name="thermostat-v2",
                                   claim_code=CODE, now=svc.clock())  # fmt: skip
    token, _ = await accounts.issue_credential(svc.store, Role.GATEWAY, "gw-1", now=svc.clock())
    server = str(svc.client.make_url(""))
    async with aiohttp.ClientSession(headers=svc.auth(token)) as session:
        yield svc, GatewaySim(session, server, tmp_path / "gateway.json")
    svc.store.close()


def state_file(sim: GatewaySim) -> dict[str, Any]:
    assert sim.state_file is not None
    doc: dict[str, Any] = json.loads(sim.state_file.read_text())
    return doc


async def drive(svc: Service, event: Event, role: str) -> None:
    """The lifecycle as the service moves it (device reports, appraisal, restore): through
    devices.record, so the signals are written in the same transaction as the transition."""
    device = await svc.store.get_device("cam-9")
    assert device is not None
    await devices.record(svc.store, svc.config, device, event, role=role, actor="test",
                         now=svc.clock())  # fmt: skip


async def test_claim_and_repeated_incident_record_the_pinhole(
    gw: tuple[Service, GatewaySim], capsys: pytest.CaptureFixture[str]
) -> None:
    svc, sim = gw
    with pytest.raises(SimError, match="HTTP 404"):
        await sim.claim("cam-9", "wrong-code")
    assert (await sim.claim("cam-9", CODE)).state == "nominal"
    device = await sim.incident("cam-9", "scanning", times=2)  # repeated: quarantined
    assert device.state == "quarantined" and device.aces == ACES
    assert device.mud_url is not None and device.mud_url.startswith("https://updates.example/")
    out = capsys.readouterr().out.splitlines()
    pinhole = f"pinhole: {device.mud_url} aces: {', '.join(ACES)}"
    assert out == ["cam-9: nominal", "cam-9: quarantined", pinhole]
    with pytest.raises(SimError, match="HTTP 409"):  # already quarantined: the table says no
        await sim.incident("cam-9")
    entry = state_file(sim)["devices"]["cam-9"]
    assert entry["policy"] == "pinhole" and entry["pinhole"]["enabled_ace_names"] == list(ACES)
    assert (await sim.state("cam-9")) == device
    with pytest.raises(SimError, match="HTTP 404"):
        await sim.state("dev-1")  # not this gateway's device
    assert (await svc.store.get_lifecycle("cam-9")).state == "quarantined"


async def test_follow_acknowledges_reinstatement(
    gw: tuple[Service, GatewaySim], capsys: pytest.CaptureFixture[str]
) -> None:
    svc, sim = gw
    await sim.claim("cam-9", CODE)
    await sim.incident("cam-9", times=2)
    follow = asyncio.create_task(sim.follow(until="cam-9", timeout=15))
    await drive(svc, Event.UPDATE_FETCHED, "device")  # through the pinhole: the fixed release
    assert (await svc.store.get_lifecycle("cam-9")).state == "upgrading"
    await drive(svc, Event.UPDATE_REPORTED, "device")
    await drive(svc, Event.ATTESTATION_AFFIRMED, "service")
    await drive(svc, Event.CONFIG_RESTORED, "service")  # → reinstatement-ready
    assert await follow == 0
    assert (await svc.store.get_lifecycle("cam-9")).state == "nominal"
    out = capsys.readouterr().out
    lines = [line.split("  ")[1:] for line in out.splitlines() if line[:2] == "20"]
    assert lines == [
        ["cam-9", "state-changed", "nominal"],
        ["cam-9", "state-changed", "suspicious"],
        ["cam-9", "quarantined", "quarantined"],
        ["cam-9", "state-changed", "upgrading"],
        ["cam-9", "state-changed", "returning-to-service"],
        ["cam-9", "reinstatement-ready", "returning-to-service"],
        ["cam-9", "reinstated", "nominal"],
    ]
    assert "  lifted quarantine for cam-9\n" in out
    assert "  full MUD policy applies again for cam-9: https://updates.example/" in out
    assert out.count("\n  pinhole: ") == 3  # quarantined, upgrading, returning: it holds
    signals = await svc.store.signals_after("gw-1", 0, 100)
    saved = state_file(sim)
    assert saved["last_event_id"] == signals[-1].signal_id
    entry = saved["devices"]["cam-9"]
    assert (entry["state"], entry["policy"], entry["pinhole"]) == ("nominal", "full", None)

    # A fresh gateway without memory replays everything: the old signal to acknowledge is
    # refused (the device is nominal already), and the replayed "reinstated" ends the wait.
    fresh = GatewaySim(sim.session, sim.server)
    assert await fresh.follow(until="cam-9", timeout=10) == 0
    assert "HTTP 409" in capsys.readouterr().out


async def test_follow_resumes_after_the_last_event_id(
    gw: tuple[Service, GatewaySim], capsys: pytest.CaptureFixture[str]
) -> None:
    svc, sim = gw
    now = svc.clock()

    async def signal(kind: str, state: str) -> int:
        payload = {"device_id": "cam-9", "state": state}
        return await svc.store.add_signal("gw-1", "cam-9", kind, payload, now)

    first = await signal("state-changed", "nominal")
    second = await signal("state-changed", "suspicious")
    assert sim.state_file is not None
    sim.state_file.write_text(json.dumps({"last_event_id": first, "devices": {}}))
    resumed = GatewaySim(sim.session, sim.server, sim.state_file)  # a new run, same memory
    assert await resumed.follow(timeout=1) == 0  # no --until: a timeout is the end
    out = capsys.readouterr().out
    assert "state-changed  suspicious" in out and "nominal" not in out
    assert state_file(sim)["last_event_id"] == second

    # The service ends every stream (as on shutdown): the simulator reconnects with
    # Last-Event-ID and sees each later signal exactly once.
    follow = asyncio.create_task(resumed.follow(until="cam-9", timeout=15))
    third = await signal("state-changed", "quarantined")
    async with asyncio.timeout(10):
        while resumed.last_event_id != third:
            await asyncio.sleep(0.05)
    await stop_streams(svc.client.app)
    await asyncio.sleep(0.2)  # the open stream ends first, so the next signal needs a reconnect
    await svc.store.add_signal("gw-1", "cam-9", "reinstated",
                               {"device_id": "cam-9", "state": "nominal", "mud_url": "https://m"},
                               now)  # fmt: skip
    assert await follow == 0
    out = capsys.readouterr().out
    assert out.count("state-changed  quarantined") == 1 and out.count("reinstated  nominal") == 1
    assert "suspicious" not in out


async def test_follow_timeout_and_refusal(
    gw: tuple[Service, GatewaySim], capsys: pytest.CaptureFixture[str]
) -> None:
    svc, sim = gw
    assert await sim.follow(until="cam-9", timeout=0.5) == 1
    assert "timed out: cam-9 was not reinstated" in capsys.readouterr().out
    async with aiohttp.ClientSession(headers=svc.auth("sst_000000000000_" + "x" * 43)) as bad:
        with pytest.raises(SimError, match="HTTP 401"):
            await GatewaySim(bad, sim.server).follow(timeout=5)
    assert sim.state_file is not None
    sim.state_file.write_text("{not json")
    with pytest.raises(SimError, match="state file"):
        GatewaySim(sim.session, sim.server, sim.state_file)


# -- the console script ------------------------------------------------------------------------


def test_console_script_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"

    async def register() -> str:
        store = SqliteStore(data)
        try:
            await accounts.add_vendor(store, "acme", vendor_domains=["acme.example"], now=0)
            await accounts.register_device(store, "cam-9", "acme", class_name="thermostat-v2",
                                           claim_code=CODE, now=0)  # fmt: skip
            return (await accounts.issue_credential(store, Role.GATEWAY, "gw-1", now=0))[0]
        finally:
            store.close()

    token, state = asyncio.run(register()), tmp_path / "gw.json"
    with ServerProcess.start(data, tmp_path) as server:
        common = (
            "gateway-sim",
            "--server",
            server.url,
            "--token",
            token,
            "--state-file",
            str(state),
        )

        def sim(*args: str) -> tuple[int, str, str]:
            done = run_cli(*common, *args)
            return done.returncode, done.stdout, done.stderr

        code, _, err = sim("state", "cam-9")
        assert code == 1 and "HTTP 404" in err  # not claimed yet: not this gateway's
        assert sim("claim", "cam-9", "--claim-code", CODE)[:2] == (0, "cam-9: nominal\n")
        # The rest in this process (quicker than a child each): the same main() as the script.
        assert main([*common, "incident", "cam-9", "--times", "2"]) == 0
        out = capsys.readouterr().out
        assert out.startswith("cam-9: quarantined\npinhole: http://127.0.0.1:")
        assert json.loads(state.read_text())["devices"]["cam-9"]["policy"] == "pinhole"
        assert sim("state", "cam-9")[:2] == (0, out)
        assert main([*common, "follow", "--until-reinstated", "cam-9", "--timeout", "0.5"]) == 1
        assert main([*common, "follow", "--timeout", "-1"]) == 2
        for usage in (["incident", "cam-9", "--times", "0"], []):
            with pytest.raises(SystemExit) as exit_:
                main([*common, *usage])
            assert exit_.value.code == 2
        assert run_cli("gateway-sim", "--server", "nowhere", "--token", token, "state",
                       "cam-9").returncode == 2  # fmt: skip
        assert server.stop() == 0
    code, _, err = sim("state", "cam-9")
    assert code == 1 and "127.0.0.1" in err  # the service is gone: not reachable
