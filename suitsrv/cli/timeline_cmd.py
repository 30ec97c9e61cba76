"""``suitsrv admin timeline DEVICE``: a device's audit timeline, read offline from the data
directory, and what its lifecycle waits for next."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from suitsrv.errors import NotFound
from suitsrv.lifecycle import DeviceLifecycle
from suitsrv.store import SqliteStore, TimelineEntry
from suitsrv.web.timeline import MAX_LIMIT, entry_view, next_step

from .serve import _with_store

__all__ = ["add_timeline", "format_entry"]

_DETAIL_WIDTH = 60


@dataclass(frozen=True)
class _History:
    device_id: str
    lifecycle: DeviceLifecycle
    entries: list[TimelineEntry]


async def _history(store: SqliteStore, device_id: str) -> _History:
    if await store.get_device(device_id) is None:
        raise NotFound(f"no device {device_id}")
    entries: list[TimelineEntry] = []
    while page := await store.timeline(device_id, entries[-1].event_id if entries else 0,
                                       MAX_LIMIT):  # fmt: skip
        entries += page
    return _History(device_id, await store.get_lifecycle(device_id), entries)


def _short(detail: dict[str, Any]) -> str:
    text = " ".join(
        f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in detail.items()
    )
    return text if len(text) <= _DETAIL_WIDTH else text[: _DETAIL_WIDTH - 1] + "…"


def format_entry(entry: TimelineEntry) -> str:
    """One line: time (UTC, ISO 8601), kind, event, from → to, actor, short detail."""
    when = datetime.fromtimestamp(entry.at, UTC).isoformat(timespec="seconds")
    detail = dict(entry.detail)
    # A signal entry has no lifecycle event: its signal kind fills that column instead.
    what = entry.event or str(detail.pop("kind", ""))
    states = f"{entry.from_state} → {entry.to_state}" if entry.from_state else ""
    fields = [when.replace("+00:00", "Z"), f"{entry.kind:<10}", f"{what:<26}", f"{states:<36}",
              entry.actor, _short(detail)]  # fmt: skip
    return "  ".join(fields).rstrip()


def _timeline(args: argparse.Namespace) -> int:
    history = _with_store(args, lambda s: _history(s, args.device_id))
    lc = history.lifecycle
    if args.json:
        print(json.dumps({
            "device_id": history.device_id, "state": str(lc.state), "escalated": lc.escalated,
            "next_step": next_step(lc), "events": [entry_view(e) for e in history.entries],
        }, indent=2))  # fmt: skip
        return 0
    escalated = " (escalated)" if lc.escalated else ""
    print(f"device {history.device_id}: {lc.state}{escalated}")
    for entry in history.entries:
        print(format_entry(entry))
    print(f"next: {next_step(lc)}")
    return 0


def add_timeline(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``timeline`` under ``suitsrv admin``."""
    parser = actions.add_parser("timeline", help="a device's audit timeline and its next step")
    parser.add_argument("device_id", metavar="DEVICE")
    parser.add_argument(
        "--json", action="store_true", help="the fields of the HTTP timeline, all events"
    )
    parser.set_defaults(run=_timeline)
