"""SQL of the device lifecycle: state rows, the append-only timeline, incidents, advisories,
gateway signals and configuration backups. Plain functions of a sqlite_utils Database, run by
SqliteStore.read/write (writers inside one BEGIN IMMEDIATE transaction)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlite_utils import Database

from suitsrv.lifecycle import DeviceLifecycle, Event, State, apply

__all__ = [
    "Backup",
    "Signal",
    "TimelineEntry",
    "add_signal",
    "append_timeline",
    "get_lifecycle",
    "signals_after",
    "timeline_of",
    "transition",
]


@dataclass(frozen=True)
class TimelineEntry:
    event_id: int
    device_id: str
    at: float
    kind: str
    actor: str
    event: str | None
    from_state: str | None
    to_state: str | None
    detail: Mapping[str, Any]


@dataclass(frozen=True)
class Signal:
    signal_id: int
    gateway: str
    device_id: str
    kind: str
    payload: Mapping[str, Any]
    created_at: float


@dataclass(frozen=True)
class Backup:
    device_id: str
    version: int
    state: str
    wrapped_key: bytes
    nonce: bytes
    ciphertext: bytes
    size: int
    created_at: float
    restored_at: float | None


def get_lifecycle(db: Database, device_id: str) -> DeviceLifecycle:
    row = db.execute(
        "SELECT state, quarantines, escalated, verdict_affirmed, config_restored "
        "FROM device_lifecycle WHERE device_id = ?",
        [device_id],
    ).fetchone()
    if row is None:
        return DeviceLifecycle()
    return DeviceLifecycle(
        State(row[0]), tuple(json.loads(row[1])), bool(row[2]), bool(row[3]), bool(row[4])
    )


def append_timeline(
    db: Database, device_id: str, at: float, kind: str, actor: str,
    detail: Mapping[str, Any] | None = None, *, event: str | None = None,
    from_state: str | None = None, to_state: str | None = None,
) -> int:  # fmt: skip
    cur = db.execute(
        "INSERT INTO timeline (device_id, at, kind, actor, event, from_state, to_state, detail) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [device_id, at, kind, actor, event, from_state, to_state,
         json.dumps(dict(detail or {}), sort_keys=True)],
    )  # fmt: skip
    return int(cur.lastrowid or 0)


SignalRule = Callable[[DeviceLifecycle, DeviceLifecycle], list[tuple[str, Mapping[str, Any]]]]


def transition(
    db: Database, device_id: str, event: Event, actor: str, now: float, window: float,
    detail: Mapping[str, Any] | None = None, gateway: str | None = None,
    signals: SignalRule | None = None,
) -> tuple[DeviceLifecycle, DeviceLifecycle]:  # fmt: skip
    """Apply ``event`` to the device's stored lifecycle, record it in the timeline and queue the
    gateway signals ``signals`` derives from (before, after), all in the caller's transaction:
    a crash leaves either all of it or none. IllegalTransition leaves everything as it was."""
    before = get_lifecycle(db, device_id)
    after = apply(before, event, now=now, window=window)
    db.execute(  # plain SQL: sqlite-utils' upsert reads the table's columns on every call
        "INSERT INTO device_lifecycle (device_id, state, quarantines, escalated, "
        "verdict_affirmed, config_restored, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (device_id) DO UPDATE SET state = excluded.state, "
        "quarantines = excluded.quarantines, escalated = excluded.escalated, "
        "verdict_affirmed = excluded.verdict_affirmed, "
        "config_restored = excluded.config_restored, updated_at = excluded.updated_at",
        [device_id, str(after.state), json.dumps(list(after.quarantines)), int(after.escalated),
         int(after.verdict_affirmed), int(after.config_restored_or_none), now],
    )  # fmt: skip
    append_timeline(
        db, device_id, now, "transition", actor, detail, event=str(event),
        from_state=str(before.state), to_state=str(after.state),
    )  # fmt: skip
    if gateway is not None and signals is not None:
        for kind, payload in signals(before, after):
            signal_id = add_signal(db, gateway, device_id, kind, payload, now)
            append_timeline(db, device_id, now, "signal", "service",
                            {"kind": kind, "signal_id": signal_id, "gateway": gateway})  # fmt: skip
    return before, after


def timeline_of(db: Database, device_id: str, after: int, limit: int) -> list[TimelineEntry]:
    rows = db.execute(
        "SELECT event_id, device_id, at, kind, actor, event, from_state, to_state, detail "
        "FROM timeline WHERE device_id = ? AND event_id > ? ORDER BY event_id LIMIT ?",
        [device_id, after, limit],
    ).fetchall()
    return [
        TimelineEntry(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], json.loads(r[8] or "{}"))
        for r in rows
    ]


def add_signal(
    db: Database, gateway: str, device_id: str, kind: str, payload: Mapping[str, Any], now: float
) -> int:
    cur = db.execute(
        "INSERT INTO signals (gateway, device_id, kind, payload, created_at) "
        "VALUES (?, ?, ?, ?, ?)",
        [gateway, device_id, kind, json.dumps(dict(payload), sort_keys=True), now],
    )
    return int(cur.lastrowid or 0)


def signals_after(db: Database, gateway: str, after: int, limit: int) -> list[Signal]:
    rows = db.execute(
        "SELECT signal_id, gateway, device_id, kind, payload, created_at FROM signals "
        "WHERE gateway = ? AND signal_id > ? ORDER BY signal_id LIMIT ?",
        [gateway, after, limit],
    ).fetchall()
    return [Signal(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5]) for r in rows]
