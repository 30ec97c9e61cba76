"""The SQL of an evidence request: what appraising one device needs, in one read."""

from __future__ import annotations

from dataclasses import dataclass

from sqlite_utils import Database

from suitsrv.lifecycle import State

from . import lifecycle_queries as lq
from . import queries as q
from .records import DeviceRecord, ReleaseRecord, VerdictRecord

__all__ = ["AttestationView", "attestation_view"]


@dataclass(frozen=True)
class AttestationView:
    """The device, the releases it reported installing (reference values come from them), its
    latest verdict (the clock of its last accepted quote) and its lifecycle state, as of one
    read."""

    device: DeviceRecord
    releases: tuple[ReleaseRecord, ...]
    previous: VerdictRecord | None
    state: State


def attestation_view(db: Database, device_id: str) -> AttestationView | None:
    """None when there is no such device."""
    device = q.get_device(db, device_id)
    if device is None:
        return None
    installed = [q.get_release(db, install.digest) for install in q.installs_of(db, device_id)]
    releases = tuple(release for release in installed if release is not None)
    state = lq.get_lifecycle(db, device_id).state
    return AttestationView(device, releases, q.get_verdict(db, device_id), state)
