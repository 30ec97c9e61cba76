"""Single-use attestation nonces with a time to live (RFC 9334 §10 freshness by nonce).

Nonces live in memory, not in SQL (notes/attestation.md §4: no database round trip per
challenge): a restart forgets outstanding challenges, which only makes devices ask again. Each
nonce is bound to the device it was issued for and is consumed by its first use, whether the
evidence then passes or not, so a replay always fails. A device holds at most
``per_device`` open challenges: asking for one more retires its oldest, so one chatty (or
hostile) caller cannot fill the book that every other device shares.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from .errors import ServiceError

__all__ = ["Challenge", "NonceBook", "NonceRejected", "TooManyChallenges"]

NONCE_BYTES = 32


class NonceRejected(ServiceError):
    status, problem, title = 422, "evidence-not-fresh", "Evidence is not fresh"


class TooManyChallenges(ServiceError):
    status, problem, title = 503, "too-many-challenges", "Too many outstanding challenges"


@dataclass(frozen=True)
class Challenge:
    nonce: bytes
    device_id: str
    issued_to: str  # token id of the caller that asked
    expires_at: float


class NonceBook:
    def __init__(
        self,
        ttl: float = 120.0,
        capacity: int = 100_000,
        randbytes: Callable[[int], bytes] = secrets.token_bytes,
        per_device: int = 8,
    ) -> None:
        self.ttl = ttl
        self.capacity = capacity
        self.per_device = per_device
        self._randbytes = randbytes
        self._open: dict[bytes, Challenge] = {}
        self._by_device: dict[str, deque[bytes]] = {}

    def __len__(self) -> int:
        return len(self._open)

    def _expire(self, now: float) -> None:
        for nonce in [n for n, c in self._open.items() if c.expires_at <= now]:
            self._forget(nonce)

    def _forget(self, nonce: bytes) -> None:
        challenge = self._open.pop(nonce)
        queue = self._by_device[challenge.device_id]
        queue.remove(nonce)
        if not queue:
            del self._by_device[challenge.device_id]

    def issue(self, device_id: str, issued_to: str, now: float) -> Challenge:
        mine = self._by_device.get(device_id)
        if mine is not None and len(mine) >= self.per_device:
            self._forget(mine[0])  # the device's oldest open challenge
        if len(self._open) >= self.capacity:
            self._expire(now)
            if len(self._open) >= self.capacity:
                raise TooManyChallenges("too many challenges outstanding; retry shortly")
        challenge = Challenge(self._randbytes(NONCE_BYTES), device_id, issued_to, now + self.ttl)
        self._open[challenge.nonce] = challenge
        self._by_device.setdefault(device_id, deque()).append(challenge.nonce)
        return challenge

    def consume(self, nonce: bytes, device_id: str, now: float) -> Challenge:
        """Take the nonce out of the book (single use) or raise NonceRejected. A nonce shown
        for the wrong device stays open for its own device (it cannot be burnt by others)."""
        challenge = self._open.get(nonce)
        if challenge is None:
            raise NonceRejected("unknown, already used or expired nonce: ask for a new challenge")
        if challenge.device_id != device_id:
            raise NonceRejected("this nonce was issued for another device")
        self._forget(nonce)
        if challenge.expires_at <= now:
            raise NonceRejected("the challenge expired: ask for a new one")
        return challenge
