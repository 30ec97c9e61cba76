"""The device lifecycle as one table (DESIGN.md "The lifecycle"; states from
draft-richardson-shg-un-quarantine-03 §states). Pure: no I/O, no clock; times come in as
arguments and every function returns a new value or raises.

``TRANSITIONS[(state, event)]`` is the state machine (h11 ``_state.py``): a missing pair raises
``IllegalTransition`` and changes nothing. ``GUARDS`` add the preconditions that depend on facts
kept beside the state in ``DeviceLifecycle`` (verdict, restore, escalation); ``apply`` does both.

Decisions (docs/lifecycle.md gives the reasons):

* ``suspect`` is the draft's "device-of-interest": an advisory matched a nominal device. It is
  not isolated and leaves by upgrading or by being quarantined. An advisory matching a
  ``suspicious`` device confirms it: ``quarantined`` (DESIGN.md "repeated or confirmed").
  Where the table has no pair, a sweep records the match without a transition (``allowed``).
* A failed SUIT report is not an event: the device stays ``upgrading`` and may fetch again.
* Every entry into ``quarantined`` counts for recidivism, a failed attestation included; the
  window is inclusive (``now - t <= window``) and an escalation stays until an operator clears it.
* The service applies ``config-restored`` also when there is no backup ("or there was none").
* One event beyond the issue's list: ``escalation-cleared`` (operator), the decision that an
  escalated device may be reinstated. It only clears the flag: the verdict, the restore and the
  gateway's acknowledgement are still needed, so no single credential reinstates a device.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Final

from .errors import ServiceError

__all__ = [
    "DEVICE_MAY_TRIGGER",
    "GUARDS",
    "PINHOLE_STATES",
    "RESTORABLE_BACKUP_STATES",
    "TRANSITIONS",
    "TRIGGERS",
    "Actor",
    "DeviceLifecycle",
    "Event",
    "IllegalTransition",
    "State",
    "allowed",
    "apply",
    "doc_block",
    "may_restore",
    "may_trigger",
    "mermaid",
    "next_state",
]


class State(StrEnum):
    NEW = "new"
    NOMINAL = "nominal"
    SUSPICIOUS = "suspicious"
    SUSPECT = "suspect"
    QUARANTINED = "quarantined"
    UPGRADING = "upgrading"
    RETURNING_TO_SERVICE = "returning-to-service"
    DECOMMISSIONED = "decommissioned"


class Event(StrEnum):
    ENROLLED = "enrolled"
    INCIDENT_REPORTED = "incident-reported"
    INCIDENT_CLEARED = "incident-cleared"
    ADVISORY_MATCHED = "advisory-matched"
    QUARANTINE_ORDERED = "quarantine-ordered"
    UPDATE_FETCHED = "update-fetched"
    UPDATE_REPORTED = "update-reported"
    ATTESTATION_AFFIRMED = "attestation-affirmed"
    ATTESTATION_FAILED = "attestation-failed"
    CONFIG_RESTORED = "config-restored"
    REINSTATEMENT_ACKNOWLEDGED = "reinstatement-acknowledged"
    ESCALATION_CLEARED = "escalation-cleared"
    DECOMMISSIONED = "decommissioned"


class Actor(StrEnum):
    """Who may cause an event: the four credential roles (same values as ``store.Role``) and
    the service itself, which applies appraisal results and restores."""

    DEVICE = "device"
    GATEWAY = "gateway"
    VENDOR = "vendor"
    OPERATOR = "operator"
    SERVICE = "service"


_S, _E = State, Event

TRANSITIONS: Final[Mapping[tuple[State, Event], State]] = MappingProxyType(
    {
        (_S.NEW, _E.ENROLLED): _S.NOMINAL,
        (_S.NOMINAL, _E.INCIDENT_REPORTED): _S.SUSPICIOUS,
        (_S.NOMINAL, _E.ADVISORY_MATCHED): _S.SUSPECT,
        (_S.NOMINAL, _E.QUARANTINE_ORDERED): _S.QUARANTINED,
        (_S.SUSPICIOUS, _E.INCIDENT_REPORTED): _S.QUARANTINED,
        (_S.SUSPICIOUS, _E.INCIDENT_CLEARED): _S.NOMINAL,
        (_S.SUSPICIOUS, _E.ADVISORY_MATCHED): _S.QUARANTINED,
        (_S.SUSPICIOUS, _E.QUARANTINE_ORDERED): _S.QUARANTINED,
        (_S.SUSPECT, _E.INCIDENT_REPORTED): _S.QUARANTINED,
        (_S.SUSPECT, _E.QUARANTINE_ORDERED): _S.QUARANTINED,
        (_S.SUSPECT, _E.UPDATE_FETCHED): _S.UPGRADING,
        (_S.QUARANTINED, _E.UPDATE_FETCHED): _S.UPGRADING,
        (_S.QUARANTINED, _E.ESCALATION_CLEARED): _S.QUARANTINED,
        (_S.UPGRADING, _E.UPDATE_REPORTED): _S.RETURNING_TO_SERVICE,
        (_S.UPGRADING, _E.INCIDENT_REPORTED): _S.QUARANTINED,
        (_S.UPGRADING, _E.QUARANTINE_ORDERED): _S.QUARANTINED,
        (_S.UPGRADING, _E.ATTESTATION_FAILED): _S.QUARANTINED,
        (_S.UPGRADING, _E.ESCALATION_CLEARED): _S.UPGRADING,
        (_S.RETURNING_TO_SERVICE, _E.ATTESTATION_AFFIRMED): _S.RETURNING_TO_SERVICE,
        (_S.RETURNING_TO_SERVICE, _E.CONFIG_RESTORED): _S.RETURNING_TO_SERVICE,
        (_S.RETURNING_TO_SERVICE, _E.REINSTATEMENT_ACKNOWLEDGED): _S.NOMINAL,
        (_S.RETURNING_TO_SERVICE, _E.INCIDENT_REPORTED): _S.QUARANTINED,
        (_S.RETURNING_TO_SERVICE, _E.QUARANTINE_ORDERED): _S.QUARANTINED,
        (_S.RETURNING_TO_SERVICE, _E.ATTESTATION_FAILED): _S.QUARANTINED,
        (_S.RETURNING_TO_SERVICE, _E.ESCALATION_CLEARED): _S.RETURNING_TO_SERVICE,
        **{(s, _E.DECOMMISSIONED): _S.DECOMMISSIONED for s in State if s is not _S.DECOMMISSIONED},
    }
)

_D, _G, _V, _O, _SV = Actor.DEVICE, Actor.GATEWAY, Actor.VENDOR, Actor.OPERATOR, Actor.SERVICE

TRIGGERS: Final[Mapping[Event, frozenset[Actor]]] = MappingProxyType(
    {
        _E.ENROLLED: frozenset({_G, _O}),
        _E.INCIDENT_REPORTED: frozenset({_G}),
        _E.INCIDENT_CLEARED: frozenset({_G, _O}),
        _E.ADVISORY_MATCHED: frozenset({_V, _O}),
        _E.QUARANTINE_ORDERED: frozenset({_G, _O}),
        _E.UPDATE_FETCHED: frozenset({_D}),
        _E.UPDATE_REPORTED: frozenset({_D}),
        _E.ATTESTATION_AFFIRMED: frozenset({_SV}),
        _E.ATTESTATION_FAILED: frozenset({_SV}),
        _E.CONFIG_RESTORED: frozenset({_SV}),
        _E.REINSTATEMENT_ACKNOWLEDGED: frozenset({_G}),
        _E.ESCALATION_CLEARED: frozenset({_O}),
        _E.DECOMMISSIONED: frozenset({_O}),
    }
)
"""Who causes each event: a principal of that role, or the service itself (after appraisal)."""

DEVICE_MAY_TRIGGER: Final = frozenset(e for e, who in TRIGGERS.items() if Actor.DEVICE in who)
"""What a device credential may cause: fetching and reporting an update, never its own
verdict, restore or reinstatement (DESIGN.md: "a device can never reinstate itself")."""

PINHOLE_STATES: Final = frozenset({_S.QUARANTINED, _S.UPGRADING, _S.RETURNING_TO_SERVICE})
"""States in which a device credential reaches only the update, report, attestation and
configuration-restore endpoints (the MUD quarantine pinhole's API side)."""

RESTORABLE_BACKUP_STATES: Final = frozenset({_S.NEW, _S.NOMINAL})
"""The states in which a backup written may later be offered for restore; a backup written in
any other state (suspicious, suspect, quarantined, ...) is kept but never offered."""


class IllegalTransition(ServiceError):
    """The event is not allowed in the device's state (or a guard refused it); nothing changed."""

    status, problem, title = 409, "illegal-transition", "Illegal lifecycle transition"

    def __init__(self, state: State, event: Event, reason: str = "") -> None:
        why = f": {reason}" if reason else ""
        super().__init__(
            f"event {event} is not allowed in state {state}{why}",
            state=str(state),
            event=str(event),
        )
        self.state, self.event, self.reason = state, event, reason


@dataclass(frozen=True)
class DeviceLifecycle:
    """One device's lifecycle snapshot. ``quarantines`` holds the times it entered quarantine;
    the two flags are only ever true in ``returning-to-service``."""

    state: State = State.NEW
    quarantines: tuple[float, ...] = ()
    escalated: bool = False
    verdict_affirmed: bool = False
    config_restored_or_none: bool = False


def _needs_verdict(lc: DeviceLifecycle) -> str | None:
    return None if lc.verdict_affirmed else "no affirming attestation verdict yet"


def _reinstatable(lc: DeviceLifecycle) -> str | None:
    if lc.escalated:
        return "quarantined again within the recidivism window; an operator must clear it"
    if not lc.verdict_affirmed:
        return _needs_verdict(lc)
    return None if lc.config_restored_or_none else "configuration not restored yet"


GUARDS: Final[Mapping[Event, Callable[[DeviceLifecycle], str | None]]] = MappingProxyType(
    {_E.CONFIG_RESTORED: _needs_verdict, _E.REINSTATEMENT_ACKNOWLEDGED: _reinstatable}
)
"""Preconditions beyond the table: each returns why the event is refused, or None."""


def allowed(state: State, event: Event) -> bool:
    """Whether the table has the pair (guards not considered)."""
    return (state, event) in TRANSITIONS


def next_state(state: State, event: Event) -> State:
    """The table's target state, or ``IllegalTransition``."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition(state, event) from None


def may_trigger(role: str, event: Event) -> bool:
    """Whether a principal of ``role`` (a ``store.Role`` or ``"service"``) may cause ``event``."""
    return role in TRIGGERS[event]


def may_restore(lc: DeviceLifecycle) -> bool:
    """Restore is served only in returning-to-service after an affirming verdict (DESIGN.md)."""
    return lc.state is State.RETURNING_TO_SERVICE and lc.verdict_affirmed


def apply(lc: DeviceLifecycle, event: Event, *, now: float, window: float) -> DeviceLifecycle:
    """The snapshot after ``event`` at time ``now``; ``window`` is the recidivism window in
    seconds. Raises ``IllegalTransition`` (with the guard's reason) and returns nothing when
    the pair is not in the table or a guard refuses it."""
    target = next_state(lc.state, event)
    guard = GUARDS.get(event)
    reason = guard(lc) if guard is not None else None
    if reason is not None:
        raise IllegalTransition(lc.state, event, reason)
    quarantines, escalated = lc.quarantines, lc.escalated
    if target is State.QUARANTINED and lc.state is not State.QUARANTINED:
        escalated = escalated or any(now - t <= window for t in quarantines)
        quarantines = (*quarantines, now)
    if event is Event.ESCALATION_CLEARED:
        escalated = False
    keep = target is State.RETURNING_TO_SERVICE and lc.state is State.RETURNING_TO_SERVICE
    verdict = (keep and lc.verdict_affirmed) or event is Event.ATTESTATION_AFFIRMED
    restored = (keep and lc.config_restored_or_none) or event is Event.CONFIG_RESTORED
    return DeviceLifecycle(target, quarantines, escalated, verdict, restored)


def _node(state: State) -> str:
    return state.value.replace("-", "_")


def mermaid() -> str:
    """A Mermaid ``stateDiagram-v2`` of ``TRANSITIONS``: one edge per (from, to) pair labelled
    with its events, states and events in declaration order, so the output is stable."""
    edges: dict[tuple[State, State], list[str]] = {}
    for source in State:
        for event in Event:
            if (target := TRANSITIONS.get((source, event))) is not None:
                edges.setdefault((source, target), []).append(event)
    lines = ["stateDiagram-v2"]
    lines += [f'    state "{s}" as {_node(s)}' for s in State if _node(s) != s.value]
    lines.append(f"    [*] --> {_node(State.NEW)}")
    lines += [f"    {_node(a)} --> {_node(b)}: {', '.join(es)}" for (a, b), es in edges.items()]
    lines += [f"    {_node(s)} --> [*]" for s in State if not any(k[0] is s for k in TRANSITIONS)]
    return "\n".join(lines) + "\n"


_START: Final = "<!-- lifecycle-diagram:start -->"
_END: Final = "<!-- lifecycle-diagram:end -->"
_DOC: Final = Path(__file__).resolve().parent.parent / "docs" / "lifecycle.md"


def doc_block() -> str:
    """The text between the ``lifecycle-diagram`` markers in docs/lifecycle.md."""
    return f"\n```mermaid\n{mermaid()}```\n"


def _main(argv: list[str]) -> int:
    if not argv:
        sys.stdout.write(mermaid())
        return 0
    if argv != ["--write-docs"]:
        sys.stderr.write("usage: python -m suitsrv.lifecycle [--write-docs]\n")
        return 2
    head, sep, rest = _DOC.read_text(encoding="utf-8").partition(_START)
    _, sep2, tail = rest.partition(_END)
    if not (sep and sep2):
        sys.stderr.write(f"{_DOC}: markers {_START} / {_END} not found\n")
        return 1
    _DOC.write_text(head + _START + doc_block() + _END + tail, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
