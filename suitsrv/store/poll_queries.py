"""The SQL of a device's poll: everything ``GET /v1/device/update`` needs in one read.

A poll is the service's hottest request (a fleet polls every few minutes): two indexed reads
(the device with its served digest, lifecycle state and the release generation; its installs),
and the release choice made in memory over the class's published releases (ReleaseCache).
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


@dataclass(frozen=True)
class _Candidate:
    """What the release choice needs of a published release (the rest stays in SQLite)."""

    digest: str
    target: str
    sequence_key: str  # zero-padded text (records.sequence_key): compares as SQLite's does
    use_before: int | None
    requires: tuple[int, tuple[int, ...]] | None


class ReleaseCache:
    """The poll's read model: the published releases of each (vendor, class) in the order a
    poll considers them, tagged with the release generation they were read at (a counter that
    every change to ``releases`` moves, migration 6), and whole published releases by digest
    (immutable: the envelope is the uploaded bytes, nothing unpublishes). Shared by the reader
    threads: an entry is used only at the generation it was read at, so a thread that read
    an older generation can at worst make the next poll read the class again. Bounded: a map
    is emptied when full (a fleet's current releases are few)."""

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self._classes: dict[tuple[str, str], tuple[int, tuple[_Candidate, ...]]] = {}
        self._releases: dict[str, ReleaseRecord] = {}

    def candidates(
        self, db: Database, generation: int, vendor: str, class_id: str
    ) -> tuple[_Candidate, ...]:
        entry = self._classes.get((vendor, class_id))
        if entry is not None and entry[0] == generation:
            return entry[1]
        rows = db.execute(
            "SELECT digest, target, sequence_key, use_before, requires_version FROM releases "
            "WHERE vendor = ? AND class_id = ? AND published = 1 "
            "ORDER BY update_priority ASC, sequence_key DESC",
            [vendor, class_id],
        ).fetchall()
        found = tuple(
            _Candidate(digest, target, key, use_before, _requirement(requires))
            for digest, target, key, use_before, requires in rows
        )
        if len(self._classes) >= self.capacity:
            self._classes = {}
        self._classes[(vendor, class_id)] = (generation, found)
        return found

    def release(self, db: Database, digest: str) -> ReleaseRecord:
        found = self._releases.get(digest)
        if found is None:
            found = get_release(db, digest)
            if found is None:  # read from this table a moment ago: something deleted it
                raise RuntimeError(f"release {digest} vanished during a poll")
            if len(self._releases) >= self.capacity:
                self._releases = {}
            self._releases[digest] = found
        return found


def _requirement(text: str | None) -> tuple[int, tuple[int, ...]] | None:
    if not text:
        return None
    comparison, wanted = json.loads(text)
    return int(comparison), tuple(wanted)


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
    then newest, among the first ``limit`` newer ones. The class's releases come from
    ``cache`` while the release generation read here is the one they were read at."""
    row = db.execute(
        "SELECT d.device_id, d.vendor, d.class_id, d.gateway, d.keys, d.created_at, s.digest, "
        "l.state, (SELECT generation FROM release_generation WHERE id = 1) "
        "FROM devices d LEFT JOIN served s ON s.device_id = d.device_id "
        "LEFT JOIN device_lifecycle l ON l.device_id = d.device_id WHERE d.device_id = ?",
        [device_id],
    ).fetchone()
    if row is None:
        return None
    device = DeviceRecord(row[0], row[1], row[2], row[3], json.loads(row[4]), row[5])
    served, state = row[6], State(row[7]) if row[7] else DeviceLifecycle().state
    installed = {
        target: (key, tuple(json.loads(version)) if version else None)
        for target, key, version in db.execute(
            "SELECT i.target, i.sequence_key, r.version FROM installs i "
            "LEFT JOIN releases r ON r.digest = i.digest WHERE i.device_id = ?",
            [device_id],
        ).fetchall()
    }
    considered = 0
    for candidate in cache.candidates(db, int(row[8]), device.vendor, device.class_id):
        key, current = installed.get(candidate.target, (None, None))
        if key is not None and candidate.sequence_key <= key:
            continue
        if candidate.use_before is not None and candidate.use_before <= now:
            continue
        considered += 1
        if considered > limit:
            break
        if candidate.requires and current is not None:
            comparison, wanted = candidate.requires
            if not satisfies(current, comparison, wanted):
                continue
        return PollView(device, cache.release(db, candidate.digest), served, state)
    return PollView(device, None, served, state)
