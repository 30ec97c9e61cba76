"""Gateway events API: the signal stream (Server-Sent Events) and the webhook registration,
plus the two app hooks: ``webhook_worker`` (cleanup_ctx) and ``stop_streams`` (on_shutdown).

New signals reach an open stream by polling the store (``signals_after`` on the
(gateway, signal_id) index, every ``SignalSettings.stream_poll`` seconds): the writers live in
other modules and other processes (``suitsrv admin``), and a poll needs no coordination and
cannot miss a signal across a crash. Each stream ends when its client goes away or when
``stop_streams`` is called for its app, so a shutdown does not wait on idle streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import weakref
from collections.abc import AsyncIterator
from typing import Any, Final

from aiohttp import web

from suitsrv.auth import Principal
from suitsrv.errors import InvalidRequest, NotFound
from suitsrv.jsonbody import bounded_int
from suitsrv.signals import (
    KEEPALIVE,
    SSE_PREAMBLE,
    SignalSettings,
    WebhookWorker,
    check_webhook_secret,
    check_webhook_url,
    seal_webhook_secret,
    sse_event,
)
from suitsrv.store import Role
from suitsrv.store import gateway_queries as gq
from suitsrv.vault_service import master_key

from .app import CLOCK, CONFIG, RNG, STORE, Route, json_response, principal_of
from .bodies import read_json

__all__ = ["SIGNAL_SETTINGS", "routes", "stop_streams", "webhook_worker"]

#: Optional: delivery timing for this app (defaults: SignalSettings()). Set before start-up.
SIGNAL_SETTINGS = web.AppKey("signal_settings", SignalSettings)

log = logging.getLogger("suitsrv.signals")

EVENT_STREAM: Final = "text/event-stream"
_EVENT_ID: Final = re.compile(r"[0-9]{1,18}")
_JSON_LIMIT: Final = 8 << 10

# One "stop streaming" flag per application (an app cannot take new keys once started).
_stopping: weakref.WeakKeyDictionary[web.Application, asyncio.Event] = weakref.WeakKeyDictionary()


def _stop_flag(app: web.Application) -> asyncio.Event:
    flag = _stopping.get(app)
    if flag is None:
        flag = _stopping[app] = asyncio.Event()
    return flag


async def stop_streams(app: web.Application) -> None:
    """End every event stream of ``app`` within a moment (on_shutdown, or before a drain that
    waits for in-flight requests): clients reconnect elsewhere with Last-Event-ID."""
    _stop_flag(app).set()


def _settings(app: web.Application) -> SignalSettings:
    return app.get(SIGNAL_SETTINGS) or SignalSettings()


def _resume_point(request: web.Request) -> int:
    """Last-Event-ID (what an EventSource sends on reconnect) or ``?after=``; 0 = from the
    start of the gateway's signals."""
    value = request.headers.get("Last-Event-ID", request.query.get("after", "")).strip()
    if not value:
        return 0
    if not _EVENT_ID.fullmatch(value):
        raise InvalidRequest("Last-Event-ID / after must be a signal id (a decimal integer)")
    return int(value)


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def get_events(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    """The gateway's signals past the resume point in order, then new ones as they are
    written; ``: keep-alive`` comments while idle."""
    gateway = principal_of(principal).scope
    after = _resume_point(request)
    store, settings, stop = request.app[STORE], _settings(request.app), _stop_flag(request.app)
    loop = asyncio.get_running_loop()
    batch = await store.signals_after(gateway, after, settings.batch)  # errors still as problems
    response = web.StreamResponse(
        headers={"Content-Type": EVENT_STREAM, "Cache-Control": "no-store",
                 "X-Accel-Buffering": "no"},
    )  # fmt: skip
    await response.prepare(request)
    try:
        await response.write(SSE_PREAMBLE)
        last_write = loop.time()
        while True:
            for signal in batch:
                await response.write(sse_event(signal))
                after, last_write = signal.signal_id, loop.time()
            if stop.is_set() or _gone(request):
                break
            if len(batch) < settings.batch:  # caught up: wait for more
                if loop.time() - last_write >= settings.keepalive:
                    await response.write(KEEPALIVE)
                    last_write = loop.time()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), settings.stream_poll)
            batch = await store.signals_after(gateway, after, settings.batch)
    except ConnectionError:
        pass  # the gateway went away; it resumes with Last-Event-ID
    except Exception:  # headers are sent: no problem body possible, end and let it reconnect
        log.exception("event stream of gateway %s failed", gateway)
    return response


async def _json_object(request: web.Request) -> dict[str, Any]:
    return await read_json(request, _JSON_LIMIT)


def _status_view(status: gq.WebhookStatus) -> dict[str, object]:
    return {
        "url": status.url,
        "delivered_through": status.delivered_through,
        "failures": status.failures,
        "last_error": status.last_error,
        "last_attempt_at": status.last_attempt_at,
    }


async def put_webhook(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    """Register (or replace) where the gateway's signals are POSTed; the secret is write-only."""
    gateway = principal_of(principal).scope
    body = await _json_object(request)
    unknown = set(body) - {"url", "secret", "after"}
    if unknown:
        raise InvalidRequest(f"unknown fields: {sorted(unknown)}")
    url = check_webhook_url(body.get("url"))
    secret = check_webhook_secret(body.get("secret"))
    after = body.get("after")
    if after is not None:
        after = bounded_int(after, "after (a signal id)")
    sealed = seal_webhook_secret(await master_key(request.app[CONFIG]), gateway, secret)
    status = await request.app[STORE].write(
        gq.put_webhook, gateway, url, sealed, after, request.app[CLOCK]()
    )
    return json_response(_status_view(status))


async def get_webhook(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    gateway = principal_of(principal).scope
    status = await request.app[STORE].read(gq.webhook_status, gateway)
    if status is None:
        raise NotFound(f"gateway {gateway} has no webhook")
    return json_response(_status_view(status))


async def delete_webhook(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    gateway = principal_of(principal).scope
    if not await request.app[STORE].write(gq.delete_webhook, gateway):
        raise NotFound(f"gateway {gateway} has no webhook")
    return web.Response(status=204)


async def webhook_worker(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the webhook delivery task runs from start-up to clean-up. A POST cut off by
    the stop is not acknowledged, so it is delivered again after the restart."""
    config = app[CONFIG]
    worker = WebhookWorker(
        app[STORE], _settings(app), app[CLOCK], app[RNG], lambda: master_key(config)
    )
    task = asyncio.create_task(worker.run(), name="suitsrv-webhooks")
    yield
    worker.stop()
    await task


def routes() -> list[Route]:
    gateway = frozenset({Role.GATEWAY})
    return [
        Route("GET", "/v1/gateway/events", get_events, gateway,
              "The gateway's device signals as Server-Sent Events (Last-Event-ID or ?after= "
              "resumes)", "gateway", responses={200: EVENT_STREAM, 400: "bad Last-Event-ID"}),
        Route("PUT", "/v1/gateway/webhook", put_webhook, gateway,
              "Register the webhook the gateway's signals are POSTed to (HMAC-signed)",
              "gateway", request_type="application/json",
              responses={200: "webhook and delivery state", 400: "bad url or secret"}),
        Route("GET", "/v1/gateway/webhook", get_webhook, gateway,
              "The gateway's webhook and its delivery state", "gateway",
              responses={200: "webhook and delivery state", 404: "none"}),
        Route("DELETE", "/v1/gateway/webhook", delete_webhook, gateway,
              "Stop webhook delivery (the stream stays available)", "gateway",
              responses={204: "removed", 404: "none"}),
    ]  # fmt: skip
