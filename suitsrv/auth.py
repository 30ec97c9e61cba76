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
import re
import secrets
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
    """Recently seen active tokens, so a device polling every few seconds does not cost a
    database read per request. An entry lives ``ttl`` seconds; revocation through this server
    removes it at once, revocation by ``suitsrv admin`` (another process) within ``ttl``."""

    def __init__(self, ttl: float = 5.0, capacity: int = 200_000) -> None:
        self.ttl = ttl
        self.capacity = capacity
        self._by_hash: dict[bytes, tuple[TokenRecord, float]] = {}

    def get(self, token_hash: bytes, now: float) -> TokenRecord | None:
        entry = self._by_hash.get(token_hash)
        if entry is None or entry[1] <= now:
            return None
        return entry[0]

    def put(self, record: TokenRecord, now: float) -> None:
        if len(self._by_hash) >= self.capacity:
            self._by_hash.clear()
        self._by_hash[record.token_hash] = (record, now + self.ttl)

    def forget(self, token_id: str) -> None:
        for token_hash in [h for h, (r, _) in self._by_hash.items() if r.token_id == token_id]:
            del self._by_hash[token_hash]


async def authenticate(
    store: Store,
    authorization: str | None,
    cache: TokenCache | None = None,
    now: float = 0.0,
) -> Principal:
    """Resolve an ``Authorization: Bearer`` header to a principal or raise Unauthorized."""
    if not authorization:
        raise Unauthorized("missing Authorization: Bearer token", headers=_CHALLENGE)
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not _TOKEN.fullmatch(token):
        raise Unauthorized("malformed bearer token", headers=_CHALLENGE)
    token_hash = hash_token(token)
    record = cache.get(token_hash, now) if cache is not None else None
    if record is None:
        record = await store.token_by_hash(token_hash)
        if record is None or record.revoked_at is not None:
            raise Unauthorized("unknown or revoked token", headers=_CHALLENGE)
        if cache is not None:
            cache.put(record, now)
    return Principal(record.token_id, record.role, record.scope)


_CHALLENGE: Final = {"WWW-Authenticate": 'Bearer realm="suitsrv"'}


def require(principal: Principal, *roles: Role) -> None:
    """Raise Forbidden unless the principal has one of ``roles``."""
    if principal.role not in roles:
        allowed = ", ".join(str(r) for r in roles)
        raise Forbidden(f"this endpoint is for {allowed} credentials, not {principal.role}")
