"""Bearer-token principals: operator, vendor, device, gateway (DESIGN.md "Who uses it").

A token is ``sst_<id>_<secret>``: 12 hex characters naming it (safe to log and to revoke by)
and 32 random bytes. Only SHA-256 of the whole token is stored; the secret is high-entropy, so
a fast hash is enough and a database leak yields nothing usable. No default credentials exist:
the first operator token is created by ``suitsrv admin init`` (or the first ``serve``) and
shown once.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from .errors import Forbidden, Unauthorized
from .store import Role, Store, TokenRecord

__all__ = [
    "Principal",
    "TokenCache",
    "authenticate",
    "hash_token",
    "issue_token",
    "new_token",
    "require",
]

_TOKEN: Final = re.compile(r"sst_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's id, role and scope (vendor name, device id or gateway id)."""

    token_id: str
    role: Role
    scope: str


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def new_token(randbytes: Callable[[int], bytes] = secrets.token_bytes) -> tuple[str, str]:
    """A fresh (token, token_id). ``randbytes`` is injectable for deterministic tests."""
    token_id = randbytes(6).hex()
    secret = base64.urlsafe_b64encode(randbytes(32)).rstrip(b"=").decode()
    return f"sst_{token_id}_{secret}", token_id


async def issue_token(
    store: Store, role: Role, scope: str, *, label: str = "", now: float
) -> tuple[str, TokenRecord]:
    """Create a credential; the returned token string exists nowhere else afterwards."""
    token, token_id = new_token()
    record = TokenRecord(token_id, hash_token(token), role, scope, label, now)
    await store.add_token(record)
    return token, record


class TokenCache:
    """Active tokens already looked up, so a device's poll costs no token read, however rarely
    it polls. Kept coherent rather than aged out:

    * a revocation through this server removes the entry at once (``forget``);
    * any other revocation or removal (``suitsrv admin token revoke`` in another process) moves
      the credential generation (migration 8), which the server reads every second
      (``watch_credentials``): a new value empties the cache (``sync``);
    * a lookup whose read began before a ``forget`` or ``sync`` does not fill the cache with
      what it read (``epoch``), so a revoked token cannot come back from an older read;
    * nothing is served from it more than ``max_age`` seconds after the last ``sync`` (a
      watcher whose read queues behind busy readers cannot stretch the revocation delay).

    Bounded: emptied when full."""

    def __init__(
        self,
        capacity: int = 200_000,
        max_age: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = capacity
        self.max_age = max_age
        self.generation: int | None = None  # the credential generation last synced with
        self.epoch = 0  # moves on every forget and flush
        self._clock = clock
        self._synced_at = -math.inf
        self._by_hash: dict[bytes, TokenRecord] = {}
        self._by_id: dict[str, bytes] = {}

    def __len__(self) -> int:
        return len(self._by_hash)

    def get(self, token_hash: bytes) -> TokenRecord | None:
        if self._clock() - self._synced_at > self.max_age:
            if self._by_hash:
                self._flush()
            return None
        return self._by_hash.get(token_hash)

    def put(self, record: TokenRecord, epoch: int) -> None:
        """Keep ``record``, read when the cache was at ``epoch``, unless it moved since."""
        if epoch != self.epoch:
            return
        if len(self._by_hash) >= self.capacity:
            self._flush()
        self._by_hash[record.token_hash] = record
        self._by_id[record.token_id] = record.token_hash

    def forget(self, token_id: str) -> None:
        self.epoch += 1
        token_hash = self._by_id.pop(token_id, None)
        if token_hash is not None:
            self._by_hash.pop(token_hash, None)

    def sync(self, generation: int | None) -> None:
        """Empty the cache unless ``generation`` is the one last seen (None: unknown)."""
        if generation is None or generation != self.generation:
            self._flush()
        self.generation = generation
        if generation is not None:
            self._synced_at = self._clock()

    def _flush(self) -> None:
        self.epoch += 1
        self._by_hash.clear()
        self._by_id.clear()


async def authenticate(
    store: Store, authorization: str | None, cache: TokenCache | None = None
) -> Principal:
    """Resolve an ``Authorization: Bearer`` header to a principal or raise Unauthorized."""
    if not authorization:
        raise Unauthorized("missing Authorization: Bearer token", headers=_CHALLENGE)
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not _TOKEN.fullmatch(token):
        raise Unauthorized("malformed bearer token", headers=_CHALLENGE)
    token_hash = hash_token(token)
    record = cache.get(token_hash) if cache is not None else None
    if record is None:
        epoch = cache.epoch if cache is not None else 0
        record = await store.token_by_hash(token_hash)
        if record is None or record.revoked_at is not None:
            raise Unauthorized("unknown or revoked token", headers=_CHALLENGE)
        if cache is not None:
            cache.put(record, epoch)
    return Principal(record.token_id, record.role, record.scope)


_CHALLENGE: Final = {"WWW-Authenticate": 'Bearer realm="suitsrv"'}


def require(principal: Principal, *roles: Role) -> None:
    """Raise Forbidden unless the principal has one of ``roles``."""
    if principal.role not in roles:
        allowed = ", ".join(str(r) for r in roles)
        raise Forbidden(f"this endpoint is for {allowed} credentials, not {principal.role}")
