"""EAR claims-sets (attest.ear_claims): the AR4SI tiers and the status rule, and the reader's
refusals for both naming generations and both encodings (JSON, CBOR)."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attest.ear_claims import (
    EAR_PROFILE,
    Status,
    Submod,
    TrustVector,
    build_ear_cbor,
    build_ear_json,
    parse_ear_claims,
    status_of,
    tier_of,
)
from attest.errors import DecodeError

from .token_helpers import JSON_VALUES, sample_ear

# ---------------------------------------------------------------- AR4SI tiers and status


@pytest.mark.parametrize(
    ("value", "tier"),
    [
        (0, Status.NONE),
        (1, Status.NONE),
        (-1, Status.NONE),
        (2, Status.AFFIRMING),
        (31, Status.AFFIRMING),
        (-2, Status.AFFIRMING),
        (-32, Status.AFFIRMING),
        (32, Status.WARNING),
        (95, Status.WARNING),
        (-33, Status.WARNING),
        (-96, Status.WARNING),
        (96, Status.CONTRAINDICATED),
        (99, Status.CONTRAINDICATED),
        (127, Status.CONTRAINDICATED),
        (-97, Status.CONTRAINDICATED),
        (-128, Status.CONTRAINDICATED),
    ],
)
def test_tiers(value: int, tier: Status) -> None:
    assert tier_of(value) is tier


def test_status_is_never_better_than_the_worst_claim() -> None:
    assert status_of(TrustVector()) is Status.NONE
    assert status_of(TrustVector(executables=2, hardware=2)) is Status.AFFIRMING
    assert status_of(TrustVector(executables=33, hardware=2)) is Status.WARNING
    assert status_of(TrustVector.every(99)) is Status.CONTRAINDICATED
    assert [s.tier for s in Status] == [0, 2, 32, 96]
    with pytest.raises(RuntimeError, match="better than the vector"):
        Submod(Status.AFFIRMING, TrustVector(executables=96))
    with pytest.raises(RuntimeError, match="better than the vector"):
        Submod(Status.WARNING, TrustVector(executables=96))
    Submod(Status.CONTRAINDICATED, TrustVector(executables=2))  # worse is allowed
    Submod(Status.NONE, TrustVector(executables=96))  # none claims nothing
    with pytest.raises(RuntimeError, match="int8"):
        TrustVector(executables=128)
    with pytest.raises(RuntimeError, match="shadow"):
        Submod(Status.NONE, extra={"ear.status": "affirming"})


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({}, "eat_profile"),
        ({"eat_profile": "p"}, "iat"),
        ({"eat_profile": "p", "iat": 1}, "verifier_id"),
        (
            {"eat_profile": "p", "iat": 1, "ear_verifier_id": {"developer": "d", "build": "b"}},
            "submods",
        ),
        ({"submods": {"s": {}}}, "no status"),
        ({"submods": {"s": {"ear_status": "affirming", "ear.status": "affirming"}}}, "both"),
        ({"submods": {"s": {"ear_status": "great"}}}, "trust tier"),
        ({"submods": {"s": {"ear_status": 2}}}, "trust tier"),
        (
            {
                "submods": {
                    "s": {
                        "ear_status": "affirming",
                        "ear_trustworthiness_vector": {"executables": 96},
                    }
                }
            },
            "better",
        ),
        (
            {"submods": {"s": {"ear_status": "none", "ear_trustworthiness_vector": {"x": 1}}}},
            "unknown",
        ),
        (
            {
                "submods": {
                    "s": {"ear_status": "none", "ear_trustworthiness_vector": {"hardware": 200}}
                }
            },
            "int8",
        ),
        ({"submods": {"s": {"ear_status": "none", "ear_appraisal_policy_ids": "p"}}}, "policy"),
        ({"eat_nonce": "abc"}, "nonce"),
        ({"eat_nonce": "AAAAAAAAAAA+"}, "base64url"),
    ],
)
def test_reader_rules(claims: dict[str, Any], message: str) -> None:
    full = {
        "eat_profile": EAR_PROFILE,
        "iat": 1,
        "ear_verifier_id": {"developer": "d", "build": "b"},
        "submods": {"s": {"ear_status": "none"}},
    }
    obj = claims if "eat_profile" in claims or not claims else {**full, **claims}
    with pytest.raises(DecodeError, match=message):
        parse_ear_claims(obj)


def test_cbor_reader_rules() -> None:
    ear = build_ear_cbor(sample_ear())
    assert parse_ear_claims(ear) == sample_ear()
    sub: Any = ear[266]
    sub["dev-1"]["ear_status"] = "affirming"  # a text name for what CBOR keys by number
    with pytest.raises(DecodeError, match="CBOR keys"):
        parse_ear_claims(ear)
    sub["dev-1"] = {1000: "affirming"}
    with pytest.raises(DecodeError, match="trust tier"):
        parse_ear_claims(ear)


@given(st.dictionaries(st.text(max_size=30) | st.integers(0, 2000), JSON_VALUES, max_size=6))
def test_arbitrary_claims_maps(obj: dict[Any, Any]) -> None:
    with contextlib.suppress(DecodeError):
        parse_ear_claims(obj)
    with contextlib.suppress(DecodeError):
        parse_ear_claims({**build_ear_json(sample_ear()), **{str(k): v for k, v in obj.items()}})
