"""A device's audit timeline and the operator's two lifecycle decisions: decommission (which
also purges the device's configuration backups) and clearing an escalation.

The timeline is the append-only record the store writes with every transition and gateway
signal (suitsrv/store/lifecycle_queries.py); a gateway reads it for its own devices only.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from suitsrv.auth import Principal
from suitsrv.devices import record
from suitsrv.errors import InvalidRequest, NotFound
from suitsrv.lifecycle import DeviceLifecycle, Event, IllegalTransition, State
from suitsrv.store import DeviceRecord, Role, Store, TimelineEntry
from suitsrv.store import device_queries as dq

from .app import CLOCK, CONFIG, STORE, TOKENS, Route, json_response, principal_of

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "entry_view", "next_step", "routes"]

DEFAULT_LIMIT, MAX_LIMIT = 200, 1000

_WAITING: dict[State, str] = {
    State.NEW: "waiting for enrolment by its gateway or an operator",
    State.NOMINAL: "nothing: the device is in service",
    State.SUSPICIOUS: "waiting for the gateway: another incident quarantines the device, "
    "clearing the incident returns it to nominal",
    State.SUSPECT: "waiting for the device to fetch the update that fixes the advisory",
    State.QUARANTINED: (
        "waiting for the device to fetch a newer release (one the vendor may have to publish)"
    ),
    State.UPGRADING: "waiting for the device to report the update",
    State.DECOMMISSIONED: "nothing: the device is decommissioned (final)",
}


def next_step(lc: DeviceLifecycle) -> str:
    """What the device's lifecycle waits for next, in words (for operators)."""
    if lc.state is State.RETURNING_TO_SERVICE:
        if not lc.verdict_affirmed:
            step = "waiting for an affirming attestation"
        elif not lc.config_restored_or_none:
            step = "waiting for the configuration restore"
        else:
            step = "waiting for the gateway to acknowledge reinstatement"
    else:
        step = _WAITING[lc.state]
    # lifecycle._reinstatable: an escalated device is never reinstated until an operator clears
    # it, whatever else happens first.
    if lc.escalated and lc.state is not State.DECOMMISSIONED:
        step += "; an operator must clear the escalation before it can be reinstated"
    return step


def entry_view(entry: TimelineEntry, *, operator: bool = True) -> dict[str, Any]:
    """One timeline entry; ``operator=False`` (a gateway asking) shows an actor's role only,
    not the token id behind it."""
    return {
        "event_id": entry.event_id,
        "at": entry.at,
        "kind": entry.kind,
        "actor": entry.actor if operator else entry.actor.split(":", 1)[0],
        "event": entry.event,
        "from_state": entry.from_state,
        "to_state": entry.to_state,
        "detail": dict(entry.detail),
    }


async def _visible_device(request: web.Request, caller: Principal) -> DeviceRecord:
    device_id = request.match_info["device_id"]
    device = await request.app[STORE].get_device(device_id)
    # A gateway's foreign device answers like an unknown one: no probing for device ids.
    if device is None or (caller.role is Role.GATEWAY and device.gateway != caller.scope):
        raise NotFound(f"no device {device_id}")
    return device


def _query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise InvalidRequest(f"{name} must be an integer within {low}..{high}, got {raw!r}")
    return int(raw)


async def get_timeline(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    caller = principal_of(principal)
    device = await _visible_device(request, caller)
    after = _query_int(request, "after", 0, 0, 2**63 - 1)
    limit = _query_int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    store = request.app[STORE]
    lc = await store.get_lifecycle(device.device_id)
    entries = await store.timeline(device.device_id, after, limit + 1)
    body: dict[str, Any] = {
        "device_id": device.device_id,
        "state": str(lc.state),
        "escalated": lc.escalated,
        "next_step": next_step(lc),
        "events": [entry_view(e, operator=caller.role is Role.OPERATOR) for e in entries[:limit]],
    }
    if len(entries) > limit:
        body["next"] = f"{request.path}?after={entries[limit - 1].event_id}&limit={limit}"
    return json_response(body)


async def _purge_backups(request: web.Request, store: Store, device_id: str) -> int:
    """Purge the backups: a decommissioned device keeps nothing here."""
    # Imported at call time: the vault pulls in the backup crypto, which only this route needs.
    from suitsrv.vault_service import purge

    return await purge(store, device_id)


async def _decide(request: web.Request, caller: Principal, event: Event) -> DeviceLifecycle:
    """Record an operator's decision ``event`` for the path's device; the lifecycle after."""
    app = request.app
    device = await _visible_device(request, caller)
    _, after = await record(app[STORE], app[CONFIG], device, event, role=Role.OPERATOR,
                            actor=caller.token_id, now=app[CLOCK]())  # fmt: skip
    return after


async def post_decommission(
    request: web.Request, principal: Principal | None
) -> web.StreamResponse:
    caller = principal_of(principal)
    store, device_id = request.app[STORE], request.match_info["device_id"]
    await _visible_device(request, caller)
    # Credentials go first: a crash after this line leaves a device that can do nothing, never
    # a decommissioned one whose tokens still work (fail closed).
    for token_id in await store.write(dq.revoke_device_tokens, device_id, request.app[CLOCK]()):
        request.app[TOKENS].forget(token_id)
    try:
        after = await _decide(request, caller, Event.DECOMMISSIONED)
    except IllegalTransition:
        # Already decommissioned: purge anyway, so a retry after a crash between the transition
        # and the purge completes the purge (and still answers 409).
        await _purge_backups(request, store, device_id)
        raise
    purged = await _purge_backups(request, store, device_id)
    return json_response({"device_id": device_id, "state": str(after.state),
                          "backups_purged": purged})  # fmt: skip


async def post_escalation_clear(
    request: web.Request, principal: Principal | None
) -> web.StreamResponse:
    after = await _decide(request, principal_of(principal), Event.ESCALATION_CLEARED)
    return json_response({"device_id": request.match_info["device_id"],
                          "state": str(after.state), "escalated": after.escalated})  # fmt: skip


def routes() -> list[Route]:
    op, readers = frozenset({Role.OPERATOR}), frozenset({Role.OPERATOR, Role.GATEWAY})
    return [
        Route("GET", "/v1/operator/devices/{device_id}/timeline", get_timeline, readers,
              "A device's audit timeline (?after=&limit=) and what it waits for", "operator",
              responses={200: "timeline", 400: "bad paging", 404: "unknown (or not yours)"},
              parameters=("device_id",)),
        Route("POST", "/v1/operator/devices/{device_id}/decommission", post_decommission, op,
              "Decommission a device and purge its configuration backups", "operator",
              responses={200: "decommissioned", 404: "unknown", 409: "already decommissioned"},
              parameters=("device_id",)),
        Route("POST", "/v1/operator/devices/{device_id}/escalation/clear", post_escalation_clear,
              op, "Clear a recidivism escalation (reinstatement still needs the rest)",
              "operator", responses={200: "cleared", 404: "unknown", 409: "state"},
              parameters=("device_id",)),
    ]  # fmt: skip
