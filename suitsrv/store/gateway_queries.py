"""SQL of gateway webhooks: the webhook a gateway registered (table ``gateways``, migration 3;
its secret sealed under the vault master key, migration 7) and how far delivery to it has got
(table ``webhook_cursors``, DDL in ``ensure_schema``).
Plain functions of a sqlite_utils Database, run by Store.read/write (writers inside one
BEGIN IMMEDIATE transaction)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlite_utils import Database

__all__ = [
    "SCHEMA",
    "Webhook",
    "WebhookStatus",
    "delete_webhook",
    "ensure_schema",
    "get_webhook",
    "pending_webhooks",
    "put_webhook",
    "record_delivery",
    "record_failure",
    "seal_plain_secrets",
    "webhook_status",
]

# ``delivered_through`` is the highest signal_id the gateway's webhook acknowledged with a 2xx;
# delivery resumes after it, so a restart redelivers at most the signal that was in flight
# (at-least-once). The row outlives a DELETE of the webhook: registering again continues.
SCHEMA = """
CREATE TABLE IF NOT EXISTS webhook_cursors (
    gateway_id TEXT PRIMARY KEY REFERENCES gateways(gateway_id),
    delivered_through INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    last_attempt_at REAL,
    updated_at REAL NOT NULL
)"""


def ensure_schema(db: Database) -> None:
    """Create the delivery bookkeeping (idempotent; meant to become migration 4)."""
    db.execute(SCHEMA)


@dataclass(frozen=True)
class Webhook:
    """Where and how to deliver a gateway's signals, and what it has acknowledged."""

    gateway_id: str
    url: str
    sealed_secret: bytes  # vault.seal_secret: the HMAC key is never stored in the clear
    delivered_through: int


@dataclass(frozen=True)
class WebhookStatus:
    """A webhook as its gateway may see it (never the secret)."""

    gateway_id: str
    url: str
    delivered_through: int
    failures: int
    last_error: str | None
    last_attempt_at: float | None


def put_webhook(  # noqa: PLR0917 - called positionally through Store.write
    db: Database, gateway_id: str, url: str, sealed_secret: bytes, after: int | None, now: float
) -> WebhookStatus:
    """Register or replace the webhook (its secret as vault.seal_secret sealed it). ``after``
    moves the cursor (None keeps it; a first registration starts at 0, so signals queued
    before it are delivered too)."""
    db.execute(
        "INSERT INTO gateways (gateway_id, webhook_url, webhook_secret_sealed, created_at) "
        "VALUES (?, ?, ?, ?) ON CONFLICT (gateway_id) DO UPDATE SET "
        "webhook_url = excluded.webhook_url, webhook_secret = NULL, "
        "webhook_secret_sealed = excluded.webhook_secret_sealed",
        [gateway_id, url, sealed_secret, now],
    )
    db.execute(
        "INSERT INTO webhook_cursors (gateway_id, delivered_through, updated_at) "
        "VALUES (?, ?, ?) ON CONFLICT (gateway_id) DO UPDATE SET "
        "delivered_through = COALESCE(?, delivered_through), failures = 0, last_error = NULL, "
        "updated_at = excluded.updated_at",
        [gateway_id, after or 0, now, after],
    )
    status = webhook_status(db, gateway_id)
    assert status is not None
    return status


def delete_webhook(db: Database, gateway_id: str) -> bool:
    """Stop delivering to the gateway; False when it had no webhook."""
    cur = db.execute(
        "UPDATE gateways SET webhook_url = NULL, webhook_secret = NULL, "
        "webhook_secret_sealed = NULL WHERE gateway_id = ? AND webhook_url IS NOT NULL",
        [gateway_id],
    )
    return cur.rowcount > 0


def get_webhook(db: Database, gateway_id: str) -> Webhook | None:
    """The webhook with its sealed secret (None: none, or its secret not sealed yet)."""
    row = db.execute(
        "SELECT g.gateway_id, g.webhook_url, g.webhook_secret_sealed, "
        "COALESCE(c.delivered_through, 0) "
        "FROM gateways g LEFT JOIN webhook_cursors c ON c.gateway_id = g.gateway_id "
        "WHERE g.gateway_id = ? AND g.webhook_url IS NOT NULL "
        "AND g.webhook_secret_sealed IS NOT NULL",
        [gateway_id],
    ).fetchone()
    return None if row is None else Webhook(row[0], row[1], bytes(row[2]), row[3])


def seal_plain_secrets(db: Database, seal: Callable[[str, bytes], bytes]) -> int:
    """Seal every secret still in the clear (stored before migration 7) with ``seal(gateway,
    secret)`` and erase the clear copy, in one transaction; how many there were. With
    ``secure_delete`` SQLite zeroes the old bytes in the database file (the WAL keeps its copy
    of the page until the next checkpoint)."""
    rows = db.execute(
        "SELECT gateway_id, webhook_secret FROM gateways WHERE webhook_secret IS NOT NULL"
    ).fetchall()
    if not rows:
        return 0
    (before,) = db.execute("PRAGMA secure_delete").fetchone()
    db.execute("PRAGMA secure_delete = ON")
    try:
        for gateway_id, secret in rows:
            db.execute(
                "UPDATE gateways SET webhook_secret_sealed = ?, webhook_secret = NULL "
                "WHERE gateway_id = ?",
                [seal(gateway_id, bytes(secret)), gateway_id],
            )
    finally:
        db.execute(f"PRAGMA secure_delete = {int(before)}")
    return len(rows)


def webhook_status(db: Database, gateway_id: str) -> WebhookStatus | None:
    row = db.execute(
        "SELECT g.gateway_id, g.webhook_url, COALESCE(c.delivered_through, 0), "
        "COALESCE(c.failures, 0), c.last_error, c.last_attempt_at "
        "FROM gateways g LEFT JOIN webhook_cursors c ON c.gateway_id = g.gateway_id "
        "WHERE g.gateway_id = ? AND g.webhook_url IS NOT NULL",
        [gateway_id],
    ).fetchone()
    return None if row is None else WebhookStatus(*row)


def pending_webhooks(db: Database, limit: int) -> list[str]:
    """Gateways with a webhook and at least one signal past their cursor (one probe of the
    signals (gateway, signal_id) index per gateway with a webhook)."""
    rows = db.execute(
        "SELECT g.gateway_id FROM gateways g "
        "LEFT JOIN webhook_cursors c ON c.gateway_id = g.gateway_id "
        "WHERE g.webhook_url IS NOT NULL AND EXISTS (SELECT 1 FROM signals s "
        "WHERE s.gateway = g.gateway_id AND s.signal_id > COALESCE(c.delivered_through, 0)) "
        "ORDER BY g.gateway_id LIMIT ?",
        [limit],
    ).fetchall()
    return [r[0] for r in rows]


def record_delivery(db: Database, gateway_id: str, signal_id: int, now: float) -> None:
    """The webhook acknowledged ``signal_id``: the cursor only moves forward."""
    db.execute(
        "UPDATE webhook_cursors SET delivered_through = MAX(delivered_through, ?), failures = 0, "
        "last_error = NULL, last_attempt_at = ?, updated_at = ? WHERE gateway_id = ?",
        [signal_id, now, now, gateway_id],
    )


def record_failure(db: Database, gateway_id: str, error: str, now: float) -> int:
    """A failed attempt (kept for the gateway to see); returns the consecutive failures."""
    db.execute(
        "UPDATE webhook_cursors SET failures = failures + 1, last_error = ?, "
        "last_attempt_at = ?, updated_at = ? WHERE gateway_id = ?",
        [error[:500], now, now, gateway_id],
    )
    row = db.execute(
        "SELECT failures FROM webhook_cursors WHERE gateway_id = ?", [gateway_id]
    ).fetchone()
    return 0 if row is None else int(row[0])
