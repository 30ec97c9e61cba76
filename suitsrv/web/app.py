"""The aiohttp application: routes as a table, one auth gate, one error renderer.

Every route is declared as a ``Route`` with the roles allowed to call it; ``create_app`` wraps
each handler so authentication and the role check happen before any handler code runs (scope
checks that depend on the resource stay in the handler). The same table feeds /openapi.json
and the authorization tests. Every error leaves through ``problem_middleware`` as RFC 9457
problem+json; handlers never build error bodies.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from attest import AttestError
from manifests import ManifestError
from suitsrv.attestation import EarSigner, Verifier, policy_for
from suitsrv.auth import Principal, TokenCache, authenticate, require
from suitsrv.config import Config
from suitsrv.devices import in_pinhole
from suitsrv.errors import PROBLEM_BASE, Forbidden, Quarantined, ServiceError
from suitsrv.nonces import NonceBook
from suitsrv.store import Role, Store
from suitsrv.store import queries as q

__all__ = [
    "CLOCK",
    "CONFIG",
    "INFLIGHT",
    "RNG",
    "STORE",
    "TOKENS",
    "VERIFIER",
    "Handler",
    "JsonAccessLogger",
    "Route",
    "create_app",
    "json_response",
    "problem_response",
]

log = logging.getLogger("suitsrv")

CONFIG = web.AppKey("config", Config)
STORE = web.AppKey("store", Store)
CLOCK: web.AppKey[Callable[[], float]] = web.AppKey("clock")
RNG = web.AppKey("rng", random.Random)

Handler = Callable[[web.Request, Principal | None], Awaitable[web.StreamResponse]]


class InFlight:
    """Requests being handled, so a shutdown can wait for them before closing connections
    (aiohttp's own shutdown stops reading request bodies at once: uploads would be cut)."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.count += 1
        self._idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True


INFLIGHT: web.AppKey[InFlight] = web.AppKey("inflight")
TOKENS: web.AppKey[TokenCache] = web.AppKey("tokens")
VERIFIER: web.AppKey[Verifier] = web.AppKey("verifier")


PROBLEM_JSON = "application/problem+json"


@dataclass(frozen=True)
class Route:
    """One endpoint: method, path, handler, who may call it, and what /openapi.json says."""

    method: str
    path: str
    handler: Handler
    roles: frozenset[Role] | None  # None: public, no credentials
    summary: str
    tag: str
    request_type: str | tuple[str, ...] | None = None
    responses: dict[int, str] = field(default_factory=dict)
    parameters: tuple[str, ...] = ()
    #: Reachable by a device in quarantine (update, payloads, reports, attestation, restore).
    pinhole: bool = False


ROUTES: web.AppKey[tuple[Route, ...]] = web.AppKey("routes")


def problem_response(
    status: int, type_: str, title: str, detail: str, headers: dict[str, str] | None = None,
    **extensions: object,
) -> web.Response:  # fmt: skip
    body: dict[str, Any] = {"type": type_, "title": title, "status": status, "detail": detail}
    body.update(extensions)
    return web.Response(
        status=status,
        text=json.dumps(body),
        content_type=PROBLEM_JSON,
        headers=headers,
    )


def json_response(
    data: object, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(data), content_type="application/json", headers=headers
    )


@web.middleware
async def problem_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The app's one middleware (each layer costs every request): counts the request in flight
    for the shutdown drain, and renders every error as problem+json."""
    tracker = request.app[INFLIGHT]
    tracker.enter()
    try:
        return await handler(request)
    except ServiceError as exc:
        return problem_response(
            exc.status, exc.problem_type, exc.title, exc.detail, exc.headers, **exc.extensions
        )
    except (ManifestError, AttestError) as exc:
        title = type(exc).__name__.removesuffix("Error").replace("Decode", "Malformed input")
        return problem_response(exc.status, exc.problem_type, title, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        detail = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        return problem_response(
            exc.status, f"{PROBLEM_BASE}http-{exc.status}", exc.reason, detail, headers
        )
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return problem_response(
            500, f"{PROBLEM_BASE}internal-error", "Internal error", "the server failed; see its log"
        )
    finally:
        tracker.leave()


def _guard(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        principal = None
        if route.roles is not None:
            app = request.app
            principal = await authenticate(
                app[STORE], request.headers.get("Authorization"), app[TOKENS]
            )
            require(principal, *route.roles)
            # A quarantined device reaches only the pinhole endpoints (issue 5 §4).
            device_limited = principal.role is Role.DEVICE and not route.pinhole
            if device_limited and await in_pinhole(app[STORE], principal.scope):
                raise Quarantined(
                    f"device {principal.scope} is quarantined: only the update, payload, "
                    "report, attestation and configuration-restore endpoints answer"
                )
        return await route.handler(request, principal)

    handle.__name__ = route.handler.__name__
    return handle


def principal_of(principal: Principal | None) -> Principal:
    """The caller of a route that requires credentials (the guard has checked them)."""
    if principal is None:
        raise Forbidden("credentials required")
    return principal


class JsonAccessLogger(AbstractAccessLogger):
    """One JSON object per request (no tokens, no bodies)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            json.dumps(
                {
                    "method": request.method,
                    "path": request.path,
                    "status": response.status,
                    "bytes": response.body_length,
                    "ms": round(time * 1000, 2),
                    "remote": request.remote,
                }
            )
        )


CREDENTIAL_POLL = 1.0  # seconds between reads of the credential generation (auth.TokenCache)


async def watch_credentials(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: keeps the token cache coherent with revocations other processes make. It
    syncs once before the first request and then every CREDENTIAL_POLL seconds; while the
    generation cannot be read, nothing stays cached (fail closed)."""
    cache, store = app[TOKENS], app[STORE]
    cache.sync(await store.read(q.credential_generation))

    async def watch() -> None:
        while True:
            await asyncio.sleep(CREDENTIAL_POLL)
            try:
                generation: int | None = await store.read(q.credential_generation)
            except Exception:
                log.exception("cannot read the credential generation; token cache emptied")
                generation = None
            cache.sync(generation)

    task = asyncio.create_task(watch(), name="suitsrv-credentials")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def create_app(
    config: Config,
    store: Store,
    *,
    routes: Iterable[Route] | None = None,
    clock: Callable[[], float] = time.time,
    rng: random.Random | None = None,
    signer: EarSigner | None = None,
) -> web.Application:
    """The service's aiohttp application over ``store``."""
    if routes is None:
        from suitsrv.web.routes import all_routes

        routes = all_routes()
    table = tuple(routes)
    app = web.Application(
        middlewares=[problem_middleware],
        client_max_size=max(config.limits.envelope_bytes, config.limits.report_bytes) + 1024,
    )
    app[CONFIG] = config
    app[STORE] = store
    app[CLOCK] = clock
    app[RNG] = rng or random.Random()  # noqa: S311 - poll jitter, not security
    app[ROUTES] = table
    app[INFLIGHT] = InFlight()
    app[TOKENS] = TokenCache(max_age=3 * CREDENTIAL_POLL)
    app[VERIFIER] = Verifier(
        config,
        signer or EarSigner.load_or_create(config.data_dir / "verifier" / "ear-key.pem"),
        NonceBook(ttl=config.nonce_ttl),
        policy_for(config),
    )
    for route in table:
        app.router.add_route(route.method, route.path, _guard(route))
    from suitsrv.web.events import stop_streams, webhook_worker

    app.cleanup_ctx.append(watch_credentials)
    app.cleanup_ctx.append(webhook_worker)
    app.on_shutdown.append(stop_streams)
    return app
