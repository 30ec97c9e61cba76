"""The rows the store keeps, as frozen dataclasses (no dicts travel past the store)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "AnchorRecord",
    "DeviceRecord",
    "InstallRecord",
    "PayloadRecord",
    "ReleaseRecord",
    "ReportRecord",
    "Role",
    "TokenRecord",
    "VendorRecord",
    "VerdictRecord",
    "sequence_key",
]


class Role(StrEnum):
    OPERATOR = "operator"
    VENDOR = "vendor"
    DEVICE = "device"
    GATEWAY = "gateway"


def sequence_key(number: int) -> str:
    """SUIT sequence numbers go up to 2^64-1, past SQLite's signed 64-bit INTEGER: they are kept
    as 20-digit zero-padded text, whose order is the numeric order."""
    if not 0 <= number <= 2**64 - 1:
        raise ValueError("sequence number out of range")
    return f"{number:020d}"


@dataclass(frozen=True)
class TokenRecord:
    """A bearer credential. Only the SHA-256 of the secret is stored."""

    token_id: str
    token_hash: bytes
    role: Role
    scope: str
    label: str
    created_at: float
    revoked_at: float | None = None


@dataclass(frozen=True)
class VendorRecord:
    """A manufacturer account and the SUIT vendor-ids it may publish for."""

    name: str
    vendor_ids: tuple[str, ...]
    created_at: float


@dataclass(frozen=True)
class AnchorRecord:
    """A trust anchor of a vendor. ``algorithms`` is the record's list: a COSE block is verified
    only with an anchor listing the algorithm in its protected header."""

    anchor_id: str
    vendor: str
    kind: str  # "pem" | "cose_key" | "hmac"
    algorithms: tuple[int, ...]
    key_data: bytes
    kid: bytes | None
    created_at: float


@dataclass(frozen=True)
class DeviceRecord:
    device_id: str
    vendor: str
    class_id: str
    gateway: str | None
    keys: Mapping[str, str]
    created_at: float


@dataclass(frozen=True)
class ReleaseRecord:
    """An accepted manifest. ``digest`` (the manifest digest, hex) is its identity and
    ``envelope`` the exact bytes uploaded, which are the bytes served."""

    digest: str
    vendor: str
    vendor_id: str
    class_id: str
    target: str
    sequence_number: int
    envelope: bytes
    payloads: tuple[str, ...]
    published: bool
    signers: tuple[str, ...]
    created_at: float
    use_before: int | None = None
    version: tuple[int, ...] | None = None
    requires_version: tuple[int, tuple[int, ...]] | None = None
    update_priority: int = 0


@dataclass(frozen=True)
class PayloadRecord:
    sha256: str
    size: int
    created_at: float


@dataclass(frozen=True)
class InstallRecord:
    """What a device last reported installing for one target."""

    device_id: str
    target: str
    digest: str
    sequence_number: int
    reported_at: float


@dataclass(frozen=True)
class ReportRecord:
    report_id: int
    device_id: str
    digest: str
    success: bool
    reason: int | None
    authenticated_by: str
    received_at: float
    records: tuple[object, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class VerdictRecord:
    """A device's latest attestation result: the signed EAR as issued, and what a later quote
    is compared with (the TPM clock of this one)."""

    device_id: str
    status: str
    ear: str
    evidence: str
    appraised_at: float
    expires_at: float
    reasons: tuple[str, ...] = ()
    clock: tuple[int, int, int, bool] | None = None  # clock, resetCount, restartCount, safe
    ak_name: str | None = None
