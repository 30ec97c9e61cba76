"""COSE evidence against the public vectors: PSA tokens P1-P3 (attest.psa) and the RFC 9711
EAT examples E1 (attest.eat, attest.deb), driven from their expected.json and parametrised by
file name: skipped when SUITSRV_VECTORS is unset, failing when it is set and a file is missing.
The COSE rules themselves are in test_attest_cose.py, claim rules and fuzzing in
test_evidence_claims.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from pycose.keys.cosekey import CoseKey
from pycose.messages.cosemessage import CoseMessage as PyCoseMessage

from attest.deb import (
    parse_deb,
    parse_deb_json,
    verify_deb,
    verify_deb_json,
    verify_detached_submods,
)
from attest.eat import (
    EatClaims,
    parse_eat,
    verify_eat,
)
from attest.errors import FreshnessError, VerificationError
from attest.keys import VerifierKey, hmac_key, key_from_jwk, key_from_pem
from attest.psa import (
    PsaClaims,
    SecurityLifecycle,
    SoftwareComponent,
    parse_psa_token,
    verify_psa_token,
)

from .token_helpers import attest_vectors, expected, pem

P1, P2, P3, E1 = (
    "psa/P1_rfc9783_examples",
    "psa/P2_veraison_psa_good",
    "psa/P3_psatoken_tfm",
    "eat/E1_rfc9711_examples",
)


@pytest.fixture
def vec() -> Path:
    return attest_vectors()


def _jwk_key(path: Path, name: str = "vector") -> VerifierKey:
    return key_from_jwk(json.loads(path.read_text()), name=name)


# ---------------------------------------------------------------- model -> expected.json form

_NEW = {
    "profile": 265,
    "nonce": 10,
    "instance_id": 256,
    "implementation_id": 2396,
    "client_id": 2394,
    "security_lifecycle": 2395,
    "certification_reference": 2398,
    "software_components": 2399,
    "verification_service_indicator": 2400,
}
_OLD = {
    "profile": -75000,
    "client_id": -75001,
    "security_lifecycle": -75002,
    "implementation_id": -75003,
    "certification_reference": -75005,
    "software_components": -75006,
    "nonce": -75008,
    "instance_id": -75009,
    "verification_service_indicator": -75010,
}


def _component_json(c: SoftwareComponent) -> dict[str, object]:
    out = {
        "1": c.measurement_type,
        "2": c.measurement_value.hex(),
        "4": c.version,
        "5": c.signer_id.hex() if c.signer_id else None,
        "6": c.measurement_desc,
    }
    return {k: v for k, v in out.items() if v is not None}


def _psa_json(claims: PsaClaims) -> dict[str, object]:
    """Our model in expected.json's shape: claim key -> hex for bytes, ints and text as is."""
    out: dict[str, object] = {}
    for name, key in (_OLD if claims.legacy else _NEW).items():
        value = getattr(claims, name)
        if name == "software_components":
            value = [_component_json(c) for c in value]
        out[str(key)] = value.hex() if isinstance(value, bytes) else value
    if claims.boot_seed is not None:
        for boot_key in ("268", "2397", "-75004"):  # whichever key the token used
            out[boot_key] = claims.boot_seed.hex()
    return {k: v for k, v in out.items() if v is not None}


def _assert_claims(claims: PsaClaims, expected: dict[str, object]) -> None:
    ours = _psa_json(claims)
    for key, value in expected.items():
        assert ours.get(key) == value, f"claim {key}"
    # and nothing we read is missing from the vector's claims
    boot_keys = {"268", "2397", "-75004"}
    assert set(ours) - boot_keys <= set(expected), set(ours) - set(expected)


# ---------------------------------------------------------------- P1: RFC 9783 examples

_P1 = expected(P1)
_P1_TOKENS = sorted(k for k in _P1 if k.endswith(".cbor"))
_P1_NEGATIVE = sorted(_P1.get("negative", {}))


def _p1_keys(vec: Path) -> list[VerifierKey]:
    folder = vec / P1
    secret = (folder / "tfm-hs-iak.key.bin").read_bytes()
    return [
        _jwk_key(folder / "tfm-es-iak.public.jwk", "es-iak"),
        hmac_key(secret, [5], name="hs-iak"),
    ]


@pytest.mark.parametrize("name", _P1_TOKENS)
def test_p1_tokens_verify_and_match(vec: Path, name: str) -> None:
    case = _P1[name]
    token = parse_psa_token((vec / P1 / name).read_bytes())
    verified = verify_psa_token(
        token, _p1_keys(vec), expected_nonce=bytes.fromhex(_P1["nonce_hex"])
    )
    assert verified.key.name == ("es-iak" if "sign1" in name else "hs-iak")
    assert case.get("signature_valid", case.get("mac_valid")) is True
    _assert_claims(verified.claims, case["claims"])
    assert verified.claims.profile == _P1["profile"]
    assert verified.claims.lifecycle is SecurityLifecycle.SECURED
    assert _P1["security_lifecycle"].startswith(str(verified.claims.security_lifecycle))


@pytest.mark.parametrize("name", _P1_NEGATIVE)
def test_p1_negatives_are_invalid(vec: Path, name: str) -> None:
    assert "INVALID" in _P1["negative"][name]
    token = parse_psa_token((vec / P1 / name).read_bytes())
    with pytest.raises(VerificationError):
        verify_psa_token(token, _p1_keys(vec))


def test_p1_key_types_do_not_cross(vec: Path) -> None:
    es, hs = _p1_keys(vec)
    sign1 = parse_psa_token((vec / P1 / "psa-sign1.cbor").read_bytes())
    mac0 = parse_psa_token((vec / P1 / "psa-mac0.cbor").read_bytes())
    with pytest.raises(VerificationError, match="no trusted key"):
        verify_psa_token(sign1, [hs])
    with pytest.raises(VerificationError, match="no trusted key"):
        verify_psa_token(mac0, [es])
    with pytest.raises(FreshnessError):
        verify_psa_token(sign1, [es], expected_nonce=bytes(32))
    pem_key = key_from_pem((vec / P1 / "tfm-es-iak.public.pem").read_bytes(), name="pem")
    assert isinstance(pem_key.public_key, ec.EllipticCurvePublicKey)
    assert isinstance(es.public_key, ec.EllipticCurvePublicKey)
    assert pem_key.public_key.public_numbers() == es.public_key.public_numbers()


def test_p1_sign1_verifies_with_pycose(vec: Path) -> None:
    msg: Any = PyCoseMessage.decode((vec / P1 / "psa-sign1.cbor").read_bytes())
    msg.key = CoseKey.from_pem_public_key((vec / P1 / "tfm-es-iak.public.pem").read_text())
    assert msg.verify_signature()


# ---------------------------------------------------------------- P2: Veraison psa.good

_P2 = expected(P2)


def test_p2_good_token(vec: Path) -> None:
    folder = vec / P2
    assert _P2["envelope"].startswith("COSE_Sign1")
    token = parse_psa_token((folder / "psa.good.cose").read_bytes())
    verified = verify_psa_token(token, [_jwk_key(folder / _P2["signature_valid_with"], "iak")])
    claims = verified.claims
    _assert_claims(claims, _P2["claims"])
    # What appraisal needs: the reference values match by type, version and value ...
    refvals = _P2[
        "reference_values (sha-256 measurement-value digests, from comid-psa-refval.json)"
    ]
    measured = {
        f"{c.measurement_type} {c.version}": c.measurement_value.hex()
        for c in claims.software_components
    }
    assert measured == refvals
    # ... the trust anchor names this instance and implementation ...
    ueid_hex, impl = _P2["trust_anchor"].split("instance-id (ueid) ")[1].split(" + impl-id ")
    assert claims.instance_id.hex() == ueid_hex
    assert claims.implementation_id == impl.split('"')[1].encode()
    assert claims.lifecycle is SecurityLifecycle.SECURED


@pytest.mark.parametrize("case", sorted(k for k in _P2.get("cases", {}) if "nonce" in k))
def test_p2_session_nonces(vec: Path, case: str) -> None:
    folder = vec / P2
    token = parse_psa_token((folder / "psa.good.cose").read_bytes())
    keys = [_jwk_key(folder / "iak.public.jwk")]
    nonce = bytes.fromhex(case.split("= ")[1][:64])
    if _P2["cases"][case].startswith("affirming"):
        assert verify_psa_token(token, keys, expected_nonce=nonce).claims.nonce == nonce
    else:
        with pytest.raises(FreshnessError):
            verify_psa_token(token, keys, expected_nonce=nonce)


def test_p2_other_key_is_refused(vec: Path) -> None:
    token = parse_psa_token((vec / P2 / "psa.good.cose").read_bytes())
    other = key_from_pem((vec / P1 / "tfm-es-iak.public.pem").read_bytes(), name="other")
    assert "contraindicated" in _P2["cases"]["signature by a different key"]
    with pytest.raises(VerificationError):
        verify_psa_token(token, [other])


# ---------------------------------------------------------------- P3: TF-M, both key sets

_P3 = expected(P3)


@pytest.mark.parametrize("name", sorted(_P3.get("tokens", {})))
def test_p3_both_profiles(vec: Path, name: str) -> None:
    case = _P3["tokens"][name]
    token = parse_psa_token((vec / P3 / name).read_bytes())
    key = key_from_pem((vec / P3 / _P3["key"].split()[0]).read_bytes(), name="tfm")
    verified = verify_psa_token(token, [key], expected_nonce=bytes(64))
    assert case["signature_valid"] is True
    assert verified.claims.legacy == ("-75000" in case["claims"])
    _assert_claims(verified.claims, case["claims"])


# ---------------------------------------------------------------- E1: RFC 9711 examples

_E1 = expected(E1)
_E1_FILES = sorted(k.split()[0] for k in _E1 if k.split()[0].endswith((".cbor", ".json")))


def _e1_case(name: str) -> dict[str, Any]:
    (case,) = [v for k, v in _E1.items() if k.split()[0] == name]
    return case  # type: ignore[no-any-return]


_EAT_JSON = {"10": "nonce", "256": "ueid", "258": "oemid", "263": "dbgstat"}


@pytest.mark.parametrize("name", _E1_FILES)
def test_e1_vectors(vec: Path, name: str) -> None:
    case, data = _e1_case(name), (vec / E1 / name).read_bytes()
    stranger = key_from_pem(pem(ec.generate_private_key(ec.SECP256R1())), name="stranger")
    if name == "valid_cwt.cbor":
        token = parse_eat(data)
        for key, field_name in _EAT_JSON.items():
            value = getattr(token.claims, field_name)
            value = value[0] if isinstance(value, tuple) else value
            assert (value.hex() if isinstance(value, bytes) else value) == case["claims"][key]
        assert "NOT verifiable" in case["expected"]
        for keys in ([], [stranger]):
            with pytest.raises(VerificationError):
                verify_eat(token, keys)
    elif name == "valid_deb.cbor":
        bundle = parse_deb(data)
        assert bundle.token.claims.nonce == (bytes.fromhex(case["inner_nonce_actual"].split()[0]),)
        assert case["detached_digest_check"].endswith("TRUE")
        tee = verify_detached_submods(bundle.token.claims, bundle.detached).submods["TEE"]
        assert isinstance(tee, EatClaims) and tee.dbgstat == 2
        with pytest.raises(VerificationError):
            verify_deb(bundle, [stranger])
        tampered = dict(bundle.detached, TEE=bundle.detached["TEE"][:-1] + b"\x00")
        with pytest.raises(VerificationError, match="does not match its digest"):
            verify_detached_submods(bundle.token.claims, tampered)
    else:
        bundle_json = parse_deb_json(data)
        secret = case.get("jwt_hs256_key", "xxxxxx").split()[0].encode()
        if case["hmac_valid"]:
            verified = verify_deb_json(bundle_json, secret, allow_short_key=True)
            audio = verified.claims.submods["Audio Subsystem"]
            assert isinstance(audio, EatClaims) and audio.swname == "Audio Processor OS"
            with pytest.raises(VerificationError, match="at least 32 bytes"):
                verify_deb_json(bundle_json, secret)
            with pytest.raises(FreshnessError):
                verify_deb_json(bundle_json, secret, allow_short_key=True, expected_nonce=b"x" * 12)
        else:
            assert case["expected"].startswith("REJECT")
            with pytest.raises(VerificationError):
                verify_deb_json(bundle_json, secret, allow_short_key=True)
