"""Gateway signals leave the service two ways: a Server-Sent Events stream the gateway holds
open (web/events.py) and, when the gateway registered one, a signed webhook POST.

Both carry the same JSON document per signal. The webhook worker runs as its own task beside
request handling: it finds gateways with signals past their delivery cursor, delivers each
gateway's signals in order (one at a time per gateway, a bounded number of POSTs at once),
moves the cursor on a 2xx and otherwise retries the same signal with exponential backoff.
The cursor is in the database, so a restart resumes where delivery stopped (at-least-once:
the gateway deduplicates by ``Suitsrv-Signal-Id``).

Signature (Stripe/Standard Webhooks style)::

    Suitsrv-Timestamp: <unix seconds>
    Suitsrv-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import random
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

import aiohttp
import aiohttp.abc

from .errors import InvalidRequest
from .store import Signal, Store
from .store import gateway_queries as gq
from .vault import VaultError, open_secret, seal_secret

__all__ = [
    "KEEPALIVE",
    "SSE_PREAMBLE",
    "GuardedResolver",
    "SignalSettings",
    "WebhookWorker",
    "backoff_delay",
    "check_webhook_secret",
    "check_webhook_url",
    "seal_webhook_secret",
    "sign_webhook",
    "signal_body",
    "sse_event",
]

log = logging.getLogger("suitsrv.signals")

#: Sent first on a stream: how long a client waits before reconnecting (ms, WHATWG SSE).
SSE_PREAMBLE: Final = b"retry: 2000\n\n"
#: A comment line: keeps proxies from timing the idle connection out.
KEEPALIVE: Final = b": keep-alive\n\n"

_LOOPBACK: Final = frozenset({"127.0.0.1", "localhost", "::1"})
_MIN_SECRET, _MAX_SECRET = 32, 128
_MAX_URL = 2048


@dataclass(frozen=True)
class SignalSettings:
    """Timing of signal delivery (seconds); tests shorten them."""

    stream_poll: float = 0.5
    keepalive: float = 15.0
    webhook_poll: float = 1.0
    backoff_base: float = 1.0
    backoff_cap: float = 300.0
    webhook_timeout: float = 10.0
    concurrency: int = 8
    batch: int = 100


def signal_body(signal: Signal) -> bytes:
    """The one JSON document a signal travels as (SSE ``data:`` line and webhook body):
    compact, sorted keys, no newline (an SSE data line must not contain one)."""
    document = {
        "id": signal.signal_id,
        "kind": signal.kind,
        "device_id": signal.device_id,
        "payload": dict(signal.payload),
        "created_at": signal.created_at,
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def sse_event(signal: Signal) -> bytes:
    """One event in text/event-stream framing (WHATWG HTML §9.2.5): id, event, data."""
    kind = signal.kind.replace("\r", "").replace("\n", "")
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (
        signal.signal_id,
        kind.encode(),
        signal_body(signal),
    )


def sign_webhook(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``Suitsrv-Signature`` value: binding the timestamp lets receivers refuse replays."""
    mac = hmac.new(secret, b"%d." % timestamp + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def check_webhook_url(value: object) -> str:
    """An https URL; plain http only to the loopback interface (a gateway's local relay, and
    tests). Credentials do not go in the URL: the HMAC secret authenticates the service."""
    if not isinstance(value, str) or not value or len(value) > _MAX_URL:
        raise InvalidRequest(f"url must be a string of at most {_MAX_URL} characters")
    try:
        parts = urlsplit(value)
        host = parts.hostname
        _ = parts.port  # raises on a malformed port
    except ValueError as exc:
        raise InvalidRequest(f"url is malformed: {exc}") from exc
    if parts.username is not None or parts.password is not None:
        raise InvalidRequest("url must not carry credentials")
    if not host or parts.fragment:
        raise InvalidRequest("url needs a host and no fragment")
    if parts.scheme in ("http", "https") and host in _LOOPBACK:
        return value
    if parts.scheme == "https":
        _refuse_internal_address(host)
        return value
    raise InvalidRequest("url must be https:// (http:// only for 127.0.0.1, ::1 or localhost)")


def _internal(address: str) -> bool:
    """Inside the service's own networks: private, loopback, link-local (cloud metadata),
    multicast, unspecified or otherwise reserved."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    return not ip.is_global or ip.is_multicast


def _refuse_internal_address(host: str) -> None:
    """No https webhook to an IP literal inside the service's own networks: the service would
    be made to call into them. Names resolving there are refused at delivery (GuardedResolver)."""
    try:
        internal = _internal(host)
    except ValueError:  # a name, not an address
        return
    if internal:
        raise InvalidRequest(f"url must not point into a private or reserved network ({host})")


class GuardedResolver(aiohttp.abc.AbstractResolver):
    """Name resolution for webhook delivery that refuses names resolving into private,
    link-local, multicast or reserved networks, checked on the addresses the connection then
    uses (so a name cannot be re-pointed inward between registration and delivery). The loopback
    names check_webhook_url admits stay allowed."""

    def __init__(self, allowed: frozenset[str] = _LOOPBACK) -> None:
        self._allowed = allowed
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[aiohttp.abc.ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        if host not in self._allowed and any(_internal(r["host"]) for r in found):
            raise OSError(f"{host} resolves into a private or reserved network; not delivering")
        return found

    async def close(self) -> None:
        await self._inner.close()


def check_webhook_secret(value: object) -> bytes:
    """The HMAC key: hex, 32 to 128 bytes."""
    try:
        secret = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        secret = b""
    if not _MIN_SECRET <= len(secret) <= _MAX_SECRET:
        raise InvalidRequest(f"secret must be {_MIN_SECRET} to {_MAX_SECRET} bytes in hex")
    return secret


def backoff_delay(failures: int, settings: SignalSettings, rng: random.Random) -> float:
    """base * 2^(failures-1), capped, with "equal jitter" (half fixed, half random) so many
    gateways failing together do not retry in lockstep."""
    delay = min(settings.backoff_cap, settings.backoff_base * 2.0 ** min(max(failures - 1, 0), 30))
    return delay / 2 + rng.uniform(0, delay / 2)


def _secret_aad(gateway_id: str) -> bytes:
    # Binds a sealed secret to its gateway: a row copied to another gateway does not open.
    return f"suitsrv-webhook-secret\x00{gateway_id}".encode()


def seal_webhook_secret(master: bytes, gateway_id: str, secret: bytes) -> bytes:
    """The gateway's webhook HMAC key as it is stored: sealed under the vault master key
    (vault.seal_secret), so the database alone cannot forge signed deliveries."""
    return seal_secret(master, secret, aad=_secret_aad(gateway_id))


class WebhookWorker:
    """Delivers signals to gateway webhooks until ``stop``; ``run`` is its one task.
    ``master`` gives the vault master key that webhook secrets are sealed under."""

    def __init__(
        self,
        store: Store,
        settings: SignalSettings,
        clock: Callable[[], float],
        rng: random.Random,
        master: Callable[[], Awaitable[bytes]],
    ) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._rng = rng
        self._master = master
        self._stopping = asyncio.Event()
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._drains: dict[str, asyncio.Task[None]] = {}

    def stop(self) -> None:
        self._stopping.set()

    async def seal_plain_secrets(self) -> int:
        """Seal the secrets stored in the clear before migration 7; how many there were."""
        master = await self._master()
        return await self._store.write(
            gq.seal_plain_secrets,
            lambda gateway, secret: seal_webhook_secret(master, gateway, secret),
        )

    async def _seal_once(self) -> bool:
        """Seal what an older version stored in the clear; False when that failed (the next
        poll tries again; meanwhile delivery to webhooks already sealed goes on)."""
        try:
            if sealed := await self.seal_plain_secrets():
                log.info("webhook worker: sealed %d webhook secret(s) stored in the clear", sealed)
        except Exception:
            log.exception("webhook worker: cannot seal the webhook secrets stored in the clear")
            return False
        return True

    async def run(self) -> None:
        sealed = await self._seal_once()
        timeout = aiohttp.ClientTimeout(total=self._settings.webhook_timeout)
        connector = aiohttp.TCPConnector(resolver=GuardedResolver())
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, headers={"User-Agent": "suitsrv-webhook/1"}
        ) as session:
            try:
                while not self._stopping.is_set():
                    sealed = sealed or await self._seal_once()
                    await self._start_drains(session)
                    await self._sleep(self._settings.webhook_poll)
            finally:
                drains = list(self._drains.values())
                for task in drains:
                    task.cancel()
                await asyncio.gather(*drains, return_exceptions=True)

    async def _start_drains(self, session: aiohttp.ClientSession) -> None:
        try:
            due = await self._store.read(gq.pending_webhooks, 10 * self._settings.batch)
        except Exception:  # a broken poll must not end delivery for good
            log.exception("webhook worker: cannot list pending webhooks")
            return
        for gateway in due:
            if gateway not in self._drains:
                task = asyncio.create_task(self._drain(session, gateway))
                self._drains[gateway] = task
                task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        for gateway, running in list(self._drains.items()):
            if running is task:
                del self._drains[gateway]

    async def _drain(self, session: aiohttp.ClientSession, gateway: str) -> None:
        """Deliver the gateway's pending signals in order; return when none are left, the
        webhook was removed, or the worker stops. Each round re-reads the webhook, so a URL or
        secret the gateway fixed during a backoff is used for the retry."""
        try:
            while not self._stopping.is_set():
                hook = await self._store.read(gq.get_webhook, gateway)
                if hook is None:
                    return
                try:
                    secret = open_secret(await self._master(), hook.sealed_secret,
                                         aad=_secret_aad(gateway))  # fmt: skip
                except VaultError:
                    # Shown to the gateway as its webhook's last error; retried with backoff
                    # like a failed delivery (registering the webhook again seals a new one).
                    await self._failed(
                        gateway,
                        "the webhook secret does not open with this "
                        "service's vault master key; register the webhook again",
                    )
                    return
                batch = await self._store.signals_after(
                    gateway, hook.delivered_through, self._settings.batch
                )
                if not batch:
                    return
                for signal in batch:
                    error = await self._post(session, hook.url, secret, signal)
                    if error is None:
                        await self._store.write(
                            gq.record_delivery, gateway, signal.signal_id, self._clock()
                        )
                        continue
                    await self._failed(gateway, error, signal.signal_id)
                    break
        except Exception:  # the next poll starts a fresh drain
            log.exception("webhook worker: delivery to gateway %s failed", gateway)

    async def _failed(self, gateway: str, error: str, signal_id: int | None = None) -> None:
        """Record a failed attempt (the gateway sees it) and wait out the backoff."""
        failures = await self._store.write(gq.record_failure, gateway, error, self._clock())
        delay = backoff_delay(failures, self._settings, self._rng)
        what = f"signal {signal_id} not delivered" if signal_id is not None else "not delivering"
        log.warning("webhook of gateway %s: %s (%s, failure %d); retrying in %.1fs",
                    gateway, what, error, failures, delay)  # fmt: skip
        await self._sleep(delay)

    async def _post(
        self, session: aiohttp.ClientSession, url: str, secret: bytes, signal: Signal
    ) -> str | None:
        """One attempt: None when the webhook answered 2xx, else why not."""
        body = signal_body(signal)
        timestamp = int(self._clock())
        headers = {
            "Content-Type": "application/json",
            "Suitsrv-Signal-Id": str(signal.signal_id),
            "Suitsrv-Timestamp": str(timestamp),
            "Suitsrv-Signature": sign_webhook(secret, timestamp, body),
        }
        async with self._slots:
            try:
                async with session.post(
                    url, data=body, headers=headers, allow_redirects=False
                ) as resp:
                    return None if 200 <= resp.status < 300 else f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                return f"{type(exc).__name__}: {exc}"

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
