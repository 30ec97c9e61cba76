"""Configuration vault, the service side: versioned device backups encrypted at rest
(suitsrv/vault.py), tagged with the lifecycle state they were written in, and restored only
where the lifecycle allows it (DESIGN.md "returning to service"; docs/service.md
"Configuration vault").

* A backup is streamed through ``seal_stream`` under a fresh data key; its version (bound into
  the GCM additional data) is checked and the row, its state tag and the ``backup`` timeline
  entry are written in one transaction, so a crash leaves the whole backup or none.
* Only backups written while ``new`` or ``nominal`` (``RESTORABLE_BACKUP_STATES``) are ever
  offered; the newest of them is the last one taken before the incident. Others are kept.
* Restore is served only in returning-to-service after an affirming verdict (``may_restore``).
  The device confirms what it applied and the *service* records ``config-restored``: the
  lifecycle lets no device cause that event, so the service causes it on the device's word
  about the version it was served (and the gateway still has to acknowledge reinstatement).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from . import devices
from .config import Config
from .errors import Conflict, InvalidRequest, NotFound, ServiceError
from .lifecycle import RESTORABLE_BACKUP_STATES, DeviceLifecycle, Event, State, may_restore
from .store import Backup, DeviceRecord, Store
from .store import backup_queries as bq
from .vault import (
    SealedBackup,
    VaultError,
    associated_data,
    load_or_create_master_key,
    open_backup,
    seal,
    seal_stream,
)

__all__ = [
    "BACKUP_LIMIT_BYTES",
    "RestoreNotAllowed",
    "RestoredConfig",
    "backups",
    "confirm_restore",
    "fetch_restore",
    "master_key",
    "master_key_path",
    "purge",
    "restorable_backup",
    "restore_needed",
    "store_backup",
]

log = logging.getLogger("suitsrv")

#: Largest configuration backup accepted, in plaintext bytes (a setting later).
BACKUP_LIMIT_BYTES: Final = 1 << 20


class RestoreNotAllowed(ServiceError):
    """The device's lifecycle does not allow a restore now (state or verdict)."""

    status, problem, title = 409, "restore-not-allowed", "Configuration restore not allowed"


@dataclass(frozen=True)
class RestoredConfig:
    version: int
    data: bytes


def master_key_path(config: Config) -> Path:
    """Where the vault's master key lives: ``[vault] key-file`` or DATA/vault/master.key."""
    return config.vault_key_file or config.data_dir / "vault" / "master.key"


# Loaded on first use and kept per path: the aiohttp app is frozen before the first request,
# so a lazily loaded key cannot go into an AppKey. The lock makes "create" happen once even
# when the first backups arrive together (two fresh keys would orphan one backup's data key).
_MASTER_KEYS: dict[Path, bytes] = {}
_MASTER_LOCK = threading.Lock()


def _load_master(path: Path) -> bytes:
    with _MASTER_LOCK:
        key = _MASTER_KEYS.get(path)
        if key is None:
            key = _MASTER_KEYS[path] = load_or_create_master_key(path)
        return key


async def master_key(config: Config) -> bytes:
    """The vault master key of ``config`` (file I/O off the event loop, once per path)."""
    path = master_key_path(config)
    key = _MASTER_KEYS.get(path)
    return key if key is not None else await asyncio.to_thread(_load_master, path)


async def store_backup(
    store: Store,
    config: Config,
    device_id: str,
    chunks: AsyncIterator[bytes],
    *,
    now: float,
    limit: int = BACKUP_LIMIT_BYTES,
    randbytes: Callable[[int], bytes] = secrets.token_bytes,
) -> Backup:
    """Encrypt the streamed backup and store it as the device's next version; the stored row.
    PayloadTooLarge past ``limit`` (nothing stored), Conflict once decommissioned."""
    master = await master_key(config)
    started_in = (await store.get_lifecycle(device_id)).state
    if started_in is State.DECOMMISSIONED:
        raise Conflict(f"device {device_id} is decommissioned; no backup is stored")
    version = await store.read(bq.next_version, device_id)
    aad = associated_data(device_id, version)
    sealed = await seal_stream(master, chunks, aad=aad, limit=limit, randbytes=randbytes)
    if sealed.size == 0:
        raise InvalidRequest("empty configuration backup")

    def reseal(taken: int) -> SealedBackup:
        # A concurrent backup of this device committed ``version`` meanwhile. The version is in
        # the additional data, so the body is sealed again under the next one, inside the
        # write's transaction (bounded by ``limit``; only on such a race).
        plain = open_backup(master, sealed, aad=aad)
        return seal(master, plain, aad=associated_data(device_id, taken), randbytes=randbytes)

    return await store.write(bq.add_backup, device_id, version, sealed, started_in, now, reseal)


async def restorable_backup(store: Store, device_id: str) -> Backup | None:
    """The backup a restore serves: the newest written while new or nominal, i.e. the last one
    taken before the current incident. Backups written in any other state are never offered."""
    return await store.read(bq.newest_in_states, device_id, RESTORABLE_BACKUP_STATES)


async def restore_needed(store: Store, device_id: str) -> bool:
    """Whether there is a backup to restore (when not, the service applies ``config-restored``
    itself after the affirming verdict: "restored, or there was none")."""
    return await restorable_backup(store, device_id) is not None


def _check_may_restore(device_id: str, lc: DeviceLifecycle) -> None:
    if may_restore(lc):
        return
    if lc.state is not State.RETURNING_TO_SERVICE:
        why = f"device {device_id} is {lc.state}; a restore is served only in returning-to-service"
    else:
        why = f"device {device_id} has no affirming attestation verdict for its firmware yet"
    raise RestoreNotAllowed(why, state=str(lc.state), verdict_affirmed=lc.verdict_affirmed)


async def _offered(store: Store, device_id: str) -> Backup:
    _check_may_restore(device_id, await store.get_lifecycle(device_id))
    backup = await restorable_backup(store, device_id)
    if backup is None:
        raise NotFound(f"device {device_id} has no backup taken while new or nominal")
    return backup


async def fetch_restore(store: Store, config: Config, device_id: str) -> RestoredConfig:
    """The configuration to restore, decrypted and integrity-checked: RestoreNotAllowed (409)
    outside ``may_restore``, NotFound without a restorable backup, VaultError (500, nothing
    returned) when the stored blob or its wrapped key was altered."""
    backup = await _offered(store, device_id)
    sealed = SealedBackup(backup.wrapped_key, backup.nonce, backup.ciphertext, backup.size)
    try:
        data = open_backup(
            await master_key(config), sealed, aad=associated_data(device_id, backup.version)
        )
        if len(data) != backup.size:
            raise VaultError(f"backup {backup.version} decrypts to an unexpected size")
    except VaultError:
        log.warning("config backup %s/%s failed its integrity check", device_id, backup.version)
        raise
    return RestoredConfig(backup.version, data)


async def confirm_restore(
    store: Store, config: Config, device: DeviceRecord, version: int, *, now: float
) -> DeviceLifecycle:
    """The device applied ``version`` (the backup it was served): record ``config-restored``
    as the service and mark the backup restored; the lifecycle after. Conflict when
    ``version`` is not the backup on offer."""
    offered = await _offered(store, device.device_id)
    if offered.version != version:
        raise Conflict(
            f"version {version} is not the backup offered for restore ({offered.version})",
            offered=offered.version,
        )
    _, after = await devices.record(
        store, config, device, Event.CONFIG_RESTORED, role=devices.SERVICE,
        actor=device.device_id, now=now, detail={"version": version},
    )  # fmt: skip
    # After the event: a refused event must not leave the backup marked restored.
    await store.write(bq.mark_restored, device.device_id, version, now)
    return after


async def backups(store: Store, device_id: str) -> list[Backup]:
    """Every stored backup of the device (still sealed), oldest first."""
    return await store.read(bq.backups_of, device_id)


async def purge(store: Store, device_id: str) -> int:
    """Delete every backup of the device (decommissioning); how many there were."""
    return await store.write(bq.delete_backups, device_id)
