"""The configuration file and the service's vault (docs/service.md "Configuration vault"):
``PUT /v1/device/config`` backs it up; after an incident, once the device runs firmware the
verifier affirmed, ``GET /v1/device/config`` serves the last backup taken before the incident,
the agent writes it atomically and confirms with ``POST /v1/device/config/restored``."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from pathlib import Path

from .client import Context, check_json, raise_problem
from .errors import AgentConfigError, AgentError, ServerError
from .state import write_atomic

__all__ = ["BackupResult", "RestoreResult", "backup_config", "backup_if_changed", "restore_config"]

_CONFIG_TYPE = "application/octet-stream"
_VERSION_HEADER = "Suitsrv-Config-Version"


@dataclass(frozen=True)
class BackupResult:
    version: int
    size: int
    restorable: bool
    lifecycle_state: str


@dataclass(frozen=True)
class RestoreResult:
    """``version`` is None when the service holds no backup to restore."""

    version: int | None
    lifecycle_state: str | None = None


def _path(ctx: Context) -> Path:
    if ctx.config.config_file is None:
        raise AgentConfigError("no config-file in the agent configuration")
    return ctx.config.config_file


async def backup_config(ctx: Context) -> BackupResult:
    """PUT the configuration file as the device's next backup."""
    path = _path(ctx)
    try:
        data = await asyncio.to_thread(path.read_bytes)
    except OSError as exc:
        raise AgentError(f"backup: cannot read {path}: {exc.strerror}") from exc
    async with ctx.session.put(ctx.config.url("/v1/device/config"), data=data,
                               headers={"Content-Type": _CONFIG_TYPE}) as resp:  # fmt: skip
        body = await check_json(resp, "backup", 201)
    try:
        result = BackupResult(int(body["version"]), int(body["size"]), bool(body["restorable"]),
                              str(body["state"]))  # fmt: skip
    except (KeyError, TypeError, ValueError) as exc:
        raise ServerError("backup", 201, "", f"unexpected answer {body!r}") from exc
    ctx.state.save_backup(hashlib.sha256(data).hexdigest(), result.version)
    kept = ("restorable" if result.restorable
            else f"kept, never restored: taken while {result.lifecycle_state}")  # fmt: skip
    ctx.say(f"backup: {path.name} stored as version {result.version} "
            f"({result.size} bytes, {kept})")  # fmt: skip
    return result


async def backup_if_changed(ctx: Context) -> BackupResult | None:
    """Back up when the file differs from the last backup. A refusal is said, not raised:
    behind the quarantine pinhole backups are refused by design."""
    path = ctx.config.config_file
    if path is None or not path.is_file():
        return None
    digest = hashlib.sha256(await asyncio.to_thread(path.read_bytes)).hexdigest()
    if digest == ctx.state.last_backup():
        return None
    try:
        return await backup_config(ctx)
    except ServerError as exc:
        ctx.say(f"backup: not now: {exc.detail or exc}")
        return None


async def restore_config(ctx: Context) -> RestoreResult:
    """Fetch the backup on offer, replace the configuration file with it, confirm."""
    path = _path(ctx)
    url = ctx.config.url
    async with ctx.session.get(url("/v1/device/config")) as resp:
        if resp.status == 404:
            ctx.say("restore: the service holds no backup to restore")
            return RestoreResult(None)
        if resp.status != 200:
            await raise_problem(resp, "restore")
        data = await resp.read()
        version_text = resp.headers.get(_VERSION_HEADER, "")
    if not version_text.isdigit():
        raise ServerError("restore", 200, "", f"no {_VERSION_HEADER} header")
    version = int(version_text)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    await asyncio.to_thread(write_atomic, path, data, mode)
    async with ctx.session.post(url("/v1/device/config/restored"),
                                json={"version": version}) as resp:  # fmt: skip
        body = await check_json(resp, "restore confirmation", 200)
    ctx.state.save_backup(hashlib.sha256(data).hexdigest(), version)
    ctx.say(f"restore: version {version} written to {path.name} ({len(data)} bytes) and "
            f"confirmed; lifecycle state {body.get('state')}")  # fmt: skip
    return RestoreResult(version, str(body.get("state")))
