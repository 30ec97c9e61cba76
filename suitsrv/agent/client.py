"""The agent's HTTP session with the service: base URL, device token, TLS roots, and the
service's RFC 9457 problem answers turned into ServerError."""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import aiohttp

from .config import AgentConfig
from .errors import AgentConfigError, ServerError
from .state import DeviceState

__all__ = ["JSON", "Context", "check_json", "open_session", "raise_problem"]

#: A decoded JSON object from the service; read into typed values where it is received.
JSON = dict[str, Any]

# Payloads can be large and devices slow: no total timeout, but a stalled read fails.
_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=120)


@dataclass(frozen=True)
class Context:
    """What every agent step works with: the provisioning, the state folder, the session
    with the service, where progress lines go, the clock, and the test/demo options."""

    config: AgentConfig
    state: DeviceState
    session: aiohttp.ClientSession
    say: Callable[[str], None]
    clock: Callable[[], float]
    max_bytes_per_request: int | None = None


def open_session(config: AgentConfig) -> aiohttp.ClientSession:
    """A session that sends the device token with every request."""
    ssl_context: ssl.SSLContext | bool = True
    if config.ca_file is not None:
        try:
            ssl_context = ssl.create_default_context(cafile=str(config.ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise AgentConfigError(f"cannot use ca-file {config.ca_file}: {exc}") from exc
    return aiohttp.ClientSession(
        headers={"Authorization": f"Bearer {config.token}"},
        timeout=_TIMEOUT,
        connector=aiohttp.TCPConnector(ssl=ssl_context),
    )


async def raise_problem(resp: aiohttp.ClientResponse, what: str) -> NoReturn:
    """Raise ServerError with the problem's type and detail (or the body's first line)."""
    text = (await resp.text(errors="replace"))[:2000]
    problem, detail = "", text.strip().splitlines()[0] if text.strip() else resp.reason or ""
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict):
        problem = str(body.get("type", "")).rsplit("/", 1)[-1]
        detail = str(body.get("detail") or body.get("title") or detail)
    raise ServerError(what, resp.status, problem, detail)


async def check_json(resp: aiohttp.ClientResponse, what: str, *expected: int) -> JSON:
    """The JSON object of a response whose status is one of ``expected``."""
    if resp.status not in expected:
        await raise_problem(resp, what)
    try:
        body = await resp.json(content_type=None)
    except (ValueError, aiohttp.ContentTypeError) as exc:
        raise ServerError(what, resp.status, "", f"the answer is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ServerError(what, resp.status, "", "the answer is not a JSON object")
    return body
