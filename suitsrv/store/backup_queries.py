"""SQL of the configuration vault (table ``config_backups``, migration 3). Plain functions of a
sqlite_utils Database, run by ``Store.read``/``Store.write``; ``add_backup`` is one whole write
transaction: version check, state tag, row and timeline entry commit together or not at all."""

from __future__ import annotations

from collections.abc import Callable, Collection

from sqlite_utils import Database

from suitsrv.errors import Conflict
from suitsrv.lifecycle import RESTORABLE_BACKUP_STATES, State
from suitsrv.vault import SealedBackup

from .lifecycle_queries import Backup, append_timeline, get_lifecycle

__all__ = [
    "add_backup",
    "backups_of",
    "delete_backups",
    "mark_restored",
    "newest_in_states",
    "next_version",
    "tag_state",
]

_COLUMNS = (
    "device_id, version, state, wrapped_key, nonce, ciphertext, size, created_at, restored_at"
)


def _backup(row: tuple[object, ...]) -> Backup:
    return Backup(*row)  # type: ignore[arg-type]  # columns in the dataclass's field order


def next_version(db: Database, device_id: str) -> int:
    """The version the device's next backup gets: one past its highest (purged rows too are
    gone, so numbering restarts after a purge; the device is decommissioned by then)."""
    row = db.execute(
        "SELECT COALESCE(MAX(version), 0) + 1 FROM config_backups WHERE device_id = ?",
        [device_id],
    ).fetchone()
    return int(row[0])


def tag_state(started_in: State, committed_in: State) -> State:
    """The state a backup is tagged with: restorable only when the device was in a restorable
    state both when the upload began and when it committed (an upload that straddles an
    incident report, or one begun while suspicious and finished after the incident was
    cleared, is not trusted)."""
    return committed_in if started_in in RESTORABLE_BACKUP_STATES else started_in


def add_backup(  # noqa: PLR0917 - called positionally through Store.write
    db: Database, device_id: str, version: int, sealed: SealedBackup, started_in: State,
    now: float, reseal: Callable[[int], SealedBackup],
) -> Backup:  # fmt: skip
    """Insert ``sealed`` as the device's next version, tagged with its lifecycle state
    (``tag_state``), plus a ``backup`` timeline entry. When a concurrent backup took
    ``version``, ``reseal(next)`` seals the body again for the next one (the version is in the
    GCM AAD), here in the transaction, so no retry can starve. Conflict for a decommissioned
    device: purge must stay final."""
    taken = next_version(db, device_id)
    if taken != version:
        sealed, version = reseal(taken), taken
    committed_in = get_lifecycle(db, device_id).state
    if committed_in is State.DECOMMISSIONED:
        raise Conflict(f"device {device_id} is decommissioned; no backup is stored")
    state = tag_state(started_in, committed_in)
    backup = Backup(
        device_id, version, str(state), sealed.wrapped_key, sealed.nonce, sealed.ciphertext,
        sealed.size, now, None,
    )  # fmt: skip
    db.execute(
        f"INSERT INTO config_backups ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
        [backup.device_id, backup.version, backup.state, backup.wrapped_key, backup.nonce,
         backup.ciphertext, backup.size, backup.created_at, backup.restored_at],
    )  # fmt: skip
    restorable = state in RESTORABLE_BACKUP_STATES
    append_timeline(
        db, device_id, now, "backup", f"device:{device_id}",
        {"version": version, "size": sealed.size, "state": str(state), "restorable": restorable},
    )  # fmt: skip
    return backup


def newest_in_states(db: Database, device_id: str, states: Collection[State]) -> Backup | None:
    """The device's highest-versioned backup tagged with one of ``states``."""
    marks = ", ".join("?" * len(states))
    row = db.execute(
        f"SELECT {_COLUMNS} FROM config_backups "  # noqa: S608 - only placeholders interpolated
        f"WHERE device_id = ? AND state IN ({marks}) ORDER BY version DESC LIMIT 1",
        [device_id, *(str(s) for s in states)],
    ).fetchone()
    return None if row is None else _backup(row)


def backups_of(db: Database, device_id: str) -> list[Backup]:
    """Every stored backup of the device, oldest first (operators' view, tests)."""
    rows = db.execute(
        f"SELECT {_COLUMNS} FROM config_backups WHERE device_id = ? ORDER BY version",  # noqa: S608
        [device_id],
    ).fetchall()
    return [_backup(r) for r in rows]


def mark_restored(db: Database, device_id: str, version: int, now: float) -> bool:
    cur = db.execute(
        "UPDATE config_backups SET restored_at = ? WHERE device_id = ? AND version = ?",
        [now, device_id, version],
    )
    return cur.rowcount == 1


def delete_backups(db: Database, device_id: str) -> int:
    cur = db.execute("DELETE FROM config_backups WHERE device_id = ?", [device_id])
    return int(cur.rowcount)
