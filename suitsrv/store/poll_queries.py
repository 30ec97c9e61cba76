"""The SQL of a device's poll: everything ``GET /v1/device/update`` needs in one read.

A poll is the service's hottest request (a fleet polls every few minutes), so it is one read
transaction, and the release it hands out comes from a cache of published releases: a
published release is immutable (its envelope is the exact uploaded bytes; nothing unpublishes
it), so it is loaded from SQLite once per process, not once per poll.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from sqlite_utils import Database

from suitsrv.lifecycle import DeviceLifecycle, State

from .queries import get_release
from .records import DeviceRecord, ReleaseRecord

__all__ = ["PollView", "ReleaseCache", "VersionCheck", "poll_view"]

VersionCheck = Callable[[tuple[int, ...], int, tuple[int, ...]], bool]


class ReleaseCache(dict[str, ReleaseRecord]):
    """Published releases by digest, bounded: emptied when full (a fleet's current releases
    are few; refilling costs one read each)."""

    def __init__(self, capacity: int = 4096) -> None:
        super().__init__()
        self.capacity = capacity

    def keep(self, release: ReleaseRecord) -> None:
        if len(self) >= self.capacity:
            self.clear()
        self[release.digest] = release


@dataclass(frozen=True)
class PollView:
    """A device, the release to offer it (None: none applies), the digest last handed to it
    and its lifecycle state, as of one read."""

    device: DeviceRecord
    release: ReleaseRecord | None
    served: str | None
    state: State


def poll_view(
    db: Database, device_id: str, now: int, limit: int, satisfies: VersionCheck,
    cache: ReleaseCache,
) -> PollView | None:  # fmt: skip
    """The device (None: not registered) and the first published release of its class newer
    than what it installed for the same target, not past its use-before, whose version
    requirement holds for the version installed (unknown version: offered), by update priority
    then newest. Only the chosen release is loaded whole, from ``cache`` when it is there."""
    row = db.execute(
        "SELECT d.device_id, d.vendor, d.class_id, d.gateway, d.keys, d.created_at, s.digest, "
        "l.state FROM devices d LEFT JOIN served s ON s.device_id = d.device_id "
        "LEFT JOIN device_lifecycle l ON l.device_id = d.device_id WHERE d.device_id = ?",
        [device_id],
    ).fetchone()
    if row is None:
        return None
    device = DeviceRecord(row[0], row[1], row[2], row[3], json.loads(row[4]), row[5])
    served, state = row[6], State(row[7]) if row[7] else DeviceLifecycle().state
    installed = {
        target: tuple(json.loads(version)) if version else None
        for target, version in db.execute(
            "SELECT i.target, r.version FROM installs i JOIN releases r ON r.digest = i.digest "
            "WHERE i.device_id = ?",
            [device_id],
        ).fetchall()
    }
    rows = db.execute(
        "SELECT r.digest, r.target, r.requires_version "
        "FROM releases r LEFT JOIN installs i ON i.device_id = ? AND i.target = r.target "
        "WHERE r.vendor = ? AND r.class_id = ? AND r.published = 1 "
        "AND (i.sequence_key IS NULL OR r.sequence_key > i.sequence_key) "
        "AND (r.use_before IS NULL OR r.use_before > ?) "
        "ORDER BY r.update_priority ASC, r.sequence_key DESC LIMIT ?",
        [device_id, device.vendor, device.class_id, now, limit],
    ).fetchall()
    for digest, target, requires in rows:
        current = installed.get(target)
        if requires and current is not None:
            comparison, wanted = json.loads(requires)
            if not satisfies(current, comparison, tuple(wanted)):
                continue
        release = cache.get(digest)
        if release is None:
            release = get_release(db, digest)
            if release is None:  # the row was read in this same transaction
                raise RuntimeError(f"release {digest} vanished inside one read")
            cache.keep(release)
        return PollView(device, release, served, state)
    return PollView(device, None, served, state)
