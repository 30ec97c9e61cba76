"""Configuration vault crypto: AES-256-GCM per backup, its key wrapped by the master key.

Each backup gets a fresh 256-bit data key and 96-bit nonce; the ciphertext carries the GCM tag
and is bound, through the additional data, to the device and the backup's version, so a blob
cannot be replayed as another device's or another version's backup. The data key is stored
only wrapped (RFC 3394 AES key wrap) under the master key, which lives outside the database
(a file named in the configuration). Decryption checks integrity before returning a byte.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from .errors import PayloadTooLarge, ServiceError
from .files import create_private_file

__all__ = [
    "SealedBackup",
    "VaultError",
    "load_or_create_master_key",
    "open_backup",
    "open_secret",
    "seal_secret",
    "seal_stream",
]

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16


class VaultError(ServiceError):
    """A stored backup or sealed secret failed its integrity check (or the master key is not
    the one that sealed it): nothing of it is returned."""

    status, problem, title = 500, "backup-integrity", "Stored backup failed its integrity check"


@dataclass(frozen=True)
class SealedBackup:
    wrapped_key: bytes
    nonce: bytes
    ciphertext: bytes  # ciphertext || 16-byte GCM tag
    size: int  # plaintext bytes


def associated_data(device_id: str, version: int) -> bytes:
    return f"suitsrv-config-backup\x00{device_id}\x00{version}".encode()


async def seal_stream(
    master: bytes,
    chunks: AsyncIterator[bytes],
    *,
    aad: bytes,
    limit: int,
    randbytes: Callable[[int], bytes] = secrets.token_bytes,
) -> SealedBackup:
    """Encrypt a streamed body (at most ``limit`` plaintext bytes) under a fresh data key."""
    key, nonce = randbytes(KEY_BYTES), randbytes(NONCE_BYTES)
    encryptor = Cipher(algorithms.AES(key), modes.GCM(nonce)).encryptor()
    encryptor.authenticate_additional_data(aad)
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"configuration backup exceeds the limit of {limit} bytes")
        parts.append(encryptor.update(chunk))
    parts.append(encryptor.finalize())
    return SealedBackup(aes_key_wrap(master, key), nonce, b"".join(parts) + encryptor.tag, size)


def seal(
    master: bytes, plain: bytes, *, aad: bytes,
    randbytes: Callable[[int], bytes] = secrets.token_bytes,
) -> SealedBackup:  # fmt: skip
    """``seal_stream`` of a body already in memory (a reseal under other associated data)."""
    key, nonce = randbytes(KEY_BYTES), randbytes(NONCE_BYTES)
    encryptor = Cipher(algorithms.AES(key), modes.GCM(nonce)).encryptor()
    encryptor.authenticate_additional_data(aad)
    body = encryptor.update(plain) + encryptor.finalize()
    return SealedBackup(aes_key_wrap(master, key), nonce, body + encryptor.tag, len(plain))


def open_backup(master: bytes, sealed: SealedBackup, *, aad: bytes) -> bytes:
    """The plaintext, or VaultError when the key, nonce, data or binding were altered."""
    try:
        key = aes_key_unwrap(master, sealed.wrapped_key)
        body, tag = sealed.ciphertext[:-TAG_BYTES], sealed.ciphertext[-TAG_BYTES:]
        decryptor = Cipher(algorithms.AES(key), modes.GCM(sealed.nonce, tag)).decryptor()
        decryptor.authenticate_additional_data(aad)
        return decryptor.update(body) + decryptor.finalize()
    except (InvalidUnwrap, InvalidTag, ValueError) as exc:
        raise VaultError(
            "the stored data does not decrypt: altered, or another master key"
        ) from exc


_WRAPPED_BYTES = KEY_BYTES + 8  # RFC 3394 adds one 64-bit block


def seal_secret(master: bytes, secret: bytes, *, aad: bytes) -> bytes:
    """A small secret the service must use again (a webhook's HMAC key) as one opaque value:
    wrapped data key || nonce || ciphertext || tag, sealed as a backup is."""
    sealed = seal(master, secret, aad=aad)
    return sealed.wrapped_key + sealed.nonce + sealed.ciphertext


def open_secret(master: bytes, blob: bytes, *, aad: bytes) -> bytes:
    """The secret ``seal_secret`` sealed under the same master key and associated data, or
    VaultError."""
    head = _WRAPPED_BYTES + NONCE_BYTES
    if len(blob) < head + TAG_BYTES:
        raise VaultError("a sealed secret is too short to be one")
    body = blob[head:]
    sealed = SealedBackup(blob[:_WRAPPED_BYTES], blob[_WRAPPED_BYTES:head], body,
                          len(body) - TAG_BYTES)  # fmt: skip
    return open_backup(master, sealed, aad=aad)


def load_or_create_master_key(path: Path) -> bytes:
    """The 32-byte master key from ``path`` (hex), created 0600 on first use, durably (a key
    lost to a power loss would take every backup and webhook secret sealed under it along)."""
    if path.exists():
        key = bytes.fromhex(path.read_text().strip())
        if len(key) != KEY_BYTES:
            raise RuntimeError(f"{path} must hold {KEY_BYTES} bytes of hex")
        return key
    text = create_private_file(path, (secrets.token_bytes(KEY_BYTES).hex() + "\n").encode())
    return bytes.fromhex(text.decode().strip())
