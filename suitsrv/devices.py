"""The device lifecycle, the service side: who may cause which event, what the gateway is told.

Every change goes through ``record``: the caller's right to cause the event is checked against
``lifecycle.TRIGGERS`` (a device can never cause its own reinstatement), the pure table decides
the new state, and the store writes the state, the timeline entry and the gateway's signals in
one transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .config import Config
from .errors import Forbidden, NotFound
from .lifecycle import (
    PINHOLE_STATES,
    DeviceLifecycle,
    Event,
    IllegalTransition,
    State,
    allowed,
    may_trigger,
)
from .mud import PINHOLE_ACE_NAMES, mud_url
from .store import DeviceRecord, Store
from .store import device_queries as dq

__all__ = [
    "SERVICE",
    "after_verdict",
    "device_of",
    "in_pinhole",
    "pinhole",
    "record",
    "record_if_allowed",
    "signal_rule",
]

#: The actor name of events the service causes from its own appraisal or restore.
SERVICE = "service"


def pinhole(config: Config, device: DeviceRecord) -> dict[str, object]:
    """What a gateway needs to keep open for a quarantined device: its MUD file's URL and the
    ACE names of the quarantine policy (draft-richardson-shg-mud-quarantined-access)."""
    return {
        "mud_url": mud_url(config.base_url, device.vendor, device.class_id),
        "enabled_ace_names": list(PINHOLE_ACE_NAMES),
    }


def signal_rule(config: Config, device: DeviceRecord) -> Any:
    """The signals a transition sends to the device's gateway (computed inside the write)."""

    def signals(
        before: DeviceLifecycle, after: DeviceLifecycle
    ) -> list[tuple[str, Mapping[str, Any]]]:
        out: list[tuple[str, Mapping[str, Any]]] = []
        state = {"device_id": device.device_id, "state": str(after.state)}
        if after.state is State.QUARANTINED and before.state is not State.QUARANTINED:
            out.append(("quarantined", {**state, "pinhole": pinhole(config, device),
                                        "escalated": after.escalated}))  # fmt: skip
        ready = after.verdict_affirmed and after.config_restored_or_none
        was_ready = before.verdict_affirmed and before.config_restored_or_none
        # Ready again after an operator cleared the escalation: the gateway's earlier
        # acknowledgement was refused, so it must hear that it may acknowledge now.
        cleared = before.escalated and not after.escalated
        if after.state is State.RETURNING_TO_SERVICE and ready and (not was_ready or cleared):
            out.append(("reinstatement-ready", {**state, "escalated": after.escalated}))
        if after.state is State.NOMINAL and before.state is State.RETURNING_TO_SERVICE:
            out.append(("reinstated", {**state, "mud_url": pinhole(config, device)["mud_url"]}))
        if after.state is not before.state and not out:
            out.append(("state-changed", {**state, "from": str(before.state)}))
        return out

    return signals


async def record(
    store: Store,
    config: Config,
    device: DeviceRecord,
    event: Event,
    *,
    role: str,
    actor: str,
    now: float,
    detail: Mapping[str, Any] | None = None,
) -> tuple[DeviceLifecycle, DeviceLifecycle]:
    """Cause ``event`` for ``device`` as ``role`` (a store.Role value or SERVICE): Forbidden when
    that role may not cause it, IllegalTransition (409) when the state does not allow it."""
    if not may_trigger(role, event):
        raise Forbidden(f"a {role} cannot cause {event}")
    return await store.transition(
        device.device_id, event, f"{role}:{actor}", now, config.recidivism_window, detail,
        device.gateway, signal_rule(config, device),
    )  # fmt: skip


async def record_if_allowed(
    store: Store, config: Config, device: DeviceRecord, event: Event, *, role: str, actor: str,
    now: float, detail: Mapping[str, Any] | None = None, state: State | None = None,
) -> DeviceLifecycle | None:  # fmt: skip
    """``record`` for events that only matter in some states (an update fetched while nominal
    is not an event): the new lifecycle, or None when the table has no such pair. ``state`` is
    the state the request read with the rest of its data: the event happened in that state,
    so when the table has no pair for it nothing is written (most polls and attestations of
    a nominal device cost no write)."""
    if state is not None and not allowed(state, event):
        return None
    try:
        return (await record(store, config, device, event, role=role, actor=actor, now=now,
                             detail=detail))[1]  # fmt: skip
    except IllegalTransition:
        return None


async def in_pinhole(store: Store, device_id: str) -> bool:
    """Whether the device's credentials are limited to the pinhole endpoints."""
    return (await store.get_lifecycle(device_id)).state in PINHOLE_STATES


async def device_of(store: Store, device_id: str) -> DeviceRecord:
    device = await store.get_device(device_id)
    if device is None:
        raise NotFound(f"no device {device_id}")
    return device


async def after_verdict(
    store: Store, config: Config, device: DeviceRecord, status: str, now: float, *,
    reasons: Sequence[str] = (), state: State | None = None,
) -> None:  # fmt: skip
    """The lifecycle consequences of an attestation result (the service's own events): an
    affirming verdict, then the restore when there is nothing to restore; a contraindicated one
    sends a device on its way back to quarantine, its first reasons in the timeline (the "why"
    a helpdesk reads). A warning changes nothing. ``state``: as in ``record_if_allowed``."""
    if status == "affirming":
        after = await record_if_allowed(store, config, device, Event.ATTESTATION_AFFIRMED,
                                        role=SERVICE, actor="verifier", now=now,
                                        state=state)  # fmt: skip
        if after is not None and not await store.read(dq.has_restorable_backup, device.device_id):
            await record_if_allowed(store, config, device, Event.CONFIG_RESTORED, role=SERVICE,
                                    actor="vault", now=now, detail={"backup": None})  # fmt: skip
    elif status == "contraindicated":
        await record_if_allowed(store, config, device, Event.ATTESTATION_FAILED, role=SERVICE,
                                actor="verifier", now=now, state=state,
                                detail={"reasons": [r[:200] for r in reasons[:3]]})  # fmt: skip
