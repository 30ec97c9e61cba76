"""The SQL of the embedded store: plain functions of a sqlite_utils Database.

SqliteStore runs readers on read-only connections and writers inside one BEGIN IMMEDIATE
transaction on its single writer thread, so a function here that reads then writes (the
rollback check in ``insert_release``) cannot interleave with another writer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlite_utils import Database

from suitsrv.errors import Conflict

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
    sequence_key,
)

_RELEASE_COLUMNS = (
    "digest", "vendor", "vendor_id", "class_id", "target", "sequence_key", "envelope", "published",
    "signers", "created_at", "use_before", "version", "requires_version", "update_priority",
)  # fmt: skip
_RELEASE_SELECT = ", ".join(f"r.{c}" for c in _RELEASE_COLUMNS)
_CREDENTIAL_COLUMNS = "token_id, token_hash, role, scope, label, created_at, revoked_at"


def _release(row: Sequence[Any], payloads: Sequence[str]) -> ReleaseRecord:
    values = dict(zip(_RELEASE_COLUMNS, row, strict=True))
    requires = json.loads(values["requires_version"]) if values["requires_version"] else None
    return ReleaseRecord(
        digest=values["digest"],
        vendor=values["vendor"],
        vendor_id=values["vendor_id"],
        class_id=values["class_id"],
        target=values["target"],
        sequence_number=int(values["sequence_key"]),
        envelope=bytes(values["envelope"]),
        payloads=tuple(payloads),
        published=bool(values["published"]),
        signers=tuple(json.loads(values["signers"])),
        created_at=values["created_at"],
        use_before=values["use_before"],
        version=tuple(json.loads(values["version"])) if values["version"] else None,
        requires_version=(requires[0], tuple(requires[1])) if requires else None,
        update_priority=values["update_priority"] or 0,
    )


# -- tokens --------------------------------------------------------------------------------


def _token(row: Sequence[Any]) -> TokenRecord:
    return TokenRecord(row[0], bytes(row[1]), Role(row[2]), row[3], row[4], row[5], row[6])


def add_token(db: Database, token: TokenRecord) -> None:
    db.table("tokens").insert(
        {"token_id": token.token_id, "token_hash": token.token_hash, "role": str(token.role),
         "scope": token.scope, "label": token.label, "created_at": token.created_at,
         "revoked_at": token.revoked_at}
    )  # fmt: skip


def token_by_hash(db: Database, token_hash: bytes) -> TokenRecord | None:
    row = db.execute(
        f"SELECT {_CREDENTIAL_COLUMNS} FROM tokens WHERE token_hash = ?", [token_hash]
    ).fetchone()
    return _token(row) if row else None


def credential_generation(db: Database) -> int:
    """The counter every revocation or removal of a token moves (migration 8)."""
    (generation,) = db.execute(
        "SELECT generation FROM credential_generation WHERE id = 1"
    ).fetchone()
    return int(generation)


def list_tokens(db: Database) -> list[TokenRecord]:
    rows = db.execute(f"SELECT {_CREDENTIAL_COLUMNS} FROM tokens ORDER BY created_at").fetchall()
    return [_token(r) for r in rows]


def revoke_token(db: Database, token_id: str, now: float) -> bool:
    cur = db.execute(
        "UPDATE tokens SET revoked_at = ? WHERE token_id = ? AND revoked_at IS NULL",
        [now, token_id],
    )
    return cur.rowcount == 1


def count_active(db: Database, role: Role) -> int:
    row = db.execute(
        "SELECT count(*) FROM tokens WHERE role = ? AND revoked_at IS NULL", [str(role)]
    ).fetchone()
    return int(row[0])


# -- vendors and anchors --------------------------------------------------------------------


def add_vendor(db: Database, vendor: VendorRecord) -> None:
    if db.execute("SELECT 1 FROM vendors WHERE name = ?", [vendor.name]).fetchone():
        raise Conflict(f"vendor {vendor.name!r} exists")
    taken = [
        v
        for v in vendor.vendor_ids
        if db.execute("SELECT 1 FROM vendor_ids WHERE vendor_id = ?", [v]).fetchone()
    ]
    if taken:
        raise Conflict(f"vendor-ids {taken} already belong to another vendor")
    db.table("vendors").insert({"name": vendor.name, "created_at": vendor.created_at})
    db.table("vendor_ids").insert_all(
        {"vendor_id": v, "vendor": vendor.name} for v in vendor.vendor_ids
    )


def add_anchor(db: Database, anchor: AnchorRecord) -> None:
    db.table("anchors").insert(
        {"anchor_id": anchor.anchor_id, "vendor": anchor.vendor, "kind": anchor.kind,
         "algorithms": json.dumps(list(anchor.algorithms)), "key_data": anchor.key_data,
         "kid": anchor.kid, "created_at": anchor.created_at}
    )  # fmt: skip


def add_vendor_with_anchors(
    db: Database, vendor: VendorRecord, anchors: Sequence[AnchorRecord]
) -> None:
    add_vendor(db, vendor)
    for anchor in anchors:
        add_anchor(db, anchor)


def vendor_of(db: Database, vendor_id: str) -> str | None:
    row = db.execute("SELECT vendor FROM vendor_ids WHERE vendor_id = ?", [vendor_id]).fetchone()
    return str(row[0]) if row else None


def get_vendor(db: Database, name: str) -> VendorRecord | None:
    row = db.execute("SELECT name, created_at FROM vendors WHERE name = ?", [name]).fetchone()
    if row is None:
        return None
    ids = db.execute(
        "SELECT vendor_id FROM vendor_ids WHERE vendor = ? ORDER BY vendor_id", [name]
    ).fetchall()
    return VendorRecord(row[0], tuple(r[0] for r in ids), row[1])


def list_vendors(db: Database) -> list[VendorRecord]:
    names = [r[0] for r in db.execute("SELECT name FROM vendors ORDER BY name").fetchall()]
    return [v for v in (get_vendor(db, n) for n in names) if v is not None]


def anchors_for(db: Database, vendor: str) -> list[AnchorRecord]:
    rows = db.execute(
        "SELECT anchor_id, vendor, kind, algorithms, key_data, kid, created_at FROM anchors "
        "WHERE vendor = ? ORDER BY created_at",
        [vendor],
    ).fetchall()
    return [
        AnchorRecord(
            r[0],
            r[1],
            r[2],
            tuple(json.loads(r[3])),
            bytes(r[4]),
            bytes(r[5]) if r[5] is not None else None,
            r[6],
        )
        for r in rows
    ]


# -- devices -----------------------------------------------------------------------------


def add_device(db: Database, device: DeviceRecord) -> None:
    if db.execute("SELECT 1 FROM devices WHERE device_id = ?", [device.device_id]).fetchone():
        raise Conflict(f"device {device.device_id!r} is already registered")
    db.table("devices").insert(
        {"device_id": device.device_id, "vendor": device.vendor, "class_id": device.class_id,
         "gateway": device.gateway, "keys": json.dumps(dict(device.keys), sort_keys=True),
         "created_at": device.created_at}
    )  # fmt: skip


def add_devices(db: Database, devices: Sequence[tuple[DeviceRecord, TokenRecord]]) -> None:
    for device, token in devices:
        add_device(db, device)
        add_token(db, token)


def get_device(db: Database, device_id: str) -> DeviceRecord | None:
    row = db.execute(
        "SELECT device_id, vendor, class_id, gateway, keys, created_at FROM devices "
        "WHERE device_id = ?",
        [device_id],
    ).fetchone()
    if row is None:
        return None
    return DeviceRecord(row[0], row[1], row[2], row[3], json.loads(row[4]), row[5])


# -- releases and payloads ------------------------------------------------------------------


def _payloads_of(db: Database, digest: str) -> list[str]:
    rows = db.execute(
        "SELECT sha256 FROM release_payloads WHERE digest = ? ORDER BY sha256", [digest]
    ).fetchall()
    return [r[0] for r in rows]


def get_release(db: Database, digest: str) -> ReleaseRecord | None:
    row = db.execute(
        f"SELECT {_RELEASE_SELECT} FROM releases r WHERE digest = ?", [digest]
    ).fetchone()
    return _release(row, _payloads_of(db, digest)) if row else None


def list_releases(
    db: Database, vendor: str | None, limit: int, after: str | None
) -> list[ReleaseRecord]:
    rows = db.execute(
        f"SELECT {_RELEASE_SELECT} FROM releases r WHERE (? IS NULL OR vendor = ?) AND digest > ? "
        "ORDER BY digest LIMIT ?",
        [vendor, vendor, after or "", limit],
    ).fetchall()
    return [_release(r, _payloads_of(db, r[0])) for r in rows]


def newest_sequence(db: Database, vendor_id: str, class_id: str, target: str) -> int | None:
    row = db.execute(
        "SELECT max(sequence_key) FROM releases "
        "WHERE vendor_id = ? AND class_id = ? AND target = ?",
        [vendor_id, class_id, target],
    ).fetchone()
    return int(row[0]) if row and row[0] is not None else None


def insert_release(db: Database, release: ReleaseRecord) -> tuple[ReleaseRecord, bool]:
    """Insert unless the digest exists (idempotent: returns the stored one and False). The
    sequence number must exceed the newest stored for the same target (Conflict otherwise)."""
    existing = get_release(db, release.digest)
    if existing is not None:
        return existing, False
    newest = newest_sequence(db, release.vendor_id, release.class_id, release.target)
    if newest is not None and release.sequence_number <= newest:
        raise Conflict(
            f"sequence number {release.sequence_number} does not exceed {newest}, the newest "
            "stored for this target: a rollback or replay is refused",
            newest_sequence_number=newest,
        )
    published = all(
        db.execute("SELECT 1 FROM payloads WHERE sha256 = ?", [p]).fetchone()
        for p in release.payloads
    )
    requires = release.requires_version
    db.table("releases").insert(
        {"digest": release.digest, "vendor": release.vendor, "vendor_id": release.vendor_id,
         "class_id": release.class_id, "target": release.target,
         "sequence_key": sequence_key(release.sequence_number), "envelope": release.envelope,
         "published": int(published), "signers": json.dumps(list(release.signers)),
         "created_at": release.created_at, "use_before": release.use_before,
         "version": json.dumps(list(release.version)) if release.version else None,
         "requires_version": json.dumps([requires[0], list(requires[1])]) if requires else None,
         "update_priority": release.update_priority}
    )  # fmt: skip
    db.table("release_payloads").insert_all(
        {"digest": release.digest, "sha256": p} for p in release.payloads
    )
    stored = get_release(db, release.digest)
    assert stored is not None
    return stored, True


def add_payload(db: Database, payload: PayloadRecord) -> list[str]:
    """Record a durable blob and publish the releases it completes; returns their digests."""
    db.table("payloads").insert(
        {"sha256": payload.sha256, "size": payload.size, "created_at": payload.created_at},
        ignore=True,
    )
    waiting = db.execute(
        "SELECT DISTINCT r.digest FROM releases r JOIN release_payloads rp ON rp.digest = r.digest "
        "WHERE rp.sha256 = ? AND r.published = 0",
        [payload.sha256],
    ).fetchall()
    published = []
    for (digest,) in waiting:
        missing = db.execute(
            "SELECT count(*) FROM release_payloads rp LEFT JOIN payloads p ON p.sha256 = rp.sha256 "
            "WHERE rp.digest = ? AND p.sha256 IS NULL",
            [digest],
        ).fetchone()[0]
        if missing == 0:
            db.execute("UPDATE releases SET published = 1 WHERE digest = ?", [digest])
            published.append(digest)
    return published


def get_payload(db: Database, sha256: str) -> PayloadRecord | None:
    row = db.execute(
        "SELECT sha256, size, created_at FROM payloads WHERE sha256 = ?", [sha256]
    ).fetchone()
    return PayloadRecord(row[0], row[1], row[2]) if row else None


def payload_vendors(db: Database, sha256: str) -> set[str]:
    """Vendors whose releases reference this payload."""
    rows = db.execute(
        "SELECT DISTINCT r.vendor FROM releases r JOIN release_payloads rp ON rp.digest = r.digest "
        "WHERE rp.sha256 = ?",
        [sha256],
    ).fetchall()
    return {r[0] for r in rows}


def payload_classes(db: Database, sha256: str) -> set[tuple[str, str]]:
    """(vendor, class-id) of the published releases that reference this payload."""
    rows = db.execute(
        "SELECT DISTINCT r.vendor, r.class_id FROM releases r "
        "JOIN release_payloads rp ON rp.digest = r.digest WHERE rp.sha256 = ? AND r.published = 1",
        [sha256],
    ).fetchall()
    return {(r[0], r[1]) for r in rows}


# -- devices' updates and reports -----------------------------------------------------------


def installs_of(db: Database, device_id: str) -> list[InstallRecord]:
    rows = db.execute(
        "SELECT device_id, target, digest, sequence_key, reported_at FROM installs "
        "WHERE device_id = ? ORDER BY target",
        [device_id],
    ).fetchall()
    return [InstallRecord(r[0], r[1], r[2], int(r[3]), r[4]) for r in rows]


def record_report(db: Database, report: ReportRecord, release: ReleaseRecord, raw: bytes) -> int:
    """Store a device's report; a success moves its installed release for that target forward
    (never backward: a late report of an older release does not undo a newer one)."""
    cur = db.execute(
        "INSERT INTO reports (device_id, digest, success, reason, authenticated_by, records, raw, "
        "received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [report.device_id, release.digest, int(report.success), report.reason,
         report.authenticated_by, json.dumps(list(report.records), default=repr), raw,
         report.received_at],
    )  # fmt: skip
    if report.success:
        db.execute(
            "INSERT INTO installs (device_id, target, digest, sequence_key, reported_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (device_id, target) DO UPDATE SET "
            "digest = excluded.digest, sequence_key = excluded.sequence_key, "
            "reported_at = excluded.reported_at "
            "WHERE excluded.sequence_key >= installs.sequence_key",
            [report.device_id, release.target, release.digest,
             sequence_key(release.sequence_number), report.received_at],
        )  # fmt: skip
    return int(cur.lastrowid or 0)


# -- attestation verdicts ---------------------------------------------------------------------


def put_verdict(db: Database, verdict: VerdictRecord) -> None:
    # Plain SQL: sqlite-utils' upsert reads the table's columns on every call.
    db.execute(
        "INSERT INTO verdicts (device_id, status, ear, evidence, appraised_at, expires_at, "
        "reasons, clock, ak_name) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device_id) "
        "DO UPDATE SET status = excluded.status, ear = excluded.ear, "
        "evidence = excluded.evidence, appraised_at = excluded.appraised_at, "
        "expires_at = excluded.expires_at, reasons = excluded.reasons, clock = excluded.clock, "
        "ak_name = excluded.ak_name",
        [verdict.device_id, verdict.status, verdict.ear, verdict.evidence, verdict.appraised_at,
         verdict.expires_at, json.dumps(list(verdict.reasons)),
         json.dumps(list(verdict.clock)) if verdict.clock else None, verdict.ak_name],
    )  # fmt: skip


def get_verdict(db: Database, device_id: str) -> VerdictRecord | None:
    row = db.execute(
        "SELECT device_id, status, ear, evidence, appraised_at, expires_at, reasons, clock, "
        "ak_name FROM verdicts WHERE device_id = ?",
        [device_id],
    ).fetchone()
    if row is None:
        return None
    clock = json.loads(row[7]) if row[7] else None
    return VerdictRecord(
        row[0], row[1], row[2], row[3], row[4], row[5], tuple(json.loads(row[6] or "[]")),
        (int(clock[0]), int(clock[1]), int(clock[2]), bool(clock[3])) if clock else None, row[8],
    )  # fmt: skip
