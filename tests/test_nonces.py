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
    # The failed attempt consumed it: a replay by the right device fails too.
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
