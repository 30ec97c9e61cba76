"""SQL for gateways claiming devices, incidents and advisories (run through Store.read/write)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sqlite_utils import Database

from suitsrv.errors import Conflict, NotFound

from .records import sequence_key

__all__ = [
    "advisory_targets",
    "claim",
    "has_restorable_backup",
    "insert_advisory",
    "insert_incident",
    "record_served",
    "revoke_device_tokens",
    "served_digest",
    "set_device_key",
]


def set_device_key(db: Database, device_id: str, name: str, value: str) -> None:
    row = db.execute("SELECT keys FROM devices WHERE device_id = ?", [device_id]).fetchone()
    if row is None:
        raise NotFound(f"no device {device_id}")
    keys = json.loads(row[0])
    keys[name] = value
    db.execute(
        "UPDATE devices SET keys = ? WHERE device_id = ?",
        [json.dumps(keys, sort_keys=True), device_id],
    )


def revoke_device_tokens(db: Database, device_id: str, now: float) -> list[str]:
    """Revoke every active credential of a device; returns their token ids."""
    ids = [r[0] for r in db.execute(
        "SELECT token_id FROM tokens WHERE role = 'device' AND scope = ? AND revoked_at IS NULL",
        [device_id],
    ).fetchall()]  # fmt: skip
    db.execute(
        "UPDATE tokens SET revoked_at = ? WHERE role = 'device' AND scope = ? "
        "AND revoked_at IS NULL",
        [now, device_id],
    )
    return ids


def record_served(db: Database, device_id: str, digest: str, now: float) -> None:
    """Remember the release an update poll handed to the device: its report must name it."""
    db.execute(
        "INSERT INTO served (device_id, digest, served_at) VALUES (?, ?, ?) "
        "ON CONFLICT (device_id) DO UPDATE SET digest = excluded.digest, "
        "served_at = excluded.served_at",
        [device_id, digest, now],
    )


def served_digest(db: Database, device_id: str) -> str | None:
    row = db.execute("SELECT digest FROM served WHERE device_id = ?", [device_id]).fetchone()
    return str(row[0]) if row else None


def has_restorable_backup(db: Database, device_id: str) -> bool:
    """Whether a backup written while new or nominal exists (lifecycle.RESTORABLE_BACKUP_STATES)."""
    row = db.execute(
        "SELECT 1 FROM config_backups WHERE device_id = ? AND state IN ('new', 'nominal') LIMIT 1",
        [device_id],
    ).fetchone()
    return row is not None


def claim(db: Database, device_id: str, gateway: str) -> None:
    """Bind an unclaimed device to ``gateway`` (a claim by its own gateway is idempotent)."""
    row = db.execute("SELECT gateway FROM devices WHERE device_id = ?", [device_id]).fetchone()
    if row is None:
        raise NotFound(f"no device {device_id}: the manufacturer or an operator registers it")
    if row[0] not in (None, gateway):
        raise Conflict(f"device {device_id} is claimed by another gateway")
    db.execute("UPDATE devices SET gateway = ? WHERE device_id = ?", [gateway, device_id])


def insert_incident(
    db: Database, device_id: str, gateway: str, kind: str, window: tuple[float, float],
    summary: Mapping[str, Any], now: float,
) -> int:  # fmt: skip
    cur = db.execute(
        "INSERT INTO incidents (device_id, gateway, kind, window_start, window_end, summary, "
        "reported_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [device_id, gateway, kind, window[0], window[1], json.dumps(dict(summary)), now],
    )
    return int(cur.lastrowid or 0)


def insert_advisory(
    db: Database, vendor: str, class_id: str, max_sequence: int, issued_by: str, note: str,
    now: float,
) -> int:  # fmt: skip
    cur = db.execute(
        "INSERT INTO advisories (vendor, class_id, max_sequence_key, issued_by, issued_at, note) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [vendor, class_id, sequence_key(max_sequence), issued_by, now, note],
    )
    return int(cur.lastrowid or 0)


def advisory_targets(db: Database, vendor: str, class_id: str, max_sequence: int) -> list[str]:
    """Devices of the class whose newest installed sequence number is <= max_sequence, or
    that never reported an install (they run the factory image, older than any release)."""
    rows = db.execute(
        "SELECT d.device_id FROM devices d LEFT JOIN installs i ON i.device_id = d.device_id "
        "WHERE d.vendor = ? AND d.class_id = ? GROUP BY d.device_id "
        "HAVING max(i.sequence_key) IS NULL OR max(i.sequence_key) <= ? ORDER BY d.device_id",
        [vendor, class_id, sequence_key(max_sequence)],
    ).fetchall()
    return [r[0] for r in rows]
