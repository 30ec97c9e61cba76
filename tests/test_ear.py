"""Signed EAR attestation results (attest.ear): our JWT and CWT (hypothesis round trips,
pycose), the relying-party checks, fuzzing, and the public vectors R1 (Veraison EAR JWTs) and
R2 (the draft's unsigned claims-sets), driven from their expected.json and parametrised by
file name (skipped when SUITSRV_VECTORS is unset, failing when it is set and a file is
missing). The AR4SI rules and the claims reader's refusals are in test_ear_claims.py.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hmac
import json
import re
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycose.keys.cosekey import CoseKey
from pycose.messages.cosemessage import CoseMessage as PyCoseMessage

from attest import _cbor
from attest.ear import (
    EAR_PROFILE,
    VERAISON_EAR_PROFILE,
    Ear,
    Status,
    Submod,
    TrustVector,
    VerifierId,
    build_ear_cbor,
    build_ear_json,
    parse_ear_claims,
    public_jwk,
    sign_ear_cwt,
    sign_ear_jwt,
    status_of,
    verify_ear_cwt,
    verify_ear_jwt,
)
from attest.errors import AttestError, DecodeError, FreshnessError, VerificationError
from attest.keys import Algorithm, VerifierKey, key_from_jwk

from .conftest import examples
from .token_helpers import JSON_VALUES, NOW, attest_vectors, expected, sample_ear

R1, R2 = "ear/R1_veraison_ear_jwt", "ear/R2_draft_ietf_rats_ear_examples"
_KEY = ec.generate_private_key(ec.SECP256R1())
_PUB = _KEY.public_key()
_PEM = _KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
)


@pytest.fixture
def vec() -> Path:
    return attest_vectors()


# ---------------------------------------------------------------- our own JWT and CWT


def test_jwt_round_trip_and_header() -> None:
    ear = sample_ear()
    token = sign_ear_jwt(ear, _PEM, "ear-key-1")
    assert token == sign_ear_jwt(ear, _KEY, "ear-key-1")  # RFC 6979: deterministic
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "ES256", "kid": "ear-key-1", "typ": "JWT"}
    claims = jwt.decode(
        token, _PUB, algorithms=["ES256"], options={"verify_exp": False, "verify_iat": False}
    )
    assert claims["eat_profile"] == EAR_PROFILE and "ear.status" not in json.dumps(claims)
    assert claims["submods"]["dev-1"]["ear_status"] == "affirming"
    assert claims["submods"]["dev-1"]["suitsrv.device_id"] == "dev-1"
    assert verify_ear_jwt(token, _PUB, now=NOW, expected_nonce=b"n" * 32) == ear
    jwk_key = key_from_jwk(public_jwk(_PUB, "ear-key-1"))
    assert jwk_key.name == "ear-key-1" and jwk_key.algorithms == {Algorithm.ES256}
    assert verify_ear_jwt(token, jwk_key, now=NOW) == ear


def test_cwt_round_trip_and_pycose() -> None:
    ear = sample_ear()
    data = sign_ear_cwt(ear, _PEM, kid=b"ear-key-1")
    assert verify_ear_cwt(data, _PUB, now=NOW, expected_nonce=b"n" * 32) == ear
    tagged = _cbor.dumps(_cbor.Tag(61, _cbor.loads(data, what="t")))
    assert verify_ear_cwt(tagged, _PUB, now=NOW) == ear
    msg: Any = PyCoseMessage.decode(data)
    msg.key = CoseKey.from_pem_public_key(
        _PUB.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()
    )
    assert msg.verify_signature()
    claims = _cbor.loads(msg.payload, what="claims")
    assert isinstance(claims, dict) and claims[265] == EAR_PROFILE
    assert claims[266]["dev-1"][1000] == 2


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"exp": NOW}, FreshnessError, "expired"),
        ({"iat": NOW + 1}, FreshnessError, "future"),
        ({"nonce": b"m" * 32}, FreshnessError, "nonce"),
        ({"nonce": None}, FreshnessError, "nonce"),
    ],
)
def test_freshness(changes: dict[str, Any], error: type[Exception], message: str) -> None:
    ear = sample_ear(**changes)
    with pytest.raises(error, match=message):
        verify_ear_jwt(sign_ear_jwt(ear, _KEY, "k"), _PUB, now=NOW, expected_nonce=b"n" * 32)
    with pytest.raises(error, match=message):
        verify_ear_cwt(sign_ear_cwt(ear, _KEY), _PUB, now=NOW, expected_nonce=b"n" * 32)


def test_submod_nonce_is_checked_too() -> None:
    sub = dataclasses.replace(sample_ear().submods["dev-1"], nonce=b"m" * 32)
    token = sign_ear_jwt(sample_ear(submods={"dev-1": sub}), _KEY, "k")
    with pytest.raises(FreshnessError):
        verify_ear_jwt(token, _PUB, now=NOW, expected_nonce=b"n" * 32)
    token = sign_ear_jwt(sample_ear(submods={"dev-1": sub}, nonce=None), _KEY, "k")
    assert verify_ear_jwt(token, _PUB, now=NOW, expected_nonce=b"m" * 32)


def _forge(header: dict[str, Any], claims: dict[str, Any], key: Any, alg: str) -> str:
    return jwt.encode(claims, key, algorithm=alg, headers=header)


def test_relying_party_refusals() -> None:
    claims = build_ear_json(sample_ear())
    other = ec.generate_private_key(ec.SECP256R1())
    other_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(other.public_key()))
    pem_public = _PUB.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    unsigned = ".".join(
        base64.urlsafe_b64encode(json.dumps(p).encode()).rstrip(b"=").decode()
        for p in ({"alg": "none"}, claims)
    )
    cases = [
        (unsigned + ".AAAA", VerificationError),  # alg none with a signature segment
        (unsigned + ".", DecodeError),  # alg none, empty signature
        (_hs256_with_public_key(claims, pem_public), VerificationError),  # key confusion
        (_forge({"jwk": other_jwk}, claims, other, "ES256"), VerificationError),  # self-signed
        (_forge({}, claims, other, "ES256"), VerificationError),
        (_forge({"crit": ["exp"]}, claims, _KEY, "ES256"), VerificationError),
        (_forge({}, {**claims, "nbf": NOW + 10}, _KEY, "ES256"), FreshnessError),
        (_forge({}, {**claims, "nbf": "soon"}, _KEY, "ES256"), DecodeError),
        (_forge({}, {**claims, "iat": 1.5}, _KEY, "ES256"), DecodeError),
        (sign_ear_jwt(sample_ear(), _KEY, "k") + ".x", DecodeError),
        (" " + sign_ear_jwt(sample_ear(), _KEY, "k"), DecodeError),
    ]
    for token, error in cases:
        with pytest.raises(error):
            verify_ear_jwt(token, _PUB, now=NOW)
    with pytest.raises(RuntimeError, match="ES256"):
        verify_ear_jwt(cases[0][0], VerifierKey("x", frozenset({Algorithm.ESP256}), _PUB), now=0)


def _hs256_with_public_key(claims: dict[str, Any], secret: bytes) -> str:
    # PyJWT refuses PEM-looking HMAC secrets, so the classic confusion is forged by hand.
    header = base64.urlsafe_b64encode(b'{"alg":"HS256"}').rstrip(b"=")
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
    mac = hmac.digest(secret, header + b"." + body, "sha256")
    return b".".join([header, body, base64.urlsafe_b64encode(mac).rstrip(b"=")]).decode()


def test_builders_refuse_other_profiles() -> None:
    with pytest.raises(RuntimeError, match="writes"):
        build_ear_json(sample_ear(profile=VERAISON_EAR_PROFILE))
    with pytest.raises(RuntimeError, match="P-256"):
        sign_ear_jwt(sample_ear(), ec.generate_private_key(ec.SECP384R1()), "k")


# ---------------------------------------------------------------- hypothesis round trips

_vector = st.builds(TrustVector, *[st.integers(-128, 127)] * 8)


@st.composite
def _submods(draw: st.DrawFn) -> Submod:
    vector = draw(_vector)
    allowed = [s for s in Status if s is Status.NONE or s.tier >= status_of(vector).tier]
    return Submod(
        status=draw(st.sampled_from(allowed)),
        vector=vector,
        policy_ids=tuple(draw(st.lists(st.text(max_size=10), max_size=2))),
        nonce=draw(st.none() | st.binary(min_size=8, max_size=64)),
        extra=draw(st.dictionaries(st.text(max_size=6).map("x-".__add__), JSON_VALUES, max_size=2)),
    )


_ears = st.builds(
    Ear,
    iat=st.integers(0, 2**40),
    verifier_id=st.builds(VerifierId, st.text(max_size=10), st.text(max_size=10)),
    submods=st.dictionaries(st.text(max_size=8), _submods(), min_size=1, max_size=3),
    exp=st.none() | st.integers(2**40 + 1, 2**41),
    nonce=st.none() | st.binary(min_size=8, max_size=64),
    raw_evidence=st.none() | st.binary(max_size=40),
    status=st.none() | st.sampled_from(Status),
)


@settings(max_examples=examples(75), suppress_health_check=[HealthCheck.too_slow])
@given(_ears)
def test_ear_round_trips(ear: Ear) -> None:
    now = ear.iat
    assert parse_ear_claims(build_ear_json(ear)) == ear
    assert parse_ear_claims(build_ear_cbor(ear)) == ear
    assert parse_ear_claims(json.loads(json.dumps(build_ear_json(ear)))) == ear
    assert verify_ear_jwt(sign_ear_jwt(ear, _KEY, "k"), _PUB, now=now) == ear
    assert verify_ear_cwt(sign_ear_cwt(ear, _KEY), _PUB, now=now) == ear


# ---------------------------------------------------------------- fuzz: only our errors


@given(st.binary(max_size=300))
def test_arbitrary_bytes_into_readers(data: bytes) -> None:
    with contextlib.suppress(DecodeError, VerificationError):
        verify_ear_cwt(data, _PUB, now=NOW)
    with contextlib.suppress(DecodeError, VerificationError):
        verify_ear_jwt(data, _PUB, now=NOW)


@given(
    st.text(
        alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.", max_size=200
    )
)
def test_arbitrary_compact_strings(text: str) -> None:
    with contextlib.suppress(DecodeError, VerificationError):
        verify_ear_jwt(text, _PUB, now=NOW)


# ---------------------------------------------------------------- R1: Veraison EAR JWTs

_R1 = expected(R1)
# Which refusal each REJECT vector must meet (expected.json gives the reason in words).
_R1_ERRORS: dict[str, type[AttestError]] = {
    "TestVerify_fail_0.jwt": VerificationError,  # HS256
    "TestVerify_fail_1.jwt": DecodeError,  # alg none, empty signature segment
    "TestVerify_fail_2.jwt": DecodeError,  # leading ".", 4 segments
    "TestVerify_fail_3.jwt": DecodeError,  # {} claims
    "TestVerify_fail_4.jwt": DecodeError,  # trailing rubbish
    "testRealmJWT.jwt": VerificationError,  # a self-asserted header key
}


def _r1_key(vec: Path) -> VerifierKey:
    return key_from_jwk(json.loads((vec / R1 / "verifier-key.public.jwk").read_text()), name="v")


@pytest.mark.parametrize("name", sorted(_R1.get("cases", {})))
def test_r1_verdicts(vec: Path, name: str) -> None:
    verdict = re.match(r"VALID|REJECT", _R1["cases"][name])
    token = (vec / R1 / name).read_text().strip()
    assert verdict, _R1["cases"][name]
    if verdict[0] == "VALID":
        ear = verify_ear_jwt(token, _r1_key(vec), now=NOW)
        assert ear.profile == VERAISON_EAR_PROFILE
        assert all(s.status is Status.AFFIRMING for s in ear.submods.values())
    else:
        with pytest.raises(_R1_ERRORS[name]):
            verify_ear_jwt(token, _r1_key(vec), now=NOW)


def test_r1_facts(vec: Path) -> None:
    ear = verify_ear_jwt((vec / R1 / "testJWT.jwt").read_text().strip(), _r1_key(vec), now=NOW)
    test = ear.submods["test"]
    assert test.vector == TrustVector(2, 2, 3, 2, 2, 2, 2, 2)
    assert (ear.iat, ear.raw_evidence) == (1666091373, bytes.fromhex("deadbeef"))
    assert "iat 1666091373" in _R1["cases"]["testJWT.jwt"]
    assert test.policy_ids == ("https://veraison.example/policy/1/60a0068d",)
    claims = json.loads((vec / R1 / "claims" / "ear-claims-tv-ok.json").read_text())
    assert parse_ear_claims(claims) == ear
    attested = parse_ear_claims(
        json.loads((vec / R1 / "claims" / "ear-claims-key-attestation-ok.json").read_text())
    )
    assert "ear.veraison.key-attestation" in attested.submods["PARSEC_TPM"].extra
    passed = (vec / R1 / "TestVerify_pass_0.jwt").read_text().strip()
    extra = verify_ear_jwt(passed, _r1_key(vec), now=NOW).submods["test"].extra
    assert extra["ear.veraison.policy-claims"] == {"bar": "baz", "foo": "bar"}


def test_r1_realm_token_is_expired_even_under_its_own_key(vec: Path) -> None:
    token = (vec / R1 / "testRealmJWT.jwt").read_text().strip()
    own = key_from_jwk(jwt.get_unverified_header(token)["jwk"], name="self-asserted")
    assert "exp 1752059439" in _R1["cases"]["testRealmJWT.jwt"]
    with pytest.raises(FreshnessError, match="expired"):
        verify_ear_jwt(token, own, now=1752059439)
    assert verify_ear_jwt(token, own, now=1752059438).exp == 1752059439


# ---------------------------------------------------------------- R2: the draft's examples

_R2 = expected(R2)


def _r2(vec: Path, name: str) -> Ear:
    data = (vec / R2 / name).read_bytes()
    obj = _cbor.loads(data, what=name) if name.endswith(".cbor") else json.loads(data)
    return parse_ear_claims(obj)


def test_r2_cbor_and_json_agree(vec: Path) -> None:
    cbor_ear, json_ear = _r2(vec, "ear-cbor-1.cbor"), _r2(vec, "ear-json-1.json")
    # The draft's two examples carry different placeholder raw-evidence bytes.
    assert cbor_ear.raw_evidence == b"lifeboatman" != json_ear.raw_evidence
    assert dataclasses.replace(cbor_ear, raw_evidence=None) == dataclasses.replace(
        json_ear, raw_evidence=None
    )
    psa = cbor_ear.submods["PSA"]
    assert "contraindicated (96)" in _R2["ear-cbor-1 / ear-json-1"]
    assert psa.status is Status.CONTRAINDICATED and psa.vector.executables == 96
    assert status_of(psa.vector) is Status.CONTRAINDICATED
    assert cbor_ear.profile == EAR_PROFILE


def test_r2_json_2(vec: Path) -> None:
    ear = _r2(vec, "ear-json-2.json")
    assert _R2["ear-json-2"].endswith("both affirming")
    assert sorted(ear.submods) == ["CCA Platform", "CCA Realm"]
    assert all(s.status is Status.AFFIRMING for s in ear.submods.values())
