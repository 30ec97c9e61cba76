"""Gateway events: the Server-Sent Events stream and signed webhook delivery, over real HTTP on
127.0.0.1 with a real SQLite store. The webhook receiver is a small aiohttp app standing in for
the gateway (outside the product, so faking it is allowed); it checks the HMAC itself with
``hmac``, not with our signing code."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer

from suitsrv import accounts, devices, vault_service
from suitsrv.config import Config
from suitsrv.lifecycle import Event
from suitsrv.signals import GuardedResolver, SignalSettings
from suitsrv.store import Role, SqliteStore
from suitsrv.store.gateway_queries import ensure_schema, webhook_status
from suitsrv.web import create_app
from suitsrv.web.app import INFLIGHT
from suitsrv.web.events import SIGNAL_SETTINGS, routes, stop_streams, webhook_worker
from suitsrv.web.routes import all_routes

from .service_fixtures import CLASS_NAME, FakeClock

FAST = SignalSettings(
    stream_poll=0.05, keepalive=0.3, webhook_poll=0.05, backoff_base=0.02, backoff_cap=0.1,
    webhook_timeout=2.0,
)  # fmt: skip
SECRET = bytes(range(32)).hex()

AiohttpClient = Callable[..., Awaitable[TestClient[Any, Any]]]


@dataclass
class Gateways:
    store: SqliteStore
    config: Config
    clock: FakeClock
    tokens: dict[str, str]
    make_client: Callable[[SignalSettings], Awaitable[TestClient[Any, Any]]]
    clients: list[TestClient[Any, Any]] = field(default_factory=list)

    def auth(self, gateway: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[gateway]}"}

    async def start(self, settings: SignalSettings = FAST) -> TestClient[Any, Any]:
        client = await self.make_client(settings)
        self.clients.append(client)
        return client

    async def signal(self, gateway: str, device: str, kind: str = "state-changed") -> int:
        payload = {"device_id": device, "state": "nominal"}
        return await self.store.add_signal(gateway, device, kind, payload, self.clock())


@pytest.fixture
async def gw(tmp_path: Path, aiohttp_client: AiohttpClient) -> AsyncIterator[Gateways]:
    config = Config(data_dir=tmp_path / "data", public_base_url="https://updates.example")
    store = SqliteStore(config.data_dir)
    await store.write(ensure_schema)  # migration 4 once integrated; idempotent meanwhile
    clock = FakeClock()
    # Until create_app registers the routes and hooks itself, the test adds them.
    integrated = any(r.path == "/v1/gateway/events" for r in all_routes())

    async def make_client(settings: SignalSettings) -> TestClient[Any, Any]:
        table = all_routes() if integrated else [*all_routes(), *routes()]
        app = create_app(config, store, routes=table, clock=clock, rng=random.Random(7))
        app[SIGNAL_SETTINGS] = settings
        if webhook_worker not in app.cleanup_ctx:
            app.cleanup_ctx.append(webhook_worker)
        if stop_streams not in app.on_shutdown:
            app.on_shutdown.append(stop_streams)
        return await aiohttp_client(app)

    tokens = {}
    for name in ("gw-1", "gw-2"):
        tokens[name], _ = await accounts.issue_credential(store, Role.GATEWAY, name, now=clock())
    gateways = Gateways(store, config, clock, tokens, make_client)
    yield gateways
    for client in gateways.clients:
        await client.close()
    store.close()


async def next_event(resp: ClientResponse, timeout: float = 5.0) -> dict[str, str]:
    """The next SSE block as {field: value}; a comment line comes back under ""."""
    block: dict[str, str] = {}
    async with asyncio.timeout(timeout):
        while True:
            raw = await resp.content.readline()
            if not raw:
                raise EOFError("stream ended")
            line = raw.decode().removesuffix("\n")
            if not line:
                if block:
                    return block
                continue
            name, _, value = line.partition(":")
            block[name] = value.removeprefix(" ")


async def next_signal(resp: ClientResponse) -> dict[str, str]:
    while "id" not in (block := await next_event(resp)):
        pass
    return block


async def wait_until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


async def wait_delivered(gw: Gateways, signal_id: int, timeout: float = 5.0) -> None:
    """Until the store records the webhook's acknowledgement of ``signal_id``."""
    async with asyncio.timeout(timeout):
        while True:
            status = await gw.store.read(webhook_status, "gw-1")
            if status is not None and status.delivered_through >= signal_id:
                return
            await asyncio.sleep(0.01)


# -- the stream ---------------------------------------------------------------------------


async def test_stream_sends_backlog_then_new_signals_of_its_own_gateway(gw: Gateways) -> None:
    client = await gw.start()
    first = await gw.signal("gw-1", "dev-a", "quarantined")
    await gw.signal("gw-2", "dev-x")
    second = await gw.signal("gw-1", "dev-b", "reinstatement-ready")
    async with client.get("/v1/gateway/events", headers=gw.auth("gw-1")) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/event-stream"
        assert await next_event(resp) == {"retry": "2000"}
        got = [await next_signal(resp), await next_signal(resp)]
        assert [(e["id"], e["event"]) for e in got] == [
            (str(first), "quarantined"), (str(second), "reinstatement-ready"),
        ]  # fmt: skip
        data = json.loads(got[0]["data"])
        assert data == {
            "id": first, "kind": "quarantined", "device_id": "dev-a", "created_at": gw.clock(),
            "payload": {"device_id": "dev-a", "state": "nominal"},
        }  # fmt: skip
        await gw.signal("gw-2", "dev-y")  # another gateway's: never on this stream
        third = await gw.signal("gw-1", "dev-a", "reinstated")
        pushed = await next_signal(resp)
        assert (pushed["id"], pushed["event"]) == (str(third), "reinstated")


async def test_stream_carries_lifecycle_signals(gw: Gateways) -> None:
    client = await gw.start()
    now = gw.clock()
    await accounts.add_vendor(gw.store, "acme", vendor_domains=["acme.example"], now=now)
    device, _ = await accounts.register_device(
        gw.store, "dev-q", "acme", class_name=CLASS_NAME, gateway="gw-1", now=now
    )
    for event in (Event.ENROLLED, Event.QUARANTINE_ORDERED):
        await devices.record(gw.store, gw.config, device, event, role="operator", actor="op",
                             now=now)  # fmt: skip
    async with client.get("/v1/gateway/events", headers=gw.auth("gw-1")) as resp:
        events = {e["event"]: json.loads(e["data"]) for e in [await next_signal(resp)]}
        while "quarantined" not in events:
            block = await next_signal(resp)
            events[block["event"]] = json.loads(block["data"])
    assert events["quarantined"]["device_id"] == "dev-q"
    assert "mud_url" in events["quarantined"]["payload"]["pinhole"]


@pytest.mark.parametrize("how", ["header", "query"])
async def test_stream_resumes_after_last_event_id(gw: Gateways, how: str) -> None:
    client = await gw.start()
    ids = [await gw.signal("gw-1", f"dev-{n}") for n in range(3)]
    headers = gw.auth("gw-1")
    path = "/v1/gateway/events"
    if how == "header":
        headers["Last-Event-ID"] = str(ids[0])
    else:
        path += f"?after={ids[0]}"
    async with client.get(path, headers=headers) as resp:
        assert [(await next_signal(resp))["id"] for _ in range(2)] == [str(i) for i in ids[1:]]


async def test_bad_resume_point_is_a_problem(gw: Gateways) -> None:
    client = await gw.start()
    headers = {**gw.auth("gw-1"), "Last-Event-ID": "abc"}
    resp = await client.get("/v1/gateway/events", headers=headers)
    assert resp.status == 400
    assert resp.content_type == "application/problem+json"


async def test_idle_stream_sends_keepalive_comments(gw: Gateways) -> None:
    client = await gw.start()
    async with client.get("/v1/gateway/events", headers=gw.auth("gw-1")) as resp:
        assert await next_event(resp) == {"retry": "2000"}
        assert await next_event(resp, timeout=2) == {"": "keep-alive"}


async def test_streams_end_promptly_on_shutdown(gw: Gateways) -> None:
    client = await gw.start()
    app = client.app
    assert app is not None
    resp = await client.get("/v1/gateway/events", headers=gw.auth("gw-1"))
    await next_event(resp)
    assert app[INFLIGHT].count == 1  # a stream is a request in flight: the drain waits for it
    await stop_streams(app)
    with pytest.raises(EOFError):
        await next_event(resp, timeout=2)
    resp.close()
    assert await app[INFLIGHT].wait_idle(2)
    # Whole runner shutdown (on_shutdown -> stop_streams) with a stream open: no 60 s wait.
    other = await gw.start()
    resp = await other.get("/v1/gateway/events", headers=gw.auth("gw-2"))
    await next_event(resp)
    started = time.monotonic()
    await other.server.close()  # the connection stays open: only stop_streams ends the stream
    assert time.monotonic() - started < 3
    resp.close()


async def test_only_gateways_stream(gw: Gateways) -> None:
    client = await gw.start()
    operator, _ = await accounts.issue_credential(gw.store, Role.OPERATOR, "*", now=gw.clock())
    resp = await client.get("/v1/gateway/events", headers={"Authorization": f"Bearer {operator}"})
    assert resp.status == 403


# -- webhooks -----------------------------------------------------------------------------


@dataclass
class Receiver:
    """The gateway's webhook endpoint: records what arrives, answers ``statuses`` in turn."""

    statuses: list[int] = field(default_factory=list)
    received: list[int] = field(default_factory=list)
    bad_signatures: int = 0
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        timestamp = request.headers["Suitsrv-Timestamp"]
        expected = hmac.new(bytes.fromhex(SECRET), timestamp.encode() + b"." + body,
                            hashlib.sha256).hexdigest()  # fmt: skip
        signature = request.headers["Suitsrv-Signature"]
        document = json.loads(body)
        if not hmac.compare_digest(signature, f"sha256={expected}") or document["id"] != int(
            request.headers["Suitsrv-Signal-Id"]
        ):
            self.bad_signatures += 1
            return web.Response(status=401)
        self.received.append(document["id"])
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)


@pytest.fixture
async def receiver(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Receiver:
    hook = Receiver()
    app = web.Application()
    app.router.add_post("/hook", hook.handle)
    server = await aiohttp_server(app, host="127.0.0.1")
    hook.url = str(server.make_url("/hook"))
    return hook


async def register(client: TestClient[Any, Any], gw: Gateways, url: str, **extra: Any) -> Any:
    body = {"url": url, "secret": SECRET, **extra}
    resp = await client.put("/v1/gateway/webhook", json=body, headers=gw.auth("gw-1"))
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def webhook_state(client: TestClient[Any, Any], gw: Gateways) -> Any:
    return await (await client.get("/v1/gateway/webhook", headers=gw.auth("gw-1"))).json()


async def test_webhook_delivers_signed_signals_in_order(gw: Gateways, receiver: Receiver) -> None:
    client = await gw.start()
    queued = await gw.signal("gw-1", "dev-a", "quarantined")  # before registration: delivered
    view = await register(client, gw, receiver.url)
    assert view == {"url": receiver.url, "delivered_through": 0, "failures": 0,
                    "last_error": None, "last_attempt_at": None}  # fmt: skip
    await gw.signal("gw-2", "dev-x")  # gw-2 has no webhook
    later = await gw.signal("gw-1", "dev-a", "reinstated")
    await wait_until(lambda: len(receiver.received) >= 2)
    assert receiver.received == [queued, later]
    assert receiver.bad_signatures == 0
    await wait_delivered(gw, later)
    assert (await webhook_state(client, gw))["delivered_through"] == later


async def test_webhook_retries_with_backoff_then_continues_in_order(
    gw: Gateways, receiver: Receiver
) -> None:
    client = await gw.start(SignalSettings(webhook_poll=0.05, backoff_base=0.4, backoff_cap=1))
    receiver.statuses = [500, 500]
    first = await gw.signal("gw-1", "dev-a")
    second = await gw.signal("gw-1", "dev-b")
    await register(client, gw, receiver.url)
    await wait_until(lambda: len(receiver.received) == 2)
    # In the backoff after the second failure: visible to the gateway, requests still answered.
    # The worker records the failure just after the receiver answered: wait for that write.
    async with asyncio.timeout(5):
        while (state := await webhook_state(client, gw))["failures"] < 2:
            await asyncio.sleep(0.01)
    assert (state["failures"], state["last_error"], state["delivered_through"]) == (
        2, "HTTP 500", 0,
    )  # fmt: skip
    await wait_until(lambda: len(receiver.received) == 4)
    assert receiver.received == [first, first, first, second]
    await wait_delivered(gw, second)
    state = await webhook_state(client, gw)
    assert (state["failures"], state["last_error"], state["delivered_through"]) == (0, None, second)


async def test_restart_resumes_from_the_cursor(gw: Gateways, receiver: Receiver) -> None:
    client = await gw.start()
    acknowledged = [await gw.signal("gw-1", f"dev-{n}") for n in range(2)]
    await register(client, gw, receiver.url)
    await wait_delivered(gw, acknowledged[-1])
    await client.close()  # clean-up stops the worker
    fresh = await gw.signal("gw-1", "dev-c")
    await gw.start()  # a new app on the same store
    await wait_until(lambda: len(receiver.received) == 3)
    await asyncio.sleep(0.2)
    assert receiver.received == [*acknowledged, fresh]


def _gateway_row(gw: Gateways) -> tuple[bytes | None, bytes | None]:
    with sqlite3.connect(gw.config.database_path) as conn:
        row = conn.execute(
            "SELECT webhook_secret, webhook_secret_sealed FROM gateways WHERE gateway_id = 'gw-1'"
        ).fetchone()
    return row[0], row[1]


async def test_the_secret_is_stored_sealed(gw: Gateways, receiver: Receiver) -> None:
    client = await gw.start()
    await register(client, gw, receiver.url)
    plain, sealed = _gateway_row(gw)
    assert plain is None and sealed is not None
    assert bytes.fromhex(SECRET) not in sealed and bytes.fromhex(SECRET) not in (
        gw.config.database_path.read_bytes()
        + gw.config.database_path.with_name("suitsrv.sqlite3-wal").read_bytes()
    )
    first = await gw.signal("gw-1", "dev-a")
    await wait_delivered(gw, first)  # and the worker opened it to sign (checked by the receiver)
    assert receiver.bad_signatures == 0
    # Under another master key it does not open: nothing is delivered, the gateway sees why.
    await client.close()
    gw.config.data_dir.joinpath("vault", "master.key").write_text(secrets.token_hex(32) + "\n")
    vault_service._MASTER_KEYS.clear()
    client = await gw.start()
    second = await gw.signal("gw-1", "dev-b")
    async with asyncio.timeout(5):
        while (state := await webhook_state(client, gw))["failures"] < 1:
            await asyncio.sleep(0.01)
    assert "does not open" in state["last_error"] and state["delivered_through"] == first
    assert receiver.received == [first] and second > first


async def test_a_secret_stored_in_the_clear_is_sealed_at_start(
    gw: Gateways, receiver: Receiver
) -> None:
    """A webhook registered before migration 7 kept its secret in the clear: the worker seals
    it when it starts, erases the clear copy, and delivers signed with the same secret."""
    queued = await gw.signal("gw-1", "dev-a")
    with sqlite3.connect(gw.config.database_path) as conn:
        conn.execute(
            "INSERT INTO gateways (gateway_id, webhook_url, webhook_secret, created_at) "
            "VALUES ('gw-1', ?, ?, 0)",
            [receiver.url, bytes.fromhex(SECRET)],
        )
        conn.execute("INSERT INTO webhook_cursors (gateway_id, updated_at) VALUES ('gw-1', 0)")
    await gw.start()
    await wait_until(lambda: len(receiver.received) == 1)
    assert receiver.received == [queued] and receiver.bad_signatures == 0
    plain, sealed = _gateway_row(gw)
    assert plain is None and sealed is not None and bytes.fromhex(SECRET) not in sealed


async def test_webhook_registration_rules(gw: Gateways, receiver: Receiver) -> None:
    client = await gw.start()
    headers = gw.auth("gw-1")
    bad = [
        {"url": "http://gateway.example/hook", "secret": SECRET},
        {"url": "ftp://127.0.0.1/hook", "secret": SECRET},
        {"url": "https://user:pw@gateway.example/hook", "secret": SECRET},
        {"url": "https://gateway.example/hook", "secret": "00" * 31},
        {"url": "https://gateway.example/hook", "secret": "zz" * 32},
        {"url": "https://gateway.example/hook", "secret": SECRET, "extra": 1},
        {"url": "https://gateway.example/hook", "secret": SECRET, "after": -1},
        {"url": "https://169.254.169.254/latest", "secret": SECRET},  # cloud metadata
        {"url": "https://10.1.2.3/hook", "secret": SECRET},
        {"url": "https://[fd00::1]/hook", "secret": SECRET},
        {"url": "https://0.0.0.0/hook", "secret": SECRET},
    ]
    for body in bad:
        resp = await client.put("/v1/gateway/webhook", json=body, headers=headers)
        assert resp.status == 400, body
        assert resp.content_type == "application/problem+json"
    assert (await client.get("/v1/gateway/webhook", headers=headers)).status == 404
    skipped = await gw.signal("gw-1", "dev-a")
    await register(client, gw, "https://gateway.example/hook", after=skipped)
    view = await register(client, gw, receiver.url)  # a new URL keeps the cursor
    assert view["delivered_through"] == skipped
    wanted = await gw.signal("gw-1", "dev-b")
    await wait_until(lambda: receiver.received == [wanted])
    assert (await client.delete("/v1/gateway/webhook", headers=headers)).status == 204
    assert (await client.delete("/v1/gateway/webhook", headers=headers)).status == 404
    await gw.signal("gw-1", "dev-c")
    await asyncio.sleep(0.3)
    assert receiver.received == [wanted]


async def test_webhook_names_resolving_inward_are_not_called() -> None:
    """Delivery resolves names through GuardedResolver: only the loopback names the URL rules
    admit may resolve to an internal address (real resolution of "localhost" here)."""
    assert (await GuardedResolver().resolve("localhost", 443))[0]["host"] == "127.0.0.1"
    strict = GuardedResolver(allowed=frozenset())
    with pytest.raises(OSError, match="private or reserved"):
        await strict.resolve("localhost", 443)
    await strict.close()
