"""Configuration vault crypto: round trip, and every alteration refused."""

from __future__ import annotations

import dataclasses
import stat
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from suitsrv.errors import PayloadTooLarge
from suitsrv.files import create_private_file
from suitsrv.vault import (
    VaultError,
    associated_data,
    load_or_create_master_key,
    open_backup,
    seal_stream,
)

from .conftest import examples

MASTER = bytes(range(32))


async def _chunks(data: bytes, size: int = 7) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def test_round_trip_and_binding() -> None:
    aad = associated_data("dev-1", 3)
    sealed = await seal_stream(MASTER, _chunks(b"wifi=home\npsk=secret\n"), aad=aad, limit=100)
    assert sealed.size == 21 and b"secret" not in sealed.ciphertext
    assert open_backup(MASTER, sealed, aad=aad) == b"wifi=home\npsk=secret\n"
    with pytest.raises(VaultError):
        open_backup(MASTER, sealed, aad=associated_data("dev-2", 3))  # another device's row
    with pytest.raises(VaultError):
        open_backup(MASTER, sealed, aad=associated_data("dev-1", 2))  # another version
    with pytest.raises(VaultError):
        open_backup(bytes(32), sealed, aad=aad)  # another master key


@pytest.mark.parametrize("field", ["wrapped_key", "nonce", "ciphertext"])
async def test_any_altered_byte_is_refused(field: str) -> None:
    aad = associated_data("d", 1)
    sealed = await seal_stream(MASTER, _chunks(b"x" * 50), aad=aad, limit=100)
    value = bytearray(getattr(sealed, field))
    value[len(value) // 2] ^= 1
    with pytest.raises(VaultError):
        altered = dataclasses.replace(sealed, **{field: bytes(value)})  # type: ignore[arg-type]
        open_backup(MASTER, altered, aad=aad)


async def test_size_limit() -> None:
    with pytest.raises(PayloadTooLarge):
        await seal_stream(MASTER, _chunks(b"x" * 101), aad=b"", limit=100)


@settings(max_examples=examples(30))
@given(st.binary(max_size=2000))
async def test_any_content(data: bytes) -> None:
    sealed = await seal_stream(MASTER, _chunks(data, 333), aad=b"a", limit=4096)
    assert open_backup(MASTER, sealed, aad=b"a") == data


def test_master_key_file(tmp_path: Path) -> None:
    path = tmp_path / "vault" / "master.key"
    key = load_or_create_master_key(path)
    assert len(key) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_master_key(path) == key
    assert [p.name for p in path.parent.iterdir()] == ["master.key"]  # no temporary file left


def test_a_key_file_is_created_once_and_never_replaced(tmp_path: Path) -> None:
    """Two creators racing (threads here, processes alike): both end with the one key the file
    holds, so nothing is ever sealed under a key that the other's rename would replace."""
    path = tmp_path / "vault" / "master.key"
    start = threading.Barrier(8)

    def create() -> bytes:
        start.wait()
        return load_or_create_master_key(path)

    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(lambda _: create(), range(8)))
    assert keys == {bytes.fromhex(path.read_text())}
    assert create_private_file(path, b"other") == path.read_bytes()  # exists: kept as it is
