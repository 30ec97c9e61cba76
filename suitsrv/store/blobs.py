"""Content-addressed blob files: ``blobs/ab/abcdef...`` named by their SHA-256.

A blob is written to ``blobs/tmp/``, hashed on the way, fsynced, checked against the digest it
was announced under, renamed into place and its directory fsynced. Only then may a database row
point at it, so a row never names a blob that a crash could lose, and an interrupted upload
leaves only a temporary file, removed at the next start.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import hmac
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

from suitsrv.errors import InsufficientStorage, InvalidRequest, PayloadTooLarge
from suitsrv.files import fsync_dir

__all__ = ["BlobStore", "is_sha256_hex"]

_HEX64: Final = re.compile(r"[0-9a-f]{64}")


def is_sha256_hex(text: str) -> bool:
    return bool(_HEX64.fullmatch(text))


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)

    def clean_temporary(self) -> int:
        """Remove what interrupted writes left behind; returns how many files."""
        removed = 0
        for leftover in self.tmp.iterdir():
            leftover.unlink(missing_ok=True)
            removed += 1
        return removed

    def path(self, sha256: str) -> Path:
        if not is_sha256_hex(sha256):
            raise InvalidRequest(f"{sha256!r} is not a lowercase hex SHA-256")
        return self.root / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    async def write(
        self, sha256: str, chunks: AsyncIterator[bytes], *, max_size: int
    ) -> tuple[int, bool]:
        """Store the stream under ``sha256``; returns (size, created). Raises InvalidRequest when
        the content does not hash to ``sha256``, PayloadTooLarge past ``max_size`` and
        InsufficientStorage when the disk is full; nothing stays visible in any of these cases.
        """
        final = self.path(sha256)
        loop = asyncio.get_running_loop()
        fd, tmp_name = await loop.run_in_executor(None, self._open_temp)
        tmp = Path(tmp_name)
        digest = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as fh:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > max_size:
                        raise PayloadTooLarge(f"payload exceeds the limit of {max_size} bytes")
                    digest.update(chunk)
                    await loop.run_in_executor(None, fh.write, chunk)
                await loop.run_in_executor(None, self._sync, fh)
            if not hmac.compare_digest(digest.hexdigest(), sha256):
                raise InvalidRequest(
                    f"content hashes to {digest.hexdigest()}, not to {sha256}",
                    got=digest.hexdigest(),
                )
            created = await loop.run_in_executor(None, self._publish, tmp, final)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise InsufficientStorage("no space left to store the payload") from exc
            raise
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return size, created

    def _open_temp(self) -> tuple[int, str]:
        import tempfile

        return tempfile.mkstemp(dir=self.tmp, prefix="upload-")

    @staticmethod
    def _sync(fh: object) -> None:
        fh.flush()  # type: ignore[attr-defined]
        os.fsync(fh.fileno())  # type: ignore[attr-defined]

    @staticmethod
    def _publish(tmp: Path, final: Path) -> bool:
        final.parent.mkdir(exist_ok=True)
        if final.exists():  # content-addressed: the same name is the same bytes
            tmp.unlink()
            return False
        os.replace(tmp, final)
        fsync_dir(final.parent)
        return True
