"""Numbered schema migrations; each runs in one transaction (STYLE.md "Async and storage").

Sequence numbers are TEXT (records.sequence_key) because SUIT allows up to 2^64-1.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

from sqlite_utils import Database

__all__ = ["MIGRATIONS", "migrate"]


def _initial(db: Database) -> None:
    db.table("tokens").create(
        {"token_id": str, "token_hash": bytes, "role": str, "scope": str, "label": str,
         "created_at": float, "revoked_at": float},
        pk="token_id", not_null={"token_hash", "role", "scope", "created_at"},
    )  # fmt: skip
    db.table("tokens").create_index(["token_hash"], unique=True)
    db.table("vendors").create(
        {"name": str, "created_at": float}, pk="name", not_null={"created_at"}
    )
    db.table("vendor_ids").create(
        {"vendor_id": str, "vendor": str},
        pk="vendor_id",
        foreign_keys=[("vendor", "vendors", "name")],
    )
    db.table("anchors").create(
        {"anchor_id": str, "vendor": str, "kind": str, "algorithms": str, "key_data": bytes,
         "kid": bytes, "created_at": float},
        pk="anchor_id", foreign_keys=[("vendor", "vendors", "name")],
        not_null={"vendor", "kind", "algorithms", "key_data"},
    )  # fmt: skip
    db.table("devices").create(
        {"device_id": str, "vendor": str, "class_id": str, "gateway": str, "keys": str,
         "created_at": float},
        pk="device_id", foreign_keys=[("vendor", "vendors", "name")],
        not_null={"vendor", "class_id", "keys"},
    )  # fmt: skip
    db.table("devices").create_index(["gateway"])
    db.table("releases").create(
        {"digest": str, "vendor": str, "vendor_id": str, "class_id": str, "target": str,
         "sequence_key": str, "envelope": bytes, "published": int, "signers": str,
         "created_at": float, "use_before": int, "version": str, "requires_version": str,
         "update_priority": int},
        pk="digest", foreign_keys=[("vendor", "vendors", "name")],
        not_null={"vendor", "vendor_id", "class_id", "target", "sequence_key", "envelope"},
    )  # fmt: skip
    db.table("releases").create_index(
        ["vendor_id", "class_id", "target", "sequence_key"], unique=True
    )
    db.table("releases").create_index(["class_id", "published", "sequence_key"])
    db.table("release_payloads").create(
        {"digest": str, "sha256": str}, pk=("digest", "sha256"),
        foreign_keys=[("digest", "releases", "digest")],
    )  # fmt: skip
    db.table("release_payloads").create_index(["sha256"])
    db.table("payloads").create({"sha256": str, "size": int, "created_at": float}, pk="sha256")
    db.table("installs").create(
        {"device_id": str, "target": str, "digest": str, "sequence_key": str, "reported_at": float},
        pk=("device_id", "target"), foreign_keys=[("device_id", "devices", "device_id")],
    )  # fmt: skip
    db.table("reports").create(
        {"report_id": int, "device_id": str, "digest": str, "success": int, "reason": int,
         "authenticated_by": str, "records": str, "raw": bytes, "received_at": float},
        pk="report_id", foreign_keys=[("device_id", "devices", "device_id")],
    )  # fmt: skip
    db.table("reports").create_index(["device_id", "received_at"])


def _verdicts(db: Database) -> None:
    db.table("verdicts").create(
        {"device_id": str, "status": str, "ear": str, "evidence": str, "appraised_at": float,
         "expires_at": float, "reasons": str, "clock": str, "ak_name": str},
        pk="device_id", foreign_keys=[("device_id", "devices", "device_id")],
        not_null={"status", "ear", "evidence", "appraised_at", "expires_at"},
    )  # fmt: skip


def _lifecycle(db: Database) -> None:
    db.table("device_lifecycle").create(
        {"device_id": str, "state": str, "quarantines": str, "escalated": int,
         "verdict_affirmed": int, "config_restored": int, "updated_at": float},
        pk="device_id", foreign_keys=[("device_id", "devices", "device_id")],
        not_null={"state", "quarantines"},
    )  # fmt: skip
    # Append-only: rows are inserted, never updated or deleted (the audit timeline).
    db.table("timeline").create(
        {"event_id": int, "device_id": str, "at": float, "kind": str, "actor": str,
         "event": str, "from_state": str, "to_state": str, "detail": str},
        pk="event_id", not_null={"device_id", "at", "kind", "actor"},
    )  # fmt: skip
    db.table("timeline").create_index(["device_id", "event_id"])
    db.table("incidents").create(
        {"incident_id": int, "device_id": str, "gateway": str, "kind": str, "window_start": float,
         "window_end": float, "summary": str, "reported_at": float},
        pk="incident_id", foreign_keys=[("device_id", "devices", "device_id")],
    )  # fmt: skip
    db.table("advisories").create(
        {"advisory_id": int, "vendor": str, "class_id": str, "max_sequence_key": str,
         "issued_by": str, "issued_at": float, "note": str},
        pk="advisory_id",
    )  # fmt: skip
    db.table("signals").create(
        {"signal_id": int, "gateway": str, "device_id": str, "kind": str, "payload": str,
         "created_at": float},
        pk="signal_id", not_null={"gateway", "device_id", "kind", "payload", "created_at"},
    )  # fmt: skip
    db.table("signals").create_index(["gateway", "signal_id"])
    db.table("config_backups").create(
        {"device_id": str, "version": int, "state": str, "wrapped_key": bytes, "nonce": bytes,
         "ciphertext": bytes, "size": int, "created_at": float, "restored_at": float},
        pk=("device_id", "version"), foreign_keys=[("device_id", "devices", "device_id")],
        not_null={"state", "wrapped_key", "nonce", "ciphertext", "size", "created_at"},
    )  # fmt: skip
    db.table("gateways").create(
        {"gateway_id": str, "webhook_url": str, "webhook_secret": bytes, "created_at": float},
        pk="gateway_id",
    )  # fmt: skip


def _webhook_cursors(db: Database) -> None:
    from .gateway_queries import ensure_schema

    ensure_schema(db)


def _served(db: Database) -> None:
    db.table("served").create(
        {"device_id": str, "digest": str, "served_at": float},
        pk="device_id", foreign_keys=[("device_id", "devices", "device_id")],
        not_null={"digest", "served_at"},
    )  # fmt: skip


def _release_generation(db: Database) -> None:
    """A counter that every change to ``releases`` moves, in the same transaction (triggers),
    so a process can keep the published releases of a class in memory and see in the poll's
    own read whether any process changed them since (poll_queries.py)."""
    db.execute(
        "CREATE TABLE release_generation (id INTEGER PRIMARY KEY CHECK (id = 1), "
        "generation INTEGER NOT NULL)"
    )
    db.execute("INSERT INTO release_generation (id, generation) VALUES (1, 0)")
    bump = "BEGIN UPDATE release_generation SET generation = generation + 1 WHERE id = 1; END"
    db.execute(f"CREATE TRIGGER releases_insert_generation AFTER INSERT ON releases {bump}")
    db.execute(f"CREATE TRIGGER releases_update_generation AFTER UPDATE ON releases {bump}")
    db.execute(f"CREATE TRIGGER releases_delete_generation AFTER DELETE ON releases {bump}")


def _sealed_webhook_secrets(db: Database) -> None:
    """Webhook secrets are kept sealed under the vault master key (vault.seal_secret). The
    migration cannot seal (the key is a file named in the configuration): the webhook worker
    seals what the old column holds when it starts, and clears it (gateway_queries.py)."""
    db.execute("ALTER TABLE gateways ADD COLUMN webhook_secret_sealed BLOB")


def _credential_generation(db: Database) -> None:
    """A counter that every revocation or removal of a token moves, in the same transaction
    (triggers), so a server can keep looked-up tokens in memory and see within a second that
    another process (``suitsrv admin token revoke``) changed one (auth.TokenCache). A new token
    does not move it: nothing cached can be stale because of one."""
    db.execute(
        "CREATE TABLE credential_generation (id INTEGER PRIMARY KEY CHECK (id = 1), "
        "generation INTEGER NOT NULL)"
    )
    db.execute("INSERT INTO credential_generation (id, generation) VALUES (1, 0)")
    bump = "BEGIN UPDATE credential_generation SET generation = generation + 1 WHERE id = 1; END"
    db.execute(f"CREATE TRIGGER tokens_update_generation AFTER UPDATE ON tokens {bump}")
    db.execute(f"CREATE TRIGGER tokens_delete_generation AFTER DELETE ON tokens {bump}")


MIGRATIONS: list[tuple[int, str, Callable[[Database], None]]] = [
    (1, "initial schema", _initial),
    (2, "attestation verdicts", _verdicts),
    (3, "device lifecycle, timeline, incidents, advisories, signals, config backups", _lifecycle),
    (4, "webhook delivery cursors", _webhook_cursors),
    (5, "the release last served to each device", _served),
    (6, "a generation counter of the releases table", _release_generation),
    (7, "webhook secrets sealed under the vault master key", _sealed_webhook_secrets),
    (8, "a generation counter of revoked or removed tokens", _credential_generation),
]


def migrate(conn: sqlite3.Connection) -> list[int]:
    """Apply the migrations not yet applied, each in its own transaction; returns their ids."""
    db = Database(conn)
    conn.execute(
        "CREATE TABLE IF NOT EXISTS _migrations "
        "(id INTEGER PRIMARY KEY, name TEXT, applied_at REAL)"
    )
    done = {row[0] for row in conn.execute("SELECT id FROM _migrations")}
    applied = []
    for number, name, step in MIGRATIONS:
        if number in done:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            step(db)
            conn.execute(
                "INSERT INTO _migrations (id, name, applied_at) VALUES (?, ?, ?)",
                (number, name, time.time()),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        applied.append(number)
    return applied
