"""The agent's state folder: two install slots, the marker naming the one that boots, the
compact event log of the last boot, and small records (enrolled AK, refused manifests, last
backup, a report not yet delivered). Layout::

    STATE/current               "a" or "b" (absent: "a", the factory slot)
    STATE/slot-a/, slot-b/      <component>.img per component, manifest.suit (the envelope)
    STATE/eventlog.cbor         compact event log of the last boot (docs/attestation.md)
    STATE/downloads/<sha>.part  payloads being downloaded (kept across runs: resume)
    STATE/enrollment.json       {"ak_public": base64 TPM2B_PUBLIC, "enrolled_at": time}
    STATE/refused.json          {"anchor": fingerprint, "digests": [manifest digests]}
    STATE/backup.json           {"sha256": hex, "version": n} of the last configuration backup
    STATE/pending-report.cbor   a SUIT report the server has not acknowledged yet

Every file is replaced atomically (temporary file, fsync, rename, fsync of the folder), and
flipping ``current`` is the commit point of an install: a crash before it boots the old slot.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Final
from urllib.parse import quote

__all__ = ["SLOTS", "DeviceState", "component_file", "write_atomic"]

SLOTS: Final = ("a", "b")
_REFUSED_KEPT: Final = 32


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def component_file(component_id: tuple[bytes, ...]) -> str:
    """A file name for a SUIT component id: each part percent-encoded (readable for text ids,
    unambiguous for any bytes), joined by commas."""
    name = ",".join(quote(part, safe="") for part in component_id) or "component"
    return f"{name}.img"


class DeviceState:
    """The files under the state folder; created on first use."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, name: str) -> Path:
        return self.root / name

    def _read(self, name: str) -> bytes | None:
        try:
            return self._path(name).read_bytes()
        except FileNotFoundError:
            return None

    def _json(self, name: str) -> Mapping[str, object]:
        data = self._read(name)
        if data is None:
            return {}
        try:
            value = json.loads(data)
        except ValueError:
            return {}  # a record we cannot read is one we do not have
        return value if isinstance(value, dict) else {}

    def _write_json(self, name: str, value: Mapping[str, object]) -> None:
        write_atomic(self._path(name), json.dumps(value, sort_keys=True).encode())

    # --- slots ---------------------------------------------------------------------------

    def current_slot(self) -> str:
        data = self._read("current")
        slot = data.decode("ascii", "replace").strip() if data else "a"
        return slot if slot in SLOTS else "a"

    def inactive_slot(self) -> str:
        return "b" if self.current_slot() == "a" else "a"

    def slot_dir(self, slot: str) -> Path:
        return self._path(f"slot-{slot}")

    def image_path(self, slot: str, component_id: tuple[bytes, ...]) -> Path:
        return self.slot_dir(slot) / component_file(component_id)

    def installed_envelope(self, slot: str | None = None) -> bytes | None:
        """The envelope installed in ``slot`` (default: the current one), if any."""
        return self._read(f"slot-{slot or self.current_slot()}/manifest.suit")

    def clear_slot(self, slot: str) -> Path:
        """Empty ``slot`` for a new install and return its folder."""
        folder = self.slot_dir(slot)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        return folder

    def commit_slot(self, slot: str, envelope: bytes) -> None:
        """Write the slot's manifest, then make it the one that boots (the commit point)."""
        write_atomic(self.slot_dir(slot) / "manifest.suit", envelope)
        write_atomic(self._path("current"), slot.encode())

    # --- boot ----------------------------------------------------------------------------

    def event_log(self) -> bytes | None:
        return self._read("eventlog.cbor")

    def save_event_log(self, log: bytes) -> None:
        write_atomic(self._path("eventlog.cbor"), log)

    # --- downloads -----------------------------------------------------------------------

    def partial_path(self, sha256_hex: str) -> Path:
        folder = self._path("downloads")
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{sha256_hex}.part"

    # --- records -------------------------------------------------------------------------

    def enrolled_ak(self) -> bytes | None:
        value = self._json("enrollment.json").get("ak_public")
        return base64.b64decode(value) if isinstance(value, str) else None

    def save_enrollment(self, ak_public: bytes, now: float) -> None:
        record = {"ak_public": base64.b64encode(ak_public).decode(), "enrolled_at": now}
        self._write_json("enrollment.json", record)

    def refused(self, anchor: str) -> list[str]:
        """Manifest digests refused under the vendor key with fingerprint ``anchor`` (a new
        key forgets them: the refusal may have been the old key's)."""
        record = self._json("refused.json")
        digests = record.get("digests")
        if record.get("anchor") != anchor or not isinstance(digests, list):
            return []
        return [d for d in digests if isinstance(d, str)]

    def add_refused(self, anchor: str, digest: str) -> None:
        digests = [d for d in self.refused(anchor) if d != digest] + [digest]
        self._write_json("refused.json", {"anchor": anchor, "digests": digests[-_REFUSED_KEPT:]})

    def last_backup(self) -> str | None:
        value = self._json("backup.json").get("sha256")
        return value if isinstance(value, str) else None

    def save_backup(self, sha256_hex: str, version: int) -> None:
        self._write_json("backup.json", {"sha256": sha256_hex, "version": version})

    def pending_report(self) -> bytes | None:
        return self._read("pending-report.cbor")

    def save_pending_report(self, report: bytes | None) -> None:
        path = self._path("pending-report.cbor")
        if report is None:
            path.unlink(missing_ok=True)
        else:
            write_atomic(path, report)
