"""PSA and EAT claims-sets (attest.psa, attest.eat, attest.deb): hypothesis round trips,
mandatory claims and value rules, measured components, and fuzzing (arbitrary bytes, bit
flips, well-signed arbitrary claims) that may raise only the ring's own errors."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attest import _cbor, _cose
from attest._json import b64url_encode
from attest.deb import (
    parse_deb,
    parse_deb_json,
    verify_deb_json,
)
from attest.eat import (
    MEASURED_COMPONENT_CBOR,
    DetachedDigest,
    EatClaims,
    MeasuredComponent,
    digest_name,
    parse_eat,
    verify_eat,
)
from attest.errors import DecodeError, FreshnessError, VerificationError
from attest.psa import (
    PsaClaims,
    SoftwareComponent,
    parse_psa_token,
    verify_psa_token,
)

from .conftest import examples
from .token_helpers import BASE, ES256, VERIFIER, psa_map

# ---------------------------------------------------------------- PSA: build, round trip, rules


_hash = st.sampled_from([32, 48, 64]).flatmap(lambda n: st.binary(min_size=n, max_size=n))
_opt_text = st.none() | st.text(max_size=12)
_components = st.builds(SoftwareComponent, _hash, _hash, _opt_text, _opt_text, _opt_text)
_psa_claims = st.builds(
    PsaClaims,
    profile=st.text(max_size=40),
    nonce=_hash,
    instance_id=st.binary(min_size=32, max_size=32).map(lambda b: b"\x01" + b),
    implementation_id=st.binary(min_size=32, max_size=32),
    client_id=st.integers(-(2**31), 2**31),
    security_lifecycle=st.integers(0, 6).flatmap(lambda n: st.integers(n << 12, (n << 12) + 0xFF)),
    software_components=st.lists(_components, min_size=1, max_size=3).map(tuple),
    boot_seed=st.none() | st.binary(min_size=8, max_size=32),
    certification_reference=_opt_text,
    verification_service_indicator=_opt_text,
)


@settings(max_examples=examples(60), suppress_health_check=[HealthCheck.too_slow])
@given(_psa_claims)
def test_psa_round_trip(claims: PsaClaims) -> None:
    token = parse_psa_token(_cose.sign1(_cbor.dumps(psa_map(claims)), ES256))
    assert token.claims == claims
    assert verify_psa_token(token, [VERIFIER], expected_nonce=claims.nonce).claims == claims


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({10: bytes(31)}, "nonce"),
        ({256: b"\x02" + bytes(32)}, "RAND UEID"),
        ({2396: bytes(16)}, "implementation-id"),
        ({2395: 0x3100}, "security-lifecycle"),
        ({2395: 0x7000}, "security-lifecycle"),
        ({2394: True}, "client-id"),
        ({2399: []}, "software-components"),
        ({2399: [{2: bytes(32)}]}, "signer-id"),
        ({268: bytes(4)}, "boot-seed"),
        ({268: bytes(32), 2397: bytes(32)}, "boot_seed appears under keys"),
        ({-75008: bytes(32)}, "mixes"),
        ({2400: 1}, "verification-service-indicator"),
    ],
)
def test_psa_claim_rules(change: dict[int, object], message: str) -> None:
    claims = {**psa_map(BASE), **change}
    with pytest.raises(DecodeError, match=message):
        parse_psa_token(_cose.sign1(_cbor.dumps(claims), ES256))


@pytest.mark.parametrize("missing", [10, 256, 265, 2394, 2395, 2396, 2399])
def test_psa_mandatory_claims(missing: int) -> None:
    claims = psa_map(BASE)
    del claims[missing]
    with pytest.raises(DecodeError, match=r"mandatory|software-components"):
        parse_psa_token(_cose.sign1(_cbor.dumps(claims), ES256))


def test_psa_legacy_without_measurements() -> None:
    legacy = {
        -75000: "PSA_IOT_PROFILE_1",
        -75001: 1,
        -75002: 0x3000,
        -75003: bytes(32),
        -75007: 1,
        -75008: bytes(32),
        -75009: b"\x01" + bytes(32),
    }
    claims = parse_psa_token(_cose.sign1(_cbor.dumps(legacy), ES256)).claims
    assert claims.legacy and claims.software_components == ()
    del legacy[-75007]
    with pytest.raises(DecodeError, match="software-components"):
        parse_psa_token(_cose.sign1(_cbor.dumps(legacy), ES256))


# ---------------------------------------------------------------- EAT: measurements, tag 61


def test_eat_measured_components_and_cwt_tag() -> None:
    component = {
        1: ["boot loader X", ["1.2.3rc2", 16384]],
        2: [-16, hashlib.sha256(b"img").digest()],
        3: [bytes(32)],
    }
    claims = {
        10: b"n" * 16,
        256: b"\x01" + bytes(16),
        265: "tag:example.com,2026:p",
        6: 1,
        4: 2,
        273: [[MEASURED_COMPONENT_CBOR, _cbor.dumps(component)], [258, b"coswid"]],
        266: {"os": {270: "Acme OS", 271: ["3.5.5", 1]}, "tee": [-16, bytes(32)]},
        9999: "ignored",
    }
    sign1 = _cose.sign1(_cbor.dumps(claims), ES256)
    cwt = _cbor.dumps(_cbor.Tag(61, _cbor.loads(sign1, what="t")))
    for data in (sign1, cwt):
        token = parse_eat(data)
        mc, coswid = token.claims.measurements
        assert mc.component == MeasuredComponent(
            "boot loader X", -16, hashlib.sha256(b"img").digest(), "1.2.3rc2", 16384, (bytes(32),)
        )
        assert (coswid.content_format, coswid.value, coswid.component) == (258, b"coswid", None)
        assert digest_name(mc.component.digest_alg) == "sha256" == digest_name("SHA-256")
        os_claims = token.claims.submods["os"]
        assert isinstance(os_claims, EatClaims) and os_claims.swversion == ("3.5.5", 1)
        assert token.claims.submods["tee"] == DetachedDigest(-16, bytes(32))
        verified = verify_eat(token, [VERIFIER], expected_nonce=b"n" * 16)
        assert verified.key_name == "p256"
        with pytest.raises(FreshnessError):
            verify_eat(token, [VERIFIER], expected_nonce=b"m" * 16)


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({10: b"short"}, "eat_nonce"),
        ({10: []}, "eat_nonce"),
        ({256: b"\x01"}, "ueid"),
        ({263: 5}, "dbgstat"),
        ({273: [[MEASURED_COMPONENT_CBOR, b"\xa0"]]}, "measured-component id"),
        ({273: [[MEASURED_COMPONENT_CBOR, b"\xff"]]}, "measured-component"),
        ({266: {"x": 5}}, "submodule"),
        ({266: {1: {}}}, "submods"),
        ({6: 1.5}, "iat"),
    ],
)
def test_eat_claim_rules(claims: dict[int, object], message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        parse_eat(_cose.sign1(_cbor.dumps(claims) if 6 not in claims else _float_claims(), ES256))


def _float_claims() -> bytes:
    return bytes.fromhex("a106f93e00")  # {6: 1.5} as a half float


# ---------------------------------------------------------------- fuzz: only our errors

_VALID = _cose.sign1(_cbor.dumps(psa_map(BASE)), ES256)
_PARSERS = [parse_psa_token, parse_eat, parse_deb, parse_deb_json, _cose.parse_cose]


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_decode_error(data: bytes) -> None:
    for parser in _PARSERS:
        with contextlib.suppress(DecodeError):
            parser(data)


@given(st.integers(0, len(_VALID) * 8 - 1), st.integers(0, len(_VALID) * 8 - 1))
def test_bit_flips_raise_only_attest_errors(bit: int, other: int) -> None:
    data = bytearray(_VALID)
    for b in {bit, other}:
        data[b // 8] ^= 1 << (b % 8)
    with contextlib.suppress(DecodeError, VerificationError):
        verify_psa_token(parse_psa_token(bytes(data)), [VERIFIER])
    with contextlib.suppress(DecodeError, VerificationError):
        verify_eat(parse_eat(bytes(data)), [VERIFIER])


@given(st.text(max_size=200))
def test_arbitrary_json_bundles(text: str) -> None:
    with contextlib.suppress(DecodeError):
        parse_deb_json(text)
    with contextlib.suppress(DecodeError):
        parse_deb_json(json.dumps([["JWT", text], {"a": text}]))


_cbor_value = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64 - 1)
    | st.binary(max_size=70)
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.integers(-3, 6) | st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)
_claim_keys = st.sampled_from([1, 4, 6, 10, 256, 258, 259, 263, 265, 266, 270, 271, 273])
_psa_keys = st.sampled_from([10, 256, 265, 268, 2394, 2395, 2396, 2397, 2398, 2399, 2400])


@settings(max_examples=examples(150))
@given(st.dictionaries(_claim_keys | _psa_keys, _cbor_value, max_size=8), _claim_keys, _cbor_value)
def test_signed_but_arbitrary_claims(claims: dict[int, object], key: int, value: object) -> None:
    # Well-signed tokens whose claims are arbitrary reach the claim readers themselves.
    for payload in (claims, {**psa_map(BASE), key: value}):
        data = _cose.sign1(_cbor.dumps(payload), ES256)
        with contextlib.suppress(DecodeError):
            verify_eat(parse_eat(data), [VERIFIER])
        with contextlib.suppress(DecodeError):
            verify_psa_token(parse_psa_token(data), [VERIFIER])


_json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


_algs = st.sampled_from(["sha-256", "SHA-256", "sha-512", -16, 1, "md5", True, [1], None])


@settings(max_examples=examples(150))
@given(
    st.dictionaries(st.text(max_size=6), st.tuples(st.booleans(), _algs, _json_value), max_size=3),
    _json_value,
)
def test_json_bundles_with_valid_mac(
    submods: dict[str, tuple[bool, object, object]], nonce: object
) -> None:
    # A correctly MACed bundle whose submods are arbitrary, or digests (under assorted
    # algorithm names) of arbitrary detached claims-sets: only our errors come out.
    secret = bytes(range(32))
    detached, entries = {}, {}
    for name, (as_digest, alg, value) in submods.items():
        raw = json.dumps(value).encode()
        detached[name] = b64url_encode(raw)
        digest = b64url_encode(hashlib.sha256(raw).digest())
        entries[name] = ["DIGEST", [alg, digest]] if as_digest else value
    claims = json.dumps({"eat_nonce": nonce, "submods": entries}).encode()
    header = b64url_encode(b'{"alg":"HS256"}') + "." + b64url_encode(claims)
    mac = b64url_encode(hmac.digest(secret, header.encode(), "sha256"))
    bundle = json.dumps([["JWT", f"{header}.{mac}"], detached])
    with contextlib.suppress(DecodeError, VerificationError):
        verify_deb_json(parse_deb_json(bundle), secret)
