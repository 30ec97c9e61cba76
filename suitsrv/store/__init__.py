"""Storage behind a small interface (DESIGN.md): the embedded SQLite + blob-folder store now,
a PostgreSQL + object-storage backend later. The service only uses ``Store``."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from suitsrv.lifecycle import DeviceLifecycle, Event

from .blobs import BlobStore, is_sha256_hex
from .lifecycle_queries import Backup, Signal, SignalRule, TimelineEntry
from .poll_queries import PollView, VersionCheck
from .records import (
    AnchorRecord,
    DeviceRecord,
    InstallRecord,
    PayloadRecord,
    ReleaseRecord,
    ReportRecord,
    Role,
    TokenRecord,
    VendorRecord,
    VerdictRecord,
)
from .sqlite import SqliteStore

__all__ = [
    "AnchorRecord",
    "Backup",
    "BlobStore",
    "DeviceRecord",
    "InstallRecord",
    "PayloadRecord",
    "PollView",
    "ReleaseRecord",
    "ReportRecord",
    "Role",
    "Signal",
    "SqliteStore",
    "Store",
    "TimelineEntry",
    "TokenRecord",
    "VendorRecord",
    "VerdictRecord",
    "is_sha256_hex",
]


T = TypeVar("T")


class Store(Protocol):
    """What the service needs from storage. Every write is atomic and durable on return."""

    blobs: BlobStore

    # Escape hatch for capability modules with their own SQL (suitsrv/store/*_queries.py):
    # ``fn(db, *args)`` on a read-only connection / in one write transaction.
    async def read(self, fn: Callable[..., T], *args: Any) -> T: ...
    async def write(self, fn: Callable[..., T], *args: Any) -> T: ...

    async def add_token(self, token: TokenRecord) -> None: ...
    async def token_by_hash(self, token_hash: bytes) -> TokenRecord | None: ...
    async def revoke_token(self, token_id: str, now: float) -> bool: ...
    async def count_active_tokens(self, role: Role) -> int: ...
    async def add_vendor(self, vendor: VendorRecord, anchors: Sequence[AnchorRecord]) -> None: ...
    async def get_vendor(self, name: str) -> VendorRecord | None: ...
    async def list_vendors(self) -> list[VendorRecord]: ...
    async def add_anchor(self, anchor: AnchorRecord) -> None: ...
    async def anchors_for(self, vendor: str) -> list[AnchorRecord]: ...
    async def vendor_of(self, vendor_id: str) -> str | None: ...
    async def add_devices(self, devices: Sequence[tuple[DeviceRecord, TokenRecord]]) -> None: ...
    async def get_device(self, device_id: str) -> DeviceRecord | None: ...
    async def insert_release(self, release: ReleaseRecord) -> tuple[ReleaseRecord, bool]: ...
    async def get_release(self, digest: str) -> ReleaseRecord | None: ...
    async def list_releases(
        self, vendor: str | None, limit: int, after: str | None
    ) -> list[ReleaseRecord]: ...
    async def add_payload(self, payload: PayloadRecord) -> list[str]: ...
    async def get_payload(self, sha256: str) -> PayloadRecord | None: ...
    async def payload_vendors(self, sha256: str) -> set[str]: ...
    async def payload_classes(self, sha256: str) -> set[tuple[str, str]]: ...
    async def installs_of(self, device_id: str) -> list[InstallRecord]: ...
    async def poll_view(
        self, device_id: str, now: int, limit: int, satisfies: VersionCheck
    ) -> PollView | None: ...
    async def record_report(
        self, report: ReportRecord, release: ReleaseRecord, raw: bytes
    ) -> int: ...
    async def transition(
        self, device_id: str, event: Event, actor: str, now: float, window: float,
        detail: Mapping[str, Any] | None = None, gateway: str | None = None,
        signals: SignalRule | None = None,
    ) -> tuple[DeviceLifecycle, DeviceLifecycle]: ...  # fmt: skip
    async def get_lifecycle(self, device_id: str) -> DeviceLifecycle: ...
    async def append_timeline(
        self, device_id: str, at: float, kind: str, actor: str, detail: Mapping[str, Any]
    ) -> int: ...
    async def timeline(self, device_id: str, after: int, limit: int) -> list[TimelineEntry]: ...
    async def add_signal(
        self, gateway: str, device_id: str, kind: str, payload: Mapping[str, Any], now: float
    ) -> int: ...
    async def signals_after(self, gateway: str, after: int, limit: int) -> list[Signal]: ...
    async def put_verdict(self, verdict: VerdictRecord) -> None: ...
    async def get_verdict(self, device_id: str) -> VerdictRecord | None: ...
    def close(self) -> None: ...
