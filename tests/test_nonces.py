"""Attestation nonces: single use, bound to a device, expiring, bounded."""

from __future__ import annotations

import pytest

from suitsrv.nonces import NonceBook, NonceRejected, TooManyChallenges


def test_single_use_and_bound_to_the_device() -> None:
    book = NonceBook(ttl=60)
    challenge = book.issue("dev-1", "tok", now=100.0)
    assert len(challenge.nonce) == 32
    with pytest.raises(NonceRejected, match="another device"):
        book.consume(challenge.nonce, "dev-2", now=101.0)
    # Another device cannot burn it: the device it was issued to still uses it, once.
    assert book.consume(challenge.nonce, "dev-1", now=101.0).device_id == "dev-1"
    with pytest.raises(NonceRejected, match="unknown, already used"):
        book.consume(challenge.nonce, "dev-1", now=101.0)
    fresh = book.issue("dev-1", "tok", now=100.0)
    assert book.consume(fresh.nonce, "dev-1", now=101.0).device_id == "dev-1"
    with pytest.raises(NonceRejected):
        book.consume(fresh.nonce, "dev-1", now=102.0)


def test_expiry_and_capacity() -> None:
    book = NonceBook(ttl=10, capacity=2)
    old = book.issue("d", "t", now=0.0)
    book.issue("d", "t", now=0.0)
    with pytest.raises(TooManyChallenges):
        book.issue("d", "t", now=5.0)
    assert book.issue("d", "t", now=11.0)  # expired ones are dropped to make room
    with pytest.raises(NonceRejected):
        book.consume(old.nonce, "d", now=11.0)


def test_one_device_cannot_fill_the_book() -> None:
    book = NonceBook(ttl=60, capacity=10, per_device=3)
    flood = [book.issue("chatty", "t", now=0.0) for _ in range(50)]
    assert len(book) == 3  # each new challenge retired the device's oldest
    for retired in flood[:-3]:
        with pytest.raises(NonceRejected, match="unknown"):
            book.consume(retired.nonce, "chatty", now=1.0)
    others = [book.issue(f"dev-{i}", "t", now=0.0) for i in range(7)]
    assert len(book) == 10
    assert book.consume(others[0].nonce, "dev-0", now=1.0).device_id == "dev-0"
    assert book.consume(flood[-1].nonce, "chatty", now=1.0).device_id == "chatty"
